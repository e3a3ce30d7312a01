"""Unit tests for opspack.platform.backup_schedule, run as a host runs it, on temporary paths."""

from __future__ import annotations

import hashlib
import json
import stat

import pytest

CANARY = "canary-redis-Cr3d-0a9f"


@pytest.fixture(name="schedule")
def fixture_schedule(run_module, tmp_path):
    program = tmp_path / "src" / "opspack-backup.pyz"
    program.parent.mkdir()
    program.write_bytes(b"PK program")
    digest = hashlib.sha256(program.read_bytes()).hexdigest()

    def run(check_mode=False, **args):
        args.setdefault("jobs", [
            {"name": "blog-files", "module": "files_backup",
             "args": {"site": "blog", "path": str(tmp_path / "uploads"), "backup_dir": str(tmp_path / "b" / "blog" / "files")}},
            {"name": "redis", "module": "redis_backup", "credentials": {"login_password": "redis-password"},
             "args": {"site": "redis", "backup_dir": str(tmp_path / "b" / "redis"), "login_user": "opsadmin"}},
        ])
        args.setdefault("credentials", {"redis-password": CANARY})
        args.setdefault("program_sha256", digest)
        for option, name in (("program_path", "lib/opspack-backup.pyz"), ("jobs_path", "etc/jobs.json"),
                             ("credentials_dir", "etc/credentials"), ("units_dir", "units"),
                             ("failure_marker_dir", "markers")):
            args.setdefault(option, str(tmp_path / name))
        (tmp_path / "units").mkdir(exist_ok=True)
        return run_module("backup_schedule", check_mode=check_mode, **args)
    run.root = tmp_path
    run.program = program
    return run


def test_installs_everything_then_changes_nothing(schedule):
    first = schedule()
    assert first["changed"] and first["units_changed"] and first["program_needed"], first
    root = schedule.root
    jobs = json.loads((root / "etc/jobs.json").read_text())
    assert [job["name"] for job in jobs["jobs"]] == ["blog-files", "redis"] and jobs["format"] == 1
    assert jobs["failure_marker_dir"] == str(root / "markers")
    service = (root / "units/opspack-backup.service").read_text()
    assert f"LoadCredential=redis-password:{root}/etc/credentials/redis-password" in service
    assert f"ExecStart=/usr/bin/python3 {root}/lib/opspack-backup.pyz run --jobs {root}/etc/jobs.json" in service
    assert "OnCalendar=*-*-* 03:00:00" in (root / "units/opspack-backup.timer").read_text()
    secret = root / "etc/credentials/redis-password"
    assert secret.read_text() == CANARY and stat.S_IMODE(secret.stat().st_mode) == 0o600
    assert stat.S_IMODE((root / "etc/credentials").stat().st_mode) == 0o700
    assert stat.S_IMODE((root / "b/redis").stat().st_mode) == 0o700, "backup directories are created private"
    assert CANARY not in json.dumps(first), "the secret is never in the result"

    installed = schedule(program_src=str(schedule.program))
    assert installed["changed"] and not installed["program_needed"]
    assert installed["changed_files"] == [str(root / "lib/opspack-backup.pyz")], installed
    assert (root / "lib/opspack-backup.pyz").read_bytes() == b"PK program"
    again = schedule()
    assert not again["changed"] and not again["units_changed"] and not again["program_needed"], again


def test_check_mode_and_diff_show_the_jobs_not_the_secret(schedule):
    dry = schedule(check_mode=True, _ansible_diff=True)
    assert dry["changed"] and not (schedule.root / "etc").exists() and not any((schedule.root / "units").iterdir())
    assert '"blog-files"' in dry["diff"]["after"] and "OnCalendar" in dry["diff"]["after"]
    assert CANARY not in json.dumps(dry)
    assert str(schedule.root / "etc/credentials/redis-password") in dry["changed_files"], "a credential is named only"


def test_a_changed_secret_or_schedule_is_rewritten_and_a_dropped_credential_removed(schedule):
    schedule()
    assert schedule(credentials={"redis-password": "another"})["changed_files"] == [
        str(schedule.root / "etc/credentials/redis-password")]
    assert schedule(on_calendar="*-*-* 04:00:00", credentials={"redis-password": "another"})["units_changed"]
    only_files = schedule(jobs=[{"name": "blog-files", "module": "files_backup",
                                 "args": {"site": "blog", "path": "/srv/blog/shared/uploads",
                                          "backup_dir": str(schedule.root / "b/blog/files")}}], credentials={})
    assert not (schedule.root / "etc/credentials/redis-password").exists(), only_files
    assert "LoadCredential" not in (schedule.root / "units/opspack-backup.service").read_text()


@pytest.mark.parametrize("jobs, credentials, message", [
    ([{"name": "x", "module": "shell", "args": {"site": "x", "backup_dir": "/tmp/x"}}], {}, "module 'shell' is not one of"),
    ([{"name": "../x", "module": "pg_backup", "args": {"site": "x", "backup_dir": "/tmp/x"}}], {}, "not a plain file name"),
    ([{"name": "x", "module": "pg_backup", "args": {"site": "x"}}], {}, "args must give at least site and backup_dir"),
    ([{"name": "x", "module": "pg_backup", "user": "no-such-user-here", "args": {"site": "x", "backup_dir": "/tmp/x"}}], {},
     "user no-such-user-here does not exist"),
    ([{"name": "r", "module": "redis_backup", "credentials": {"login_password": "redis-password"},
       "args": {"site": "redis", "backup_dir": "/tmp/r"}}], {}, "credentials redis-password are named by a job but not given"),
    ([{"name": "x", "module": "pg_backup", "args": {"site": "x", "backup_dir": "/tmp/x"}}] * 2, {}, "two jobs have the same name"),
])
def test_bad_jobs_are_refused_before_anything_is_written(schedule, jobs, credentials, message):
    failed = schedule(jobs=jobs, credentials=credentials)
    assert failed["failed"] and message in failed["msg"], failed
    assert not (schedule.root / "etc").exists() and not any((schedule.root / "units").iterdir())


def test_check_mode_on_a_fresh_host_reports_a_job_whose_user_does_not_exist_yet(schedule):
    jobs = [{"name": "blog-postgresql", "module": "pg_backup", "user": "no-such-user-yet",
             "args": {"site": "blog", "database": "blog", "backup_dir": str(schedule.root / "b/blog/postgresql")}}]
    dry = schedule(check_mode=True, jobs=jobs, credentials={})
    assert dry["changed"] and not dry.get("failed"), dry
    assert "no-such-user-yet does not exist yet" in json.dumps(dry.get("warnings")), dry
    assert not (schedule.root / "b").exists()
    assert schedule(jobs=jobs, credentials={})["failed"], "outside check mode an unknown user is refused"


def test_a_numeric_secret_is_written_as_text(schedule):
    assert not schedule(credentials={"redis-password": 12345}).get("failed")
    assert (schedule.root / "etc/credentials/redis-password").read_text() == "12345"


def test_the_marker_of_a_job_no_longer_scheduled_goes_and_other_markers_stay(schedule):
    markers = schedule.root / "markers"
    markers.mkdir()
    for name in ("backup-redis", "backup-shop-postgresql", "pgbackrest-full", "backup-redis.tmp"):
        (markers / name).write_text("2026-12-01T03:00:00Z\nfailed\n")
    checked = schedule(check_mode=True)
    assert str(markers / "backup-shop-postgresql") in checked["changed_files"]
    assert (markers / "backup-shop-postgresql").exists(), "check mode removes nothing"
    first = schedule()
    assert str(markers / "backup-shop-postgresql") in first["changed_files"]
    # redis is still scheduled: its marker is the program's to remove, after its next success.
    assert sorted(path.name for path in markers.iterdir()) == ["backup-redis", "backup-redis.tmp", "pgbackrest-full"]
    assert not schedule()["changed"]


@pytest.mark.parametrize("backup_dir, protect_home", [
    ("/var/backups/opspack/blog", "read-only"),
    ("/home/backups/blog", "no"),
    ("/root/backups", "no"),
    ("/homestead/backups", "read-only"),
])
def test_homes_stay_read_only_unless_backups_are_written_there(backup_dir, protect_home):
    from ansible_collections.opspack.platform.plugins.modules import backup_schedule
    params = {"jobs": [{"name": "blog", "module": "files_backup", "args": {"site": "blog", "backup_dir": backup_dir}}],
              "program_path": "/usr/local/lib/opspack/opspack-backup.pyz", "jobs_path": "/etc/opspack/backup/jobs.json",
              "credentials_dir": "/etc/opspack/backup/credentials", "failure_marker_dir": "/var/lib/opspack/backup-failed",
              "job_timeout": 60}
    unit = backup_schedule.service_unit(params).decode()
    assert f"\nProtectHome={protect_home}\n" in unit
    assert "CAP_KILL" in unit and "\nNoNewPrivileges=true\n" in unit
