# Copyright: opspack developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Documentation of the config_drift action (it runs on the control node only)."""

from __future__ import annotations

DOCUMENTATION = r"""
module: config_drift
short_description: Say per host what a converge would change, from a check-mode run of it
version_added: 0.2.0
author: opspack developers (@opspack)
description:
  - Runs O(playbook) with C(ansible-playbook --check --limit) O(hosts) on the control node, with
    this run's inventories, extra variables, vault identities and password files, user, key and
    connection settings, and returns per host the number of tasks that would change and their
    names. That is the configuration drift of a host against what provisioning would write.
  - Tasks tagged C(opspack_periodic) change with the clock, not the configuration (a refresh of
    apt's package lists), and are left out.
  - The nested run's output may hold values; it is read and dropped, never returned.
  - A run that asks for a password at a prompt cannot hand it on; the result then says so in
    RV(error) and holds no host.
  - Run it once for all hosts (C(run_once)); it never touches a host itself.
options:
  playbook:
    description: The playbook whose check-mode run tells the drift.
    type: str
    default: opspack.platform.provision
  hosts:
    description: The hosts to check (the play's hosts).
    type: list
    elements: str
    required: true
  timeout:
    description: Seconds the check run may take.
    type: int
    default: 900
extends_documentation_fragment:
  - opspack.platform.controller_action
seealso:
  - module: opspack.platform.health_check
"""

EXAMPLES = r"""
- name: Tell the drift of every host against what provisioning would write
  opspack.platform.config_drift:
    hosts: "{{ ansible_play_hosts }}"
  run_once: true
  register: drift
"""

RETURN = r"""
hosts:
  description: Per host, C(changed) (tasks that would change), C(failed) (tasks that failed or an unreachable host) and C(tasks) (their names).
  returned: always
  type: dict
  sample: {"vps1": {"changed": 1, "failed": 0, "tasks": ["Nginx | Write the site configuration"]}}
error:
  description: Why there is no report (C(interactive_password), C(not_run), C(no_report)).
  returned: when the drift could not be told
  type: str
"""

from ansible.module_utils.basic import AnsibleModule


def main() -> None:
    module = AnsibleModule(argument_spec=dict(playbook=dict(type="str", default="opspack.platform.provision"),
                                              hosts=dict(type="list", elements="str", required=True),
                                              timeout=dict(type="int", default=900)),
                           supports_check_mode=True)
    module.fail_json(msg="config_drift runs on the control node only (its action plugin); it was called as a module")


if __name__ == "__main__":
    main()
