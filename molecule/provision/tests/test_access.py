"""Access: the operator gets in and becomes root; root and passwords are refused for real."""

import subprocess

import pytest

from opspack.testing import targets


def _ssh(host, user, *options):
    """A fresh SSH login from the control node, as a person (or an attacker) would try it.
    Host keys are not the point here, authentication is: no known_hosts, no shared connection."""
    port = str(host.ansible.get_variables()["ansible_port"])
    return subprocess.run(
        ["ssh", "-p", port, "-o", "BatchMode=yes", "-o", "ControlMaster=no", "-o", "ConnectTimeout=10",
         "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", *options,
         f"{user}@127.0.0.1", "id -u"],
        capture_output=True, text=True, check=False, timeout=30,
    )


@pytest.fixture
def key_file(host):
    return host.ansible.get_variables()["ansible_private_key_file"]


def test_operator_logs_in_and_becomes_root(host, key_file):
    result = _ssh(host, "ops", "-i", key_file, "-o", "IdentitiesOnly=yes")
    assert result.returncode == 0, result.stderr
    assert host.run("sudo -n id -u").stdout.strip() == "0"


def test_root_login_is_refused(host, key_file):
    result = _ssh(host, "root", "-i", key_file, "-o", "IdentitiesOnly=yes")
    assert result.returncode == 255
    assert "Permission denied" in result.stderr


def test_password_login_is_refused(host):
    result = _ssh(host, "ops", "-o", "PubkeyAuthentication=no",
                  "-o", "PreferredAuthentications=password,keyboard-interactive")
    assert result.returncode == 255
    assert "Permission denied (publickey)" in result.stderr


def test_sshd_effective_config_is_hardened(host):
    config = host.run("sudo -n sshd -T").stdout
    for line in ("permitrootlogin no", "passwordauthentication no", "kbdinteractiveauthentication no",
                 "maxauthtries 3", "allowgroups opspack-ssh", "x11forwarding no"):
        assert line in config
    assert "diffie-hellman-group14-sha1" not in config and "hmac-sha1" not in config.split("macs ")[1].split("\n")[0]
    # The key exchange the host's target offers, strongest (post-quantum hybrid) first.
    kex = [line.split(" ", 1)[1] for line in config.splitlines() if line.startswith("kexalgorithms ")][0]
    assert kex.split(",") == targets.of(host)["target_ssh_kex_algorithms"]
