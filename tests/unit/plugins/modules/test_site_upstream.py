"""Unit tests for opspack.platform.site_upstream with a stand-in nginx (its -t and reload)."""

from __future__ import annotations

import os
import stat

import pytest


@pytest.fixture(name="upstream")
def fixture_upstream(run_module, tmp_path, monkeypatch):
    conf = tmp_path / "conf.d"
    conf.mkdir()
    (conf / "opspack-upstream-blog.conf").write_text("upstream opspack_blog {\n    server 127.0.0.1:8000;\n}\n")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "calls"
    for tool in ("nginx", "systemctl"):
        script = bin_dir / tool
        # nginx -t fails while the file names port 9999, the reload while it names 9998; every call is logged.
        script.write_text(f"#!/bin/sh\necho {tool} \"$@\" >> {calls}\n"
                          f"[ {tool} = nginx ] && grep -q 9999 {conf}/opspack-upstream-blog.conf && exit 1\n"
                          f"[ {tool} = systemctl ] && grep -q 9998 {conf}/opspack-upstream-blog.conf && exit 1\nexit 0\n")
        script.chmod(script.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")

    def run(check_mode=False, **args):
        args.setdefault("site", "blog")
        args.setdefault("conf_dir", str(conf))
        return run_module("site_upstream", check_mode=check_mode, **args)
    run.file = conf / "opspack-upstream-blog.conf"
    run.calls = calls
    return run


def test_switch_rewrites_the_upstream_checks_and_reloads(upstream):
    result = upstream(slot="green", port=8001)
    assert result["changed"] and result["previous_port"] == 8000 and result["port"] == 8001, result
    assert "server 127.0.0.1:8001;" in upstream.file.read_text() and "# slot: green" in upstream.file.read_text()
    assert upstream.calls.read_text().splitlines() == ["nginx -t -q", "systemctl reload nginx"]
    again = upstream(slot="green", port=8001)
    assert not again["changed"] and again["previous_slot"] == "green"


def test_a_configuration_nginx_refuses_is_put_back_and_not_reloaded(upstream):
    before = upstream.file.read_text()
    result = upstream(slot="green", port=9999)
    assert result["failed"] and "old one was put back" in result["msg"]
    assert upstream.file.read_text() == before
    assert "systemctl" not in upstream.calls.read_text()
    assert sorted(os.listdir(upstream.file.parent)) == ["opspack-upstream-blog.conf"], "no temporary file left"


def test_a_failed_reload_puts_the_old_upstream_back(upstream):
    before = upstream.file.read_text()
    result = upstream(slot="green", port=9998)
    assert result["failed"] and "old upstream was put back" in result["msg"] and "opspack_event" in result
    assert upstream.file.read_text() == before
    assert sorted(os.listdir(upstream.file.parent)) == ["opspack-upstream-blog.conf"], "no temporary file left"


def test_check_mode_reports_the_move_and_writes_nothing(upstream):
    before = upstream.file.read_text()
    result = upstream(check_mode=True, slot="green", port=8001)
    assert result["changed"] and upstream.file.read_text() == before and not upstream.calls.exists()


def test_a_site_nginx_does_not_know_is_refused(upstream, run_module, tmp_path):
    result = upstream(site="shop", slot="green", port=8001)
    assert result["failed"] and "has not been provisioned" in result["msg"]
    assert upstream(slot="Bad slot", port=8001)["failed"]


def test_traffic_never_moves_to_a_slot_that_does_not_answer_healthy(upstream):
    import http.server
    import threading

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (the stdlib's name)
            self.send_response(200 if self.path == "/health/ready" else 503)
            self.end_headers()

        def log_message(self, *args):
            pass
    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        port = server.server_address[1]
        before = upstream.file.read_text()
        sick = upstream(slot="green", port=8001, health_url=f"http://127.0.0.1:{port}/sick")
        assert sick["failed"] and sick["health_status"] == 503 and "traffic was not moved" in sick["msg"]
        assert sick["opspack_event"]["result"] == "failed" and "does not answer healthy" in sick["opspack_event"]["reason"]
        assert upstream.file.read_text() == before
        well = upstream(slot="green", port=8001, health_url=f"http://127.0.0.1:{port}/health/ready")
        assert well["changed"] and well["health_status"] == 200
    finally:
        server.shutdown()


# --- the switch step's opspack_event ------------------------------------------------------------

def test_a_switch_tells_the_step_and_no_change_or_check_mode_tells_nothing(upstream):
    assert "opspack_event" not in upstream(check_mode=True, slot="green", port=8001)
    switched = upstream(slot="green", port=8001)
    assert switched["opspack_event"] == {"kind": "step", "site": "blog", "result": "done", "slot": "green",
                                         "step": "switch"}, switched
    assert "opspack_event" not in upstream(slot="green", port=8001), "the traffic was there already"


def test_a_failed_switch_tells_why(upstream):
    refused = upstream(slot="green", port=9999)
    told = refused["opspack_event"]
    assert told["kind"] == "step" and told["step"] == "switch" and told["result"] == "failed", told
    assert told["site"] == "blog" and told["slot"] == "green" and "actions" not in told and "operation" not in told
    assert told["reason"].startswith("nginx -t refused the new upstream of blog; the old one was put back")
    unknown = upstream(site="shop", slot="green", port=8001)["opspack_event"]
    assert unknown["site"] == "shop" and "has not been provisioned" in unknown["reason"]
    assert "opspack_event" not in upstream(check_mode=True, site="shop", slot="green", port=8001)


def test_an_nginx_that_cannot_run_leaves_the_old_upstream_and_is_told(upstream, monkeypatch, tmp_path):
    before = upstream.file.read_text()
    (tmp_path / "bin" / "nginx").unlink()
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    failed = upstream(slot="green", port=8001)
    assert failed["failed"] and upstream.file.read_text() == before, failed
    assert sorted(os.listdir(upstream.file.parent)) == ["opspack-upstream-blog.conf"]
    assert failed["opspack_event"]["result"] == "failed" and "nginx could not run" in failed["opspack_event"]["reason"]
