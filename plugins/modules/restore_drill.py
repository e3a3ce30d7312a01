#!/usr/bin/python
# Copyright: opspack developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Restore a backup into a scratch database and prove the data against its manifest."""

from __future__ import annotations

DOCUMENTATION = r"""
module: restore_drill
short_description: Prove a backup restores, by restoring it and checking the data
version_added: 0.1.0
author: opspack developers (@opspack)
description:
  - Takes the latest (or a chosen) backup from O(backup_dir), verifies its size and sha256
    against its manifest, restores it into a new scratch database, and proves the data. The
    exact row count of every table, the content checksum of every critical table and the
    answer to the site's drill query must equal what the manifest recorded at backup time.
  - Measures the recovery time (RTO, from start to verified) and the recovery point (RPO,
    the backup's age when the drill started).
  - The scratch database (always named C(opspack_drill_<site>_<time>)) is dropped afterwards,
    also when the drill fails; leftovers of a killed drill of the same site are dropped first.
    The drill never writes to any other database, reads the restored copy in read-only
    sessions, and refuses to start when the data directory has less free space than twice the
    database's size at backup time.
  - A failed drill fails the task with the reason and still returns every field below, so a
    playbook can record the failure.
  - In check mode the backup is chosen and its checksum verified; nothing is restored.
extends_documentation_fragment:
  - opspack.platform.postgresql_connection
  - opspack.platform.backup_selection
options:
  jobs:
    description: Parallel jobs for C(pg_restore).
    type: int
    default: 2
  keep_scratch:
    description: Leave the scratch database in place for a person to inspect (never by default).
    type: bool
    default: false
attributes:
  check_mode:
    description: Can run in check_mode and return changed status prediction without modifying the target.
    support: partial
    details: Chooses the backup and verifies its checksum; restores nothing.
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in check_mode), when in diff mode.
    support: none
notes:
  - Run it as the C(postgres) user on the site's database host or on a separate drill host
    that has a copy of the backup directory.
seealso:
  - module: opspack.platform.pg_backup
"""

EXAMPLES = r"""
- name: Drill the newest backup of the blog
  opspack.platform.restore_drill:
    site: blog
    backup_dir: /var/backups/opspack/blog/postgresql
  become: true
  become_user: postgres
  register: blog_drill
  failed_when: false

- name: Drill one particular backup
  opspack.platform.restore_drill:
    site: blog
    backup_dir: /var/backups/opspack/blog/postgresql
    backup_id: blog-postgresql-20261123T040000Z
  become: true
  become_user: postgres
"""

RETURN = r"""
passed:
  description: Whether the backup restored and every check matched.
  returned: always
  type: bool
reason:
  description: Why the drill failed (every difference found), or C(all checks passed).
  returned: always
  type: str
  sample: "table public.posts has 41 rows, the backup had 42"
backup_id:
  description: The backup drilled.
  returned: when a backup was found
  type: str
backup_ended_at:
  description: When the drilled backup was complete (UTC).
  returned: when a backup was found
  type: str
started_at:
  description: Start of the drill (UTC).
  returned: always
  type: str
rto_seconds:
  description: Seconds from the start of the drill to verified data (or to the failure).
  returned: always
  type: float
rpo_seconds:
  description: Age of the backup in seconds when the drill started.
  returned: when a backup was found
  type: int
engine:
  description: Always C(postgresql).
  returned: always
  type: str
checks:
  description: What was compared, as counts (tables, critical tables, query).
  returned: always
  type: dict
scratch_database:
  description: The scratch database used.
  returned: when a restore was attempted
  type: str
scratch_removed:
  description: Whether the scratch database is gone again.
  returned: when a restore was attempted
  type: bool
leftovers_dropped:
  description: Scratch databases of this site that a killed drill had left, dropped before this drill.
  returned: when a restore was attempted
  type: list
  elements: str
opspack_event:
  description: The drill for the records (C(operation=drill), C(result) pass or fail; see the records callback).
  returned: when not in check mode
  type: dict
  sample: {"kind": "operation", "site": "blog", "operation": "drill", "result": "fail", "engine": "postgresql",
           "backup_id": "blog-postgresql-20261123T040000Z", "backup_ended_at": "2026-11-23T04:00:41Z",
           "rto_s": 12.4, "rpo_s": 30559, "step": "restore and prove the backup",
           "reason": "the restored data differs from the backup: table public.posts has 41 rows, the backup had 42"}
"""

import time

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.opspack.platform.plugins.module_utils import backup
from ansible_collections.opspack.platform.plugins.module_utils.events import tell_failures
from ansible_collections.opspack.platform.plugins.module_utils import postgresql_backup as engine


def drill(module: AnsibleModule, result: dict, clock: float, progress: dict) -> None:
    params = module.params
    progress["step"] = "find the backup"
    manifest = backup.find_backup(params["backup_dir"], params["backup_id"], params["site"])
    if manifest["engine"] != engine.ENGINE:
        raise backup.BackupError(f"backup {manifest['backup_id']} is a {manifest['engine']} backup; "
                                 f"this module drills {engine.ENGINE} backups")
    started = backup.from_iso(result["started_at"])
    result.update(backup_id=manifest["backup_id"], backup_ended_at=manifest["ended_at"],
                  rpo_seconds=int((started - backup.from_iso(manifest["ended_at"])).total_seconds()))
    progress["step"] = "verify the backup's checksum"
    path = backup.verify_checksum(params["backup_dir"], manifest)
    result["checks"] = {"checksum": True, "tables": len(manifest.get("tables", {})),
                        "critical_tables": len(manifest.get("checksums", {})), "query": bool(manifest.get("query"))}
    if module.check_mode:
        result["reason"] = "check mode: backup found and its checksum verified; nothing restored"
        result["passed"] = True
        return
    # A drill that was killed could not drop its scratch database: drop it now.
    progress["step"] = "drop the scratch databases a killed drill left"
    result["leftovers_dropped"] = engine.leftover_scratch(params, manifest["site"])
    for leftover in result["leftovers_dropped"]:
        engine.drop_scratch(params, leftover)
    # The restore lands beside production: refuse one that could fill its disk.
    progress["step"] = "check the free space"
    engine.check_room_to_restore(params, manifest)
    scratch = f"{engine.scratch_prefix(manifest['site'])}{int(time.time())}"
    result["scratch_database"] = scratch
    progress["step"] = "create the scratch database"
    engine.create_scratch(module.params, scratch)
    result["scratch_removed"] = False
    progress["step"] = "restore and prove the backup"
    try:
        engine.restore_and_prove(module, scratch, path, manifest)
    finally:
        if not params["keep_scratch"]:
            remove_scratch(params, scratch, result)
    if result.get("scratch_error"):
        progress["step"] = "drop the scratch database"
        raise backup.BackupError(result["scratch_error"])
    result["rto_seconds"] = round(time.monotonic() - clock, 3)
    result.update(passed=True, reason="all checks passed")


def remove_scratch(params: dict, scratch: str, result: dict) -> None:
    """Drop the scratch database. A failure is noted, never raised here, so that it cannot hide
    the drill's own error; the drill fails on it either way."""
    try:
        engine.drop_scratch(params, scratch)
        result["scratch_removed"] = True
    except (backup.BackupError, *engine.DATABASE_ERRORS) as exc:
        result["scratch_error"] = f"scratch database {scratch} could not be dropped: {engine.describe_error(exc)}"


def main() -> None:
    spec = engine.restore_argument_spec()
    spec.update(keep_scratch={"type": "bool", "default": False})
    module = AnsibleModule(argument_spec=spec, supports_check_mode=True)
    clock = time.monotonic()
    result = {"changed": False, "passed": False, "reason": "", "engine": engine.ENGINE, "checks": {},
              "started_at": backup.to_iso(backup.utc_now()), "rto_seconds": 0.0}
    progress = {"step": "find the backup"}
    # pg_restore that cannot start ends the module in Ansible's own fail_json: told all the same.
    tell_failures(module, lambda msg: backup.drill_event(module.params["site"], dict(
        result, passed=False, reason=msg, rto_seconds=round(time.monotonic() - clock, 3)), step=progress["step"]))
    try:
        drill(module, result, clock, progress)
    except (backup.BackupError, OSError, *engine.DATABASE_ERRORS) as exc:
        reason = engine.describe_error(exc)
        if result.get("scratch_error") and result["scratch_error"] not in reason:
            reason += f"; {result['scratch_error']}"
        result.update(passed=False, reason=reason, rto_seconds=round(time.monotonic() - clock, 3))
        if not module.check_mode:
            result["opspack_event"] = backup.drill_event(module.params["site"], result, step=progress["step"])
        module.fail_json(msg=f"restore drill failed: {reason}", **result)
    # A drill creates and drops a scratch database but leaves the host as it found it.
    if not module.check_mode:
        result["opspack_event"] = backup.drill_event(module.params["site"], result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
