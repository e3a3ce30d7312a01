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
"""

import time

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.opspack.platform.plugins.module_utils import backup
from ansible_collections.opspack.platform.plugins.module_utils import postgresql_backup as engine


def restore(module: AnsibleModule, result: dict) -> None:
    params = module.params
    if params["confirm"] != params["site"]:
        raise backup.BackupError(f"confirm must repeat the site's name ({params['site']!r}) to replace its database; "
                                 f"nothing was changed")
    manifest = backup.find_backup(params["backup_dir"], params["backup_id"], params["site"])
    result["backup_id"] = manifest["backup_id"]
    path = backup.verify_checksum(params["backup_dir"], manifest)
    engine.check_room_to_restore(params, manifest, note="; nothing was changed")
    database = params["database"]
    incoming = f"{database}{engine.INCOMING_SUFFIX}"
    previous = f"{database}__before_{backup.utc_now().strftime(backup.STAMP_FORMAT)}"
    if not (engine.name_fits(incoming) and engine.name_fits(previous)):
        raise backup.BackupError(f"database name {database!r} is too long to restore beside ({previous!r} would pass "
                                 f"PostgreSQL's 63 bytes); nothing was changed")
    if module.check_mode:
        return
    engine.create_database(params, incoming, template_owner_of=database)
    try:
        engine.restore_and_prove(module, incoming, path, manifest, keep_owners=True,
                                 note="; the site's database is untouched")
        result["checks"] = {"tables": len(manifest.get("tables", {})), "critical_tables": len(manifest.get("checksums", {})),
                            "query": bool(manifest.get("query"))}
    except BaseException:
        engine.drop_database_quietly(params, incoming)
        raise
    try:
        warning = engine.swap_databases(params, database, incoming, previous)
    except BaseException:
        # Not swapped: the site's database is as it was; the proven copy is not kept.
        if not database_exists(params, previous):
            engine.drop_database_quietly(params, incoming)
        raise
    result.update(changed=True, previous_database=previous)
    if warning:
        module.warn(warning)


def database_exists(params: dict, name: str) -> bool:
    try:
        conn = engine.connect(params, "postgres", autocommit=True)
    except backup.BackupError:
        return False
    try:
        cursor = conn.cursor()
        cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
        return cursor.fetchone() is not None
    finally:
        conn.close()


def main() -> None:
    spec = engine.restore_argument_spec()
    spec.update(database={"type": "str", "required": True}, confirm={"type": "str", "required": True})
    module = AnsibleModule(argument_spec=spec, supports_check_mode=True)
    clock = time.monotonic()
    result = {"changed": False, "site": module.params["site"]}
    try:
        restore(module, result)
    except (backup.BackupError, OSError, *engine.DATABASE_ERRORS) as exc:
        result["duration_seconds"] = round(time.monotonic() - clock, 3)
        module.fail_json(msg=f"restore failed: {engine.describe_error(exc)}", **result)
    result["duration_seconds"] = round(time.monotonic() - clock, 3)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
