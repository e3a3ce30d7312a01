#!/usr/bin/python
# Copyright: opspack developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Apply the backup retention policy to a directory of backup sets, e.g. the off-host copies."""

from __future__ import annotations

DOCUMENTATION = r"""
module: backup_retention
short_description: Apply the backup retention policy to a directory of backups
version_added: 0.1.0
author: opspack developers (@opspack)
description:
  - Applies the retention policy of the backup modules (M(opspack.platform.pg_backup),
    M(opspack.platform.files_backup), M(opspack.platform.redis_backup)) to the complete backup
    sets in O(backup_dir), each site and engine on its own, without taking a backup.
  - Made for the off-host copies on the control node (the backup role runs it there after
    copying), where a copy whose backup the host's scheduled run already deleted would otherwise
    stay forever. The policy is applied to the copies' own manifests, not to the files the host
    says it deleted; what the host reports (O(keep)) can only keep a copy, never delete one.
  - A manifest must be named after its own id (C(<site>-<engine>-<UTC stamp>)), with that site
    and engine in it, or the module fails before deleting anything, so a forged or misplaced
    manifest cannot point a deletion anywhere else. A host that forges newer manifests can still
    make older copies fall out of O(keep_last), as it could on the host itself; the daily
    copies within O(keep_daily_days) stay by date only if their manifests are genuine.
  - Backups are ordered by the times in their manifests, never by file modification times. The
    newest backup of each site and engine is always kept. A manifest is deleted before its data
    file, and a data file only when no kept manifest names it.
  - A manifest that cannot be read fails the module before anything is deleted.
options:
  backup_dir:
    description: Directory that holds the backup sets. A directory that does not exist holds none.
    type: path
    required: true
  site:
    description: Only this site's backups; by default every site's.
    type: str
  engine:
    description: Only this engine's backups (C(postgresql), C(files), C(redis)); by default every engine's.
    type: str
  keep:
    description:
      - Backup ids kept whatever the policy says, e.g. those the host's retention kept in this
        run. The backup role passes them so that a copy just taken is never deleted by the
        control node's clock or a manifest dated in the future. They can only keep, never delete.
    type: list
    elements: str
    default: []
  keep_last:
    description: Retention keeps this many newest backups of each site and engine.
    type: int
    default: 7
  keep_daily_days:
    description:
      - Retention also keeps the newest backup of each UTC day within this many days (today
        included). 0 keeps only O(keep_last).
    type: int
    default: 30
attributes:
  check_mode:
    description: Can run in check_mode and return changed status prediction without modifying the target.
    support: full
    details: Reports the backups it would delete.
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in check_mode), when in diff mode.
    support: none
seealso:
  - module: opspack.platform.pg_backup
"""

EXAMPLES = r"""
- name: Keep the control node's copies of vps1's blog database backups to the policy
  opspack.platform.backup_retention:
    backup_dir: "{{ inventory_dir }}/backups/vps1/blog/postgresql"
    keep: "{{ blog_backup.kept }}"
    keep_last: 7
    keep_daily_days: 30
  delegate_to: localhost
"""

RETURN = r"""
kept:
  description: Backup ids kept, oldest first within each site and engine.
  returned: always
  type: list
  elements: str
deleted:
  description: Backup ids deleted (or that would be deleted in check mode), oldest first within each site and engine.
  returned: always
  type: list
  elements: str
deleted_files:
  description: File names removed from O(backup_dir) (empty in check mode).
  returned: always
  type: list
  elements: str
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.opspack.platform.plugins.module_utils import backup


def argument_spec() -> dict:
    spec = {name: option for name, option in backup.retention_argument_spec().items()
            if name in ("backup_dir", "keep_last", "keep_daily_days")}
    spec.update(site={"type": "str"}, engine={"type": "str"}, keep={"type": "list", "elements": "str", "default": []})
    return spec


def main() -> None:
    module = AnsibleModule(argument_spec=argument_spec(), supports_check_mode=True)
    params = module.params
    result = {"changed": False, "kept": [], "deleted": [], "deleted_files": []}
    try:
        groups: dict = {}
        for manifest in backup.list_backups(params["backup_dir"], params["site"], params["engine"]):
            groups.setdefault((manifest["site"], manifest["engine"]), []).append(manifest)
        now = backup.utc_now()
        for key in sorted(groups):
            kept, deleted = backup.retention_plan(groups[key], params["keep_last"], params["keep_daily_days"], now,
                                                  always_keep=tuple(params["keep"]))
            result["kept"] += kept
            result["deleted"] += deleted
            if not module.check_mode:
                result["deleted_files"] += backup.prune(params["backup_dir"], groups[key], kept, deleted)
        result["changed"] = bool(result["deleted"])
    except (backup.BackupError, OSError) as exc:
        module.fail_json(msg=str(exc), **result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
