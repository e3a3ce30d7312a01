# Copyright: opspack developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""release_gate_input: the gate's policy and waivers checked before anything is built."""

from __future__ import annotations

from ansible.errors import AnsibleFilterError

from ansible_collections.opspack.platform.plugins.plugin_utils.release_gate import GateError, check_policy, check_waivers


def release_gate_input(waivers, policy=None):
    """How many waivers there are, once the policy and every waiver are well formed; else an
    error naming the setting and what it needs."""
    try:
        check_policy(policy)
        return len(check_waivers(waivers))
    except GateError as error:
        raise AnsibleFilterError(f"{error}. Nothing was built.") from error


class FilterModule:
    """The release gate's input."""

    def filters(self):
        return {"release_gate_input": release_gate_input}
