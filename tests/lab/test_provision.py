"""provision.yml on real lab hosts: bad input changes nothing; a run cut off halfway converges."""

import hashlib
import os
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
import yaml
from conftest import BASE_PORT, ROOT, opspack

from opspack.testing.config import LAB_SITE, OPERATOR, assert_no_secret, operator_vars, tool_env

PORT = BASE_PORT + 300


@pytest.fixture
def fresh_host(lab_name, lab_dir):
    up = opspack("lab", "up", "--name", lab_name, "--dir", str(lab_dir), "--hosts", "1", "--base-port", str(PORT))
    assert up.returncode == 0, up.stderr
    yield lab_dir
    opspack("lab", "down", "--name", lab_name, "--dir", str(lab_dir))


def provision(lab_dir, extra_vars: dict, *options: str, **popen):
    vars_file = lab_dir / "vars.yml"
    vars_file.write_text(yaml.safe_dump(extra_vars))
    args = ["ansible-playbook", "-i", str(lab_dir / "hosts.yml"), "playbooks/provision.yml", "-e", f"@{vars_file}", *options]
    # Ansible's own connection pattern (ansible.cfg: ControlMaster, ControlPersist), in a control
    # path directory of this host's own, so no connection of an earlier test's host is reused. A
    # connection per task (ControlMaster=no) would be throttled by the firewall's per-source SSH
    # limit, as any burst from one address is.
    control_dir = Path(tempfile.gettempdir()) / f"opscp-{hashlib.sha256(str(lab_dir).encode()).hexdigest()[:8]}"
    control_dir.mkdir(mode=0o700, exist_ok=True)
    env = tool_env(ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"), ANSIBLE_NOCOLOR="1", ANSIBLE_SSH_CONTROL_PATH_DIR=str(control_dir))
    if popen:
        return subprocess.Popen(args, cwd=ROOT, env=env, **popen)
    return subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, check=False)


def on_host(lab_dir, command, *options):
    """Run a command on the lab host with ad-hoc ansible (OPTIONS: how to log in)."""
    return subprocess.run(["ansible", "all", "-i", str(lab_dir / "hosts.yml"), "-m", "ansible.builtin.command",
                           "-a", command, *options], cwd=ROOT, capture_output=True, text=True, check=False,
                          env=tool_env(ANSIBLE_CONFIG=str(ROOT / "ansible.cfg")))


def as_root(lab_dir, command):
    """Run a command on the host the way it was handed over (root by key)."""
    return on_host(lab_dir, command)


def as_operator(lab_dir, command):
    """Run a command on a provisioned host as the operator does (root login is off there)."""
    return on_host(lab_dir, command, "-e", f"ansible_user={OPERATOR}", "--become")


def lab_site():
    return yaml.safe_load(LAB_SITE.read_text())


def assert_untouched(lab_dir):
    # Root still gets in, and neither sshd nor PostgreSQL was configured.
    result = as_root(lab_dir, "sh -c 'test ! -e /etc/ssh/sshd_config.d/00-opspack.conf && test ! -e /etc/postgresql && ! id ops'")
    assert result.returncode == 0, result.stdout + result.stderr


def test_no_operator_key_is_refused_before_anything_changes(fresh_host):
    result = provision(fresh_host, {"access_operator_user": "ops"})
    assert result.returncode != 0
    assert "access_operator_ssh_keys" in result.stdout
    assert_untouched(fresh_host)


def test_site_without_database_password_is_refused_before_anything_changes(fresh_host):
    site = lab_site()
    for entry in site["opspack_sites"]:
        del entry["database"]["password"]
    result = provision(fresh_host, {**operator_vars(fresh_host / "id_ed25519.pub"), **site})
    assert result.returncode != 0
    assert "opspack_sites: site blog: database.password: missing" in result.stdout
    assert_untouched(fresh_host)


def test_a_run_cut_off_halfway_converges_when_run_again(fresh_host, tmp_path):
    site_vars = {**operator_vars(fresh_host / "id_ed25519.pub"), **lab_site()}
    log = open(tmp_path / "cut.log", "w")  # noqa: SIM115 - closed below
    run = provision(fresh_host, site_vars, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    time.sleep(40)  # well into package installation
    assert run.poll() is None, "provision finished before it could be cut off"
    os.killpg(run.pid, signal.SIGKILL)
    run.wait()
    log.close()
    again = provision(fresh_host, site_vars)
    assert again.returncode == 0, again.stdout[-4000:]
    # The settled run at the highest verbosity: still changed=0, and no canary secret in its output.
    settled = provision(fresh_host, site_vars, "-vvvv")
    assert settled.returncode == 0
    assert "changed=0" in settled.stdout and "failed=0" in settled.stdout
    assert_no_secret(settled.stdout + settled.stderr, "the settled provision run at -vvvv", files=(LAB_SITE,))
    # The scheduled checks switched off: their timers stop and their units go, and that settles too.
    checks = {"opspack-file-integrity": "baseline_file_integrity_enabled", "opspack-package-integrity": "baseline_debsums_enabled"}
    checks_off = {**site_vars, **dict.fromkeys(checks.values(), False)}
    assert provision(fresh_host, checks_off).returncode == 0
    left = as_operator(fresh_host, "sh -c 'systemctl list-timers --all --plain --no-legend; ls /etc/systemd/system'")
    assert left.returncode == 0, left.stdout + left.stderr
    assert not [unit for unit in checks if unit in left.stdout], left.stdout
    again = provision(fresh_host, checks_off)
    assert again.returncode == 0 and "changed=0" in again.stdout, again.stdout[-4000:]
