"""Unit tests for opspack.platform.pg_migrations: what it refuses before connecting to a server.

Applying and reverting need a server: the release lifecycle's Molecule scenario does that."""

from __future__ import annotations


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
