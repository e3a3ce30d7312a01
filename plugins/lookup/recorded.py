# Copyright: opspack developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What the records say was last done: the newest backups of a host, the last drill of each site."""

from __future__ import annotations

DOCUMENTATION = r"""
name: recorded
short_description: The newest backups and restore drills the records hold
version_added: 0.2.0
author: opspack developers (@opspack)
description:
  - Reads C(history.jsonl) of the records directory (see the records callback) and returns,
    for V(backups), the newest successful backup of each site and engine on O(host) (C(site),
    C(engine), C(backup_id), C(time)); for V(drills), the last restore drill of each site on any
    host (C(site), C(result), C(time), C(host)).
  - The production verification checks that the newest recorded backups are still on the host
    and judges the drills' age and result.
  - No records yet is no entry, never an error.
options:
  _terms:
    description: V(backups) or V(drills).
    type: list
    elements: str
    required: true
  host:
    description: The host whose backups to return (V(backups) only).
    type: str
extends_documentation_fragment:
  - opspack.platform.state_dir
"""

EXAMPLES = r"""
- name: The newest backups the records hold for this host
  ansible.builtin.debug:
    msg: "{{ query('opspack.platform.recorded', 'backups', host=inventory_hostname) }}"
"""

RETURN = r"""
_raw:
  description: One entry per site (and engine, for backups), sorted.
  type: list
  elements: dict
"""

import os

from ansible.errors import AnsibleLookupError
from ansible.plugins.lookup import LookupBase

from ansible_collections.opspack.platform.plugins.callback.records import HISTORY, read_history
from ansible_collections.opspack.platform.plugins.plugin_utils import state_dir


def newest_backups(history: list[dict], host: str) -> list[dict]:
    found = {}
    for entry in history:
        if entry.get("operation") == "backup" and entry.get("result") == "ok" and entry.get("host") == host and entry.get("backup_id"):
            found[(entry.get("site", ""), entry.get("engine", ""))] = {
                "site": entry.get("site", ""), "engine": entry.get("engine", ""), "backup_id": entry["backup_id"],
                "time": entry.get("time", "")}
    return [found[key] for key in sorted(found)]


def last_drills(history: list[dict]) -> list[dict]:
    found = {}
    for entry in history:
        if entry.get("operation") == "drill" and entry.get("site"):
            found[entry["site"]] = {"site": entry["site"], "result": entry.get("result", ""), "time": entry.get("time", ""),
                                    "host": entry.get("host", "")}
    return [found[key] for key in sorted(found)]


class LookupModule(LookupBase):

    def run(self, terms, variables=None, **kwargs):
        self.set_options(var_options=variables, direct=kwargs)
        if len(terms) != 1 or terms[0] not in ("backups", "drills"):
            raise AnsibleLookupError("recorded takes one of: backups, drills")
        variables = variables or {}
        # Found as the records callback and the lookup opspack.platform.state_dir find it.
        configured = variables.get("opspack_state_dir")
        configured = self._templar.template(configured) if configured else self.get_option("state_dir")
        directory = state_dir.records_dir(self.get_option("records_dir"), configured,
                                          variables.get("ansible_inventory_sources") or [])
        history = read_history(os.path.join(directory, HISTORY))
        if terms[0] == "drills":
            return last_drills(history)
        if not self.get_option("host"):
            raise AnsibleLookupError("recorded: backups needs host=")
        return newest_backups(history, self.get_option("host"))
