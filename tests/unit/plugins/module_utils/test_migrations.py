"""Unit tests for module_utils/migrations: reading a release's migrations and planning a run."""

from __future__ import annotations

import pytest

from ansible_collections.opspack.platform.plugins.module_utils import migrations


def release_dir(tmp_path, files: dict):
    directory = tmp_path / "migrations"
    directory.mkdir()
    for name, text in files.items():
        (directory / name).write_text(text)
    return str(directory)


V1 = {"001_posts.sql": "CREATE TABLE posts (id int);", "001_posts.rollback.sql": "DROP TABLE posts;"}
V2 = dict(V1, **{"002_tags.sql": "CREATE TABLE tags (id int);", "002_tags.rollback.sql": "DROP TABLE tags;"})


def applied_from(release: list[dict]) -> dict:
    return {item["version"]: {"name": item["name"], "checksum": item["checksum"], "rollback_sql": item["rollback_sql"]}
            for item in release}


def test_a_release_is_read_oldest_first_with_its_rollbacks(tmp_path):
    release = migrations.read_release(release_dir(tmp_path, dict(V2, **{"010_late.sql": "SELECT 1;"})))
    assert [item["name"] for item in release] == ["001_posts", "002_tags", "010_late"]
    assert release[1]["rollback_sql"] == "DROP TABLE tags;" and release[2]["rollback_sql"] is None
    assert release[0]["checksum"] == migrations.checksum("CREATE TABLE posts (id int);")


@pytest.mark.parametrize(("files", "message"), [
    ({"002-tags.sql": "x"}, "is not a migration"),
    ({"002_Tags.sql": "x"}, "is not a migration"),
    ({"002_tags.sql": "x", "02_other.sql": "y"}, "have the same version 2"),
    ({"003_gone.rollback.sql": "x"}, "rolls back no migration"),
])
def test_a_malformed_release_is_refused(tmp_path, files, message):
    with pytest.raises(migrations.MigrationError, match=message):
        migrations.read_release(release_dir(tmp_path, files))


def test_head_applies_what_is_pending_in_order(tmp_path):
    release = migrations.read_release(release_dir(tmp_path, V2))
    steps = migrations.plan(release, applied_from(release[:1]), "head")
    assert [item["name"] for item in steps["apply"]] == ["002_tags"] and steps["revert"] == [] and steps["goal"] == 2
    assert migrations.plan(release, applied_from(release), "head")["apply"] == []


def test_a_migration_without_a_rollback_script_is_refused_unless_allowed(tmp_path):
    release = migrations.read_release(release_dir(tmp_path, dict(V1, **{"002_tags.sql": "CREATE TABLE tags (id int);"})))
    with pytest.raises(migrations.MigrationError, match="no rollback script for 002_tags.sql"):
        migrations.plan(release, {}, "head")
    assert len(migrations.plan(release, {}, "head", require_rollback=False)["apply"]) == 2


def test_an_applied_migration_that_changed_is_refused(tmp_path):
    release = migrations.read_release(release_dir(tmp_path, V2))
    applied = applied_from(release)
    applied[1]["checksum"] = migrations.checksum("CREATE TABLE posts (id bigint);")
    with pytest.raises(migrations.MigrationError, match="001_posts was changed after it was applied"):
        migrations.plan(release, applied, "head")


def test_rolling_back_reverts_newest_first_with_the_recorded_rollback_sql(tmp_path):
    newer = migrations.read_release(release_dir(tmp_path, dict(V2, **{"003_x.sql": "SELECT 3;", "003_x.rollback.sql": "SELECT -3;"})))
    older = newer[:1]
    # The older release lacks 002 and 003: their recorded rollback SQL reverts them.
    steps = migrations.plan(older, applied_from(newer), "head")
    assert [(item["name"], item["rollback_sql"]) for item in steps["revert"]] == [("003_x", "SELECT -3;"),
                                                                                  ("002_tags", "DROP TABLE tags;")]
    assert steps["apply"] == []
    assert [item["name"] for item in migrations.plan([], applied_from(newer), "1")["revert"]] == ["003_x", "002_tags"]
    assert [item["name"] for item in migrations.plan([], applied_from(newer), "0")["revert"]] == ["003_x", "002_tags", "001_posts"]


def test_a_migration_that_cannot_be_reverted_is_refused_before_anything(tmp_path):
    release = migrations.read_release(release_dir(tmp_path, V2))
    applied = applied_from(release)
    applied[2]["rollback_sql"] = None
    with pytest.raises(migrations.MigrationError, match="002_tags cannot be reverted"):
        migrations.plan(release[:1], applied, "head")


def test_a_migration_older_than_an_applied_one_or_missing_from_the_release_is_refused(tmp_path):
    release = migrations.read_release(release_dir(tmp_path, V2))
    with pytest.raises(migrations.MigrationError, match="older than applied migration 2"):
        migrations.plan(release, applied_from(release[1:]), "head")
    with pytest.raises(migrations.MigrationError, match="migration 1 .001_posts. is applied but missing from this release"):
        migrations.plan(release[1:], applied_from(release), "head")


@pytest.mark.parametrize("target", ["latest", "-1", "v2", "7"])
def test_an_unknown_target_is_refused(tmp_path, target):
    release = migrations.read_release(release_dir(tmp_path, V2))
    with pytest.raises(migrations.MigrationError, match="target"):
        migrations.plan(release, {}, target)


def test_current_plans_nothing_whatever_the_release_holds(tmp_path):
    applied = applied_from(migrations.read_release(release_dir(tmp_path, V2)))
    steps = migrations.plan([], applied, "current")
    assert steps == {"goal": 2, "apply": [], "revert": []}
