"""testinfra checks of the OS baseline (opspack.platform.baseline), read from the running system.

Expected values are the role's defaults overlaid with the inventory's variables. Inside a lab
container /proc/sys is read-only and kernel modules belong to the machine's kernel: there the
kernel settings and the module blacklist are checked in the files the host boots with (and the
live values wherever the host could apply them); docs/provision.md lists what cannot apply there.
"""

import os
import re
import shlex
from pathlib import Path, PurePosixPath

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
    assert host.file("/etc/default/sysstat").contains('^ENABLED="true"$')
    assert host.service("sysstat").is_enabled
    # Process accounting runs on a VM; inside a container the kernel refuses it, so its unit is off
    # there rather than failed (a failed unit leaves the system "degraded").
    in_container = host.run("systemd-detect-virt --container").rc == 0
    assert host.service("acct").is_enabled is not in_container
    assert host.run("systemctl is-failed --quiet acct.service").rc != 0


AUDIT_RULES = "/etc/audit/rules.d/50-opspack-baseline.rules"
# ausyscall's name for each audit ABI, by the host's machine type.
AUSYSCALL_ABI = {("x86_64", "b64"): "x86_64", ("x86_64", "b32"): "i386", ("aarch64", "b64"): "aarch64"}


def test_auditd_has_the_cis_rules_compiled_and_loaded_where_it_can_run(host, baseline):
    assert host.package("auditd").is_installed
    rules = host.file(AUDIT_RULES)
    assert (rules.user, rules.group, rules.mode) == ("root", "root", 0o640)
    text = rules.content_string
    # The CIS watches and system call groups are all there.
    for key in ("scope", "identity", "system-locale", "time-change", "logins", "session", "MAC-policy", "perm_chng",
                "usermod", "kernel_modules", "user_emulation", "access", "perm_mod", "mounts", "delete"):
        assert re.search(rf" -k {re.escape(key)}$", text, re.M), key
    assert ("-e 2" in text.splitlines()) is bool(baseline["baseline_auditd_immutable"])
    # auditctl cannot read them where auditd cannot run: every system call each rule names must be
    # one the kernel's ABI has (ausyscall knows each ABI's table), or the whole file fails to load.
    machine = host.check_output("uname -m")
    syscall_rules = re.findall(r"^-a always,exit -F arch=(b32|b64) -S (\S+)", text, re.M)
    assert {arch for arch, _ in syscall_rules} == ({"b64", "b32"} if machine == "x86_64" else {"b64"})
    for arch, calls in syscall_rules:
        for call in calls.split(","):
            known = host.run(f"ausyscall {AUSYSCALL_ABI[(machine, arch)]} {call} --exact")
            assert known.rc == 0 and known.stdout.strip().isdigit(), (arch, call)
    # The compiled file auditd loads holds them.
    assert "No change" in host.check_output("augenrules --check 2>&1")
    # auditd runs on a VM; inside a container the kernel refuses it, so its unit is off there.
    in_container = host.run("systemd-detect-virt --container").rc == 0
    # Debian 13's audit 4 loads the rules at boot from a unit of its own (audit-rules).
    for unit in ("auditd", "audit-rules"):
        assert host.run(f"systemctl is-failed --quiet {unit}.service").rc != 0, unit
    assert host.service("auditd").is_running is not in_container
    if not in_container:
        loaded = host.check_output("auditctl -l")
        assert "-w /etc/shadow -p wa -k identity" in loaded
        assert "-k kernel_modules" in loaded


def test_apt_prints_upgraded_packages_news_without_asking(host):
    assert host.package("apt-listchanges").is_installed
    # apt-listchanges' own reading of its settings, the conf.d drop-in merged over the package's file.
    settings = host.check_output("python3 -c %s", "import configparser,glob; c=configparser.ConfigParser(); "
                                 "c.read(['/etc/apt/listchanges.conf'] + sorted(glob.glob('/etc/apt/listchanges.conf.d/*.conf'))); "
                                 "print(c['apt']['frontend'], c['apt']['which'], c['apt']['confirm'])")
    assert settings.split() == ["text", "news", "false"]


AIDE_DATABASE = "/var/lib/aide/aide.db"
AIDE_UNIT = "opspack-file-integrity.service"
DEBSUMS_UNIT = "opspack-package-integrity.service"
PLANTED = "/usr/local/sbin/opspack-planted-by-test"


def _integrity_line(host, check="file_integrity") -> str:
    out = host.run("ops_daily --mode prod").stdout
    line = next((line for line in out.splitlines() if f" check={check} " in line), None)
    assert line, out
    return line


def _run_integrity_check(host, unit=AIDE_UNIT) -> tuple[int, str]:
    """Runs a daily check's own unit now, as its timer does; returns its exit status and this run's report."""
    since = host.check_output("date '+%Y-%m-%d %H:%M:%S'")
    host.run(f"timeout 900 systemctl start {unit}")
    status = int(host.check_output(f"systemctl show --property=ExecMainStatus --value {unit}"))
    return status, host.check_output(f"journalctl --unit={unit} --since='{since}' --no-pager --output=cat")


def test_file_integrity_is_checked_daily_against_the_reference_made_by_provisioning(host):
    database = host.file(AIDE_DATABASE)
    assert database.is_file and (database.user, database.mode) == ("root", 0o600)
    timer = host.service("opspack-file-integrity.timer")
    assert timer.is_enabled and timer.is_running
    # The package's own daily check would check the same database again (and fails in a container).
    assert not host.service("dailyaidecheck.timer").is_enabled
    # A program planted where programs live is found, named, and reported by the daily health check;
    # it is the only finding: the host as provisioning left it (a second run and the tests so far
    # included) has nothing else to report, since what the platform changes by itself is left out.
    host.run_expect([1], f"test -e {PLANTED}")
    host.run_expect([0], f"printf '#!/bin/sh\\nexit 0\\n' > {PLANTED} && chmod 0755 {PLANTED}")
    try:
        status, report = _run_integrity_check(host)
        assert status == 1 + 4, report[-2000:]  # added, and its directory changed
        findings = set(re.findall(r"^[fdl][^:]*: (.*)$", report, re.M))
        # Its directory changed too; in a lab container so may the directories above it (overlayfs
        # copies a lower layer's directory up, with a new ctime, on the first write below it).
        ancestors = {str(parent) for parent in PurePosixPath(PLANTED).parents if str(parent) != "/"}
        assert PLANTED in findings and os.path.dirname(PLANTED) in findings, findings
        assert findings <= ancestors | {PLANTED}, findings
        line = _integrity_line(host)
        assert "status=fail" in line and "reason=files_changed" in line and "added=1" in line, line
    finally:
        host.run(f"rm -f {PLANTED}")
        # The operator has seen the report: resetting the unit's failed state clears the finding
        # (and a failed unit would leave the system "degraded" for the tests after this one).
        host.run_expect([0], f"systemctl reset-failed {AIDE_UNIT}")
    assert "status=ok" in _integrity_line(host)


def test_package_integrity_is_checked_daily(host):
    timer = host.service("opspack-package-integrity.timer")
    assert timer.is_enabled and timer.is_running
    # debsums' own cron job would run the same check again.
    assert host.file("/etc/default/debsums").contains("^CRON_CHECK=never$")
    # The host as provisioning left it: every installed program and library as its package made it.
    status, report = _run_integrity_check(host, DEBSUMS_UNIT)
    assert status == 0, report[-2000:]
    assert "status=ok" in _integrity_line(host, "package_integrity")
    # A file of an installed package changed behind the packages' back (one of debsums' own, kept
    # aside and put back) is found, named, and reported by the daily health check.
    packaged = [line.split(None, 1)[1] for line in host.file("/var/lib/dpkg/info/debsums.md5sums").content_string.splitlines()]
    target = next("/" + path for path in packaged if path.startswith("usr/share/") and host.file("/" + path).is_file)
    host.run_expect([0], f"cp -p {target} /root/debsums-planted.saved && printf 'planted' >> {target}")
    try:
        status, report = _run_integrity_check(host, DEBSUMS_UNIT)
        assert status == 2, report[-2000:]
        assert f"changed file {target}" in report, report[-2000:]
        line = _integrity_line(host, "package_integrity")
        assert "status=fail" in line and "reason=files_changed" in line, line
    finally:
        host.run(f"mv -f /root/debsums-planted.saved {target}")
        host.run_expect([0], f"systemctl reset-failed {DEBSUMS_UNIT}")
    status, report = _run_integrity_check(host, DEBSUMS_UNIT)
    assert status == 0, report[-2000:]
    assert "status=ok" in _integrity_line(host, "package_integrity")


LOG_SHIPPING_FILE = "/etc/rsyslog.d/60-opspack-log-shipping.conf"
# A log host for one test: reads rsyslog's TCP stream on the host's loopback into a file, for at
# most two minutes (systemd stops it then, whatever happens to the test).
LOG_HOST = (
    "import socket\n"
    "server = socket.create_server(('127.0.0.1', {port}))\n"
    "with open('/root/log-host.received', 'ab', buffering=0) as out:\n"
    "    while True:\n"
    "        connection, _ = server.accept()\n"
    "        while data := connection.recv(65536):\n"
    "            out.write(data)\n"
)


def _received(host, *marks, seconds=150) -> str:
    """What the log host received, once every mark is in it (or the time is up)."""
    for _ in range(seconds // 5):
        received = host.run("cat /root/log-host.received 2>/dev/null").stdout
        if all(mark in received for mark in marks):
            break
        host.run("sleep 5")
    return received


def test_logs_go_to_the_central_log_host_and_none_are_lost_while_it_is_down(host):
    given = host.ansible.get_variables()
    if not given.get("baseline_log_shipping_host"):
        # The default: the logs stay on the host, and rsyslog is not configured to send them anywhere.
        assert not host.file(LOG_SHIPPING_FILE).exists
        return
    assert host.service("rsyslog").is_enabled and host.service("rsyslog").is_running
    config = host.file(LOG_SHIPPING_FILE).content_string
    assert f'target="{given["baseline_log_shipping_host"]}" port="{given["baseline_log_shipping_port"]}"' in config
    nonce = host.check_output("cat /proc/sys/kernel/random/uuid")
    down, up = f"logged-while-the-log-host-was-down-{nonce}", f"logged-while-the-log-host-was-up-{nonce}"
    host.run("systemctl stop lab-test-log-host 2>/dev/null; rm -f /root/log-host.received")
    # Logged while nothing listens: it waits in rsyslog's queue.
    host.run_expect([0], f"logger -t opspack-lab-test {down}")
    host.run("sleep 3")
    script = LOG_HOST.format(port=given["baseline_log_shipping_port"])
    host.run_expect([0], "systemd-run --unit lab-test-log-host --property=RuntimeMaxSec=180 --collect "
                         f"/usr/bin/python3 -c {shlex.quote(script)}")
    try:
        host.run_expect([0], f"logger -t opspack-lab-test {up}")
        received = _received(host, down, up)
        assert down in received and up in received, received[-2000:]
        # RFC 5424 lines, each naming the host and the program that logged.
        line = next(line for line in received.splitlines() if down in line)
        assert line.startswith("<") and " opspack-lab-test " in line, line
    finally:
        host.run("systemctl stop lab-test-log-host; rm -f /root/log-host.received")


def test_only_root_runs_the_compilers(host):
    # build-essential (app_runtime) brings gcc, g++ and as: the plain names are links to the real files.
    compilers = {name: host.check_output(f"readlink -f $(command -v {name})") for name in ("gcc", "g++", "cc", "as")}
    overrides = host.check_output("dpkg-statoverride --list").splitlines()
    for name, path in compilers.items():
        real = host.file(path)
        assert (real.user, real.group, real.mode) == ("root", "root", 0o750), (name, path)
        assert f"root root 750 {path}" in overrides, (name, path)  # kept across package upgrades
    # A service's user cannot build a program; root (a release's pip builds) still can.
    refused = host.run("runuser -u nobody -- gcc --version")
    assert refused.rc != 0 and "failed to execute gcc: Permission denied" in refused.stderr, refused.stderr
    host.run_expect([0], "printf 'int main(void) { return 0; }\\n' | gcc -x c -o /root/compiler-test - && /root/compiler-test")
    host.run("rm -f /root/compiler-test")
    # Opened by hand: the verification names the control.
    host.run_expect([0], f"chmod 0755 {compilers['gcc']}")
    try:
        line = _hardening_line(host)
        assert "status=fail" in line and "names=compilers" in line, line
    finally:
        host.run_expect([0], f"chmod 0750 {compilers['gcc']}")
    assert "status=ok" in _hardening_line(host)


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
