"""Unit tests for opspack.platform.restore_drill: choosing and verifying a backup.

Restoring and proving the data needs a server: the backups Molecule scenario does that."""

from __future__ import annotations

import os

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
