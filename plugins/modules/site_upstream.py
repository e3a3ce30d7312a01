#!/usr/bin/python
# Copyright: opspack developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Point a site's nginx upstream at one release slot, atomically, and reload nginx."""

from __future__ import annotations

DOCUMENTATION = r"""
module: site_upstream
short_description: Switch a site's traffic to a release slot (nginx upstream, atomic, graceful reload)
version_added: 0.1.0
author: opspack developers (@opspack)
description:
  - Rewrites C(/etc/nginx/conf.d/opspack-upstream-<site>.conf) (the file the
    M(opspack.platform.site_release) lifecycle owns once the nginx role has written it) so
    that the site's upstream is C(127.0.0.1:<port>) of the slot given, then checks the whole
    configuration with C(nginx -t) and reloads nginx gracefully (workers finish the requests
    they hold; new requests go to the new slot).
  - The new file is written beside the old one under a name nginx does not read, then renamed
    over it, so nginx never sees half a file. When C(nginx -t) fails the old file is put back
    and nothing is reloaded.
  - Reports the port and slot that had the traffic before, so that a caller can switch back.
  - With O(health_url), traffic never moves to a slot that does not answer healthy.
  - A switch that moved the traffic, or failed to, is told as a C(step) event (C(step=switch), see
    the records callback) in its C(opspack_event).
options:
  site:
    description: The site.
    type: str
    required: true
  port:
    description: Port on 127.0.0.1 of the slot that gets the traffic.
    type: int
    required: true
  slot:
    description: Name of the slot (written into the file as a comment and returned).
    type: str
    required: true
  conf_dir:
    description: nginx's directory of included configuration files.
    type: path
    default: /etc/nginx/conf.d
  reload:
    description: Reload nginx after a change.
    type: bool
    default: true
  health_url:
    description:
      - An C(http://) URL of the slot on this host (such as C(http://127.0.0.1:8001/health/ready)) that
        must answer 200 before traffic moves; otherwise nothing changes and the module fails. Empty checks nothing.
      - Asked with the standard library's HTTP client (no proxy, no redirects), because the switch is
        on the rollback's critical path and the heavier URL helpers cost a tenth of a second to load.
    type: str
    default: ""
  health_timeout:
    description: Seconds the health request may take.
    type: int
    default: 5
attributes:
  check_mode:
    description: Can run in check_mode and return changed status prediction without modifying the target.
    support: full
    details: Reports whether the traffic would move; writes nothing.
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in check_mode), when in diff mode.
    support: full
seealso:
  - module: opspack.platform.site_release
"""

EXAMPLES = r"""
- name: Send the blog's traffic to the green slot
  opspack.platform.site_upstream:
    site: blog
    slot: green
    port: 8001
"""

RETURN = r"""
slot:
  description: The slot that has the traffic now.
  returned: always
  type: str
port:
  description: The port that has the traffic now.
  returned: always
  type: int
previous_slot:
  description: The slot that had it before (empty when unknown).
  returned: always
  type: str
previous_port:
  description: The port that had it before (0 when unknown).
  returned: always
  type: int
health_status:
  description: HTTP status O(health_url) answered (0 when unreachable; absent when not asked).
  returned: when O(health_url) is given
  type: int
duration_s:
  description: Seconds from the start of the switch to nginx reloaded.
  returned: always
  type: float
opspack_event:
  description:
    - What changed, for the records (see the records callback). A C(step) event (C(step=switch))
      naming the O(site) and the O(slot) the traffic was sent to, with C(result=done), or
      C(result=failed) and the C(reason).
    - Its C(operation) is empty - the module does not know whether it serves a deploy or a
      rollback; the deploy lock's events say.
  returned: when the traffic moved or the switch failed, not in check mode
  type: dict
  sample: {"kind": "step", "site": "blog", "step": "switch", "result": "done", "slot": "green"}
"""

import os
import re
import http.client
import time
import urllib.parse

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.opspack.platform.plugins.module_utils.common import SITE_NAME
from ansible_collections.opspack.platform.plugins.module_utils.events import event, tell_failures
from ansible_collections.opspack.platform.plugins.module_utils.site_state import (
    render_upstream, upstream_path, upstream_port, upstream_slot)


def health(url: str, timeout: int) -> int:
    """The status the slot answers with, 0 when it does not answer."""
    parts = urllib.parse.urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port or 80, timeout=timeout)
    try:
        connection.request("GET", (parts.path or "/") + ("?" + parts.query if parts.query else ""))
        return connection.getresponse().status
    except (OSError, http.client.HTTPException):
        return 0
    finally:
        connection.close()


def run(module: AnsibleModule, args: list[str]) -> tuple[int, str, str]:
    """run_command, with a program that cannot start as a failed one (rc 127): the new file is then
    put back like one nginx refused, never left in place by Ansible's own failure."""
    try:
        return module.run_command(args, handle_exceptions=False)
    except OSError as exc:
        return 127, "", f"{args[0]} could not run: {exc}"


def main() -> None:
    module = AnsibleModule(
        argument_spec=dict(
            site=dict(type="str", required=True),
            port=dict(type="int", required=True),
            slot=dict(type="str", required=True),
            conf_dir=dict(type="path", default="/etc/nginx/conf.d"),
            reload=dict(type="bool", default=True),
            health_url=dict(type="str", default=""),
            health_timeout=dict(type="int", default=5),
        ),
        supports_check_mode=True,
    )
    started = time.monotonic()
    site, slot, port = module.params["site"], module.params["slot"], module.params["port"]

    # Every failure, Ansible's own included, tells the records it (not in check mode).
    tell_failures(module, lambda msg: event("step", site, "", "failed", step="switch", slot=slot, reason=msg))

    if not re.fullmatch(SITE_NAME, site) or not re.fullmatch(SITE_NAME, slot) or not 0 < port < 65536:
        module.fail_json(msg=f"site {site!r}, slot {slot!r} or port {port} is not valid")
    path = upstream_path(module.params["conf_dir"], site)
    try:
        with open(path, encoding="utf-8") as handle:
            before = handle.read()
    except FileNotFoundError:
        module.fail_json(msg=f"{path} does not exist: nginx has not been provisioned for site {site} (nginx_sites)")
    wanted = render_upstream(site, slot, port)
    result = dict(changed=before != wanted, slot=slot, port=port,
                  previous_slot=upstream_slot(before), previous_port=upstream_port(before))
    if module._diff:
        result["diff"] = dict(before=before, after=wanted, before_header=path, after_header=path)
    if module.params["health_url"] and not module.params["health_url"].startswith("http://"):
        module.fail_json(msg=f"health_url must be an http:// URL of the slot on this host, not {module.params['health_url']!r}")
    if module.params["health_url"] and not module.check_mode:
        result["health_status"] = health(module.params["health_url"], module.params["health_timeout"])
        if result["health_status"] != 200:
            module.fail_json(msg=f"slot {slot} does not answer healthy ({module.params['health_url']} gave "
                                 f"{result['health_status'] or 'no answer'}): traffic was not moved", **result)
    if not result["changed"] or module.check_mode:
        module.exit_json(duration_s=round(time.monotonic() - started, 3), **result)
    temporary = os.path.join(module.params["conf_dir"], f".opspack-upstream-{site}.conf.new")
    backup = os.path.join(module.params["conf_dir"], f".opspack-upstream-{site}.conf.old")
    with open(temporary, "w", encoding="utf-8") as handle:
        handle.write(wanted)
        handle.flush()
        os.fsync(handle.fileno())
    os.chmod(temporary, 0o644)
    with open(backup, "w", encoding="utf-8") as handle:
        handle.write(before)
    os.replace(temporary, path)
    rc, out, err = run(module, ["nginx", "-t", "-q"])
    if rc != 0:
        os.replace(backup, path)
        module.fail_json(msg=f"nginx -t refused the new upstream of {site}; the old one was put back and nginx "
                             f"was not reloaded: {(err or out).strip()[-500:]}", **result)
    if module.params["reload"]:
        rc, out, err = run(module, ["systemctl", "reload", "nginx"])
        if rc != 0:
            # nginx still serves the old upstream: the file must say so too, or the next reload
            # (or the next run reading it) would take a slot that never got the traffic.
            os.replace(backup, path)
            module.fail_json(msg=f"systemctl reload nginx failed; the old upstream was put back and traffic did not move: "
                                 f"{(err or out).strip()[-500:]}", **result)
    os.unlink(backup)
    result["opspack_event"] = event("step", site, "", "done", step="switch", slot=slot)
    module.exit_json(duration_s=round(time.monotonic() - started, 3), **result)


if __name__ == "__main__":
    main()
