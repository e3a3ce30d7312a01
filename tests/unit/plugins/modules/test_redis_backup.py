"""Unit tests for opspack.platform.redis_backup: parsing and check mode.

The snapshot itself needs a Redis server: the backups Molecule scenario takes one."""

from __future__ import annotations

from ansible_collections.opspack.platform.plugins.modules import redis_backup


def test_info_sections_are_parsed():
    text = "# Keyspace\r\ndb0:keys=12,expires=1,avg_ttl=0\r\ndb3:keys=2,expires=0,avg_ttl=0\r\n"
    fields = redis_backup.info_fields(text.replace("\r", ""))
    assert fields == {"db0": "keys=12,expires=1,avg_ttl=0", "db3": "keys=2,expires=0,avg_ttl=0"}


def test_check_mode_asks_redis_nothing_and_reports_the_plan(run_module, tmp_path):
    result = run_module("redis_backup", check_mode=True, site="redis", backup_dir=str(tmp_path),
                        login_user="opsadmin", login_password="canary-redis-password-xyz", login_port=1)
    assert not result.get("failed"), result
    assert result["backup_id"].startswith("redis-redis-") and result["deleted"] == []
    assert "canary-redis-password-xyz" not in str(result)


def test_check_mode_tells_nothing_and_a_failure_is_told(run_module, tmp_path):
    dry = run_module("redis_backup", check_mode=True, site="redis", backup_dir=str(tmp_path),
                     login_user="opsadmin", login_password="canary-redis-password-xyz", login_port=1)
    assert "opspack_event" not in dry
    failed = run_module("redis_backup", site="redis", backup_dir=str(tmp_path / "nope"),
                        login_user="opsadmin", login_password="canary-redis-password-xyz", login_port=1)
    told = failed["opspack_event"]
    assert told["kind"] == "operation" and told["operation"] == "backup" and told["result"] == "failed", told
    assert told["site"] == "redis" and told["engine"] == "redis" and told["step"] == "check the backup target"
    assert "does not exist" in told["reason"] and "canary-redis-password-xyz" not in str(told)
