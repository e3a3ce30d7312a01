"""Unit tests for opspack.platform.files_drill, run for real on backups files_backup takes."""

from __future__ import annotations

import io
import json
import tarfile

from ansible_collections.opspack.platform.plugins.module_utils import backup

from .test_files_backup import make_tree


def take(run_module, tmp_path) -> dict:
    tree = make_tree(tmp_path / "uploads")
    (tmp_path / "backups").mkdir()
    result = run_module("files_backup", site="blog", path=str(tree), backup_dir=str(tmp_path / "backups"))
    assert not result.get("failed"), result
    (tmp_path / "scratch").mkdir()
    return result


def drill(run_module, tmp_path, **extra) -> dict:
    return run_module("files_drill", site="blog", backup_dir=str(tmp_path / "backups"),
                      scratch_parent=str(tmp_path / "scratch"), **extra)


def test_a_good_backup_unpacks_to_the_same_tree_and_the_scratch_is_removed(run_module, tmp_path):
    taken = take(run_module, tmp_path)
    result = drill(run_module, tmp_path)
    assert result["passed"] and not result.get("failed"), result
    assert result["backup_id"] == taken["backup_id"] and result["engine"] == "files" and result["site"] == "blog"
    assert result["checks"] == {"checksum": True, "files": 2, "bytes": 27, "tree_sha256": True}
    assert result["scratch_removed"] and not list((tmp_path / "scratch").iterdir())
    assert result["rpo_seconds"] >= 0 and result["rto_seconds"] > 0


def rewrite(tmp_path, taken: dict, members: list[tuple[tarfile.TarInfo, bytes | None]]) -> None:
    """Replace the backup's archive with these members, its manifest's sha256 and size kept true."""
    archive = tmp_path / "backups" / taken["manifest"]["file"]
    with tarfile.open(archive, "w:gz") as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    manifest_file = tmp_path / "backups" / f"{taken['backup_id']}.manifest.json"
    manifest = json.loads(manifest_file.read_text())
    manifest.update(sha256=backup.sha256_file(str(archive)), size_bytes=archive.stat().st_size)
    manifest_file.write_text(json.dumps(manifest))


def member(name: str, data: bytes | None = None, kind: bytes = tarfile.REGTYPE) -> tuple[tarfile.TarInfo, bytes | None]:
    info = tarfile.TarInfo(name)
    info.type = kind
    if data is not None:
        info.size = len(data)
    return info, data


def test_a_tree_that_differs_from_the_manifest_fails_the_drill(run_module, tmp_path):
    taken = take(run_module, tmp_path)
    rewrite(tmp_path, taken, [member("readme.txt", b"hello\n"), member("a/b/photo.jpg", b"\xff\xd8 not really a phot0")])
    result = drill(run_module, tmp_path)
    assert result["failed"] and not result["passed"]
    assert "the restored files differ from the backup" in result["msg"] and "digest differs" in result["msg"]
    assert not list((tmp_path / "scratch").iterdir())


def test_a_member_that_would_land_outside_the_tree_is_refused(run_module, tmp_path):
    taken = take(run_module, tmp_path)
    rewrite(tmp_path, taken, [member("../escaped.txt", b"x")])
    result = drill(run_module, tmp_path)
    assert result["failed"] and "would land outside the tree" in result["msg"]
    assert not (tmp_path / "escaped.txt").exists() and not (tmp_path / "scratch" / "escaped.txt").exists()


def test_a_link_is_not_unpacked_so_nothing_is_written_through_it(run_module, tmp_path):
    taken = take(run_module, tmp_path)
    outside = tmp_path / "outside"
    outside.mkdir()
    link = tarfile.TarInfo("out")
    link.type, link.linkname = tarfile.SYMTYPE, str(outside)
    rewrite(tmp_path, taken, [(link, None), member("out/planted.txt", b"x")])
    result = drill(run_module, tmp_path)
    assert not (outside / "planted.txt").exists()
    # The planted file is no file of the backup's tree: the drill fails on the digest.
    assert result["failed"] and "differ from the backup" in result["msg"]


def test_a_flipped_byte_fails_before_anything_is_unpacked(run_module, tmp_path):
    taken = take(run_module, tmp_path)
    archive = tmp_path / "backups" / taken["manifest"]["file"]
    data = bytearray(archive.read_bytes())
    data[len(data) // 2] ^= 0x01
    archive.write_bytes(bytes(data))
    result = drill(run_module, tmp_path)
    assert result["failed"] and "checksum error" in result["msg"]
    assert "scratch_removed" not in result


def test_a_drill_tells_the_records_pass_or_fail_and_check_mode_tells_nothing(run_module, tmp_path):
    taken = take(run_module, tmp_path)
    passed = drill(run_module, tmp_path)
    told = passed["opspack_event"]
    assert told["kind"] == "operation" and told["operation"] == "drill" and told["result"] == "pass", told
    assert told["site"] == "blog" and told["engine"] == "files" and told["backup_id"] == taken["backup_id"]
    assert told["backup_ended_at"] == taken["manifest"]["ended_at"]
    assert told["rto_s"] == passed["rto_seconds"] and told["rpo_s"] == passed["rpo_seconds"]
    assert "reason" not in told and "step" not in told
    assert "opspack_event" not in drill(run_module, tmp_path, _ansible_check_mode=True)
    rewrite(tmp_path, taken, [member("readme.txt", b"hello\n")])
    failed = drill(run_module, tmp_path)
    told = failed["opspack_event"]
    assert told["result"] == "fail" and told["step"] == "restore the backup into scratch and prove it", told
    assert told["reason"] == failed["reason"] and told["reason"].startswith("the restored files differ from the backup")
