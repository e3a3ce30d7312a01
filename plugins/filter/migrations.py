# Copyright: opspack developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A release's SQL migrations, read and checked on the control node."""

from __future__ import annotations

from ansible.errors import AnsibleFilterError
from ansible_collections.opspack.platform.plugins.module_utils.migrations import MigrationError, plan, read_release


def release_migrations(path):
    """The names of the migrations in PATH, oldest first, once every file is proven well named and
    each migration has its rollback script (the rules pg_migrations applies them by)."""
    try:
        release = read_release(str(path))
        return [item["name"] for item in plan(release, {}, "head")["apply"]]
    except MigrationError as exc:
        raise AnsibleFilterError(str(exc)) from exc


class FilterModule:
    def filters(self):
        return {"release_migrations": release_migrations}
