"""Unit tests for the records callback, driven with real ansible-core objects (Host, Task,
CallbackTaskResult), as ansible-playbook drives it. Every result that should be recorded carries
the opspack_event its module returns (plugins/module_utils/events.py); the callback reads that
and nothing else."""

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
from ansible_collections.opspack.platform.plugins.module_utils.events import event, timings

CANARY = "lab-canary-Pg-7f3a9c"
STARTED, ENDED = "2026-12-05T10:00:00Z", "2026-12-05T10:01:10Z"
GIT_SHA = "0123456789abcdef0123"
CONFIG_HASH = "c0ffee" * 10 + "abcd"


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


def new_callback():
    plugin = records_plugin.CallbackModule()
    plugin.set_options()
    return plugin


def task(name: str, module: str, **fields) -> Task:
    found = Task.load({"name": name, "action": f"opspack.platform.{module}", **fields})
    # What the task executor sets once it has resolved the action's plugin.
    found._resolved_action = f"opspack.platform.{module}"
    return found


def ok(plugin, name, module, told=None, host="vps1", check_mode=None, **result):
    """A task that succeeded; ``told`` is the opspack_event its module returned (None: none)."""
    fields = {} if check_mode is None else {"check_mode": check_mode}
    found = {"changed": True, **result, **({"opspack_event": told} if told is not None else {})}
    plugin.v2_runner_on_ok(CallbackTaskResult(Host(host), task(name, module, **fields), found, {}))


def failed(plugin, name, module, told=None, host="vps1", check_mode=None, **result):
    fields = {} if check_mode is None else {"check_mode": check_mode}
    found = {"failed": True, **result, **({"opspack_event": told} if told is not None else {})}
    plugin.v2_runner_on_failed(CallbackTaskResult(Host(host), task(name, module, **fields), found, {}))


def history_of(callback) -> list[dict]:
    return [json.loads(line) for line in (callback.dir / "history.jsonl").read_text().splitlines()]


def matrix_row(callback, site="blog") -> str:
    rows = [line for line in (callback.dir / "loop-sites-matrix.md").read_text().splitlines()
            if line.startswith(f"| {site} |")]
    assert len(rows) == 1, rows
    return rows[0]


def take_lock(plugin, site="blog", release="2.0.0+bbbbbbbbbbbb", operation="deploy", host="vps1", interrupted=None):
    """What deploy_lock returns when it takes the lock (its taken_event)."""
    ok(plugin, "Release | Take the deploy lock", "deploy_lock", host=host, site=site, held=True, acquired=True,
       told=event("step", site, operation, "done", step="lock", release=release, interrupted=interrupted or {}))


def release_lock(plugin, outcome: dict, site="blog", host="vps1"):
    """What deploy_lock returns when it is released with the run's outcome (its outcome_event)."""
    ok(plugin, "Release | Release the deploy lock", "deploy_lock", host=host, site=site, held=False, holder={},
       told=outcome)


def deploy(plugin, version="2.0.0", previous="1.0.0+aaaaaaaaaaaa", host="vps1", fail_at=None, operation="deploy"):
    """A release run as its events tell it: the lock taken, its steps, the lock released with the outcome."""
    release = f"{version}+bbbbbbbbbbbb"
    # Results without an event (the artifact build) are not read at all.
    ok(plugin, "Release | Build the release artifact", "release_artifact", host=host, site="blog", release_id=release,
       version=version, git_sha=GIT_SHA)
    take_lock(plugin, release=release, operation=operation, host=host)
    ok(plugin, "Release | Unpack the release", "site_release", host=host,
       told=event("step", "blog", operation, "done", step="unpack", release=release))
    ok(plugin, "Release | Run the migrations", "pg_migrations", host=host,
       told=event("step", "blog", "", "done", step="migrate", migrations={"version": 2, "applied": ["002_tags"]}))
    if fail_at:
        failed(plugin, fail_at, "site_upstream", host=host, msg=f"nginx -t refused it\nsecond line with {CANARY}",
               told=event("step", "blog", "", "failed", step="switch", reason="nginx -t refused it"))
        outcome = event("operation", "blog", operation, "failed", release=release, version=version, git_sha=GIT_SHA,
                        step=fail_at, impact=f"the serving release kept serving; {release} never received traffic",
                        actions=["reverted migrations 002_tags", "lock released"],
                        migrations={"version": 1, "reverted": ["002_tags"]}, timings=timings(STARTED, ENDED))
        # A reason as a module might pass it, dump and all: the callback keeps only its first line.
        outcome["reason"] = f"nginx -t refused it\nsecond line with {CANARY}"
    else:
        ok(plugin, "Release | Switch traffic", "site_upstream", host=host,
           told=event("step", "blog", "", "done", step="switch", slot="green"))
        outcome = event("operation", "blog", "upgrade" if operation == "deploy" and previous else operation, "ok",
                        release=release, previous=previous, version=version, git_sha=GIT_SHA, slot="green",
                        migrations={"version": 2, "applied": ["002_tags"]}, timings=timings(STARTED, ENDED),
                        last_known_good={"release_id": release, "slot": "green", "config_hash": CONFIG_HASH})
    release_lock(plugin, outcome, host=host)


def test_an_upgrade_writes_history_matrix_and_last_known_good(callback):
    deploy(callback)
    callback.v2_playbook_on_stats(None)
    [entry] = history_of(callback)
    assert entry["operation"] == "upgrade" and entry["result"] == "ok" and entry["version"] == "2.0.0"
    assert entry["git_sha"] == GIT_SHA and entry["migration_version"] == 2
    assert entry["environment"] == "production" and entry["operator"] == "ann@laptop" and entry["host"] == "vps1"
    assert entry["time"] == ENDED and entry["duration_s"] == 70.0
    assert set(entry) <= set(records_plugin.HISTORY_FIELDS)
    matrix = (callback.dir / "loop-sites-matrix.md").read_text()
    assert f"| blog | production | vps1 | 2.0.0 | 0123456789ab | 2 | upgrade | ok | {ENDED} | ann@laptop | 70 s |" \
        in matrix
    lkg = json.loads((callback.dir / "last-known-good" / "blog.json").read_text())
    assert set(lkg) == {"site", "release", "slot", "git_sha", "migrations_version", "config_hash", "timestamp",
                        "all_tests_pass", "health_status", "host"}
    assert lkg["release"] == "2.0.0+bbbbbbbbbbbb" and lkg["all_tests_pass"] and lkg["migrations_version"] == 2
    assert lkg["config_hash"] == CONFIG_HASH and lkg["git_sha"] == GIT_SHA and lkg["slot"] == "green"
    assert lkg["timestamp"] == ENDED and lkg["host"] == "vps1" and lkg["health_status"] == "ok"
    assert not (callback.dir / "what-broke-last-time.md").exists()


def test_the_version_is_the_release_ids_when_the_event_has_none(callback):
    take_lock(callback, release="1.4.2+0a1b2c3d4e5f")
    release_lock(callback, event("operation", "blog", "deploy", "ok", release="1.4.2+0a1b2c3d4e5f"))
    callback.v2_playbook_on_stats(None)
    [entry] = history_of(callback)
    assert entry["version"] == "1.4.2" and "duration_s" not in entry and entry["time"].endswith("Z")
    assert list((callback.dir / "last-known-good").iterdir()) == [], "no last_known_good in the event, none written"


def test_a_failed_deploy_adds_an_incident_and_marks_the_row_but_keeps_last_known_good(callback):
    deploy(callback)
    callback.v2_playbook_on_stats(None)
    second = new_callback()
    deploy(second, version="3.0.0", fail_at="Release | Switch traffic to the new slot")
    second.v2_playbook_on_stats(None)
    incidents = (callback.dir / "what-broke-last-time.md").read_text()
    assert "deploy blog (production, vps1): failed" in incidents
    assert "Release | Switch traffic to the new slot: nginx -t refused it" in incidents
    assert "never received traffic" in incidents and "reverted migrations 002_tags; lock released" in incidents
    assert "- **Duration:** 70.0 s" in incidents and "Follow-up:" in incidents
    assert "- **Severity:** P2 (page)\n" in incidents, "a release undone: the site is degraded, someone is paged"
    assert CANARY not in incidents, "only the first line of a reason is kept"
    assert history_of(callback)[-1]["severity"] == "P2"
    assert CANARY not in (callback.dir / "history.jsonl").read_text()
    row = matrix_row(callback)
    assert row.startswith("| blog | production | vps1 | 2.0.0 |") and "| deploy | failed |" in row
    assert json.loads((callback.dir / "last-known-good" / "blog.json").read_text())["release"].startswith("2.0.0+")


def test_a_rolled_back_deploy_is_an_incident_with_the_events_impact_and_actions(callback):
    take_lock(callback, release="3.0.0+bbbbbbbbbbbb")
    impact = "3.0.0+bbbbbbbbbbbb served for 40 s, then traffic went back to slot blue"
    release_lock(callback, event(
        "operation", "blog", "deploy", "rolled back", release="3.0.0+bbbbbbbbbbbb", step="Release | Health gate",
        reason="GET /health answered 502", impact=impact,
        actions="switched traffic back to slot blue; reverted migrations 003_x; lock released",
        last_known_good={"release_id": "3.0.0+bbbbbbbbbbbb", "slot": "green"}, timings=timings(STARTED, ENDED)))
    callback.v2_playbook_on_stats(None)
    [entry] = history_of(callback)
    assert (entry["operation"], entry["result"]) == ("deploy", "rolled back")
    assert entry["impact"] == impact
    assert entry["actions"] == "switched traffic back to slot blue; reverted migrations 003_x; lock released"
    incidents = (callback.dir / "what-broke-last-time.md").read_text()
    assert "deploy blog (production, vps1): rolled back" in incidents
    assert f"- **Impact:** {impact}\n" in incidents
    assert "- **What the automation did:** switched traffic back to slot blue; reverted migrations 003_x; " \
           "lock released\n" in incidents
    assert "- **What broke:** Release | Health gate: GET /health answered 502\n" in incidents
    assert not (callback.dir / "last-known-good" / "blog.json").exists(), "only an ok operation is last known good"


def test_incidents_are_appended_never_rewritten(callback):
    for _ in range(2):
        plugin = new_callback()
        deploy(plugin, fail_at="Release | Health gate")
        plugin.v2_playbook_on_stats(None)
    first = (callback.dir / "what-broke-last-time.md").read_text()
    assert first.count("## ") == 2
    plugin = new_callback()
    deploy(plugin, fail_at="Release | Health gate")
    plugin.v2_playbook_on_stats(None)
    after = (callback.dir / "what-broke-last-time.md").read_text()
    assert after.startswith(first) and after.count("## ") == 3


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
        plugin = new_callback()
        take_lock(plugin, site=site, host=host, release="1.0.0+cccccccccccc")
        release_lock(plugin, event("operation", site, "deploy", "ok", release="1.0.0+cccccccccccc",
                                   timings=timings(STARTED, ENDED)), site=site, host=host)
        plugin.v2_playbook_on_stats(None)
    matrix = callback.dir / "loop-sites-matrix.md"
    text = matrix.read_text()
    rows = [line for line in text.splitlines() if line.startswith("| ")]
    assert [row.split(" | ")[0] for row in rows[1:]] == ["| blog", "| shop"]
    # Rendered again from the same history: the same text, and the file is left as it is.
    records_plugin.Records(str(callback.dir)).write([], {})
    assert matrix.read_text() == text


def _finish_a_run(directory: str, site: str) -> None:
    os.environ["OPSPACK_RECORDS_DIR"] = directory
    context.CLIARGS = ImmutableDict(check=False)
    plugin = new_callback()
    take_lock(plugin, site=site, release="1.0.0+dddddddddddd")
    release_lock(plugin, event("operation", site, "deploy", "ok", release="1.0.0+dddddddddddd"), site=site)
    plugin.v2_playbook_on_stats(None)


def test_two_runs_finishing_at_once_both_land(callback):
    runs = [multiprocessing.Process(target=_finish_a_run, args=(str(callback.dir), f"site{n}")) for n in range(6)]
    for run in runs:
        run.start()
    for run in runs:
        run.join(30)
    history = history_of(callback)
    assert sorted(entry["site"] for entry in history) == [f"site{n}" for n in range(6)]
    matrix = (callback.dir / "loop-sites-matrix.md").read_text()
    assert all(f"| site{n} |" in matrix for n in range(6))


def test_no_log_results_and_dry_runs_are_never_recorded(callback, monkeypatch):
    hidden = task("Release | Take the deploy lock", "deploy_lock", no_log=True)
    callback.v2_runner_on_ok(CallbackTaskResult(Host("vps1"), hidden,
                                                {"censored": "the output has been hidden", "changed": True}, {}))
    # A no_log task whose result still carries an event (a callback sees what the strategy hands it).
    still = {"changed": True, "opspack_event": event("operation", "blog", "maintenance", "ok", maintenance="on")}
    callback.v2_runner_on_ok(CallbackTaskResult(Host("vps1"), task("Switch maintenance", "site_maintenance",
                                                                   no_log=True), still, {}))
    # A check-mode task (a restore's verification) changes nothing, whatever it returns.
    ok(callback, "Restore | Verify the backup", "pg_backup_restore", check_mode=True,
       told=event("operation", "blog", "restore", "ok", backup_id="blog-postgresql-20261201T010000Z"))
    callback.v2_playbook_on_stats(None)
    assert not callback.dir.exists()
    monkeypatch.setattr(context, "CLIARGS", ImmutableDict(check=True))
    dry = new_callback()
    deploy(dry)
    dry.v2_playbook_on_stats(None)
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
    ok(callback, "Restore drill | Drill", "restore_drill", passed=True,
       told=event("operation", "blog", "drill", "pass", backup_id="blog-postgresql-20261201T010000Z", rto_s=8.6,
                  rpo_s=3600, engine="postgresql", backup_ended_at="2026-12-01T01:00:07Z",
                  timings=timings("2026-12-01T03:00:00Z", "2026-12-01T03:00:09Z")))
    callback.v2_playbook_on_stats(None)
    [entry] = history_of(callback)
    assert entry["operation"] == "drill" and entry["result"] == "pass" and entry["rto_s"] == 8.6
    assert entry["engine"] == "postgresql" and entry["rpo_s"] == 3600 and entry["operator"] == "ann@laptop"
    row = matrix_row(callback)
    assert row.startswith("| blog | production | vps1 |") and "| pass | 2026-12-01 |" in row
    assert not (callback.dir / "what-broke-last-time.md").exists(), "a drill that passed is no incident"


def test_a_failed_drill_is_an_incident(callback):
    failed(callback, "Restore drill | Drill", "files_drill",
           told=event("operation", "blog", "drill", "fail", engine="files", step="compare",
                      reason="3 files differ from the backup"))
    callback.v2_playbook_on_stats(None)
    incidents = (callback.dir / "what-broke-last-time.md").read_text()
    assert "drill blog (production, vps1): fail" in incidents
    assert "- **Severity:** P3 (notify)\n" in incidents, "a chore failed, the site unharmed"


def test_an_event_may_name_its_severity_and_open_incidents_are_listed_until_followed_up(callback, capsys):
    from opspack import cli
    failed(callback, "Restore drill | Drill", "files_drill",
           told=event("operation", "blog", "drill", "fail", engine="files", step="compare", reason="3 files differ",
                      severity="P4"))
    failed(callback, "Backup | Take", "pg_backup",
           told=event("operation", "shop", "backup", "failed", step="dump", reason="disk full"))
    callback.v2_playbook_on_stats(None)
    path = callback.dir / "what-broke-last-time.md"
    assert "- **Severity:** P4 (log)\n" in path.read_text() and "- **Severity:** P2 (page)\n" in path.read_text()
    assert cli.main(["incidents", "--open", "--records", str(callback.dir)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("P4  log     ") and "drill blog" in out[0] and out[1].strip() == "compare: 3 files differ"
    assert out[2].startswith("P2  page    ") and "backup shop" in out[2]
    # A person writes the follow-up of the drill: only the backup stays open.
    text = path.read_text()
    first = text.index("_(to be filled in by a person)_")
    path.write_text(text[:first] + "files restored from the second copy" + text[first + 31:])
    assert cli.main(["incidents", "--open", "--json", "--records", str(callback.dir)]) == 0
    (still,) = json.loads(capsys.readouterr().out)
    assert still["severity"] == "P2" and still["escalation"] == "page" and "backup shop" in still["title"]
    assert still["what_broke"] == "dump: disk full" and still["open"]


def test_the_cli_prints_the_records_for_a_person(callback, capsys):
    from opspack import cli
    deploy(callback)
    callback.v2_playbook_on_stats(None)
    second = new_callback()
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


def test_the_operation_is_the_events_not_the_task_names_or_the_operators_message(callback):
    # A task named after a rollback, an operator's message about a cutover: the event says upgrade.
    take_lock(callback)
    ok(callback, "Rollback | Roll the blog back (cutover shop,blog)", "deploy_lock", reason="rollback: cutover",
       told=event("operation", "blog", "upgrade", "ok", release="2.0.0+bbbbbbbbbbbb"))
    deploy(callback, version="1.0.0", previous="2.0.0+bbbbbbbbbbbb", operation="rollback")
    callback.v2_playbook_on_stats(None)
    assert [entry["operation"] for entry in history_of(callback)] == ["upgrade", "rollback"]


def test_a_lock_held_by_another_run_is_not_an_operation_of_this_run(callback):
    # deploy_lock refuses without an event: nothing changed.
    failed(callback, "Release | Take the deploy lock", "deploy_lock", site="blog", held=True, acquired=False,
           holder={"holder": "carol@ci", "run_id": "ci:1:1", "reason": "deploy from CI"},
           msg="The deploy lock of site blog is held by carol@ci; nothing was changed.")
    callback.v2_playbook_on_stats(None)
    assert not callback.dir.exists()


def test_a_backup_taken_by_a_deploy_fills_the_last_backup_column(callback):
    ok(callback, "Release | Back up", "pg_backup",
       told=event("operation", "blog", "backup", "ok", backup_id="blog-postgresql-20261201T010000Z",
                  backup_ended_at="2026-12-01T01:00:07Z", engine="postgresql"))
    callback.v2_playbook_on_stats(None)
    [entry] = history_of(callback)
    assert entry["backup_id"] == "blog-postgresql-20261201T010000Z"
    assert entry["backup_ended_at"] == "2026-12-01T01:00:07Z"
    row = matrix_row(callback)
    assert row.rstrip(" |").split(" | ")[-1].endswith(("h", "d")), row


def test_a_backup_inside_a_deploy_does_not_close_its_lock(callback):
    take_lock(callback)
    ok(callback, "Release | Back up", "pg_backup",
       told=event("operation", "blog", "backup", "ok", backup_id="blog-postgresql-20261201T010000Z",
                  backup_ended_at="2026-12-01T01:00:07Z"))
    callback.v2_playbook_on_stats(None)
    assert [(entry["operation"], entry["result"]) for entry in history_of(callback)] == [
        ("backup", "ok"), ("deploy", "failed")]


def test_maintenance_switches_are_recorded_and_shown_in_the_matrix(callback):
    ok(callback, "Release | Switch maintenance on", "site_maintenance", site="blog", maintenance="on", was_on=False,
       told=event("operation", "blog", "maintenance", "ok", maintenance="on"))
    # A site already in maintenance: no change, no event, no record.
    ok(callback, "Release | Switch maintenance on", "site_maintenance", changed=False, site="blog", maintenance="on",
       was_on=True)
    callback.v2_playbook_on_stats(None)
    entries = history_of(callback)
    assert [(entry["operation"], entry["maintenance"], entry["result"]) for entry in entries] == [
        ("maintenance", "on", "ok")]
    assert "| maintenance on | ok |" in matrix_row(callback)


def test_a_restore_behind_maintenance_is_one_restore_operation(callback):
    ok(callback, "Restore | Verify the backup before anything changes", "pg_backup_restore",
       check_mode=True, site="blog", backup_id="blog-postgresql-20261201T010000Z", changed=False)
    ok(callback, "Restore | Switch the maintenance page on", "site_maintenance",
       told=event("operation", "blog", "maintenance", "ok", maintenance="on"))
    ok(callback, "Restore | Take a safety backup", "pg_backup",
       told=event("operation", "blog", "backup", "ok", backup_id="blog-postgresql-20261201T020000Z",
                  backup_ended_at="2026-12-01T02:00:05Z"))
    ok(callback, "Restore | Replace the database with the backup", "pg_backup_restore",
       told=event("operation", "blog", "restore", "ok", backup_id="blog-postgresql-20261201T010000Z",
                  timings=timings("2026-12-01T02:00:10Z", "2026-12-01T02:00:14Z")))
    ok(callback, "Restore | Switch the maintenance page off", "site_maintenance",
       told=event("operation", "blog", "maintenance", "ok", maintenance="off"))
    callback.v2_playbook_on_stats(None)
    entries = [(entry["operation"], entry["result"], entry.get("actions")) for entry in history_of(callback)]
    assert entries == [("backup", "ok", None), ("restore", "ok", "maintenance on; maintenance off")], entries
    restore = history_of(callback)[1]
    assert restore["backup_id"] == "blog-postgresql-20261201T010000Z" and restore["duration_s"] == 4.0
    assert "| restore | ok |" in matrix_row(callback)
    assert not (callback.dir / "what-broke-last-time.md").exists()


@pytest.mark.parametrize("reason", [
    "restore failed: unknown backup id 'blog-postgresql-19990101T000000Z' in /var/backups/opspack/blog/postgresql",
    "restore failed: backup blog-postgresql-x: checksum error: sha256 of /x is 00, the manifest says 11",
], ids=["unknown backup id", "checksum mismatch"])
def test_a_restore_refused_by_its_verification_is_not_recorded(callback, reason):
    # As a deploy refused before its lock: nothing changed, so the module returns no event.
    failed(callback, "Restore | Verify the backup before anything changes", "pg_backup_restore", check_mode=True,
           site="blog", changed=False, msg=f"{reason}\n{CANARY}")
    failed(callback, "Restore | Verify the backup before anything changes", "pg_backup_restore",
           site="blog", changed=False, msg=f"{reason}\n{CANARY}")
    callback.v2_playbook_on_stats(None)
    assert not callback.dir.exists()


def test_a_restore_that_fails_after_the_maintenance_page_is_an_incident(callback):
    ok(callback, "Restore | Verify the backup before anything changes", "pg_backup_restore",
       check_mode=True, site="blog", backup_id="blog-postgresql-20261201T010000Z", changed=False)
    ok(callback, "Restore | Switch the maintenance page on", "site_maintenance",
       told=event("operation", "blog", "maintenance", "ok", maintenance="on"))
    told = event("operation", "blog", "restore", "failed", backup_id="blog-postgresql-20261201T010000Z",
                 step="Restore | Replace the database with the backup", reason="restore failed: disk full",
                 impact="the site's database was not replaced", actions="nothing changed")
    told["reason"] += f"\n{CANARY}"
    failed(callback, "Restore | Replace the database with the backup", "pg_backup_restore", changed=False,
           msg=f"restore failed: disk full\n{CANARY}", told=told)
    ok(callback, "Restore | Switch the maintenance page off", "site_maintenance",
       told=event("operation", "blog", "maintenance", "ok", maintenance="off"))
    callback.v2_playbook_on_stats(None)
    [entry] = history_of(callback)
    assert (entry["operation"], entry["result"]) == ("restore", "failed") and "disk full" in entry["reason"]
    assert entry["actions"] == "nothing changed; maintenance on; maintenance off"
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
    plugin = new_callback()
    deploy(plugin, fail_at="Release | Health gate")
    ok(plugin, "Release | Switch maintenance on", "site_maintenance",
       told=event("operation", "shop", "maintenance", "ok", maintenance="on"))
    plugin.v2_playbook_on_stats(None)
    assert [entry["operator"] for entry in history_of(callback)] == [expected, expected]
    assert f"- **Operator:** {expected}\n" in (callback.dir / "what-broke-last-time.md").read_text()
    assert f"| {expected} |" in matrix_row(callback)


def test_a_configured_operator_still_wins(callback, monkeypatch):
    monkeypatch.setenv("USER", "deployer")
    deploy(callback)
    callback.v2_playbook_on_stats(None)
    assert history_of(callback)[0]["operator"] == "ann@laptop"


GONE = {"operation": "deploy", "release": "2.0.0+cccccccccccc", "holder": "bob@laptop", "run_id": "laptop:99:1",
        "since": "2026-12-05T09:00:00Z"}


def test_a_run_that_takes_over_an_interrupted_runs_lock_records_it_and_what_it_put_right(callback):
    take_lock(callback, release="1.0.0+aaaaaaaaaaaa", interrupted=GONE)
    ok(callback, "Release | Bring the schema back", "pg_migrations",
       told=event("step", "blog", "", "done", step="migrate", migrations={"version": 1, "reverted": ["002_tags"]}))
    release_lock(callback, event(
        "operation", "blog", "deploy", "ok", release="1.0.0+aaaaaaaaaaaa", migrations={"version": 1},
        actions=["took over the lock of bob@laptop",
                 "schema brought back to the serving release's (reverted 002_tags)"],
        last_known_good={"release_id": "1.0.0+aaaaaaaaaaaa", "slot": "blue"}))
    callback.v2_playbook_on_stats(None)
    history = history_of(callback)
    assert [(entry["operation"], entry["result"]) for entry in history] == [("deploy", "interrupted"), ("deploy", "ok")]
    gone = history[0]
    assert gone["release"] == "2.0.0+cccccccccccc" and gone["operator"] == "bob@laptop"
    assert gone["step"] == "interrupted before it finished" and "laptop:99:1" in gone["reason"]
    assert gone["actions"] == "lock taken over by ann@laptop" and "put right" in gone["impact"]
    assert history[1]["actions"] == ("took over the lock of bob@laptop; "
                                     "schema brought back to the serving release's (reverted 002_tags)")
    incidents = (callback.dir / "what-broke-last-time.md").read_text()
    assert "deploy blog" in incidents and "interrupted before it finished" in incidents
    assert incidents.count("## ") == 1
    row = matrix_row(callback)
    assert "| 1.0.0 |" in row and "| deploy | ok |" in row, "the matrix shows the run that finished"


def test_an_operation_event_that_interrupted_a_run_records_it_once(callback):
    take_lock(callback, release="1.0.0+aaaaaaaaaaaa", interrupted=GONE)
    release_lock(callback, event("operation", "blog", "rollback", "ok", release="1.0.0+aaaaaaaaaaaa",
                                 interrupted=GONE))
    ok(callback, "Restore | Replace the database", "pg_backup_restore", host="vps2",
       told=event("operation", "shop", "restore", "ok", interrupted=dict(GONE, run_id="laptop:7:7")))
    callback.v2_playbook_on_stats(None)
    assert [(entry["site"], entry["operation"], entry["result"]) for entry in history_of(callback)] == [
        ("blog", "deploy", "interrupted"), ("blog", "rollback", "ok"),
        ("shop", "deploy", "interrupted"), ("shop", "restore", "ok")]


def test_a_result_without_an_event_is_never_guessed_at(callback):
    # Telling task names, opspack modules, changed results and failures: no event, so no record...
    ok(callback, "Release | Switch traffic to the new slot", "site_upstream", slot="green", previous_slot="blue")
    ok(callback, "Release | Record the release as live", "site_release", site="blog", operation="live",
       release_id="2.0.0+bbbbbbbbbbbb", record={"last_known_good": {"release_id": "2.0.0+bbbbbbbbbbbb"}})
    ok(callback, "Release | Release the deploy lock", "deploy_lock", site="blog", held=False)
    failed(callback, "Restore | Replace the database with the backup", "pg_backup_restore", site="blog",
           msg="restore failed: disk full")
    ok(callback, "Restore drill | Drill", "restore_drill", passed=True, backup_id="blog-postgresql-20261201T010000Z")
    callback.v2_playbook_on_stats(None)
    assert not callback.dir.exists()
    # ...and, inside an open lock, no step: the run is told by the events it did return.
    plugin = new_callback()
    take_lock(plugin)
    ok(plugin, "Release | Run the migrations", "pg_migrations",
       told=event("step", "blog", "", "done", step="migrate", migrations={"version": 2}))
    failed(plugin, "Release | Switch traffic to the new slot", "site_upstream", changed=True,
           msg="nginx -t refused it")
    ok(plugin, "Release | Switch traffic back", "site_upstream", slot="blue")
    plugin.v2_playbook_on_stats(None)
    [entry] = history_of(callback)
    assert entry["result"] == "failed"
    assert entry["step"] == "the run ended with the deploy lock still held (last step: migrate)"
    assert "reason" not in entry and "nginx" not in json.dumps(entry)


def test_a_run_that_ends_with_the_lock_held_names_its_last_step(callback):
    take_lock(callback, operation="rollback", release="1.0.0+aaaaaaaaaaaa")
    ok(callback, "Release | Unpack", "site_release",
       told=event("step", "blog", "rollback", "done", step="unpack", release="1.0.0+aaaaaaaaaaaa"))
    failed(callback, "Release | Switch traffic", "site_upstream",
           told=event("step", "blog", "", "failed", step="switch", reason="nginx -t refused it"))
    callback.v2_playbook_on_stats(None)
    [entry] = history_of(callback)
    assert (entry["operation"], entry["result"], entry["release"], entry["version"]) == (
        "rollback", "failed", "1.0.0+aaaaaaaaaaaa", "1.0.0")
    assert entry["step"] == "the run ended with the deploy lock still held (last step: switch)"
    assert entry["reason"] == "nginx -t refused it"
    incidents = (callback.dir / "what-broke-last-time.md").read_text()
    assert "rollback blog (production, vps1): failed" in incidents
    assert "the deploy lock still held (last step: switch): nginx -t refused it" in incidents


def test_the_operation_event_closes_the_lock_of_its_host_and_site_only(callback):
    take_lock(callback, site="blog")
    take_lock(callback, site="shop")
    take_lock(callback, site="blog", host="vps2")
    release_lock(callback, event("operation", "blog", "deploy", "ok", release="2.0.0+bbbbbbbbbbbb"))
    callback.v2_playbook_on_stats(None)
    found = [(entry["host"], entry["site"], entry["result"], entry.get("step", "")) for entry in history_of(callback)]
    held = "the run ended with the deploy lock still held (last step: lock)"
    assert found == [("vps1", "blog", "ok", ""), ("vps1", "shop", "failed", held), ("vps2", "blog", "failed", held)]


def test_a_lock_taken_again_without_the_operations_event_records_the_first_as_failed(callback):
    # The lock released without an outcome (no event), then taken again by the same run.
    take_lock(callback, release="2.0.0+bbbbbbbbbbbb")
    ok(callback, "Release | Release the deploy lock", "deploy_lock", site="blog", held=False)
    take_lock(callback, release="2.0.1+bbbbbbbbbbbb")
    release_lock(callback, event("operation", "blog", "deploy", "ok", release="2.0.1+bbbbbbbbbbbb"))
    callback.v2_playbook_on_stats(None)
    assert [(entry["release"], entry["result"], entry.get("step", "")) for entry in history_of(callback)] == [
        ("2.0.0+bbbbbbbbbbbb", "failed",
         "the deploy lock was released without the operation's outcome (last step: lock)"),
        ("2.0.1+bbbbbbbbbbbb", "ok", "")]


def test_events_in_a_loops_item_results_are_read(callback):
    items = [
        {"item": "blog", "changed": True, "opspack_event": event("operation", "blog", "maintenance", "ok",
                                                                 maintenance="on")},
        {"item": "shop", "changed": False},
        {"item": "wiki", "censored": "the output has been hidden"},
        {"item": "docs", "changed": True, "opspack_event": event("operation", "docs", "backup", "ok",
                                                                 backup_id="docs-postgresql-20261201T010000Z")},
    ]
    callback.v2_runner_on_ok(CallbackTaskResult(Host("vps1"), task("Switch maintenance on", "site_maintenance"),
                                                {"changed": True, "results": items}, {}))
    callback.v2_playbook_on_stats(None)
    assert [(entry["site"], entry["operation"]) for entry in history_of(callback)] == [
        ("blog", "maintenance"), ("docs", "backup")]


def test_an_event_without_a_kind_or_a_site_is_said_and_skipped(callback, capsys):
    ok(callback, "Something", "site_release", told={"kind": "guess", "site": "blog", "operation": "deploy"})
    ok(callback, "Something else", "site_release", told={"kind": "operation", "operation": "deploy", "result": "ok"})
    callback.v2_playbook_on_stats(None)
    assert not callback.dir.exists()
    assert capsys.readouterr().err.count("returned an opspack_event without a known kind or without a site") == 2


def test_a_record_never_breaks_the_run(callback, monkeypatch, capsys):
    def broken(*_args):
        raise RuntimeError("boom")
    monkeypatch.setattr(callback, "_read", broken)
    release_lock(callback, event("operation", "blog", "deploy", "ok"))
    failed(callback, "Release | Switch traffic", "site_upstream",
           told=event("step", "blog", "", "failed", step="switch"))
    err = capsys.readouterr().err
    assert "could not read a result of Release | Release the deploy lock: boom" in err
    assert "could not read a failure of Release | Switch traffic: boom" in err


def test_the_records_go_to_the_state_directory_the_run_reported(tmp_path, monkeypatch):
    """The playbooks tell the callback the state directory their roles use (set_stats, which an
    inventory variable may set): that wins over the callback's own state_dir; records_dir wins over both."""
    from ansible.executor.stats import AggregateStats
    monkeypatch.setattr(context, "CLIARGS", ImmutableDict(check=False))
    monkeypatch.delenv("OPSPACK_RECORDS_DIR", raising=False)
    monkeypatch.setenv("OPSPACK_STATE_DIR", str(tmp_path / "configured"))
    stats = AggregateStats()
    stats.set_custom_stats("opspack_state_dir", str(tmp_path / "reported"))
    plugin = new_callback()
    deploy(plugin)
    plugin.v2_playbook_on_stats(stats)
    assert (tmp_path / "reported" / "records" / "history.jsonl").is_file()
    assert not (tmp_path / "configured").exists()
    # Without a report (a playbook of the operator's own that does not import login.yml).
    plugin = new_callback()
    deploy(plugin)
    plugin.v2_playbook_on_stats(AggregateStats())
    assert (tmp_path / "configured" / "records" / "history.jsonl").is_file()
    monkeypatch.setenv("OPSPACK_RECORDS_DIR", str(tmp_path / "records-only"))
    plugin = new_callback()
    deploy(plugin)
    plugin.v2_playbook_on_stats(stats)
    assert (tmp_path / "records-only" / "history.jsonl").is_file()


def test_without_any_setting_the_records_go_to_the_default_state_directory(tmp_path, monkeypatch):
    monkeypatch.setattr(context, "CLIARGS", ImmutableDict(check=False))
    for name in ("OPSPACK_RECORDS_DIR", "OPSPACK_STATE_DIR", "OPSPACK_ENVIRONMENT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    plugin = new_callback()
    plugin._sources = [str(tmp_path / "inventories" / "production" / "hosts.yml")]
    deploy(plugin)
    plugin.v2_playbook_on_stats(None)
    [entry] = [json.loads(line) for line in
               (tmp_path / "data" / "opspack" / "production" / "records" / "history.jsonl").read_text().splitlines()]
    assert entry["environment"] == "production"


def test_a_verification_fills_its_own_column_per_site_and_a_failed_one_is_an_incident(callback):
    deploy(callback)
    found = {"changed": False, "passed": False, "results": [
        {"site": "blog", "opspack_event": event("operation", "blog", "verify", "fail", severity="P2",
                                                reason="2 check(s) failed: disk, smoke@blog",
                                                timings=timings("2026-12-06T09:00:00Z", "2026-12-06T09:00:31Z"))},
        {"site": "shop", "opspack_event": event("operation", "shop", "verify", "pass",
                                                timings=timings("2026-12-06T09:00:00Z", "2026-12-06T09:00:31Z"))}]}
    callback.v2_runner_on_ok(CallbackTaskResult(Host("vps1"), task("Verify | Judge the host", "verify_report"), found, {}))
    callback.v2_playbook_on_stats(None)
    verified = [entry for entry in history_of(callback) if entry["operation"] == "verify"]
    assert [(entry["site"], entry["result"]) for entry in verified] == [("blog", "fail"), ("shop", "pass")]
    row = matrix_row(callback)
    # The last operation stays the upgrade: a verification changes nothing.
    assert "| upgrade | ok |" in row and row.endswith("| fail (vps1) 2026-12-06 |"), row
    assert matrix_row(callback, "shop").endswith("| pass 2026-12-06 |")
    incidents = (callback.dir / "what-broke-last-time.md").read_text()
    assert "verify blog (production, vps1): fail" in incidents and "- **Severity:** P2 (page)" in incidents
    assert "verify shop" not in incidents


def test_check_reports_keep_each_hosts_last_one_and_the_daily_signals_without_touching_the_history(callback):
    report = {"tool": "ops_daily", "generated_at": "2026-12-06T06:05:00Z", "status": "healthy",
              "summary": "ops_daily status=healthy mode=prod exit=0 checks=9",
              "checks": [{"check": "traffic", "site": "blog", "status": "ok", "requests": 120, "errors_5xx": 0,
                          "secret_figure": CANARY},
                         {"check": "error_rate", "site": "blog", "status": "ok", "value": 0.0, "threshold": 0.5},
                         {"check": "p95", "site": "blog", "status": "ok", "value": 0.12, "threshold": 2},
                         {"check": "disk", "status": "ok", "value": 41.5, "threshold": 80}]}
    for host in ("vps2", "vps1"):
        callback.v2_runner_on_ok(CallbackTaskResult(Host(host), task("Daily check | Run ops_daily", "health_check"),
                                                    {"changed": False, "rc": 0, "opspack_report": report}, {}))
    callback.v2_playbook_on_stats(None)
    kept = json.loads((callback.dir / "reports" / "ops_daily" / "vps1.json").read_text())
    assert kept["host"] == "vps1" and kept["summary"].startswith("ops_daily status=healthy") and CANARY not in json.dumps(kept)
    lines = [json.loads(line) for line in (callback.dir / "daily.jsonl").read_text().splitlines()]
    assert [line["host"] for line in lines] == ["vps1", "vps2"]
    assert lines[0]["sites"] == {"blog": {"requests": 120, "error_rate_percent": 0.0, "p95_seconds": 0.12}}
    assert lines[0]["disk_percent"] == 41.5
    assert not (callback.dir / "history.jsonl").exists() and not (callback.dir / "loop-sites-matrix.md").exists()


def test_a_verification_failing_again_is_not_a_new_incident_until_it_passed_in_between(callback):
    def verify(result, host="vps1", reason="1 check(s) failed: disk"):
        found = {"changed": False, "results": [{"site": "blog", "opspack_event": event(
            "operation", "blog", "verify", result, **({"severity": "P2", "reason": reason} if result == "fail" else {}))}]}
        plugin = new_callback()
        plugin.v2_runner_on_ok(CallbackTaskResult(Host(host), task("Verify | Judge the host", "verify_report"), found, {}))
        plugin.v2_playbook_on_stats(None)

    for result in ("fail", "fail", "pass", "fail"):
        verify(result)
    verify("fail", host="vps2")
    incidents = (callback.dir / "what-broke-last-time.md").read_text()
    assert incidents.count("verify blog (production, vps1): fail") == 2 and incidents.count("(production, vps2)") == 1
    verify("fail", host="vps2", reason="1 check(s) failed: firewall")  # something else broke: a new incident
    assert (callback.dir / "what-broke-last-time.md").read_text().count("(production, vps2)") == 2
    verify("pass", host="vps1")
    # The row's cell: the failing host named while any host's last verification failed.
    assert "| fail (vps2) 20" in matrix_row(callback)
