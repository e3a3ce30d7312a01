"""Unit tests for opspack.platform.pg_backup: what it decides before touching a database.

Taking a real backup needs a server: tests/lab and the backups Molecule scenario do that."""

from __future__ import annotations

import datetime

from ansible_collections.opspack.platform.plugins.module_utils import backup
from ansible_collections.opspack.platform.plugins.module_utils import postgresql_backup as engine
from ansible_collections.opspack.platform.plugins.modules import pg_backup


def seed(directory, days: int) -> list[str]:
    now = backup.utc_now()
    ids = []
    for day in range(days, 0, -1):
        ended = now - datetime.timedelta(days=day)
        backup_id = backup.new_backup_id("blog", "postgresql", ended)
        (directory / f"{backup_id}.pgdump").write_bytes(b"x")
        backup.write_json_atomic(backup.manifest_path(str(directory), backup_id), {
            "format": 1, "backup_id": backup_id, "site": "blog", "engine": "postgresql", "file": f"{backup_id}.pgdump",
            "sha256": backup.sha256_file(str(directory / f"{backup_id}.pgdump")), "size_bytes": 1,
            "started_at": backup.to_iso(ended), "ended_at": backup.to_iso(ended)})
        ids.append(backup_id)
    return ids


def test_check_mode_reports_the_backup_and_what_retention_would_delete(run_module, tmp_path):
    ids = seed(tmp_path, 40)
    before = sorted(path.name for path in tmp_path.iterdir())
    result = run_module("pg_backup", check_mode=True, site="blog", database="blog", backup_dir=str(tmp_path),
                        keep_last=2, keep_daily_days=30)
    assert not result.get("failed"), result
    assert result["changed"] is False
    assert result["backup_id"].startswith("blog-postgresql-")
    # The new backup (today) plus the 29 newest days are kept; the 11 oldest would go.
    assert result["deleted"] == ids[:11]
    assert result["backup_id"] in result["kept"] and len(result["kept"]) == 30
    assert sorted(path.name for path in tmp_path.iterdir()) == before


def test_a_missing_backup_directory_is_a_clear_error(run_module, tmp_path):
    result = run_module("pg_backup", check_mode=True, site="blog", database="blog", backup_dir=str(tmp_path / "nope"))
    assert result["failed"] and "does not exist" in result["msg"]


def test_a_bad_site_name_is_refused_before_anything(run_module, tmp_path):
    result = run_module("pg_backup", site="Blog Site", database="blog", backup_dir=str(tmp_path))
    assert result["failed"] and "cannot name a backup" in result["msg"]
    assert not list(tmp_path.iterdir())


def test_argument_spec_shares_the_connection_options():
    spec = pg_backup.argument_spec()
    assert {"login_unix_socket", "login_port", "login_user"} <= set(spec)
    assert spec["keep_daily_days"]["default"] == 30


def test_pg_dump_runs_at_zlib_level_1_unless_told_and_a_bad_level_is_refused(run_module, tmp_path):
    spec = pg_backup.argument_spec()
    assert spec["compress"]["default"] == 1
    command = engine.dump_command({"login_unix_socket": "/run/postgresql", "login_port": 5432}, "blog", "snap", "/b/x", 1)
    assert "--compress=1" in command and command[-2:] == ["--dbname", "blog"]
    assert not any(arg.startswith("--compress") for arg in engine.dump_command(
        {"login_unix_socket": "/run/postgresql", "login_port": 5432}, "blog", "snap", "/b/x", None))
    result = run_module("pg_backup", check_mode=True, site="blog", database="blog", backup_dir=str(tmp_path), compress=10)
    assert result["failed"] and "compress" in result["msg"]
    assert not list(tmp_path.iterdir())


def test_a_backup_refused_before_anything_is_still_told_but_check_mode_tells_nothing(run_module, tmp_path):
    refused = run_module("pg_backup", site="Blog Site", database="blog", backup_dir=str(tmp_path))
    told = refused["opspack_event"]
    assert told["kind"] == "operation" and told["operation"] == "backup" and told["result"] == "failed", told
    assert told["site"] == "Blog Site" and told["engine"] == "postgresql" and told["step"] == "name the backup"
    assert "cannot name a backup" in told["reason"] and "backup_id" not in told
    seed(tmp_path, 2)
    assert "opspack_event" not in run_module("pg_backup", check_mode=True, site="blog", database="blog",
                                             backup_dir=str(tmp_path))


def test_a_dump_that_fails_is_an_incident_of_the_site(run_module, tmp_path):
    # No server listens on port 1: the dump fails after the target was checked.
    failed = run_module("pg_backup", site="blog", database="blog", backup_dir=str(tmp_path), login_port=1,
                        login_unix_socket=str(tmp_path))
    told = failed["opspack_event"]
    assert failed["failed"] and told["result"] == "failed" and told["step"] == "take the postgresql backup", told
    assert told["reason"] == failed["msg"].splitlines()[0][:300]
    assert [path.name for path in tmp_path.iterdir()] == [], "nothing of the failed backup is left"
