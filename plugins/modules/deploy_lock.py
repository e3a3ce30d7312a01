#!/usr/bin/python
# Copyright: opspack developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Take, release or read a site's deploy lock on its host."""

from __future__ import annotations

DOCUMENTATION = r"""
module: deploy_lock
short_description: Take, release or read the deploy lock of a site on its host
version_added: 0.1.0
author: opspack developers (@opspack)
description:
  - One deploy, rollback or maintenance change of a site at a time. The lock is a directory,
    C(<base_dir>/<site>/deploy.lock), made with one atomic C(mkdir); its C(holder.json) says
    who holds it (O(holder)), since when, for which version and why (O(reason)), and the
    run that took it (O(run_id)).
  - O(state=acquired) takes the lock, or fails naming the holder when another run holds it.
    Taking it again in the same run (same O(run_id)) changes nothing, so a play may re-enter.
  - A lock older than O(stale_after) seconds is reported as stale, and broken only when asked
    (O(break_stale=true)). A lock whose run is known to be gone (O(takeover_run_id), e.g. a run
    whose control process was killed on this control node) is taken over and reported.
  - O(state=released) releases the lock of this run; it refuses to release another run's lock
    unless O(force=true). Releasing a lock nobody holds changes nothing.
  - The lock covers one operation, so it tells it. Taking the lock returns a C(step) event in
    RV(opspack_event) (see the records callback); releasing it with O(outcome) returns the
    operation's event, timed from when the lock was taken.
  - O(state=status) only reads the lock.
options:
  site:
    description: The site whose lock this is.
    type: str
    required: true
  base_dir:
    description: Parent directory of the sites (the site lives in O(base_dir)/O(site)).
    type: path
    default: /srv
  state:
    description: Take the lock, release it, or only read it.
    type: str
    choices: [acquired, released, status]
    default: acquired
  run_id:
    description: Identifies the run taking or releasing the lock. Required unless O(state=status).
    type: str
  holder:
    description: Who takes the lock (operator and control node), written into the lock.
    type: str
    default: unknown
  version:
    description: The release the run deploys, written into the lock.
    type: str
    default: ""
  reason:
    description: Why the lock is taken (the operator's message), written into the lock.
    type: str
    default: ""
  operation:
    description: What the run does behind the lock, written into the lock (the records callback names the operation after it).
    type: str
    choices: [deploy, rollback]
    default: deploy
  stale_after:
    description: Age in seconds after which a held lock is reported as stale.
    type: int
    default: 3600
  break_stale:
    description: Break a stale lock held by another run and take it.
    type: bool
    default: false
  takeover_run_id:
    description:
      - The id of a run known to be gone; a lock held by exactly that run is taken over.
      - Use it only for a run whose process is known to have ended (the release role passes it
        for a run of the same control node whose process no longer exists).
    type: str
  wait:
    description: Seconds to wait for a lock held by another run before failing.
    type: int
    default: 0
  force:
    description: With O(state=released), release the lock even when another run holds it.
    type: bool
    default: false
  outcome:
    description:
      - With O(state=released), how the operation behind the lock ended, returned as its
        C(opspack_event) of kind C(operation). Keys C(result) (ok, failed, rolled back) and any of
        C(operation) (e.g. upgrade for a deploy that replaced a release), C(release), C(previous),
        C(version), C(git_sha), C(slot), C(step), C(reason), C(impact), C(actions),
        C(migrations), C(last_known_good).
      - The site, the operation and the release default to the lock's; the timings run from the
        moment the lock was taken.
    type: dict
attributes:
  check_mode:
    description: Can run in check_mode and return changed status prediction without modifying the target.
    support: full
    details: Reports whether the lock could be taken or released; changes nothing.
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in check_mode), when in diff mode.
    support: none
seealso:
  - module: opspack.platform.site_release
"""

EXAMPLES = r"""
- name: Take the blog's deploy lock
  opspack.platform.deploy_lock:
    site: blog
    run_id: "{{ release_run_id }}"
    holder: "{{ lookup('ansible.builtin.env', 'USER') }}@{{ lookup('ansible.builtin.pipe', 'hostname') }}"
    version: 1.4.2+0a1b2c3d4e5f
    reason: deploy

- name: Release it
  opspack.platform.deploy_lock:
    site: blog
    run_id: "{{ release_run_id }}"
    state: released
"""

RETURN = r"""
site:
  description: The site.
  returned: always
  type: str
acquired:
  description: Whether this run (O(run_id)) holds the lock after the module ran.
  returned: always
  type: bool
held:
  description: Whether the lock is held after the module ran (by this run or another).
  returned: always
  type: bool
holder:
  description: The lock's holder after the module ran (holder, run_id, version, operation, reason, since), or an empty dict.
  returned: always
  type: dict
broken:
  description: The holder of a stale or abandoned lock this run broke, or an empty dict.
  returned: always
  type: dict
stale:
  description: Whether the lock found was older than O(stale_after).
  returned: always
  type: bool
age_s:
  description: Age in seconds of the lock found (0 when there was none).
  returned: always
  type: int
path:
  description: The lock directory.
  returned: always
  type: str
opspack_event:
  description:
    - What changed, for the records (see the records callback). Taking the lock, a C(step)
      event (C(step=lock)) naming the operation and release and, when this run took over a lock,
      the run it C(interrupted); releasing it with O(outcome), the operation's event.
  returned: when the lock was taken or released with an outcome, not in check mode
  type: dict
  sample: {"kind": "operation", "site": "blog", "operation": "upgrade", "result": "ok",
           "release": "1.4.2+0a1b2c3d4e5f", "previous": "1.4.1+9f8e7d6c5b4a",
           "timings": {"started": "2026-12-05T10:00:00Z", "ended": "2026-12-05T10:01:10Z", "duration_s": 70.0}}
"""

import os
import shutil
import time

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.opspack.platform.plugins.module_utils.common import write_json_atomic
from ansible_collections.opspack.platform.plugins.module_utils.deploy_lock import HOLDER_FILE, lock_dir, read_holder
from ansible_collections.opspack.platform.plugins.module_utils.events import event, timings, utc_stamp


OUTCOME_FIELDS = ("result", "operation", "release", "previous", "version", "git_sha", "slot", "step", "reason",
                  "impact", "actions", "migrations", "last_known_good")


def taken_event(site: str, mine: dict, broken: dict) -> dict:
    interrupted = {key: broken.get(key) for key in ("operation", "version", "holder", "run_id", "since")} if broken else {}
    if interrupted:
        interrupted["release"] = interrupted.pop("version")
    return event("step", site, mine["operation"], "done", step="lock", release=mine["version"],
                 timings={"started": mine["since"]}, interrupted={key: value for key, value in interrupted.items() if value})


def outcome_event(module: AnsibleModule, holder: dict) -> dict:
    """The operation the lock covered, as the run says it ended."""
    outcome = module.params["outcome"]
    unknown = sorted(set(outcome) - set(OUTCOME_FIELDS))
    if unknown:
        module.fail_json(msg=f"outcome has fields deploy_lock does not know: {', '.join(unknown)} "
                             f"(known: {', '.join(OUTCOME_FIELDS)}); the lock was left in place")
    fields = {key: value for key, value in outcome.items() if key not in ("result", "operation")}
    fields.setdefault("release", holder.get("version"))
    try:
        return event("operation", module.params["site"], outcome.get("operation") or holder.get("operation") or "deploy",
                     outcome.get("result") or "ok", timings=timings(holder.get("since")), **fields)
    except ValueError as exc:
        module.fail_json(msg=f"outcome is not a valid opspack_event: {exc}; the lock was left in place")


def describe(holder: dict, age: int) -> str:
    parts = [f"held by {holder.get('holder') or 'unknown'}", f"since {holder.get('since') or '?'} ({age} s ago)"]
    if holder.get("version"):
        parts.append(f"for {holder['version']}")
    if holder.get("reason"):
        parts.append(f"({holder['reason']})")
    if holder.get("run_id"):
        parts.append(f"run {holder['run_id']}")
    return " ".join(parts)


def acquire(module: AnsibleModule, path: str, result: dict) -> None:
    params = module.params
    mine = {"holder": params["holder"], "run_id": params["run_id"], "version": params["version"],
            "operation": params["operation"], "reason": params["reason"], "since": utc_stamp()}
    deadline = time.monotonic() + max(params["wait"], 0)
    while True:
        holder, age = read_holder(path)
        if not os.path.isdir(path):
            if module.check_mode:
                result.update(changed=True, held=True, holder=mine)
                return
            try:
                os.mkdir(path, 0o700)
            except FileExistsError:
                continue  # another run made it between our look and our mkdir: read it again
            write_json_atomic(os.path.join(path, HOLDER_FILE), mine, 0o600)
            result.update(changed=True, held=True, holder=mine, opspack_event=taken_event(params["site"], mine, result["broken"]))
            return
        result.update(stale=age > params["stale_after"], age_s=age)
        if holder.get("run_id") and holder["run_id"] == params["run_id"]:
            result.update(held=True, holder=holder)
            return
        abandoned = bool(params["takeover_run_id"]) and holder.get("run_id") == params["takeover_run_id"]
        if abandoned or (result["stale"] and params["break_stale"]):
            result["broken"] = holder
            if module.check_mode:
                result.update(changed=True, held=True, holder=mine)
                return
            # Rename first, so that two runs breaking the same lock cannot both take it.
            graveyard = f"{path}.broken.{os.getpid()}.{time.time_ns()}"
            try:
                os.rename(path, graveyard)
            except FileNotFoundError:
                continue
            shutil.rmtree(graveyard, ignore_errors=True)
            continue
        if time.monotonic() < deadline:
            time.sleep(1)
            continue
        result.update(held=True, holder=holder)
        hint = (" It is stale: if that run is gone, run again with the lock broken on request"
                " (deploy_lock break_stale / release_break_stale_lock=true).") if result["stale"] else ""
        module.fail_json(msg=f"The deploy lock of site {params['site']} is {describe(holder, age)}; "
                             f"nothing was changed.{hint}", **result)


def release(module: AnsibleModule, path: str, result: dict) -> None:
    holder, age = read_holder(path)
    result.update(age_s=age, stale=age > module.params["stale_after"] if holder else False)
    if not os.path.isdir(path):
        return
    if holder.get("run_id") != module.params["run_id"] and not module.params["force"]:
        module.fail_json(msg=f"The deploy lock of site {module.params['site']} is {describe(holder, age)}, "
                             "not by this run: it was left in place.", held=True, holder=holder, **{
                                 key: value for key, value in result.items() if key not in ("held", "holder")})
    outcome = outcome_event(module, holder) if module.params["outcome"] is not None else None
    result.update(changed=True, held=False, holder={})
    if holder.get("run_id") != module.params["run_id"]:
        result["broken"] = holder
    if not module.check_mode:
        shutil.rmtree(path)
        if outcome:
            result["opspack_event"] = outcome


def main() -> None:
    module = AnsibleModule(
        argument_spec=dict(
            site=dict(type="str", required=True),
            base_dir=dict(type="path", default="/srv"),
            state=dict(type="str", choices=["acquired", "released", "status"], default="acquired"),
            run_id=dict(type="str"),
            holder=dict(type="str", default="unknown"),
            version=dict(type="str", default=""),
            reason=dict(type="str", default=""),
            operation=dict(type="str", default="deploy", choices=["deploy", "rollback"]),
            stale_after=dict(type="int", default=3600),
            break_stale=dict(type="bool", default=False),
            takeover_run_id=dict(type="str"),
            wait=dict(type="int", default=0),
            force=dict(type="bool", default=False),
            outcome=dict(type="dict"),
        ),
        required_if=[("state", "acquired", ["run_id"]), ("state", "released", ["run_id"])],
        supports_check_mode=True,
    )
    site_dir = os.path.join(module.params["base_dir"], module.params["site"])
    path = lock_dir(site_dir)
    result = dict(changed=False, site=module.params["site"], acquired=False, held=False, holder={}, broken={}, stale=False, age_s=0, path=path)
    if not os.path.isdir(site_dir):
        module.fail_json(msg=f"Site {module.params['site']} has no directory {site_dir} on this host: "
                             "is it provisioned (app_runtime_sites)?", **result)
    state = module.params["state"]
    if state == "acquired":
        acquire(module, path, result)
    elif state == "released":
        release(module, path, result)
    else:
        holder, age = read_holder(path)
        result.update(held=bool(holder), holder=holder, age_s=age, stale=bool(holder) and age > module.params["stale_after"])
    result["acquired"] = bool(result["held"]) and result["holder"].get("run_id") == module.params["run_id"] and state != "status"
    module.exit_json(**result)


if __name__ == "__main__":
    main()
