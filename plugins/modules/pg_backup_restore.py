#!/usr/bin/python
# Copyright: opspack developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Restore a site's database from a backup: into a new database, proven, then swapped in."""

from __future__ import annotations

DOCUMENTATION = r"""
module: pg_backup_restore
short_description: Restore a site's database from a verified backup, keeping the old one
version_added: 0.1.0
author: opspack developers (@opspack)
description:
  - Replaces the site's database with the content of a backup taken by
    M(opspack.platform.pg_backup), and nothing is lost on the way.
  - Before anything changes it requires O(confirm) to repeat the site's name, finds the backup
    and verifies its size and sha256, and checks the free space for a second copy.
  - Restores into a new database C(<database>__restoring) with the original owners and
    privileges (C(pg_restore --exit-on-error)), then proves the data (row counts, content
    checksums, drill query) against the manifest. Only then it swaps the names, in one
    transaction, after ending the sessions on the old database, and copies the old database's
    CONNECT and TEMPORARY privileges to the new one. The old database stays as
    C(<database>__before_<UTC stamp>), the way back.
  - When the restore or the proof fails, the new database is dropped and the site's database
    was never touched.
  - Put the site in maintenance and take a safety backup first; the C(restore.yml) playbook does both.
  - A restore run (not check mode) tells the records how it ended as an C(opspack_event)
    (operation C(restore)), also when it fails, with the step and the state the site's database is in.
extends_documentation_fragment:
  - opspack.platform.postgresql_connection
  - opspack.platform.backup_selection
options:
  jobs:
    description: Parallel jobs for C(pg_restore).
    type: int
    default: 2
  database:
    description: The site's database.
    type: str
    required: true
  confirm:
    description: Must be the site's name, typed by the operator, or nothing happens.
    type: str
    required: true
attributes:
  check_mode:
    description: Can run in check_mode and return changed status prediction without modifying the target.
    support: full
    details: Checks the confirmation, verifies the backup's checksum and the free space; restores nothing.
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in check_mode), when in diff mode.
    support: none
notes:
  - Run it as the C(postgres) user on the database host.
seealso:
  - module: opspack.platform.pg_backup
  - module: opspack.platform.restore_drill
"""

EXAMPLES = r"""
- name: Restore the blog from last night's backup
  opspack.platform.pg_backup_restore:
    site: blog
    database: blog
    backup_dir: /var/backups/opspack/blog/postgresql
    backup_id: blog-postgresql-20261123T013000Z
    confirm: blog
  become: true
  become_user: postgres
"""

RETURN = r"""
site:
  description: The site whose database the module restored (or would restore).
  returned: always
  type: str
  sample: blog
backup_id:
  description: The backup restored.
  returned: when a backup was found
  type: str
previous_database:
  description: Name the site's previous database now has (the way back).
  returned: when the restore was swapped in
  type: str
  sample: blog__before_20261123T101500Z
checks:
  description: What was proven on the restored database before the swap (counts of tables, critical tables, query).
  returned: when the restore was proven
  type: dict
duration_seconds:
  description: Seconds from the start to the swapped-in database.
  returned: always
  type: float
opspack_event:
  description:
    - How the restore ended, for the records (see the records callback). An C(operation) event
      (C(operation=restore)) with the C(backup_id) and C(timings) (C(duration_s) is
      RV(duration_seconds)), C(result) C(ok) (its C(actions) name the database kept as the way
      back) or C(failed) with the C(step), C(reason), C(impact) (the state the site's database is
      in) and C(actions).
    - Check mode is the restore's own verification, which refuses before anything changes, so it tells no event.
  returned: when not in check mode
  type: dict
  sample: {"kind": "operation", "site": "blog", "operation": "restore", "result": "failed",
           "step": "restore and prove the backup", "reason": "the restored data differs from the backup: ...",
           "impact": "the site's database was not replaced", "actions": "the restored copy blog__restoring was dropped",
           "backup_id": "blog-postgresql-20261123T013000Z",
           "timings": {"started": "2026-11-23T10:15:00Z", "ended": "2026-11-23T10:16:02Z", "duration_s": 61.8}}
"""

import time

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.opspack.platform.plugins.module_utils import backup
from ansible_collections.opspack.platform.plugins.module_utils import postgresql_backup as engine
from ansible_collections.opspack.platform.plugins.module_utils.events import event, tell_failures, timings, utc_stamp

NOT_REPLACED = "the site's database was not replaced"


def restore(module: AnsibleModule, result: dict, progress: dict) -> None:
    """progress says, for the event of a failure, the step under way and what this run has
    done to the server so far (impact and actions, kept true step by step)."""
    params = module.params
    progress.update(step="check the confirmation", impact=NOT_REPLACED, actions="nothing changed")
    if params["confirm"] != params["site"]:
        raise backup.BackupError(f"confirm must repeat the site's name ({params['site']!r}) to replace its database; "
                                 f"nothing was changed")
    progress["step"] = "find the backup"
    manifest = backup.find_backup(params["backup_dir"], params["backup_id"], params["site"])
    result["backup_id"] = manifest["backup_id"]
    progress["step"] = "verify the backup"
    path = backup.verify_checksum(params["backup_dir"], manifest)
    progress["step"] = "check the free space"
    engine.check_room_to_restore(params, manifest, note="; nothing was changed")
    database = params["database"]
    incoming = f"{database}{engine.INCOMING_SUFFIX}"
    previous = f"{database}__before_{backup.utc_now().strftime(backup.STAMP_FORMAT)}"
    progress["step"] = "check the database names"
    if not (engine.name_fits(incoming) and engine.name_fits(previous)):
        raise backup.BackupError(f"database name {database!r} is too long to restore beside ({previous!r} would pass "
                                 f"PostgreSQL's 63 bytes); nothing was changed")
    if module.check_mode:
        return
    progress["step"] = f"create the database {incoming}"
    engine.create_database(params, incoming, template_owner_of=database)
    progress["step"] = "restore and prove the backup"
    try:
        engine.restore_and_prove(module, incoming, path, manifest, keep_owners=True,
                                 note="; the site's database is untouched")
        result["checks"] = {"tables": len(manifest.get("tables", {})), "critical_tables": len(manifest.get("checksums", {})),
                            "query": bool(manifest.get("query"))}
    except BaseException:
        engine.drop_database_quietly(params, incoming)
        progress["actions"] = dropped(params, incoming)
        raise
    progress["step"] = "swap the databases"
    try:
        warning = engine.swap_databases(params, database, incoming, previous)
    except BaseException:
        swapped = database_facts(params, previous)
        if swapped:
            progress.update(impact=f"the site's database was replaced by backup {manifest['backup_id']}, "
                                   f"but the swap did not finish cleanly; the old one is kept as {previous}",
                            actions=f"none: check the site's database and {previous}")
            raise
        # Not swapped (or the server cannot say: after a swap, no database has the incoming name
        # any more, so the drop cannot touch the site): the proven copy is not kept.
        engine.drop_database_quietly(params, incoming)
        actions = [dropped(params, incoming)]
        if swapped is None:
            impact = (f"unknown: the server did not say whether {previous} exists, so the site's database may have "
                      f"been replaced by backup {manifest['backup_id']}; check {database} and {previous}")
        else:
            impact = f"{NOT_REPLACED} (the attempt may have ended its open sessions)"
            if (database_facts(params, database) or {}).get("allow_connections") is False:
                # The swap forbids new sessions first; it could not allow them again.
                impact = f"{NOT_REPLACED}, but it refuses new connections"
                actions.append(f"to open it again: ALTER DATABASE {database} ALLOW_CONNECTIONS true")
        progress.update(impact=impact, actions="; ".join(actions))
        raise
    result.update(changed=True, previous_database=previous)
    if warning:
        module.warn(warning)


def database_facts(params: dict, name: str) -> dict | None:
    """{} when the server has no database name, {"allow_connections": bool} when it has, None
    when it cannot be asked."""
    try:
        conn = engine.connect(params, "postgres", autocommit=True)
    except backup.BackupError:
        return None
    try:
        cursor = conn.cursor()
        cursor.execute("SELECT datallowconn FROM pg_database WHERE datname = %s", (name,))
        found = cursor.fetchone()
        return {"allow_connections": bool(found[0])} if found else {}
    except engine.DATABASE_ERRORS:
        return None
    finally:
        conn.close()


def dropped(params: dict, incoming: str) -> str:
    """What became of the restored copy this run made, after it was dropped (quietly)."""
    exists = database_facts(params, incoming)
    if exists == {}:
        return f"the restored copy {incoming} was dropped"
    if exists:
        return f"the restored copy {incoming} could not be dropped: drop it (DROP DATABASE {incoming}) before a new restore"
    return f"the restored copy {incoming} may be left: drop it if it exists (DROP DATABASE {incoming})"


def main() -> None:
    spec = engine.restore_argument_spec()
    spec.update(database={"type": "str", "required": True}, confirm={"type": "str", "required": True})
    module = AnsibleModule(argument_spec=spec, supports_check_mode=True)
    clock, started = time.monotonic(), utc_stamp()
    result = {"changed": False, "site": module.params["site"]}
    progress = {}
    # pg_restore that cannot start ends the module in Ansible's own fail_json: told all the same.
    tell_failures(module, lambda msg: told(
        module, result, started, result.get("duration_seconds", round(time.monotonic() - clock, 3)), "failed",
        reason=msg, **progress))
    try:
        restore(module, result, progress)
    except (backup.BackupError, OSError, *engine.DATABASE_ERRORS) as exc:
        result["duration_seconds"] = round(time.monotonic() - clock, 3)
        # The event is added by tell_failures.
        module.fail_json(msg=f"restore failed: {engine.describe_error(exc)}", **result)
    result["duration_seconds"] = round(time.monotonic() - clock, 3)
    if not module.check_mode:
        result["opspack_event"] = told(module, result, started, result["duration_seconds"], "ok",
                                       actions=f"the previous database is kept as {result['previous_database']}")
    module.exit_json(**result)


def told(module: AnsibleModule, result: dict, started: str, duration: float, outcome: str, **fields) -> dict:
    """The restore's opspack_event, timed by what the module measured."""
    timed = timings(started)
    timed["duration_s"] = duration
    return event("operation", module.params["site"], "restore", outcome, backup_id=result.get("backup_id"),
                 timings=timed, **fields)


if __name__ == "__main__":
    main()
