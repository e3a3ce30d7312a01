# Copyright: opspack developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The host-side program behind the backup timer: the backup modules, run without Ansible.

opspack.platform.backup_schedule installs it as one self-contained zip application
(`/usr/local/lib/opspack/opspack-backup.pyz`: this file, the backup modules and the module
utilities they import, Ansible's included), with a list of jobs in `/etc/opspack/backup/jobs.json`.
The timer's service runs `python3 opspack-backup.pyz run`; for each job it starts
`python3 opspack-backup.pyz job` as the job's user and hands it the module's arguments on
standard input, exactly as Ansible would (so a scheduled backup is the same code, the same
manifest, the same retention as `ansible-playbook opspack.platform.backup`).

A job that fails leaves `<marker dir>/backup-<job>` (first line the UTC time, second the
reason); the next success removes it. Health checks read the markers. Every job runs even when
another fails, and the run exits 1 when any failed, so systemd marks the service failed.

Secrets never enter the jobs file: a job names credentials (systemd LoadCredential= files,
readable by root only), which are read here and passed on standard input.
"""

from __future__ import annotations

import datetime
import json
import os
import pwd
import signal
import subprocess  # nosec B404: runs our own modules, argument lists only
import sys

# Modules a job may run. A new engine's backup module is added here (and to the zip, see
# plugins/action/backup_schedule.py): it must take the backup_retention options and end in
# exit_json/fail_json like the others (see docs/backups.md, "Adding an engine").
MODULES = ("pg_backup", "files_backup", "redis_backup")
JOBS_FORMAT = 1
DEFAULT_JOBS_PATH = "/etc/opspack/backup/jobs.json"
# A job that has not finished after this many seconds is stopped and counts as failed.
DEFAULT_JOB_TIMEOUT = 6 * 3600


class JobsError(Exception):
    """The jobs file cannot be used."""


def load_jobs(path: str) -> dict:
    """The jobs file, checked: every job has a name, a known module, a user and arguments."""
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except (OSError, ValueError) as exc:
        raise JobsError(f"cannot read the jobs file {path}: {exc}") from exc
    if not isinstance(data, dict) or data.get("format") != JOBS_FORMAT or not isinstance(data.get("jobs"), list):
        raise JobsError(f"{path} is not an opspack jobs file (format {JOBS_FORMAT})")
    for job in data["jobs"]:
        validate_job(job)
    names = [job["name"] for job in data["jobs"]]
    if len(set(names)) != len(names):
        raise JobsError(f"{path} names a job twice")
    return data


def validate_job(job) -> None:
    """Refuse a job this program cannot run (also used by backup_schedule before installing)."""
    if not isinstance(job, dict):
        raise JobsError("a job must be a mapping")
    name = job.get("name")
    if not isinstance(name, str) or not name or "/" in name or name.startswith("."):
        raise JobsError(f"job name {name!r} is not a plain file name")
    if job.get("module") not in MODULES:
        raise JobsError(f"job {name}: module {job.get('module')!r} is not one of {', '.join(MODULES)}")
    if not isinstance(job.get("args"), dict) or not job["args"].get("backup_dir") or not job["args"].get("site"):
        raise JobsError(f"job {name}: args must give at least site and backup_dir")
    if not isinstance(job.get("user", "root"), str):
        raise JobsError(f"job {name}: user must be a user name")
    for option, credential in (job.get("credentials") or {}).items():
        if not isinstance(option, str) or not isinstance(credential, str) or "/" in credential:
            raise JobsError(f"job {name}: credentials map module options to credential names")


def marker_name(job_name: str) -> str:
    """backup-<job>: the pgbackrest role's markers (pgbackrest-<kind>) share the directory."""
    return "backup-" + job_name


def marker_path(marker_dir: str, job_name: str) -> str:
    return os.path.join(marker_dir, marker_name(job_name))


def job_arguments(job: dict, credentials_dir: str | None) -> dict:
    """The module's arguments at run time: the release the site serves now, the credentials."""
    args = dict(job["args"])
    link = job.get("release_link")
    if link and os.path.islink(link):
        args["release"] = os.path.basename(os.readlink(link).rstrip("/"))
    for option, credential in (job.get("credentials") or {}).items():
        if not credentials_dir:
            raise JobsError(f"credential {credential} is not available (run through the systemd unit)")
        try:
            with open(os.path.join(credentials_dir, credential), encoding="utf-8") as handle:
                args[option] = handle.read().rstrip("\n")
        except OSError as exc:
            raise JobsError(f"credential {credential} cannot be read: {exc.strerror}") from exc
    return args


def run_job(job: dict, args: dict, check_mode: bool, timeout: int) -> dict:
    """Run one module as the job's user; its JSON result (failed with a message when it broke)."""
    user = pwd.getpwnam(job.get("user", "root"))
    payload = dict(args, _ansible_check_mode=check_mode, _ansible_no_log=False,
                   _ansible_remote_tmp="/var/tmp", _ansible_keep_remote_files=False)
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": user.pw_dir, "LANG": "C.UTF-8",
           "USER": user.pw_name, "LOGNAME": user.pw_name}
    switch = {} if os.geteuid() == user.pw_uid else {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}
    # A session of its own: on a timeout the whole job (pg_dump included) is stopped, not just the module.
    process = subprocess.Popen(  # nosec B603: our own program, an argument list
        [sys.executable, os.path.abspath(sys.argv[0]), "job", job["module"]], stdin=subprocess.PIPE,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd="/", start_new_session=True, **switch)
    try:
        stdout, stderr = process.communicate(json.dumps({"ANSIBLE_MODULE_ARGS": payload}).encode(), timeout=timeout)
    except subprocess.TimeoutExpired:
        stop(process)
        return {"failed": True, "msg": f"did not finish within {timeout} s and was stopped"}
    try:
        result = json.loads(stdout.decode("utf-8", "replace"))
    except ValueError:
        # The traceback goes to the journal only; the marker (world-readable) gets no module output.
        sys.stderr.write(stderr.decode("utf-8", "replace"))
        return {"failed": True, "msg": f"the module crashed (exit status {process.returncode}); see journalctl -u opspack-backup"}
    if process.returncode != 0:
        result["failed"] = True
    return result


def stop(process: subprocess.Popen, grace: int = 30) -> None:
    """SIGTERM the job's session (the module removes its partial file), then SIGKILL what is left."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.communicate(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def summary(job: dict, result: dict) -> str:
    """One journal line per job: never the arguments, only what the module reported."""
    if result.get("failed"):
        return f"{job['name']}: FAILED: {result.get('msg', 'failed')}"
    size = result.get("size_bytes")
    taken = f"took {result.get('backup_id')} ({size} bytes, sha256 {result.get('sha256')})" if result.get("changed") else (
        f"would take {result.get('backup_id')}")
    deleted = result.get("deleted") or []
    return f"{job['name']}: {taken}; kept {len(result.get('kept') or [])}, retention deleted {len(deleted)}" + (
        f" ({', '.join(deleted)})" if deleted else "")


def record_outcome(marker_dir: str, job_name: str, result: dict, now: datetime.datetime) -> None:
    """Leave (or replace) the failure marker of a failed job; remove it after a success."""
    path = marker_path(marker_dir, job_name)
    if not result.get("failed"):
        if os.path.exists(path):
            os.unlink(path)
        return
    os.makedirs(marker_dir, mode=0o755, exist_ok=True)
    reason = " ".join(str(result.get("msg", "failed")).split())
    temporary = path + ".tmp"
    with open(temporary, "w", encoding="utf-8") as handle:
        handle.write(now.strftime("%Y-%m-%dT%H:%M:%SZ") + "\n" + reason + "\n")
    os.chmod(temporary, 0o644)
    os.replace(temporary, path)


def say(out, line: str) -> None:
    """One line to the journal (the service's standard output), at once."""
    out.write(line + "\n")
    out.flush()


def run(jobs_path: str, check_mode: bool, only: list[str], out=None) -> int:
    """Run every job (or the named ones); 0 when all succeeded, 1 when any failed, 2 on bad input."""
    out = out or sys.stdout
    try:
        data = load_jobs(jobs_path)
    except JobsError as exc:
        say(out, f"opspack-backup: {exc}")
        return 2
    jobs = [job for job in data["jobs"] if not only or job["name"] in only]
    unknown = sorted(set(only) - {job["name"] for job in data["jobs"]})
    if unknown:
        say(out, f"opspack-backup: no job named {', '.join(unknown)} in {jobs_path}")
        return 2
    marker_dir = data.get("failure_marker_dir", "/var/lib/opspack/backup-failed")
    timeout = int(data.get("job_timeout", DEFAULT_JOB_TIMEOUT))
    failed = 0
    for job in jobs:
        requires = job.get("requires_dir")
        if requires and not os.path.isdir(requires):
            # A site directory that does not exist yet (no deploy so far) has nothing to back up.
            say(out, f"{job['name']}: skipped: {requires} does not exist")
            continue
        try:
            result = run_job(job, job_arguments(job, os.environ.get("CREDENTIALS_DIRECTORY")), check_mode, timeout)
        except (JobsError, KeyError, OSError) as exc:
            result = {"failed": True, "msg": str(exc)}
        say(out, summary(job, result))
        failed += bool(result.get("failed"))
        if not check_mode:
            record_outcome(marker_dir, job["name"], result, datetime.datetime.now(datetime.timezone.utc))
    return 1 if failed else 0


def _unwind(_signum, _frame) -> None:
    raise SystemExit(143)


def run_module(name: str) -> None:
    """Inside the job's process: run one backup module on the arguments given on stdin."""
    if name not in MODULES:
        raise SystemExit(f"opspack-backup: unknown module {name}")
    # pylint: disable-next=import-outside-toplevel
    from ansible.module_utils import basic
    # Stopped on a timeout: unwind, so the backup flow removes its partial file.
    signal.signal(signal.SIGTERM, _unwind)
    basic._ANSIBLE_ARGS = sys.stdin.buffer.read()  # pylint: disable=protected-access
    basic._ANSIBLE_PROFILE = "legacy"  # pylint: disable=protected-access
    module = __import__(f"ansible_collections.opspack.platform.plugins.modules.{name}", fromlist=["main"])
    module.main()


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["job"] and len(argv) == 2:
        run_module(argv[1])
        return
    if argv[:1] != ["run"]:
        raise SystemExit("usage: opspack-backup.pyz run [--check] [--jobs FILE] [JOB ...]")
    rest = argv[1:]
    check_mode = "--check" in rest
    rest = [item for item in rest if item != "--check"]
    jobs_path = DEFAULT_JOBS_PATH
    if "--jobs" in rest:
        index = rest.index("--jobs")
        if index + 1 >= len(rest):
            raise SystemExit("opspack-backup: --jobs needs a file")
        jobs_path = rest[index + 1]
        del rest[index:index + 2]
    raise SystemExit(run(jobs_path, check_mode, rest))
