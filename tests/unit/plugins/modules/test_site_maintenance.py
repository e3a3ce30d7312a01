"""Unit tests for opspack.platform.site_maintenance, run as a host runs it, on a temporary flag path."""

from __future__ import annotations

import pytest


@pytest.fixture(name="maintenance")
def fixture_maintenance(run_module, tmp_path):
    flag = tmp_path / "maintenance" / "blog" / "maintenance.on"

    def run(check_mode=False, **args):
        args.setdefault("site", "blog")
        args.setdefault("flag", str(flag))
        return run_module("site_maintenance", check_mode=check_mode, **args)
    run.flag = flag
    return run


def test_on_writes_the_flag_once_and_off_removes_it(maintenance):
    switched = maintenance(note="cutover to 2.0.0 by ann")
    assert switched["changed"] and not switched["was_on"] and switched["maintenance"] == "on", switched
    assert maintenance.flag.read_text() == "cutover to 2.0.0 by ann\n" and switched["since"].endswith("Z")
    again = maintenance(note="another note")
    assert not again["changed"] and again["was_on"], "a site already in maintenance stays as it is"
    assert maintenance.flag.read_text() == "cutover to 2.0.0 by ann\n", "the first note is kept"
    off = maintenance(state="off")
    assert off["changed"] and off["was_on"] and off["maintenance"] == "off" and not maintenance.flag.exists()
    assert not maintenance(state="off")["changed"], "switching off a site not in maintenance changes nothing"


def test_check_mode_reports_and_changes_nothing(maintenance):
    dry = maintenance(check_mode=True, _ansible_diff=True, note="restore")
    assert dry["changed"] and not maintenance.flag.exists()
    assert dry["diff"]["after"] == "restore\n", dry
    maintenance()
    assert maintenance(check_mode=True, state="off")["changed"] and maintenance.flag.exists()


def test_an_unwritable_flag_directory_fails_clearly(maintenance, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    failed = maintenance(flag=str(blocker / "maintenance.on"))
    assert failed["failed"] and "could not switch maintenance on for blog" in failed["msg"], failed


def test_a_switch_tells_the_records_one_event_and_no_change_tells_nothing(maintenance):
    switched = maintenance(note="cutover")
    assert switched["opspack_event"] == {"kind": "operation", "site": "blog", "operation": "maintenance",
                                         "result": "ok", "maintenance": "on"}, switched
    assert "opspack_event" not in maintenance(), "a site already in maintenance changed nothing: no event"
    off = maintenance(state="off")
    assert off["opspack_event"]["result"] == "ok" and off["opspack_event"]["maintenance"] == "off"
    assert "opspack_event" not in maintenance(check_mode=True), "check mode changes nothing: no event"
    assert not maintenance.flag.exists()


def test_a_failed_switch_tells_what_did_not_happen(maintenance, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    failed = maintenance(flag=str(blocker / "maintenance.on"))
    told = failed["opspack_event"]
    assert told["kind"] == "operation" and told["operation"] == "maintenance" and told["result"] == "failed", told
    assert told["site"] == "blog" and told["maintenance"] == "on" and told["step"] == "switch maintenance on"
    assert told["reason"].startswith("could not switch maintenance on for blog") and "\n" not in told["reason"]
    assert told["impact"] == "maintenance mode did not switch on" and told["actions"] == "nothing changed"
