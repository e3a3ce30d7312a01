"""The release lifecycle on a provisioned lab host, driven as an operator drives it.

Converge deployed the sample site's 1.0.0. In file order the tests tell the story: bad input
is refused, a held lock refuses a deploy, 2.0.0 upgrades with a migration under a request loop,
2.1.0 fails its health gate, 3.0.0 fails its migration, and a rollback goes back to 1.0.0 with
its schema. Each test first brings the sites to the release it starts from (`bring_to`, nothing
to do in file order), so any one runs alone (tests/scenario.py release-lifecycle FILE::TEST).
Every request of the loops goes to 127.0.0.1 and is verified against the lab CA.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import time

import pytest

from opspack.testing.scenario import (  # the scenarios' shared helpers
    history,
    PROJECT,
    EPHEMERAL,
    INVENTORY,
    SAMPLE,
    CA,
    SERVER_NAME,
    SITE_DIR,
    CANARIES,
    RequestLoop,
    access_log_lines,
    bring_to,
    command,
    deploy,
    deploy_args,
    get,
    https_port,
    playbook,
    record,
    schema,
    sql,
)
from opspack.testing import client
from opspack.testing.config import assert_no_secret, sites_with, tool_env
from opspack.testing.playbooks import ENV


def test_1_0_0_serves_as_current_and_last_known_good(host):
    bring_to(host, "1.0.0")
    status, version, body = get(host)
    assert (status, version) == (200, "1.0.0") and "sample site 1.0.0" in body
    status, _, body = get(host, "/health/ready")
    assert status == 200 and json.loads(body)["database"] == "ok" and json.loads(body)["redis"] == "ok"
    state = record(host)
    assert state["current"]["release_id"].startswith("1.0.0+") and state["last_known_good"] == {
        key: state["current"][key] for key in state["last_known_good"]} | {"since": state["last_known_good"]["since"]}
    assert host.file(f"{SITE_DIR}/current").linked_to == f"{SITE_DIR}/releases/{state['current']['release_id']}"
    assert not host.file(f"{SITE_DIR}/deploy.lock").exists, "the lock is released"
    assert "deploy done" in host.file("/var/log/opspack/blog-audit.log").content_string


@pytest.mark.parametrize("extra, message", [
    (("-e", "release_version=v2"), "is not a release version"),
    (("-e", "release_site=nosuch"), "unknown site nosuch"),
    (("-e", "release_site="), "release_site is not set: name the site"),
])
def test_bad_input_is_refused_before_anything_changes(host, extra, message):
    bring_to(host, "1.0.0")
    before = record(host)
    ran = playbook("deploy", "-e", "release_version=2.0.0", "-e", f"release_source={SAMPLE / '2.0.0'}", *extra)
    assert ran.returncode != 0 and message in ran.stdout + ran.stderr, ran.stdout[-3000:]
    assert record(host) == before and get(host)[1] == "1.0.0"


def test_a_dry_run_says_what_it_would_do_and_changes_nothing(host):
    bring_to(host, "1.0.0")
    before, schema_before = record(host), schema(host)
    ran = deploy("2.0.0", "--check")
    assert ran.returncode == 0, ran.stdout[-3000:]
    assert "Switch traffic to the new slot" in ran.stdout
    assert record(host) == before and schema(host) == schema_before and get(host)[1] == "1.0.0"


def test_a_migration_without_its_rollback_script_is_refused(host, tmp_path):
    bring_to(host, "1.0.0")
    tree = tmp_path / "2.0.0"
    subprocess.run(["cp", "-r", str(SAMPLE / "2.0.0"), str(tree)], check=True)
    (tree / "migrations" / "002_add_note_tags.rollback.sql").unlink()
    before, schema_before = record(host), schema(host)
    ran = playbook("deploy", "-e", "release_version=2.0.0", "-e", f"release_source={tree}")
    assert ran.returncode != 0 and "without a rollback script: migrations/002_add_note_tags.sql" in ran.stdout + ran.stderr
    assert record(host) == before and schema(host) == schema_before


def test_a_deploy_while_another_holds_the_lock_is_refused_naming_the_holder(host):
    bring_to(host, "1.0.0")
    holder = {"holder": "carol@ci-runner", "run_id": "ci-runner:4242:1", "version": "9.9.9+000000000000",
              "reason": "deploy from CI", "since": "2026-12-01T00:00:00Z"}
    host.check_output(f"install -d -m 0700 {SITE_DIR}/deploy.lock && echo {shlex.quote(json.dumps(holder))}"
                      f" > {SITE_DIR}/deploy.lock/holder.json")
    try:
        ran = deploy("2.0.0")
        assert ran.returncode != 0 and "held by carol@ci-runner" in ran.stdout + ran.stderr
        assert get(host)[1] == "1.0.0" and host.file(f"{SITE_DIR}/deploy.lock/holder.json").exists
    finally:
        host.check_output(f"rm -rf {SITE_DIR}/deploy.lock")


def test_upgrade_to_2_0_0_migrates_and_serves_with_no_failed_request(host):
    bring_to(host, "1.0.0")
    with RequestLoop(host) as loop:
        ran = deploy("2.0.0")
        time.sleep(2)
    assert ran.returncode == 0, ran.stdout[-3000:]
    print(f"upgrade: {loop.total} requests during the deploy, {loop.failed} failed, statuses {loop.statuses}")
    assert loop.failed == 0 and loop.total > 0 and {"1.0.0", "2.0.0"} <= loop.versions
    assert get(host)[1] == "2.0.0" and "notes.tags" in schema(host)
    state = record(host)
    assert state["current"]["release_id"].startswith("2.0.0+") and state["previous"]["release_id"].startswith("1.0.0+")
    backups = host.check_output("ls /var/backups/opspack/blog/postgresql/")
    assert ".manifest.json" in backups, "a backup was taken before migrating"


def test_a_release_failing_its_health_gate_never_gets_a_request(host):
    bring_to(host, "2.0.0")
    before_schema, log_before = schema(host), access_log_lines(host)
    ran = deploy("2.1.0", "-e", "release_health_retries=3")
    out = ran.stdout + ran.stderr
    assert ran.returncode != 0 and 'failed at "Release | Health gate on the new slot"' in out, out[-3000:]
    assert "kept serving; the new release never received traffic" in out
    assert get(host)[1] == "2.0.0" and schema(host) == before_schema
    new_port = 8000 + (1 if record(host)["current"]["slot"] == "blue" else 0)
    late_lines = host.check_output(f"tail -n +{log_before + 1} /var/log/nginx/access.log")
    assert f"ua=127.0.0.1:{new_port}" not in late_lines, "nginx sent a request to the failing release"
    state = record(host)
    failed = [rid for rid, entry in state["releases"].items() if rid.startswith("2.1.0+")]
    assert failed and state["releases"][failed[0]]["status"] == "failed"
    assert not host.file(f"{SITE_DIR}/deploy.lock").exists


def test_a_release_whose_migration_fails_leaves_the_schema_and_2_0_0_serving(host):
    bring_to(host, "2.0.0")
    before_schema = schema(host)
    ran = deploy("3.0.0")
    out = ran.stdout + ran.stderr
    assert ran.returncode != 0 and 'failed at "Release | Run the migrations"' in out, out[-3000:]
    assert schema(host) == before_schema and get(host)[1] == "2.0.0"
    assert "notes_archive" not in sql(host, "SELECT string_agg(tablename, ',') FROM pg_tables WHERE schemaname = 'public'")


def test_a_deploy_of_the_serving_release_changes_nothing(host):
    # The first run may prune the failed releases of the tests above; the next one has nothing to do.
    assert deploy("2.0.0").returncode == 0
    # At -vvvv Ansible prints every module's arguments and result: still no secret (playbook() checks).
    ran = deploy("2.0.0", "-vvvv")
    assert ran.returncode == 0 and "changed=0" in ran.stdout.split("PLAY RECAP")[-1], ran.stdout[-2000:]
    assert get(host)[1] == "2.0.0"


def test_rollback_goes_back_to_1_0_0_with_its_schema_and_no_failed_request(host):
    bring_to(host, "2.0.0")
    with RequestLoop(host) as loop:
        started = time.monotonic()
        ran = playbook("rollback")
        took = time.monotonic() - started
        time.sleep(2)
    assert ran.returncode == 0, ran.stdout[-3000:]
    print(f"rollback: {took:.1f} s, {loop.total} requests, {loop.failed} failed, statuses {loop.statuses}")
    assert loop.failed == 0 and loop.total > 0
    assert get(host)[1] == "1.0.0" and "notes.tags" not in schema(host)
    assert schema(host).endswith("|1:001_create_notes")
    assert record(host)["current"]["release_id"].startswith("1.0.0+")


def test_rollback_to_an_unknown_release_is_refused(host):
    bring_to(host, "1.0.0")
    before = record(host)
    ran = playbook("rollback", "-e", "release_rollback_to=7.7.7+000000000000")
    assert ran.returncode != 0 and "is not a good release to go back to" in ran.stdout + ran.stderr
    assert record(host) == before and get(host)[1] == "1.0.0"


def test_maintenance_answers_503_with_retry_after_but_lets_health_and_allowed_addresses_through(host):
    assert playbook("maintenance", "-e", "release_maintenance=on").returncode == 0
    try:
        status, headers, _ = client.get(https_port(host), CA)
        assert status == 503 and headers.get("retry-after") == "120"
        assert get(host, "/health/ready")[0] == 200, "health checks reach the app during maintenance"
        # From the host itself (127.0.0.1 is allow-listed) the app still answers.
        local = host.run(f"curl -sk -o /dev/null -w '%{{http_code}}' --resolve {SERVER_NAME}:443:127.0.0.1 https://{SERVER_NAME}/")
        assert local.stdout == "200"
        again = playbook("maintenance", "-e", "release_maintenance=on")
        assert again.returncode == 0 and "changed=0" in again.stdout.split("PLAY RECAP")[-1]
    finally:
        assert playbook("maintenance", "-e", "release_maintenance=off").returncode == 0
    assert get(host)[0] == 200
    assert "maintenance on" in host.file("/var/log/opspack/blog-audit.log").content_string


def test_a_deploy_killed_at_a_random_point_converges_on_the_next_run_and_the_site_keeps_answering(host):
    import random
    import signal
    seed = int(os.environ.get("OPSPACK_TEST_KILL_SEED", str(int(time.time()))))
    delay = random.Random(seed).uniform(3.0, 18.0)
    bring_to(host, "1.0.0")  # an upgrade is what gets killed (1.0.0 over 2.0.0's schema is refused)
    target = "2.0.0"
    with RequestLoop(host) as loop:
        killed = subprocess.Popen(
            command("deploy", *deploy_args(target)), cwd=PROJECT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        time.sleep(delay)
        os.killpg(killed.pid, signal.SIGKILL)  # the control process and its workers, as a lost laptop would
        killed.wait(timeout=30)
        time.sleep(1)
        # Whatever the killed run left serving is a complete release.
        status, version, _ = get(host)
        assert status == 200 and version in ("1.0.0", "2.0.0")
        ran = deploy(target)
        time.sleep(2)
    print(f"kill test (seed {seed}): killed after {delay:.1f} s; {loop.total} requests, {loop.failed} failed, {loop.statuses}")
    assert ran.returncode == 0, ran.stdout[-3000:]
    assert loop.failed == 0 and get(host)[1] == target
    assert not host.file(f"{SITE_DIR}/deploy.lock").exists
    assert record(host)["last_known_good"]["release_id"].startswith(target + "+")
    leftovers = host.check_output(f"ls {SITE_DIR}/releases")
    assert ".partial" not in leftovers, leftovers


def test_smoke_tests_pass_in_one_line_and_fail_naming_the_check(host):
    ran = playbook("smoke")
    out = ran.stdout + ran.stderr
    assert ran.returncode == 0 and "smoke blog@vps1: PASS" in out and "certificate verified" in out, out[-3000:]
    bad = playbook("smoke", *sites_with("blog", smoke_paths=["/no-such-page"]), "-e", "release_smoke_cert_days=100000")
    out = bad.stdout + bad.stderr
    assert bad.returncode != 0 and "smoke blog@vps1: FAIL" in out
    assert "not 200: /no-such-page" in out and "certificate expires in" in out


@pytest.fixture
def story_recorded(host):
    """The records of an upgrade to 2.0.0, failed deploys of 2.1.0 (health gate) and 3.0.0
    (migration) and a rollback to 1.0.0: what the tests above do in file order, done here for
    whatever is missing from the history when this test runs alone."""
    def seen():
        return [(entry["operation"], entry["result"], entry.get("version")) for entry in history()]
    if ("upgrade", "ok", "2.0.0") not in seen():
        bring_to(host, "1.0.0")
        bring_to(host, "2.0.0")
    for version in ("2.1.0", "3.0.0"):
        if ("deploy", "failed", version) not in seen():
            bring_to(host, "2.0.0")
            assert deploy(version).returncode != 0
    if ("rollback", "ok", "1.0.0") not in seen():
        bring_to(host, "1.0.0")


def test_the_records_hold_what_happened_and_no_secret(host, story_recorded):
    records = EPHEMERAL / "records"
    history = [json.loads(line) for line in (records / "history.jsonl").read_text().splitlines()]
    seen = [(entry["operation"], entry["result"], entry.get("version")) for entry in history]
    assert ("upgrade", "ok", "2.0.0") in seen and ("rollback", "ok", "1.0.0") in seen, seen
    assert ("deploy", "failed", "2.1.0") in seen and ("deploy", "failed", "3.0.0") in seen, seen
    incidents = (records / "what-broke-last-time.md").read_text()
    assert "Release | Health gate on the new slot" in incidents and "Release | Run the migrations" in incidents
    assert "never received traffic" in incidents and "lock released" in incidents
    state = record(host)
    lkg = json.loads((records / "last-known-good" / "blog.json").read_text())
    assert lkg["release"] == state["last_known_good"]["release_id"] and lkg["all_tests_pass"]
    matrix = (records / "loop-sites-matrix.md").read_text()
    assert f"| blog | {INVENTORY.parent.name} | vps1 |" in matrix or "| blog |" in matrix
    for path in records.rglob("*"):
        if path.is_file():
            for canary in CANARIES:
                assert canary not in path.read_text(errors="replace"), f"{canary} leaked into {path}"


# --- Two sites on the host: two runs at once, and multi-service cutovers -------------------------

def test_two_runs_finishing_together_on_two_sites_both_land_in_the_records(host):
    """A first deploy of shop and a rollback of blog, started together from two 'terminals'.
    (It takes the host fixture so that it runs in file order: pytest runs the tests without
    testinfra's parametrized host after all the others.)"""
    bring_to(host, "2.0.0")
    if get(host, site="shop")[0] == 200:  # shop deployed by an earlier test: its 1.0.0 again
        bring_to(host, "1.0.0", "shop")
    before = len(history())
    runs = [subprocess.Popen(args, cwd=PROJECT, env=tool_env(**ENV), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            for args in (command("deploy", *deploy_args("1.0.0"), site="shop"), command("rollback"))]
    outputs = [run.communicate(timeout=600)[0] for run in runs]
    for run, out in zip(runs, outputs):
        assert run.returncode == 0, out[-3000:]
        assert_no_secret(out, f"{' '.join(run.args[-6:])}, run beside another")
    landed = [(entry["site"], entry["operation"], entry["result"], entry.get("version")) for entry in history()[before:]
              if entry["operation"] != "backup"]  # the rollback's backup before reverting migrations
    assert sorted(landed) == [("blog", "rollback", "ok", "1.0.0"), ("shop", "deploy", "ok", "1.0.0")], landed
    matrix = (EPHEMERAL / "records" / "loop-sites-matrix.md").read_text()
    rows = [line for line in matrix.splitlines() if line.startswith(("| blog ", "| shop "))]
    assert len(rows) == 2 and "| 1.0.0 |" in rows[0] and "| 1.0.0 |" in rows[1], rows
    assert (EPHEMERAL / "records" / "last-known-good" / "shop.json").exists()


def cutover(*services: tuple[str, str], maintenance: bool = False) -> subprocess.CompletedProcess:
    spec = {"release_cutover_services": [{"site": site, "version": version, "source": str(SAMPLE / version)}
                                         for site, version in services],
            "release_cutover_maintenance": maintenance}
    return playbook("cutover", "-e", json.dumps(spec), site=None)


def test_a_cutover_whose_later_service_fails_rolls_the_earlier_back(host):
    bring_to(host, "1.0.0", "shop")
    bring_to(host, "1.0.0")
    shop_schema = schema(host, "shop")
    ran = cutover(("shop", "2.0.0"), ("blog", "2.1.0"))
    out = ran.stdout + ran.stderr
    assert ran.returncode != 0
    assert "failed at service blog 2.1.0" in out and "Health gate on the new slot" in out, out[-3000:]
    assert "Rolled back (latest first): shop to 1.0.0+" in out, out[-3000:]
    # shop went to 2.0.0 (its migration ran) and came back with its schema; blog never moved.
    assert get(host, site="shop")[1] == "1.0.0" and schema(host, "shop") == shop_schema
    assert get(host)[1] == "1.0.0"
    assert record(host, "shop")["current"]["release_id"].startswith("1.0.0+")
    audit = host.file("/var/log/opspack/shop-audit.log").content_string
    assert "rollback done to=1.0.0+" in audit.splitlines()[-1], audit[-500:]


def test_a_cutover_deploys_the_services_in_order_behind_maintenance(host):
    bring_to(host, "1.0.0", "shop")
    bring_to(host, "1.0.0")
    before = len(history())
    ran = cutover(("shop", "2.0.0"), ("blog", "2.0.0"), maintenance=True)
    assert ran.returncode == 0, (ran.stdout + ran.stderr)[-3000:]
    assert get(host, site="shop")[1] == "2.0.0" and get(host)[1] == "2.0.0"
    assert get(host)[0] == 200 and get(host, site="shop")[0] == 200, "maintenance is off after the cutover"
    landed = [(entry["site"], entry["operation"], entry["result"]) for entry in history()[before:]
              if entry["operation"] != "backup"]
    assert landed == [("shop", "upgrade", "ok"), ("blog", "upgrade", "ok")], landed
    for site in ("shop", "blog"):
        audit = host.file(f"/var/log/opspack/{site}-audit.log").content_string.splitlines()
        on = max(i for i, line in enumerate(audit) if "maintenance on" in line)
        off = max(i for i, line in enumerate(audit) if "maintenance off" in line)
        done = max(i for i, line in enumerate(audit) if "deploy done" in line)
        assert on < done < off, audit[-6:]


def test_a_cutover_refuses_bad_input_before_anything_changes(host):
    bring_to(host, "2.0.0", "shop")
    state = record(host, "shop")
    extra = playbook("cutover", "-e", json.dumps({"release_cutover_services": [
        {"site": "shop", "version": "1.0.0", "source": str(SAMPLE / "1.0.0")}]}))  # release_site=blog given too
    assert extra.returncode != 0 and "are set as extra vars" in extra.stdout + extra.stderr
    unknown = cutover(("shop", "1.0.0"), ("nosuch", "1.0.0"))
    assert unknown.returncode != 0 and "unknown service nosuch" in unknown.stdout + unknown.stderr
    assert record(host, "shop") == state and get(host, site="shop")[1] == "2.0.0"


# --- A site that migrates with its own (framework) command -----------------------------------

# The sample's manage.py stands in for a framework's migration command (tests/sample_site).
MIGRATE = sites_with("shop", migrations={
    "command": ["venv/bin/python", "manage.py", "migrate"],
    "rollback_command": ["/bin/sh", "-c", 'exec venv/bin/python manage.py migrate --to-release "$OPSPACK_TARGET_RELEASE_DIR"']})


def framework_state(host) -> str:
    """'<applied ids>|<columns of app_settings>', 'none|' before the command ever ran."""
    if sql(host, "SELECT to_regclass('public.framework_history') IS NULL", "shop") == "t":
        applied = "none"
    else:
        applied = sql(host, "SELECT coalesce(string_agg(id::text, ',' ORDER BY id), '') FROM framework_history", "shop")
    columns = sql(host, "SELECT coalesce(string_agg(column_name, ',' ORDER BY column_name), '') "
                        "FROM information_schema.columns WHERE table_name = 'app_settings'", "shop")
    return f"{applied}|{columns}"


def test_a_site_migrating_with_its_own_command_goes_forward_and_back(host):
    bring_to(host, "2.0.0", "shop")
    before = framework_state(host)
    alone = deploy("4.0.0", *sites_with("shop", migrations={"command": ["venv/bin/python", "manage.py", "migrate"]}), site="shop")
    assert alone.returncode != 0 and "site shop: migrations: command and rollback_command go together" in alone.stdout + alone.stderr
    assert framework_state(host) == before and get(host, site="shop")[1] == "2.0.0"

    ran = deploy("4.0.0", *MIGRATE, site="shop")
    assert ran.returncode == 0, (ran.stdout + ran.stderr)[-3000:]
    assert get(host, site="shop")[1] == "4.0.0" and framework_state(host) == "1|name,value"

    bad = deploy("4.1.0", *MIGRATE, site="shop")  # migrates, then fails its health gate
    out = bad.stdout + bad.stderr
    assert bad.returncode != 0 and "Health gate on the new slot" in out and "the site rollback command ran" in out, out[-3000:]
    assert framework_state(host) == "1|name,value", "4.1.0's column was reverted by the rollback command"
    assert get(host, site="shop")[1] == "4.0.0"

    back = playbook("rollback", *MIGRATE, site="shop")  # to 2.0.0, which has none
    assert back.returncode == 0, (back.stdout + back.stderr)[-3000:]
    assert get(host, site="shop")[1] == "2.0.0" and framework_state(host) == "|"
