"""The drift check's nested run: what it is handed of this run, and what it tells of the output."""

from __future__ import annotations

import json

from ansible_collections.opspack.platform.plugins.action import config_drift

SECRET = "vault-canary-77aa"


def test_the_check_run_gets_this_runs_inventories_variables_and_vault_files_limited_to_the_hosts():
    argv = config_drift.nested_command(
        {"inventory": ("inventories/production",), "extra_vars": ("@vault.yml", "release_site=blog"),
         "vault_password_files": ("~/.vault-pass",), "vault_ids": (), "private_key_file": "~/.ssh/ops", "remote_user": "ops",
         "become": True, "forks": 5}, "opspack.platform.provision", ["vps1", "vps2"], 5)
    assert argv[1:8] == ["opspack.platform.provision", "--check", "--limit", "vps1,vps2", "--forks", "5", "--skip-tags"]
    assert argv[8] == config_drift.PERIODIC_TAG
    text = " ".join(argv)
    for part in ("--inventory inventories/production", "--extra-vars @vault.yml", "--extra-vars release_site=blog",
                 "--vault-password-file ~/.vault-pass", "--private-key ~/.ssh/ops", "--user ops", "--become"):
        assert part in text


def test_the_changes_are_counted_and_named_per_host_and_nothing_else_of_the_output_is_kept():
    output = "[WARNING]: a warning first\n" + json.dumps({
        "plays": [{"tasks": [
            {"task": {"name": "Nginx | Write the base configuration"},
             "hosts": {"vps2": {"changed": True, "diff": [{"after": SECRET}]}, "vps1": {"changed": False}}},
            {"task": {"name": "Health | Start the timer"}, "hosts": {"vps2": {"changed": True}}},
            {"task": {"name": "Access | Read the users"}, "hosts": {"vps1": {"changed": False, "stdout": SECRET}}}]}],
        "stats": {"vps1": {"changed": 0, "failures": 0, "unreachable": 0}, "vps2": {"changed": 2, "failures": 0, "unreachable": 0}}})
    found = config_drift.changes(output, ["vps1", "vps2"])
    assert found == {"vps1": {"changed": 0, "failed": 0, "tasks": []},
                     "vps2": {"changed": 2, "failed": 0, "tasks": ["Nginx | Write the base configuration", "Health | Start the timer"]}}
    assert SECRET not in json.dumps(found)


def test_an_output_that_is_not_the_json_report_tells_nothing():
    assert config_drift.changes("ERROR! the playbook could not be found", ["vps1"]) == {}
