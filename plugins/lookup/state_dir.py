# Copyright: opspack developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Where the control node keeps what opspack writes for this inventory."""

from __future__ import annotations

DOCUMENTATION = r"""
name: state_dir
short_description: The control-node state directory of this inventory (records, artifacts, off-host backups, lab CA)
version_added: 0.2.0
author: opspack developers (@opspack)
description:
  - One directory on the control node holds everything opspack writes there for an inventory,
    C(records/) (history, sites matrix, incident log, last-known-good state, drills),
    C(artifacts/) (release tarballs), C(backups/) (off-host copies of the backups) and C(lab-ca/)
    (the lab's certificate authority). The roles' own path variables (C(release_artifacts_dir),
    C(backup_offhost_dir), C(nginx_lab_ca_dir), C(restore_drill_records_dir)) default to its parts.
  - By default it is C(~/.local/share/opspack/<inventory name>) (C($XDG_DATA_HOME) when set), the
    inventory name being the name of the inventory's directory. It is never inside an inventory
    (Ansible would read the records as inventory) nor inside a project checkout (backups and keys
    would be one C(git add) away from a repository).
  - C(opspack_state_dir) (an inventory or extra variable, templated, so it may use C(inventory_dir))
    names the directory first, then O(state_dir).
  - Every opspack playbook reports the directory to the records callback (C(set_stats)), so an
    inventory variable moves the records too.
options:
  _terms:
    description: At most one part of the directory (C(records), C(artifacts), C(backups), C(lab-ca)); none for the directory itself.
    type: list
    elements: str
    required: false
extends_documentation_fragment:
  - opspack.platform.state_dir
"""

EXAMPLES = r"""
- name: Show where this inventory's records go
  ansible.builtin.debug:
    msg: "{{ lookup('opspack.platform.state_dir', 'records') }}"

# inventories/production/group_vars/all/main.yml: keep the state with the project (the records
# are meant to be committed; the backups, artifacts and lab CA are not)
# opspack_state_dir: "{{ inventory_dir }}/../../state/production"
"""

RETURN = r"""
_raw:
  description: The absolute path (created by the role that writes there, not by this lookup).
  type: list
  elements: path
"""

from ansible.errors import AnsibleLookupError
from ansible.plugins.lookup import LookupBase

from ansible_collections.opspack.platform.plugins.plugin_utils import state_dir


class LookupModule(LookupBase):

    def run(self, terms, variables=None, **kwargs):
        self.set_options(var_options=variables, direct=kwargs)
        variables = variables or {}
        if len(terms) > 1:
            raise AnsibleLookupError("state_dir takes at most one part: " + ", ".join(state_dir.PARTS))
        # The variable is templated here: an option's vars source hands a lookup the raw string.
        configured = variables.get("opspack_state_dir")
        configured = self._templar.template(configured) if configured else self.get_option("state_dir")
        sources = variables.get("ansible_inventory_sources") or []
        if not terms:
            return [state_dir.state_dir(configured, sources)]
        if terms[0] == "records":
            return [state_dir.records_dir(self.get_option("records_dir"), configured, sources)]
        try:
            return [state_dir.part(state_dir.state_dir(configured, sources), terms[0])]
        except ValueError as error:
            raise AnsibleLookupError(str(error)) from None
