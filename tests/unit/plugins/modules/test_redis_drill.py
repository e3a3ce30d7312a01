"""Unit tests for opspack.platform.redis_drill: what it decides before loading anything.

Loading an RDB needs redis-server: the backups Molecule scenario does it on a lab host."""

from __future__ import annotations

from ansible_collections.opspack.platform.plugins.module_utils import backup
from ansible_collections.opspack.platform.plugins.modules import redis_drill


def seed(directory) -> str:
    ended = backup.utc_now()
    backup_id = backup.new_backup_id("redis", "redis", ended)
    (directory / f"{backup_id}.rdb").write_bytes(b"REDIS0010 not really")
    backup.write_json_atomic(backup.manifest_path(str(directory), backup_id), {
        "format": 1, "backup_id": backup_id, "site": "redis", "engine": "redis", "file": f"{backup_id}.rdb",
        "sha256": backup.sha256_file(str(directory / f"{backup_id}.rdb")), "size_bytes": 20, "rdb_keys": 3,
        "started_at": backup.to_iso(ended), "ended_at": backup.to_iso(ended)})
    return backup_id


def test_keyspace_counts_every_database():
    info = {"db0": "keys=3,expires=1,avg_ttl=0", "db5": "keys=2,expires=0,avg_ttl=0", "loading": "0"}
    assert redis_drill.keys_in(info) == 5


def test_check_mode_verifies_the_checksum_and_loads_nothing(run_module, tmp_path):
    backup_id = seed(tmp_path)
    result = run_module("redis_drill", check_mode=True, site="redis", backup_dir=str(tmp_path))
    assert result["passed"] and result["backup_id"] == backup_id and result["checks"] == {"checksum": True}
    assert "scratch_removed" not in result


def test_a_corrupt_copy_fails_with_a_checksum_error(run_module, tmp_path):
    backup_id = seed(tmp_path)
    (tmp_path / f"{backup_id}.rdb").write_bytes(b"REDIS0010 not reallx")
    result = run_module("redis_drill", site="redis", backup_dir=str(tmp_path), scratch_parent=str(tmp_path))
    assert result["failed"] and "checksum error" in result["msg"] and not result["passed"]


def test_a_postgresql_backup_is_not_a_redis_backup(run_module, tmp_path):
    seed(tmp_path)
    result = run_module("redis_drill", site="blog", backup_dir=str(tmp_path))
    assert result["failed"] and "no backup of site blog" in result["msg"]
