# Copyright: opspack developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The full verification's judgement of one host: the host's own checks (prod_verify verify),
each site's smoke tests from the control node, the configuration drift of a check-mode converge
and the last restore drills in the records, as one list of checks, each pass, warn or fail with
a one-line reason, and one records event per site (opspack.platform.verify_report)."""

from __future__ import annotations

import datetime
import re

from ansible_collections.opspack.platform.plugins.module_utils.events import TIME_FORMAT, event

# prod_verify's statuses as the verification reports them.
STATUS = {"ok": "pass", "warn": "warn", "fail": "fail", "error": "fail", "insufficient_data": "warn", "skipped": "warn"}
SEVERITY_ORDER = ("P1", "P2", "P3", "P4")
DRILL_MAX_AGE_DAYS = 30
# What the verify role hands over as drift_error when the drift check is switched off.
DRIFT_OFF = "switched off"


# What identifies a host or a visitor on the wire never reaches a report line (they are pasted
# into tickets and chats): URLs and addresses in the messages of the checks are replaced.
REDACTIONS = (
    (re.compile(r"\b[a-z][a-z0-9+.-]*://[^\s;,)]+", re.IGNORECASE), "<url>"),
    (re.compile(r"\[[0-9a-f:.]+\](?::\d+)?", re.IGNORECASE), "<address>"),
    (re.compile(r"\b(?:\d{1,3}\.){3}\d{1,3}(?::\d+)?\b"), "<address>"),
    # IPv6: the full eight groups, or a compressed form with "::" (never a time such as 09:14:04).
    (re.compile(r"(?<![\w:])(?:(?:[0-9a-f]{1,4}:){7}[0-9a-f]{1,4}"
                r"|(?:[0-9a-f]{1,4}(?::[0-9a-f]{1,4})*)?::(?:[0-9a-f]{1,4}(?::[0-9a-f]{1,4})*)?)(?![\w:])",
                re.IGNORECASE), "<address>"),
)


def redact(text: str) -> str:
    for pattern, replacement in REDACTIONS:
        text = pattern.sub(replacement, text)
    return text


def _reason(check: dict) -> str:
    words = [check.get("reason") or ""]
    if check.get("names"):
        words.append("(" + ", ".join(str(name) for name in check["names"]) + ")")
    if check.get("value") is not None and check.get("threshold") is not None and check.get("status") != "ok":
        words.append(f"{check['value']} > {check['threshold']}")
    return " ".join(word for word in words if word).strip()


def _age_days(stamp: str, now: datetime.datetime):
    try:
        then = datetime.datetime.strptime(stamp, TIME_FORMAT).replace(tzinfo=datetime.timezone.utc)
    except (TypeError, ValueError):
        return None
    return (now - then).total_seconds() / 86400


def _check(check: str, site: str, status: str, reason: str = "", severity: str = "") -> dict:
    return {"check": check, "site": site, "status": status, "reason": reason, "severity": severity}


def _drill(site: str, drill: dict | None, now: datetime.datetime, max_age_days: float) -> dict:
    if not drill:
        return _check("drill", site, "warn", "no restore drill recorded")
    if drill.get("result") != "pass":
        return _check("drill", site, "fail", f"last restore drill {drill.get('result') or 'unknown'} ({drill.get('time', '?')})", "P2")
    days = _age_days(drill.get("time", ""), now)
    if days is None or days > max_age_days:
        return _check("drill", site, "warn", f"last restore drill is {days or 0:.0f} days old (> {max_age_days:g})")
    return _check("drill", site, "pass")


def _drift(drift: dict | None, drift_error: str) -> dict:
    if drift is None and drift_error == DRIFT_OFF:
        return _check("drift", "", "warn", "not checked (verify_drift_enabled is false)")
    if drift is None:
        return _check("drift", "", "fail", redact(f"could not check: {drift_error or 'no check run'}"), "P3")
    if drift.get("failed"):
        return _check("drift", "", "fail", f"the check converge failed on {drift['failed']} task(s)", "P3")
    changed = int(drift.get("changed", 0))
    if changed:
        return _check("drift", "", "fail", f"provisioning would change {changed} thing(s): " + "; ".join(drift.get("tasks", [])), "P3")
    return _check("drift", "", "pass")


def judge(host_checks, smoke: dict, drift: dict | None, drift_error: str, drills: dict, sites: list[str],
          now: datetime.datetime, drill_max_age_days: float = DRILL_MAX_AGE_DAYS) -> list[dict]:
    """Every check of the host as {check, site, status (pass|warn|fail), reason, severity}."""
    found = []
    for check in host_checks or []:
        if check.get("check") in ("database",):  # figures, not a verdict
            continue
        status = STATUS.get(check.get("status"), "fail")
        reason = _reason(check) if status != "pass" else ""
        if check.get("status") == "error":
            reason = f"could not check: {check.get('reason') or 'error'}"
        found.append(_check(check.get("check"), check.get("site") or "", status, reason, check.get("severity") or ""))
    for site in sites:
        problems = smoke.get(site)
        if problems is None:
            found.append(_check("smoke", site, "fail", "could not check: smoke tests did not run", "P2"))
        elif problems:
            found.append(_check("smoke", site, "fail", redact("; ".join(str(problem) for problem in problems)), "P2"))
        else:
            found.append(_check("smoke", site, "pass"))
        found.append(_drill(site, drills.get(site), now, drill_max_age_days))
    found.append(_drift(drift, drift_error))
    return found


def worst_severity(checks) -> str:
    severities = [check["severity"] for check in checks if check["status"] == "fail" and check.get("severity") in SEVERITY_ORDER]
    return min(severities, key=SEVERITY_ORDER.index) if severities else ""


def line(host: str, check: dict) -> str:
    where = f"{check['site']}@{host}" if check["site"] else host
    return f"{check['status'].upper():4} {where} {check['check']}" + (f": {check['reason']}" if check["reason"] else "")


def site_events(checks, sites: list[str], timings: dict) -> list[dict]:
    """One records event per site: fail when the site's own checks or the host's fail."""
    events = []
    for site in sites:
        own = [check for check in checks if check["site"] in ("", site)]
        failed = [check for check in own if check["status"] == "fail"]
        fields = {"timings": timings}
        if failed:
            fields["reason"] = f"{len(failed)} check(s) failed: " + ", ".join(
                f"{check['check']}" + (f"@{check['site']}" if check["site"] else "") for check in failed)
            fields["severity"] = worst_severity(failed) or "P3"
            fields["step"] = "full verification"
            fields["impact"] = "found by the verification, which only reads: see each failed check's reason (opspack verify)"
        events.append(event("operation", site, "verify", "fail" if failed else "pass", **fields))
    return events
