"""The lab's configuration as the tests use it: one place for the repository's paths, the sites'
variables files and the secrets no output may hold."""

from __future__ import annotations

import os
import sys
from functools import lru_cache
from pathlib import Path

import yaml

ROOT = Path(os.environ.get("MOLECULE_PROJECT_DIRECTORY") or Path(__file__).resolve().parents[3])
# The demo site (blog), then what every lab scenario adds to it (shop, the drill checks).
LAB_SITE = ROOT / "inventories" / "lab-site.yml"
SCENARIO_SITES = ROOT / "molecule" / "shared" / "vars" / "sites.yml"
SITE_VARS_FILES = (LAB_SITE, SCENARIO_SITES)
SAMPLE_SITE = ROOT / "tests" / "sample_site"
# The operator lab hosts are provisioned with (the scenarios' base config names it too).
OPERATOR = "ops"
# Keys whose values are secrets in the files above.
SECRET_KEYS = ("db_password", "password")


def tool_env(**extra: str) -> dict[str, str]:
    """The environment for the tools of the Python running the tests (ansible-playbook, molecule,
    opspack): its bin directory first on PATH, whatever PATH the tests were started with."""
    env_bin = str(Path(sys.executable).parent)
    path = os.environ.get("PATH", os.defpath)
    if path.split(os.pathsep)[0] != env_bin:
        path = os.pathsep.join([env_bin, path])
    return dict(os.environ, PATH=path, **extra)


def operator_vars(public_key: Path) -> dict:
    """Provisioning's operator variables: OPERATOR, logging in with the lab's key."""
    return {"access_operator_user": OPERATOR, "access_operator_ssh_keys": [public_key.read_text().strip()]}


def scenario_sites() -> list[dict]:
    """The scenarios' site definitions (opspack_sites of SCENARIO_SITES)."""
    return yaml.safe_load(SCENARIO_SITES.read_text())["opspack_sites"]


def sites_with(site: str, **fields) -> tuple[str, str]:
    """`-e` with the scenarios' opspack_sites where one site's fields are changed (a mapping
    field is merged key by key): a one-run variation of a site, as an operator would edit it."""
    import json
    sites = scenario_sites()
    entry = next(entry for entry in sites if entry["name"] == site)
    for key, value in fields.items():
        entry[key] = {**entry.get(key, {}), **value} if isinstance(value, dict) else value
    return "-e", json.dumps({"opspack_sites": sites})


def extra_vars(files=SITE_VARS_FILES) -> tuple[str, ...]:
    """`-e @file` for each variables file, as an operator passes them."""
    return tuple(arg for path in files for arg in ("-e", f"@{path}"))


@lru_cache(maxsize=None)
def canaries(files=SITE_VARS_FILES) -> tuple[str, ...]:
    """The lab's secrets, read from its variables files: every password, and the secret settings
    of the apps (app_runtime_site_secrets). Tests prove that none of them reaches any output."""
    found: set[str] = set()

    def walk(node, key=None):
        if isinstance(node, dict):
            for name, value in node.items():
                walk(value, name)
        elif isinstance(node, list):
            for value in node:
                walk(value, key)
        elif isinstance(node, str) and key in SECRET_KEYS:
            found.add(node)

    for path in files:
        walk(yaml.safe_load(Path(path).read_text()))
    if not found:
        raise RuntimeError(f"no secrets found in {', '.join(map(str, files))}: the leak checks would prove nothing")
    return tuple(sorted(found))


def assert_no_secret(text: str, what: str, files=SITE_VARS_FILES) -> None:
    for canary in canaries(files):
        assert canary not in text, f"a lab secret leaked into {what}"
