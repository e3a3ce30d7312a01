"""Unit tests for the PITR guards: which backup set can reach a target, and where recovery stopped."""

from __future__ import annotations

import datetime
import json

import pytest

from ansible_collections.opspack.platform.plugins.module_utils import pgbackrest
from ansible_collections.opspack.platform.plugins.module_utils.backup import BackupError

UTC = datetime.timezone.utc


def info(*stops: int) -> str:
    """pgbackrest info --output=json with backups ending at the given epoch seconds."""
    backups = [{"label": f"set{index}", "type": "full" if index == 0 else "diff",
                "timestamp": {"start": stop - 5, "stop": stop}} for index, stop in enumerate(stops)]
    return json.dumps([{"name": "main", "status": {"code": 0}, "backup": backups}])


def at(epoch: int) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(epoch, UTC)


def test_the_newest_set_that_ended_before_the_target_is_chosen():
    sets = pgbackrest.backup_sets(info(1000, 2000, 3000), "main")
    assert pgbackrest.choose_set(sets, at(2500))["label"] == "set1"
    assert pgbackrest.choose_set(sets, at(2001))["label"] == "set1"
    # Stop times are whole seconds: a set that ended within the target's second cannot be trusted.
    assert pgbackrest.choose_set(sets, at(2000))["label"] == "set0"
    assert pgbackrest.choose_set(sets, at(9999))["label"] == "set2"


def test_a_target_before_every_backup_is_refused_naming_the_first():
    sets = pgbackrest.backup_sets(info(1000, 2000), "main")
    with pytest.raises(BackupError, match="before any backup can reach it: the first backup ended at 1970-01-01T00:16:40Z"):
        pgbackrest.choose_set(sets, at(999))
    with pytest.raises(BackupError, match="holds no backup"):
        pgbackrest.choose_set([], at(999))


def test_an_unknown_stanza_is_a_clear_error():
    with pytest.raises(BackupError, match="stanza other is not in the pgBackRest repository"):
        pgbackrest.backup_sets(info(1000), "other")


LOG = """2026-11-23 17:10:09.001 UTC [77] LOG:  starting point-in-time recovery to 2026-11-23 17:10:05+00
2026-11-23 17:10:09.500 UTC [77] LOG:  recovery stopping before commit of transaction 812, time 2026-11-23 17:10:07.654321+00
2026-11-23 17:10:09.600 UTC [77] LOG:  redo done at 0/3000148
"""


def test_recovery_stop_is_read_from_the_log():
    stopped = pgbackrest.recovery_stop(LOG, datetime.datetime(2026, 11, 23, 17, 10, 5, tzinfo=UTC))
    assert stopped == datetime.datetime(2026, 11, 23, 17, 10, 7, 654321, tzinfo=UTC)


def test_a_log_without_proof_of_the_stop_fails():
    with pytest.raises(BackupError, match="does not say where recovery stopped"):
        pgbackrest.recovery_stop("LOG:  redo done at 0/3000148\n", datetime.datetime(2026, 11, 23, tzinfo=UTC))


def test_recovery_that_did_not_reach_the_target_fails():
    log = "FATAL:  recovery ended before configured recovery target was reached\n"
    with pytest.raises(BackupError, match="before the target time was reached"):
        pgbackrest.recovery_stop(log, datetime.datetime(2026, 11, 23, tzinfo=UTC))


def test_a_stop_at_or_before_the_target_is_not_accepted():
    with pytest.raises(BackupError, match="did not stop at the target"):
        pgbackrest.recovery_stop(LOG, datetime.datetime(2026, 11, 23, 17, 10, 8, tzinfo=UTC))


def set_info(label: str, tablespaces) -> str:
    return json.dumps([{"name": "main", "backup": [{"label": label, "tablespace": tablespaces}]}])


def test_a_tablespace_created_after_the_set_refuses_the_recovery_beside_production(tmp_path):
    (tmp_path / "pg_tblspc").mkdir()
    (tmp_path / "pg_tblspc" / "16400").symlink_to("/srv/pg/fast")
    (tmp_path / "pg_tblspc" / "16500").symlink_to("/srv/pg/later")
    production = pgbackrest.tablespace_links(str(tmp_path))
    assert production == {"16400": "/srv/pg/fast", "16500": "/srv/pg/later"}
    in_set = pgbackrest.set_tablespaces(set_info("s1", [{"name": "fast", "oid": 16400, "destination": "/srv/pg/fast"}]),
                                        "main", "s1")
    assert in_set == {"16400": "fast"}
    with pytest.raises(BackupError, match="oid 16500 at /srv/pg/later are not in backup set s1"):
        pgbackrest.tablespace_guard(production, in_set, "s1")
    pgbackrest.tablespace_guard({"16400": "/srv/pg/fast"}, in_set, "s1")
    assert pgbackrest.set_tablespaces(set_info("s2", None), "main", "s2") == {}
    with pytest.raises(BackupError, match="backup set s3 is not in stanza main"):
        pgbackrest.set_tablespaces(set_info("s2", None), "main", "s3")


def test_tablespaces_of_the_set_are_restored_below_the_scratch_root_never_in_place():
    class Cluster:
        root = "/var/lib/postgresql/opspack-pitr-drill"
        directory = root + "/data"
    target = datetime.datetime(2026, 12, 2, 1, 0, 0, tzinfo=UTC)
    plain = pgbackrest.restore_arguments(Cluster, target, {"label": "s1", "tablespaces": {}})
    assert plain[-1] == "restore" and not [arg for arg in plain if arg.startswith("--tablespace-map")]
    mapped = pgbackrest.restore_arguments(Cluster, target, {"label": "s1", "tablespaces": {"16400": "fast"}})
    assert "--tablespace-map-all=/var/lib/postgresql/opspack-pitr-drill/tablespaces" in mapped
    assert "--pg1-path=/var/lib/postgresql/opspack-pitr-drill/data" in mapped and "--set=s1" in mapped
