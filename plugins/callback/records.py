# Copyright: opspack developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Keep the runbooks' records from the events opspack's modules returned (opspack_event, see
plugins/module_utils/events.py): history, sites matrix, incident log and last-known-good state."""

from __future__ import annotations

DOCUMENTATION = r"""
name: records
type: notification
short_description: Write the sites matrix, the incident log, last-known-good state and history
version_added: 0.1.0
author: opspack developers (@opspack)
description:
  - Reads one thing from what opspack's modules return during a run, the C(opspack_event) of
    each result (see C(plugins/module_utils/events.py) for the contract). A result without one
    is ignored; task names, module names and messages are never read or guessed from.
  - An C(operation) event (a deploy, upgrade or rollback told by the deploy lock when released
    with its outcome; a maintenance switch, restore, backup, drill or verification told by its module) is one
    history line. A C(step) event is only remembered per host and site, to name where a run
    stopped (a run that ends with the deploy lock taken and no operation event for it is
    recorded as failed, naming its last step). An event that says the run C(interrupted) another
    run (took over its deploy lock) also records that run, as interrupted.
  - When the run ends it writes into the records directory
    C(history.jsonl) (one line per operation, append-only),
    C(loop-sites-matrix.md) (one row per site and environment, rendered from the history),
    C(what-broke-last-time.md) (one entry per operation whose result is not ok or pass,
    append-only; a verification failing again for the same host and site with the same failed
    checks is not a new entry)
    and C(last-known-good/<site>.json) (for an operation event with result ok that
    names its C(last_known_good)).
  - A check's report (C(opspack_report) of M(opspack.platform.verify_report) and of
    M(opspack.platform.health_check) for C(ops_daily)) is kept as C(reports/<tool>/<host>.json),
    the last one per host, which C(opspack verify) and C(opspack daily) print; a daily report
    also adds one line of its signals per host to C(daily.jsonl) (the fleet page's trends).
  - A run refused before anything changed returns no operation event and is not recorded.
  - Only the event is read, never task arguments or whole results, and nothing from C(no_log)
    tasks or check-mode tasks. Reasons are cut to their first line.
  - Writes are atomic (temporary file, then rename) under a lock file, so two runs that finish
    at once both land and a crash leaves the previous files intact. A record that cannot be
    written is kept in C(~/.opspack/unwritten-records/) and the run says so loudly.
  - A dry run (C(--check)) writes nothing.
  - The records go to C(records/) of the inventory's state directory (O(state_dir), the lookup
    C(opspack.platform.state_dir)). Every opspack playbook reports the directory its roles use
    (which the inventory variable C(opspack_state_dir) may set) through C(set_stats), and that
    report wins over O(state_dir); O(records_dir) wins over both.
requirements:
  - enable it in ansible.cfg (C(callbacks_enabled = opspack.platform.records))
extends_documentation_fragment:
  - opspack.platform.state_dir
options:
  environment:
    description: Environment name for the matrix; by default the name of the inventory's directory.
    type: str
    env:
      - name: OPSPACK_ENVIRONMENT
    ini:
      - section: opspack_records
        key: environment
  operator:
    description: Who runs the operations; by default C(<USER>@<control node>) (C(operator) when USER is unset),
      the name the release role writes as C(by=) in each host's audit log.
    type: str
    env:
      - name: OPSPACK_OPERATOR
    ini:
      - section: opspack_records
        key: operator
"""

import datetime
import fcntl
import json
import os
import time

from ansible import context
from ansible.plugins.callback import CallbackBase
from ansible.utils.display import Display

from ansible_collections.opspack.platform.plugins.lookup import controller_run
from ansible_collections.opspack.platform.plugins.module_utils.common import write_bytes_atomic
from ansible_collections.opspack.platform.plugins.plugin_utils import state_dir
from ansible_collections.opspack.platform.plugins.module_utils.events import KINDS, escalation, first_line, incident_severity, utc_stamp

display = Display()

MATRIX = "loop-sites-matrix.md"
INCIDENTS = "what-broke-last-time.md"
HISTORY = "history.jsonl"
START = "<!-- opspack:matrix:start (written by the records callback from history.jsonl; edit outside these markers) -->"
END = "<!-- opspack:matrix:end -->"
COLUMNS = ("site", "environment", "hosts", "version", "git sha", "migration", "last operation", "result",
           "when (UTC)", "operator", "duration", "last drill", "drill date", "last backup", "last verify")
# The only fields of a history line; anything else never reaches the records.
HISTORY_FIELDS = ("time", "site", "environment", "host", "operation", "result", "release", "version", "git_sha",
                  "migration_version", "operator", "duration_s", "step", "reason", "impact", "actions",
                  "backup_id", "rto_s", "rpo_s", "engine", "backup_ended_at", "maintenance", "severity")
# The checks whose last report per host is kept (reports/<tool>/<host>.json), and what of a check is.
REPORT_TOOLS = ("verify", "ops_daily")
REPORT_CHECK_FIELDS = ("check", "site", "status", "reason", "value", "threshold", "severity", "names", "requests",
                       "errors_5xx", "window_days", "backups", "inactive", "missing", "differs")
DAILY = "daily.jsonl"
# Operations that change what serves a site; maintenance switched in the same run is told in their actions.
SERVING_OPERATIONS = ("deploy", "upgrade", "rollback", "restore")
# Operations told by the deploy lock when it is released: the one event that closes a lock taken.
LOCKED_OPERATIONS = ("deploy", "upgrade", "rollback")


def version_of(release) -> str | None:
    """The version a release id names (1.4.2 of 1.4.2+0a1b2c3d4e5f)."""
    return str(release).split("+", 1)[0] if release else None


def allowlisted(entry: dict) -> dict:
    return {key: entry[key] for key in HISTORY_FIELDS if entry.get(key) not in (None, "", [])}


def atomic_write(path: str, text: str) -> None:
    write_bytes_atomic(path, text.encode("utf-8"), 0o644)


def read_history(path: str) -> list[dict]:
    entries = []
    try:
        with open(path, encoding="utf-8") as handle:
            for number, line in enumerate(handle, 1):
                if line.strip():
                    try:
                        entries.append(json.loads(line))
                    except ValueError:
                        display.warning(f"records: {path} line {number} is not JSON; it is kept and skipped")
    except FileNotFoundError:
        pass
    return entries


def age(since: str, now: datetime.datetime) -> str:
    try:
        then = datetime.datetime.strptime(since, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.timezone.utc)
    except (TypeError, ValueError):
        return ""
    hours = (now - then).total_seconds() / 3600
    return f"{hours:.0f} h" if hours < 48 else f"{hours / 24:.0f} d"


def render_table(history: list[dict], now: datetime.datetime) -> str:
    """One row per site and environment, from the history: sorted, fixed format."""
    rows: dict[tuple, dict] = {}
    for entry in history:
        if entry.get("operation") == "gate":
            # A release gate's verdict is about an artifact on the control node: history only.
            continue
        key = (entry.get("site", ""), entry.get("environment", ""))
        row = rows.setdefault(key, {"hosts": set()})
        if entry.get("host"):
            row["hosts"].add(entry["host"])
        if entry.get("operation") == "drill":
            row["drill"] = entry
        elif entry.get("operation") == "verify":
            # A verification changes nothing: its own column, never the row's last operation.
            row.setdefault("verify", {})[entry.get("host", "")] = entry
        elif entry.get("operation") == "backup":
            # The last backup that exists: a failed one is an incident, not a backup.
            if entry.get("result") == "ok":
                row["backup"] = entry
        else:
            row["operation"] = entry
            if entry.get("result") == "ok" and entry.get("release"):
                row["serving"] = entry
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "|".join("---" for _column in COLUMNS) + "|"]
    for (site, environment), row in sorted(rows.items()):
        operation, serving = row.get("operation", {}), row.get("serving", {})
        drill, backup = row.get("drill", {}), row.get("backup", {})
        cells = [site, environment, ", ".join(sorted(row["hosts"])), serving.get("version", ""),
                 (serving.get("git_sha") or "")[:12], str(serving.get("migration_version", "")),
                 " ".join(filter(None, (operation.get("operation", ""), operation.get("maintenance", "")))),
                 operation.get("result", ""), operation.get("time", ""),
                 operation.get("operator", ""),
                 f"{operation['duration_s']:.0f} s" if isinstance(operation.get("duration_s"), (int, float)) else "",
                 drill.get("result", ""), (drill.get("time") or "")[:10],
                 age(backup.get("backup_ended_at") or drill.get("backup_ended_at") or "", now),
                 verify_cell(row.get("verify", {}))]
        lines.append("| " + " | ".join(cell.replace("|", "/") for cell in cells) + " |")
    return "\n".join(lines) + "\n"


def kept_report(report: dict, host: str) -> dict:
    """What the records keep of a check's report: its summary and each check's allowlisted fields."""
    checks = [{key: check[key] for key in REPORT_CHECK_FIELDS if check.get(key) not in (None, "", [])}
              for check in report.get("checks") or [] if isinstance(check, dict)]
    return {"tool": report["tool"], "host": host, "generated_at": str(report.get("generated_at") or utc_stamp()),
            "status": str(report.get("status") or ""), "summary": first_line(report.get("summary")), "checks": checks}


def daily_signals(report: dict) -> dict:
    """One line of daily.jsonl: the signals the fleet page draws, per site and for the host."""
    sites: dict[str, dict] = {}
    line = {"time": report["generated_at"], "host": report["host"], "sites": sites}
    for check in report["checks"]:
        site = check.get("site")
        if check.get("check") == "traffic" and site:
            sites.setdefault(site, {})["requests"] = check.get("requests", 0)
        elif check.get("check") == "error_rate" and site:
            sites.setdefault(site, {})["error_rate_percent"] = check.get("value")
        elif check.get("check") == "p95" and site:
            sites.setdefault(site, {})["p95_seconds"] = check.get("value")
        elif check.get("check") == "disk" and not site:
            line["disk_percent"] = check.get("value")
    return line


def last_verifications(history: list[dict]) -> list[dict]:
    """The last verification of each host and site."""
    last = {}
    for entry in history:
        if entry.get("operation") == "verify":
            last[(entry.get("host"), entry.get("site"))] = entry
    return list(last.values())


def verify_cell(last: dict) -> str:
    """The last verification of each host of a row, as one cell: fail naming the failing hosts
    when any failed, else pass; the date of the newest."""
    if not last:
        return ""
    failing = sorted(host for host, entry in last.items() if entry.get("result") != "pass")
    newest = max((entry.get("time") or "" for entry in last.values()), default="")[:10]
    return f"fail ({', '.join(failing)}) {newest}" if failing else f"pass {newest}"


def fold_maintenance(entries: list[dict]) -> list[dict]:
    """A run's maintenance switches of a site it also deployed, rolled back or restored become
    actions of that operation (the matrix then shows the operation, not the switch after it)."""
    serving = {}
    for entry in entries:
        if entry.get("operation") in SERVING_OPERATIONS:
            serving.setdefault((entry.get("site"), entry.get("host")), entry)
    kept = []
    for entry in entries:
        target = serving.get((entry.get("site"), entry.get("host")))
        if entry.get("operation") == "maintenance" and entry.get("result") == "ok" and target is not None:
            switched = f"maintenance {entry.get('maintenance')}"
            target["actions"] = "; ".join(filter(None, (target.get("actions"), switched)))
        else:
            kept.append(entry)
    return kept


def table_is_sound(block: str) -> bool:
    lines = [line for line in block.strip().splitlines() if line.strip()]
    return bool(lines) and all(line.startswith("|") and line.endswith("|") and line.count("|") == len(COLUMNS) + 1
                               for line in lines)


def merge_matrix(existing: str | None, table: str) -> tuple[str, bool]:
    """The matrix file with its table replaced, text people wrote outside it kept. Returns the
    text and whether the table found there was malformed (hand-edited)."""
    section = f"{START}\n{table}{END}\n"
    if existing is None:
        return f"# Sites matrix\n\n{section}", False
    if START in existing and END in existing.split(START, 1)[1]:
        before, rest = existing.split(START, 1)
        old, after = rest.split(END, 1)
        return before + section + after.lstrip("\n"), not table_is_sound(old)
    return existing.rstrip("\n") + "\n\n" + section, False


def incident_text(entry: dict) -> str:
    severity = entry.get("severity") or incident_severity(entry.get("operation", ""), entry.get("result", ""),
                                                          entry.get("impact", ""))
    return (
        f"\n## {entry.get('time', '')} {entry.get('operation', '')} {entry.get('site', '')} "
        f"({entry.get('environment', '')}, {entry.get('host', '')}): {entry.get('result', '')}\n\n"
        f"- **Severity:** {severity} ({escalation(severity)})\n"
        f"- **What broke:** {entry.get('step') or 'unknown step'}: {entry.get('reason') or 'no message'}\n"
        f"- **Release:** {entry.get('release') or entry.get('version') or 'none'}\n"
        f"- **Impact:** {entry.get('impact') or 'unknown'}\n"
        f"- **Duration:** {entry.get('duration_s', '?')} s\n"
        f"- **What the automation did:** {entry.get('actions') or 'nothing'}\n"
        f"- **Operator:** {entry.get('operator', '')}\n"
        "- **Follow-up:** _(to be filled in by a person)_\n"
    )


class Records:
    """The records directory: every write under one lock, each file replaced atomically."""

    def __init__(self, directory: str):
        self.directory = directory

    def write(self, entries: list[dict], last_known_good: dict[str, dict], reports: dict | None = None) -> list[str]:
        os.makedirs(os.path.join(self.directory, "last-known-good"), exist_ok=True)
        warnings = []
        with open(os.path.join(self.directory, ".records.lock"), "a", encoding="utf-8") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if entries or last_known_good:
                warnings += self._write_operations(entries, last_known_good)
            self._write_reports(reports or {})
        return warnings

    def _write_operations(self, entries: list[dict], last_known_good: dict[str, dict]) -> list[str]:
        """History, matrix, incidents, last-known-good (under the lock)."""
        warnings = []
        history_path = os.path.join(self.directory, HISTORY)
        # Read once, before this run's lines go in: the matrix is rendered from it and them, and a
        # verification failing again (the last one of its host and site failed with the same checks)
        # is the same incident, not a new one.
        earlier = read_history(history_path)
        still_failing = {(entry.get("host"), entry.get("site"), entry.get("reason"))
                         for entry in last_verifications(earlier) if entry.get("result") == "fail"}
        added = [allowlisted(entry) for entry in entries]
        with open(history_path, "a", encoding="utf-8") as history:
            for entry in added:
                history.write(json.dumps(entry, sort_keys=True) + "\n")
            history.flush()
            os.fsync(history.fileno())
        matrix_path = os.path.join(self.directory, MATRIX)
        try:
            with open(matrix_path, encoding="utf-8") as handle:
                existing = handle.read()
        except FileNotFoundError:
            existing = None
        table = render_table(earlier + added, datetime.datetime.now(datetime.timezone.utc))
        text, malformed = merge_matrix(existing, table)
        if malformed:
            kept = f"{matrix_path}.hand-edited-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}"
            atomic_write(kept, existing)
            warnings.append(f"the table in {matrix_path} was not a well-formed matrix (hand-edited?): the file "
                            f"as it was is kept in {kept}; the table was written again from {HISTORY}")
        if text != existing:
            atomic_write(matrix_path, text)
        failures = [entry for entry in entries if entry.get("result") not in ("ok", "pass")
                    and entry.get("operation") != "gate"
                    and not (entry.get("operation") == "verify"
                             and (entry.get("host"), entry.get("site"), entry.get("reason")) in still_failing)]
        if failures:
            incidents_path = os.path.join(self.directory, INCIDENTS)
            with open(incidents_path, "a", encoding="utf-8") as incidents:
                if incidents.tell() == 0:
                    incidents.write("# What broke last time\n\nAppend-only: one entry per failed, aborted or "
                                    "rolled-back operation, written by the records callback.\n")
                for entry in failures:
                    incidents.write(incident_text(entry))
                incidents.flush()
                os.fsync(incidents.fileno())
        for site, state in sorted(last_known_good.items()):
            atomic_write(os.path.join(self.directory, "last-known-good", f"{site}.json"),
                         json.dumps(state, indent=2, sort_keys=True) + "\n")
        return warnings

    def _write_reports(self, reports: dict) -> None:
        daily = []
        for (tool, host), report in sorted(reports.items()):
            os.makedirs(os.path.join(self.directory, "reports", tool), exist_ok=True)
            atomic_write(os.path.join(self.directory, "reports", tool, f"{host}.json"),
                         json.dumps(report, indent=2, sort_keys=True) + "\n")
            if tool == "ops_daily":
                daily.append(daily_signals(report))
        if daily:
            with open(os.path.join(self.directory, DAILY), "a", encoding="utf-8") as handle:
                for line in daily:
                    handle.write(json.dumps(line, sort_keys=True) + "\n")
                handle.flush()
                os.fsync(handle.fileno())


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "notification"
    CALLBACK_NAME = "opspack.platform.records"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._sources: list[str] = []
        self._locks: dict[tuple[str, str], dict] = {}   # (host, site) -> the event of the deploy lock taken
        self._steps: dict[tuple[str, str], dict] = {}   # (host, site) -> its last step event
        self._interrupted: set[tuple] = set()            # the interrupted runs already recorded
        self._done: list[dict] = []
        self._reports: dict[tuple[str, str], dict] = {}  # (tool, host) -> its last report of this run
        self._last_known_good: dict[str, dict] = {}

    # --- options and places ---------------------------------------------------------------

    def _option(self, name: str) -> str | None:
        """An option as configured; its environment variable when the plugin was not loaded by
        ansible-core's plugin loader (which knows the options from DOCUMENTATION)."""
        try:
            return self.get_option(name)
        except KeyError:
            return os.environ.get({"records_dir": "OPSPACK_RECORDS_DIR", "environment": "OPSPACK_ENVIRONMENT",
                                   "operator": "OPSPACK_OPERATOR", "state_dir": "OPSPACK_STATE_DIR"}[name])

    def _records_dir(self, reported: str | None = None) -> str:
        """The records option, else records/ of the state directory the run's playbooks reported
        (what the roles use, so drills and history land together), else of the configured one."""
        return state_dir.records_dir(self._option("records_dir"), reported or self._option("state_dir"), self._sources)

    def _environment(self) -> str:
        return self._option("environment") or state_dir.inventory_name(self._sources)

    def _operator(self) -> str:
        return self._option("operator") or controller_run.operator()

    # --- what the modules returned ----------------------------------------------------------

    def v2_playbook_on_play_start(self, play):
        try:
            inventory = play.get_variable_manager()._inventory
            self._sources = [str(source) for source in (inventory._sources or [])]
        except AttributeError:
            self._sources = []

    @staticmethod
    def _facts(result) -> dict:
        found = result.result
        task = result.task
        if not isinstance(found, dict) or found.get("censored") or getattr(task, "no_log", False):
            return {}
        # A check-mode task (a restore's verification) changes nothing, whatever it returns.
        if getattr(task, "check_mode", None) is True or found.get("_ansible_check_mode"):
            return {}
        return found

    def _results(self, result):
        """The result, or each item's result for a loop."""
        found = self._facts(result)
        if "results" in found and isinstance(found["results"], list):
            return [item for item in found["results"] if isinstance(item, dict) and not item.get("censored")
                    and not item.get("_ansible_no_log") and not item.get("_ansible_check_mode")]
        return [found] if found else []

    def v2_runner_on_ok(self, result):
        try:
            self._seen(result)
        except Exception as exc:  # a record must never break the run; say so instead
            display.warning(f"records: could not read a result of {result.task.get_name()}: {exc}")

    def v2_runner_on_failed(self, result, ignore_errors=False):
        try:
            self._seen(result)
        except Exception as exc:
            display.warning(f"records: could not read a failure of {result.task.get_name()}: {exc}")

    def _seen(self, result) -> None:
        if context.CLIARGS.get("check"):
            return
        host = result.host.get_name()
        report = self._facts(result).get("opspack_report")
        if isinstance(report, dict) and report.get("tool") in REPORT_TOOLS:
            self._reports[(report["tool"], host)] = kept_report(report, host)
        for found in self._results(result):
            told = found.get("opspack_event")
            if not isinstance(told, dict):
                continue  # no event, nothing to record: never guessed at
            if told.get("kind") not in KINDS or not told.get("site"):
                display.warning(f"records: {result.task.get_name()} returned an opspack_event without a known kind "
                                "or without a site; it is not recorded")
                continue
            self._read(host, told)

    def _read(self, host: str, told: dict) -> None:
        key = (host, told["site"])
        if told.get("interrupted"):
            self._record_interrupted(host, told)
        if told["kind"] == "step":
            if told.get("step") == "lock":
                if key in self._locks:
                    # Taken again in the same run: it was released without its operation's event.
                    self._record_unfinished(key, "the deploy lock was released without the operation's outcome")
                self._locks[key] = told
            self._steps[key] = told
            return
        if told.get("operation") in LOCKED_OPERATIONS:
            self._locks.pop(key, None)
            self._steps.pop(key, None)
        self._record(host, told)

    # --- what the events said, as records ------------------------------------------------------

    def _entry(self, host: str, **fields) -> dict:
        entry = {"environment": self._environment(), "host": host, "operator": self._operator(), **fields}
        if entry.get("result") not in ("ok", "pass"):
            entry["severity"] = incident_severity(entry.get("operation") or "", entry.get("result") or "",
                                                  entry.get("impact") or "", entry.get("severity") or "")
        return entry

    def _record(self, host: str, told: dict) -> None:
        timings = told.get("timings") if isinstance(told.get("timings"), dict) else {}
        migrations = told.get("migrations") if isinstance(told.get("migrations"), dict) else {}
        release = told.get("release")
        entry = self._entry(
            host, time=timings.get("ended") or utc_stamp(), site=told["site"], operation=told.get("operation"),
            result=told.get("result"), release=release,
            version=told.get("version") or version_of(release),
            git_sha=told.get("git_sha"), migration_version=migrations.get("version"),
            duration_s=timings.get("duration_s"), step=told.get("step"), reason=first_line(told.get("reason")),
            impact=told.get("impact"), actions=told.get("actions"), backup_id=told.get("backup_id"),
            backup_ended_at=told.get("backup_ended_at"), engine=told.get("engine"), rto_s=told.get("rto_s"),
            rpo_s=told.get("rpo_s"), maintenance=told.get("maintenance"), severity=told.get("severity"))
        self._done.append(entry)
        lkg = told.get("last_known_good")
        if told.get("result") == "ok" and isinstance(lkg, dict) and lkg.get("release_id"):
            self._last_known_good[told["site"]] = {
                "site": told["site"], "release": lkg.get("release_id"), "slot": lkg.get("slot"),
                "git_sha": entry.get("git_sha"), "migrations_version": entry.get("migration_version"),
                "config_hash": lkg.get("config_hash") or None, "timestamp": entry["time"], "all_tests_pass": True,
                "health_status": "ok", "host": host}

    def _record_interrupted(self, host: str, told: dict) -> None:
        """The run whose deploy lock this run took over: it never ended, an incident of its own."""
        gone = told["interrupted"] if isinstance(told["interrupted"], dict) else {}
        seen = (host, told["site"], gone.get("run_id"), gone.get("holder"), gone.get("since"))
        if seen in self._interrupted:
            return
        self._interrupted.add(seen)
        self._done.append(self._entry(
            host, time=utc_stamp(), site=told["site"], operation=gone.get("operation") or "deploy",
            result="interrupted", release=gone.get("release"), operator=gone.get("holder"),
            step="interrupted before it finished",
            reason=f"its run ({gone.get('run_id') or '?'}) ended while it held the deploy lock",
            impact="whatever it left is put right by the run that took over its lock (see its actions)",
            actions=f"lock taken over by {self._operator()}"))

    def _record_unfinished(self, key: tuple[str, str], how: str) -> None:
        """A deploy lock taken whose operation's event never came: failed, at its last step (the
        only record not told by an operation event, and it says only what the step events said)."""
        lock = self._locks.pop(key)
        last = self._steps.pop(key, None) or lock
        release = lock.get("release")
        self._done.append(self._entry(
            key[0], time=utc_stamp(), site=key[1], operation=lock.get("operation") or "deploy", result="failed",
            release=release, version=version_of(release),
            step=f"{how} (last step: {last.get('step') or 'lock'})",
            reason=first_line(last.get("reason"))))

    # --- the end of the run -------------------------------------------------------------------

    def v2_playbook_on_stats(self, stats):
        if context.CLIARGS.get("check"):
            return
        for key in sorted(self._locks):
            self._record_unfinished(key, "the run ended with the deploy lock still held")
        if not self._done and not self._reports:
            return
        self._done = fold_maintenance(self._done)
        reported = (getattr(stats, "custom", None) or {}).get("_run", {}).get("opspack_state_dir")
        directory = self._records_dir(reported if isinstance(reported, str) else None)
        try:
            for warning in Records(directory).write(self._done, self._last_known_good, self._reports):
                display.warning(f"records: {warning}")
            # On stderr: stdout may be a machine-read stream (the json callback, ansible-runner).
            display.display(f"records: {len(self._done)} operation(s)"
                            + (f" and {len(self._reports)} check report(s)" if self._reports else "")
                            + f" recorded in {directory}", stderr=True)
        except OSError as exc:
            self._keep_unwritten(directory, exc)

    def _keep_unwritten(self, directory: str, exc: OSError) -> None:
        spare = os.path.expanduser("~/.opspack/unwritten-records")
        path = os.path.join(spare, f"{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}-{os.getpid()}.jsonl")
        try:
            os.makedirs(spare, exist_ok=True)
            with open(path, "w", encoding="utf-8") as handle:
                for entry in self._done:
                    handle.write(json.dumps(allowlisted(entry), sort_keys=True) + "\n")
            kept = f"they are kept in {path}: add them to {directory}/{HISTORY} once it is writable"
        except OSError as second:
            kept = f"and could not be kept in {path} either ({second}): " + json.dumps(
                [allowlisted(entry) for entry in self._done], sort_keys=True)
        display.error(f"records: could not write {len(self._done)} record(s) to {directory} ({exc}); {kept}")
