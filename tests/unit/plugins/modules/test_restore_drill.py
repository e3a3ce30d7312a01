"""Unit tests for opspack.platform.restore_drill: choosing and verifying a backup.

Restoring and proving the data needs a server: the backups Molecule scenario does that."""

from __future__ import annotations

import os

import pytest

from ansible_collections.opspack.platform.plugins.module_utils import backup

from .test_pg_backup import seed


def test_check_mode_verifies_the_latest_backup(run_module, tmp_path):
    ids = seed(tmp_path, 3)
    result = run_module("restore_drill", check_mode=True, site="blog", backup_dir=str(tmp_path))
    assert not result.get("failed"), result
    assert result["passed"] and result["backup_id"] == ids[-1]
    assert result["checks"]["checksum"] is True
    assert 86400 <= result["rpo_seconds"] < 86400 + 60


def test_a_flipped_byte_fails_with_a_checksum_error(run_module, tmp_path):
    ids = seed(tmp_path, 1)
    (tmp_path / f"{ids[0]}.pgdump").write_bytes(b"y")
    result = run_module("restore_drill", check_mode=True, site="blog", backup_dir=str(tmp_path))
    assert result["failed"] and not result["passed"]
    assert "checksum error" in result["reason"] and result["backup_id"] == ids[0]


def test_an_unknown_backup_id_is_refused(run_module, tmp_path):
    seed(tmp_path, 1)
    result = run_module("restore_drill", site="blog", backup_dir=str(tmp_path), backup_id="blog-postgresql-20200101T000000Z")
    assert result["failed"] and "unknown backup id" in result["reason"]
    assert "scratch_database" not in result


def test_a_backup_of_another_engine_is_not_drilled_as_postgresql(run_module, tmp_path):
    ids = seed(tmp_path, 1)
    path = backup.manifest_path(str(tmp_path), ids[0])
    manifest = backup.read_manifest(path)
    # The same files named as a Neo4j backup would be (a manifest is named after its own id).
    manifest["engine"] = "neo4j"
    manifest["backup_id"] = ids[0].replace("-postgresql-", "-neo4j-")
    os.unlink(path)
    backup.write_json_atomic(backup.manifest_path(str(tmp_path), manifest["backup_id"]), manifest)
    result = run_module("restore_drill", site="blog", backup_dir=str(tmp_path))
    assert result["failed"] and "is a neo4j backup" in result["reason"]


# --- the drill's opspack_event ------------------------------------------------------------------

def test_a_failed_drill_is_told_for_its_site_and_check_mode_tells_nothing(run_module, tmp_path):
    ids = seed(tmp_path, 2)
    assert "opspack_event" not in run_module("restore_drill", check_mode=True, site="blog", backup_dir=str(tmp_path))
    result = run_module("restore_drill", site="blog", backup_dir=str(tmp_path), backup_id="blog-postgresql-20200101T000000Z")
    told = result["opspack_event"]
    assert told["kind"] == "operation" and told["operation"] == "drill" and told["result"] == "fail", told
    # No backup was found: the site is the module's own, not read from a backup id.
    assert told["site"] == "blog" and told["engine"] == "postgresql" and "backup_id" not in told
    assert told["step"] == "find the backup" and told["reason"].startswith("unknown backup id")
    (tmp_path / f"{ids[-1]}.pgdump").write_bytes(b"y")
    told = run_module("restore_drill", site="blog", backup_dir=str(tmp_path))["opspack_event"]
    assert told["step"] == "verify the backup's checksum" and told["backup_id"] == ids[-1] and told["rpo_s"] >= 86400


@pytest.fixture(name="scratch_server")
def fixture_scratch_server(monkeypatch):
    """Stand-ins for the scratch database calls; what restore_and_prove raises, if anything."""
    from ansible_collections.opspack.platform.plugins.modules import restore_drill
    proof = {}

    def prove(*args, **kwargs):
        if proof.get("error"):
            raise backup.BackupError(proof["error"])
    engine = restore_drill.engine
    monkeypatch.setattr(engine, "leftover_scratch", lambda params, site: [])
    monkeypatch.setattr(engine, "check_room_to_restore", lambda params, manifest: None)
    monkeypatch.setattr(engine, "create_scratch", lambda params, name: None)
    monkeypatch.setattr(engine, "drop_scratch", lambda params, name: None)
    monkeypatch.setattr(engine, "restore_and_prove", prove)
    return restore_drill, proof


def test_a_drill_tells_pass_with_its_measures_and_a_difference_as_fail(scratch_server, monkeypatch, capsys, tmp_path):
    from .test_pg_backup_restore import run_in_process
    module, proof = scratch_server
    ids = seed(tmp_path, 1)
    passed = run_in_process(monkeypatch, capsys, module.main, site="blog", backup_dir=str(tmp_path))
    told = passed["opspack_event"]
    assert told == {"kind": "operation", "site": "blog", "operation": "drill", "result": "pass", "backup_id": ids[0],
                    "backup_ended_at": passed["backup_ended_at"], "engine": "postgresql",
                    "rto_s": passed["rto_seconds"], "rpo_s": passed["rpo_seconds"]}, told
    proof["error"] = "the restored data differs from the backup: table public.posts has 41 rows, the backup had 42"
    failed = run_in_process(monkeypatch, capsys, module.main, site="blog", backup_dir=str(tmp_path))
    told = failed["opspack_event"]
    assert told["result"] == "fail" and told["step"] == "restore and prove the backup" and told["reason"] == proof["error"]
