"""Unit tests for opspack.platform.deploy_lock, run as a host runs it, on a temporary site tree."""

from __future__ import annotations

import json
import os
import time

import pytest


@pytest.fixture(name="lock")
def fixture_lock(run_module, tmp_path):
    (tmp_path / "blog").mkdir()

    def run(check_mode=False, **args):
        args.setdefault("site", "blog")
        args.setdefault("base_dir", str(tmp_path))
        return run_module("deploy_lock", check_mode=check_mode, **args)
    run.path = tmp_path / "blog" / "deploy.lock"
    return run


def test_a_free_lock_is_taken_with_its_holder_and_released(lock):
    taken = lock(run_id="run-1", holder="ann@laptop", version="1.0.0+0a1b2c3d4e5f", reason="deploy")
    assert taken["changed"] and taken["held"] and not taken.get("failed"), taken
    holder = json.loads((lock.path / "holder.json").read_text())
    assert holder["holder"] == "ann@laptop" and holder["version"] == "1.0.0+0a1b2c3d4e5f" and holder["run_id"] == "run-1"
    again = lock(run_id="run-1", holder="ann@laptop")
    assert not again["changed"] and again["held"], "the same run re-enters without a change"
    released = lock(run_id="run-1", state="released")
    assert released["changed"] and not lock.path.exists()
    assert not lock(run_id="run-1", state="released")["changed"], "releasing a free lock changes nothing"


def test_the_holder_says_what_the_run_does_behind_the_lock(lock):
    assert json.loads(json.dumps(lock(run_id="run-1", holder="ann@laptop")["holder"]))["operation"] == "deploy"
    lock(run_id="run-1", state="released")
    taken = lock(run_id="run-2", holder="ann@laptop", operation="rollback", reason="hotfix #12 broke checkout")
    assert taken["holder"]["operation"] == "rollback" and taken["holder"]["reason"] == "hotfix #12 broke checkout"
    assert json.loads((lock.path / "holder.json").read_text())["operation"] == "rollback"
    refused = lock(run_id="run-3", operation="undo")
    assert refused["failed"] and "operation" in refused["msg"]


def test_another_run_is_refused_naming_the_holder_and_cannot_release_it(lock):
    lock(run_id="run-1", holder="ann@laptop", version="1.0.0+0a1b2c3d4e5f", reason="deploy")
    refused = lock(run_id="run-2", holder="bob@ci")
    assert refused["failed"] and "held by ann@laptop" in refused["msg"] and "1.0.0+0a1b2c3d4e5f" in refused["msg"]
    assert "nothing was changed" in refused["msg"]
    assert "stale" not in refused["msg"], "a fresh lock is not called stale"
    assert refused["held"] and refused["holder"]["run_id"] == "run-1", "the refusal names the holder's run"
    not_mine = lock(run_id="run-2", state="released")
    assert not_mine["failed"] and lock.path.exists()
    assert lock(run_id="run-2", state="released", force=True)["changed"] and not lock.path.exists()


def test_a_stale_lock_is_reported_and_broken_only_on_request(lock):
    lock(run_id="run-1", holder="ann@laptop")
    old = time.time() - 7200
    os.utime(lock.path, (old, old))
    refused = lock(run_id="run-2", stale_after=3600)
    assert refused["failed"] and refused["stale"] and "It is stale" in refused["msg"]
    broken = lock(run_id="run-2", stale_after=3600, break_stale=True)
    assert broken["changed"] and broken["broken"]["holder"] == "ann@laptop"
    assert json.loads((lock.path / "holder.json").read_text())["run_id"] == "run-2"


def test_a_gone_run_is_taken_over_but_no_other(lock):
    lock(run_id="host:1:1", holder="ann@laptop")
    assert lock(run_id="run-2", takeover_run_id="host:9:9")["failed"], "only the named run is taken over"
    taken = lock(run_id="run-2", takeover_run_id="host:1:1")
    assert taken["changed"] and taken["broken"]["run_id"] == "host:1:1"


def test_a_lock_without_a_holder_file_is_held_by_an_unknown_run(lock):
    lock.path.mkdir()
    refused = lock(run_id="run-2")
    assert refused["failed"] and "unknown" in refused["msg"]


def test_check_mode_changes_nothing_and_status_only_reads(lock):
    assert lock(check_mode=True, run_id="run-1")["changed"] and not lock.path.exists()
    assert lock(state="status")["held"] is False
    lock(run_id="run-1", holder="ann@laptop")
    status = lock(state="status")
    assert status["held"] and status["holder"]["holder"] == "ann@laptop" and not status["changed"]


def test_a_site_without_a_directory_is_refused(run_module, tmp_path):
    result = run_module("deploy_lock", site="nosuch", base_dir=str(tmp_path), run_id="run-1")
    assert result["failed"] and "is it provisioned" in result["msg"]
