"""A lab host's sites over HTTPS through its nginx, verified against the lab CA, and a bounded
request loop to run beside an operation. Every request goes to 127.0.0.1."""

from __future__ import annotations

import ssl
import threading
import time
from pathlib import Path

from opspack import lab
from opspack.report import LabHTTPSConnection


def lab_port(host, kind: str) -> int:
    """The 127.0.0.1 port publishing a testinfra host's HTTP or HTTPS port.

    The lab's inventory names it (opspack_lab_<kind>_port); elsewhere (Molecule's inventory, where
    testinfra reads the variable unrendered) the lab's fixed port layout gives it from the SSH port."""
    variables = host.ansible.get_variables()
    named = str(variables.get(f"opspack_lab_{kind}_port", ""))
    if named.isdigit():
        return int(named)
    return getattr(lab.host_ports(int(variables["ansible_port"]), 1), kind)


def https_port(host) -> int:
    return lab_port(host, "https")


def get(port: int, ca: Path, path: str = "/", site: str = "blog", timeout: float = 10,
        server_name: str | None = None) -> tuple[int, dict, str]:
    """GET https://SITE.lab.test/PATH (or SERVER_NAME) on 127.0.0.1:PORT: status, headers (lower-case names), body."""
    connection = LabHTTPSConnection(server_name or f"{site}.lab.test", port, timeout=timeout,
                                    context=ssl.create_default_context(cafile=str(ca)))
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        headers = {name.lower(): value for name, value in response.getheaders()}
        return response.status, headers, response.read().decode()
    finally:
        connection.close()


class RequestLoop:
    """Requests to a site, one after another, while an operation runs: bounded in count and
    time, stopped by the test (`with` block) or by itself. Counts statuses (or the error's
    type) and the X-Release values seen.

    `interval` paces the requests (a benchmark must not take a core from the run it times);
    with `wanted`, `switched_after` is when answers last came from anything but that release
    (or failed), counted from the start. A loop that reached its bound before it was stopped
    did not cover the whole operation: leaving the `with` block then fails, saying so, rather
    than letting a test judge a partial measurement."""

    def __init__(self, port: int, ca: Path, *, site: str = "blog", path: str = "/",
                 limit: int = 20000, seconds: float = 240.0, interval: float = 0.0,
                 wanted: str | None = None, settle: float = 1.0, server_name: str | None = None):
        self.port, self.ca, self.site, self.path = port, ca, site, path
        self.server_name = server_name or f"{site}.lab.test"
        self.limit, self.seconds, self.interval, self.wanted, self.settle = limit, seconds, interval, wanted, settle
        self.statuses: dict[str, int] = {}
        self.versions: set[str] = set()
        self.started = self.last_other = 0.0
        self.exhausted = ""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        context = ssl.create_default_context(cafile=str(self.ca))
        deadline = time.monotonic() + self.seconds
        for _ in range(self.limit):
            if self._stop.is_set():
                return
            if time.monotonic() > deadline:
                self.exhausted = f"its {self.seconds:.0f} s"
                return
            asked = time.monotonic()
            connection = LabHTTPSConnection(self.server_name, self.port, timeout=10, context=context)
            release = None
            try:
                connection.request("GET", self.path)
                response = connection.getresponse()
                response.read()
                key = str(response.status)
                release = response.getheader("X-Release") or ""
                self.versions.add(release)
            except OSError as exc:
                key = type(exc).__name__
            finally:
                connection.close()
            self.statuses[key] = self.statuses.get(key, 0) + 1
            if self.wanted is not None and (key != "200" or release != self.wanted):
                self.last_other = time.monotonic()
            if self.interval:
                self._stop.wait(max(0.0, self.interval - (time.monotonic() - asked)))
        if not self._stop.is_set():
            self.exhausted = f"its {self.limit} requests"

    def start(self) -> "RequestLoop":
        self.started = self.last_other = time.monotonic()
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def __enter__(self):
        self.start()
        time.sleep(self.settle)
        return self

    def __exit__(self, exc_type, *exc):
        self.stop()
        if exc_type is None and self.exhausted:
            raise AssertionError(f"the request loop stopped by itself after {self.exhausted}, before the operation "
                                 f"it measured had ended ({self.total} requests, statuses {self.statuses}); "
                                 "give it a larger bound")

    @property
    def switched_after(self) -> float:
        return self.last_other - self.started

    @property
    def total(self) -> int:
        return sum(self.statuses.values())

    @property
    def failed(self) -> int:
        return self.total - self.statuses.get("200", 0)
