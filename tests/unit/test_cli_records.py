"""`opspack matrix|history|incidents` find the records where the playbooks put them: the state
directory asked of Ansible (the inventory's opspack_state_dir, ansible.cfg, the default), or the
directory given."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from opspack.testing.config import tool_env

ROOT = Path(__file__).resolve().parents[1].parent
ENTRY = {"environment": "production", "host": "web-1", "operation": "deploy", "result": "ok", "site": "blog",
         "time": "2026-12-05T10:00:00Z", "version": "1.0.0"}


def opspack(*args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "opspack.cli", *args], capture_output=True, text=True, cwd=cwd,
                          env=tool_env(ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"), **env), timeout=120, check=False)


def history_in(directory: Path) -> None:
    (directory / "records").mkdir(parents=True)
    (directory / "records" / "history.jsonl").write_text(json.dumps(ENTRY, sort_keys=True) + "\n")


def test_the_inventorys_own_state_directory_is_found_through_ansible(tmp_path):
    inventory = tmp_path / "inventories" / "production"
    (inventory / "group_vars" / "all").mkdir(parents=True)
    (inventory / "hosts.yml").write_text("all:\n  hosts:\n    web-1:\n      ansible_host: 192.0.2.10\n")
    # Templated, as inventories write it (a raw "{{ ... }}" path would land somewhere odd).
    (inventory / "group_vars" / "all" / "main.yml").write_text(
        f"state_root: {tmp_path}\nopspack_state_dir: \"{{{{ state_root }}}}/kept\"\n")
    history_in(tmp_path / "kept")
    ran = opspack("history", "--json", "-i", str(inventory), cwd=tmp_path, XDG_DATA_HOME=str(tmp_path / "data"))
    assert ran.returncode == 0, ran.stderr
    assert [entry["site"] for entry in json.loads(ran.stdout)] == ["blog"]


def test_without_a_setting_the_default_state_directory_is_read(tmp_path):
    inventory = tmp_path / "inventories" / "staging"
    inventory.mkdir(parents=True)
    (inventory / "hosts.yml").write_text("all:\n  hosts:\n    web-1:\n")
    history_in(tmp_path / "data" / "opspack" / "staging")
    ran = opspack("history", "--json", "-i", str(inventory / "hosts.yml"), cwd=tmp_path, XDG_DATA_HOME=str(tmp_path / "data"))
    assert ran.returncode == 0, ran.stderr


def test_a_given_state_directory_needs_no_ansible_and_a_missing_one_says_what_to_pass(tmp_path):
    history_in(tmp_path / "state")
    assert opspack("history", "--state-dir", str(tmp_path / "state"), cwd=tmp_path).returncode == 0
    ran = opspack("matrix", "--state-dir", str(tmp_path / "nowhere"), cwd=tmp_path)
    assert ran.returncode == 1 and "--state-dir DIR" in ran.stderr and "Traceback" not in ran.stderr


def test_a_vaulted_inventory_without_its_password_is_a_clear_error(tmp_path):
    inventory = tmp_path / "vaulted"
    (inventory / "group_vars" / "all").mkdir(parents=True)
    (inventory / "hosts.yml").write_text("all:\n  hosts:\n    web-1:\n")
    (tmp_path / "pass").write_text("pw\n")
    (inventory / "group_vars" / "all" / "vault.yml").write_text("secret: x\n")
    subprocess.run([str(Path(sys.executable).parent / "ansible-vault"), "encrypt", "--vault-password-file",
                    str(tmp_path / "pass"), str(inventory / "group_vars" / "all" / "vault.yml")], check=True, capture_output=True)
    ran = opspack("matrix", "-i", str(inventory), cwd=tmp_path)
    assert ran.returncode == 1 and "--vault-password-file" in ran.stderr and "Traceback" not in ran.stderr
    history_in(tmp_path / "data" / "opspack" / "vaulted")
    ran = opspack("history", "-i", str(inventory), "--vault-password-file", str(tmp_path / "pass"), cwd=tmp_path,
                  XDG_DATA_HOME=str(tmp_path / "data"))
    assert ran.returncode == 0, ran.stderr


def test_verify_and_daily_print_each_hosts_last_report_and_say_when_there_is_none(tmp_path):
    folder = tmp_path / "records" / "reports" / "verify"
    folder.mkdir(parents=True)
    (folder / "vps2.json").write_text(json.dumps({
        "tool": "verify", "host": "vps2", "generated_at": "2026-12-06T09:00:00Z", "status": "fail",
        "summary": "verify vps2: FAIL (40 checks, 1 failed, 1 warnings)",
        "checks": [{"check": "firewall", "status": "fail", "reason": "ruleset_changed_by_hand"},
                   {"check": "cpu", "status": "pass"},
                   {"check": "updates", "status": "warn", "reason": "security_updates_pending", "value": 3, "threshold": 0}]}))
    ran = opspack("verify", "--records", str(tmp_path / "records"), cwd=tmp_path)
    assert ran.returncode == 0, ran.stderr
    assert "vps2  2026-12-06T09:00:00Z  verify vps2: FAIL" in ran.stdout
    assert "ruleset_changed_by_hand" in ran.stdout and "value=3 threshold=0" in ran.stdout and " cpu " not in ran.stdout
    ran = opspack("verify", "--json", "--records", str(tmp_path / "records"), cwd=tmp_path)
    assert json.loads(ran.stdout)["vps2"]["status"] == "fail"
    ran = opspack("daily", "--records", str(tmp_path / "records"), cwd=tmp_path)
    assert ran.returncode == 1 and "opspack.platform.ops_daily" in ran.stderr
