# Copyright: opspack developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Judge one host's full verification on the control node and hand the records one event per
site (module_utils/verification.py holds the judgement)."""

from __future__ import annotations

import datetime

from ansible.plugins.action import ActionBase

from ansible_collections.opspack.platform.plugins.module_utils.events import timings, utc_stamp
from ansible_collections.opspack.platform.plugins.module_utils.verification import DRILL_MAX_AGE_DAYS, judge, line, site_events


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _VALID_ARGS = frozenset(("host_checks", "smoke", "drift", "drift_error", "drills", "sites", "started",
                             "drill_max_age_days"))

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        args = self._task.args
        host = (task_vars or {}).get("inventory_hostname", "host")
        sites = [str(site) for site in args.get("sites") or []]
        drills = {entry["site"]: entry for entry in args.get("drills") or [] if isinstance(entry, dict) and entry.get("site")}
        now = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
        checks = judge(args.get("host_checks") or [], dict(args.get("smoke") or {}), args.get("drift"),
                       str(args.get("drift_error") or ""), drills, sites, now,
                       float(args["drill_max_age_days"]) if args.get("drill_max_age_days") is not None else DRILL_MAX_AGE_DAYS)
        failed = [check for check in checks if check["status"] == "fail"]
        warned = [check for check in checks if check["status"] == "warn"]
        when = timings(args.get("started") or None, utc_stamp(now))
        summary = f"verify {host}: {'PASS' if not failed else 'FAIL'} ({len(checks)} checks, {len(failed)} failed, {len(warned)} warnings)"
        result.update(
            changed=False, passed=not failed, checks=checks,
            lines=[line(host, check) for check in checks if check["status"] != "pass"] + [summary],
            # The records callback keeps it as the host's last verification (opspack verify prints it).
            opspack_report={"tool": "verify", "generated_at": utc_stamp(now), "status": "fail" if failed else "pass",
                            "summary": summary, "checks": checks},
            # One event per site, as a loop's results: the records callback reads each.
            results=[{"opspack_event": told, "site": told["site"]} for told in site_events(checks, sites, when)])
        return result
