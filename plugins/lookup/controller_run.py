# Copyright: opspack developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Identify this ansible-playbook run on the control node, and tell whether an earlier run is gone."""

from __future__ import annotations

DOCUMENTATION = r"""
name: controller_run
short_description: This run's id on the control node, or whether another run has ended
version_added: 0.1.0
author: opspack developers (@opspack)
description:
  - With no terms, returns the id of the running C(ansible-playbook) process,
    C(<control node>:<pid>:<start time>). It is the same for every host and every task of one
    run (also across C(serial) batches), and never reused by a later run, so deploy locks and
    records can name the run.
  - With the term C(operator), returns who runs it, C(<USER>@<control node>) (C(operator) when
    USER is unset). It is the one name the audit logs on the hosts and the records use.
  - With the term C(gone) and a run id, returns V(true) only when that run was started on this
    control node and its process no longer exists (or the pid now belongs to another process).
    A run of another control node is never called gone.
options:
  _terms:
    description: Nothing, C(operator), or C(gone) followed by a run id.
    type: list
    elements: str
"""

EXAMPLES = r"""
- name: Name this run
  ansible.builtin.set_fact:
    release_run_id: "{{ lookup('opspack.platform.controller_run') }}"
"""

RETURN = r"""
_raw:
  description: The run id, or whether the given run is gone.
  type: list
  elements: raw
"""

import multiprocessing
import os
import socket

from ansible.errors import AnsibleLookupError
from ansible.plugins.lookup import LookupBase


def main_pid() -> int:
    """The ansible-playbook process: tasks are templated in worker processes forked from it."""
    parent = multiprocessing.parent_process()
    return parent.pid if parent is not None else os.getpid()


def start_time(pid: int) -> str:
    """The process's start time in clock ticks since boot (field 22 of /proc/PID/stat), or ''."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as handle:
            return handle.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return ""


def run_id() -> str:
    pid = main_pid()
    return f"{socket.gethostname()}:{pid}:{start_time(pid) or '0'}"


def operator() -> str:
    return f"{os.environ.get('USER') or 'operator'}@{socket.gethostname()}"


def gone(other: str) -> bool:
    try:
        host, pid, started = other.rsplit(":", 2)
        pid_number = int(pid)
    except ValueError:
        return False
    if host != socket.gethostname():
        return False
    return start_time(pid_number) != started


class LookupModule(LookupBase):
    def run(self, terms, variables=None, **kwargs):
        if not terms:
            return [run_id()]
        if terms == ["operator"]:
            return [operator()]
        if terms[0] == "gone" and len(terms) == 2:
            return [gone(str(terms[1]))]
        raise AnsibleLookupError("controller_run takes no terms, 'operator', or 'gone' and a run id")
