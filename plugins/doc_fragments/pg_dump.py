# Copyright: opspack developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Options of the modules that write a logical backup with pg_dump (pg_backup, pitr_backup)."""

from __future__ import annotations


class ModuleDocFragment:  # pylint: disable=too-few-public-methods
    DOCUMENTATION = r"""
options:
  compress:
    description:
      - zlib compression level for C(pg_dump) (0 none, 1 fastest, 9 smallest).
      - The default, 1, is not pg_dump's own (6). Level 1 needs about half of pg_dump's CPU for
        a few percent more bytes (pgbench tables 2% more, text-heavy tables about 11% more), so a
        backup that also reads its proof takes no longer than a plain C(pg_dump) would, and the
        exported snapshot (which holds back vacuum on the whole cluster) is held for less time.
        Restores read every level about equally fast.
      - The level is recorded in the manifest (C(compress_level)).
    type: int
    default: 1
    choices: [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]
"""
