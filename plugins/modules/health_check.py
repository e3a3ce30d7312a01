#!/usr/bin/python
# Copyright: opspack developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Run the health checks of a host and its sites (ops_daily, prod_verify) from a playbook."""

from __future__ import annotations

DOCUMENTATION = r"""
module: health_check
short_description: Check a host and its sites as the daily check or the production verification does
version_added: 0.2.0
author: opspack developers (@opspack)
description:
  - Runs the checks of the host program the health role installs (C(ops_daily),
    C(prod_verify)) with the host's own configuration (C(/etc/opspack/health/config.json)), and
    returns their report, one finding per check with C(ok), C(fail), C(insufficient_data),
    C(error) or C(skipped), the lines the program prints, and the contract's exit code
    (RV(rc) V(0) healthy, V(1) a check could not run, V(2) unhealthy or insufficient data).
  - Read-only. Unlike the host's scheduled run (C(ops_daily --scheduled)) it keeps no state,
    sends no alert and pings no dead-man's switch. CPU is then measured over one second.
  - Fails when RV(rc) is not V(0) (unless O(fail_on_unhealthy=false)), with the summary line.
options:
  tool:
    description: V(ops_daily) (the daily check) or V(prod_verify) (the production verification).
    type: str
    choices: [ops_daily, prod_verify]
    default: ops_daily
  mode:
    description:
      - For V(ops_daily), V(prod) (strict) or V(dev) (a site without traffic is not a failure).
      - For V(prod_verify), V(dry_run) (the configuration and each site's required settings only)
        or V(verify) (every check, strict).
    type: str
    choices: [prod, dev, dry_run, verify]
    default: prod
  config:
    description: The checks' configuration on the host, written by the health role.
    type: path
    default: /etc/opspack/health/config.json
  fail_on_unhealthy:
    description: Fail the task when the exit code is not V(0).
    type: bool
    default: true
  expected_backups:
    description:
      - For V(prod_verify) V(verify), the newest backups the records hold for this host (lookup
        C(opspack.platform.recorded) V(backups)); each must still be on the host with its data.
    type: list
    elements: dict
    default: []
extends_documentation_fragment:
  - opspack.platform.read_only
seealso:
  - module: opspack.platform.site_release_info
"""

EXAMPLES = r"""
- name: Check the host as the daily check does
  opspack.platform.health_check:
    tool: ops_daily
    mode: prod
  register: daily

- name: Verify production before a go-live, configuration only
  opspack.platform.health_check:
    tool: prod_verify
    mode: dry_run
"""

RETURN = r"""
rc:
  description: The contract's exit code; V(0) healthy, V(1) a check could not run, V(2) unhealthy or insufficient data.
  returned: always
  type: int
status:
  description: V(healthy), V(unhealthy), V(insufficient_data) or V(error).
  returned: always
  type: str
green:
  description: Whether a scheduled run would count the host green (nothing failed or errored).
  returned: always
  type: bool
lines:
  description: The lines the host program prints, aggregate-only (no address, path, domain or value of a setting).
  returned: always
  type: list
  elements: str
  sample: ["site=blog check=traffic status=insufficient_data reason=delivered_total_0", "ops_daily status=insufficient_data ..."]
checks:
  description: One entry per check, with C(check), C(status), C(site), C(value), C(threshold), C(reason), C(severity) and figures.
  returned: always
  type: list
  elements: dict
opspack_report:
  description: For V(ops_daily), the report the records callback keeps (C(reports/ops_daily/<host>.json), C(daily.jsonl)).
  returned: when tool is ops_daily
  type: dict
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.opspack.platform.plugins.module_utils.health import CheckError, load_config, run_checks

MODES = {"ops_daily": ("prod", "dev"), "prod_verify": ("dry_run", "verify")}


def main() -> None:
    module = AnsibleModule(
        argument_spec=dict(
            tool=dict(type="str", choices=list(MODES), default="ops_daily"),
            mode=dict(type="str", choices=["prod", "dev", "dry_run", "verify"], default="prod"),
            config=dict(type="path", default="/etc/opspack/health/config.json"),
            fail_on_unhealthy=dict(type="bool", default=True),
            expected_backups=dict(type="list", elements="dict", default=[]),
        ),
        supports_check_mode=True,
    )
    tool, mode = module.params["tool"], module.params["mode"]
    if mode not in MODES[tool]:
        module.fail_json(msg=f"{tool} takes mode {' or '.join(MODES[tool])}, not {mode}")
    try:
        config = load_config(module.params["config"])
    except CheckError as exc:
        module.fail_json(msg=f"{tool} status=error reason={exc}: run the health role (the provision playbook) on this host",
                         rc=1, status="error", green=False, lines=[], checks=[])
    code, found = run_checks(config, tool, mode, expected_backups=module.params["expected_backups"])
    result = dict(changed=False, rc=code, status=found["status"], green=found["green"], lines=found["lines"],
                  checks=found["checks"])
    if tool == "ops_daily":
        # The records callback keeps the last daily report per host and its signals' trend.
        result["opspack_report"] = {"tool": tool, "generated_at": found["generated_at"], "status": found["status"],
                                    "summary": found["lines"][-1], "checks": found["checks"]}
    if code and module.params["fail_on_unhealthy"]:
        module.fail_json(msg=found["lines"][-1], **result)
    # `failed` said outright: a result with a non-zero rc and no `failed` is a failure to Ansible.
    module.exit_json(failed=False, **result)


if __name__ == "__main__":
    main()
