"""The daily check and the production verification on a provisioned lab host, against real
signals: nginx's access log of traffic the tests make (bounded, to 127.0.0.1), the node exporter,
PostgreSQL, Redis, the units; alerts and dead-man's-switch pings go to a receiver on the host's
127.0.0.1 (src/opspack/testing/receiver.py, standing in for Slack and healthchecks.io).

The tests run in file order and each puts back what it broke; the sites' logs are emptied
where a test needs a window of its own traffic only."""

from __future__ import annotations

import base64
import json
import time
import uuid

import pytest

from opspack.testing import client
from opspack.testing.scenario import (CA, CANARIES, PROJECT, RequestLoop, bring_to, deploy, get, history, playbook, record,
                                     sample_releases)

RECEIVER_PORT = 18080
RECEIVER_LOG = "/var/tmp/opspack-receiver.jsonl"
CHECK_ID = str(uuid.uuid4())
HOOK = f"http://127.0.0.1:{RECEIVER_PORT}/hook/ops-{CHECK_ID[:8]}"
DEADMAN = f"http://127.0.0.1:{RECEIVER_PORT}/ping/{CHECK_ID}"
SITES = ("blog", "shop")
INSUFFICIENT = "status=insufficient_data reason=delivered_total_0"
MISSING_ENV = "prod_config status=fail reason=missing_env"
# Every output the tests saw, for the canary test at the end: the host programs' (aggregate-only
# lines) and the playbooks' (which name domains and paths, but never a secret).
SEEN: list[str] = []
PLAYBOOK_OUTPUT: list[str] = []


def run_tool(host, command: str):
    """A host program as root (the operator's sudo); its exit code and lines."""
    with host.sudo():
        ran = host.run(command)
    SEEN.append(ran.stdout + ran.stderr)
    return ran.rc, ran.stdout.splitlines()


def ops_daily(host, *args: str):
    return run_tool(host, " ".join(["/usr/local/sbin/ops_daily", *args]))


def empty_logs(host) -> None:
    with host.sudo():
        host.check_output("truncate -s 0 /var/log/nginx/access.log && rm -f /var/log/nginx/access.log.1")


def traffic(host, requests: int = 40, sites=SITES, path: str = "/") -> dict:
    """Bounded requests to each site's PATH through nginx (127.0.0.1); statuses counted."""
    port, statuses = client.https_port(host), {}
    for site in sites:
        for _ in range(requests):
            status = client.get(port, CA, path, site)[0]
            statuses[status] = statuses.get(status, 0) + 1
    return statuses


def receiver_calls(host) -> list[dict]:
    with host.sudo():
        text = host.check_output(f"cat {RECEIVER_LOG} 2>/dev/null || true")
    return [json.loads(line) for line in text.splitlines() if line]


def receiver_status(host, period: int = 86400, grace: int = 3600) -> str:
    return host.check_output(f"curl -sf 'http://127.0.0.1:{RECEIVER_PORT}/status/{CHECK_ID}?period={period}&grace={grace}'")


@pytest.fixture(scope="module")
def receiver(host):
    """The receiver as a transient unit on the host, stopping by itself after 30 minutes."""
    source = base64.b64encode((PROJECT / "src" / "opspack" / "testing" / "receiver.py").read_bytes()).decode()
    with host.sudo():
        host.check_output(f"echo {source} | base64 -d > /var/tmp/opspack-receiver.py")
        host.run("systemctl stop opspack-test-receiver.service; rm -f " + RECEIVER_LOG)
        host.check_output(f"systemd-run --unit=opspack-test-receiver --property=RuntimeMaxSec=1800 /usr/bin/python3 "
                          f"/var/tmp/opspack-receiver.py --port {RECEIVER_PORT} --log {RECEIVER_LOG} --seconds 1790")
    for _ in range(50):
        if host.run(f"curl -sf http://127.0.0.1:{RECEIVER_PORT}/status/none").rc == 0:
            break
        time.sleep(0.2)
    else:
        pytest.fail("the test receiver did not start on the host")
    yield
    with host.sudo():
        host.run("systemctl stop opspack-test-receiver.service")


@pytest.fixture(scope="module")
def alerting(host, receiver):
    """The host provisioned again with a webhook and a dead-man's switch, as an operator adds them."""
    hooks = json.dumps({"health_webhooks": [{"name": "ops", "url": HOOK, "format": "json"}], "health_deadman_url": DEADMAN})
    ran = playbook("provision", "-e", hooks, site=None)
    PLAYBOOK_OUTPUT.append(ran.stdout + ran.stderr)
    assert ran.returncode == 0, ran.stdout[-3000:] + ran.stderr[-2000:]
    for secret in (HOOK, DEADMAN, CHECK_ID):
        assert secret not in ran.stdout + ran.stderr, "a webhook or dead-man URL reached provisioning's output"
    yield


def test_provisioning_installed_the_checks_and_their_timer(host):
    timer = host.service("opspack-health.timer")
    assert timer.is_enabled and timer.is_running
    for tool in ("ops_daily", "prod_verify"):
        assert host.file(f"/usr/local/sbin/{tool}").mode == 0o755
    with host.sudo():
        config = json.loads(host.file("/etc/opspack/health/config.json").content_string)
        assert host.file("/etc/opspack/health/credentials").mode == 0o700
        assert host.file("/etc/opspack/health/credentials/redis-password").mode == 0o600
    assert [site["name"] for site in config["sites"]] == list(SITES)
    assert "DATABASE_URL" in config["sites"][0]["required_env"]
    for canary in CANARIES:
        assert canary not in json.dumps(config)


def test_a_site_without_traffic_yet_exits_2_with_the_exact_token(host):
    bring_to(host, "1.0.0")
    empty_logs(host)
    code, lines = ops_daily(host)
    assert code == 2, lines
    for site in SITES:
        assert f"site={site} check=traffic {INSUFFICIENT}" in lines
    assert lines[-1].startswith("ops_daily status=insufficient_data mode=prod exit=2 ")
    assert ops_daily(host, "--mode", "dev")[0] == 0, "dev mode does not count a site without traffic"


def test_a_healthy_host_exits_0_from_the_host_and_from_the_control_node(host):
    empty_logs(host)
    assert traffic(host) == {200: 80}
    code, lines = ops_daily(host)
    assert code == 0, lines
    checked = {line.split(" check=")[1].split()[0] for line in lines if " check=" in line}
    assert {"cpu", "memory", "disk", "traffic", "error_rate", "p95", "services", "db_connections", "long_queries",
            "lock_waits", "archiving", "redis_memory", "backups", "env", "schedule"} <= checked
    assert "site=blog check=traffic status=ok errors_5xx=0 requests=40" in lines
    started = time.monotonic()
    ran = playbook("ops_daily", site=None)
    print(f"figures: ansible-playbook opspack.platform.ops_daily on one host: {time.monotonic() - started:.1f} s")
    PLAYBOOK_OUTPUT.append(ran.stdout + ran.stderr)
    assert ran.returncode == 0, ran.stdout[-3000:]
    assert "ops_daily status=healthy mode=prod exit=0" in ran.stdout


def test_prod_verify_dry_run_and_verify_on_a_healthy_host(host):
    code, lines = run_tool(host, "/usr/local/sbin/prod_verify dry_run")
    assert code == 0, lines
    assert lines == ["site=blog check=env status=ok required=2", "site=shop check=env status=ok required=2",
                     "prod_verify status=healthy mode=dry_run exit=0 checks=2 failed=0 errors=0 insufficient_data=0 warnings=0"]
    # Production-ready includes fresh backups and a PITR window: take them as an operator would.
    ran = playbook("backup", site=None)
    assert ran.returncode == 0, ran.stdout[-3000:]
    with host.sudo():
        host.check_output("systemctl start opspack-pgbackrest-full.service")
    started = time.monotonic()
    code, lines = run_tool(host, "/usr/local/sbin/prod_verify verify")
    print(f"figures: prod_verify verify on the host: {time.monotonic() - started:.1f} s, {len(lines) - 1} checks")
    assert code == 0, lines
    verified = {line.split(" check=")[1].split()[0] for line in lines if " check=" in line}
    assert {"https_redirect", "tls_protocols", "security_headers", "maintenance", "firewall", "ssh", "backup_age",
            "pitr", "updates"} <= verified, lines


def test_missing_required_settings_give_the_prod_config_token_with_names_only(host):
    with host.sudo():
        host.check_output("cp -p /srv/blog/shared/env /var/tmp/blog-env.saved && sed -i '/^REDIS_URL=/d' /srv/blog/shared/env")
    try:
        code, lines = run_tool(host, "/usr/local/sbin/prod_verify dry_run")
        assert code == 2
        assert f"{MISSING_ENV} site=blog names=REDIS_URL" in lines
        assert ops_daily(host)[0] == 2
    finally:
        with host.sudo():
            host.check_output("mv /var/tmp/blog-env.saved /srv/blog/shared/env")
    assert run_tool(host, "/usr/local/sbin/prod_verify dry_run")[0] == 0


def test_a_check_that_cannot_run_exits_1(host):
    with host.sudo():
        host.check_output("systemctl stop prometheus-node-exporter")
    try:
        code, lines = ops_daily(host)
        assert code == 1, lines
        assert "host check=node status=error reason=node_exporter_unreachable" in lines
    finally:
        with host.sudo():
            host.check_output("systemctl start prometheus-node-exporter")
    for _ in range(50):
        if host.run("curl -sf -o /dev/null http://127.0.0.1:9100/metrics").rc == 0:
            break
        time.sleep(0.2)


def test_a_5xx_burst_alerts_once_with_site_metric_threshold_and_severity(host, alerting):
    sample_releases()
    ran = deploy("5.0.0")
    assert ran.returncode == 0, ran.stdout[-3000:]
    try:
        empty_logs(host)
        statuses = traffic(host, requests=200, sites=("blog",), path="/work")
        assert statuses.get(500, 0) >= 5, statuses  # 5 % of the blog's requests
        traffic(host, requests=20, sites=("shop",))
        with host.sudo():
            started = host.run("systemctl start opspack-health.service")
        assert started.rc != 0, "the timer's unit fails on an unhealthy host"
        hooks = [call for call in receiver_calls(host) if call["path"].startswith("/hook/")]
        assert len(hooks) == 1, hooks
        (firing,) = json.loads(hooks[0]["body"])["firing"]
        assert firing.pop("value") > 0.5
        assert firing == {"channel": "page", "metric": "error_rate", "severity": "P1", "site": "blog", "threshold": 0.5}
        pings = [call["path"].rsplit("/", 1)[-1] for call in receiver_calls(host) if call["path"].startswith("/ping/")]
        assert pings == ["start", "2"]
        # The next run of the same breach tells no one again.
        with host.sudo():
            host.run("systemctl start opspack-health.service")
        assert len([call for call in receiver_calls(host) if call["path"].startswith("/hook/")]) == 1
        code, lines = ops_daily(host)
        assert code == 2 and any(line.startswith("site=blog check=error_rate status=fail") and "severity=P1" in line
                                 for line in lines), lines
    finally:
        bring_to(host, "1.0.0")


def test_the_deadmans_switch_reports_a_missed_run(host, alerting):
    empty_logs(host)
    traffic(host, requests=20)
    with host.sudo():
        started = host.run("systemctl start opspack-health.service")
    assert started.rc == 0, started.stderr
    resolved = [json.loads(call["body"]) for call in receiver_calls(host) if call["path"].startswith("/hook/")][-1]
    assert resolved["resolved"] == [{"channel": "page", "metric": "error_rate", "site": "blog"}]
    assert receiver_status(host) == "up"
    with host.sudo():
        host.check_output("systemctl stop opspack-health.timer")
    try:
        host.check_output(f"curl -sf -X POST 'http://127.0.0.1:{RECEIVER_PORT}/advance?seconds={86400 + 3600 + 60}'")
        assert receiver_status(host) == "down", "a day and its grace without a ping: the watcher reports the missed run"
        code, lines = ops_daily(host)
        assert code == 2
        assert "host check=schedule status=fail reason=timer_inactive severity=P2" in lines
    finally:
        with host.sudo():
            host.check_output("systemctl start opspack-health.timer")


def test_the_post_deploy_watch_rolls_back_a_release_serving_5xx_with_an_incident(host):
    """5.0.0 answers its health check and smoke paths, and 500 on one request to /work in twenty."""
    bring_to(host, "1.0.0")
    sample_releases()
    watch = ("-e", "release_watch_minutes=3", "-e", "release_watch_min_requests=40")
    with RequestLoop(host, seconds=400, interval=0.05, path="/work") as loop:
        ran = deploy("5.0.0", *watch)
    PLAYBOOK_OUTPUT.append(ran.stdout + ran.stderr)
    out = ran.stdout + ran.stderr
    assert ran.returncode != 0, out[-3000:]
    assert "5xx rate" in out and "the release before: 0.00 %" in out, out[-3000:]
    seconds = float(out.split(" s of the 3 minute watch")[0].rsplit("within ", 1)[1])
    assert seconds < 180, "rolled back within the window"
    print(f"figures: watch judged 5.0.0 after {seconds:.0f} s; requests {loop.statuses}")
    assert get(host)[:2] == (200, "1.0.0"), "the release before serves again"
    assert loop.statuses.get("500", 0) > 0, loop.statuses
    assert record(host)["current"]["release_id"].startswith("1.0.0+")
    blog = [entry for entry in history() if entry.get("site") == "blog"][-1]
    assert blog["release"].startswith("5.0.0+") and blog["result"] != "ok"
    assert "Watch" in blog.get("step", ""), blog
    assert "5xx rate" in blog.get("reason", ""), blog


def test_the_post_deploy_watch_passes_a_good_release(host):
    bring_to(host, "1.0.0")
    with RequestLoop(host, seconds=300, interval=0.05, path="/work") as loop:
        ran = deploy("2.0.0", "-e", "release_watch_minutes=1", "-e", "release_watch_min_requests=40")
    PLAYBOOK_OUTPUT.append(ran.stdout + ran.stderr)
    assert ran.returncode == 0, (ran.stdout + ran.stderr)[-3000:]
    assert "Release | Watch the new release" in ran.stdout
    assert set(loop.statuses) == {"200"}, loop.statuses
    assert get(host)[:2] == (200, "2.0.0")
    bring_to(host, "1.0.0")


def test_no_output_line_holds_a_secret_or_an_identifier(host):
    """Canary: the lab's secrets, the webhook and dead-man URLs, and what identifies a request or a
    site on the wire (domains, paths, the clients' address, database names)."""
    lines = "\n".join(SEEN)
    assert len(SEEN) >= 10 and len(PLAYBOOK_OUTPUT) == 4
    with host.sudo():
        reports = host.check_output("cat /var/lib/opspack/health/*.json")
    gateway = host.check_output("ip route | awk '/default/ {print $3}'")
    assert gateway
    for needle in (*CANARIES, HOOK, DEADMAN, CHECK_ID):
        assert needle not in lines + reports + "\n".join(PLAYBOOK_OUTPUT), needle
    for needle in ("blog.lab.test", "shop.lab.test", "/notes", gateway, "postgresql://", "redis://", "/srv/"):
        assert needle not in lines + reports, needle
