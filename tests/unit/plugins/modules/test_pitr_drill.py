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


# --- the drill's opspack_event ------------------------------------------------------------------

def test_a_failed_drill_is_told_only_for_a_site_and_never_in_check_mode(run_module):
    failed = run_module("pitr_drill", target_time="2999-01-01T00:00:00Z", site="blog")
    told = failed["opspack_event"]
    assert told["kind"] == "operation" and told["operation"] == "drill" and told["result"] == "fail", told
    assert told["site"] == "blog" and told["engine"] == "pitr" and told["step"] == "choose the backup set"
    assert "is in the future" in told["reason"] and "backup_id" not in told
    assert "opspack_event" not in run_module("pitr_drill", target_time="2999-01-01T00:00:00Z"), "a drill of no site"
    assert "opspack_event" not in run_module("pitr_drill", check_mode=True, target_time="2999-01-01T00:00:00Z", site="blog")


def test_a_recovered_cluster_is_told_as_a_pass_with_its_set(monkeypatch, capsys):
    from ansible_collections.opspack.platform.plugins.modules import pitr_drill

    from .test_pg_backup_restore import run_in_process

    class Cluster:
        def __init__(self, module):
            pass

        def remove(self):
            pass

    def plan(module, result):
        result.update(backup_set="20261120-025500F", backup_set_stopped_at="2026-11-20T03:00:00Z")
        return pgbackrest.parse_target(module.params["target_time"]), {"label": "20261120-025500F"}
    monkeypatch.setattr(pgbackrest, "plan", plan)
    monkeypatch.setattr(pgbackrest, "ScratchCluster", Cluster)
    monkeypatch.setattr(pgbackrest, "prepare", lambda module, cluster, chosen: None)
    monkeypatch.setattr(pgbackrest, "recover", lambda *args: datetime.datetime(2026, 11, 21, 10, 0, 1,
                                                                               tzinfo=datetime.timezone.utc))
    passed = run_in_process(monkeypatch, capsys, pitr_drill.main, target_time="2026-11-21T10:00:00Z", site="blog")
    assert passed["opspack_event"] == {
        "kind": "operation", "site": "blog", "operation": "drill", "result": "pass", "backup_id": "20261120-025500F",
        "backup_ended_at": "2026-11-20T03:00:00Z", "engine": "pitr", "rto_s": passed["rto_seconds"]}, passed

    def broken(*args):
        raise BackupError("recovery did not stop before the target")
    monkeypatch.setattr(pgbackrest, "recover", broken)
    told = run_in_process(monkeypatch, capsys, pitr_drill.main, target_time="2026-11-21T10:00:00Z", site="blog")["opspack_event"]
    assert told["result"] == "fail" and told["step"] == "recover to the target", told
    assert told["reason"] == "recovery did not stop before the target" and told["backup_id"] == "20261120-025500F"


def test_the_cluster_paths_come_from_the_one_postgresql_major_installed(tmp_path):
    lib = tmp_path / "lib"
    (lib / "17" / "bin").mkdir(parents=True)
    (lib / "17" / "bin" / "pg_ctl").write_text("")
    params = {"pg_bin_dir": None, "production_data_dir": None}
    pgbackrest.cluster_paths(params, lib_dir=str(lib), data_root="/data")
    assert params == {"pg_bin_dir": str(lib / "17" / "bin"), "production_data_dir": "/data/17/main"}
    given = {"pg_bin_dir": "/opt/pg/bin", "production_data_dir": "/srv/pg"}
    pgbackrest.cluster_paths(given, lib_dir=str(lib))
    assert given == {"pg_bin_dir": "/opt/pg/bin", "production_data_dir": "/srv/pg"}
    (lib / "15" / "bin").mkdir(parents=True)
    (lib / "15" / "bin" / "pg_ctl").write_text("")
    with pytest.raises(BackupError, match="PostgreSQL servers installed: 15, 17 .*give pg_bin_dir"):
        pgbackrest.cluster_paths({"pg_bin_dir": None, "production_data_dir": None}, lib_dir=str(lib))
