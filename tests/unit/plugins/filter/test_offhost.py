"""The off-host filters: which kept backups still need their copy, where the copies live."""

from __future__ import annotations

from ansible_collections.opspack.platform.plugins.filter.offhost import offhost_dirs, offhost_missing

ROOT = "/var/backups/opspack"
OFFHOST = "/ops/backups/vps1"


def result(backup_id, kept, suffix=".pgdump", where="blog/postgresql", **extra):
    return dict({"backup_id": backup_id, "path": f"{ROOT}/{where}/{backup_id}{suffix}", "kept": kept}, **extra)


def found(*paths):
    return {"files": [{"path": path} for path in paths]}


def test_a_scheduled_backup_without_a_copy_is_listed_with_its_manifest():
    new, scheduled = "blog-postgresql-20261202T010000Z", "blog-postgresql-20261202T030000Z"
    have = found(f"{OFFHOST}/blog/postgresql/{new}.pgdump", f"{OFFHOST}/blog/postgresql/{new}.manifest.json")
    missing = offhost_missing([result(new, [scheduled, new])], have, ROOT, OFFHOST)
    assert missing == [{"backup_id": scheduled, "src": f"{ROOT}/blog/postgresql/{scheduled}.pgdump",
                        "manifest_src": f"{ROOT}/blog/postgresql/{scheduled}.manifest.json",
                        "dest_dir": f"{OFFHOST}/blog/postgresql",
                        "offhost_path": f"{OFFHOST}/blog/postgresql/{scheduled}.pgdump",
                        "offhost_manifest": f"{OFFHOST}/blog/postgresql/{scheduled}.manifest.json"}]


def test_a_copy_without_its_manifest_is_copied_again_and_failed_or_skipped_results_are_ignored():
    backup = "redis-redis-20261202T010000Z"
    have = found(f"{OFFHOST}/redis/{backup}.rdb")
    results = [result(backup, [backup], ".rdb", "redis"), {"failed": True, "msg": "x"}, {"skipped": True},
               result("blog-files-20261202T010000Z", ["blog-files-20261202T010000Z"], ".tar.gz", "blog/files/up", failed=True)]
    assert [item["offhost_path"] for item in offhost_missing(results, have, ROOT, OFFHOST)] == [f"{OFFHOST}/redis/{backup}.rdb"]
    assert offhost_missing([], {}, ROOT, OFFHOST) == []


def test_the_controllers_home_is_expanded_so_a_copy_there_is_found(monkeypatch):
    monkeypatch.setenv("HOME", "/home/ops")
    backup = "redis-redis-20261202T010000Z"
    have = found(f"/home/ops/backups/vps1/redis/{backup}.rdb", f"/home/ops/backups/vps1/redis/{backup}.manifest.json")
    assert offhost_missing([result(backup, [backup], ".rdb", "redis")], have, ROOT, "~/backups/vps1") == []


def test_retention_runs_in_each_directory_of_a_successful_backup_once():
    results = [result("blog-postgresql-20261202T010000Z", ["blog-postgresql-20261201T010000Z"]),
               result("blog-postgresql-20261202T010001Z", []),
               result("redis-redis-20261202T010000Z", [], ".rdb", "redis"),
               result("shop-postgresql-20261202T010000Z", [], where="shop/postgresql", failed=True), {"skipped": True}]
    assert offhost_dirs(results, ROOT, OFFHOST) == [
        {"path": f"{OFFHOST}/blog/postgresql", "keep": ["blog-postgresql-20261201T010000Z", "blog-postgresql-20261202T010000Z",
                                                        "blog-postgresql-20261202T010001Z"]},
        {"path": f"{OFFHOST}/redis", "keep": ["redis-redis-20261202T010000Z"]}]
    assert offhost_dirs(None, ROOT, OFFHOST) == []
