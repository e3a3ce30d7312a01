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


def test_a_drill_tells_its_failure_for_its_site_and_check_mode_tells_nothing(run_module, tmp_path):
    backup_id = seed(tmp_path)
    assert "opspack_event" not in run_module("redis_drill", check_mode=True, site="redis", backup_dir=str(tmp_path))
    (tmp_path / f"{backup_id}.rdb").write_bytes(b"REDIS0010 not reallx")
    told = run_module("redis_drill", site="redis", backup_dir=str(tmp_path), scratch_parent=str(tmp_path))["opspack_event"]
    assert told["kind"] == "operation" and told["operation"] == "drill" and told["result"] == "fail", told
    assert told["site"] == "redis" and told["engine"] == "redis" and told["backup_id"] == backup_id
    assert told["step"] == "verify the backup's checksum" and "checksum error" in told["reason"]
    assert told["rpo_s"] >= 0 and told["rto_s"] >= 0 and told["backup_ended_at"].endswith("Z")


def test_a_host_without_redis_server_fails_the_drill_and_says_so(run_module, tmp_path, monkeypatch):
    backup_id = seed(tmp_path)
    empty = tmp_path / "bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    result = run_module("redis_drill", site="redis", backup_dir=str(tmp_path), scratch_parent=str(tmp_path))
    told = result["opspack_event"]
    # Ansible's get_bin_path fails the module itself: the drill is told all the same.
    assert result["failed"] and told["result"] == "fail" and told["backup_id"] == backup_id, result
    assert told["step"] == "restore the backup into scratch and prove it" and "redis-server" in told["reason"]
