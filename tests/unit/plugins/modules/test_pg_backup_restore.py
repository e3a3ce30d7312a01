"""Unit tests for opspack.platform.pg_backup_restore: what it refuses before touching a database.

The restore and the swap need a server: the backups Molecule scenario does them."""

from __future__ import annotations

import pytest

from ansible_collections.opspack.platform.plugins.module_utils import postgresql_backup

from .test_pg_backup import seed


def test_without_the_typed_confirmation_nothing_happens(run_module, tmp_path):
    seed(tmp_path, 1)
    result = run_module("pg_backup_restore", site="blog", database="blog", backup_dir=str(tmp_path), confirm="yes")
    assert result["failed"] and "confirm must repeat the site's name ('blog')" in result["msg"]
    assert result["changed"] is False and "backup_id" not in result


def test_an_unknown_backup_id_is_refused(run_module, tmp_path):
    seed(tmp_path, 1)
    result = run_module("pg_backup_restore", site="blog", database="blog", backup_dir=str(tmp_path), confirm="blog",
                        backup_id="blog-postgresql-20200101T000000Z")
    assert result["failed"] and "unknown backup id" in result["msg"]


def test_a_corrupt_backup_is_refused_before_the_database_is_touched(run_module, tmp_path):
    ids = seed(tmp_path, 1)
    (tmp_path / f"{ids[0]}.pgdump").write_bytes(b"y")
    result = run_module("pg_backup_restore", site="blog", database="blog", backup_dir=str(tmp_path), confirm="blog")
    assert result["failed"] and "checksum error" in result["msg"]


@pytest.mark.parametrize("name", ["blog", "blog__before_20261123T000000Z", "postgres"])
def test_only_an_incoming_database_can_be_dropped(name):
    with pytest.raises(postgresql_backup.BackupError, match="refusing to drop"):
        postgresql_backup.drop_database_quietly({}, name)
