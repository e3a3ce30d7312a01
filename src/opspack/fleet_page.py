"""`opspack report --html DIR`: the fleet page, one static HTML file written from the records
(no server, no script, no external asset): the sites matrix, each host's last verification, the
daily signals as small trend charts (requests, 5xx rate, p95 per site; disk per host), backups and
drills with their age, and the open incidents.

The same records give the same bytes: nothing reads the clock. Ages are counted from the newest
time in the records ("as of")."""

from __future__ import annotations

import datetime
import html
import json
from pathlib import Path

from opspack import records

PAGE = "index.html"
TREND_POINTS = 30
STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:1.5rem;color:#1d2733;background:#fff}
h1{font-size:1.4rem;margin:0 0 .2rem} h2{font-size:1.1rem;margin:1.6rem 0 .5rem;border-bottom:1px solid #d5dbe1}
p.asof{color:#5a6b7b;margin:0 0 1rem}
table{border-collapse:collapse;margin:.3rem 0} th,td{border:1px solid #d5dbe1;padding:.25rem .5rem;text-align:left;vertical-align:top}
th{background:#f1f4f7} td.fail,td.failed{background:#fde2e1} td.pass,td.ok{background:#e3f5e6} td.warn{background:#fff4d6}
.trends{display:flex;flex-wrap:wrap;gap:1rem} .trend{border:1px solid #d5dbe1;padding:.4rem .6rem}
.trend h3{font-size:.9rem;margin:0 0 .2rem} .chart{display:flex;align-items:center;gap:.4rem;font-size:.8rem;color:#5a6b7b}
svg polyline{fill:none;stroke:#2f6db5;stroke-width:1.5} svg line{stroke:#d5dbe1}
.empty{color:#5a6b7b;font-style:italic}
"""


def _stamp(text: str):
    try:
        return datetime.datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.timezone.utc)
    except (TypeError, ValueError):
        return None


def _age(text: str, as_of) -> str:
    then = _stamp(text)
    if not then or not as_of:
        return ""
    hours = (as_of - then).total_seconds() / 3600
    return f"{hours:.0f} h" if hours < 48 else f"{hours / 24:.0f} d"


def _jsonl(path: Path) -> list[dict]:
    entries = []
    try:
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if isinstance(entry, dict):
                entries.append(entry)
    except FileNotFoundError:
        pass
    return entries


def _table(headers, rows, status_column: int | None = None) -> str:
    if not rows:
        return '<p class="empty">nothing recorded yet</p>'
    out = ["<table><thead><tr>" + "".join(f"<th>{html.escape(str(cell))}</th>" for cell in headers) + "</tr></thead><tbody>"]
    for row in rows:
        cells = []
        for index, cell in enumerate(row):
            text = "" if cell is None else str(cell)
            css = f' class="{html.escape(text.split(" ")[0])}"' if index == status_column and text else ""
            cells.append(f"<td{css}>{html.escape(text)}</td>")
        out.append("<tr>" + "".join(cells) + "</tr>")
    return "".join(out) + "</tbody></table>"


def sparkline(values: list[float], width: int = 160, height: int = 36) -> str:
    """An inline SVG line of values (oldest first), scaled to its own range."""
    points = [value for value in values if isinstance(value, (int, float))]
    if not points:
        return '<span class="empty">no data</span>'
    low, high = min(points), max(points)
    span = (high - low) or 1.0
    step = width / max(len(points) - 1, 1)
    coords = " ".join(f"{index * step:.1f},{height - 2 - (value - low) / span * (height - 4):.1f}" for index, value in enumerate(points))
    return (f'<svg width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img">'
            f'<line x1="0" y1="{height - 1}" x2="{width}" y2="{height - 1}"/><polyline points="{coords}"/></svg>'
            f"<span>{_number(points[-1])} (min {_number(low)}, max {_number(high)})</span>")


def _number(value) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def _trends(daily: list[dict]) -> str:
    series: dict[tuple[str, str], dict[str, list]] = {}
    for line in daily[-TREND_POINTS * 50:]:
        host = str(line.get("host", ""))
        for site, signals in sorted((line.get("sites") or {}).items()):
            found = series.setdefault((f"{site}@{host}", "site"), {"requests": [], "5xx rate %": [], "p95 s": []})
            found["requests"].append(signals.get("requests"))
            found["5xx rate %"].append(signals.get("error_rate_percent"))
            found["p95 s"].append(signals.get("p95_seconds"))
        if line.get("disk_percent") is not None:
            series.setdefault((host, "host"), {"disk %": []})["disk %"].append(line.get("disk_percent"))
    if not series:
        return '<p class="empty">no daily check recorded yet (ansible-playbook opspack.platform.ops_daily)</p>'
    boxes = []
    for (name, _kind), metrics in sorted(series.items()):
        charts = "".join(f'<div class="chart"><b>{html.escape(metric)}</b>{sparkline(values[-TREND_POINTS:])}</div>'
                         for metric, values in metrics.items())
        boxes.append(f'<div class="trend"><h3>{html.escape(name)}</h3>{charts}</div>')
    return '<div class="trends">' + "".join(boxes) + "</div>"


def render(directory: Path) -> str:
    """The page for the records in directory."""
    history = _jsonl(directory / records.HISTORY)
    daily = _jsonl(directory / "daily.jsonl")
    verified = records.load_reports(directory, records.REPORT_TOOLS["verify"])
    times = [entry.get("time", "") for entry in history] + [line.get("time", "") for line in daily] \
        + [report.get("generated_at", "") for report in verified.values()]
    as_of_text = max((text for text in times if _stamp(text)), default="")
    as_of = _stamp(as_of_text)
    try:
        matrix = records.matrix_rows(directory)
    except records.RecordsError:
        matrix = []
    headers = list(matrix[0]) if matrix else []
    matrix_html = _table(headers, [[row.get(column, "") for column in headers] for row in matrix],
                         headers.index("result") if "result" in headers else None)
    verify_rows = []
    for host, report in sorted(verified.items()):
        problems = [f"{check.get('status')}: {check.get('site') or 'host'} {check.get('check')} {check.get('reason') or ''}".strip()
                    for check in report.get("checks", []) if check.get("status") not in ("pass", "ok")]
        verify_rows.append([host, report.get("status", ""), report.get("generated_at", ""), _age(report.get("generated_at", ""), as_of),
                            "; ".join(problems) or "-"])
    # The last backup and drill of each site, host and engine (a site's database, files and Redis each have theirs).
    last: dict[tuple[str, str, str, str], dict] = {}
    for entry in history:
        if (entry.get("operation") == "backup" and entry.get("result") == "ok") or entry.get("operation") == "drill":
            last[(entry.get("site", ""), entry.get("host", ""), entry.get("engine", ""), entry["operation"])] = entry
    data_rows = []
    for (site, host, _engine, kind), entry in sorted(last.items()):
        when = entry.get("backup_ended_at") or entry.get("time", "") if kind == "backup" else entry.get("time", "")
        detail = entry.get("backup_id", "") if kind == "backup" else (f"RTO {entry['rto_s']} s" if entry.get("rto_s") else "")
        data_rows.append([site, host, kind, entry.get("result", ""), entry.get("engine", ""), when, _age(when, as_of), detail])
    try:
        incidents = [entry for entry in records.incident_entries(directory) if entry["open"]]
    except records.RecordsError:
        incidents = []
    incident_rows = [[entry["severity"], entry["escalation"], entry["title"], entry["what_broke"]] for entry in incidents]
    body = [
        "<h1>opspack fleet</h1>",
        f'<p class="asof">as of {html.escape(as_of_text or "no records yet")} (the newest time in the records)</p>',
        f"<h2>Sites matrix</h2>{matrix_html}",
        "<h2>Last verification per host</h2>" + _table(["host", "result", "when (UTC)", "age", "not passing"], verify_rows, 1),
        f"<h2>Daily signals</h2>{_trends(daily)}",
        "<h2>Backups and drills</h2>" + _table(["site", "host", "kind", "result", "engine", "when (UTC)", "age", "detail"], data_rows, 3),
        f"<h2>Open incidents ({len(incident_rows)})</h2>" + _table(["severity", "escalation", "incident", "what broke"], incident_rows),
    ]
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>opspack fleet</title>"
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<style>{STYLE}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")


def write(directory: Path, target: Path) -> Path:
    """Write the page into target (a directory), atomically; its path."""
    target.mkdir(parents=True, exist_ok=True)
    page = target / PAGE
    text = render(directory)
    temporary = page.with_name(f".{PAGE}.tmp")
    temporary.write_text(text, encoding="utf-8")
    temporary.replace(page)
    return page
