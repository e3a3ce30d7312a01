#!/usr/bin/python
# Copyright: opspack developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Take a logical PostgreSQL backup with a manifest that proves its content, then apply retention."""

from __future__ import annotations

DOCUMENTATION = r"""
module: pg_backup
short_description: Take a verified logical backup of a site's PostgreSQL database
version_added: 0.1.0
author: opspack developers (@opspack)
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
  - opspack.platform.backup_retention
  - opspack.platform.pg_dump
options:
  database:
    description: Database to back up.
    type: str
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
attributes:
  check_mode:
    description: Can run in check_mode and return changed status prediction without modifying the target.
    support: full
    details: Reports the backup it would take and the backups retention would delete.
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in check_mode), when in diff mode.
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
deleted_files:
  description: File names retention removed from O(backup_dir) (empty in check mode).
  returned: always
  type: list
  elements: str
opspack_event:
  description: The backup for the records (C(operation=backup), C(result) ok or failed; see the records callback).
  returned: when not in check mode
  type: dict
  sample: {"kind": "operation", "site": "blog", "operation": "backup", "result": "ok", "engine": "postgresql",
           "backup_id": "blog-postgresql-20261123T040000Z", "backup_ended_at": "2026-11-23T04:00:41Z",
           "timings": {"started": "2026-11-23T04:00:00Z", "ended": "2026-11-23T04:00:41Z", "duration_s": 41.0}}
"""

import os

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.opspack.platform.plugins.module_utils import backup
from ansible_collections.opspack.platform.plugins.module_utils import postgresql_backup as engine


def argument_spec() -> dict:
    spec = engine.connection_argument_spec()
    spec.update(backup.retention_argument_spec())
    spec.update(
        database={"type": "str", "required": True},
        critical_tables={"type": "list", "elements": "str", "default": []},
        drill_query={"type": "str"},
        release={"type": "str"},
        migration_version={"type": "str"},
        migrations_table={"type": "str", "default": "public.opspack_schema_history"},
        compress=engine.compress_argument(),
    )
    return spec


def main() -> None:
    module = AnsibleModule(argument_spec=argument_spec(), supports_check_mode=True)
    # Backups hold the site's data: pg_dump creates the file readable by its owner only.
    os.umask(0o077)
    backup.run_backup(module, engine.ENGINE, engine.FILE_SUFFIX,
                      lambda partial: engine.dump_database(module, module.params, partial),
                      describe=engine.describe_error, errors=engine.DATABASE_ERRORS)


if __name__ == "__main__":
    main()
