#!/usr/bin/python
# Copyright: opspack developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Switch a site's maintenance mode: the flag file the nginx role's configuration looks for."""

from __future__ import annotations

DOCUMENTATION = r"""
module: site_maintenance
short_description: Switch a site's maintenance mode on or off (the nginx role's flag file)
version_added: 0.1.0
author: opspack developers (@opspack)
description:
  - The nginx role makes each site answer C(503) with C(Retry-After) and the maintenance page
    while a flag file exists, except for health paths and allow-listed addresses. This module
    creates or removes that file; nginx needs no reload (it tests for the file per request).
  - The flag is written under a temporary name and renamed, so nginx never sees half a file.
    A site already in maintenance stays in it when switched on again (its note is kept).
  - Reports whether the site was in maintenance before, so that a caller that switched it on
    (a restore, a cutover) switches off only what it switched on.
  - A switch that changed the mode, or failed to, is told to the records as an C(opspack_event)
    (operation C(maintenance)); a site already in the mode asked for, and check mode, tell nothing.
options:
  site:
    description: The site (written into the result for the records).
    type: str
    required: true
  state:
    description: V(on) creates the flag, V(off) removes it.
    type: str
    choices: ["on", "off"]
    default: "on"
  flag:
    description: Path of the site's flag file (the nginx role's C(nginx_maintenance_base_dir)/<site>/C(maintenance.on) by default).
    type: path
    required: true
  note:
    description: Why the site is in maintenance, written into the flag file (never shown to visitors).
    type: str
    default: maintenance
notes:
  - Check mode reports what would change and changes nothing; C(--diff) shows the flag's note.
"""

EXAMPLES = r"""
- name: Put the blog in maintenance for the cutover
  opspack.platform.site_maintenance:
    site: blog
    flag: /var/lib/opspack/maintenance/blog/maintenance.on
    note: cutover to 2.0.0 by ann

- name: Bring it back
  opspack.platform.site_maintenance:
    site: blog
    state: "off"
    flag: /var/lib/opspack/maintenance/blog/maintenance.on
"""

RETURN = r"""
site:
  description: The site.
  returned: always
  type: str
  sample: blog
maintenance:
  description: The site's maintenance mode after the module ran (V(on) or V(off)).
  returned: always
  type: str
  sample: "on"
was_on:
  description: Whether the site was in maintenance before the module ran.
  returned: always
  type: bool
  sample: false
since:
  description: When the flag was written (UTC, ISO 8601), or an empty string when the site is not in maintenance.
  returned: always
  type: str
  sample: "2026-12-01T21:30:00Z"
opspack_event:
  description:
    - What changed, for the records (see the records callback). An C(operation) event
      (C(operation=maintenance)) with the C(maintenance) mode asked for and C(result) C(ok), or
      C(failed) with the C(step), C(reason), C(impact) and C(actions) of the failure.
  returned: when the mode changed or failed to change, not in check mode
  type: dict
  sample: {"kind": "operation", "site": "blog", "operation": "maintenance", "result": "ok", "maintenance": "on"}
"""

import datetime
import os

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.opspack.platform.plugins.module_utils.common import makedirs_mode, write_bytes_atomic
from ansible_collections.opspack.platform.plugins.module_utils.events import event


def since(path: str) -> str:
    try:
        stamp = os.stat(path).st_mtime
    except FileNotFoundError:
        return ""
    return datetime.datetime.fromtimestamp(stamp, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def main() -> None:
    module = AnsibleModule(
        argument_spec=dict(
            site=dict(type="str", required=True),
            state=dict(type="str", default="on", choices=["on", "off"]),
            flag=dict(type="path", required=True),
            note=dict(type="str", default="maintenance"),
        ),
        supports_check_mode=True,
    )
    params = module.params
    flag, wanted_on = params["flag"], params["state"] == "on"
    was_on = os.path.exists(flag)
    result = dict(site=params["site"], was_on=was_on, changed=was_on != wanted_on,
                  maintenance=params["state"])
    if module._diff and result["changed"]:
        note = params["note"].strip() + "\n"
        result["diff"] = dict(before="" if wanted_on else "(flag present)\n", after=note if wanted_on else "",
                              before_header=flag, after_header=flag)
    if result["changed"] and not module.check_mode:
        try:
            if wanted_on:
                makedirs_mode(os.path.dirname(flag), 0o755)
                write_bytes_atomic(flag, (params["note"].strip() + "\n").encode("utf-8"), 0o644)
            else:
                os.unlink(flag)
        except OSError as exc:
            msg = f"could not switch maintenance {params['state']} for {params['site']} ({flag}): {exc}"
            module.fail_json(msg=msg, opspack_event=event(
                "operation", params["site"], "maintenance", "failed", maintenance=params["state"],
                step=f"switch maintenance {params['state']}", reason=msg,
                impact=f"maintenance mode did not switch {params['state']}", actions="nothing changed"), **result)
        result["opspack_event"] = event("operation", params["site"], "maintenance", "ok", maintenance=params["state"])
    result["since"] = since(flag) if wanted_on and not module.check_mode else ""
    module.exit_json(**result)


if __name__ == "__main__":
    main()
