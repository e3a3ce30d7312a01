"""Access: the operator gets in and becomes root; root and passwords are refused for real."""

import json
import os
import shlex
import subprocess

import pytest
import ssh_audit
from ssh_audit.builtin_policies import BUILTIN_POLICIES

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


def test_the_legal_banner_is_shown_before_any_login_never_the_os_release(host, key_file):
    banner = host.file("/etc/issue.net").content_string.strip()
    assert banner and not any(name in banner for name in ("Debian", "Ubuntu", "GNU/Linux"))
    for user in ("ops", "root"):  # accepted, and refused
        result = _ssh(host, user, "-i", key_file, "-o", "IdentitiesOnly=yes")
        assert banner.splitlines()[0] in result.stderr, (user, result.stderr)


def test_password_login_is_refused(host):
    result = _ssh(host, "ops", "-o", "PubkeyAuthentication=no",
                  "-o", "PreferredAuthentications=password,keyboard-interactive")
    assert result.returncode == 255
    assert "Permission denied (publickey)" in result.stderr


def _sshd(host) -> dict:
    """sshd's effective settings: keyword -> the values it holds (HostKey has one per line)."""
    settings = {}
    for line in host.run("sudo -n sshd -T").stdout.splitlines():
        keyword, _, value = line.partition(" ")
        settings.setdefault(keyword, []).append(value)
    return settings


def _chosen(host) -> dict:
    """What the inventory chose for this host (the scenario's vps2 asks for an RSA host key and the
    key exchange of ssh-audit's hardening guide for its release)."""
    given = host.ansible.get_variables()
    return {"rsa": bool(given.get("access_ssh_rsa_host_key", False)),
            "kex_policy": given.get("access_ssh_kex_policy", "compatible")}


def test_sshd_effective_config_is_hardened(host):
    sshd = _sshd(host)
    expected = {
        "permitrootlogin": "no", "passwordauthentication": "no", "kbdinteractiveauthentication": "no",
        "maxauthtries": "3", "allowgroups": "opspack-ssh", "x11forwarding": "no", "allowagentforwarding": "no",
        "allowtcpforwarding": "no", "allowstreamlocalforwarding": "no", "gatewayports": "no", "permittunnel": "no",
        "permituserenvironment": "no", "compression": "no", "maxsessions": "4", "maxstartups": "10:30:60",
        "persourcemaxstartups": "4", "logingracetime": "30", "banner": "/etc/issue.net",
    }
    assert {keyword: sshd[keyword][0] for keyword in expected} == expected
    assert "hmac-sha1" not in sshd["macs"][0]
    # The key exchange the host's target offers for the chosen policy, post-quantum hybrids first.
    chosen, target = _chosen(host), targets.of(host)
    wanted = target["target_ssh_kex_algorithms_strict" if chosen["kex_policy"] == "strict" else "target_ssh_kex_algorithms"]
    assert sshd["kexalgorithms"][0].split(",") == wanted
    assert wanted[0].startswith(("mlkem768x25519", "sntrup761x25519"))
    if chosen["kex_policy"] == "strict":
        assert not any(name.startswith(("curve25519", "diffie-hellman")) for name in wanted)


def test_only_the_chosen_host_keys_exist_and_are_offered(host):
    chosen = _chosen(host)
    kept = ["ed25519"] + (["rsa"] if chosen["rsa"] else [])
    assert sorted(_sshd(host)["hostkey"]) == sorted(f"/etc/ssh/ssh_host_{kind}_key" for kind in kept)
    on_disk = host.run("sudo -n sh -c 'ls /etc/ssh/ssh_host_*'").stdout.split()
    assert sorted(on_disk) == sorted(f"/etc/ssh/ssh_host_{kind}_key{end}" for kind in kept for end in ("", ".pub"))
    if chosen["rsa"]:
        assert host.run("ssh-keygen -l -f /etc/ssh/ssh_host_rsa_key.pub").stdout.split()[0] == "4096"


def test_group_exchange_only_chooses_groups_of_3072_bits_or_more(host):
    sizes = {int(line.split()[4]) for line in host.file("/etc/ssh/moduli").content_string.splitlines()
             if line.strip() and not line.startswith("#")}
    assert sizes and min(sizes) >= 3071  # the file lists each size minus one


# ssh-audit's own hardening policy for each release. On Debian 13 it is the strict key exchange.
AUDIT_POLICIES = {
    "debian12": "Hardened Debian 12 (version 3)",
    "debian13": "Hardened Debian 13 (version 1)",
    "ubuntu2404": "Hardened Ubuntu Server 24.04 LTS (version 2)",
}


def _ssh_audit(host, *arguments) -> tuple[int, dict]:
    """Run ssh-audit, the outside auditor nobody here configured, on the host against its own sshd.
    From the host (over lo) rather than from the control node: its dozen connections in a row would
    be throttled by the firewall as any such burst from one address is."""
    if not host.file("/tmp/opspack-ssh-audit/ssh_audit/__init__.py").exists:
        host.ansible("copy", f"src={os.path.dirname(ssh_audit.__file__)} dest=/tmp/opspack-ssh-audit/", check=False)
    port = int(_sshd(host)["port"][0])
    # --skip-rate-test: the DHEat burst is the firewall's to stop (test_firewall runs it from outside).
    ran = host.run(f"PYTHONPATH=/tmp/opspack-ssh-audit timeout 120 python3 -m ssh_audit --skip-rate-test -j -p {port} "
                   + " ".join(shlex.quote(argument) for argument in arguments) + " 127.0.0.1")
    return ran.rc, json.loads(ran.stdout)


# The one note ssh-audit gives a sound classical key exchange (curve25519, large DH groups).
NOT_POST_QUANTUM = "does not provide protection against post-quantum attacks"


def test_ssh_audit_finds_no_weak_algorithm(host):
    """No algorithm fails and none warns, except the classical key exchanges that the compatible
    policy offers after the post-quantum ones (the strict policy has none)."""
    _, report = _ssh_audit(host)
    flagged = {(section, entry["algorithm"]): (entry.get("notes", {}).get("fail"), entry.get("notes", {}).get("warn"))
               for section in ("kex", "key", "enc", "mac") for entry in report[section]
               if entry.get("notes", {}).get("fail") or entry.get("notes", {}).get("warn")}
    classical = {("kex", name) for name in _sshd(host)["kexalgorithms"][0].split(",")
                 if not name.startswith(("mlkem768x25519", "sntrup761x25519"))}
    assert set(flagged) == classical and all(notes == (None, [NOT_POST_QUANTUM]) for notes in flagged.values()), flagged
    if _chosen(host)["kex_policy"] == "strict":
        assert flagged == {}
    assert not any(entry["algorithm"].startswith(("ecdsa-", "ssh-dss")) for entry in report["key"])
    assert report["compression"] == ["none"]


def test_ssh_audit_passes_its_hardening_policy_for_the_release(host):
    """The scenario's vps2 chose what the policy lists (an RSA host key, the guide's key exchange)
    and must pass outright. vps1 keeps the defaults: it may differ only where the defaults are
    stricter (ed25519 alone, on a policy that wants RSA keys too) or wider (the compatible key
    exchange, on a policy that is post-quantum only), and in nothing else."""
    chosen, name = _chosen(host), AUDIT_POLICIES[targets.name_of(host)]
    policy = BUILTIN_POLICIES[name]
    rc, report = _ssh_audit(host, "-P", name)
    allowed = set()
    if not chosen["rsa"] and not policy.get("allow_hostkey_subset_and_reordering"):
        allowed.add("Host keys")
    offered = _sshd(host)["kexalgorithms"][0].split(",")
    if offered != [kex for kex in policy["kex"] if kex not in ("ext-info-s", "kex-strict-s-v00@openssh.com")]:
        allowed.add("Key exchanges")
    if host.ansible.get_variables()["inventory_hostname"] == "vps2":
        assert allowed == set()
    assert {error["mismatched_field"] for error in report["errors"]} == allowed, report["errors"]
    assert (rc == 0) == (not allowed) == report["passed"]
