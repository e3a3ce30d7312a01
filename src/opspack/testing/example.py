"""The example inventory (inventories/example) used as a new operator uses it, on a lab host: a
copy whose only edits are web-1's entry in hosts.yml (the lab's SSH coordinates, and the lab's
own facts as that host's variables: its CA instead of Let's Encrypt, its Docker gateway, its SSH
key) and a vault made from vault.yml.example with a password file. And the two apps it runs,
each release shipping the wheels of its requirements: the sample site (tests/sample_site) and
httpbin, a real WSGI app from PyPI."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from opspack import lab
from opspack.testing.config import ROOT, SAMPLE_SITE, tool_env

EXAMPLE = ROOT / "inventories" / "example"
VAULT_PASSWORD = "example-inventory-lab-vault-password"
# The values of vault.yml.example: no output may hold them.
VAULT_SECRETS = tuple(str(value) for value in yaml.safe_load((EXAMPLE / "group_vars" / "all" / "vault.yml.example").read_text()).values())
# The host the lab stands in for, and its sites' main names in production.
HOST = "web-1"
DOMAINS = {"blog": "blog.example.com", "api": "api.example.com"}

# The lab hosts are Debian 12 (CPython 3.11.2 on x86_64): the wheels are chosen for them, down to
# the micro version (redis needs async-timeout below Python 3.11.3; a wheel set resolved for
# another 3.11 lacks it).
WHEEL_TARGET = ["--only-binary=:all:", "--implementation", "cp", "--python-version", "3.11.2",
                "--platform", "manylinux2014_x86_64", "--platform", "manylinux_2_17_x86_64",
                "--platform", "manylinux_2_28_x86_64"]
# redis needs async-timeout below Python 3.11.3 (Debian 12 has 3.11.2): named here because pip
# download does not evaluate python_full_version markers for the target interpreter (it asks
# its own), so a wheel set made on another 3.11 would lack it.
BLOG_REQUIREMENTS = "gunicorn==23.0.0\npsycopg2-binary==2.9.10\nredis==5.2.1\nasync-timeout==5.0.1\n"
# httpbin 0.10.2 leaves Flask unpinned, and the flasgger it gets as a wheel (0.9.5) needs
# flask.Markup and flask.json.JSONEncoder (gone in Flask 3 and 2.3): an app's requirements pin
# what it was tested with, as these do.
API_REQUIREMENTS = "httpbin==0.10.2\ngunicorn==23.0.0\nflask==2.2.5\nwerkzeug==2.2.3\n"
# httpbin's releases: two good ones, and one that forgot its app in requirements.txt (gunicorn
# cannot import httpbin: the health gate fails and the release never gets traffic).
API_RELEASES = {"1.0.0": API_REQUIREMENTS, "1.1.0": API_REQUIREMENTS, "1.2.0": "gunicorn==23.0.0\n"}


def wheels(requirements: str) -> Path:
    """A directory with the wheels of REQUIREMENTS for the lab hosts, downloaded once (cached)."""
    key = hashlib.sha256((requirements + " ".join(WHEEL_TARGET)).encode()).hexdigest()[:16]
    target = lab.cache_root() / "wheels" / key
    if not target.is_dir():
        partial = target.with_name(key + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
        (partial / "requirements.txt").write_text(requirements)
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check", *WHEEL_TARGET,
                        "-d", str(partial), "-r", str(partial / "requirements.txt")], check=True, capture_output=True)
        (partial / "requirements.txt").unlink()
        partial.rename(target)
    return target


def _ship(tree: Path, requirements: str) -> Path:
    (tree / "requirements.txt").write_text(requirements)
    shutil.copytree(wheels(requirements), tree / "wheels", dirs_exist_ok=True)
    return tree


def releases(dest: Path) -> dict[str, dict[str, Path]]:
    """{site: {version: release tree}} for blog (the sample site) and api (httpbin)."""
    stamp = hashlib.sha256(repr((WHEEL_TARGET, BLOG_REQUIREMENTS, API_RELEASES)).encode()).hexdigest()
    if not (dest / ".built").is_file() or (dest / ".built").read_text() != stamp:
        shutil.rmtree(dest, ignore_errors=True)
        subprocess.run([sys.executable, str(SAMPLE_SITE / "build_releases.py"), str(dest / "blog")], check=True,
                       capture_output=True)
        for tree in (dest / "blog").iterdir():
            _ship(tree, BLOG_REQUIREMENTS)
        for version, requirements in API_RELEASES.items():
            tree = dest / "api" / version
            tree.mkdir(parents=True)
            (tree / "VERSION").write_text(version + "\n")
            _ship(tree, requirements)
        (dest / ".built").write_text(stamp)
    return {site: {tree.name: tree for tree in (dest / site).iterdir()} for site in ("blog", "api")}


# What the lab host needs that a VPS does not, as web-1's host variables.
def lab_facts(lab_dir: Path) -> dict:
    return {
        # The lab cannot reach Let's Encrypt: its own CA signs the sites' certificates.
        "nginx_certificate_mode": "lab_ca",
        # Docker's port proxy makes every connection come from the bridge gateway: never ban it.
        "firewall_ssh_ignore_ip": ["127.0.0.1/8", "172.16.0.0/12"],
        # The lab's key is the operator's.
        "access_operator_ssh_keys": [(lab_dir / "id_ed25519.pub").read_text().strip()],
        # No nightly backup fires while a test runs.
        "backup_schedule_on_calendar": "2099-01-01 00:00:00",
    }


def inventory(workdir: Path, lab_dir: Path, lab_host: str = "vps1") -> tuple[Path, Path]:
    """Copy the example into WORKDIR/mine (as README's `cp -r inventories/example inventories/mine`) with HOST at LAB_HOST's address (and the lab's
    facts) and a vault; returns (inventory, vault password file)."""
    copy = workdir / "mine"
    shutil.rmtree(copy, ignore_errors=True)
    shutil.copytree(EXAMPLE, copy)
    lab_hosts = yaml.safe_load((lab_dir / "hosts.yml").read_text())["all"]["children"]["lab"]
    coordinates = dict(lab_hosts["hosts"][lab_host])
    connection = {key: lab_hosts["vars"][key] for key in ("ansible_ssh_private_key_file", "ansible_ssh_common_args")}
    hosts = copy / "hosts.yml"
    inventory_data = yaml.safe_load(hosts.read_text())
    production = inventory_data["all"]["children"]["production"]["hosts"]
    assert HOST in production, f"the example inventory has no {HOST}"
    production[HOST] = {**coordinates, **connection, **lab_facts(lab_dir)}
    hosts.write_text(yaml.safe_dump(inventory_data, sort_keys=False))

    password = workdir / "vault-password"
    password.write_text(VAULT_PASSWORD + "\n")
    vault = copy / "group_vars" / "all" / "vault.yml"
    shutil.copy(vault.with_name("vault.yml.example"), vault)
    subprocess.run(["ansible-vault", "encrypt", "--vault-password-file", str(password), str(vault)],
                   check=True, capture_output=True, env=tool_env())

    return copy, password
