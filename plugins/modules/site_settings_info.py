#!/usr/bin/python
# Copyright: opspack developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Which of a site's required settings are set on the host: names only, never a value."""

from __future__ import annotations

DOCUMENTATION = r"""
module: site_settings_info
short_description: Tell which of a site's required settings are missing on the host (names only)
version_added: 0.2.0
author: opspack developers (@opspack)
description:
  - Reads the site's env file on the host (C(NAME=value) lines, as systemd's C(EnvironmentFile)
    takes them) and returns the names of O(required) that are set neither there (with a value)
    nor in O(set_in_inventory).
  - Returns names only. No value of the file ever leaves the host.
  - The same rule as the daily check and the production verification (C(prod_verify dry_run)),
    and the same line for a site with settings missing
    (C(prod_config status=fail reason=missing_env site=<site> names=<A,B>)).
options:
  site:
    description: The site, for RV(line).
    type: str
    required: true
  env_file:
    description: The site's env file on the host (a missing file sets nothing).
    type: path
    required: true
  required:
    description: The names the site must have.
    type: list
    elements: str
    default: []
  set_in_inventory:
    description: Names the inventory sets with a value (the site's plain env), which count as set.
    type: list
    elements: str
    default: []
extends_documentation_fragment:
  - opspack.platform.read_only
seealso:
  - module: opspack.platform.health_check
"""

EXAMPLES = r"""
- name: Check the blog's required settings before its first database
  opspack.platform.site_settings_info:
    site: blog
    env_file: /srv/blog/shared/env
    required: [DATABASE_URL, SECRET_KEY]
  become: true
  register: settings

- name: Stop when one is missing
  ansible.builtin.fail:
    msg: "{{ settings.line }}"
  when: settings.missing | length > 0
"""

RETURN = r"""
missing:
  description: The required names not set, sorted.
  returned: always
  type: list
  elements: str
  sample: [MAIL_URL]
line:
  description: The C(prod_config) line for the missing names; empty when none is missing.
  returned: always
  type: str
  sample: prod_config status=fail reason=missing_env site=blog names=MAIL_URL
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.opspack.platform.plugins.module_utils.health import CheckError, Finding, missing_env


def main() -> None:
    module = AnsibleModule(argument_spec={
        "site": {"type": "str", "required": True},
        "env_file": {"type": "path", "required": True},
        "required": {"type": "list", "elements": "str", "default": []},
        "set_in_inventory": {"type": "list", "elements": "str", "default": []},
    }, supports_check_mode=True)
    params = module.params
    try:
        missing = missing_env({"required_env": params["required"], "env_names": params["set_in_inventory"],
                               "env_file": params["env_file"]})
    except CheckError as exc:
        module.fail_json(msg=f"cannot read {params['env_file']} ({exc}): check its owner and mode")
    line = Finding("env", "fail", params["site"], reason="missing_env", names=missing).line() if missing else ""
    module.exit_json(changed=False, missing=missing, line=line)


if __name__ == "__main__":
    main()
