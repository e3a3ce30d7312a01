"""Unit tests for the records callback, driven with real ansible-core objects (Host, Task,
TaskResult), as ansible-playbook drives it."""

from __future__ import annotations

import json
import multiprocessing
import os

import pytest
from ansible import context
from ansible.executor.task_result import CallbackTaskResult
from ansible.inventory.host import Host
from ansible.module_utils.common.collections import ImmutableDict
from ansible.playbook.task import Task

from ansible_collections.opspack.platform.plugins.callback import records as records_plugin

CANARY = "lab-canary-Pg-7f3a9c"


@pytest.fixture(name="callback")
def fixture_callback(tmp_path, monkeypatch):
    monkeypatch.setattr(context, "CLIARGS", ImmutableDict(check=False))
    monkeypatch.setenv("OPSPACK_RECORDS_DIR", str(tmp_path / "records"))
    monkeypatch.setenv("OPSPACK_ENVIRONMENT", "production")
    monkeypatch.setenv("OPSPACK_OPERATOR", "ann@laptop")
    plugin = records_plugin.CallbackModule()
    plugin.set_options()
    plugin.dir = tmp_path / "records"
    return plugin


def task(name: str, module: str, **fields) -> Task:
    found = Task.load({"name": name, "action": f"opspack.platform.{module}", **fields})
    # What the task executor sets once it has resolved the action's plugin.
    found._resolved_action = f"opspack.platform.{module}"
    return found


def ok(plugin, name, module, host="vps1", check_mode=None, **result):
    fields = {} if check_mode is None else {"check_mode": check_mode}
    plugin.v2_runner_on_ok(CallbackTaskResult(Host(host), task(name, module, **fields), {"changed": True, **result}, {}))


def failed(plugin, name, module, host="vps1", check_mode=None, **result):
    fields = {} if check_mode is None else {"check_mode": check_mode}
    plugin.v2_runner_on_failed(CallbackTaskResult(Host(host), task(name, module, **fields), dict(failed=True, **result), {}))


def deploy(plugin, version="2.0.0", previous="1.0.0+aaaaaaaaaaaa", host="vps1", fail_at=None, reason="deploy",
           operation="deploy"):
    release = f"{version}+bbbbbbbbbbbb"
    ok(plugin, "Release | Build the release artifact", "release_artifact", host=host, site="blog", release_id=release,
       version=version, git_sha="0123456789abcdef0123")
    ok(plugin, "Release | Take the deploy lock", "deploy_lock", host=host, site="blog", held=True, acquired=True,
       holder={"holder": "ann@laptop", "run_id": "laptop:1:2", "version": release, "operation": operation,
               "reason": reason}, broken={})
    ok(plugin, "Release | Unpack the release", "site_release", host=host, site="blog", operation="present",
       release_id=release, record={})
    ok(plugin, "Release | Run the migrations", "pg_migrations", host=host, version_after=2, applied=["002_tags"], reverted=[])
    if fail_at:
        failed(plugin, fail_at, "site_upstream", host=host,
               msg=f"nginx -t refused it\nsecond line with {CANARY}")
        ok(plugin, "Release | Revert this run's migrations", "pg_migrations", host=host, version_after=1,
           applied=[], reverted=["002_tags"])
        ok(plugin, "Release | Record the release as failed", "site_release", host=host, site="blog", operation="failed",
           release_id=release, record={})
    else:
        ok(plugin, "Release | Switch traffic", "site_upstream", host=host, slot="green", previous_slot="blue")
        record = {"current": {"release_id": release, "slot": "green"}, "previous": {"release_id": previous},
                  "last_known_good": {"release_id": release, "slot": "green"}}
        ok(plugin, "Release | Record live", "site_release", host=host, site="blog", operation="live", release_id=release,
           record=record, config_hash="c0ffee" * 10 + "abcd")
    ok(plugin, "Release | Release the deploy lock", "deploy_lock", host=host, site="blog", held=False, holder={})


def test_an_upgrade_writes_history_matrix_and_last_known_good(callback):
    deploy(callback)
    callback.v2_playbook_on_stats(None)
    history = [json.loads(line) for line in (callback.dir / "history.jsonl").read_text().splitlines()]
    assert len(history) == 1
    entry = history[0]
    assert entry["operation"] == "upgrade" and entry["result"] == "ok" and entry["version"] == "2.0.0"
    assert entry["git_sha"] == "0123456789abcdef0123" and entry["migration_version"] == 2
    assert entry["environment"] == "production" and entry["operator"] == "ann@laptop"
    assert set(entry) <= set(records_plugin.HISTORY_FIELDS)
    matrix = (callback.dir / "loop-sites-matrix.md").read_text()
    assert "| blog | production | vps1 | 2.0.0 | 0123456789ab | 2 | upgrade | ok |" in matrix
    lkg = json.loads((callback.dir / "last-known-good" / "blog.json").read_text())
    assert lkg["release"] == "2.0.0+bbbbbbbbbbbb" and lkg["all_tests_pass"] and lkg["migrations_version"] == 2
    assert lkg["config_hash"] == "c0ffee" * 10 + "abcd" and lkg["git_sha"] == "0123456789abcdef0123"
    assert not (callback.dir / "what-broke-last-time.md").exists()


def test_a_failed_deploy_adds_an_incident_and_marks_the_row_but_keeps_last_known_good(callback, tmp_path):
    deploy(callback)
    callback.v2_playbook_on_stats(None)
    second = records_plugin.CallbackModule()
    second.set_options()
    deploy(second, version="3.0.0", fail_at="Release | Switch traffic to the new slot")
    second.v2_playbook_on_stats(None)
    incidents = (callback.dir / "what-broke-last-time.md").read_text()
    assert "deploy blog (production, vps1): failed" in incidents
    assert "Release | Switch traffic to the new slot: nginx -t refused it" in incidents
    assert "never received traffic" in incidents and "reverted migrations 002_tags" in incidents
    assert "lock released" in incidents and "Follow-up:" in incidents
    assert CANARY not in incidents, "only the first line of a message is kept"
    matrix = (callback.dir / "loop-sites-matrix.md").read_text()
    assert "| blog | production | vps1 | 2.0.0 |" in matrix and "| deploy | failed |" in matrix
    assert json.loads((callback.dir / "last-known-good" / "blog.json").read_text())["release"].startswith("2.0.0+")


def test_incidents_are_appended_never_rewritten(callback):
    for _ in range(2):
        plugin = records_plugin.CallbackModule()
        plugin.set_options()
        deploy(plugin, fail_at="Release | Health gate")
        plugin.v2_playbook_on_stats(None)
    first = (callback.dir / "what-broke-last-time.md").read_text()
    assert first.count("## ") == 2
    plugin = records_plugin.CallbackModule()
    plugin.set_options()
    deploy(plugin, fail_at="Release | Health gate")
    plugin.v2_playbook_on_stats(None)
    assert (callback.dir / "what-broke-last-time.md").read_text().startswith(first)


def test_text_outside_the_table_is_kept_and_a_malformed_table_is_saved_first(callback):
    callback.dir.mkdir()
    matrix = callback.dir / "loop-sites-matrix.md"
    matrix.write_text(f"# Our sites\n\nNotes by a person.\n\n{records_plugin.START}\n| site | broken row\n"
                      f"{records_plugin.END}\n\nMore notes.\n")
    deploy(callback)
    callback.v2_playbook_on_stats(None)
    text = matrix.read_text()
    assert text.startswith("# Our sites\n\nNotes by a person.") and text.rstrip().endswith("More notes.")
    assert "| blog | production |" in text and "broken row" not in text
    kept = [name for name in os.listdir(callback.dir) if name.startswith("loop-sites-matrix.md.hand-edited-")]
    assert kept and "broken row" in (callback.dir / kept[0]).read_text()


def test_rows_are_sorted_and_a_second_identical_render_changes_nothing(callback):
    for host, site in (("vps2", "shop"), ("vps1", "blog")):
        plugin = records_plugin.CallbackModule()
        plugin.set_options()
        ok(plugin, "lock", "deploy_lock", host=host, site=site, held=True, acquired=True,
           holder={"run_id": "r", "version": "1.0.0+cccccccccccc", "reason": "deploy"})
        ok(plugin, "unlock", "deploy_lock", host=host, site=site, held=False)
        plugin.v2_playbook_on_stats(None)
    rows = [line for line in (callback.dir / "loop-sites-matrix.md").read_text().splitlines() if line.startswith("| ")]
    assert [row.split(" | ")[0] for row in rows[1:]] == ["| blog", "| shop"]


def _finish_a_run(directory: str, site: str) -> None:
    os.environ["OPSPACK_RECORDS_DIR"] = directory
    context.CLIARGS = ImmutableDict(check=False)
    plugin = records_plugin.CallbackModule()
    plugin.set_options()
    ok(plugin, "lock", "deploy_lock", site=site, held=True, acquired=True, holder={"run_id": site, "version": "1.0.0+dddddddddddd"})
    ok(plugin, "unlock", "deploy_lock", site=site, held=False)
    plugin.v2_playbook_on_stats(None)


def test_two_runs_finishing_at_once_both_land(callback):
    runs = [multiprocessing.Process(target=_finish_a_run, args=(str(callback.dir), f"site{n}")) for n in range(6)]
    for run in runs:
        run.start()
    for run in runs:
        run.join(30)
    history = [json.loads(line) for line in (callback.dir / "history.jsonl").read_text().splitlines()]
    assert sorted(entry["site"] for entry in history) == [f"site{n}" for n in range(6)]
    matrix = (callback.dir / "loop-sites-matrix.md").read_text()
    assert all(f"| site{n} |" in matrix for n in range(6))


def test_no_log_results_and_dry_runs_are_never_recorded(callback, monkeypatch):
    hidden = task("Release | Take the deploy lock", "deploy_lock", no_log=True)
    callback.v2_runner_on_ok(CallbackTaskResult(Host("vps1"), hidden, {"censored": "the output has been hidden", "changed": True}, {}))
    callback.v2_playbook_on_stats(None)
    assert not callback.dir.exists()
    monkeypatch.setattr(context, "CLIARGS", ImmutableDict(check=True))
    deploy(callback)
    callback.v2_playbook_on_stats(None)
    assert not callback.dir.exists()


def test_an_unwritable_records_directory_is_said_loudly_and_the_record_kept(callback, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    blocker = tmp_path / "records"
    blocker.write_text("a file where the records directory should be\n")
    deploy(callback)
    callback.v2_playbook_on_stats(None)
    spare = tmp_path / "home" / ".opspack" / "unwritten-records"
    kept = list(spare.iterdir())
    assert len(kept) == 1 and json.loads(kept[0].read_text().splitlines()[0])["site"] == "blog"
    assert "could not write 1 record(s)" in capsys.readouterr().err


def test_a_drill_fills_the_drill_columns(callback):
    ok(callback, "Restore drill | Drill", "restore_drill", passed=True, backup_id="blog-postgresql-20261201T010000Z",
       rto_seconds=8.6, rpo_seconds=3600, engine="postgresql", backup_ended_at="2026-12-01T01:00:07Z")
    callback.v2_playbook_on_stats(None)
    entry = json.loads((callback.dir / "history.jsonl").read_text())
    assert entry["operation"] == "drill" and entry["result"] == "pass" and entry["rto_s"] == 8.6
    assert "| blog | production | vps1 |" in (callback.dir / "loop-sites-matrix.md").read_text()


def test_the_cli_prints_the_records_for_a_person(callback, capsys):
    from opspack import cli
    deploy(callback)
    callback.v2_playbook_on_stats(None)
    second = records_plugin.CallbackModule()
    second.set_options()
    deploy(second, version="3.0.0", fail_at="Release | Health gate")
    second.v2_playbook_on_stats(None)
    capsys.readouterr()
    assert cli.main(["matrix", "--records", str(callback.dir)]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].split()[:2] == ["site", "environment"] and "blog" in out.splitlines()[1]
    assert cli.main(["history", "--records", str(callback.dir), "--site", "blog"]) == 0
    out = capsys.readouterr().out
    assert len(out.splitlines()) == 2 and "failed at: Release | Health gate" in out
    assert cli.main(["incidents", "--records", str(callback.dir)]) == 0
    assert "Follow-up" in capsys.readouterr().out
    assert cli.main(["matrix", "--records", str(callback.dir / "nowhere")]) == 1
    assert "no run has written records there yet" in capsys.readouterr().err


def test_the_operation_comes_from_the_lock_not_from_the_operators_message(callback):
    deploy(callback, reason="cutover shop,blog")
    deploy(callback, version="1.0.0", previous="2.0.0+bbbbbbbbbbbb", reason="hotfix #12", operation="rollback")
    callback.v2_playbook_on_stats(None)
    history = [json.loads(line) for line in (callback.dir / "history.jsonl").read_text().splitlines()]
    assert [entry["operation"] for entry in history] == ["upgrade", "rollback"], history


def test_a_lock_held_by_another_run_is_not_an_operation_of_this_run(callback):
    ok(callback, "Release | Take the deploy lock", "deploy_lock", site="blog", held=True, acquired=False,
       holder={"holder": "carol@ci", "run_id": "ci:1:1", "reason": "deploy from CI"})
    failed(callback, "Release | Refuse the run while another holds the lock", "deploy_lock", msg="held by carol@ci")
    callback.v2_playbook_on_stats(None)
    assert not callback.dir.exists()


def test_a_backup_taken_by_a_deploy_fills_the_last_backup_column(callback):
    ok(callback, "Release | Back up", "pg_backup", backup_id="blog-postgresql-20261201T010000Z",
       manifest={"site": "blog", "ended_at": "2026-12-01T01:00:07Z"})
    callback.v2_playbook_on_stats(None)
    row = [line for line in (callback.dir / "loop-sites-matrix.md").read_text().splitlines() if line.startswith("| blog")]
    assert row and row[0].rstrip(" |").split(" | ")[-1].endswith(("h", "d")), row


def history_of(callback) -> list[dict]:
    return [json.loads(line) for line in (callback.dir / "history.jsonl").read_text().splitlines()]


def test_maintenance_switches_are_recorded_and_shown_in_the_matrix(callback):
    ok(callback, "Release | Switch maintenance on", "site_maintenance", site="blog", maintenance="on", was_on=False)
    # A site already in maintenance: no change, no record.
    callback.v2_runner_on_ok(CallbackTaskResult(Host("vps1"), task("Release | Switch maintenance on", "site_maintenance"),
                                                dict(changed=False, site="blog", maintenance="on", was_on=True), {}))
    callback.v2_playbook_on_stats(None)
    entries = history_of(callback)
    assert [(entry["operation"], entry["maintenance"], entry["result"]) for entry in entries] == [("maintenance", "on", "ok")]
    row = [line for line in (callback.dir / "loop-sites-matrix.md").read_text().splitlines() if line.startswith("| blog")]
    assert "| maintenance on | ok |" in row[0], row


def test_a_restore_behind_maintenance_is_one_restore_operation(callback):
    ok(callback, "Restore | Verify the backup before anything changes", "pg_backup_restore",
       check_mode=True, site="blog", backup_id="blog-postgresql-20261201T010000Z", changed=False)
    ok(callback, "Restore | Switch the maintenance page on", "site_maintenance", site="blog", maintenance="on", was_on=False)
    ok(callback, "Restore | Take a safety backup", "pg_backup", backup_id="blog-postgresql-20261201T020000Z",
       manifest={"site": "blog", "ended_at": "2026-12-01T02:00:05Z"})
    ok(callback, "Restore | Replace the database with the backup", "pg_backup_restore", site="blog",
       backup_id="blog-postgresql-20261201T010000Z", duration_seconds=4.2, previous_database="blog__before_x")
    ok(callback, "Restore | Switch the maintenance page off", "site_maintenance", site="blog", maintenance="off", was_on=True)
    callback.v2_playbook_on_stats(None)
    entries = [(entry["operation"], entry["result"], entry.get("actions")) for entry in history_of(callback)]
    assert entries == [("backup", "ok", None), ("restore", "ok", "maintenance on; maintenance off")], entries
    restore = history_of(callback)[1]
    assert restore["backup_id"] == "blog-postgresql-20261201T010000Z" and restore["duration_s"] == 4.2
    assert not (callback.dir / "what-broke-last-time.md").exists()


@pytest.mark.parametrize("reason", [
    "restore failed: unknown backup id 'blog-postgresql-19990101T000000Z' in /var/backups/opspack/blog/postgresql",
    "restore failed: backup blog-postgresql-x: checksum error: sha256 of /x is 00, the manifest says 11",
], ids=["unknown backup id", "checksum mismatch"])
def test_a_restore_refused_by_its_verification_is_not_recorded(callback, reason):
    # As a deploy refused before its lock: the role stops before the maintenance page, nothing changed.
    failed(callback, "Restore | Verify the backup before anything changes", "pg_backup_restore", check_mode=True,
           site="blog", changed=False, msg=f"{reason}\n{CANARY}")
    callback.v2_playbook_on_stats(None)
    assert not callback.dir.exists()


def test_a_restore_that_fails_after_the_maintenance_page_is_an_incident(callback):
    ok(callback, "Restore | Verify the backup before anything changes", "pg_backup_restore",
       check_mode=True, site="blog", backup_id="blog-postgresql-20261201T010000Z", changed=False)
    ok(callback, "Restore | Switch the maintenance page on", "site_maintenance", site="blog", maintenance="on", was_on=False)
    failed(callback, "Restore | Replace the database with the backup", "pg_backup_restore", site="blog", changed=False,
           backup_id="blog-postgresql-20261201T010000Z", msg=f"restore failed: disk full\n{CANARY}")
    ok(callback, "Restore | Switch the maintenance page off", "site_maintenance", site="blog", maintenance="off", was_on=True)
    callback.v2_playbook_on_stats(None)
    [entry] = history_of(callback)
    assert (entry["operation"], entry["result"]) == ("restore", "failed") and "disk full" in entry["reason"]
    incidents = (callback.dir / "what-broke-last-time.md").read_text()
    assert "restore blog" in incidents and "the site's database was not replaced" in incidents
    assert CANARY not in incidents


def audit_log_by() -> str:
    """What the release role writes as by= (__release_holder, roles/release/tasks/site.yml): the
    lookup's operator term, asked the way the role asks it."""
    from ansible_collections.opspack.platform.plugins.lookup.controller_run import LookupModule
    return LookupModule().run(["operator"])[0]


@pytest.mark.parametrize("user", ["deployer", None])
def test_the_default_operator_is_the_audit_logs_by_name(callback, monkeypatch, user):
    monkeypatch.delenv("OPSPACK_OPERATOR")
    # getpass.getuser() reads LOGNAME first, then the password database: neither is the role's rule.
    monkeypatch.setenv("LOGNAME", "someone-else")
    if user:
        monkeypatch.setenv("USER", user)
    else:
        monkeypatch.delenv("USER", raising=False)
    monkeypatch.setattr("socket.gethostname", lambda: "control-1")
    expected = f"{user or 'operator'}@control-1"
    assert audit_log_by() == expected
    plugin = records_plugin.CallbackModule()
    plugin.set_options()
    deploy(plugin, fail_at="Release | Health gate")
    ok(plugin, "Release | Switch maintenance on", "site_maintenance", site="shop", maintenance="on", was_on=False)
    plugin.v2_playbook_on_stats(None)
    assert [entry["operator"] for entry in history_of(callback)] == [expected, expected]
    assert f"- **Operator:** {expected}\n" in (callback.dir / "what-broke-last-time.md").read_text()
    row = [line for line in (callback.dir / "loop-sites-matrix.md").read_text().splitlines() if line.startswith("| blog")]
    assert f"| {expected} |" in row[0], row


def test_a_configured_operator_still_wins(callback, monkeypatch):
    monkeypatch.setenv("USER", "deployer")
    deploy(callback)
    callback.v2_playbook_on_stats(None)
    assert history_of(callback)[0]["operator"] == "ann@laptop"


def test_a_run_that_takes_over_an_interrupted_runs_lock_records_it_and_what_it_put_right(callback):
    gone = {"holder": "bob@laptop", "run_id": "laptop:99:1", "version": "2.0.0+cccccccccccc", "operation": "deploy"}
    ok(callback, "Release | Take over the lock", "deploy_lock", site="blog", held=True, acquired=True,
       holder={"holder": "ann@laptop", "run_id": "laptop:1:2", "version": "1.0.0+aaaaaaaaaaaa", "operation": "deploy"},
       broken=gone)
    ok(callback, "Release | Bring the schema back", "pg_migrations", version_after=1, applied=[], reverted=["002_tags"])
    ok(callback, "Release | Record live", "site_release", site="blog", operation="live", release_id="1.0.0+aaaaaaaaaaaa",
       record={"current": {"release_id": "1.0.0+aaaaaaaaaaaa", "slot": "blue"}, "previous": {},
               "last_known_good": {"release_id": "1.0.0+aaaaaaaaaaaa", "slot": "blue"}})
    ok(callback, "Release | Release the deploy lock", "deploy_lock", site="blog", held=False, holder={})
    callback.v2_playbook_on_stats(None)
    history = [json.loads(line) for line in (callback.dir / "history.jsonl").read_text().splitlines()]
    assert [(entry["operation"], entry["result"]) for entry in history] == [("deploy", "interrupted"), ("deploy", "ok")]
    assert history[0]["release"] == "2.0.0+cccccccccccc" and history[0]["operator"] == "bob@laptop"
    assert "took over the lock of bob@laptop" in history[1]["actions"]
    assert "schema brought back to the serving release's (reverted 002_tags)" in history[1]["actions"]
    incidents = (callback.dir / "what-broke-last-time.md").read_text()
    assert "deploy blog" in incidents and "interrupted before it finished" in incidents
    matrix = (callback.dir / "loop-sites-matrix.md").read_text()
    assert "| 1.0.0 |" in matrix and "| ok |" in matrix, "the matrix shows the run that finished"


def test_a_deploys_own_migrations_are_not_taken_for_a_repair(callback):
    deploy(callback)
    callback.v2_playbook_on_stats(None)
    history = [json.loads(line) for line in (callback.dir / "history.jsonl").read_text().splitlines()]
    assert "schema brought back" not in history[0].get("actions", "")
