"""A Molecule scenario's lab as its tests see it (from Molecule's environment): the inventory,
the control-node files beside it (records, lab CA), the sample site's release trees, and the
operator's playbooks, HTTPS and request loop bound to them. Also a host's release record and
schema. Every request goes to 127.0.0.1."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

from opspack.testing import client
from opspack.testing.config import ROOT, SAMPLE_SITE, canaries
from opspack.testing import playbooks

PROJECT = ROOT  # the repository, as the scenarios' tests name it
EPHEMERAL = Path(os.environ.get("MOLECULE_EPHEMERAL_DIRECTORY", "/nonexistent-molecule-ephemeral-directory"))
INVENTORY = EPHEMERAL / "inventory"
RECORDS = EPHEMERAL / "records"
SAMPLE = EPHEMERAL / "sample"
CA = EPHEMERAL / "lab-ca" / "ca.crt"
SERVER_NAME = "blog.lab.test"
SITE_DIR = "/srv/blog"
# The lab's secrets (read from its variables files): no output, record or copy may hold them.
CANARIES = canaries()


def command(name: str, *extra: str, site: str | None = "blog") -> list[str]:
    """ansible-playbook as an operator runs it, with the lab's sites (and a site to act on)."""
    return playbooks.command(INVENTORY, name, *extra, site=site)


def playbook(name: str, *extra: str, site: str | None = "blog") -> subprocess.CompletedProcess:
    return playbooks.playbook(INVENTORY, name, *extra, site=site)


def deploy_args(version: str) -> tuple[str, ...]:
    return ("-e", f"release_version={version}", "-e", f"release_source={SAMPLE / version}")


def deploy(version: str, *extra: str, site: str = "blog") -> subprocess.CompletedProcess:
    return playbook("deploy", *deploy_args(version), *extra, site=site)


def sample_releases() -> Path:
    """The sample site's release trees (tests/sample_site), built once per scenario."""
    if not (SAMPLE / "1.0.0").exists():
        subprocess.run([sys.executable, str(SAMPLE_SITE / "build_releases.py"), str(SAMPLE)],
                       check=True, capture_output=True)
    return SAMPLE


def bring_to(host, version: str, site: str = "blog") -> None:
    """The state a test starts from, whatever ran before it: SITE serving VERSION of the sample
    site. Nothing to do when it already does; else a deploy, or (VERSION older than the schema)
    a rollback to the newest VERSION release on the host."""
    sample_releases()
    if get(host, site=site)[:2] == (200, version):
        return
    ran = deploy(version, site=site)
    out = ran.stdout + ran.stderr
    if ran.returncode != 0 and "does not define migration(s)" in out:
        releases = record(host, site).get("releases", {})
        known = sorted((rid for rid, entry in releases.items()
                        if rid.startswith(f"{version}+") and entry.get("status") != "failed"),
                       key=lambda rid: releases[rid].get("deploy_order", 0))
        assert known, f"{site} cannot go back to {version}: no such release on the host"
        ran = playbook("rollback", "-e", f"release_rollback_to={known[-1]}", site=site)
        out = ran.stdout + ran.stderr
    assert ran.returncode == 0 and get(host, site=site)[:2] == (200, version), \
        f"could not bring {site} to {version}: {out[-3000:]}"


def https_port(host) -> int:
    return client.https_port(host)


def get(host, path: str = "/", site: str = "blog") -> tuple[int, str, str]:
    """GET over HTTPS on 127.0.0.1, the lab CA verifying the site's certificate: status, X-Release, body."""
    status, headers, body = client.get(https_port(host), CA, path, site)
    return status, headers.get("x-release", ""), body


def RequestLoop(host, seconds: float = 600.0, interval: float = 0.01, path: str = "/", site: str = "blog"):  # noqa: N802
    """client.RequestLoop on the host's blog (a class in use: `with RequestLoop(host) as loop`).

    Paced (at most one request per `interval`) so that the time bound, not the request count,
    decides how long it may cover: an unpaced loop once spent its 20,000 requests before a slow
    deploy on a busy machine had switched, and took a core from that deploy while doing so."""
    return client.RequestLoop(https_port(host), CA, site=site, path=path, seconds=seconds, interval=interval,
                              limit=int(seconds / interval) + 1)


def record(host, site: str = "blog") -> dict:
    return json.loads(host.file(f"/srv/{site}/release-state.json").content_string)


def sql(host, query: str, database: str = "blog") -> str:
    """One query as postgres on the host, its unaligned answer."""
    return host.check_output(
        f"runuser -u postgres -- psql -XAtq -v ON_ERROR_STOP=1 -d {database} -c {shlex.quote(query)}").strip()


def schema(host, site: str = "blog") -> str:
    return sql(host, "SELECT string_agg(table_name || '.' || column_name, ',' ORDER BY table_name, column_name) "
                     "FROM information_schema.columns WHERE table_schema = 'public'", site) + "|" + sql(
        host, "SELECT coalesce(string_agg(version || ':' || name, ',' ORDER BY version), '') FROM opspack_schema_history", site)


def access_log_lines(host) -> int:
    return int(host.check_output("wc -l < /var/log/nginx/access.log"))


def history() -> list[dict]:
    """The control node's history.jsonl (the records callback writes it beside the inventory)."""
    return [json.loads(line) for line in (RECORDS / "history.jsonl").read_text().splitlines()]
