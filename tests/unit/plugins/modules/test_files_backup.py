"""Unit tests for opspack.platform.files_backup, run for real on a temporary tree."""

from __future__ import annotations

import hashlib
import os
import tarfile

from ansible_collections.opspack.platform.plugins.module_utils import tree as file_tree


def make_tree(root):
    (root / "a" / "b").mkdir(parents=True)
    (root / "a" / "b" / "photo.jpg").write_bytes(b"\xff\xd8 not really a photo")
    (root / "readme.txt").write_text("hello\n")
    os.symlink("/etc/passwd", root / "link")
    return root


def test_an_archive_holds_the_tree_and_its_manifest_proves_it(run_module, tmp_path):
    tree = make_tree(tmp_path / "uploads")
    (tmp_path / "backups").mkdir()
    result = run_module("files_backup", site="blog", path=str(tree), backup_dir=str(tmp_path / "backups"))
    assert not result.get("failed"), result
    manifest = result["manifest"]
    assert manifest["engine"] == "files" and manifest["files"] == 2 and manifest["bytes"] == 27
    archive = tmp_path / "backups" / manifest["file"]
    assert hashlib.sha256(archive.read_bytes()).hexdigest() == manifest["sha256"]
    assert oct(archive.stat().st_mode & 0o777) == "0o600"
    with tarfile.open(archive) as tar:
        names = tar.getnames()
        assert names == [".", "a", "link", "readme.txt", "a/b", "a/b/photo.jpg"]
        # Links stay links: nothing outside the tree is archived.
        assert tar.getmember("link").issym() and tar.getmember("link").linkname == "/etc/passwd"
        tar.extractall(tmp_path / "restored", filter="tar")
    # The manifest's digest is the tree's, and a restored tree gives it again.
    assert file_tree.tree_digest(str(tree)) == (2, 27, manifest["tree_sha256"])
    assert file_tree.tree_digest(str(tmp_path / "restored")) == (2, 27, manifest["tree_sha256"])


def test_the_tree_digest_changes_with_one_byte(tmp_path):
    tree = make_tree(tmp_path / "uploads")
    before = file_tree.tree_digest(str(tree))
    (tree / "readme.txt").write_text("hellp\n")
    assert file_tree.tree_digest(str(tree)) != before


def test_a_missing_source_is_refused_and_nothing_is_left(run_module, tmp_path):
    (tmp_path / "backups").mkdir()
    result = run_module("files_backup", site="blog", path=str(tmp_path / "nope"), backup_dir=str(tmp_path / "backups"))
    assert result["failed"] and "is not a directory" in result["msg"]
    assert not list((tmp_path / "backups").iterdir())


def test_a_backup_tells_the_records_what_it_took_and_a_failure_what_it_did_not(run_module, tmp_path):
    tree = make_tree(tmp_path / "uploads")
    (tmp_path / "backups").mkdir()
    taken = run_module("files_backup", site="blog", path=str(tree), backup_dir=str(tmp_path / "backups"))
    told = taken["opspack_event"]
    assert told["kind"] == "operation" and told["operation"] == "backup" and told["result"] == "ok", told
    assert told["site"] == "blog" and told["engine"] == "files" and told["backup_id"] == taken["backup_id"]
    assert told["backup_ended_at"] == taken["manifest"]["ended_at"] and told["timings"]["ended"] == told["backup_ended_at"]
    # Another directory: a second backup of blog within the same second would be refused by its id.
    (tmp_path / "other").mkdir()
    failed = run_module("files_backup", site="blog", path=str(tmp_path / "nope"), backup_dir=str(tmp_path / "other"))
    told = failed["opspack_event"]
    assert told["result"] == "failed" and told["step"] == "take the files backup" and "is not a directory" in told["reason"]
    assert "backup_id" not in told and told["impact"].startswith("no new files backup of blog was taken")


def test_a_backup_in_check_mode_tells_nothing(run_module, tmp_path):
    tree = make_tree(tmp_path / "uploads")
    (tmp_path / "backups").mkdir()
    dry = run_module("files_backup", check_mode=True, site="blog", path=str(tree), backup_dir=str(tmp_path / "backups"))
    assert not dry.get("failed") and "opspack_event" not in dry, dry
    refused = run_module("files_backup", check_mode=True, site="blog", path=str(tree), backup_dir=str(tmp_path / "nope"))
    assert refused["failed"] and "opspack_event" not in refused
