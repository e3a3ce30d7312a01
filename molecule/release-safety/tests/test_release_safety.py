"""Release safety on the scenario's host, one unsafe case each (they ran through on earlier code):
a link chain that leads a root export out of the tree, a second rollback that rolled forward
without migrations, an older release deployed over a newer schema, a rollback whose switch failed
recorded as done, and a deploy killed after its migrations that nothing noticed.

Each test first brings blog to the release it starts from, so any one of them runs alone
(tests/scenario.py release-safety <file>::<test>).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shlex
import shutil
import signal
import subprocess
import tarfile

from opspack.testing.playbooks import checked
from opspack.testing.scenario import (  # the scenarios' shared helpers
    history,
    EPHEMERAL,
    INVENTORY,
    PROJECT,
    SAMPLE,
    SITE_DIR,
    RequestLoop,
    command,
    deploy,
    deploy_args,
    get,
    playbook,
    record,
    schema,
    sql,
)

SECRET = "/root/opspack-test-root-only"
SECRET_TEXT = "root-only-canary-5e1f0c"
TAGS = "notes.tags"  # the column 2.0.0's migration 002_add_note_tags adds


def incidents() -> str:
    return (EPHEMERAL / "records" / "what-broke-last-time.md").read_text()


def audit_tail(host) -> str:
    return host.check_output("tail -n 1 /var/log/opspack/blog-audit.log")


def output(ran: subprocess.CompletedProcess) -> str:
    return ran.stdout + ran.stderr


def serving_2_0_0(host) -> None:
    """blog at 2.0.0 on its schema (a deploy of 2.0.0 from 1.0.0, or nothing to do)."""
    ran = deploy("2.0.0")
    assert ran.returncode == 0, output(ran)[-3000:]
    assert get(host)[1] == "2.0.0" and TAGS in schema(host)


def test_numeric_knobs_given_on_the_command_line_work(host):
    """-e name=500 is a string; every numeric knob must take it."""
    ran = deploy("2.0.0", "-e", "release_min_free_mb=100", "-e", "release_keep=5", "-e", "release_health_retries=30",
                 "-e", "release_health_delay=1", "-e", "release_smoke_cert_days=14", "-e", "release_smoke_min_free_mb=100",
                 "-e", "release_lock_stale_after=3600")
    assert ran.returncode == 0, output(ran)[-3000:]
    smoke = playbook("smoke", "-e", "release_smoke_cert_days=14", "-e", "release_smoke_min_free_mb=100")
    assert smoke.returncode == 0 and "smoke blog@vps1: PASS" in output(smoke), output(smoke)[-3000:]


def test_an_older_release_over_a_newer_schema_is_refused_before_anything_changes(host):
    serving_2_0_0(host)
    before, schema_before, entries = record(host), schema(host), len(history())
    ran = deploy("1.0.0")
    out = output(ran)
    assert ran.returncode != 0 and "does not define migration(s) 002_add_note_tags" in out, out[-3000:]
    assert "Nothing was changed" in out and "release_rollback_to" in out
    assert record(host) == before and schema(host) == schema_before and get(host)[1] == "2.0.0"
    assert len(history()) == entries, "a refusal is not an operation"


def test_rolling_back_twice_goes_back_once_and_then_refuses_never_forward(host):
    serving_2_0_0(host)
    first = playbook("rollback")
    assert first.returncode == 0, output(first)[-3000:]
    assert get(host)[1] == "1.0.0" and TAGS not in schema(host)
    state = record(host)
    left = [rid for rid, entry in state["releases"].items() if entry["status"] == "rolled_back"]
    assert any(rid.startswith("2.0.0+") for rid in left), state["releases"]

    second = playbook("rollback")
    out = output(second)
    assert second.returncode != 0 and "has no earlier good release to go back to" in out, out[-3000:]
    assert get(host)[1] == "1.0.0" and TAGS not in schema(host)
    assert record(host)["current"] == state["current"] and record(host)["last_known_good"] == state["last_known_good"]

    # Going forward again is a deploy, and it applies 2.0.0's migration.
    serving_2_0_0(host)
    assert schema(host).endswith("2:002_add_note_tags")


def test_a_rollback_to_a_slot_left_stopped_starts_it_and_records_only_what_serves(host):
    """A failed deploy stops the spare slot it used; when that slot still links the rollback's
    target, the switch to it fails first: the rollback must start it, gate its health, switch,
    and record what nginx serves."""
    serving_2_0_0(host)
    state = record(host)
    spare = "blue" if state["current"]["slot"] == "green" else "green"
    target = os.path.basename(host.file(f"{SITE_DIR}/slots/{spare}").linked_to)
    assert target.startswith("1.0.0+"), target
    host.check_output(f"systemctl stop opspack-blog-web@{spare}.service")
    with RequestLoop(host) as loop:
        ran = playbook("rollback")
    assert ran.returncode == 0, output(ran)[-3000:]
    assert loop.failed == 0 and loop.total > 0, loop.statuses
    assert get(host)[1] == "1.0.0" and TAGS not in schema(host)
    after = record(host)
    assert after["current"] == {**after["current"], "release_id": target, "slot": spare}
    assert after["last_known_good"]["release_id"] == target
    assert f"rollback done to={target} slot={spare}" in audit_tail(host)
    last = [entry for entry in history() if entry["operation"] == "rollback"][-1]
    assert last["result"] == "ok" and last["release"] == target


def wait_on_host_for(host, query: str, seconds: int = 120) -> bool:
    """Poll the database on the host (a bounded loop there, one SSH round trip) until query says t."""
    loop = (f"for i in $(seq {seconds * 10}); do "
            f"[ \"$(runuser -u postgres -- psql -XAtq -d blog -c {shlex.quote(query)})\" = t ] && exit 0; sleep 0.1; done; exit 1")
    return host.run(loop).rc == 0


def test_a_deploy_killed_after_its_migrations_is_noticed_and_put_right_by_the_next_run(host):
    if get(host)[1] != "1.0.0":
        assert playbook("rollback").returncode == 0
    assert get(host)[1] == "1.0.0" and TAGS not in schema(host)
    with RequestLoop(host) as loop:
        killed = subprocess.Popen(command("deploy", *deploy_args("2.0.0")), cwd=PROJECT, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL, start_new_session=True)
        try:
            migrated = wait_on_host_for(
                host, "SELECT to_regclass('opspack_schema_history') IS NOT NULL AND "
                      "EXISTS (SELECT 1 FROM opspack_schema_history WHERE version = 2)")
        finally:
            os.killpg(killed.pid, signal.SIGKILL)  # the control process and its workers, as a lost laptop would
            killed.wait(timeout=30)
    assert migrated, "the deploy never applied its migration"
    assert loop.failed == 0, loop.statuses
    assert get(host)[1] == "1.0.0" and TAGS in schema(host), "killed between its migration and its switch"

    smoke = playbook("smoke")
    assert smoke.returncode != 0 and "migrations the serving release does not define: 002_add_note_tags" in output(smoke)

    # The next run (here the serving release again) brings the schema back before anything else.
    entries = len(history())
    again = deploy("1.0.0")
    assert again.returncode == 0, output(again)[-3000:]
    assert get(host)[1] == "1.0.0" and TAGS not in schema(host) and schema(host).endswith("|1:001_create_notes")
    assert not host.file(f"{SITE_DIR}/deploy.lock").exists
    assert ".partial" not in host.check_output(f"ls {SITE_DIR}/releases /var/lib/opspack/migrations/blog")
    landed = [entry for entry in history()[entries:] if entry["operation"] != "backup"]
    assert landed and landed[-1]["result"] == "ok" and landed[-1]["release"].startswith("1.0.0+"), landed
    assert "took over the lock" in json.dumps(landed) or "reverted" in json.dumps(landed), landed


def hostile_tree(tmp_path) -> str:
    """2.0.0 with two links whose texts each stay inside the tree; followed together, the second
    reaches a root-only file on the host (/root is four levels above /srv/blog/releases/<id>)."""
    tree = tmp_path / "2.0.1"
    shutil.copytree(SAMPLE / "2.0.0", tree)
    (tree / "a" / "b" / "c" / "d").mkdir(parents=True)
    os.symlink("../../../..", tree / "a" / "b" / "c" / "d" / "l")
    os.symlink("../a/b/c/d/l/../../../.." + SECRET, tree / "migrations" / "x")
    return str(tree)


def no_secret_copied(host) -> None:
    found = host.run(f"grep -rl {SECRET_TEXT} /var/lib/opspack /srv/blog /var/backups/opspack")
    assert found.rc == 1 and not found.stdout.strip(), f"the root-only file was copied to {found.stdout}"


def test_links_that_lead_out_only_when_followed_are_refused_and_nothing_root_only_is_copied(host, tmp_path):
    host.check_output(f"install -m 0600 /dev/null {SECRET} && echo {SECRET_TEXT} > {SECRET}")
    try:
        before, entries = record(host), len(history())
        ran = playbook("deploy", "-e", "release_version=2.0.1", "-e", f"release_source={hostile_tree(tmp_path)}")
        out = output(ran)
        assert ran.returncode != 0 and "migrations/x links to" in out and "climbs above the root" in out, out[-3000:]
        no_secret_copied(host)
        assert record(host) == before and get(host)[1] == "1.0.0" and len(history()) == entries
    finally:
        host.check_output(f"rm -f {SECRET}")


def test_the_host_refuses_such_an_artifact_itself_before_writing_anything(host, tmp_path):
    """The control node refuses the tree above; an artifact made elsewhere meets the host's own check."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, link in (("a/b/c/d/l", "../../../.."), ("migrations/x", "../a/b/c/d/l/../../../.." + SECRET)):
            info = tarfile.TarInfo(name)
            info.type, info.linkname = tarfile.SYMTYPE, link
            tar.addfile(info)
    data = buffer.getvalue()
    sha = hashlib.sha256(data).hexdigest()
    (tmp_path / "hostile.tar.gz").write_bytes(data)
    release_id = f"2.0.1+{sha[:12]}"
    artifact = f"{SITE_DIR}/artifacts/{release_id}.tar.gz"
    host.check_output(f"install -m 0600 /dev/null {SECRET} && echo {SECRET_TEXT} > {SECRET}")
    try:
        def adhoc(module: str, args: str) -> subprocess.CompletedProcess:
            return checked(subprocess.run(
                ["ansible", "-i", str(INVENTORY), "vps1", "-b", "-m", module, "-a", args], capture_output=True, text=True,
                check=False, cwd=PROJECT, env=dict(os.environ, ANSIBLE_NOCOLOR="1", ANSIBLE_FORCE_COLOR="0")), module)
        copied = adhoc("ansible.builtin.copy", f"src={tmp_path / 'hostile.tar.gz'} dest={artifact} mode=0600")
        assert copied.returncode == 0, output(copied)[-2000:]
        ran = adhoc("opspack.platform.site_release",
                    f"site=blog release_id={release_id} artifact={artifact} sha256={sha} group=blog "
                    f"export_migrations=/var/lib/opspack/migrations/blog")
        out = output(ran)
        assert ran.returncode != 0 and "nothing was unpacked" in out and "climbs above the root" in out, out[-2000:]
        assert not host.file(f"{SITE_DIR}/releases/{release_id}").exists
        assert not host.file(f"{SITE_DIR}/releases/{release_id}.partial").exists
        no_secret_copied(host)
    finally:
        host.check_output(f"rm -f {SECRET} {artifact}")


def test_the_site_still_serves_its_release_on_its_schema(host):
    status, version, _ = get(host)
    assert (status, version) == (200, "1.0.0")
    assert sql(host, "SELECT max(version) FROM opspack_schema_history") == "1"
