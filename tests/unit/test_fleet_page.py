"""The fleet page (opspack report --html) from records: deterministic, self-contained, escaped.
Its rendering in a browser is proven in the verify scenario (chromium, headless)."""

from __future__ import annotations

import json

from opspack import fleet_page


def records_dir(tmp_path):
    directory = tmp_path / "records"
    (directory / "reports" / "verify").mkdir(parents=True)
    history = [
        {"time": "2026-12-05T03:00:00Z", "site": "blog", "environment": "production", "host": "web-1", "operation": "backup",
         "result": "ok", "backup_id": "blog-postgresql-20261205T030000Z", "backup_ended_at": "2026-12-05T03:00:09Z",
         "engine": "postgresql"},
        {"time": "2026-12-06T09:00:00Z", "site": "blog", "environment": "production", "host": "web-1", "operation": "drill",
         "result": "pass", "rto_s": 8.5, "engine": "postgresql"},
        {"time": "2026-12-06T09:05:00Z", "site": "blog", "environment": "production", "host": "web-1", "operation": "backup",
         "result": "ok", "backup_id": "blog-files-20261206T090500Z", "engine": "files"},
    ]
    (directory / "history.jsonl").write_text("".join(json.dumps(entry) + "\n" for entry in history))
    (directory / "loop-sites-matrix.md").write_text(
        "<!-- opspack:matrix:start x -->\n| site | environment | result |\n|---|---|---|\n| blog | production | ok |\n"
        "<!-- opspack:matrix:end -->\n")
    (directory / "what-broke-last-time.md").write_text(
        "# What broke last time\n\n## 2026-12-06T08:00:00Z deploy blog (production, web-1): failed\n\n"
        "- **Severity:** P2 (page)\n- **What broke:** switch: nginx said <script>alert(1)</script>\n"
        "- **Follow-up:** _(to be filled in by a person)_\n")
    (directory / "reports" / "verify" / "web-1.json").write_text(json.dumps(
        {"host": "web-1", "status": "fail", "generated_at": "2026-12-06T09:10:00Z",
         "checks": [{"check": "firewall", "status": "fail", "reason": "ruleset_changed_by_hand"}]}))
    (directory / "daily.jsonl").write_text("".join(json.dumps(
        {"time": f"2026-12-0{day}T06:00:00Z", "host": "web-1", "disk_percent": 40 + day,
         "sites": {"blog": {"requests": 100 * day, "error_rate_percent": 0.1, "p95_seconds": 0.2}}}) + "\n" for day in range(1, 6)))
    return directory


def test_the_page_is_the_same_for_the_same_records_and_holds_every_part(tmp_path):
    directory = records_dir(tmp_path)
    first, second = fleet_page.render(directory), fleet_page.render(directory)
    assert first == second
    assert "as of 2026-12-06T09:10:00Z" in first
    assert "<td>blog</td><td>production</td>" in first
    assert '<td>web-1</td><td class="fail">fail</td>' in first and "ruleset_changed_by_hand" in first
    assert first.count("<polyline") == 4 and "500 (min 100, max 500)" in first
    assert "blog-postgresql-20261205T030000Z" in first and "<td>30 h</td>" in first, "each engine's last backup"
    assert "blog-files-20261206T090500Z" in first and "RTO 8.5 s" in first
    assert "Open incidents (1)" in first


def test_text_from_the_records_is_escaped_and_nothing_is_fetched(tmp_path):
    page = fleet_page.render(records_dir(tmp_path))
    assert "<script" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "https://" not in page and 'src="' not in page and 'href="' not in page


def test_no_records_yet_is_a_page_that_says_so(tmp_path):
    (tmp_path / "records").mkdir()
    page = fleet_page.render(tmp_path / "records")
    assert "no records yet" in page and "Open incidents (0)" in page
