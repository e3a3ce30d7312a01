"""The health checks' logic (ops_daily, prod_verify) with the host's signals faked: log parsing,
thresholds, the contract's exit codes and tokens, alert deduplication and rate limiting, the
dead-man's switch, and that no output line carries a secret or an identifier. The lab scenario
`operate` proves the same on real hosts."""

from __future__ import annotations

import datetime
import json
import sys
import time

import pytest

from ansible_collections.opspack.platform.plugins.module_utils import health
from ansible_collections.opspack.platform.plugins.module_utils.health import Finding

NOW = datetime.datetime(2026, 12, 6, 12, 0, 0, tzinfo=datetime.timezone.utc).timestamp()
SECRET = "canary-Secret-9a7b5c"
CLIENT = "203.0.113.77"


def log_line(when: float, status: int = 200, host: str = "blog.example.com", rt: float = 0.05,
             path: str = "/notes?email=someone@example.com") -> str:
    stamp = datetime.datetime.fromtimestamp(when, datetime.timezone.utc).strftime("%d/%b/%Y:%H:%M:%S +0000")
    return (f'{CLIENT} - - [{stamp}] "GET {path} HTTP/1.1" {status} 12 "-" "agent {SECRET}" host={host} '
            f'rt={rt:.3f} uct=0.000 urt={rt:.3f} ua=127.0.0.1:8000\n')


@pytest.fixture
def host(tmp_path, monkeypatch):
    """A host's files: config, env files, logs, credentials, state; node exporter and units faked."""
    (tmp_path / "srv/blog/shared").mkdir(parents=True)
    (tmp_path / "srv/blog/shared/env").write_text(f'DATABASE_URL="postgresql://blog:{SECRET}@127.0.0.1/blog"\n'
                                                   f'SECRET_KEY="{SECRET}"\n')
    (tmp_path / "credentials").mkdir()
    (tmp_path / "credentials/webhook-ops").write_text("http://127.0.0.1:1/hook-" + SECRET + "\n")
    (tmp_path / "credentials/deadman-url").write_text("http://127.0.0.1:1/ping/" + SECRET + "\n")
    (tmp_path / "markers").mkdir()
    log = tmp_path / "access.log"
    log.write_text("".join(log_line(NOW - 60 * minute) for minute in range(1, 201)))
    config = {
        "version": 1, "host": "vps1", "window_minutes": 1440, "state_dir": str(tmp_path / "state"),
        "credentials_dir": str(tmp_path / "credentials"), "node_exporter_url": "http://127.0.0.1:9100/metrics",
        "nginx_logs": [str(tmp_path / "access.log.1"), str(log)], "disk_paths": [str(tmp_path)],
        "services": ["nginx.service"], "failure_marker_dir": str(tmp_path / "markers"),
        "postgresql": {"enabled": False}, "redis": {"enabled": False},
        "thresholds": {"disk_percent": 100}, "webhooks": [{"name": "ops", "format": "json", "channels": ["page", "notify"],
                                                            "credential": "webhook-ops"}],
        "deadman_credential": "deadman-url", "alert_repeat_minutes": 360, "alert_max_per_hour": 2,
        "sites": [{"name": "blog", "domains": ["blog.example.com"], "user": "blog", "database": "blog",
                   "env_file": str(tmp_path / "srv/blog/shared/env"), "required_env": ["DATABASE_URL", "SECRET_KEY"],
                   "env_names": [], "thresholds": dict(health.SITE_THRESHOLDS)}],
    }
    (tmp_path / "config.json").write_text(json.dumps(config))
    cpu = {"busy": 10.0}

    def metrics(_url):
        cpu["busy"] += 0.2  # 20 % of one second on a one-CPU host
        return {"node_cpu_seconds_total": [({"cpu": "0", "mode": "idle"}, 1000.0 - cpu["busy"] + cpu["busy"] * 5),
                                           ({"cpu": "0", "mode": "user"}, cpu["busy"])],
                "node_memory_MemTotal_bytes": [({}, 1000.0)], "node_memory_MemAvailable_bytes": [({}, 600.0)]}

    monkeypatch.setattr(health, "read_metrics", metrics)
    monkeypatch.setattr(health.time, "sleep", lambda _seconds: None)
    monkeypatch.setattr(health, "unit_active", lambda _unit: True)
    monkeypatch.setattr(health, "unit_failed", lambda _unit: False)
    posts = []
    monkeypatch.setattr(health, "post", lambda url, payload, content_type="application/json": posts.append((url, payload)))
    return {"dir": tmp_path, "config": config, "log": log, "posts": posts}


def daily(host, scheduled=False, now=NOW, tool="ops_daily", mode="prod"):
    return health.run_checks(host["config"], tool, mode, scheduled=scheduled, now=now)


def checks(found, name):
    return [entry for entry in found["checks"] if entry["check"] == name]


def test_parse_log_time_reads_the_offset():
    assert health.parse_log_time("06/Dec/2026:13:00:00 +0100") == NOW
    assert health.parse_log_time("06/Dec/2026:11:30:00 -0030") == NOW


def test_percentile_is_nearest_rank():
    assert health.percentile([], 0.95) is None
    assert health.percentile(list(range(1, 101)), 0.95) == 95
    assert health.percentile([0.2], 0.95) == 0.2


def test_traffic_counts_only_the_window_and_the_sites_domains(tmp_path):
    log = tmp_path / "log"
    log.write_text(log_line(NOW - 10) + log_line(NOW - 20, status=502) + log_line(NOW - 90000)
                   + log_line(NOW - 30, host="other.example.com") + "garbage line\n" + log_line(NOW - 5, host="BLOG.example.com"))
    found = health.read_traffic([str(log), str(tmp_path / "missing")], {"blog.example.com": "blog"}, NOW - 86400, NOW)
    assert found["blog"].requests == 3 and found["blog"].errors == 1


def test_healthy_host_exits_0(host):
    code, found = daily(host)
    assert code == health.EXIT_OK, found["lines"]
    assert found["status"] == "healthy" and found["green"]
    assert checks(found, "cpu")[0]["value"] == pytest.approx(20.0)
    assert checks(found, "memory")[0]["value"] == pytest.approx(40.0)
    assert checks(found, "traffic")[0]["requests"] == 200
    assert found["lines"][-1].startswith("ops_daily status=healthy mode=prod exit=0 ")


def test_no_traffic_yet_exits_2_with_the_exact_token(host):
    host["log"].write_text("")
    code, found = daily(host)
    assert code == health.EXIT_UNHEALTHY
    assert "site=blog check=traffic status=insufficient_data reason=delivered_total_0" in found["lines"]
    assert found["green"], "a scheduled run counts a site without traffic yet green"
    assert daily(host, mode="dev")[0] == health.EXIT_OK


def test_a_5xx_burst_above_half_a_percent_exits_2_with_severity(host):
    with host["log"].open("a") as log:
        log.write("".join(log_line(NOW - 30, status=503) for _ in range(2)))  # 2 of 202: 0.99 %
    code, found = daily(host)
    assert code == health.EXIT_UNHEALTHY and not found["green"]
    (rate,) = checks(found, "error_rate")
    assert rate["status"] == "fail" and rate["threshold"] == 0.5 and rate["severity"] == "P1"
    assert "site=blog check=error_rate status=fail value=0.99 threshold=0.50 severity=P1" in found["lines"]


def test_p95_above_its_threshold_fails(host):
    with host["log"].open("a") as log:
        log.write("".join(log_line(NOW - 30, rt=3.5) for _ in range(20)))
    code, found = daily(host)
    assert code == health.EXIT_UNHEALTHY
    assert checks(found, "p95")[0]["status"] == "fail"


def test_missing_required_setting_prints_the_contract_token_with_names_only(host):
    (host["dir"] / "srv/blog/shared/env").write_text(f'DATABASE_URL="postgresql://blog:{SECRET}@127.0.0.1/blog"\nSECRET_KEY=""\n')
    host["config"]["sites"][0]["required_env"].append("MAIL_URL")
    code, found = daily(host, tool="prod_verify", mode="dry_run")
    assert code == health.EXIT_UNHEALTHY
    assert "prod_config status=fail reason=missing_env site=blog names=MAIL_URL,SECRET_KEY" in found["lines"]
    assert [entry["check"] for entry in found["checks"]] == ["env"], "dry_run checks the configuration only"


def test_a_check_that_cannot_run_exits_1(host, monkeypatch):
    def unreachable(_url):
        raise health.CheckError("node_exporter_unreachable")
    monkeypatch.setattr(health, "read_metrics", unreachable)
    code, found = daily(host)
    assert code == health.EXIT_ERROR, found["lines"]
    assert "host check=node status=error reason=node_exporter_unreachable" in found["lines"]
    assert not found["green"]


def test_a_breach_wins_over_a_check_that_could_not_run(host, monkeypatch):
    monkeypatch.setattr(health, "unit_active", lambda _unit: False)
    monkeypatch.setattr(health, "read_metrics", lambda _url: {})
    code, found = daily(host)
    assert code == health.EXIT_UNHEALTHY
    assert checks(found, "services")[0]["inactive"] == 1


def test_a_bug_in_one_check_is_an_error_not_a_crash(host, monkeypatch):
    monkeypatch.setattr(health, "disk_usage", lambda _paths: 1 / 0)
    code, found = daily(host)
    assert code == health.EXIT_ERROR
    assert "host check=disk status=error reason=internal_ZeroDivisionError" in found["lines"]


def test_failed_backups_are_reported(host):
    (host["dir"] / "markers/backup-blog-postgresql").write_text("2026-12-06T03:00:00Z\nno space\n")
    code, found = daily(host)
    assert code == health.EXIT_UNHEALTHY
    assert checks(found, "backups")[0]["failed_jobs"] == 1


def test_disk_forecast_from_the_history_of_scheduled_runs():
    history = [[NOW - 86400, 100e9], [NOW, 110e9]]
    assert health.disk_days_left(history, 30e9) == pytest.approx(3.0)
    assert health.disk_days_left([[NOW - 3600, 1], [NOW, 2]], 1e9) is None, "an hour is too short to forecast"
    assert health.disk_days_left([[NOW - 86400, 5], [NOW, 5]], 1e9) is None


def test_scheduled_runs_alert_once_then_repeat_after_the_interval_and_resolve(host):
    burst = "".join(log_line(NOW - 30, status=500) for _ in range(10))
    with host["log"].open("a") as log:
        log.write(burst)
    code, found = daily(host, scheduled=True)
    assert code == health.EXIT_UNHEALTHY and found["delivery"]["sent"] == 1
    (url, payload), = host["posts"]
    message = json.loads(payload)
    assert url.endswith("hook-" + SECRET)
    assert message["firing"] == [{"channel": "page", "metric": "error_rate", "severity": "P1", "site": "blog",
                                  "threshold": 0.5, "value": pytest.approx(4.7619, abs=1e-3)}]
    # The same breach an hour later: not told again.
    assert daily(host, scheduled=True, now=NOW + 3600)[1]["delivery"]["sent"] == 0
    # After the repeat interval: told again.
    assert daily(host, scheduled=True, now=NOW + 7 * 3600)[1]["delivery"]["sent"] == 1
    # Cleared: one resolved message.
    host["log"].write_text(log_line(NOW + 8 * 3600 - 60))
    found = daily(host, scheduled=True, now=NOW + 8 * 3600)[1]
    assert found["delivery"] == {"sent": 1, "suppressed": 0, "failed": 0, "firing": 0, "resolved": 1}
    assert json.loads(host["posts"][-1][1])["resolved"] == [{"channel": "page", "metric": "error_rate", "site": "blog"}]


def test_alerts_are_rate_limited_per_webhook_and_the_held_back_count_is_told(host):
    host["config"]["alert_repeat_minutes"] = 0
    with host["log"].open("a") as log:
        log.write("".join(log_line(NOW - 30, status=500) for _ in range(10)))
    sent = [daily(host, scheduled=True, now=NOW + 60 * minute)[1]["delivery"] for minute in range(5)]
    assert [entry["sent"] for entry in sent] == [1, 1, 0, 0, 0]
    assert [entry["suppressed"] for entry in sent] == [0, 0, 1, 1, 1]
    after_an_hour = daily(host, scheduled=True, now=NOW + 3700)[1]["delivery"]
    assert after_an_hour["sent"] == 1
    assert json.loads(host["posts"][-1][1])["suppressed"] == 3


def test_read_only_runs_keep_no_state_and_send_nothing(host):
    with host["log"].open("a") as log:
        log.write("".join(log_line(NOW - 30, status=500) for _ in range(10)))
    daily(host)
    daily(host, tool="prod_verify", mode="verify")
    assert not (host["dir"] / "state").exists()
    assert host["posts"] == []


def main(argv, tool):
    code, out, err = health.cli(argv, tool)
    print(out, end="")
    print(err, end="", file=sys.stderr)
    return code


def test_the_scheduled_program_pings_the_deadmans_switch(host):
    config_path = str(host["dir"] / "config.json")
    assert main(["--config", config_path, "--scheduled"], tool="ops_daily") == 0
    assert [url.rsplit("/", 1)[-1] for url, _ in host["posts"]] == ["start", SECRET]
    host["log"].write_text("")
    assert main(["--config", config_path, "--scheduled"], tool="ops_daily") == 0, \
        "a site without traffic yet: the unit succeeds and the switch hears success"
    assert host["posts"][-1][0].endswith(SECRET)
    (host["dir"] / "markers/backup-x").write_text("x\n")
    assert main(["--config", config_path, "--scheduled"], tool="ops_daily") == 2
    assert host["posts"][-1][0].endswith(SECRET + "/2")


def test_the_program_exits_1_without_its_configuration_or_on_a_usage_error(tmp_path, capsys):
    assert main(["--config", str(tmp_path / "none.json")], tool="ops_daily") == 1
    assert capsys.readouterr().out.strip() == "ops_daily status=error reason=config_missing exit=1"
    assert main(["dry_run", "--config", str(tmp_path / "none.json")], tool="prod_verify") == 1
    assert main(["--mode", "nonsense"], tool="ops_daily") == 1, "a usage error is an error, never 'unhealthy'"
    assert main(["--help"], tool="prod_verify") == 0


def test_no_output_line_carries_a_secret_or_an_identifier(host, capsys):
    """Canary: secrets in the env file, credentials and the log's user agent; identifiers in the
    log (client address, path, query, domain) and the database name."""
    real_now = time.time()  # the programs read the clock
    host["log"].write_text("".join(log_line(real_now - 30, status=500 if index < 10 else 200) for index in range(100)))
    host["config"]["sites"][0]["required_env"].append("MISSING_ONE")
    config_path = str(host["dir"] / "config.json")
    (host["dir"] / "config.json").write_text(json.dumps(host["config"]))
    for argv, tool in ((["--config", config_path, "--scheduled"], "ops_daily"), (["--config", config_path], "ops_daily"),
                       (["--config", config_path, "--json"], "ops_daily"), (["verify", "--config", config_path], "prod_verify"),
                       (["dry_run", "--config", config_path], "prod_verify")):
        main(argv, tool=tool)
    out = capsys.readouterr()
    text = out.out + out.err
    assert "prod_config status=fail reason=missing_env" in text and "check=error_rate status=fail" in text
    for needle in (SECRET, CLIENT, "someone@example.com", "/notes", "blog.example.com", "postgresql://", "hook-"):
        assert needle not in text, needle
    state = "".join(path.read_text() for path in (host["dir"] / "state").iterdir())
    assert SECRET not in state and CLIENT not in state


def test_lines_are_aggregate_key_values():
    finding = Finding("error_rate", "fail", "blog", 0.99, 0.5, severity="P1")
    assert finding.line() == "site=blog check=error_rate status=fail value=0.99 threshold=0.50 severity=P1"
    assert Finding("disk", "ok", None, 41.0, 80).line() == "host check=disk status=ok value=41 threshold=80"
    with pytest.raises(ValueError):
        Finding("disk", "green")


def window(requests: int, errors: int = 0, seconds: float = 0.05) -> health.Window:
    found = health.Window()
    for index in range(requests):
        found.add(500 if index < errors else 200, seconds)
    return found


def test_the_watch_judges_only_on_enough_requests_and_errors():
    quiet = window(0)
    assert health.watch_breach(window(49, errors=10), quiet, 0.5, 2) == "", "49 requests: not judged yet"
    assert health.watch_breach(window(400, errors=2), quiet, 0.5, 2) == "", "two errors never decide"
    breach = health.watch_breach(window(60, errors=3), quiet, 0.5, 2)
    assert breach.startswith("5xx rate 5.00 % over 60 requests is above 0.5 %")


def test_the_watch_blames_a_release_only_when_worse_than_the_one_before():
    before = window(1000, errors=20)  # 2 %: the site was already failing
    assert health.watch_breach(window(100, errors=3), before, 0.5, 2) == "", "3 % is not twice 2 %"
    assert "5xx rate" in health.watch_breach(window(100, errors=5), before, 0.5, 2)
    assert health.watch_breach(window(100, seconds=2.5), window(100, seconds=1.5), 0.5, 2) == ""
    assert "p95 response time 3.500 s" in health.watch_breach(window(100, seconds=3.5), window(100, seconds=1.5), 0.5, 2)


def test_log_requests_read_the_upstream_that_answered():
    line = log_line(NOW, status=502)
    ((site, moment, status, seconds, upstream),) = health.log_requests([line, "noise\n"], {"blog.example.com": "blog"})
    assert (site, moment, status, seconds, upstream) == ("blog", NOW, 502, 0.05, "127.0.0.1:8000")


def test_the_log_follower_reads_each_line_once_and_starts_again_after_rotation(tmp_path):
    log = tmp_path / "access.log"
    log.write_text("one\ntwo\npart")
    follower = health.LogFollower(str(log))
    assert list(follower.lines()) == ["one", "two"]
    with log.open("a") as handle:
        handle.write("ial\nthree\n")
    assert list(follower.lines()) == ["partial", "three"]
    assert list(follower.lines()) == []
    log.rename(tmp_path / "access.log.1")
    with (tmp_path / "access.log.1").open("a") as handle:
        handle.write("late line of the old file\n")  # nginx writes there until it reopens its log
    log.write_text("fresh\n")
    assert list(follower.lines()) == ["late line of the old file", "fresh"]
    follower.close()


def test_a_check_by_hand_reports_a_stopped_timer_or_a_missed_run(host, monkeypatch):
    host["config"]["schedule"] = {"timer": "opspack-health.timer", "service": "opspack-health.service", "max_age_hours": 26}
    assert checks(daily(host)[1], "schedule")[0]["reason"] == "not_run_yet"
    daily(host, scheduled=True, now=NOW - 30 * 3600)
    (late,) = checks(daily(host)[1], "schedule")
    assert (late["status"], late["reason"], late["value"]) == ("fail", "missed_run", 30.0)
    daily(host, scheduled=True, now=NOW - 3600)
    assert checks(daily(host)[1], "schedule")[0]["status"] == "ok"
    monkeypatch.setattr(health, "unit_active", lambda unit: not unit.endswith(".timer"))
    code, found = daily(host)
    assert code == 2 and "host check=schedule status=fail reason=timer_inactive severity=P2" in found["lines"]
    assert "schedule" not in [entry["check"] for entry in daily(host, scheduled=True)[1]["checks"]]


def test_log_lines_with_retried_upstreams_and_odd_user_names_are_read():
    retried = log_line(NOW, status=502).replace("ua=127.0.0.1:8000", "ua=127.0.0.1:8001, 127.0.0.1:8000")
    grouped = log_line(NOW).replace("uct=0.000", "uct=0.000 : 0.001").replace("ua=127.0.0.1:8000", "ua=127.0.0.1:9 : 127.0.0.1:8000")
    spaced = log_line(NOW).replace(" - - [", " - ann smith [")
    found = list(health.log_requests([retried, grouped, spaced], {"blog.example.com": "blog"}))
    assert [(entry[2], entry[4]) for entry in found] == [(502, "127.0.0.1:8000"), (200, "127.0.0.1:8000"), (200, "127.0.0.1:8000")]


def test_a_log_that_is_missing_or_in_another_format_is_an_error_not_no_traffic(host):
    host["log"].unlink()
    code, found = daily(host)
    assert code == 1 and "host check=traffic status=error reason=nginx_log_missing" in found["lines"]
    host["log"].write_text("".join(f"127.0.0.1 - - [x] combined format line {index}\n" for index in range(30)))
    assert "host check=traffic status=error reason=nginx_log_format" in daily(host)[1]["lines"]


def test_a_host_limit_given_by_the_operator_wins_over_the_sites(host):
    assert health.host_threshold(host["config"], "cpu_percent") == 80, "the sites' (defaults)"
    host["config"]["thresholds"]["cpu_percent"] = 95
    assert health.host_threshold(host["config"], "cpu_percent") == 95
    host["config"]["sites"] = []
    assert health.host_threshold({"thresholds": {}, "sites": []}, "memory_percent") == 85


def burst(host, now=NOW):
    host["log"].write_text("".join(log_line(now - 30, status=500 if index < 10 else 200) for index in range(100)))


def calm(host, now=NOW):
    host["log"].write_text("".join(log_line(now - 30) for _ in range(100)))


def test_each_webhook_is_told_on_its_own_and_a_failed_one_is_told_again_next_run(host, monkeypatch):
    host["config"]["webhooks"].append({"name": "chat", "format": "slack", "channels": "page", "credential": "webhook-chat"})
    (host["dir"] / "credentials/webhook-chat").write_text("http://127.0.0.1:1/chat\n")
    down = {"chat": True}

    def post(url, payload, content_type="application/json"):
        if url.endswith("/chat") and down["chat"]:
            raise health.CheckError("delivery_failed")
        host["posts"].append((url, payload))
    monkeypatch.setattr(health, "post", post)
    burst(host)
    code, found = daily(host, scheduled=True)
    assert found["delivery"]["sent"] == 1 and found["delivery"]["failed"] == 1
    assert code == 2 and "host check=alerts status=error reason=delivery_failed" in found["lines"]
    down["chat"] = False
    found = daily(host, scheduled=True, now=NOW + 60)[1]
    assert found["delivery"]["sent"] == 1, "only the webhook that missed it is told again"
    assert json.loads(host["posts"][-1][1])["text"].startswith("[P1] vps1 blog: error_rate 10")
    calm(host, NOW + 120)
    found = daily(host, scheduled=True, now=NOW + 120)[1]
    assert found["delivery"]["sent"] == 2 and found["delivery"]["resolved"] == 2, "both hear it cleared"


def test_a_resolved_message_that_could_not_be_sent_is_sent_later(host, monkeypatch):
    burst(host)
    daily(host, scheduled=True)
    calm(host, NOW + 60)
    monkeypatch.setattr(health, "post", lambda *_args, **_kwargs: (_ for _ in ()).throw(health.CheckError("delivery_failed")))
    assert daily(host, scheduled=True, now=NOW + 60)[1]["delivery"]["failed"] == 1
    sent = []
    monkeypatch.setattr(health, "post", lambda url, payload, content_type="": sent.append(json.loads(payload)))
    calm(host, NOW + 120)
    daily(host, scheduled=True, now=NOW + 120)
    assert [message["resolved"] for message in sent] == [[{"channel": "page", "metric": "error_rate", "site": "blog"}]]


def test_a_breach_whose_check_did_not_report_stays_open_and_is_not_told_again(host):
    burst(host)
    daily(host, scheduled=True)
    host["log"].write_text("")  # no traffic: the error rate is unknown, not resolved
    assert daily(host, scheduled=True, now=NOW + 60)[1]["delivery"] == {"sent": 0, "suppressed": 0, "failed": 0,
                                                                         "firing": 0, "resolved": 0}
    burst(host, NOW + 120)
    assert daily(host, scheduled=True, now=NOW + 120)[1]["delivery"]["sent"] == 0, "still the same open breach"
    assert len(host["posts"]) == 1, "one message in all (run_checks makes no pings: the cli does)"


def test_an_unwritable_state_directory_is_an_error_with_every_finding_kept(host):
    (host["dir"] / "state").write_text("a file where the directory should be")
    code, found = daily(host, scheduled=True)
    assert code == 1 and "host check=state status=error reason=state_unwritable" in found["lines"]
    assert any(line.startswith("host check=memory status=ok") for line in found["lines"])
