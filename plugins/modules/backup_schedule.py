#!/usr/bin/python
# Copyright: opspack developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Install the host-side scheduled backups: the program, its jobs, its credentials and its timer."""

from __future__ import annotations

DOCUMENTATION = r"""
module: backup_schedule
short_description: Schedule opspack's backups on the host itself (a systemd timer)
version_added: 0.1.0
author: opspack developers (@opspack)
description:
  - Installs what a host needs to take its own backups on a systemd timer, without the control
    node. The program C(opspack-backup.pyz) is the backup modules themselves
    (M(opspack.platform.pg_backup), M(opspack.platform.files_backup),
    M(opspack.platform.redis_backup)) with the module utilities they import, built on the
    control node by this module's action plugin as one zip application. So a scheduled backup
    writes the same manifest and applies the same retention as the backup playbook.
  - The jobs (one per backup, each naming the module, the user it runs as and its arguments) are written to
    O(jobs_path) as JSON. Secrets never go there, a job names them in C(credentials)
    (module option to credential name) and the service reads them with systemd's
    C(LoadCredential=) from O(credentials_dir) (root only).
  - A job that fails leaves C(<failure_marker_dir>/backup-<job>) (first line the UTC time of the
    failure, second line the reason), and the next success removes it, for health checks. Every
    job runs even when another fails; the service then ends failed. The marker of a job that is
    no longer scheduled (a site removed) is removed here, so a health check never reports a
    backup that nobody takes any more; other markers in that directory (pgBackRest's) are left.
  - Each job's backup directory is created, owned by the job's user, mode C(0700).
  - Files are replaced atomically and only when their content or mode differs, so a second run
    reports no change. The caller reloads systemd when RV(units_changed) and enables the timer.
options:
  jobs:
    description:
      - The backups to take, in order. Each is a dict with C(name) (a plain file name, used in
        the failure marker), C(module) (one of V(pg_backup), V(files_backup), V(redis_backup)),
        C(args) (the module's options; C(site) and C(backup_dir) at least), and optionally
        C(user) (default V(root)), C(credentials) (module option to credential name),
        C(release_link) (a site's C(current) link; the release it points to at backup time goes
        into the manifest) and C(requires_dir) (the job is skipped while this directory does
        not exist).
    type: list
    elements: dict
    required: true
  credentials:
    description: Credential name to secret, written to O(credentials_dir) (mode C(0600), never shown in a diff).
    type: dict
    default: {}
  on_calendar:
    description: When the timer fires (systemd C(OnCalendar=) syntax).
    type: str
    default: "*-*-* 03:00:00"
  randomized_delay:
    description: Seconds the timer may wait at random after O(on_calendar), so a fleet does not start at once.
    type: int
    default: 1800
  unit_name:
    description: Name of the service and timer units (without suffix).
    type: str
    default: opspack-backup
  program_path:
    description: Where the program goes.
    type: path
    default: /usr/local/lib/opspack/opspack-backup.pyz
  jobs_path:
    description: Where the jobs go.
    type: path
    default: /etc/opspack/backup/jobs.json
  credentials_dir:
    description: Where the credentials go.
    type: path
    default: /etc/opspack/backup/credentials
  units_dir:
    description: Where the service and timer units go.
    type: path
    default: /etc/systemd/system
  failure_marker_dir:
    description: Where a failed job leaves its marker (the pgbackrest role's markers live here too).
    type: path
    default: /var/lib/opspack/backup-failed
  job_timeout:
    description: Seconds after which a job that has not finished is stopped and counts as failed.
    type: int
    default: 21600
  program_sha256:
    description: The sha256 of the program the action plugin built (set by the action plugin).
    type: str
    required: true
  program_src:
    description: The program on the host, transferred by the action plugin when the installed one differs.
    type: path
notes:
  - Check mode reports which files would change (with C(--diff), the jobs and units before and
    after; credentials are only named) and changes nothing.
  - Run the jobs at any time with C(systemctl start opspack-backup.service); see what they would
    take and delete with C(python3 /usr/local/lib/opspack/opspack-backup.pyz run --check).
seealso:
  - module: opspack.platform.pg_backup
  - module: opspack.platform.files_backup
  - module: opspack.platform.redis_backup
"""

EXAMPLES = r"""
- name: Back up the blog's database every night on the host
  opspack.platform.backup_schedule:
    on_calendar: "*-*-* 03:00:00"
    jobs:
      - name: blog-postgresql
        module: pg_backup
        user: postgres
        release_link: /srv/blog/current
        args:
          site: blog
          database: blog
          backup_dir: /var/backups/opspack/blog/postgresql
          critical_tables: [posts]
      - name: redis
        module: redis_backup
        credentials: {login_password: redis-password}
        args: {site: redis, backup_dir: /var/backups/opspack/redis, login_user: opsadmin}
    credentials:
      redis-password: "{{ vault_redis_opsadmin_password }}"
  register: schedule
"""

RETURN = r"""
changed_files:
  description: The files this run wrote or would write (credentials by name only).
  returned: always
  type: list
  elements: str
units_changed:
  description: Whether the service or timer unit changed (reload systemd then).
  returned: always
  type: bool
program_needed:
  description: Whether the installed program differs from O(program_sha256) and O(program_src) was not given.
  returned: always
  type: bool
service:
  description: The service unit's name.
  returned: always
  type: str
  sample: opspack-backup.service
timer:
  description: The timer unit's name.
  returned: always
  type: str
  sample: opspack-backup.timer
"""

import json
import os
import pwd

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.opspack.platform.plugins.module_utils.common import sha256_file, write_bytes_atomic
from ansible_collections.opspack.platform.plugins.module_utils.scheduled_backup import JOBS_FORMAT, JobsError, marker_name, validate_job


def argument_spec() -> dict:
    return {
        "jobs": {"type": "list", "elements": "dict", "required": True},
        "credentials": {"type": "dict", "default": {}, "no_log": True},
        "on_calendar": {"type": "str", "default": "*-*-* 03:00:00"},
        "randomized_delay": {"type": "int", "default": 1800},
        "unit_name": {"type": "str", "default": "opspack-backup"},
        "program_path": {"type": "path", "default": "/usr/local/lib/opspack/opspack-backup.pyz"},
        "jobs_path": {"type": "path", "default": "/etc/opspack/backup/jobs.json"},
        "credentials_dir": {"type": "path", "default": "/etc/opspack/backup/credentials"},
        "units_dir": {"type": "path", "default": "/etc/systemd/system"},
        "failure_marker_dir": {"type": "path", "default": "/var/lib/opspack/backup-failed"},
        "job_timeout": {"type": "int", "default": 21600},
        "program_sha256": {"type": "str", "required": True},
        "program_src": {"type": "path"},
    }


def jobs_document(params: dict) -> bytes:
    data = {"format": JOBS_FORMAT, "failure_marker_dir": params["failure_marker_dir"],
            "job_timeout": params["job_timeout"], "jobs": params["jobs"]}
    return (json.dumps(data, indent=2, sort_keys=True) + "\n").encode()


HOMES = ("/home", "/root", "/run/user")


def writes_under_homes(params: dict) -> bool:
    """Whether a job's backups or the failure markers live under a home directory, which the unit
    otherwise keeps read-only."""
    paths = [job["args"]["backup_dir"] for job in params["jobs"]] + [params["failure_marker_dir"]]
    return any(path == home or path.startswith(home + "/") for path in paths for home in HOMES)


def service_unit(params: dict) -> bytes:
    names = sorted({credential for job in params["jobs"] for credential in (job.get("credentials") or {}).values()})
    lines = [
        "# Managed by opspack.platform.backup_schedule: changes here are overwritten.",
        "[Unit]",
        "Description=opspack scheduled backups (databases, site files, Redis)",
        "After=postgresql.service redis-server.service",
        "",
        "[Service]",
        "Type=oneshot",
        f"ExecStart=/usr/bin/python3 {params['program_path']} run --jobs {params['jobs_path']}",
    ]
    lines += [f"LoadCredential={name}:{os.path.join(params['credentials_dir'], name)}" for name in names]
    lines += [
        # Backups yield to the site: they may take longer, the site must not slow down.
        "Nice=10",
        "IOSchedulingClass=best-effort",
        "IOSchedulingPriority=7",
        "PrivateTmp=true",
        f"TimeoutStartSec={params['job_timeout'] * max(len(params['jobs']), 1) + 300}",
        # It reads the databases (pg_dump as postgres, through runuser), the sites' files and Redis,
        # and writes backups under /var: /usr, /boot and /etc stay read-only, homes readable only,
        # and root keeps only what runuser and reading or writing others' files need.
        "ProtectSystem=full",
        f"ProtectHome={'no' if writes_under_homes(params) else 'read-only'}",
        "PrivateDevices=true",
        "NoNewPrivileges=true",
        "ProtectKernelTunables=true",
        "ProtectKernelModules=true",
        "ProtectKernelLogs=true",
        "ProtectControlGroups=true",
        "ProtectClock=true",
        "ProtectHostname=true",
        "RestrictNamespaces=true",
        "RestrictRealtime=true",
        "RestrictSUIDSGID=true",
        "LockPersonality=true",
        "SystemCallArchitectures=native",
        "SystemCallFilter=@system-service",
        "SystemCallErrorNumber=EPERM",
        "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK",
        # CAP_KILL: a job past its timeout runs as another user (pg_dump as postgres) and is stopped.
        "CapabilityBoundingSet=CAP_SETUID CAP_SETGID CAP_DAC_OVERRIDE CAP_DAC_READ_SEARCH CAP_CHOWN CAP_FOWNER"
        " CAP_KILL CAP_AUDIT_WRITE CAP_SYS_RESOURCE",
        "",
    ]
    return "\n".join(lines).encode()


def timer_unit(params: dict) -> bytes:
    return "\n".join([
        "# Managed by opspack.platform.backup_schedule: changes here are overwritten.",
        "[Unit]",
        "Description=opspack scheduled backups",
        "",
        "[Timer]",
        f"OnCalendar={params['on_calendar']}",
        f"RandomizedDelaySec={params['randomized_delay']}",
        # A host that was off at the scheduled time backs up when it comes back.
        "Persistent=true",
        "",
        "[Install]",
        "WantedBy=timers.target",
        "",
    ]).encode()


def read_bytes(path: str) -> bytes | None:
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except FileNotFoundError:
        return None


def differs(path: str, content: bytes, mode: int) -> bool:
    if read_bytes(path) != content:
        return True
    return (os.stat(path).st_mode & 0o7777) != mode


class Installer:
    """Writes files that differ (or says it would), collecting names and a diff."""

    def __init__(self, module: AnsibleModule):
        self.module = module
        self.changed_files: list[str] = []
        self.diff = {"before": "", "after": ""}

    def directory(self, path: str, mode: int, owner: str = "root") -> None:
        try:
            entry = pwd.getpwnam(owner)
        except KeyError:
            # Only in check mode (install() refuses an unknown user otherwise): it would be created.
            self.changed_files.append(path + "/")
            return
        if os.path.isdir(path):
            status = os.stat(path)
            if (status.st_mode & 0o7777) == mode and status.st_uid == entry.pw_uid:
                return
        elif os.path.lexists(path):
            raise JobsError(f"{path} exists and is not a directory")
        self.changed_files.append(path + "/")
        if not self.module.check_mode:
            os.makedirs(path, mode=mode, exist_ok=True)
            os.chmod(path, mode)
            os.chown(path, entry.pw_uid, entry.pw_gid)

    def file(self, path: str, content: bytes, mode: int, secret: bool = False) -> bool:
        if not differs(path, content, mode):
            return False
        self.changed_files.append(path)
        if not secret:
            before = read_bytes(path)
            self.diff["before"] += f"--- {path}\n" + (before or b"").decode("utf-8", "replace")
            self.diff["after"] += f"--- {path}\n" + content.decode("utf-8", "replace")
        if not self.module.check_mode:
            write_bytes_atomic(path, content, mode=mode)
        return True

    def remove(self, path: str) -> None:
        self.changed_files.append(path)
        if not self.module.check_mode:
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass  # gone already (a job's success removed its marker meanwhile)


def install(module: AnsibleModule) -> dict:
    params = module.params
    for job in params["jobs"]:
        validate_job(job)
        try:
            pwd.getpwnam(job.get("user", "root"))
        except KeyError as exc:
            # In --check on a fresh host the user (postgres) comes with a package this run would install.
            if not module.check_mode:
                raise JobsError(f"job {job['name']}: user {job.get('user', 'root')} does not exist") from exc
            module.warn(f"job {job['name']}: user {job.get('user', 'root')} does not exist yet")
    names = [job["name"] for job in params["jobs"]]
    if len(set(names)) != len(names):
        raise JobsError("two jobs have the same name")
    wanted = {credential for job in params["jobs"] for credential in (job.get("credentials") or {}).values()}
    missing = sorted(wanted - set(params["credentials"]))
    if missing:
        raise JobsError(f"credentials {', '.join(missing)} are named by a job but not given")

    installer = Installer(module)
    for path in (os.path.dirname(params["program_path"]), os.path.dirname(params["jobs_path"])):
        installer.directory(path, 0o755)
    installer.directory(params["credentials_dir"], 0o700)
    for job in params["jobs"]:
        installer.directory(os.path.dirname(job["args"]["backup_dir"]), 0o755)
        installer.directory(job["args"]["backup_dir"], 0o700, job.get("user", "root"))

    program_needed = not os.path.isfile(params["program_path"]) or sha256_file(params["program_path"]) != params["program_sha256"]
    if program_needed and params["program_src"]:
        if sha256_file(params["program_src"]) != params["program_sha256"]:
            raise JobsError("the transferred program's sha256 differs from the one built; run again")
        installer.changed_files.append(params["program_path"])
        if not module.check_mode:
            write_bytes_atomic(params["program_path"], read_bytes(params["program_src"]), mode=0o644)
        program_needed = False

    installer.file(params["jobs_path"], jobs_document(params), 0o644)
    for name in sorted(wanted):
        installer.file(os.path.join(params["credentials_dir"], name), str(params["credentials"][name]).encode(), 0o600, secret=True)
    if os.path.isdir(params["credentials_dir"]):
        for name in sorted(set(os.listdir(params["credentials_dir"])) - wanted):
            installer.remove(os.path.join(params["credentials_dir"], name))
    # Markers of jobs no longer scheduled would report a failure nobody can fix by a backup.
    if os.path.isdir(params["failure_marker_dir"]):
        current = {marker_name(name) for name in names}
        for name in sorted(os.listdir(params["failure_marker_dir"])):
            path = os.path.join(params["failure_marker_dir"], name)
            # A running job writes its marker as <marker>.tmp and renames it: that one is not ours.
            if (name.startswith(marker_name("")) and not name.endswith(".tmp") and name not in current
                    and os.path.isfile(path) and not os.path.islink(path)):
                installer.remove(path)
    units_changed = installer.file(os.path.join(params["units_dir"], params["unit_name"] + ".service"), service_unit(params), 0o644)
    units_changed = installer.file(os.path.join(params["units_dir"], params["unit_name"] + ".timer"), timer_unit(params), 0o644) or units_changed

    result = {"changed": bool(installer.changed_files) or (program_needed and module.check_mode),
              "changed_files": installer.changed_files, "units_changed": units_changed,
              "program_needed": program_needed,
              "service": params["unit_name"] + ".service", "timer": params["unit_name"] + ".timer"}
    if module._diff and installer.diff["after"]:  # pylint: disable=protected-access
        result["diff"] = installer.diff
    return result


def main() -> None:
    module = AnsibleModule(argument_spec=argument_spec(), supports_check_mode=True)
    try:
        result = install(module)
    except (JobsError, OSError) as exc:
        module.fail_json(msg=f"backup schedule not installed: {exc}")
    module.exit_json(**result)


if __name__ == "__main__":
    main()
