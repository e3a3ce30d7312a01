"""The full verification's own checks (prod_verify verify, module_utils/health.py) and its
judgement of a host (module_utils/verification.py), with the host's programs faked."""

from __future__ import annotations

import datetime
import hashlib
import json
import os

import pytest

from ansible_collections.opspack.platform.plugins.module_utils import health, verification

NOW = datetime.datetime(2026, 12, 6, 12, 0, 0, tzinfo=datetime.timezone.utc)
STAMP = NOW.timestamp()

TABLE = {"nftables": [
    {"metainfo": {"version": "1.0.6", "json_schema_version": 1}},
    {"table": {"family": "inet", "name": "opspack_filter", "handle": 2}},
    {"set": {"family": "inet", "name": "ssh_meter_v4", "table": "opspack_filter", "type": "ipv4_addr", "handle": 4,
             "flags": ["timeout"], "timeout": 60, "elem": [{"elem": {"val": "203.0.113.9", "expires": 41}}]}},
    {"chain": {"family": "inet", "table": "opspack_filter", "name": "input", "handle": 1, "type": "filter",
               "hook": "input", "prio": 0, "policy": "drop"}},
    {"rule": {"family": "inet", "table": "opspack_filter", "chain": "input", "handle": 7,
              "expr": [{"match": {"op": "==", "left": {"payload": {"protocol": "tcp", "field": "dport"}}, "right": 443}},
                       {"counter": {"packets": 12, "bytes": 900}}, {"accept": None}]}},
]}


def listing(table=None) -> str:
    return json.dumps(table or TABLE)


def test_the_fingerprint_ignores_handles_counters_and_the_meters_addresses():
    first = health.ruleset_fingerprint(listing())
    later = json.loads(listing())
    later["nftables"][1]["table"]["handle"] = 9
    later["nftables"][2]["set"]["elem"] = [{"elem": {"val": "198.51.100.4", "expires": 12}}]
    later["nftables"][4]["rule"]["expr"][1]["counter"] = {"packets": 99999, "bytes": 1}
    later["nftables"][0]["metainfo"]["version"] = "1.1.3"
    assert health.ruleset_fingerprint(json.dumps(later)) == first and first["rules"] == 1


def test_a_rule_added_by_hand_changes_the_fingerprint():
    added = json.loads(listing())
    added["nftables"].append({"rule": {"family": "inet", "table": "opspack_filter", "chain": "input", "handle": 30,
                                       "expr": [{"match": {"op": "==", "left": {"payload": {"protocol": "tcp", "field": "dport"}},
                                                           "right": 9}}, {"accept": None}]}})
    changed = health.ruleset_fingerprint(json.dumps(added))
    assert changed["sha256"] != health.ruleset_fingerprint(listing())["sha256"] and changed["rules"] == 2


def test_unreadable_nft_output_is_a_check_error():
    with pytest.raises(health.CheckError):
        health.ruleset_fingerprint("nft: not json")


@pytest.fixture
def box(tmp_path, monkeypatch):
    """A host for the verification's own checks: a firewall fingerprint, sshd, two sites' backups."""
    baseline = tmp_path / "ruleset.json"
    baseline.write_text(json.dumps(dict(health.ruleset_fingerprint(listing()), table="inet opspack_filter")))
    backups = tmp_path / "backups"
    for site, hours in (("blog", 2), ("blog", 30), ("shop", 50)):
        ended = datetime.datetime.fromtimestamp(STAMP - hours * 3600, datetime.timezone.utc)
        backup_id = f"{site}-postgresql-{ended.strftime('%Y%m%dT%H%M%SZ')}"
        (backups / site).mkdir(parents=True, exist_ok=True)
        (backups / site / f"{backup_id}.dump").write_bytes(b"data")
        (backups / site / f"{backup_id}.manifest.json").write_text(json.dumps(
            {"backup_id": backup_id, "site": site, "engine": "postgresql", "file": f"{backup_id}.dump",
             "ended_at": ended.strftime("%Y-%m-%dT%H:%M:%SZ")}))
    live = {"table": listing(), "sshd": "port 22\npermitrootlogin no\npasswordauthentication no\nmaxauthtries 3\n"}

    def fake_run(argv, env=None, timeout=30, ok_codes=(0,)):
        if argv[0] == "nft":
            return live["table"]
        if argv[0] == "sshd":
            return live["sshd"]
        raise AssertionError(argv)
    monkeypatch.setattr(health, "run", fake_run)
    config = {"firewall": {"baseline": str(baseline)}, "ssh": {"port": 22, "permitrootlogin": "no", "passwordauthentication": "no",
                                                               "maxauthtries": 3},
              "backups": {"dir": str(backups), "max_age_hours": 26, "sites": ["blog", "shop"]}}
    return {"config": config, "live": live, "backups": backups}


def own_checks(box, step, *args):
    checks = health.Checks(box["config"], health.State(None, False), STAMP)
    getattr(checks, step)(*args)
    return [(finding.check, finding.site, finding.status, finding.reason) for finding in checks.findings]


def test_the_firewall_passes_as_loaded_and_fails_with_a_rule_added_by_hand(box):
    assert own_checks(box, "firewall") == [("firewall", None, "ok", "")]
    added = json.loads(listing())
    added["nftables"].append({"rule": {"family": "inet", "table": "opspack_filter", "chain": "input", "expr": [{"drop": None}]}})
    box["live"]["table"] = json.dumps(added)
    assert own_checks(box, "firewall") == [("firewall", None, "fail", "ruleset_changed_by_hand")]


def test_sshd_settings_that_differ_are_named_never_their_values(box):
    assert own_checks(box, "ssh") == [("ssh", None, "ok", "")]
    box["live"]["sshd"] = box["live"]["sshd"].replace("passwordauthentication no", "passwordauthentication yes")
    checks = health.Checks(box["config"], health.State(None, False), STAMP)
    checks.ssh()
    assert checks.findings[0].status == "fail" and checks.findings[0].figures["names"] == ["passwordauthentication"]
    assert "names=passwordauthentication" in checks.findings[0].line() and "yes" not in checks.findings[0].line()


def test_backups_fresh_per_site_and_the_recorded_newest_still_there(box):
    found = own_checks(box, "backup_age")
    assert found == [("backup_age", "blog", "ok", ""), ("backup_age", "shop", "fail", "stale")]
    newest = sorted((box["backups"] / "blog").glob("*.manifest.json"))[-1]
    recorded = [{"site": "blog", "backup_id": newest.name.removesuffix(".manifest.json"), "engine": "postgresql"}]
    assert ("backup_missing", "blog", "ok", "") in own_checks(box, "backup_age", recorded)
    newest.with_name(newest.name.replace(".manifest.json", ".dump")).unlink()
    assert ("backup_missing", "blog", "fail", "recorded_backup_missing") in own_checks(box, "backup_age", recorded)


def test_missing_security_headers_are_named():
    assert health.missing_headers({"strict-transport-security": "max-age=1", "x-content-type-options": "nosniff",
                                   "referrer-policy": "no-referrer", "x-frame-options": "DENY"}) == []
    assert health.missing_headers({"content-security-policy": "frame-ancestors 'none'"}) == \
        ["referrer-policy", "strict-transport-security", "x-content-type-options"]


HOST_CHECKS = [
    {"check": "cpu", "status": "ok", "value": 3, "threshold": 80, "severity": "P3"},
    {"check": "disk", "status": "fail", "value": 87.5, "threshold": 80, "severity": "P2"},
    {"check": "database", "status": "ok", "site": "blog", "size_mb": 7},
    {"check": "traffic", "status": "insufficient_data", "site": "shop", "reason": "delivered_total_0", "severity": "P4"},
    {"check": "pitr", "status": "error", "reason": "pgbackrest_failed", "severity": "P3"},
    {"check": "updates", "status": "warn", "reason": "security_updates_pending", "value": 4, "threshold": 0},
]


def judged(**changes):
    args = dict(host_checks=HOST_CHECKS, smoke={"blog": [], "shop": ["certificate expires in 3 days (< 14)"]},
                drift={"changed": 1, "failed": 0, "tasks": ["Nginx | Write the base configuration"]}, drift_error="",
                drills={"blog": {"result": "pass", "time": "2026-12-01T10:00:00Z"},
                        "shop": {"result": "fail", "time": "2026-12-05T10:00:00Z"}},
                sites=["blog", "shop"], now=NOW)
    args.update(changes)
    return {(check["check"], check["site"]): check for check in verification.judge(**args)}


def test_each_check_is_pass_warn_or_fail_with_a_one_line_reason():
    found = judged()
    assert found[("cpu", "")]["status"] == "pass" and found[("cpu", "")]["reason"] == ""
    assert found[("disk", "")]["status"] == "fail" and found[("disk", "")]["reason"] == "87.5 > 80"
    assert ("database", "blog") not in found
    assert found[("traffic", "shop")]["status"] == "warn"
    assert found[("pitr", "")]["status"] == "fail" and found[("pitr", "")]["reason"] == "could not check: pgbackrest_failed"
    assert found[("updates", "")]["status"] == "warn"
    assert found[("smoke", "shop")]["status"] == "fail" and "certificate" in found[("smoke", "shop")]["reason"]
    assert found[("drill", "blog")]["status"] == "pass" and found[("drill", "shop")]["status"] == "fail"
    assert found[("drift", "")]["status"] == "fail" and "Nginx | Write the base configuration" in found[("drift", "")]["reason"]
    assert all("\n" not in check["reason"] for check in found.values())


def test_what_could_not_be_told_fails_and_an_old_or_missing_drill_warns():
    found = judged(drift=None, drift_error="interactive_password", smoke={"blog": []},
                   drills={"blog": {"result": "pass", "time": "2026-09-01T10:00:00Z"}})
    assert found[("drift", "")]["status"] == "fail" and "interactive_password" in found[("drift", "")]["reason"]
    assert found[("smoke", "shop")]["status"] == "fail"
    assert found[("drill", "blog")]["status"] == "warn" and found[("drill", "shop")]["status"] == "warn"


def test_one_event_per_site_failing_on_its_own_or_the_hosts_checks_with_the_worst_severity():
    checks = list(judged(drift={"changed": 0, "failed": 0, "tasks": []}).values())
    events = {told["site"]: told for told in verification.site_events(checks, ["blog", "shop"], {"ended": "2026-12-06T12:00:00Z"})}
    assert events["blog"]["operation"] == "verify" and events["blog"]["result"] == "fail"
    assert events["blog"]["severity"] == "P2" and "disk" in events["blog"]["reason"] and "smoke@shop" not in events["blog"]["reason"]
    assert "smoke@shop" in events["shop"]["reason"]
    healthy = [check for check in checks if check["status"] != "fail"]
    assert {told["result"] for told in verification.site_events(healthy, ["blog", "shop"], {})} == {"pass"}


def test_addresses_and_urls_never_reach_a_reason():
    found = judged(smoke={"blog": ["certificate: Failed to get cert from 203.0.113.7:443, error: certificate has expired",
                                   "no answer from https://blog.example.com/health via [2001:db8::1]:443 or 2001:db8::2"],
                          "shop": []})
    reason = found[("smoke", "blog")]["reason"]
    assert "203.0.113.7" not in reason and "2001:db8" not in reason and "blog.example.com" not in reason
    assert "certificate has expired" in reason and reason.count("<address>") == 3 and "<url>" in reason
    assert verification.redact("Nginx | Write the port 80 server; 002_tags; 1.0.0+abc") == \
        "Nginx | Write the port 80 server; 002_tags; 1.0.0+abc"


def test_times_and_versions_are_not_taken_for_addresses():
    text = ("last restore drill fail (2026-12-05T10:00:00Z); health answers from 1.0.0, not 2.0.0; took 09:14:04; "
            "opspack.platform.nginx : Nginx | Reload")
    assert verification.redact(text) == text


def test_host_key_files_of_a_type_not_allowed_fail_the_ssh_check(box, tmp_path, monkeypatch):
    keys = tmp_path / "ssh"
    keys.mkdir()
    for name in ("ssh_host_ed25519_key", "ssh_host_ed25519_key.pub", "ssh_host_ecdsa_key.pub", "sshd_config"):
        (keys / name).write_text("")
    on_disk = health.host_key_types
    monkeypatch.setattr(health, "host_key_types", lambda: on_disk(str(keys)))
    box["config"]["ssh_host_key_types"] = ["ed25519"]
    assert own_checks(box, "ssh") == [("ssh", None, "ok", ""), ("ssh_host_keys", None, "ok", "")]
    (keys / "ssh_host_ecdsa_key").write_text("")
    checks = health.Checks(box["config"], health.State(None, False), STAMP)
    checks.ssh()
    assert (checks.findings[1].status, checks.findings[1].figures["names"]) == ("fail", ["ecdsa"])
    assert "host_key_not_allowed" in checks.findings[1].line()


def test_each_baseline_control_that_no_longer_holds_is_named(tmp_path, monkeypatch):
    sysctl = tmp_path / "60-baseline.conf"
    sysctl.write_text("kernel.dmesg_restrict = 1\n")
    allow = tmp_path / "cron.allow"
    allow.write_text("root\n")
    allow.chmod(0o640)
    manifest = tmp_path / "controls.json"
    manifest.write_text(json.dumps({"controls": {
        "sysctl": {"files": {str(sysctl): hashlib.sha256(b"kernel.dmesg_restrict = 1\n").hexdigest()},
                   "sysctl": {"kernel.dmesg_restrict": 1}},
        "cron": {"files": {str(allow): hashlib.sha256(b"root\n").hexdigest()}, "absent": [str(tmp_path / "cron.deny")],
                 "modes": {str(allow): "0640"}},
        "debsums": {"packages": ["debsums"]}}}))
    monkeypatch.setattr(health, "_sysctl_writable", lambda: False)
    monkeypatch.setattr(health, "run", lambda argv, env=None, timeout=30, ok_codes=(0,): "ii debsums\n")

    def hardening():
        checks = health.Checks({"hardening": {"manifest": str(manifest)}}, health.State(None, False), STAMP)
        checks.hardening()
        return checks.findings[0]
    found = hardening()
    assert (found.status, found.figures["controls"], found.figures["differs"]) == ("ok", 3, 0)
    (tmp_path / "cron.deny").write_text("")
    sysctl.write_text("kernel.dmesg_restrict = 0\n")
    found = hardening()
    assert (found.status, found.reason, found.figures["names"]) == ("fail", "control_changed", ["cron", "sysctl"])
    assert "names=cron,sysctl" in found.line()
    # A purged package: dpkg-query lists the others and exits 1; the control is named, not an error.
    monkeypatch.setattr(health, "run", lambda argv, env=None, timeout=30, ok_codes=(0,): "" if 1 in ok_codes else "x")
    assert hardening().figures["names"] == ["cron", "debsums", "sysctl"]
    manifest.unlink()
    assert hardening().reason == "baseline_not_applied"


def test_the_health_role_reads_the_manifest_where_the_baseline_role_writes_it():
    import yaml
    from pathlib import Path
    roles = Path(__file__).resolve().parents[4] / "roles"
    written = yaml.safe_load((roles / "baseline" / "vars" / "main.yml").read_text())["__baseline_manifest_file"]
    assert yaml.safe_load((roles / "health" / "defaults" / "main.yml").read_text())["health_baseline_manifest"] == written


def _scheduled_check_result(tmp_path, monkeypatch, check, control, last_run):
    """The finding `check` makes from a unit whose last run systemd describes as last_run; the unit
    it asked about."""
    manifest = tmp_path / "controls.json"
    manifest.write_text(json.dumps({"controls": control}))
    asked = []

    def fake_run(argv, env=None, timeout=30, ok_codes=(0,)):
        asked.append(argv)
        return last_run
    monkeypatch.setattr(health, "run", fake_run)
    checks = health.Checks({"hardening": {"manifest": str(manifest)}}, health.State(None, False), STAMP)
    getattr(checks, check)()
    found = checks.findings[0]
    assert found.severity == "P2" or found.status == "ok"
    return found, asked[0][-1]


@pytest.mark.parametrize("last_run, status, reason, figures", [
    ("Result=success\nExecMainStatus=0\nExecMainExitTimestampMonotonic=0\n", "ok", "", {"checked": 0}),
    ("Result=success\nExecMainStatus=0\nExecMainExitTimestampMonotonic=91\n", "ok", "", {"checked": 1}),
    # AIDE's exit status sums 1 added, 2 removed, 4 changed.
    ("Result=exit-code\nExecMainStatus=5\nExecMainExitTimestampMonotonic=91\n", "fail", "files_changed",
     {"checked": 1, "added": 1, "removed": 0, "changed": 1}),
    ("Result=exit-code\nExecMainStatus=17\nExecMainExitTimestampMonotonic=91\n", "fail", "check_failed",
     {"checked": 1, "exit_status": 17}),
    ("Result=timeout\nExecMainStatus=0\nExecMainExitTimestampMonotonic=91\n", "fail", "check_failed",
     {"checked": 1, "exit_status": 0}),
    # Seen and acknowledged by the operator: systemctl reset-failed.
    ("Result=success\nExecMainStatus=4\nExecMainExitTimestampMonotonic=91\n", "ok", "", {"checked": 1}),
])
def test_the_daily_check_reports_the_last_file_integrity_check(tmp_path, monkeypatch, last_run, status, reason, figures):
    database = tmp_path / "aide.db"
    database.write_text("")
    control = {"file_integrity": {"packages": ["aide"],
                                  "integrity": {"service": "opspack-file-integrity.service", "database": str(database)}}}
    found, unit = _scheduled_check_result(tmp_path, monkeypatch, "file_integrity", control, last_run)
    assert (found.check, found.status, found.reason, found.figures) == ("file_integrity", status, reason, figures)
    assert unit == "opspack-file-integrity.service"
    database.unlink()
    manifest = tmp_path / "controls.json"
    checks = health.Checks({"hardening": {"manifest": str(manifest)}}, health.State(None, False), STAMP)
    checks.file_integrity()
    assert (checks.findings[0].status, checks.findings[0].reason) == ("fail", "database_missing")


def test_no_integrity_finding_where_the_baseline_schedules_no_check(tmp_path):
    manifest = tmp_path / "controls.json"
    manifest.write_text(json.dumps({"controls": {"debsums": {"packages": ["debsums"]}}}))
    for config in ({"hardening": {"manifest": str(manifest)}}, {"hardening": {"manifest": str(tmp_path / "none.json")}}):
        checks = health.Checks(config, health.State(None, False), STAMP)
        checks.file_integrity()
        checks.package_integrity()
        assert checks.findings == []


@pytest.mark.parametrize("last_run, status, reason, figures", [
    ("Result=success\nExecMainStatus=0\nExecMainExitTimestampMonotonic=0\n", "ok", "", {"checked": 0}),
    ("Result=success\nExecMainStatus=0\nExecMainExitTimestampMonotonic=91\n", "ok", "", {"checked": 1}),
    # debsums: 2 is a file changed or missing.
    ("Result=exit-code\nExecMainStatus=2\nExecMainExitTimestampMonotonic=91\n", "fail", "files_changed",
     {"checked": 1, "exit_status": 2}),
    # A file changed, and an error besides: the change is not hidden behind the error.
    ("Result=exit-code\nExecMainStatus=3\nExecMainExitTimestampMonotonic=91\n", "fail", "files_changed",
     {"checked": 1, "exit_status": 3}),
    ("Result=exit-code\nExecMainStatus=1\nExecMainExitTimestampMonotonic=91\n", "fail", "check_failed",
     {"checked": 1, "exit_status": 1}),
    ("Result=signal\nExecMainStatus=9\nExecMainExitTimestampMonotonic=91\n", "fail", "check_failed",
     {"checked": 1, "exit_status": 9}),
    ("Result=success\nExecMainStatus=2\nExecMainExitTimestampMonotonic=91\n", "ok", "", {"checked": 1}),
])
def test_the_daily_check_reports_the_last_package_integrity_check(tmp_path, monkeypatch, last_run, status, reason, figures):
    control = {"debsums": {"packages": ["debsums"], "integrity": {"service": "opspack-package-integrity.service"}}}
    found, unit = _scheduled_check_result(tmp_path, monkeypatch, "package_integrity", control, last_run)
    assert (found.check, found.status, found.reason, found.figures) == ("package_integrity", status, reason, figures)
    assert unit == "opspack-package-integrity.service"


def test_compilers_open_to_others_break_the_control_links_and_other_programs_do_not(tmp_path, monkeypatch):
    patterns = ["as", "*-linux-gnu*-as", "gcc-[0-9]*", "*-linux-gnu*-gcc-[0-9]*"]
    gcc = tmp_path / "x86_64-linux-gnu-gcc-12"
    gcc.write_text("")
    gcc.chmod(0o750)
    (tmp_path / "gcc-12").symlink_to(gcc.name)  # the plain names are links: left out
    (tmp_path / "cpp-12").write_text("")  # not a compiler here
    (tmp_path / "cpp-12").chmod(0o755)
    monkeypatch.setattr(health, "_installed", lambda packages: True)
    control = {"executables_restricted": {"dir": str(tmp_path), "patterns": patterns}}
    root = os.getuid() == 0
    assert health._executables_open_to_others(str(tmp_path), patterns) == ([] if root else [str(gcc)])
    assert health.control_holds(control) is root
    assembler = tmp_path / "as"
    assembler.write_text("")
    assembler.chmod(0o755)  # a new compiler, installed since the run, open to everyone
    assert health._executables_open_to_others(str(tmp_path), patterns) == [str(assembler)] + ([] if root else [str(gcc)])
    assert not health.control_holds(control)
    # A host without the directory has no compiler to restrict.
    assert health._executables_open_to_others(str(tmp_path / "none"), patterns) == []
    if root:  # a group that is not root's may run it too
        assembler.chmod(0o750)
        os.chown(gcc, 0, 33)
        assert health._executables_open_to_others(str(tmp_path), patterns) == [str(gcc)]
