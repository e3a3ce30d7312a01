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
  - The drill recovers the whole cluster, not one site; with O(site), it is recorded for that
    site (its C(opspack_event)).
options:
  site:
    description:
      - The site the drill is recorded for, named in its C(opspack_event) (for example the site
        whose O(database) it queries). Without it the drill returns no C(opspack_event).
    type: str
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
    description:
      - Directory of the PostgreSQL server programs of the cluster's version.
      - By default C(/usr/lib/postgresql/<major>/bin) of the one major installed (refused when there are several).
    type: path
  production_data_dir:
    description:
      - The production cluster's data directory. Its C(pg_tblspc) is read, never written, to refuse
        a recovery that would replay the creation of a tablespace the backup set does not hold
        (PostgreSQL's redo would empty production's tablespace directory). Tablespaces the set
        holds are restored below O(scratch_dir) (C(--tablespace-map-all)).
      - By default C(/var/lib/postgresql/<major>/main) of the one major installed.
    type: path
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
opspack_event:
  description:
    - The drill, for the records (see the records callback). An C(operation) event
      (C(operation=drill), C(engine=pitr)) for O(site) with C(result) C(pass) or C(fail), the
      pgBackRest set recovered from as C(backup_id) and C(backup_ended_at) (RV(backup_set),
      RV(backup_set_stopped_at)), C(rto_s) (RV(rto_seconds)), and for a failed drill its
      C(reason) and the C(step) it stopped at. A PITR drill measures no recovery point (no C(rpo_s)).
  returned: when O(site) is given, not in check mode
  type: dict
  sample: {"kind": "operation", "site": "blog", "operation": "drill", "result": "pass", "engine": "pitr",
           "backup_id": "20261123-170102F", "backup_ended_at": "2026-11-23T17:01:40Z", "rto_s": 48.2}
"""

import time

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.opspack.platform.plugins.module_utils import backup
from ansible_collections.opspack.platform.plugins.module_utils.events import tell_failures
from ansible_collections.opspack.platform.plugins.module_utils import pgbackrest
from ansible_collections.opspack.platform.plugins.module_utils import postgresql_backup as engine


ENGINE = "pitr"


def drill(module: AnsibleModule, result: dict, clock: float, progress: dict) -> None:
    params = module.params
    result["started_at"] = backup.to_iso(backup.utc_now())
    progress["step"] = "choose the backup set"
    target, chosen = pgbackrest.plan(module, result)
    if module.check_mode:
        result.update(passed=True, reason=f"check mode: would restore set {chosen['label']} and recover to the target")
        return
    progress["step"] = "prepare the scratch cluster"
    cluster = pgbackrest.ScratchCluster(module)
    pgbackrest.prepare(module, cluster, chosen)
    try:
        progress["step"] = "recover to the target"
        stopped = pgbackrest.recover(module, cluster, target, chosen, clock)
        result["recovery_stopped_before"] = stopped.isoformat()
        if params["query"]:
            progress["step"] = "run the query"
            result["answer"] = cluster.query(params["database"], params["query"])
    finally:
        # Named only while it runs: a failure before it stays the drill's step.
        step, progress["step"] = progress["step"], "remove the scratch cluster"
        cluster.remove()
        progress["step"] = step
    result.update(passed=True, reason="recovery stopped at the target", rto_seconds=round(time.monotonic() - clock, 3))


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            **pgbackrest.scratch_argument_spec("/var/lib/postgresql/opspack-pitr-drill", 5499),
            "database": {"type": "str", "default": "postgres"},
            "query": {"type": "str"},
            "site": {"type": "str"},
        },
        supports_check_mode=True,
    )
    clock = time.monotonic()
    result = {"changed": False, "passed": False, "reason": "", "target_time": module.params["target_time"], "rto_seconds": 0.0}
    progress = {"step": "choose the backup set"}
    # pgbackrest or pg_ctl that cannot start ends the module in Ansible's own fail_json: told all the same.
    tell_failures(module, lambda msg: told(module, dict(
        result, passed=False, reason=msg, rto_seconds=round(time.monotonic() - clock, 3)), progress["step"]))
    try:
        drill(module, result, clock, progress)
    except (backup.BackupError, OSError, *engine.DATABASE_ERRORS) as exc:
        reason = engine.describe_error(exc)
        result.update(passed=False, reason=reason, rto_seconds=round(time.monotonic() - clock, 3))
        module.fail_json(msg=f"PITR drill failed: {reason}", **with_event(result, told(module, result, progress["step"])))
    module.exit_json(**with_event(result, told(module, result)))


def with_event(result: dict, found: dict | None) -> dict:
    return dict(result, opspack_event=found) if found else result


def told(module: AnsibleModule, result: dict, step: str = "") -> dict | None:
    """The drill's opspack_event when it is recorded for a site (not in check mode)."""
    if not module.params["site"] or module.check_mode:
        return None
    drilled = dict(result, engine=ENGINE, backup_id=result.get("backup_set"),
                   backup_ended_at=result.get("backup_set_stopped_at"))
    return backup.drill_event(module.params["site"], drilled, step=step)


if __name__ == "__main__":
    main()
