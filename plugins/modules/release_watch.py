#!/usr/bin/python
# Copyright: opspack developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Watch a new release's live traffic in nginx's access log after a deploy, against the release before it."""

from __future__ import annotations

DOCUMENTATION = r"""
module: release_watch
short_description: Watch a new release's 5xx rate and p95 after a deploy, against the release before it
version_added: 0.2.0
author: opspack developers (@opspack)
description:
  - After a deploy's switch and smoke tests, follows nginx's access log (the C(opspack) log
    format of the nginx role) for O(minutes) and judges the requests the new release's slot
    answered (by C($upstream_addr)) against the site's thresholds and the baseline of the
    release before it (its slot's requests in the O(baseline_minutes) before the watch).
  - Fails, naming the figure, as soon as the new release is worse than its threshold and more than
    O(factor) times worse than the baseline, on at least O(min_requests) requests (a 5xx rate also
    on at least O(min_errors) errors), so that a few early requests never decide. In the release
    flow, that failure undoes the deploy as any failed stage does (traffic back, migrations
    reverted, an incident in the records).
  - Passes at the end of the window; with fewer than O(min_requests) requests, or when the log
    cannot be read, it passes and says that nothing was judged (a watch that broke is no verdict
    on the release).
  - Changes nothing; in check mode it does not watch.
options:
  site:
    description: The site, as named in the result and messages.
    type: str
    required: true
  domains:
    description: The site's names (nginx's C($host) of its requests).
    type: list
    elements: str
    required: true
  slot_address:
    description: The new release's slot as nginx's C($upstream_addr) names it (C(127.0.0.1:PORT)).
    type: str
    required: true
  previous_address:
    description: The slot of the release before it; without it there is no baseline and the thresholds alone judge.
    type: str
    default: ""
  minutes:
    description: How long to watch.
    type: float
    required: true
  interval:
    description: Seconds between two reads of the log.
    type: float
    default: 5
  error_rate_percent:
    description: The site's 5xx rate threshold, in percent of requests.
    type: float
    default: 0.5
  p95_seconds:
    description: The site's p95 response time threshold, in seconds.
    type: float
    default: 2
  min_requests:
    description: Requests of the new release needed before anything is judged.
    type: int
    default: 50
  min_errors:
    description: 5xx answers needed before a 5xx rate is judged.
    type: int
    default: 3
  factor:
    description: How many times worse than the baseline a figure must be to count against the new release.
    type: float
    default: 2
  baseline_minutes:
    description: The stretch before the watch whose requests to the previous slot make the baseline.
    type: float
    default: 60
  nginx_logs:
    description: nginx's access logs, oldest first; the last one is followed during the watch.
    type: list
    elements: path
    default: [/var/log/nginx/access.log.1, /var/log/nginx/access.log]
attributes:
  check_mode:
    description: Can run in check_mode and return changed status prediction without modifying the target.
    support: full
    details: In check mode it does not watch.
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in check_mode), when in diff mode.
    support: none
seealso:
  - module: opspack.platform.health_check
"""

EXAMPLES = r"""
- name: Watch the new release for five minutes
  opspack.platform.release_watch:
    site: blog
    domains: [blog.example.com]
    slot_address: 127.0.0.1:8001
    previous_address: 127.0.0.1:8000
    minutes: 5
"""

RETURN = r"""
watched:
  description: The new release's figures over the watch (requests, errors_5xx, error_rate_percent, p95_seconds).
  returned: always
  type: dict
baseline:
  description: The release before it, over baseline_minutes before the watch.
  returned: always
  type: dict
judged:
  description: Whether the new release had min_requests requests to be judged on.
  returned: always
  type: bool
breach:
  description: Why the new release was judged worse (empty when it was not).
  returned: always
  type: str
seconds:
  description: How long the watch ran.
  returned: always
  type: float
"""

import time

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.opspack.platform.plugins.module_utils.health import LogFollower, Window, log_requests, watch_breach


def main() -> None:
    module = AnsibleModule(
        argument_spec=dict(
            site=dict(type="str", required=True),
            domains=dict(type="list", elements="str", required=True),
            slot_address=dict(type="str", required=True),
            previous_address=dict(type="str", default=""),
            minutes=dict(type="float", required=True),
            interval=dict(type="float", default=5),
            error_rate_percent=dict(type="float", default=0.5),
            p95_seconds=dict(type="float", default=2),
            min_requests=dict(type="int", default=50),
            min_errors=dict(type="int", default=3),
            factor=dict(type="float", default=2),
            baseline_minutes=dict(type="float", default=60),
            nginx_logs=dict(type="list", elements="path", default=["/var/log/nginx/access.log.1", "/var/log/nginx/access.log"]),
        ),
        supports_check_mode=True,
    )
    params = module.params
    new, baseline = Window(), Window()
    result = dict(changed=False, site=params["site"], judged=False, breach="", seconds=0.0)
    if module.check_mode or params["minutes"] <= 0:
        module.exit_json(watched=new.figures(), baseline=baseline.figures(), **result)
    domains = {domain.lower(): params["site"] for domain in params["domains"]}
    started = time.time()
    deadline = time.monotonic() + params["minutes"] * 60
    since = started - params["baseline_minutes"] * 60

    def count(lines, first_read):
        for _site, moment, status, seconds, upstream in log_requests(lines, domains):
            if upstream == params["slot_address"] and moment >= started - 1:
                new.add(status, seconds)
            elif first_read and params["previous_address"] and upstream == params["previous_address"] and since <= moment < started:
                baseline.add(status, seconds)

    *older, current = params["nginx_logs"]
    follower = LogFollower(current)
    breach = ""
    try:
        for path in older:
            try:
                with open(path, encoding="utf-8", errors="replace") as handle:
                    count(handle, True)
            except FileNotFoundError:
                pass
        count(follower.lines(), True)
        while True:
            breach = watch_breach(new, baseline, params["error_rate_percent"], params["p95_seconds"],
                                  params["min_requests"], params["min_errors"], params["factor"])
            if breach or time.monotonic() >= deadline:
                break
            time.sleep(max(0.5, min(params["interval"], deadline - time.monotonic())))
            count(follower.lines(), False)
    except (OSError, ValueError) as exc:
        # The watch itself broke (an unreadable log): that says nothing against the release, which
        # passed its health gate and smoke tests; say so rather than undo it.
        result.update(seconds=round(time.time() - started, 1), watched=new.figures(), baseline=baseline.figures())
        module.warn(f"release watch of {params['site']} could not read nginx's log ({type(exc).__name__}): not judged")
        module.exit_json(**result)
    finally:
        follower.close()
    result.update(judged=new.requests >= params["min_requests"], breach=breach, seconds=round(time.time() - started, 1),
                  watched=new.figures(), baseline=baseline.figures())
    if breach:
        module.fail_json(msg=f"the new release of {params['site']}: {breach}, within {result['seconds']:.0f} s of the "
                             f"{params['minutes']:g} minute watch", **result)
    if not result["judged"]:
        module.warn(f"release watch of {params['site']}: {new.requests} request(s) in {params['minutes']:g} minutes, fewer "
                    f"than {params['min_requests']}: not judged")
    module.exit_json(**result)


if __name__ == "__main__":
    main()
