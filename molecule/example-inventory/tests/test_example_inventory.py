"""The example inventory as a new operator uses it: a copy of inventories/example whose only edits
are web-1's entry (this lab host's address, and the lab's own facts as its host variables: its
CA, its Docker gateway, its key) and a vault encrypted from vault.yml.example. Two apps side by side on the
host: the sample site (blog: PostgreSQL, Redis, SQL migrations) and httpbin from PyPI (api: no
database, no Redis, health /status/200), each release shipping the wheels of its requirements,
each served by the gunicorn console script of its own venv. No command has `-e @file` for a
site's settings. In file order: provision (twice: the second changes nothing), first deploys,
then upgrade, failing release, rollback and smoke of both sites under a bounded request loop
each, which must see no failed request."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest

from opspack.testing import client, example
from opspack.testing.config import tool_env
from opspack.testing.scenario import record

EPHEMERAL = Path(os.environ.get("MOLECULE_EPHEMERAL_DIRECTORY", "/nonexistent-molecule-ephemeral-directory"))
WORK = EPHEMERAL / "operator"
# The operator's XDG data home: the inventory's state directory is its default there,
# ~/.local/share/opspack/<inventory name> (the copy is named like README's, inventories/mine).
DATA_HOME = WORK / "data"
STATE = DATA_HOME / "opspack" / "mine"
# The lab CA the nginx role keeps in the state directory.
CA = STATE / "lab-ca" / "ca.crt"


@pytest.fixture(scope="module")
def operator():
    inventory, password = example.inventory(WORK, EPHEMERAL / "lab")
    return {"inventory": inventory, "password": password, "releases": example.releases(WORK / "releases")}


def run(operator, name: str, *args: str) -> subprocess.CompletedProcess:
    """ansible-playbook opspack.platform.NAME as the operator runs it, on web-1 only (the example's
    other hosts are placeholders: --limit is how an operator runs part of a fleet)."""
    ran = subprocess.run(["ansible-playbook", "-i", str(operator["inventory"]), "--vault-password-file", str(operator["password"]),
                          "--limit", example.HOST, f"opspack.platform.{name}", *args],
                         capture_output=True, text=True, cwd=WORK, env=tool_env(ANSIBLE_NOCOLOR="1", ANSIBLE_FORCE_COLOR="0",
                                                                                ANSIBLE_CONFIG=str(example.ROOT / "ansible.cfg"),
                                                                                XDG_DATA_HOME=str(DATA_HOME)))
    out = ran.stdout + ran.stderr
    for secret in example.VAULT_SECRETS:
        assert secret not in out, f"a vault secret leaked into the output of {name}"
    return ran


def deploy(operator, site: str, version: str) -> subprocess.CompletedProcess:
    return run(operator, "deploy", "-e", f"release_site={site}", "-e", f"release_version={version}",
               "-e", f"release_source={operator['releases'][site][version]}")


def serving(host, site: str) -> str:
    return record(host, site)["current"]["release_id"].split("+")[0]


def answer(host, site: str, path: str) -> int:
    return client.get(client.https_port(host), CA, path, server_name=example.DOMAINS[site])[0]


def loop(host, site: str, path: str) -> client.RequestLoop:
    return client.RequestLoop(client.https_port(host), CA, path=path, server_name=example.DOMAINS[site],
                              limit=20000, seconds=900, interval=0.05)


def test_provisioning_from_the_example_converges_and_a_second_run_changes_nothing(operator, host):
    first = run(operator, "provision")
    assert first.returncode == 0, (first.stdout + first.stderr)[-4000:]
    second = run(operator, "provision")
    out = second.stdout + second.stderr
    assert second.returncode == 0 and re.search(rf"{example.HOST}\s*: ok=\d+\s+changed=0 ", out), out[-4000:]
    # Each site got what its definition says, and only that.
    assert host.user("api").exists and host.user("blog").exists
    # The control node's state went to the default state directory, nothing beside or into the inventory.
    assert CA.is_file(), f"no lab CA in the default state directory {STATE}"
    inventory = operator["inventory"]
    stray = [path for folder in (inventory, inventory.parent) for path in folder.iterdir()
             if path.name in ("records", "artifacts", "backups", "lab-ca", "opspack-lab-ca")]
    assert not stray, f"control-node state written beside or into the inventory: {stray}"
    blog_env = host.file("/srv/blog/shared/env")
    assert blog_env.mode == 0o640 and blog_env.contains("DATABASE_URL=") and blog_env.contains("REDIS_URL=")
    assert blog_env.contains("SECRET_KEY=") and not host.file("/srv/api/shared/env").exists
    assert 'Environment="APP_ENV=production"' in host.file("/etc/systemd/system/opspack-blog-web@.service").content_string


def test_both_apps_deploy_side_by_side_from_their_own_requirements(operator, host):
    for site in ("blog", "api"):
        ran = deploy(operator, site, "1.0.0")
        assert ran.returncode == 0, (ran.stdout + ran.stderr)[-4000:]
        assert serving(host, site) == "1.0.0"
    assert answer(host, "blog", "/notes") == 200 and answer(host, "api", "/get") == 200
    # httpbin runs under the gunicorn console script of its release's venv (installed from the
    # shipped wheels), not a system one.
    slot = record(host, "api")["current"]["slot"]
    pid = host.check_output(f"systemctl show -p MainPID --value opspack-api-web@{slot}.service")
    assert re.search(r"/srv/api/(slots/\w+|releases/[^/]+)/venv/bin/gunicorn", host.check_output(f"cat /proc/{pid}/cmdline | tr '\\0' ' '"))
    assert host.file("/srv/api/current/wheels").is_directory
    # Its checks depend on nothing it does not use.
    smoke = run(operator, "smoke", "-e", "release_site=api")
    out = smoke.stdout + smoke.stderr
    assert smoke.returncode == 0 and "smoke api@web-1: PASS" in out, out[-3000:]
    assert "postgresql@" not in out and "redis-server" not in out


def test_upgrade_failure_rollback_and_smoke_of_both_sites_fail_no_request(operator, host):
    with loop(host, "blog", "/notes") as blog, loop(host, "api", "/get") as api:
        for site, version in (("blog", "2.0.0"), ("api", "1.1.0")):
            ran = deploy(operator, site, version)
            assert ran.returncode == 0, (ran.stdout + ran.stderr)[-4000:]
            assert serving(host, site) == version
        for site, version, kept in (("blog", "2.1.0", "2.0.0"), ("api", "1.2.0", "1.1.0")):
            ran = deploy(operator, site, version)  # fails its health gate on the new slot
            out = ran.stdout + ran.stderr
            assert ran.returncode != 0 and "Health gate on the new slot" in out, out[-4000:]
            assert serving(host, site) == kept
        for site in ("blog", "api"):
            ran = run(operator, "rollback", "-e", f"release_site={site}")
            assert ran.returncode == 0, (ran.stdout + ran.stderr)[-4000:]
            assert serving(host, site) == "1.0.0"
        for site in ("blog", "api"):
            ran = run(operator, "smoke", "-e", f"release_site={site}")
            assert ran.returncode == 0 and f"smoke {site}@web-1: PASS" in ran.stdout, (ran.stdout + ran.stderr)[-3000:]
    # The figures, for the notes (.cache/test-logs/example-inventory.json).
    figures = example.ROOT / ".cache" / "test-logs" / "example-inventory.json"
    figures.parent.mkdir(parents=True, exist_ok=True)
    figures.write_text(json.dumps({name: seen.statuses for name, seen in (("blog", blog), ("api", api))}, sort_keys=True) + "\n")
    for name, seen in (("blog", blog), ("api", api)):
        assert seen.total > 100, f"{name}: the loop asked too little to prove anything ({seen.statuses})"
        assert seen.failed == 0, f"{name}: failed requests during the sequence: {seen.statuses}"


def test_ansible_runner_deploys_with_the_records_outside_its_private_data_dir(operator, host, tmp_path):
    """As AWX runs it: ansible-runner with a private data dir, the vault password on the command
    line, the state directory on storage that outlives the job given as an extra variable
    (opspack_state_dir, docs/awx.md): the records callback learns it from the run."""
    import ansible_runner

    data, records = tmp_path / "job", STATE / "records"
    (data / "env").mkdir(parents=True)
    (data / "env" / "envvars").write_text(json.dumps({
        "ANSIBLE_CONFIG": str(example.ROOT / "ansible.cfg"), "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_CALLBACKS_ENABLED": "opspack.platform.records", "OPSPACK_ENVIRONMENT": "awx",
        # A job's home is throwaway: the default state directory would be lost with it.
        "XDG_DATA_HOME": str(data / "home")}))
    (data / "env" / "extravars").write_text(json.dumps({
        "release_site": "api", "release_version": "1.1.0", "release_source": str(operator["releases"]["api"]["1.1.0"]),
        "opspack_state_dir": str(STATE)}))
    run = ansible_runner.run(private_data_dir=str(data), playbook=str(example.ROOT / "playbooks" / "deploy.yml"),
                             inventory=str(operator["inventory"]), quiet=True,
                             cmdline=f"--limit {example.HOST} --vault-password-file {operator['password']}")
    assert run.rc == 0, run.stdout.read()[-4000:]
    assert serving(host, "api") == "1.1.0"
    history = [json.loads(line) for line in (records / "history.jsonl").read_text().splitlines()]
    assert [(entry["site"], entry["environment"], entry["operation"], entry["result"]) for entry in history][-1] == \
        ("api", "awx", "upgrade", "ok")
    assert not list(data.rglob("history.jsonl")), "records landed in the throwaway job directory"
    for path in [*records.rglob("*"), *data.rglob("*")]:
        if path.is_file():
            text = path.read_text(errors="replace")
            assert not any(secret in text for secret in example.VAULT_SECRETS), f"a vault secret leaked into {path}"
