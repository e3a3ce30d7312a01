# Copyright: opspack developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Run a converge in check mode on the control node and say, per host, what it would change.

The nested ansible-playbook gets what this run got (its inventories, extra variables, vault
identities and password files, user, key, connection settings) and `--check --limit` the hosts of
the play. Its output, which may hold values, is read here and thrown away: only the changed
count and the names of the tasks that would change leave this plugin.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys

from ansible import context
from ansible.plugins.action import ActionBase

# Command-line options of ansible-playbook passed on as they were given (CLIARGS key, option).
PASSED_ON = (("inventory", "--inventory"), ("extra_vars", "--extra-vars"), ("vault_ids", "--vault-id"),
             ("vault_password_files", "--vault-password-file"))
SINGLE = (("private_key_file", "--private-key"), ("remote_user", "--user"), ("connection", "--connection"),
          ("timeout", "--timeout"), ("ssh_common_args", "--ssh-common-args"), ("become_method", "--become-method"),
          ("become_user", "--become-user"), ("become_password_file", "--become-password-file"),
          ("connection_password_file", "--connection-password-file"))
INTERACTIVE = ("ask_vault_pass", "ask_pass", "become_ask_pass")
# Tasks that change with the clock, not the configuration (an apt list refresh): not drift.
PERIODIC_TAG = "opspack_periodic"


def nested_command(cli: dict, playbook: str, hosts: list[str], forks: int) -> list[str]:
    """ansible-playbook PLAYBOOK --check with this run's options, limited to hosts."""
    program = os.path.join(os.path.dirname(sys.argv[0]), "ansible-playbook") if sys.argv and sys.argv[0] else ""
    if not os.path.exists(program):
        program = shutil.which("ansible-playbook") or "ansible-playbook"
    argv = [program, playbook, "--check", "--limit", ",".join(hosts), "--forks", str(forks), "--skip-tags", PERIODIC_TAG]
    for key, option in PASSED_ON:
        for value in cli.get(key) or ():
            argv += [option, str(value)]
    for key, option in SINGLE:
        if cli.get(key):
            argv += [option, str(cli[key])]
    if cli.get("become"):
        argv.append("--become")
    return argv


def prompts(cli: dict) -> list[str]:
    """The options of this run that ask for a password at a prompt: a nested run cannot."""
    found = [key for key in INTERACTIVE if cli.get(key)]
    found += [f"--vault-id {vault_id}" for vault_id in cli.get("vault_ids") or () if str(vault_id).endswith("@prompt")]
    return found


def changes(output: str, hosts: list[str]) -> dict:
    """Per host: the changed count and the names of the tasks that would change, from the json callback."""
    found = {}
    # The report is the one JSON object that starts a line; anything printed before it is skipped.
    for match in re.finditer(r"^\{", output, re.MULTILINE):
        try:
            found, _end = json.JSONDecoder().raw_decode(output, match.start())
        except ValueError:
            continue
        if isinstance(found, dict) and "stats" in found:
            break
        found = {}
    stats = found.get("stats") if isinstance(found, dict) else None
    if not isinstance(stats, dict):
        return {}
    tasks: dict[str, list[str]] = {host: [] for host in hosts}
    for play in found.get("plays", []):
        for task in play.get("tasks", []):
            name = (task.get("task") or {}).get("name", "")
            for host, result in (task.get("hosts") or {}).items():
                if host in tasks and isinstance(result, dict) and result.get("changed") and name not in tasks[host]:
                    tasks[host].append(name)
    return {host: {"changed": int(stats.get(host, {}).get("changed", 0)),
                   "failed": int(stats.get(host, {}).get("failures", 0)) + int(stats.get(host, {}).get("unreachable", 0)),
                   "tasks": tasks[host]} for host in hosts if host in stats}


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _VALID_ARGS = frozenset(("playbook", "hosts", "timeout"))

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        result["changed"] = False
        args = self._task.args
        playbook = args.get("playbook", "opspack.platform.provision")
        hosts = [str(host) for host in (args.get("hosts") or [])]
        if not hosts:
            return dict(result, failed=True, msg="config_drift: give the hosts to check (hosts)")
        cli = dict(context.CLIARGS)
        interactive = prompts(cli)
        if interactive:
            # A nested run cannot be given a password typed at a prompt.
            return dict(result, hosts={}, error="interactive_password",
                        msg="config drift not checked: this run asks for a password at a prompt "
                            f"({', '.join(interactive)}); use a vault password file or an SSH key")
        argv = nested_command(cli, playbook, hosts, int(cli.get("forks") or 5))
        # The records callback, when enabled, writes nothing in check mode.
        # No log file: the nested run's results would land in ansible.cfg's log_path.
        env = dict(os.environ, ANSIBLE_STDOUT_CALLBACK="ansible.posix.json", ANSIBLE_LOAD_CALLBACK_PLUGINS="1",
                   ANSIBLE_NOCOLOR="1", ANSIBLE_RETRY_FILES_ENABLED="0", ANSIBLE_LOG_PATH="/dev/null")
        try:
            # stdin from /dev/null: Ansible refuses the worker's non-blocking stdin.
            ran = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                                 timeout=int(args.get("timeout", 900)), check=False, env=env, cwd=os.getcwd())
        except (OSError, subprocess.TimeoutExpired) as exc:
            return dict(result, hosts={}, error="not_run", msg=f"config drift not checked: {type(exc).__name__}")
        found = changes(ran.stdout, hosts)
        missing = sorted(set(hosts) - set(found))
        result["hosts"] = found
        # (No `rc` key: Ansible would call the task failed; a drift is a finding, not a failure.)
        result["exit_status"] = ran.returncode
        if missing or not found:
            # Never the output itself: it may hold values the check run saw.
            result["error"] = "no_report"
            result["msg"] = (f"config drift: the check run of {playbook} reported nothing for "
                             f"{', '.join(missing or hosts)} (exit {ran.returncode}); run it with --check yourself to see why")
        return result
