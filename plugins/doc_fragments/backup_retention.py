# Copyright: opspack developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Options shared by every opspack backup module (one per engine)."""

from __future__ import annotations


class ModuleDocFragment:  # pylint: disable=too-few-public-methods
    DOCUMENTATION = r"""
options:
  site:
    description:
      - Name the backup is filed under; it starts the backup id (C(<site>-<engine>-<UTC stamp>)).
      - Lower-case letters, digits, C(-) and C(_).
    type: str
    required: true
  backup_dir:
    description: Directory on the host that holds these backups. It must exist.
    type: path
    required: true
  keep_last:
    description: Retention keeps this many newest backups of the site and engine.
    type: int
    default: 7
  keep_daily_days:
    description:
      - Retention also keeps the newest backup of each UTC day within this many days
        (today included). 0 keeps only O(keep_last). The backup just taken is always kept.
    type: int
    default: 30
  prune:
    description: Whether to delete the backups retention does not keep.
    type: bool
    default: true
  min_free_mb:
    description: Free space in MiB the backup directory must have before anything is written.
    type: int
    default: 0
notes:
  - The data is written under a temporary name, renamed when complete, and the manifest
    (sha256, size, start and end in UTC, and the engine's own facts) is written last, so an
    interrupted backup never looks like a backup. Retention orders backups by the times in
    their manifests, never by file modification times.
"""
