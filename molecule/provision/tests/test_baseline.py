"""testinfra checks of the OS baseline (opspack.platform.baseline), read from the running system.

Expected values are the role's defaults overlaid with the inventory's variables. Inside a lab
container /proc/sys is read-only and kernel modules belong to the machine's kernel: there the
kernel settings and the module blacklist are checked in the files the host boots with (and the
live values wherever the host could apply them); docs/provision.md lists what cannot apply there.
"""

import re
from pathlib import Path

import pytest
import yaml

DEFAULTS = Path(__file__).resolve().parents[3] / "roles" / "baseline" / "defaults" / "main.yml"
SYSCTL_FILE = "/etc/sysctl.d/60-opspack-baseline.conf"


@pytest.fixture(scope="module")
def baseline(host):
    values = yaml.safe_load(DEFAULTS.read_text())
    values.update({k: v for k, v in host.ansible.get_variables().items() if k.startswith("baseline_")})
    return values


def _key_values(text: str, separator: str = r"\s+") -> dict:
    found = {}
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            parts = re.split(separator, line, maxsplit=1)
            if len(parts) == 2:
                found.setdefault(parts[0].strip(), parts[1].strip())
    return found


def test_login_defs_age_passwords_hash_them_and_set_the_umask(host, baseline):
    defs = _key_values(host.file("/etc/login.defs").content_string)
    assert defs["PASS_MAX_DAYS"] == str(baseline["baseline_password_max_days"])
    assert defs["PASS_MIN_DAYS"] == str(baseline["baseline_password_min_days"])
    assert defs["PASS_WARN_AGE"] == str(baseline["baseline_password_warn_days"])
    assert defs["UMASK"] == baseline["baseline_umask"]
    assert defs["HOME_MODE"] == "0750"
    assert defs["ENCRYPT_METHOD"] == "YESCRYPT"
    # The operator's home is closed to others: 0750, or 0700 on targets whose useradd makes homes so.
    assert host.file("/home/ops").mode & 0o027 == 0


def test_pam_asks_for_quality_passwords_and_gives_each_session_its_own_tmp(host, baseline):
    password = host.file("/etc/pam.d/common-password").content_string
    session = host.file("/etc/pam.d/common-session").content_string
    assert "pam_pwquality.so" in password
    assert "pam_tmpdir.so" in session
    quality = _key_values(host.file("/etc/security/pwquality.conf.d/50-opspack-baseline.conf").content_string, r"\s*=\s*")
    assert quality["minlen"] == str(baseline["baseline_pwquality_minlen"]) and quality["minclass"] == "4"


def test_no_core_dumps(host):
    assert host.file("/etc/security/limits.d/10-opspack-baseline.conf").contains(r"^\* hard core 0$")
    coredump = host.check_output("systemd-analyze cat-config systemd/coredump.conf")
    assert "Storage=none" in coredump and "ProcessSizeMax=0" in coredump


def test_the_kernel_and_network_settings_are_configured_and_applied_where_they_can_be(host, baseline):
    configured = _key_values(host.file(SYSCTL_FILE).content_string, r"\s*=\s*")
    for key, value in {"kernel.randomize_va_space": "2", "kernel.yama.ptrace_scope": "1", "kernel.kptr_restrict": "2",
                       "kernel.dmesg_restrict": "1", "kernel.unprivileged_bpf_disabled": "1", "fs.protected_symlinks": "1",
                       "fs.protected_hardlinks": "1", "fs.protected_fifos": "2", "fs.protected_regular": "2",
                       "fs.suid_dumpable": "0", "net.ipv4.conf.all.accept_redirects": "0",
                       "net.ipv6.conf.all.accept_redirects": "0", "net.ipv4.conf.all.send_redirects": "0",
                       "net.ipv4.conf.all.accept_source_route": "0", "net.ipv4.conf.all.rp_filter": "1",
                       "net.ipv4.conf.all.log_martians": "1", "net.ipv4.tcp_syncookies": "1",
                       "net.ipv4.ip_forward": "1" if baseline["baseline_ip_forwarding"] else "0"}.items():
        assert configured.get(key) == value, key
    # Router advertisements stay accepted by default (IPv6 by SLAAC on many VPSes).
    assert "net.ipv6.conf.all.accept_ra" not in configured
    # systemd-sysctl loads the file at boot; where it may write /proc/sys it has applied it now.
    if host.run("test -w /proc/sys/kernel/dmesg_restrict").rc == 0:
        for key, value in configured.items():
            assert host.check_output(f"sysctl -n {key}") == value, key
    else:
        # A container: systemd-sysctl's condition (a writable /proc/sys) is not met, nothing is half applied.
        assert host.run("systemctl show -p ConditionResult --value systemd-sysctl").stdout.strip() == "no"


def test_unused_kernel_modules_can_never_load(host, baseline):
    config = host.check_output("modprobe --showconfig")
    for module in baseline["baseline_modules_disabled"]:
        name = module.replace("-", "_")
        assert re.search(rf"^install {name} /bin/false$", config, re.M), module
        assert re.search(rf"^blacklist {name}$", config, re.M), module


def test_logins_see_the_legal_banner_and_never_the_release(host, baseline):
    for path in ("/etc/issue", "/etc/issue.net", "/etc/motd"):
        text = host.file(path).content_string
        assert text == baseline["baseline_banner"]
        assert not re.search(r"Debian|Ubuntu|\\[rsvnm]", text)


def test_cron_and_at_are_roots_only(host):
    for path in ("/etc/cron.allow", "/etc/at.allow"):
        allow = host.file(path)
        assert allow.content_string.split() == ["root"] and allow.mode == 0o640 and allow.user == "root"
    assert not host.file("/etc/cron.deny").exists and not host.file("/etc/at.deny").exists
    # Those the host has (a minimal image has no cron; the allow lists wait for it).
    crontab = host.file("/etc/crontab")
    assert not crontab.exists or crontab.mode == 0o600
    for directory in ("/etc/cron.d", "/etc/cron.hourly", "/etc/cron.daily", "/etc/cron.weekly", "/etc/cron.monthly"):
        assert not host.file(directory).exists or host.file(directory).mode == 0o700, directory


def test_package_integrity_restart_needs_activity_history_and_accounting(host):
    for package in ("needrestart", "debsums", "sysstat", "acct", "libpam-tmpdir", "libpam-pwquality"):
        assert host.package(package).is_installed, package
    # needrestart lists, and never restarts by itself (an apt run must not restart PostgreSQL).
    assert "$nrconf{restart} = 'l';" in host.file("/etc/needrestart/conf.d/50-opspack-baseline.conf").content_string
    assert host.file("/etc/default/debsums").contains("^CRON_CHECK=weekly$")
    assert host.file("/etc/default/sysstat").contains('^ENABLED="true"$')
    assert host.service("sysstat").is_enabled
    # Process accounting runs on a VM; inside a container the kernel refuses it, so its unit is off
    # there rather than failed (a failed unit leaves the system "degraded").
    in_container = host.run("systemd-detect-virt --container").rc == 0
    assert host.service("acct").is_enabled is not in_container
    assert host.run("systemctl is-failed --quiet acct.service").rc != 0


def test_no_security_update_is_pending_right_after_provisioning(host):
    simulated = host.check_output("apt-get --simulate -o Debug::NoLocking=1 dist-upgrade")
    pending = [line.split()[1] for line in simulated.splitlines()
               if re.match(r"^Inst \S+ (\[[^\]]*\] )?\([^)]*-security[ ,\]]", line)]
    assert pending == []


def _hardening_line(host) -> str:
    out = host.run("prod_verify verify").stdout
    return next(line for line in out.splitlines() if " check=hardening " in line)


def test_the_verification_names_a_control_changed_by_hand(host):
    assert "status=ok" in _hardening_line(host)
    host.run_expect([0], f"cp -p {SYSCTL_FILE} /root/baseline-sysctl.saved && echo 'kernel.sysrq = 1' >> {SYSCTL_FILE}"
                    " && touch /etc/cron.deny")
    try:
        line = _hardening_line(host)
        assert "status=fail" in line and "reason=control_changed" in line and "names=cron,sysctl" in line, line
    finally:
        host.run(f"mv /root/baseline-sysctl.saved {SYSCTL_FILE}; rm -f /etc/cron.deny")
    assert "status=ok" in _hardening_line(host)
