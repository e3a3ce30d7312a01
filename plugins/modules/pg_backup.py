#!/usr/bin/python
# Copyright: opspack developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Take a logical PostgreSQL backup with a manifest that proves its content, then apply retention."""

from __future__ import annotations

DOCUMENTATION = r"""
module: pg_backup
short_description: Take a verified logical backup of a site's PostgreSQL database
version_added: 0.1.0
author: opspack developers
description:
  - Dumps one database with C(pg_dump --format=custom) (C(pg_restore --jobs) restores it in
    parallel) into O(backup_dir), and writes a manifest beside it with the site, database, start and
    end in UTC, size, sha256, server version, the site's release and migration version, the
    exact row count of every table, a content checksum of each table in O(critical_tables),
    and the answer to O(drill_query).
  - The facts in the manifest are read in the very snapshot that C(pg_dump) dumps (one
    exported REPEATABLE READ snapshot), so a restore drill can prove the data against them.
  - The data file is written under a temporary name and the manifest last, so an interrupted
    backup never looks like a backup.
  - Then applies retention to the site's backups in O(backup_dir) (see O(keep_last) and
    O(keep_daily_days)). In check mode nothing is written; the result says which backup would
    be taken and which backups retention would delete.
  - Refuses, before writing anything, a backup directory that is missing, not writable or has
    less free space than the database is large divided by two (or O(min_free_mb)).
extends_documentation_fragment:
  - opspack.platform.postgresql_connection
options:
  site:
    description: Site name; it starts the backup id (C(<site>-postgresql-<UTC stamp>)).
    type: str
    required: true
  database:
    description: Database to back up.
    type: str
    required: true
  backup_dir:
    description: Directory on the host that holds this site's backups. It must exist.
    type: path
    required: true
  critical_tables:
    description:
      - Tables (C(table) or C(schema.table)) whose content is checksummed, row by row, in the
        manifest. A drill fails when a restored copy differs by a single value.
    type: list
    elements: str
    default: []
  drill_query:
    description:
      - A read-only SQL query whose answer is stored in the manifest; a drill runs it on the
        restored copy and requires the same answer.
    type: str
  release:
    description: The site's release at backup time (for the manifest).
    type: str
  migration_version:
    description:
      - The site's migration version at backup time. When omitted it is read, in the dumped
        snapshot, as the highest C(version) in O(migrations_table) if that table exists.
    type: str
  migrations_table:
    description: The table the release lifecycle records applied migrations in.
    type: str
    default: public.opspack_schema_history
  compress:
    description: Compression level for C(pg_dump) (0-9); by default pg_dump's own.
    type: int
  keep_last:
    description: Retention keeps this many newest backups of the site.
    type: int
    default: 7
  keep_daily_days:
    description:
      - Retention also keeps the newest backup of each UTC day within this many days
        (today included). 0 keeps only O(keep_last).
    type: int
    default: 30
  prune:
    description: Whether to delete the backups retention does not keep.
    type: bool
    default: true
  min_free_mb:
    description: Free space the backup directory must have, at least; the default needs half the database size.
    type: int
    default: 0
attributes:
  check_mode:
    support: full
    details: Reports the backup it would take and the backups retention would delete.
  diff_mode:
    support: none
notes:
  - Run it as the C(postgres) user (C(become_user=postgres)) on the database host.
seealso:
  - module: opspack.platform.restore_drill
"""

EXAMPLES = r"""
- name: Back up the blog database, keep 7 and 30 days of dailies
  opspack.platform.pg_backup:
    site: blog
    database: blog
    backup_dir: /var/backups/opspack/blog/postgresql
    critical_tables:
      - posts
      - public.users
    drill_query: SELECT count(*) FROM posts WHERE published
  become: true
  become_user: postgres
  register: blog_backup

- name: Only see what a backup and retention would do
  opspack.platform.pg_backup:
    site: blog
    database: blog
    backup_dir: /var/backups/opspack/blog/postgresql
    keep_last: 3
  check_mode: true
  become: true
  become_user: postgres
"""

RETURN = r"""
backup_id:
  description: Id of the backup taken (or that would be taken in check mode).
  returned: always
  type: str
  sample: blog-postgresql-20261123T040000Z
path:
  description: Path of the data file on the host.
  returned: always
  type: str
  sample: /var/backups/opspack/blog/postgresql/blog-postgresql-20261123T040000Z.pgdump
manifest_path:
  description: Path of the manifest on the host.
  returned: always
  type: str
manifest:
  description: The manifest written (empty in check mode).
  returned: always
  type: dict
sha256:
  description: sha256 of the data file.
  returned: when a backup was taken
  type: str
size_bytes:
  description: Size of the data file.
  returned: when a backup was taken
  type: int
duration_seconds:
  description: Time from start to a complete, checksummed backup.
  returned: when a backup was taken
  type: float
kept:
  description: Backup ids retention keeps, oldest first.
  returned: always
  type: list
  elements: str
deleted:
  description: Backup ids retention deleted (or would delete in check mode), oldest first.
  returned: always
  type: list
  elements: str
"""

import os
import time

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.opspack.platform.plugins.module_utils import backup
from ansible_collections.opspack.platform.plugins.module_utils import postgresql_backup as engine


def argument_spec() -> dict:
    spec = engine.connection_argument_spec()
    spec.update(
        site={"type": "str", "required": True},
        database={"type": "str", "required": True},
        backup_dir={"type": "path", "required": True},
        critical_tables={"type": "list", "elements": "str", "default": []},
        drill_query={"type": "str"},
        release={"type": "str"},
        migration_version={"type": "str"},
        migrations_table={"type": "str", "default": "public.opspack_schema_history"},
        compress={"type": "int"},
        keep_last={"type": "int", "default": 7},
        keep_daily_days={"type": "int", "default": 30},
        prune={"type": "bool", "default": True},
        min_free_mb={"type": "int", "default": 0},
    )
    return spec


def take_backup(module: AnsibleModule, backup_id: str, started) -> dict:
    params = module.params
    directory = params["backup_dir"]
    data_path = os.path.join(directory, engine.data_file(backup_id))
    partial = data_path + backup.PARTIAL_SUFFIX
    session = engine.SnapshotSession(params, params["database"])
    clock = time.monotonic()
    try:
        backup.check_target(directory, max(params["min_free_mb"] * 1048576, session.database_bytes // 2))
        # Another run's file with this name is theirs: refuse before writing, and leave it alone.
        backup.reserve(partial)
    except BaseException:
        session.close()
        raise
    try:
        facts = engine.read_facts(session.cursor, params["critical_tables"], params["drill_query"],
                                  None if params["migration_version"] else params["migrations_table"])
        command = engine.dump_command(params, params["database"], session.snapshot, partial, params["compress"])
        rc, _out, err = module.run_command(command)
        if rc != 0:
            raise backup.BackupError(f"pg_dump failed (exit {rc}): {err.strip()[-2000:]}")
        os.replace(partial, data_path)
        manifest = build_manifest(params, backup_id, started, data_path, session, facts)
        backup.write_json_atomic(backup.manifest_path(directory, backup_id), manifest, mode=0o600)
    except BaseException:
        # No manifest, no backup: never leave a data file that retention would not know.
        engine.remove_quietly(partial)
        engine.remove_quietly(data_path)
        raise
    finally:
        session.close()
    return {"manifest": manifest, "sha256": manifest["sha256"], "size_bytes": manifest["size_bytes"],
            "duration_seconds": round(time.monotonic() - clock, 3)}


def build_manifest(params: dict, backup_id: str, started, data_path: str, session, facts: dict) -> dict:
    return {
        "format": backup.MANIFEST_FORMAT,
        "backup_id": backup_id,
        "site": params["site"],
        "engine": engine.ENGINE,
        "database": params["database"],
        "file": os.path.basename(data_path),
        "dump_format": "custom",
        "size_bytes": os.path.getsize(data_path),
        "sha256": backup.sha256_file(data_path),
        "started_at": backup.to_iso(started),
        "ended_at": backup.to_iso(backup.utc_now()),
        "server_version": session.server_version,
        "database_bytes": session.database_bytes,
        "release": params["release"],
        "migration_version": params["migration_version"] or facts["migration_version"],
        "tables": facts["tables"],
        "checksums": facts["checksums"],
        "query": facts["query"],
    }


def main() -> None:
    module = AnsibleModule(argument_spec=argument_spec(), supports_check_mode=True)
    # Backups hold the site's data: pg_dump creates the file readable by its owner only.
    os.umask(0o077)
    params = module.params
    directory = params["backup_dir"]
    started = backup.utc_now()
    result = {"changed": False, "manifest": {}, "kept": [], "deleted": []}
    try:
        backup_id = backup.new_backup_id(params["site"], engine.ENGINE, started)
        result.update(backup_id=backup_id, path=os.path.join(directory, engine.data_file(backup_id)),
                      manifest_path=backup.manifest_path(directory, backup_id))
        existing = backup.list_backups(directory, params["site"], engine.ENGINE)
        if any(item["backup_id"] == backup_id for item in existing):
            raise backup.BackupError(f"backup {backup_id} already exists; wait a second and run again")
        if module.check_mode:
            backup.check_target(directory, params["min_free_mb"] * 1048576)
            planned = existing + [{"backup_id": backup_id, "ended_at": backup.to_iso(started)}]
        else:
            result.update(take_backup(module, backup_id, started))
            result["changed"] = True
            planned = backup.list_backups(directory, params["site"], engine.ENGINE)
        result["kept"], result["deleted"] = backup.retention_plan(
            planned, params["keep_last"], params["keep_daily_days"], started, always_keep=(backup_id,))
        if params["prune"] and result["deleted"] and not module.check_mode:
            by_id = {item["backup_id"]: item for item in planned}
            kept = [by_id[kept_id] for kept_id in result["kept"]]
            for backup_id_to_delete in result["deleted"]:
                backup.delete_backup(directory, by_id[backup_id_to_delete], kept)
        if not params["prune"]:
            result["deleted"] = []
    except (backup.BackupError, OSError, *engine.DATABASE_ERRORS) as exc:
        module.fail_json(msg=engine.describe_error(exc), **result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
