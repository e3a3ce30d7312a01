# Copyright: opspack developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Options of the modules that act on a site's tree on its host: which site, under which parent."""

from __future__ import annotations


class ModuleDocFragment:  # pylint: disable=too-few-public-methods
    DOCUMENTATION = r"""
options:
  site:
    description: The site (its tree is O(base_dir)/O(site)).
    type: str
    required: true
  base_dir:
    description: Parent directory of the sites.
    type: path
    default: /srv
"""
