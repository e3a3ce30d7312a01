"""SQL migrations on a provisioned lab host, run with opspack.platform.pg_migrations over SSH.

In file order the tests go v1, then v2, then a release whose migration fails halfway, then back
to v1; each first brings the database to the schema it starts from (`at`), so any one runs
alone. The sample site's releases are in tests/sample_site."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from opspack.testing.scenario import sql

PROJECT = Path(os.environ["MOLECULE_PROJECT_DIRECTORY"])
EPHEMERAL = Path(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"])
INVENTORY = EPHEMERAL / "inventory"
SAMPLE = PROJECT / "tests" / "sample_site"
RELEASES = "/var/tmp/opspack-test-releases"
# The lab site's database password: a canary no output may hold.
CANARY = "lab-canary-Pg-7f3a9c"


def migrate(*, check: bool = False, **args) -> dict:
    """Run the module as an operator would (ad hoc, as postgres via sudo); its result."""
    command = ["ansible", "vps1", "-i", str(INVENTORY), "--become", "--become-user", "postgres",
               "-m", "opspack.platform.pg_migrations", "-a", json.dumps(dict({"database": "blog"}, **args))]
    if check:
        command.append("--check")
    ran = subprocess.run(command, capture_output=True, text=True, check=False, cwd=PROJECT,
                         env=dict(os.environ, ANSIBLE_LOAD_CALLBACK_PLUGINS="1", ANSIBLE_STDOUT_CALLBACK="json",
                                  ANSIBLE_NOCOLOR="1"))
    assert CANARY not in ran.stdout + ran.stderr
    try:
        return json.loads(ran.stdout)["plays"][0]["tasks"][0]["hosts"]["vps1"]
    except (ValueError, KeyError, IndexError):
        pytest.fail(f"no module result: {ran.stdout[-2000:]} {ran.stderr[-2000:]}")


def schema(host) -> str:
    """Tables, columns and indexes of the public schema, and the history: what a test compares."""
    return sql(host, "SELECT string_agg(table_name || '.' || column_name, ',' ORDER BY table_name, column_name) "
                     "FROM information_schema.columns WHERE table_schema = 'public'") + "|" + sql(
        host, "SELECT string_agg(indexname, ',' ORDER BY indexname) FROM pg_indexes WHERE schemaname = 'public'") + "|" + sql(
        host, "SELECT coalesce(string_agg(version || ':' || name, ',' ORDER BY version), '') FROM opspack_schema_history")


@pytest.fixture(scope="module", autouse=True)
def releases(host):
    """The sample site's releases, copied to the host as a deploy would unpack them."""
    host.check_output(f"rm -rf {RELEASES} && install -d -m 0755 {RELEASES} {RELEASES}/v0/migrations")
    for release in sorted(path.name for path in SAMPLE.iterdir() if (path / "migrations").is_dir()):
        host.check_output(f"install -d -m 0755 {RELEASES}/{release}/migrations")
        for migration in sorted((SAMPLE / release / "migrations").iterdir()):
            target = f"{RELEASES}/{release}/migrations/{migration.name}"
            host.check_output(f"tee {target} >/dev/null <<'OPSPACK_EOF'\n{migration.read_text()}OPSPACK_EOF")
            host.check_output(f"chmod 0644 {target}")
    yield
    host.check_output(f"rm -rf {RELEASES}")


def at(version: int) -> None:
    """The schema a test starts from, whatever ran before: v0 (no migration), v1 or v2."""
    result = migrate(path=f"{RELEASES}/v{version}/migrations", release=f"v{version}")
    assert not result.get("failed") and result["version_after"] == version, result


def test_v1_applies_its_migration_as_the_site_owner_and_a_second_run_changes_nothing(host):
    at(0)
    result = migrate(path=f"{RELEASES}/v1/migrations", release="v1")
    assert not result.get("failed"), result
    assert result["changed"] and result["applied"] == ["001_create_notes"]
    assert (result["version_before"], result["version_after"]) == (0, 1)
    assert sql(host, "SELECT tableowner FROM pg_tables WHERE tablename = 'notes'") == "blog"
    assert sql(host, "SELECT version, release, rollback_sql FROM opspack_schema_history") == "1|v1|DROP TABLE notes;"
    again = migrate(path=f"{RELEASES}/v1/migrations", release="v1")
    assert again["changed"] is False and again["applied"] == []


def test_a_dry_run_says_what_v2_would_apply_and_applies_nothing(host):
    at(1)
    before = schema(host)
    dry = migrate(check=True, path=f"{RELEASES}/v2/migrations", release="v2")
    assert dry["changed"] and dry["applied"] == ["002_add_note_tags"] and dry["version_after"] == 2
    assert schema(host) == before


def test_v2_applies_the_new_migration_only(host):
    at(1)
    result = migrate(path=f"{RELEASES}/v2/migrations", release="v2")
    assert result["applied"] == ["002_add_note_tags"] and result["version_after"] == 2
    assert sql(host, "SELECT tags FROM notes") == "{}"


def test_a_migration_that_fails_halfway_leaves_the_schema_exactly_as_before(host):
    at(2)
    before = schema(host)
    result = migrate(path=f"{RELEASES}/v3-bad-migration/migrations", release="v3-bad-migration")
    assert result["failed"] and "migration 003_archive_notes failed" in result["msg"]
    assert 'column "archived" does not exist' in result["msg"] and "the schema is as before the run" in result["msg"]
    assert result["version_after"] == 2 and result["applied"] == []
    assert schema(host) == before
    assert sql(host, "SELECT to_regclass('public.notes_archive') IS NULL") == "t"


def test_a_changed_applied_migration_or_a_missing_rollback_is_refused_before_anything(host):
    at(2)
    before = schema(host)
    host.check_output(f"rm -rf {RELEASES}/v2-edited {RELEASES}/v3-no-rollback && cp -r {RELEASES}/v2 {RELEASES}/v2-edited && "
                      f"sed -i 's/bigserial/serial/' {RELEASES}/v2-edited/migrations/001_create_notes.sql")
    changed = migrate(path=f"{RELEASES}/v2-edited/migrations")
    assert changed["failed"] and "001_create_notes was changed after it was applied" in changed["msg"]
    host.check_output(f"cp -r {RELEASES}/v3-bad-migration {RELEASES}/v3-no-rollback && "
                      f"rm {RELEASES}/v3-no-rollback/migrations/003_archive_notes.rollback.sql")
    no_rollback = migrate(path=f"{RELEASES}/v3-no-rollback/migrations")
    assert no_rollback["failed"] and "no rollback script for 003_archive_notes.sql" in no_rollback["msg"]
    assert schema(host) == before


def test_a_second_run_while_one_holds_the_lock_is_refused_naming_the_holder(host):
    before = schema(host)
    # A session that holds the migration lock for a bounded 20 s, as a running deploy would.
    host.check_output("runuser -u postgres -- sh -c \"nohup psql -XAtq -d blog -c "
                      "'SELECT pg_advisory_lock(7164825503391552001), pg_sleep(20)' >/dev/null 2>&1 &\"")
    try:
        host.check_output("for i in $(seq 50); do runuser -u postgres -- psql -XAtq -d blog -c "
                          "\"SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND granted\" | grep -q 1 && exit 0; "
                          "sleep 0.1; done; exit 1")
        result = migrate(path=f"{RELEASES}/v3-bad-migration/migrations", lock_timeout=2)
        assert result["failed"] and "another migration run holds the lock of database blog: pid" in result["msg"]
        assert "psql" in result["msg"]
    finally:
        sql(host, "SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory' AND granted")
    assert schema(host) == before


def test_going_back_to_v1_reverts_v2_with_its_recorded_rollback(host):
    # v1's tree has no 002 files: the rollback SQL recorded in the history reverts it.
    at(2)
    result = migrate(path=f"{RELEASES}/v1/migrations", release="v1")
    assert not result.get("failed"), result
    assert result["reverted"] == ["002_add_note_tags"] and result["version_after"] == 1
    assert sql(host, "SELECT count(*) FROM information_schema.columns WHERE table_name = 'notes' AND column_name = 'tags'") == "0"
    assert sql(host, "SELECT body FROM notes") == "first note"
    assert migrate(path=f"{RELEASES}/v1/migrations")["changed"] is False
