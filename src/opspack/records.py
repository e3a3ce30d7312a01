"""`opspack matrix|history|incidents|verify|daily`: the records the records callback keeps, for a
person in a terminal. They read the files only; the callback is the one writer."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

MATRIX = "loop-sites-matrix.md"
INCIDENTS = "what-broke-last-time.md"
HISTORY = "history.jsonl"
REPORTS = "reports"
# `opspack verify` and `opspack daily`: the tool whose last report per host they print.
REPORT_TOOLS = {"verify": "verify", "daily": "ops_daily"}
# An incident's follow-up line until a person writes what was done (the records callback's text).
FOLLOW_UP_PENDING = "_(to be filled in by a person)_"
START = "<!-- opspack:matrix:start"
END = "<!-- opspack:matrix:end -->"


class RecordsError(Exception):
    """The records cannot be read; the message says where to look."""


def locate(state_dir: Path | None, inventory: str | None = None, vault_password_file: str | None = None) -> Path:
    """records/ of the state directory; when none is given, the one the playbooks use, asked of
    Ansible (the lookup opspack.platform.state_dir with the inventory's own variables and
    ansible.cfg), so the rule lives in one place."""
    if state_dir:
        return Path(state_dir).expanduser() / "records"
    ansible = Path(sys.executable).parent / "ansible"
    command = [str(ansible) if ansible.exists() else "ansible", "localhost", "-m", "ansible.builtin.debug",
               "-a", "msg={{ lookup('opspack.platform.state_dir', 'records') }}"]
    command += ["-i", inventory] if inventory else []
    command += ["--vault-password-file", vault_password_file] if vault_password_file else []
    env = dict(os.environ, ANSIBLE_LOAD_CALLBACK_PLUGINS="1", ANSIBLE_STDOUT_CALLBACK="ansible.builtin.minimal",
               ANSIBLE_NOCOLOR="1", ANSIBLE_DEPRECATION_WARNINGS="0", ANSIBLE_LOCALHOST_WARNING="0")
    try:
        ran = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120, check=False)
        answer = json.loads(ran.stdout.split("=>", 1)[1]) if ran.returncode == 0 and "=>" in ran.stdout else {}
    except (OSError, ValueError, subprocess.TimeoutExpired) as error:
        ran, answer = None, {"error": str(error)}
    if not isinstance(answer, dict) or not answer.get("msg"):
        why = (ran.stderr if ran else answer.get("error", "")).strip().splitlines()
        raise RecordsError("could not ask Ansible where this inventory's records are"
                           + (f" ({why[-1]})" if why else "")
                           + ": pass --state-dir DIR (or --records DIR), or --vault-password-file for a vaulted inventory")
    return Path(answer["msg"])


def _read(directory: Path, name: str) -> str:
    try:
        return (directory / name).read_text(encoding="utf-8")
    except FileNotFoundError as error:
        raise RecordsError(f"no {name} in {directory}: no run has written records there yet "
                           "(pass -i INVENTORY, --state-dir DIR or --records DIR for another inventory's)") from error


def _matrix_table(directory: Path) -> tuple[str, list[list[str]]]:
    text = _read(directory, MATRIX)
    if START in text and END in text:
        text = text.split(START, 1)[1].split("\n", 1)[1].split(END, 1)[0]
    rows = [[cell.strip() for cell in line.strip().strip("|").split("|")]
            for line in text.splitlines() if line.startswith("|") and not set(line) <= set("|-: ")]
    return text, rows


def matrix_rows(directory: Path) -> list[dict]:
    """The sites matrix as one mapping per row, keyed by the column headers."""
    _, rows = _matrix_table(directory)
    return [dict(zip(rows[0], row)) for row in rows[1:]] if rows else []


def matrix(directory: Path) -> str:
    text, rows = _matrix_table(directory)
    if not rows:
        return text
    widths = [max(len(row[index]) if index < len(row) else 0 for row in rows) for index in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows)


def history_entries(directory: Path, site: str | None = None) -> list[dict]:
    """Every recorded operation (of SITE), oldest first, as the callback wrote it."""
    entries = []
    for raw in _read(directory, HISTORY).splitlines():
        try:
            entry = json.loads(raw)
        except ValueError:
            continue
        if not site or entry.get("site") == site:
            entries.append(entry)
    return entries


def history(directory: Path, site: str | None = None) -> str:
    lines = []
    for entry in history_entries(directory, site):
        detail = entry.get("release") or entry.get("backup_id") or ""
        if entry.get("step"):
            detail += f"  failed at: {entry['step']}"
        lines.append(f"{entry.get('time', ''):20}  {entry.get('site', ''):12} {entry.get('environment', ''):12} "
                     f"{entry.get('host', ''):10} {entry.get('operation', ''):11} {entry.get('result', ''):11} "
                     f"{detail}".rstrip())
    return "\n".join(lines) if lines else f"no operations recorded{' for ' + site if site else ''}"


def incident_entries(directory: Path) -> list[dict]:
    """Each entry of the incident log: its title line, severity, escalation, what broke, its
    follow-up and whether it is still open (no follow-up written by a person yet)."""
    entries = []
    for block in _read(directory, INCIDENTS).split("\n## ")[1:]:
        fields = dict(re.findall(r"^- \*\*([^*]+):\*\* (.*)$", block, re.MULTILINE))
        severity, _, channel = fields.get("Severity", "").partition(" ")
        follow_up = fields.get("Follow-up", "").strip()
        entries.append({"title": block.splitlines()[0].strip(), "severity": severity, "escalation": channel.strip("()"),
                        "what_broke": fields.get("What broke", ""), "release": fields.get("Release", ""),
                        "follow_up": "" if follow_up in ("", FOLLOW_UP_PENDING) else follow_up,
                        "open": follow_up in ("", FOLLOW_UP_PENDING)})
    return entries


def incidents(directory: Path, only_open: bool = False) -> str:
    if not only_open:
        return _read(directory, INCIDENTS).rstrip()
    found = [entry for entry in incident_entries(directory) if entry["open"]]
    if not found:
        return "no open incident: every entry has its follow-up"
    return "\n".join(f"{entry['severity'] or '--':3} {entry['escalation'] or '-':7} {entry['title']}\n"
                     f"    {entry['what_broke']}" for entry in found)


def load_reports(directory: Path, tool: str) -> dict[str, dict]:
    """The last report of TOOL (verify, ops_daily) of each host, by host name; none is {}."""
    folder = directory / REPORTS / tool
    found = {}
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        try:
            found[path.stem] = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
    return found


def reports(directory: Path, command: str) -> dict[str, dict]:
    """The last report of each host for `verify` or `daily`, by host name."""
    folder = directory / REPORTS / REPORT_TOOLS[command]
    found = load_reports(directory, REPORT_TOOLS[command])
    if not found:
        playbook = "opspack.platform.verify" if command == "verify" else "opspack.platform.ops_daily"
        raise RecordsError(f"no {command} report in {folder}: run ansible-playbook {playbook} with the records callback "
                           "enabled (or pass -i INVENTORY, --state-dir DIR or --records DIR for another inventory's)")
    return found


def report_text(found: dict[str, dict]) -> str:
    """Each host's last report: its summary and every check that did not pass."""
    lines = []
    for host, report in sorted(found.items()):
        lines.append(f"{host}  {report.get('generated_at', '')}  {report.get('summary', '')}")
        for check in report.get("checks", []):
            if check.get("status") in ("pass", "ok"):
                continue
            where = check.get("site") or "host"
            words = [check.get("reason") or ""]
            if check.get("value") is not None and check.get("threshold") is not None:
                words.append(f"value={check['value']} threshold={check['threshold']}")
            lines.append(f"    {check.get('status', ''):17} {where:12} {check.get('check', ''):18} {' '.join(w for w in words if w)}".rstrip())
    return "\n".join(lines)
