"""Unit tests for drill_outcome: records hold an allowlist of fields, never answers or arguments."""

from __future__ import annotations

from ansible_collections.opspack.platform.plugins.filter.drill import drill_outcome


def test_a_passed_drill_becomes_a_record_with_a_summary():
    result = {"item": "blog", "passed": True, "reason": "all checks passed", "backup_id": "blog-postgresql-20261123T040000Z",
              "rto_seconds": 2.5, "rpo_seconds": 60, "invocation": {"module_args": {"site": "blog"}}, "changed": False}
    record = drill_outcome(result, "drill", "vps1")
    assert record["result"] == "pass" and record["site"] == "blog" and record["host"] == "vps1"
    assert record["summary"] == "blog: blog-postgresql-20261123T040000Z restored and proven in 2.5 s (RPO 60 s)"
    assert "invocation" not in record and "changed" not in record


def test_a_failed_or_crashed_drill_is_a_fail_with_its_reason():
    assert drill_outcome({"item": "blog", "failed": True, "passed": False, "reason": "checksum error"}, "drill", "h")["summary"] == \
        "blog: checksum error"
    crashed = drill_outcome({"item": "blog", "failed": True, "msg": "MODULE FAILURE"}, "drill", "h")
    assert crashed["result"] == "fail" and crashed["reason"] == "MODULE FAILURE"


def test_query_answers_never_reach_the_record():
    result = {"passed": True, "answer": [["secret row"]], "target_time": "2026-11-23T17:00:00Z", "backup_set": "20261123-170000F",
              "rto_seconds": 9.1}
    record = drill_outcome(result, "pitr_drill", "vps1", "blog")
    assert "answer" not in record and "secret row" not in str(record)
    assert record["summary"] == "blog: recovered to 2026-11-23T17:00:00Z from set 20261123-170000F in 9.1 s"


def test_a_crashed_module_says_so_with_its_last_line():
    crashed = drill_outcome({"item": "blog", "exception": "Traceback...\nKeyError: 'x'"}, "drill", "h")
    assert crashed["result"] == "fail" and crashed["reason"] == "the drill module crashed: KeyError: 'x'"
    assert drill_outcome({}, "drill", "h", "blog")["reason"] == "the drill module returned no result"
