"""The operating system target of a lab host as the tests see it: its name (debian12, debian13,
ubuntu2404, as the target role and `opspack lab up --os` name it) and that target's vars file,
so a test expects what the host's target provides instead of naming a version."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import yaml

from opspack.testing.config import ROOT

VARS_DIR = ROOT / "roles" / "target" / "vars"


def name_from_os_release(text: str) -> str:
    """debian13 from /etc/os-release's ID=debian, VERSION_ID="13"; ubuntu2404 from 24.04."""
    fields = dict(line.split("=", 1) for line in text.splitlines() if "=" in line)
    distribution = fields.get("ID", "").strip('"')
    version = fields.get("VERSION_ID", "").strip('"')
    return distribution + (version.replace(".", "") if distribution == "ubuntu" else version.split(".")[0])


@lru_cache(maxsize=None)
def target_vars(name: str) -> dict:
    path = VARS_DIR / f"{name}.yml"
    if not path.is_file():
        raise AssertionError(f"no target {name!r} (no {path.relative_to(ROOT)})")
    return yaml.safe_load(path.read_text())


def of(host) -> dict:
    """The target vars of a testinfra host."""
    return target_vars(name_from_os_release(host.file("/etc/os-release").content_string))


def postgresql_unit(host, cluster: str = "main") -> str:
    return f"postgresql@{of(host)['target_postgresql_version']}-{cluster}"
