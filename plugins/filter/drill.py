# Copyright: opspack developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""drill_outcome: a drill module's result as a record line, from an allowlist of fields only."""

from __future__ import annotations

# What a drill record may hold. Never whole results: no query answers (they are site data),
# no module arguments, nothing a no_log task could have carried.
RECORD_FIELDS = ("engine", "backup_id", "backup_ended_at", "backup_set", "backup_set_stopped_at", "target_time",
                 "recovery_stopped_before", "started_at", "rto_seconds", "rpo_seconds")


def drill_outcome(result, operation, host, site=None):
    """{operation, host, site, result: pass|fail, reason, summary, ...RECORD_FIELDS} from a
    registered restore_drill or pitr_drill result (a loop item's result when site is None)."""
    if not isinstance(result, dict):
        result = {}
    site = site if site is not None else result.get("site") or result.get("item")
    passed = bool(result.get("passed")) and not result.get("failed") and not result.get("skipped")
    # A module that crashed has no reason of its own: say so, with the last line it printed.
    crash = (result.get("exception") or result.get("module_stderr") or "").strip().splitlines()
    reason = (result.get("reason") or result.get("msg") or ("skipped" if result.get("skipped") else None)
              or ("the drill module crashed: " + crash[-1] if crash else "the drill module returned no result"))
    record = {"operation": operation, "host": host, "site": site, "result": "pass" if passed else "fail",
              "reason": str(reason)}
    record.update({field: result.get(field) for field in RECORD_FIELDS})
    what = record["backup_id"] or record["backup_set"] or "no backup"
    if passed and operation == "pitr_drill":
        record["summary"] = (f"{site}: recovered to {record['target_time']} from set {what} "
                             f"in {record['rto_seconds']} s")
    elif passed:
        record["summary"] = (f"{site}: {what} restored and proven in {record['rto_seconds']} s "
                             f"(RPO {record['rpo_seconds']} s)")
    else:
        record["summary"] = f"{site}: {record['reason']}"
    return record


class FilterModule:
    """Drill records."""

    def filters(self):
        return {"drill_outcome": drill_outcome}
