"""Unit tests for opspack.platform.release_watch on nginx logs written by the test: which requests
count for the new release and which for the baseline, a breach, too little traffic, and a log
that cannot be read (the watch's own failure never undoes a release)."""

from __future__ import annotations

import datetime
import json
import time

NEW, OLD = "127.0.0.1:8001", "127.0.0.1:8000"


def line(when: float, status: int = 200, upstream: str = NEW, host: str = "blog.example.com") -> str:
    stamp = datetime.datetime.fromtimestamp(when, datetime.timezone.utc).strftime("%d/%b/%Y:%H:%M:%S +0000")
    return (f'203.0.113.9 - - [{stamp}] "GET /work HTTP/1.1" {status} 5 "-" "curl" host={host} rt=0.010 '
            f"uct=0.000 urt=0.010 ua={upstream}\n")


def watch(run_module, tmp_path, **args):
    args.setdefault("site", "blog")
    args.setdefault("domains", ["blog.example.com"])
    args.setdefault("slot_address", NEW)
    args.setdefault("previous_address", OLD)
    args.setdefault("minutes", 0.02)
    args.setdefault("interval", 0.5)
    args.setdefault("min_requests", 20)
    args.setdefault("nginx_logs", [str(tmp_path / "access.log.1"), str(tmp_path / "access.log")])
    return run_module("release_watch", **args)


def test_a_release_worse_than_the_one_before_fails_naming_the_figures(run_module, tmp_path):
    now = time.time()
    before = [line(now - 600, upstream=OLD) for _ in range(99)] + [line(now - 600, 500, upstream=OLD)]
    (tmp_path / "access.log.1").write_text("".join(before))
    # The new slot's 5xx after the watch started count; its requests before it, other sites' and
    # the old slot's after it do not.
    (tmp_path / "access.log").write_text("".join(
        [line(now - 300, 500)] * 50 + [line(now + 30, 500, host="other.example.com")] * 50
        + [line(now + 30, 500, upstream=OLD)] * 50 + [line(now + 30)] * 27 + [line(now + 30, 500)] * 3))
    result = watch(run_module, tmp_path)
    assert result["failed"] and result["judged"], result
    assert result["watched"] == {"requests": 30, "errors_5xx": 3, "error_rate_percent": 10.0, "p95_seconds": 0.01}
    assert result["baseline"]["requests"] == 100 and result["baseline"]["error_rate_percent"] == 1.0
    assert result["msg"].startswith("the new release of blog: 5xx rate 10.00 % over 30 requests is above 0.5 % "
                                    "(the release before: 1.00 % over 100)")


def test_a_release_no_worse_than_before_passes_and_too_little_traffic_is_not_judged(run_module, tmp_path):
    now = time.time()
    (tmp_path / "access.log").write_text("".join([line(now - 60, 500, upstream=OLD)] * 10 + [line(now - 60, upstream=OLD)] * 90
                                                 + [line(now + 30)] * 85 + [line(now + 30, 500)] * 15))
    result = watch(run_module, tmp_path)
    assert not result.get("failed") and result["judged"] and result["breach"] == "", "15 % is not twice the 10 % before"
    (tmp_path / "access.log").write_text("".join([line(now + 30, 500)] * 5))
    result = watch(run_module, tmp_path)
    assert not result.get("failed") and not result["judged"]
    assert "fewer than 20: not judged" in json.dumps(result.get("warnings", []))


def test_a_log_that_cannot_be_read_is_no_verdict_on_the_release(run_module, tmp_path):
    (tmp_path / "access.log").mkdir()  # reading it fails
    result = watch(run_module, tmp_path)
    assert not result.get("failed") and not result["judged"], result
    assert "could not read nginx's log" in json.dumps(result.get("warnings", []))
