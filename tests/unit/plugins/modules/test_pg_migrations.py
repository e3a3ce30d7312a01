"""Unit tests for opspack.platform.pg_migrations: what it refuses before connecting to a server.

Applying and reverting need a server: the release lifecycle's Molecule scenario does that."""

from __future__ import annotations

import pytest

from ansible_collections.opspack.platform.plugins.module_utils import migrations


def test_a_missing_migrations_directory_is_a_clear_error(run_module, tmp_path):
    result = run_module("pg_migrations", database="blog", path=str(tmp_path / "nope"))
    assert result["failed"] and "migrations directory" in result["msg"] and "does not exist" in result["msg"]
    assert result["changed"] is False and result["applied"] == []


def test_a_malformed_release_is_refused_before_the_database_is_reached(run_module, tmp_path):
    (tmp_path / "002-tags.sql").write_text("CREATE TABLE tags (id int);")
    result = run_module("pg_migrations", database="blog", path=str(tmp_path), login_port=1)
    assert result["failed"] and "002-tags.sql" in result["msg"] and "is not a migration" in result["msg"]


def test_going_to_head_needs_the_release_directory(run_module):
    result = run_module("pg_migrations", database="blog")
    assert result["failed"] and "path" in result["msg"]


# --- the migrate step's opspack_event -----------------------------------------------------------

def test_a_failure_is_told_for_a_site_given_and_no_event_without_one(run_module, tmp_path):
    failed = run_module("pg_migrations", database="blog", path=str(tmp_path / "nope"), site="blog")
    told = failed["opspack_event"]
    assert told == {"kind": "step", "site": "blog", "result": "failed", "step": "migrate",
                    "reason": failed["msg"]}, "the history was not read: no migrations field"
    assert "opspack_event" not in run_module("pg_migrations", database="blog", path=str(tmp_path / "nope"))
    assert "opspack_event" not in run_module("pg_migrations", check_mode=True, database="blog",
                                             path=str(tmp_path / "nope"), site="blog")


def test_a_database_that_cannot_be_reached_fails_cleanly_and_is_told(run_module, tmp_path):
    (tmp_path / "001_posts.sql").write_text("CREATE TABLE posts (id int);")
    (tmp_path / "001_posts.rollback.sql").write_text("DROP TABLE posts;")
    failed = run_module("pg_migrations", database="blog", path=str(tmp_path), site="blog", login_port=1,
                        login_unix_socket=str(tmp_path))
    assert failed["failed"] and failed["changed"] is False, failed
    assert failed["opspack_event"]["result"] == "failed" and failed["opspack_event"]["reason"] == failed["msg"]


class DatabaseError(Exception):
    pass


@pytest.fixture(name="database")
def fixture_database(monkeypatch, tmp_path):
    """A stand-in for the database: its history (version -> row) and the SQL that fails."""
    from ansible_collections.opspack.platform.plugins.modules import pg_migrations
    for version, name in ((1, "posts"), (2, "tags"), (3, "likes")):
        (tmp_path / f"00{version}_{name}.sql").write_text(f"CREATE TABLE {name} (id int);")
        (tmp_path / f"00{version}_{name}.rollback.sql").write_text(f"DROP TABLE {name};")
    release = {item["version"]: item for item in migrations.read_release(str(tmp_path))}
    state = {"history": {1: {"name": "001_posts", "checksum": release[1]["checksum"],
                             "rollback_sql": release[1]["rollback_sql"]}}, "failing": set()}

    class Migrator:
        def __init__(self, module):
            pass

        def lock(self):
            pass

        def become_owner(self):
            pass

        def history_exists(self):
            return True

        def applied(self):
            return dict(state["history"])

        def apply(self, item):
            if item["sql"] in state["failing"]:
                raise DatabaseError(f"cannot run {item['name']}")
            state["history"][item["version"]] = item

        def revert(self, item):
            if item["rollback_sql"] in state["failing"]:
                raise DatabaseError(f"cannot revert {item['name']}")
            del state["history"][item["version"]]

        def close(self):
            pass
    monkeypatch.setattr(pg_migrations, "Migrator", Migrator)
    monkeypatch.setattr(pg_migrations.engine, "DATABASE_ERRORS", (DatabaseError,))
    state["module"], state["path"] = pg_migrations, str(tmp_path)
    return state


def migrate(database, monkeypatch, capsys, **args) -> dict:
    from .test_pg_backup_restore import run_in_process
    return run_in_process(monkeypatch, capsys, database["module"].main,
                          **dict(dict(database="blog", path=database["path"], site="blog"), **args))


def test_a_migration_run_tells_the_step_with_the_version_it_reached(database, monkeypatch, capsys):
    assert "opspack_event" not in migrate(database, monkeypatch, capsys, _ansible_check_mode=True)
    done = migrate(database, monkeypatch, capsys)
    assert done["changed"] and done["opspack_event"] == {
        "kind": "step", "site": "blog", "result": "done", "step": "migrate",
        "migrations": {"version": 3, "applied": ["002_tags", "003_likes"], "reverted": []}}, done
    assert "opspack_event" not in migrate(database, monkeypatch, capsys), "nothing to do: no event"
    back = migrate(database, monkeypatch, capsys, target="1")["opspack_event"]
    assert back["result"] == "done" and back["migrations"] == {"version": 1, "applied": [], "reverted": ["003_likes", "002_tags"]}
    assert "opspack_event" not in migrate(database, monkeypatch, capsys, site=None)


def test_a_failed_migration_tells_where_the_schema_stands(database, monkeypatch, capsys):
    database["failing"].add("CREATE TABLE likes (id int);")
    failed = migrate(database, monkeypatch, capsys)
    told = failed["opspack_event"]
    assert failed["failed"] and told["result"] == "failed" and told["step"] == "migrate", told
    assert told["reason"].startswith("migration 003_likes failed: cannot run 003_likes")
    assert told["migrations"] == {"version": 1, "applied": [], "reverted": []}, "this run's 002_tags was reverted"


def test_a_refused_plan_tells_the_version_the_schema_stayed_at(database, monkeypatch, capsys):
    database["history"][1]["checksum"] = "changed"
    told = migrate(database, monkeypatch, capsys)["opspack_event"]
    assert told["result"] == "failed" and told["migrations"] == {"version": 1, "applied": [], "reverted": []}, told


def test_a_failure_that_leaves_the_schema_unknown_tells_no_version(database, monkeypatch, capsys):
    database["failing"] |= {"CREATE TABLE likes (id int);", "DROP TABLE tags;"}
    told = migrate(database, monkeypatch, capsys)["opspack_event"]
    assert told["result"] == "failed" and "reverting 002_tags failed too" in told["reason"], told
    assert "migrations" not in told, told
