"""The operating system target of a lab host as the tests see it: its name (debian12, debian13,
ubuntu2404, as the target role and `opspack lab up --os` name it) and that target's vars file,
so a test expects what the host's target provides instead of naming a version."""

from __future__ import annotations

from functools import lru_cache

import yaml

from opspack.testing.config import ROOT

VARS_DIR = ROOT / "roles" / "target" / "vars"


def os_release(host) -> dict[str, str]:
    """A testinfra host's /etc/os-release fields (ID, VERSION_ID, VERSION_CODENAME...), unquoted."""
    text = host.file("/etc/os-release").content_string
    return {key: value.strip('"') for key, value in (line.split("=", 1) for line in text.splitlines() if "=" in line)}


def name_of(host) -> str:
    """The host's target: debian13 from ID=debian, VERSION_ID="13"; ubuntu2404 from 24.04."""
    fields = os_release(host)
    distribution, version = fields.get("ID", ""), fields.get("VERSION_ID", "")
    return distribution + (version.replace(".", "") if distribution == "ubuntu" else version.split(".")[0])


@lru_cache(maxsize=None)
def target_vars(name: str) -> dict:
    path = VARS_DIR / f"{name}.yml"
    if not path.is_file():
        raise AssertionError(f"no target {name!r} (no {path.relative_to(ROOT)})")
    return yaml.safe_load(path.read_text())


def of(host) -> dict:
    """The target vars of a testinfra host."""
    return target_vars(name_of(host))


def postgresql_unit(host, cluster: str = "main") -> str:
    return f"postgresql@{of(host)['target_postgresql_version']}-{cluster}"
