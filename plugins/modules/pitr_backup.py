#!/usr/bin/python
# Copyright: opspack developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Take a logical backup of a site's database as it was at a point in time, recovered by pgBackRest."""

from __future__ import annotations

DOCUMENTATION = r"""
module: pitr_backup
short_description: Logical backup of a site's database as it was at a point in time
version_added: 0.1.0
author: opspack developers (@opspack)
description:
  - Recovers the pgBackRest stanza to O(target_time) into a scratch cluster (as
    M(opspack.platform.pitr_drill) does, with the same guard against recovering past the
    target), then takes a logical backup of O(database) from it exactly as
    M(opspack.platform.pg_backup) does, into O(backup_dir) with a manifest (row counts, content
    checksums of O(critical_tables), the answer to O(drill_query)) read in the dumped snapshot.
    The scratch cluster is stopped and removed afterwards, also when anything fails.
  - The result is an ordinary backup of the site, so M(opspack.platform.pg_backup_restore)
    restores it and proves the restored database against its manifest. This is how
    C(playbooks/restore.yml) restores one site to a point in time without rewinding the whole
    cluster (and every other site on it).
  - The manifest also records C(recovered_to) (the target) and C(recovered_from_set).
  - Production is only read by C(pgbackrest check) (which archives the current WAL segment);
    nothing in it changes. Retention is never applied here.
extends_documentation_fragment:
  - opspack.platform.pg_dump
options:
  site:
    description: Site the backup belongs to; its backup ids start with it.
    type: str
    required: true
  backup_dir:
    description: Directory the backup and its manifest are written to (it must exist and be writable).
    type: path
    required: true
  min_free_mb:
    description: Free space O(backup_dir) must have, in MiB, besides half the database's size.
    type: int
    default: 0
  database:
    description: Database to back up from the recovered cluster.
    type: str
    required: true
  critical_tables:
    description: Tables (C(table) or C(schema.table)) whose content is checksummed in the manifest.
    type: list
    elements: str
    default: []
  drill_query:
    description: A read-only SQL query whose answer is stored in the manifest.
    type: str
  release:
    description: The site's release at the target time, if known (for the manifest).
    type: str
  migration_version:
    description: The site's migration version at the target time; by default read from O(migrations_table).
    type: str
  migrations_table:
    description: The table the release lifecycle records applied migrations in.
    type: str
    default: public.opspack_schema_history
  target_time:
    description: The point in time to recover to, in UTC, as C(2026-11-23T17:10:03Z) (fractions of a second allowed).
    type: str
    required: true
  stanza:
    description: pgBackRest stanza.
    type: str
    default: main
  scratch_dir:
    description:
      - Directory of the scratch cluster. It must not exist, or be a leftover scratch cluster of
        opspack (it holds a marker file), which is stopped and removed.
    type: path
    default: /var/lib/postgresql/opspack-pitr-backup
  scratch_port:
    description: Port number of the scratch cluster's socket (it listens on no TCP address).
    type: int
    default: 5498
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
    support: full
    details: Chooses the backup set that can stop at the target and reports the backup it would take.
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in check_mode), when in diff mode.
    support: none
notes:
  - Run it as the C(postgres) user on the database host, after the C(opspack.platform.pgbackrest) role.
  - The scratch cluster needs free space beside O(scratch_dir) of twice the backup set's size.
seealso:
  - module: opspack.platform.pitr_drill
  - module: opspack.platform.pg_backup_restore
"""

EXAMPLES = r"""
- name: The blog's database as it was just before the bad migration, as a backup
  opspack.platform.pitr_backup:
    site: blog
    database: blog
    backup_dir: /var/backups/opspack/blog/postgresql
    target_time: "2026-11-22T14:59:00Z"
    critical_tables: [posts]
  become: true
  become_user: postgres
  register: blog_at_1459

- name: Put it in place (typed confirmation, proven, old database kept)
  opspack.platform.pg_backup_restore:
    site: blog
    database: blog
    backup_dir: /var/backups/opspack/blog/postgresql
    backup_id: "{{ blog_at_1459.backup_id }}"
    confirm: blog
  become: true
  become_user: postgres
"""

RETURN = r"""
backup_id:
  description: Id of the backup taken (or that would be taken in check mode).
  returned: always
  type: str
  sample: blog-postgresql-20261123T050000Z
path:
  description: Path of the data file on the host.
  returned: always
  type: str
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
  description: Time from the start of recovery to a complete, checksummed backup.
  returned: when a backup was taken
  type: float
target_time:
  description: The target, normalised to UTC.
  returned: when the target could be read
  type: str
backup_set:
  description: Label of the pgBackRest backup set recovered from.
  returned: when a set can reach the target
  type: str
backup_set_stopped_at:
  description: When that set ended, in UTC.
  returned: when a set can reach the target
  type: str
recovery_stopped_before:
  description: Time of the first commit after the target, where recovery stopped (from the server log).
  returned: when a backup was taken
  type: str
kept:
  description: Always the site's backups in O(backup_dir) (retention is not applied here).
  returned: always
  type: list
  elements: str
deleted:
  description: Always empty (retention is not applied here).
  returned: always
  type: list
  elements: str
deleted_files:
  description: Always empty.
  returned: always
  type: list
  elements: str
opspack_event:
  description:
    - The backup, for the records (see the records callback). An C(operation) event
      (C(operation=backup)) with C(result=ok), the C(engine), C(backup_id), C(backup_ended_at)
      (the manifest's C(ended_at)) and C(timings) (the manifest's start and end); or
      C(result=failed) with the C(step) that failed (C(choose the backup set) for a target no
      backup set can reach), the C(reason) and the C(impact).
  returned: when not in check mode
  type: dict
  sample: {"kind": "operation", "site": "blog", "operation": "backup", "result": "ok", "engine": "postgresql",
           "backup_id": "blog-postgresql-20261123T040000Z", "backup_ended_at": "2026-11-23T04:00:41Z",
           "timings": {"started": "2026-11-23T04:00:00Z", "ended": "2026-11-23T04:00:41Z", "duration_s": 41.0}}
"""

import os
import time

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.opspack.platform.plugins.module_utils import backup
from ansible_collections.opspack.platform.plugins.module_utils import pgbackrest
from ansible_collections.opspack.platform.plugins.module_utils import postgresql_backup as engine
from ansible_collections.opspack.platform.plugins.module_utils.events import event, tell_failures


def argument_spec() -> dict:
    spec = pgbackrest.scratch_argument_spec("/var/lib/postgresql/opspack-pitr-backup", 5498)
    spec.update(
        site={"type": "str", "required": True},
        backup_dir={"type": "path", "required": True},
        min_free_mb={"type": "int", "default": 0},
        database={"type": "str", "required": True},
        critical_tables={"type": "list", "elements": "str", "default": []},
        drill_query={"type": "str"},
        release={"type": "str"},
        migration_version={"type": "str"},
        migrations_table={"type": "str", "default": "public.opspack_schema_history"},
        compress=engine.compress_argument(),
    )
    return spec


def recover_and_dump(module: AnsibleModule, target, chosen: dict, extra: dict, partial: str) -> dict:
    """Recover into the scratch cluster, dump the database from it, remove the cluster."""
    clock = time.monotonic()
    cluster = pgbackrest.ScratchCluster(module)
    pgbackrest.prepare(module, cluster, chosen)
    try:
        stopped = pgbackrest.recover(module, cluster, target, chosen, clock)
        extra["recovery_stopped_before"] = stopped.isoformat()
        fields = engine.dump_database(module, dict(module.params, **cluster.connection), partial)
    finally:
        cluster.remove()
    return dict(fields, recovered_to=extra["target_time"], recovered_from_set=chosen["label"])


def main() -> None:
    module = AnsibleModule(argument_spec=argument_spec(), supports_check_mode=True)
    # The scratch cluster's data and the backup hold the site's data: owner only.
    os.umask(0o077)
    # Retention belongs to the scheduled backups: this one never deletes anything.
    module.params.update(prune=False, keep_last=10 ** 9, keep_daily_days=0)
    extra = {}
    # Until run_backup tells its own: pgbackrest that cannot start ends the module in Ansible's fail_json.
    tell_failures(module, lambda msg: event(
        "operation", module.params["site"], "backup", "failed", engine=engine.ENGINE, step="choose the backup set",
        reason=msg, impact=f"no backup of {module.params['site']} as of {module.params['target_time']} was taken"))
    try:
        target, chosen = pgbackrest.plan(module, extra)
    except (backup.BackupError, OSError) as exc:
        module.fail_json(msg=f"no backup as of {module.params['target_time']}: {engine.describe_error(exc)}",
                         changed=False, **extra)
    backup.run_backup(module, engine.ENGINE, engine.FILE_SUFFIX,
                      lambda partial: recover_and_dump(module, target, chosen, extra, partial),
                      describe=engine.describe_error, errors=engine.DATABASE_ERRORS, extra=extra)


if __name__ == "__main__":
    main()
