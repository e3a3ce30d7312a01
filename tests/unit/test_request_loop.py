"""The lab tests' request loop: a loop that ran out of its bound before the operation it measured
ended must fail the test that used it, not hand it a partial count (a CI run once judged an upgrade
from 20,000 requests that all came before the switch)."""

import socket
import ssl
import time

import pytest

from opspack.testing import client


@pytest.fixture
def closed_port(monkeypatch):
    # No CA to load: the loop only ever meets a refused connection here.
    default_context = ssl.create_default_context
    monkeypatch.setattr(client.ssl, "create_default_context", lambda *args, cafile=None, **kwargs: default_context())
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_a_loop_that_spends_its_requests_before_it_is_stopped_fails_the_block(closed_port, tmp_path):
    with pytest.raises(AssertionError, match="stopped by itself after its 5 requests"):
        with client.RequestLoop(closed_port, tmp_path / "ca.pem", limit=5, settle=0.0) as loop:
            time.sleep(0.5)
    assert loop.total == 5 and loop.failed == 5


def test_a_loop_that_runs_out_of_time_fails_the_block(closed_port, tmp_path):
    with pytest.raises(AssertionError, match="after its 0 s"):
        with client.RequestLoop(closed_port, tmp_path / "ca.pem", seconds=0.2, interval=0.05, settle=0.0):
            time.sleep(0.6)


def test_a_loop_stopped_by_its_block_is_complete(closed_port, tmp_path):
    with client.RequestLoop(closed_port, tmp_path / "ca.pem", seconds=30, interval=0.01, settle=0.0) as loop:
        time.sleep(0.2)
    assert not loop.exhausted and loop.total > 0


def test_an_error_inside_the_block_is_not_hidden_by_the_bound(closed_port, tmp_path):
    with pytest.raises(KeyError):
        with client.RequestLoop(closed_port, tmp_path / "ca.pem", limit=1, settle=0.0):
            time.sleep(0.3)
            raise KeyError("the operation's own failure")
