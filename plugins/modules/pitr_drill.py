#!/usr/bin/python
# Copyright: opspack developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Restore the cluster to a point in time into a scratch cluster with pgBackRest, and prove where it stopped."""

from __future__ import annotations

DOCUMENTATION = r"""
module: pitr_drill
short_description: Point-in-time recovery drill with pgBackRest in a scratch cluster
version_added: 0.1.0
author: opspack developers (@opspack)
description:
  - Restores the stanza to O(target_time) into a scratch data directory with
    C(pgbackrest restore --type=time), starts a scratch PostgreSQL on a Unix socket only (no TCP,
    WAL archiving off), waits until recovery has stopped and the cluster is promoted, runs
    O(query) in O(database), then stops the scratch cluster and removes its directory, also
    when the drill fails. The production cluster is never touched.
  - Guards the known PITR trap. The backup set is chosen explicitly as the newest one that
    ended at or before the target (a later one cannot stop at the target and would silently
    recover past it), and the PostgreSQL log must show that recovery stopped before the first
    commit after the target. A target before every backup, WAL that does not reach the target,
    or a log without that proof fails the drill with the reason.
  - Before restoring, C(pgbackrest check) archives the current WAL segment, so recent
    commits are in the repository.
options:
  target_time:
    description: The point in time to recover to, in UTC, as C(2026-11-23T17:10:03Z) (fractions of a second allowed).
    type: str
    required: true
  stanza:
    description: pgBackRest stanza.
    type: str
    default: main
  database:
    description: Database to run O(query) in.
    type: str
    default: postgres
  query:
    description: SQL to run on the recovered cluster; its rows are returned as RV(answer).
    type: str
  scratch_dir:
    description:
      - Directory of the scratch cluster (its data directory is C(data/) inside). It must not
        exist, or be a leftover of an earlier drill (it holds the marker file
        C(.opspack-pitr-drill)), which is stopped and removed.
    type: path
    default: /var/lib/postgresql/opspack-pitr-drill
  scratch_port:
    description: Port number of the scratch cluster's socket (it listens on no TCP address).
    type: int
    default: 5499
  pg_bin_dir:
    description: Directory of the PostgreSQL server programs of the cluster's version.
    type: path
    default: /usr/lib/postgresql/15/bin
  timeout:
    description: Seconds to wait for recovery to finish.
    type: int
    default: 600
attributes:
  check_mode:
    description: Can run in check_mode and return changed status prediction without modifying the target.
    support: partial
    details: Chooses the backup set for the target and reports it; restores nothing.
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in check_mode), when in diff mode.
    support: none
notes:
  - Run it as the C(postgres) user on the database host, after the C(opspack.platform.pgbackrest) role.
seealso:
  - module: opspack.platform.restore_drill
"""

EXAMPLES = r"""
- name: Prove the blog can be recovered to just before yesterday's bad migration
  opspack.platform.pitr_drill:
    target_time: "2026-11-22T14:59:00Z"
    database: blog
    query: SELECT max(id) FROM posts
  become: true
  become_user: postgres
  register: pitr
"""

RETURN = r"""
passed:
  description: Whether recovery stopped at the target and the query answered.
  returned: always
  type: bool
reason:
  description: Why the drill failed, or C(recovery stopped at the target).
  returned: always
  type: str
backup_set:
  description: Label of the pgBackRest backup set restored.
  returned: when a set was chosen
  type: str
  sample: 20261123-170102F
backup_set_stopped_at:
  description: When the chosen backup set ended (UTC).
  returned: when a set was chosen
  type: str
target_time:
  description: The target, normalised to UTC.
  returned: always
  type: str
recovery_stopped_before:
  description: Time of the first commit after the target, where recovery stopped (from the log).
  returned: when recovery stopped
  type: str
answer:
  description: Rows returned by O(query), as lists of strings.
  returned: when O(query) is given and the drill got that far
  type: list
  elements: list
started_at:
  description: Start of the drill (UTC).
  returned: when the target time is valid
  type: str
rto_seconds:
  description: Seconds from the start of the drill to the recovered, queried cluster.
  returned: always
  type: float
"""

import datetime
import os
import shutil
import time

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.opspack.platform.plugins.module_utils import backup
from ansible_collections.opspack.platform.plugins.module_utils import pgbackrest
from ansible_collections.opspack.platform.plugins.module_utils import postgresql_backup as engine

MARKER = ".opspack-pitr-drill"


def parse_target(text: str) -> datetime.datetime:
    try:
        moment = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise backup.BackupError(f"target_time {text!r} is not a time such as 2026-11-23T17:10:03Z") from exc
    if moment.tzinfo is None:
        raise backup.BackupError(f"target_time {text!r} has no time zone: give it in UTC with a Z")
    return moment.astimezone(datetime.timezone.utc)


def scratch_config(directory: str, port: int) -> str:
    return "\n".join([
        "# Scratch cluster of an opspack PITR drill: socket only, no archiving, small.",
        f"port = {port}",
        "listen_addresses = ''",
        f"unix_socket_directories = '{directory}'",
        f"hba_file = '{directory}/pg_hba.conf'",
        f"ident_file = '{directory}/pg_ident.conf'",
        "archive_mode = off",
        # No connections during recovery: no need to match the primary's max_connections, and
        # pg_ctl -w returns only once recovery has stopped and the cluster is promoted.
        "hot_standby = off",
        "max_connections = 20",
        "shared_buffers = '128MB'",
        "log_destination = 'stderr'",
        "logging_collector = off",
        "",
    ])


class ScratchCluster:
    def __init__(self, module: AnsibleModule):
        self.module = module
        self.params = module.params
        self.root = module.params["scratch_dir"]
        # The marker and log sit beside the data directory: pgBackRest restores into an empty one.
        self.directory = os.path.join(self.root, "data")
        self.log = os.path.join(self.root, "postgresql.log")
        self.pg_ctl = os.path.join(module.params["pg_bin_dir"], "pg_ctl")

    def clear(self) -> None:
        """Remove a leftover of an earlier drill; refuse anything else at that path."""
        if not os.path.exists(self.root):
            return
        if not os.path.exists(os.path.join(self.root, MARKER)):
            raise backup.BackupError(f"scratch_dir {self.root} exists and is not an opspack drill's: refusing to touch it")
        self.remove()

    def create(self) -> None:
        os.makedirs(self.directory, mode=0o700)
        os.chmod(self.root, 0o700)
        with open(os.path.join(self.root, MARKER), "w", encoding="utf-8") as marker:
            marker.write("scratch cluster of an opspack PITR drill; safe to delete\n")

    def configure(self) -> None:
        files = {"postgresql.conf": scratch_config(self.directory, self.params["scratch_port"]), "pg_hba.conf": "local all all peer\n", "pg_ident.conf": ""}
        for name, content in files.items():
            with open(os.path.join(self.directory, name), "w", encoding="utf-8") as out:
                out.write(content)

    def start(self) -> None:
        rc, _out, err = self.module.run_command(
            [self.pg_ctl, "-D", self.directory, "-l", self.log, "-w", "-t", str(self.params["timeout"]), "start"])
        if rc != 0:
            raise backup.BackupError(f"the scratch cluster did not start: {self.log_tail() or err.strip()}")

    def wait_promoted(self, deadline: float) -> None:
        while True:
            try:
                conn = engine.connect({"login_unix_socket": self.directory, "login_port": self.params["scratch_port"]},
                                      "postgres", autocommit=True)
                try:
                    cursor = conn.cursor()
                    cursor.execute("SELECT pg_is_in_recovery()")
                    if not cursor.fetchone()[0]:
                        return
                finally:
                    conn.close()
            except (backup.BackupError, *engine.DATABASE_ERRORS):
                if self.stopped():
                    raise backup.BackupError(f"the scratch cluster stopped during recovery: {self.log_tail()}") from None
            if time.monotonic() > deadline:
                raise backup.BackupError(f"recovery did not finish within {self.params['timeout']} s")
            time.sleep(0.5)

    def stopped(self) -> bool:
        rc, _out, _err = self.module.run_command([self.pg_ctl, "-D", self.directory, "status"])
        return rc != 0

    def stop(self) -> None:
        """Stop the scratch server; a server that will not stop keeps its directory and fails the drill."""
        if not os.path.exists(os.path.join(self.directory, "postmaster.pid")):
            return
        rc, _out, err = self.module.run_command([self.pg_ctl, "-D", self.directory, "-m", "immediate", "-w", "stop"])
        if rc != 0 and not self.stopped():
            raise backup.BackupError(f"the scratch cluster in {self.root} did not stop: {err.strip()}")

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.root)

    def log_text(self) -> str:
        try:
            with open(self.log, encoding="utf-8", errors="replace") as handle:
                return handle.read()
        except OSError:
            return ""

    def log_tail(self) -> str:
        lines = [line for line in self.log_text().splitlines() if "FATAL" in line or "ERROR" in line]
        return " | ".join(lines[-3:])

    def query(self, database: str, sql_text: str) -> list:
        return engine.query_rows({"login_unix_socket": self.directory, "login_port": self.params["scratch_port"]},
                                 database, sql_text)


def pgbackrest_run(module: AnsibleModule, *args: str) -> str:
    rc, out, err = module.run_command(["pgbackrest", f"--stanza={module.params['stanza']}", *args])
    if rc != 0:
        raise backup.BackupError(f"pgbackrest {args[-1]} failed (exit {rc}): {(err or out).strip()[-1500:]}")
    return out


def drill(module: AnsibleModule, result: dict, clock: float) -> None:
    params = module.params
    target = parse_target(params["target_time"])
    result["target_time"] = target.isoformat().replace("+00:00", "Z")
    result["started_at"] = backup.to_iso(backup.utc_now())
    if target > backup.utc_now() + datetime.timedelta(seconds=1):
        raise backup.BackupError(f"target time {result['target_time']} is in the future")
    chosen = pgbackrest.choose_set(pgbackrest.backup_sets(pgbackrest_run(module, "--output=json", "info"),
                                                          params["stanza"]), target)
    result.update(backup_set=chosen["label"], backup_set_stopped_at=backup.to_iso(chosen["stop"]))
    if module.check_mode:
        result.update(passed=True, reason=f"check mode: would restore set {chosen['label']} and recover to the target")
        return
    pgbackrest_run(module, "check")
    cluster = ScratchCluster(module)
    cluster.clear()
    # The scratch cluster lands beside production: refuse one that could fill its disk.
    parent = os.path.dirname(cluster.root.rstrip("/")) or "/"
    free = backup.free_bytes(parent)
    if chosen["size"] and free < 2 * chosen["size"]:
        raise backup.BackupError(f"{parent} has {free // 1048576} MiB free; recovering this cluster there "
                                 f"needs {2 * chosen['size'] // 1048576} MiB")
    cluster.create()
    try:
        pgbackrest_run(module, f"--pg1-path={cluster.directory}", f"--set={chosen['label']}", "--type=time",
                       f"--target={target.strftime('%Y-%m-%d %H:%M:%S.%f')}+00", "--target-action=promote",
                       "--archive-mode=off", "--log-level-console=warn", "restore")
        cluster.configure()
        cluster.start()
        cluster.wait_promoted(clock + params["timeout"])
        stopped = pgbackrest.recovery_stop(cluster.log_text(), target)
        result["recovery_stopped_before"] = stopped.isoformat()
        if params["query"]:
            result["answer"] = cluster.query(params["database"], params["query"])
    finally:
        cluster.remove()
    result.update(passed=True, reason="recovery stopped at the target", rto_seconds=round(time.monotonic() - clock, 3))


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "target_time": {"type": "str", "required": True},
            "stanza": {"type": "str", "default": "main"},
            "database": {"type": "str", "default": "postgres"},
            "query": {"type": "str"},
            "scratch_dir": {"type": "path", "default": "/var/lib/postgresql/opspack-pitr-drill"},
            "scratch_port": {"type": "int", "default": 5499},
            "pg_bin_dir": {"type": "path", "default": "/usr/lib/postgresql/15/bin"},
            "timeout": {"type": "int", "default": 600},
        },
        supports_check_mode=True,
    )
    clock = time.monotonic()
    result = {"changed": False, "passed": False, "reason": "", "target_time": module.params["target_time"], "rto_seconds": 0.0}
    try:
        drill(module, result, clock)
    except (backup.BackupError, OSError, *engine.DATABASE_ERRORS) as exc:
        reason = engine.describe_error(exc)
        result.update(passed=False, reason=reason, rto_seconds=round(time.monotonic() - clock, 3))
        module.fail_json(msg=f"PITR drill failed: {reason}", **result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
