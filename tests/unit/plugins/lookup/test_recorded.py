"""What the records say was last done (lookup opspack.platform.recorded)."""

from __future__ import annotations

from ansible_collections.opspack.platform.plugins.lookup import recorded

HISTORY = [
    {"operation": "backup", "result": "ok", "host": "vps1", "site": "blog", "engine": "postgresql", "backup_id": "blog-postgresql-1",
     "time": "2026-12-05T03:00:00Z"},
    {"operation": "backup", "result": "ok", "host": "vps1", "site": "blog", "engine": "postgresql", "backup_id": "blog-postgresql-2",
     "time": "2026-12-06T03:00:00Z"},
    {"operation": "backup", "result": "failed", "host": "vps1", "site": "blog", "engine": "postgresql", "time": "2026-12-06T04:00:00Z"},
    {"operation": "backup", "result": "ok", "host": "vps2", "site": "blog", "engine": "postgresql", "backup_id": "blog-postgresql-9"},
    {"operation": "backup", "result": "ok", "host": "vps1", "site": "blog", "engine": "files", "backup_id": "blog-files-2"},
    {"operation": "drill", "result": "pass", "host": "vps1", "site": "blog", "time": "2026-12-01T03:00:00Z"},
    {"operation": "drill", "result": "fail", "host": "vps2", "site": "blog", "time": "2026-12-02T03:00:00Z"},
    {"operation": "deploy", "result": "ok", "host": "vps1", "site": "shop"},
]


def test_the_newest_successful_backup_per_site_and_engine_of_the_host():
    assert recorded.newest_backups(HISTORY, "vps1") == [
        {"site": "blog", "engine": "files", "backup_id": "blog-files-2", "time": ""},
        {"site": "blog", "engine": "postgresql", "backup_id": "blog-postgresql-2", "time": "2026-12-06T03:00:00Z"}]
    assert recorded.newest_backups(HISTORY, "vps3") == []


def test_the_last_drill_of_each_site_on_any_host():
    assert recorded.last_drills(HISTORY) == [{"site": "blog", "result": "fail", "time": "2026-12-02T03:00:00Z", "host": "vps2"}]


def test_no_records_yet_is_nothing(tmp_path):
    assert recorded.read_history(str(tmp_path / "history.jsonl")) == []
