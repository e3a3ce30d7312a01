# Copyright: opspack developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Keep the runbooks' records from what opspack's modules returned: history, sites matrix,
incident log and last-known-good state."""

from __future__ import annotations

DOCUMENTATION = r"""
name: records
type: notification
short_description: Write the sites matrix, the incident log, last-known-good state and history
version_added: 0.1.0
author: opspack developers (@opspack)
description:
  - Watches what opspack's modules return during a run (deploy locks, release artifacts,
    migrations, traffic switches, release records, restore drills) and, when the run ends,
    writes into the records directory
    C(history.jsonl) (one line per operation, append-only),
    C(loop-sites-matrix.md) (one row per site and environment, rendered from the history),
    C(what-broke-last-time.md) (one entry per failed or rolled-back operation, append-only) and
    C(last-known-good/<site>.json) (after a deploy or rollback whose smoke tests passed).
  - A run refused before anything changed (a deploy refused before its lock, a restore whose
    backup its verification refused) is not an operation and is not recorded.
  - Only an allowlist of fields is read from module results, never task arguments or whole
    results, and nothing from C(no_log) tasks. Failure messages are cut to their first line.
  - Writes are atomic (temporary file, then rename) under a lock file, so two runs that finish
    at once both land and a crash leaves the previous files intact. A record that cannot be
    written is kept in C(~/.opspack/unwritten-records/) and the run says so loudly.
  - A dry run (C(--check)) writes nothing. A run that is interrupted writes only the
    operations that ended.
requirements:
  - enable it in ansible.cfg (C(callbacks_enabled = opspack.platform.records))
options:
  records_dir:
    description: Directory of the records; by default C(records/) beside the inventory (never inside an inventory directory).
    type: path
    env:
      - name: OPSPACK_RECORDS_DIR
    ini:
      - section: opspack_records
        key: records_dir
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

from ansible_collections.opspack.platform.plugins.filter import paths
from ansible_collections.opspack.platform.plugins.lookup import controller_run
from ansible_collections.opspack.platform.plugins.module_utils.backup import write_bytes_atomic

display = Display()

PREFIX = "opspack.platform."
MATRIX = "loop-sites-matrix.md"
INCIDENTS = "what-broke-last-time.md"
HISTORY = "history.jsonl"
START = "<!-- opspack:matrix:start (written by the records callback from history.jsonl; edit outside these markers) -->"
END = "<!-- opspack:matrix:end -->"
COLUMNS = ("site", "environment", "hosts", "version", "git sha", "migration", "last operation", "result",
           "when (UTC)", "operator", "duration", "last drill", "drill date", "last backup")
# The only fields of a history line; anything else never reaches the records.
HISTORY_FIELDS = ("time", "site", "environment", "host", "operation", "result", "release", "version", "git_sha",
                  "migration_version", "operator", "duration_s", "step", "reason", "impact", "actions",
                  "backup_id", "rto_s", "rpo_s", "engine", "backup_ended_at", "maintenance")
# Operations that change what serves a site; maintenance switched in the same run is told in their actions.
SERVING_OPERATIONS = ("deploy", "upgrade", "rollback", "restore")
DRILL_MODULES = {"restore_drill", "pitr_drill", "redis_drill", "files_drill"}


def utc_now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def first_line(text, limit: int = 300) -> str:
    line = str(text or "").strip().splitlines()[0] if str(text or "").strip() else ""
    return line[:limit]


def operation_of(holder: dict) -> str:
    """What a deploy lock covers: its operation (older locks only had a reason, the default message)."""
    if holder.get("operation") in ("deploy", "rollback"):
        return holder["operation"]
    return "rollback" if str(holder.get("reason", "")).startswith("rollback") else "deploy"


def allowlisted(entry: dict) -> dict:
    return {key: entry[key] for key in HISTORY_FIELDS if entry.get(key) not in (None, "", [])}


def records_beside(source: str) -> str:
    """records/ beside the inventory, by the rule the roles' beside_inventory filter applies."""
    source = os.path.normpath(source)
    inventory_dir = os.path.dirname(source) if os.path.isfile(source) else source
    return paths.beside_inventory(inventory_dir, [source] if os.path.isdir(source) else [], "records")


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
        key = (entry.get("site", ""), entry.get("environment", ""))
        row = rows.setdefault(key, {"hosts": set()})
        if entry.get("host"):
            row["hosts"].add(entry["host"])
        if entry.get("operation") == "drill":
            row["drill"] = entry
        elif entry.get("operation") == "backup":
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
                 age(backup.get("backup_ended_at") or drill.get("backup_ended_at") or "", now)]
        lines.append("| " + " | ".join(cell.replace("|", "/") for cell in cells) + " |")
    return "\n".join(lines) + "\n"


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
            target["actions"] = "; ".join(filter(None, (target.get("actions"), f"maintenance {entry.get('maintenance')}")))
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
    return (
        f"\n## {entry.get('time', '')} {entry.get('operation', '')} {entry.get('site', '')} "
        f"({entry.get('environment', '')}, {entry.get('host', '')}): {entry.get('result', '')}\n\n"
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

    def write(self, entries: list[dict], last_known_good: dict[str, dict]) -> list[str]:
        os.makedirs(os.path.join(self.directory, "last-known-good"), exist_ok=True)
        warnings = []
        with open(os.path.join(self.directory, ".records.lock"), "a", encoding="utf-8") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            history_path = os.path.join(self.directory, HISTORY)
            with open(history_path, "a", encoding="utf-8") as history:
                for entry in entries:
                    history.write(json.dumps(allowlisted(entry), sort_keys=True) + "\n")
                history.flush()
                os.fsync(history.fileno())
            matrix_path = os.path.join(self.directory, MATRIX)
            try:
                with open(matrix_path, encoding="utf-8") as handle:
                    existing = handle.read()
            except FileNotFoundError:
                existing = None
            table = render_table(read_history(history_path), datetime.datetime.now(datetime.timezone.utc))
            text, malformed = merge_matrix(existing, table)
            if malformed:
                kept = f"{matrix_path}.hand-edited-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}"
                atomic_write(kept, existing)
                warnings.append(f"the table in {matrix_path} was not a well-formed matrix (hand-edited?): the file "
                                f"as it was is kept in {kept}; the table was written again from {HISTORY}")
            if text != existing:
                atomic_write(matrix_path, text)
            failures = [entry for entry in entries if entry.get("result") not in ("ok", "pass")]
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


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "notification"
    CALLBACK_NAME = "opspack.platform.records"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._sources: list[str] = []
        self._open: dict[str, dict] = {}     # host -> the operation its deploy lock covers
        self._done: list[dict] = []
        self._last_known_good: dict[str, dict] = {}
        self._artifacts: dict[str, dict] = {}

    # --- options and places ---------------------------------------------------------------

    def _option(self, name: str) -> str | None:
        """An option as configured; its environment variable when the plugin was not loaded by
        ansible-core's plugin loader (which knows the options from DOCUMENTATION)."""
        try:
            return self.get_option(name)
        except KeyError:
            return os.environ.get({"records_dir": "OPSPACK_RECORDS_DIR", "environment": "OPSPACK_ENVIRONMENT",
                                   "operator": "OPSPACK_OPERATOR"}[name])

    def _records_dir(self) -> str:
        configured = self._option("records_dir")
        if configured:
            return os.path.expanduser(configured)
        source = self._sources[0] if self._sources else os.getcwd()
        return records_beside(source)

    def _environment(self) -> str:
        configured = self._option("environment")
        if configured:
            return configured
        source = os.path.normpath(self._sources[0]) if self._sources else os.getcwd()
        directory = source if os.path.isdir(source) else os.path.dirname(source)
        return os.path.basename(directory) or "default"

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
    def _module(result) -> str:
        action = getattr(result.task, "resolved_action", None) or result.task.action or ""
        return action[len(PREFIX):] if action.startswith(PREFIX) else ""

    @staticmethod
    def _facts(result) -> dict:
        found = result.result
        if not isinstance(found, dict) or found.get("censored") or getattr(result.task, "no_log", False):
            return {}
        return found

    def _results(self, result):
        """The result, or each item's result for a loop."""
        found = self._facts(result)
        if "results" in found and isinstance(found["results"], list):
            return [item for item in found["results"] if isinstance(item, dict) and not item.get("censored")]
        return [found] if found else []

    def v2_runner_on_ok(self, result):
        try:
            self._seen(result, failed=False)
        except Exception as exc:  # a record must never break the run; say so instead
            display.warning(f"records: could not read a result of {result.task.get_name()}: {exc}")

    def v2_runner_on_failed(self, result, ignore_errors=False):
        try:
            self._seen(result, failed=not ignore_errors)
        except Exception as exc:
            display.warning(f"records: could not read a failure of {result.task.get_name()}: {exc}")

    def _seen(self, result, failed: bool) -> None:
        if context.CLIARGS.get("check"):
            return
        host = result.host.get_name()
        module = self._module(result)
        for found in self._results(result):
            self._note(host, module, found, result, failed)

    def _note(self, host: str, module: str, found: dict, result, failed: bool) -> None:
        operation = self._open.get(host)
        if module == "release_artifact" and not failed:
            self._artifacts[found.get("site", "")] = {
                "release": found.get("release_id"), "version": found.get("version"), "git_sha": found.get("git_sha")}
        elif module == "deploy_lock" and not failed and found.get("acquired"):
            if operation is None:
                holder = found["holder"]
                site = found.get("site", "")
                self._open[host] = {
                    "site": site, "host": host, "environment": self._environment(), "operator": self._operator(),
                    "operation": operation_of(holder), "started": time.monotonic(),
                    "release": holder.get("version"), "result": "ok", "actions": []}
                if found.get("broken"):
                    broken = found["broken"]
                    self._open[host]["actions"].append(f"took over the lock of {broken.get('holder', '?')}")
                    # The run that held it never ended: an incident of its own, with what it was doing.
                    self._done.append({
                        "time": utc_now(), "site": site, "environment": self._environment(), "host": host,
                        "operation": operation_of(broken), "result": "interrupted", "release": broken.get("version"),
                        "operator": broken.get("holder"), "step": "interrupted before it finished",
                        "reason": f"its run ({broken.get('run_id', '?')}) ended while it held the deploy lock",
                        "impact": "whatever it left is put right by the run that took over its lock (see its actions)",
                        "actions": f"lock taken over by {self._operator()}"})
        elif module == "deploy_lock" and not failed and operation is not None and not found.get("held"):
            self._close(host)
        elif module == "pg_backup" and not failed and found.get("manifest", {}).get("ended_at"):
            manifest = found["manifest"]
            self._done.append({"time": utc_now(), "site": manifest.get("site"), "environment": self._environment(),
                               "host": host, "operation": "backup", "result": "ok",
                               "backup_id": found.get("backup_id"), "backup_ended_at": manifest.get("ended_at")})
        elif module in ("site_maintenance", "pg_backup_restore") and result.task.check_mode is not True:
            if failed or found.get("changed"):
                self._done.append(self._outside_lock(host, module, found, result, failed))
        elif module == "pg_backup_restore":
            # The restore's own verification (a check-mode run) refused the backup before anything
            # changed: a refusal, like a deploy refused before its lock, is not an operation.
            return
        elif operation is None:
            if module in DRILL_MODULES:
                self._drill(host, module, found, failed)
            return
        elif failed and not operation.get("step"):
            operation.update(result="failed", step=result.task.get_name(), reason=first_line(found.get("msg")))
        elif module == "pg_migrations" and not failed and not found.get("_ansible_check_mode"):
            if result.task.check_mode is not True:
                operation["migration_version"] = found.get("version_after")
                if found.get("reverted") and operation.get("step"):
                    operation["actions"].append("reverted migrations " + ", ".join(found["reverted"]))
                elif (found.get("reverted") or found.get("applied")) and operation["operation"] == "deploy" \
                        and not operation.get("unpacked"):
                    # Migrations before the release is unpacked bring the schema back to the serving
                    # release's (roles/release/tasks/reconcile.yml): what an interrupted run left.
                    operation["actions"].append("schema brought back to the serving release's ("
                                                + ", ".join([f"reverted {name}" for name in found.get("reverted") or []]
                                                            + [f"applied {name}" for name in found.get("applied") or []])
                                                + ")")
                elif found.get("reverted"):
                    operation["reverted"] = found["reverted"]
        elif module == "site_upstream" and not failed and found.get("changed"):
            if operation.get("step"):
                operation["actions"].append(f"switched traffic back to slot {found.get('slot')}")
                operation["switched_back"] = True
            else:
                operation["switched"] = {"slot": found.get("slot"), "previous_slot": found.get("previous_slot")}
        elif module == "site_release" and not failed:
            record = found.get("record") or {}
            state = found.get("operation")
            if state == "live":
                current = record.get("current", {})
                operation["release"] = current.get("release_id") or operation.get("release")
                operation["previous"] = (record.get("previous") or {}).get("release_id")
                lkg = record.get("last_known_good") or {}
                operation["config_hash"] = found.get("config_hash") or ""
                if lkg.get("release_id") == current.get("release_id"):
                    operation["last_known_good"] = lkg
            elif state == "failed":
                operation["release_failed"] = found.get("release_id")
            elif state == "present":
                operation["unpacked"] = True

    def _outside_lock(self, host: str, module: str, found: dict, result, failed: bool) -> dict:
        """A maintenance switch or a restore: operations without a deploy lock of their own."""
        entry = {"time": utc_now(), "site": found.get("site") or "", "environment": self._environment(), "host": host,
                 "operator": self._operator(), "result": "failed" if failed else "ok"}
        if module == "site_maintenance":
            entry.update(operation="maintenance", maintenance=found.get("maintenance"))
        else:
            entry.update(operation="restore", backup_id=found.get("backup_id"), duration_s=found.get("duration_seconds"))
        if failed:
            entry.update(step=result.task.get_name(), reason=first_line(found.get("msg")), actions="nothing changed"
                         if module == "site_maintenance" or not found.get("changed") else "",
                         impact="the site's database was not replaced" if module == "pg_backup_restore" else
                         f"maintenance mode did not switch {found.get('maintenance', '')}")
        return entry

    def _drill(self, host: str, module: str, found: dict, failed: bool) -> None:
        backup_id = found.get("backup_id") or ""
        site = found.get("site") or backup_id.split("-", 1)[0]
        if not site:
            return
        self._done.append({
            "time": utc_now(), "site": site, "environment": self._environment(), "host": host,
            "operation": "drill", "result": "pass" if found.get("passed") and not failed else "fail",
            "engine": found.get("engine") or module.replace("_drill", ""), "backup_id": backup_id,
            "rto_s": found.get("rto_seconds"), "rpo_s": found.get("rpo_seconds"),
            "backup_ended_at": found.get("backup_ended_at"), "operator": self._operator(),
            "reason": first_line(found.get("reason") or (found.get("msg") if failed else "")),
            "step": f"{PREFIX}{module}" if failed else ""})

    def _close(self, host: str) -> None:
        operation = self._open.pop(host)
        operation["time"] = utc_now()
        operation["duration_s"] = round(time.monotonic() - operation.pop("started"), 1)
        artifact = self._artifacts.get(operation["site"], {})
        if operation.get("release") and artifact.get("release") == operation["release"]:
            operation.update(version=artifact.get("version"), git_sha=artifact.get("git_sha"))
        elif operation.get("release"):
            operation["version"] = str(operation["release"]).split("+", 1)[0]
        if operation["operation"] == "deploy" and operation.get("previous") and not operation.get("step"):
            operation["operation"] = "upgrade"
        if operation.get("step"):
            operation["result"] = "rolled back" if operation.get("switched_back") else "failed"
            operation["actions"].append("lock released")
            operation["impact"] = self._impact(operation)
        operation["actions"] = "; ".join(operation["actions"])
        self._done.append(operation)
        lkg = operation.get("last_known_good")
        if lkg and not operation.get("step"):
            self._last_known_good[operation["site"]] = {
                "site": operation["site"], "release": lkg.get("release_id"), "slot": lkg.get("slot"),
                "git_sha": operation.get("git_sha"), "migrations_version": operation.get("migration_version"),
                "config_hash": operation.get("config_hash") or None,
                "timestamp": operation["time"], "all_tests_pass": True, "health_status": "ok",
                "host": operation["host"]}

    @staticmethod
    def _impact(operation: dict) -> str:
        release = operation.get("release") or "the new release"
        if operation.get("switched_back"):
            return f"{release} served briefly, then traffic went back to the previous slot"
        if operation.get("switched"):
            return f"{release} received traffic"
        return f"the serving release kept serving; {release} never received traffic"

    # --- the end of the run -------------------------------------------------------------------

    def v2_playbook_on_stats(self, stats):
        if context.CLIARGS.get("check"):
            return
        for host in list(self._open):
            operation = self._open[host]
            operation.setdefault("step", "the run ended with the deploy lock still held")
            operation["result"] = "failed"
            self._close(host)
        if not self._done:
            return
        self._done = fold_maintenance(self._done)
        directory = self._records_dir()
        try:
            for warning in Records(directory).write(self._done, self._last_known_good):
                display.warning(f"records: {warning}")
            # On stderr: stdout may be a machine-read stream (the json callback, ansible-runner).
            display.display(f"records: {len(self._done)} operation(s) recorded in {directory}", stderr=True)
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
