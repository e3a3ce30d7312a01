# Copyright: opspack developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""opspack_event: what a module that changes a site's state did, said once, in its result.

Every module that changes a site's state returns one event under the result key
``opspack_event`` (also when it fails: ``fail_json(msg=..., opspack_event=...)``). The records
callback writes what these events say and nothing else; it never reads task names or guesses
from a result without one. Two kinds:

- ``operation``: a whole operation ended (a deploy, upgrade or rollback, told by the deploy lock
  when it is released with the run's outcome; a maintenance switch, a restore, a backup, a
  drill, a release gate's verdict). The callback writes one history line per operation event, and
  an incident entry when its result is not ``ok``/``pass`` (not for a gate: a release refused
  before any host was touched broke nothing).
- ``step``: one step of an operation behind the deploy lock (lock taken, unpack, migrate,
  switch, record, prune). The callback keeps the last one per host and site only to name where
  a run stopped when it ended without the operation's event (the lock still held).

Fields (only these; empty ones are dropped):
  kind, site, operation, result, release, previous, version, git_sha, slot, step, reason,
  impact, actions, migrations {version, applied, reverted}, timings {started, ended, duration_s},
  last_known_good {release_id, slot, config_hash}, backup_id, backup_ended_at, engine, rto_s,
  rpo_s, maintenance, interrupted {operation, release, holder, run_id, since}, severity.

An incident's severity (the runbooks' P1-P4) is the event's `severity` when it gives one, else
incident_severity() of its operation and result; escalation() names who hears of it (the
channels of the health checks' alerts).
"""

from __future__ import annotations

import datetime

KINDS = ("operation", "step")
OPERATIONS = ("deploy", "upgrade", "rollback", "maintenance", "restore", "backup", "drill", "verify", "gate")
# Results of an operation event: the records' result column.
OPERATION_RESULTS = ("ok", "failed", "rolled back", "interrupted", "pass", "fail")
STEP_RESULTS = ("done", "failed")
FIELDS = ("kind", "site", "operation", "result", "release", "previous", "version", "git_sha", "slot", "step",
          "reason", "impact", "actions", "migrations", "timings", "last_known_good", "backup_id",
          "backup_ended_at", "engine", "rto_s", "rpo_s", "maintenance", "interrupted", "severity")
SEVERITIES = ("P1", "P2", "P3", "P4")
# Who hears of each severity: the health checks' alert channels (health.py runs alone on the host
# and keeps its own copy; a unit test keeps the two the same).
CHANNELS = {"P1": "page", "P2": "page", "P3": "notify", "P4": "log"}
# What a failed operation means for the people on call: P1 the site's data or what serves is in
# doubt, P2 the site is degraded or unprotected (a release blocked or undone, no fresh backup),
# P3 a chore failed with the site unharmed.
UNDONE_UNKNOWN = "unknown: the undo did not finish"
TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"


def utc_stamp(moment: datetime.datetime | None = None) -> str:
    return (moment or datetime.datetime.now(datetime.timezone.utc)).strftime(TIME_FORMAT)


def timings(started: str | None, ended: str | None = None) -> dict:
    """started/ended (UTC, second precision) and the seconds between them."""
    ended = ended or utc_stamp()
    found = {"started": started or "", "ended": ended}
    try:
        first = datetime.datetime.strptime(started, TIME_FORMAT)
        last = datetime.datetime.strptime(ended, TIME_FORMAT)
        found["duration_s"] = max((last - first).total_seconds(), 0.0)
    except (TypeError, ValueError):
        pass
    return {key: value for key, value in found.items() if value not in ("", None)}


def incident_severity(operation: str, result: str, impact: str = "", given: str = "") -> str:
    """P1-P4 of an operation that did not end ok (given by the event wins)."""
    if given in SEVERITIES:
        return given
    if result == "interrupted" or impact == UNDONE_UNKNOWN or operation == "restore":
        return "P1"
    if operation in ("deploy", "upgrade", "rollback", "backup"):
        return "P2"
    return "P3"


def escalation(severity: str) -> str:
    """page, notify or log: who hears of an incident of this severity."""
    return CHANNELS.get(severity, "notify")


def first_line(text, limit: int = 300) -> str:
    """A failure message cut to its first line: records and incident entries never carry dumps."""
    stripped = str(text or "").strip()
    return stripped.splitlines()[0][:limit] if stripped else ""


def event(kind: str, site: str, operation: str, result: str, **fields) -> dict:
    """One opspack_event; raises ValueError on a kind, operation or result outside the contract."""
    if kind not in KINDS:
        raise ValueError(f"event kind {kind!r} is not one of {', '.join(KINDS)}")
    # A step (a traffic switch, a migration) may not know which operation it serves; the lock's does.
    if operation not in OPERATIONS and (kind == "operation" or operation):
        raise ValueError(f"event operation {operation!r} is not one of {', '.join(OPERATIONS)}")
    allowed = OPERATION_RESULTS if kind == "operation" else STEP_RESULTS
    if result not in allowed:
        raise ValueError(f"{kind} event result {result!r} is not one of {', '.join(allowed)}")
    unknown = sorted(set(fields) - set(FIELDS))
    if unknown:
        raise ValueError(f"event fields {', '.join(unknown)} are not part of opspack_event")
    if "reason" in fields:
        fields["reason"] = first_line(fields["reason"])
    if isinstance(fields.get("actions"), list):
        fields["actions"] = "; ".join(str(action) for action in fields["actions"] if action)
    found = dict(kind=kind, site=site, operation=operation, result=result, **fields)
    return {key: found[key] for key in FIELDS if found.get(key) not in (None, "", [], {})}


def tell_failures(module, told) -> None:
    """Make every fail_json of module carry an opspack_event, told(msg) (None for none), unless
    it carries one already. Ansible's own helpers (run_command on a program that cannot run,
    get_bin_path) end a module with fail_json directly, past the flow's own except: the records
    still hear of the failure. Check mode tells nothing."""
    fail_json = module.fail_json

    def failing(msg, **kwargs):
        if "opspack_event" not in kwargs and not module.check_mode:
            found = told(msg)
            if found:
                kwargs["opspack_event"] = found
        fail_json(msg=msg, **kwargs)
    module.fail_json = failing
