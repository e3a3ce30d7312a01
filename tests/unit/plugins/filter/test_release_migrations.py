"""Unit tests for the release_migrations filter (a release's migrations, checked on the control node)."""

from __future__ import annotations

import pytest
from ansible.errors import AnsibleFilterError

from ansible_collections.opspack.platform.plugins.filter.migrations import release_migrations


def write(directory, *names):
    directory.mkdir(exist_ok=True)
    for name in names:
        (directory / name).write_text("SELECT 1;\n")
    return directory


def test_the_migrations_come_oldest_first_by_version_not_by_name(tmp_path):
    found = write(tmp_path / "m", "9_nine.sql", "9_nine.rollback.sql", "10_ten.sql", "10_ten.rollback.sql")
    assert release_migrations(found) == ["9_nine", "10_ten"]
    assert release_migrations(write(tmp_path / "empty")) == []


@pytest.mark.parametrize("names, message", [
    (("001_a.sql",), "no rollback script for 001_a.sql"),
    (("001_a.sql", "001_a.rollback.sql", "002-b.sql"), "002-b.sql in"),
    (("001_a.sql", "001_a.rollback.sql", "1_b.sql", "1_b.rollback.sql"), "have the same version 1"),
    (("002_b.rollback.sql",), "rolls back no migration"),
])
def test_a_bad_release_is_refused_naming_the_file(tmp_path, names, message):
    with pytest.raises(AnsibleFilterError, match=message):
        release_migrations(write(tmp_path / "m", *names))


def test_a_missing_directory_is_refused(tmp_path):
    with pytest.raises(AnsibleFilterError, match="does not exist"):
        release_migrations(tmp_path / "none")
