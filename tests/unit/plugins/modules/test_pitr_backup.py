"""Unit tests for opspack.platform.pitr_backup: what it decides before recovering anything.

pgBackRest is faked by a script on PATH that answers `info` and logs every call; the recovery
itself needs a cluster and a repository: the backups Molecule scenario does it."""

from __future__ import annotations

import datetime
import json

import pytest

from ansible_collections.opspack.platform.plugins.modules import pitr_backup

SET_STOP = datetime.datetime(2026, 11, 20, 3, 0, 0, tzinfo=datetime.timezone.utc)


@pytest.fixture(name="fake_pgbackrest")
def fixture_fake_pgbackrest(tmp_path, monkeypatch):
    """A pgbackrest that knows one full backup set, and the file its calls are logged to."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "calls.log"
    info = [{"name": "main", "backup": [{"label": "20261120-025500F", "type": "full", "info": {"size": 1},
                                         "timestamp": {"start": int(SET_STOP.timestamp()) - 300,
                                                       "stop": int(SET_STOP.timestamp())}}]}]
    script = bin_dir / "pgbackrest"
    script.write_text("#!/bin/sh\n"
                      f"echo \"$@\" >> {calls}\n"
                      f"case \"$*\" in *info*) cat <<'EOF'\n{json.dumps(info)}\nEOF\n;; *) exit 0;; esac\n")
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
    return calls


def test_check_mode_names_the_set_and_the_backup_and_writes_nothing(run_module, tmp_path, fake_pgbackrest):
    backups = tmp_path / "backups"
    backups.mkdir()
    result = run_module("pitr_backup", check_mode=True, site="blog", database="blog", backup_dir=str(backups),
                        target_time="2026-11-21T10:00:00Z", scratch_dir=str(tmp_path / "scratch"))
    assert not result.get("failed"), result
    assert result["changed"] is False
    assert result["backup_set"] == "20261120-025500F" and result["target_time"] == "2026-11-21T10:00:00Z"
    assert result["backup_id"].startswith("blog-postgresql-") and result["deleted"] == []
    assert not list(backups.iterdir()) and not (tmp_path / "scratch").exists()
    assert fake_pgbackrest.read_text().split("\n")[0].endswith("info")


@pytest.mark.parametrize(("target", "message"), [
    ("2026-11-20T03:00:00Z", "is before any backup can reach it: the first backup ended at 2026-11-20T03:00:00Z"),
    ("2999-01-01T00:00:00Z", "is in the future"),
    ("yesterday", "is not a time such as"),
    ("2026-11-21T10:00:00", "has no time zone"),
])
def test_a_target_no_backup_can_reach_is_refused_before_anything(run_module, tmp_path, fake_pgbackrest, target, message):
    backups = tmp_path / "backups"
    backups.mkdir()
    result = run_module("pitr_backup", site="blog", database="blog", backup_dir=str(backups), target_time=target,
                        scratch_dir=str(tmp_path / "scratch"))
    assert result["failed"] and message in result["msg"], result
    assert result["changed"] is False
    assert not list(backups.iterdir()) and not (tmp_path / "scratch").exists()
    # Nothing but `info` ran (if anything): no check, no restore.
    if fake_pgbackrest.exists():
        assert "restore" not in fake_pgbackrest.read_text() and "check" not in fake_pgbackrest.read_text()


def test_a_scratch_dir_that_is_not_a_scratch_cluster_is_never_removed(run_module, tmp_path, fake_pgbackrest):
    backups = tmp_path / "backups"
    backups.mkdir()
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "data.txt").write_text("keep me")
    result = run_module("pitr_backup", site="blog", database="blog", backup_dir=str(backups),
                        target_time="2026-11-21T10:00:00Z", scratch_dir=str(precious))
    assert result["failed"] and "is not an opspack scratch cluster: refusing to touch it" in result["msg"], result
    assert (precious / "data.txt").read_text() == "keep me"
    assert "restore" not in fake_pgbackrest.read_text()
    assert [path.name for path in backups.iterdir()] == []


def test_retention_is_not_an_option_here():
    spec = pitr_backup.argument_spec()
    assert not {"prune", "keep_last", "keep_daily_days", "login_port"} & set(spec)
    assert spec["scratch_dir"]["default"] != "/var/lib/postgresql/opspack-pitr-drill"


def test_a_target_no_set_reaches_is_told_as_a_failed_backup_but_not_in_check_mode(run_module, tmp_path, fake_pgbackrest):
    backups = tmp_path / "backups"
    backups.mkdir()
    args = dict(site="blog", database="blog", backup_dir=str(backups), target_time="2999-01-01T00:00:00Z",
                scratch_dir=str(tmp_path / "scratch"))
    told = run_module("pitr_backup", **args)["opspack_event"]
    assert told["kind"] == "operation" and told["operation"] == "backup" and told["result"] == "failed", told
    assert told["site"] == "blog" and told["engine"] == "postgresql" and told["step"] == "choose the backup set"
    assert "is in the future" in told["reason"] and told["impact"] == "no backup of blog as of 2999-01-01T00:00:00Z was taken"
    assert "opspack_event" not in run_module("pitr_backup", check_mode=True, **args)
    dry = run_module("pitr_backup", check_mode=True, **dict(args, target_time="2026-11-21T10:00:00Z"))
    assert not dry.get("failed") and "opspack_event" not in dry, dry


def test_a_scratch_dir_refused_is_a_failed_backup_step(run_module, tmp_path, fake_pgbackrest):
    backups = tmp_path / "backups"
    backups.mkdir()
    (tmp_path / "precious").mkdir()
    told = run_module("pitr_backup", site="blog", database="blog", backup_dir=str(backups),
                      target_time="2026-11-21T10:00:00Z", scratch_dir=str(tmp_path / "precious"))["opspack_event"]
    assert told["result"] == "failed" and told["step"] == "take the postgresql backup", told
    assert "is not an opspack scratch cluster" in told["reason"] and "backup_id" not in told
