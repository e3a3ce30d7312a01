"""Unit tests for opspack.platform.pitr_drill: input it refuses before touching anything.

The restore itself needs pgBackRest and a cluster: the backups Molecule scenario does it."""

from __future__ import annotations

import datetime

import pytest

from ansible_collections.opspack.platform.plugins.module_utils.backup import BackupError
from ansible_collections.opspack.platform.plugins.module_utils import pgbackrest


def test_target_times_are_utc():
    assert pgbackrest.parse_target("2026-11-23T17:10:03Z") == datetime.datetime(2026, 11, 23, 17, 10, 3, tzinfo=datetime.timezone.utc)
    assert pgbackrest.parse_target("2026-11-23T18:10:03.5+01:00").isoformat() == "2026-11-23T17:10:03.500000+00:00"


@pytest.mark.parametrize("bad", ["yesterday", "2026-11-23 17:10", "2026-11-23T17:10:03"])
def test_malformed_or_zone_less_targets_are_refused(bad):
    with pytest.raises(BackupError, match="target_time"):
        pgbackrest.parse_target(bad)


def test_a_future_target_is_refused_before_pgbackrest_runs(run_module):
    result = run_module("pitr_drill", target_time="2999-01-01T00:00:00Z")
    assert result["failed"] and "is in the future" in result["reason"]


def test_the_scratch_cluster_listens_on_its_socket_only_and_never_archives():
    config = pgbackrest.scratch_config("/var/lib/postgresql/drill/data", 5499)
    assert "listen_addresses = ''" in config and "archive_mode = off" in config
    assert "unix_socket_directories = '/var/lib/postgresql/drill/data'" in config
