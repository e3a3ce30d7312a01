# Copyright: opspack developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""beside_inventory: where control-node files (records, off-host backups, the lab CA) belong."""

from __future__ import annotations

import os


def beside_inventory(inventory_dir, inventory_sources, name):
    """DIR/name next to the inventory: beside an inventory file, or beside an inventory
    directory, never inside one (Ansible would try to read every file there as inventory)."""
    sources = {os.path.normpath(str(source)) for source in (inventory_sources or [])}
    base = os.path.normpath(str(inventory_dir))
    if base in sources:
        base = os.path.dirname(base)
    return os.path.join(base, name)


class FilterModule:
    """Control-node paths."""

    def filters(self):
        return {"beside_inventory": beside_inventory}
