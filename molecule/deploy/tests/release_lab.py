"""What the deploy scenario's tests share: running the playbooks as an operator does, reading a
site over HTTPS through nginx (verified against the lab CA), a bounded request loop, and the
host's record and schema. Every request goes to 127.0.0.1."""

from __future__ import annotations

import json
import os
import shlex
import ssl
import subprocess
import threading
import time
from pathlib import Path


from opspack import lab
from opspack.report import LabHTTPSConnection

PROJECT = Path(os.environ["MOLECULE_PROJECT_DIRECTORY"])
EPHEMERAL = Path(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"])
INVENTORY = EPHEMERAL / "inventory"
SAMPLE = EPHEMERAL / "sample"
CA = Path(os.environ["OPSPACK_TEST_LAB_CA"]) / "ca.crt"
SERVER_NAME = "blog.lab.test"
SITE_DIR = "/srv/blog"
# The lab's secrets: canaries no output may hold.
CANARIES = ("lab-canary-Pg-7f3a9c", "lab-canary-Pg-shop-51d2e0", "lab-redis-app-password-0001",
            "lab-redis-admin-password-0001")
# The host's sites: the lab's blog and a second site, shop (vars/two-sites.yml).
SITE_VARS = ("-e", f"@{PROJECT}/inventories/lab-site.yml", "-e", f"@{PROJECT}/molecule/deploy/vars/two-sites.yml")


def command(name: str, *extra: str, site: str | None = "blog") -> list[str]:
    """ansible-playbook as an operator runs it, with the lab's sites (and a site to act on)."""
    return ["ansible-playbook", "-i", str(INVENTORY), f"playbooks/{name}.yml", *SITE_VARS,
            *(("-e", f"release_site={site}") if site else ()), *extra]


def checked(ran: subprocess.CompletedProcess, name: str) -> subprocess.CompletedProcess:
    for canary in CANARIES:
        assert canary not in ran.stdout + ran.stderr, f"a secret leaked into the output of {name}"
    return ran


def playbook(name: str, *extra: str, site: str | None = "blog") -> subprocess.CompletedProcess:
    ran = subprocess.run(command(name, *extra, site=site), capture_output=True, text=True, check=False, cwd=PROJECT,
                         env=dict(os.environ, ANSIBLE_NOCOLOR="1", ANSIBLE_FORCE_COLOR="0"))
    return checked(ran, name)


def deploy_args(version: str) -> tuple[str, ...]:
    return ("-e", f"release_version={version}", "-e", f"release_source={SAMPLE / version}")


def deploy(version: str, *extra: str, site: str = "blog") -> subprocess.CompletedProcess:
    return playbook("deploy", *deploy_args(version), *extra, site=site)


def https_port(host) -> int:
    return lab.host_ports(int(host.ansible.get_variables()["ansible_port"]), 1).https


def get(host, path: str = "/", site: str = "blog") -> tuple[int, str, str]:
    """GET over HTTPS on 127.0.0.1, the lab CA verifying the site's certificate."""
    connection = LabHTTPSConnection(f"{site}.lab.test", https_port(host), timeout=10,
                                    context=ssl.create_default_context(cafile=str(CA)))
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, response.getheader("X-Release") or "", response.read().decode()
    finally:
        connection.close()


class RequestLoop:
    """Requests to the site, one after another, while an operation runs: bounded in count and
    time, stopped by the test or by itself."""

    def __init__(self, host, limit: int = 20000, seconds: float = 240.0, path: str = "/"):
        self.port, self.limit, self.seconds, self.path = https_port(host), limit, seconds, path
        self.statuses: dict[str, int] = {}
        self.versions: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        context = ssl.create_default_context(cafile=str(CA))
        deadline = time.monotonic() + self.seconds
        for _ in range(self.limit):
            if self._stop.is_set() or time.monotonic() > deadline:
                return
            connection = LabHTTPSConnection(SERVER_NAME, self.port, timeout=10, context=context)
            try:
                connection.request("GET", self.path)
                response = connection.getresponse()
                response.read()
                key = str(response.status)
                self.versions.add(response.getheader("X-Release") or "")
            except OSError as exc:
                key = type(exc).__name__
            finally:
                connection.close()
            self.statuses[key] = self.statuses.get(key, 0) + 1

    def __enter__(self):
        self._thread.start()
        time.sleep(1)
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(timeout=30)

    @property
    def total(self) -> int:
        return sum(self.statuses.values())

    @property
    def failed(self) -> int:
        return self.total - self.statuses.get("200", 0)


def record(host, site: str = "blog") -> dict:
    return json.loads(host.file(f"/srv/{site}/release-state.json").content_string)


def sql(host, query: str, site: str = "blog") -> str:
    return host.check_output(f"runuser -u postgres -- psql -XAtq -v ON_ERROR_STOP=1 -d {site} -c {shlex.quote(query)}").strip()


def schema(host, site: str = "blog") -> str:
    return sql(host, "SELECT string_agg(table_name || '.' || column_name, ',' ORDER BY table_name, column_name) "
                     "FROM information_schema.columns WHERE table_schema = 'public'", site) + "|" + sql(
        host, "SELECT coalesce(string_agg(version || ':' || name, ',' ORDER BY version), '') FROM opspack_schema_history", site)


def access_log_lines(host) -> int:
    return int(host.check_output("wc -l < /var/log/nginx/access.log"))


def history() -> list[dict]:
    """The control node's history.jsonl (the records callback writes it beside the inventory)."""
    return [json.loads(line) for line in (EPHEMERAL / "records" / "history.jsonl").read_text().splitlines()]
