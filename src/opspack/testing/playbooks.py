"""Run the collection's playbooks as an operator does (ansible-playbook from the repository, the
lab's variables files), proving on every run, failing ones included, that no secret leaked."""

from __future__ import annotations

import subprocess
from pathlib import Path

from opspack.testing.config import ROOT, SITE_VARS_FILES, assert_no_secret, extra_vars, tool_env

ENV = {"ANSIBLE_NOCOLOR": "1", "ANSIBLE_FORCE_COLOR": "0"}


def command(inventory: Path, name: str, *extra: str, site: str | None = None, files=SITE_VARS_FILES) -> list[str]:
    """`ansible-playbook -i INVENTORY playbooks/NAME.yml -e @<vars files> [-e release_site=SITE] EXTRA`."""
    name = name if name.endswith(".yml") else f"{name}.yml"
    return ["ansible-playbook", "-i", str(inventory), str(ROOT / "playbooks" / name), *extra_vars(files),
            *(("-e", f"release_site={site}") if site else ()), *extra]


def checked(ran: subprocess.CompletedProcess, what: str, files=SITE_VARS_FILES) -> subprocess.CompletedProcess:
    """The run, once proven to have kept every secret out of its output."""
    assert_no_secret((ran.stdout or "") + (ran.stderr or ""), f"the output of {what}", files)
    return ran


def playbook(inventory: Path, name: str, *extra: str, site: str | None = None,
             files=SITE_VARS_FILES, env: dict | None = None) -> subprocess.CompletedProcess:
    ran = subprocess.run(command(inventory, name, *extra, site=site, files=files), capture_output=True, text=True,
                         check=False, cwd=ROOT, env=tool_env(**ENV, **(env or {})))
    return checked(ran, f"{name} {' '.join(extra)}", files)
