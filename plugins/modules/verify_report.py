# Copyright: opspack developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Documentation of the verify_report action (it runs on the control node only)."""

from __future__ import annotations

DOCUMENTATION = r"""
module: verify_report
short_description: Judge a host's full verification and tell the records
version_added: 0.2.0
author: opspack developers (@opspack)
description:
  - Puts together what the full verification (C(opspack.platform.verify)) found for one host,
    the host's own checks (M(opspack.platform.health_check) with V(prod_verify) V(verify)), each
    site's smoke tests, the configuration drift (M(opspack.platform.config_drift)) and the last
    restore drill of each site from the records, as one list of checks, each V(pass), V(warn) or
    V(fail) with a one-line reason.
  - Returns one records event per site (operation C(verify), result C(pass) or C(fail)); a failed
    verification is an incident of the worst failed check's severity.
  - Runs on the control node only; never fails (the playbook decides).
options:
  host_checks:
    description: The RV(opspack.platform.health_check#module:checks) of V(prod_verify) V(verify).
    type: list
    elements: dict
    required: true
  smoke:
    description: Per site, the problems its smoke tests found (an empty list when they passed).
    type: dict
    required: true
  drift:
    description: This host's entry of RV(opspack.platform.config_drift#module:hosts); omitted when it could not be told.
    type: dict
  drift_error:
    description: Why the drift could not be told.
    type: str
  drills:
    description: The last restore drill of each site (lookup C(opspack.platform.recorded) V(drills)).
    type: list
    elements: dict
  sites:
    description: The sites on this host.
    type: list
    elements: str
    required: true
  started:
    description: When the verification started (UTC, C(%Y-%m-%dT%H:%M:%SZ)), for the records' duration.
    type: str
  drill_max_age_days:
    description: A last drill older than this is a warning.
    type: float
    default: 30
extends_documentation_fragment:
  - opspack.platform.controller_action
seealso:
  - module: opspack.platform.health_check
  - module: opspack.platform.config_drift
"""

EXAMPLES = r"""
- name: Judge the host and tell the records
  opspack.platform.verify_report:
    host_checks: "{{ host_checks.checks }}"
    smoke: "{{ smoke_problems }}"
    drift: "{{ drift.hosts[inventory_hostname] | default(omit) }}"
    sites: [blog, shop]
  register: verified
"""

RETURN = r"""
passed:
  description: Whether no check failed.
  returned: always
  type: bool
checks:
  description: Every check, with C(check), C(site) (empty for the host), C(status) (V(pass), V(warn), V(fail)), C(reason), C(severity).
  returned: always
  type: list
  elements: dict
lines:
  description: One line per check that did not pass, then the host's summary line.
  returned: always
  type: list
  elements: str
  sample: ["FAIL vps2 firewall: ruleset_changed_by_hand", "verify vps2: FAIL (41 checks, 1 failed, 1 warnings)"]
opspack_report:
  description: The report the records callback keeps as the host's last verification (C(reports/verify/<host>.json)).
  returned: always
  type: dict
results:
  description: One entry per site with its records event (C(opspack_event)).
  returned: always
  type: list
  elements: dict
"""

from ansible.module_utils.basic import AnsibleModule


def main() -> None:
    module = AnsibleModule(argument_spec=dict(
        host_checks=dict(type="list", elements="dict", required=True), smoke=dict(type="dict", required=True),
        drift=dict(type="dict"), drift_error=dict(type="str"), drills=dict(type="list", elements="dict"),
        sites=dict(type="list", elements="str", required=True), started=dict(type="str"),
        drill_max_age_days=dict(type="float", default=30)), supports_check_mode=True)
    module.fail_json(msg="verify_report runs on the control node only (its action plugin); it was called as a module")


if __name__ == "__main__":
    main()
