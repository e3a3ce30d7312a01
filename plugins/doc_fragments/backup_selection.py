# Copyright: opspack developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Options of the modules that read a backup back: which site, where, which backup."""

from __future__ import annotations


class ModuleDocFragment:  # pylint: disable=too-few-public-methods
    DOCUMENTATION = r"""
options:
  site:
    description: Site whose backup is read.
    type: str
    required: true
  backup_dir:
    description: Directory on the host that holds the site's backups.
    type: path
    required: true
  backup_id:
    description:
      - The backup to read; C(latest) takes the newest by the time in its manifest (never by
        file modification time). Its size and sha256 are verified before it is used.
    type: str
    default: latest
"""
