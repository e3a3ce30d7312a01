"""testinfra checks of the base role (opspack.platform.base), run over SSH on each host.

Expected values are the role's defaults overlaid with the inventory's variables, so the
checks follow whatever the inventory asked for.
"""

import re
from pathlib import Path

import pytest
import yaml

from opspack.testing import targets

DEFAULTS = Path(__file__).resolve().parents[3] / "roles" / "base" / "defaults" / "main.yml"


@pytest.fixture(scope="module")
def base_vars(host):
    values = yaml.safe_load(DEFAULTS.read_text())
    # Defaults the host's target gives (base_packages: "{{ target_packages.base_tools }}").
    target = targets.of(host)
    for name, value in values.items():
        found = re.fullmatch(r"\{\{ (target_\w+)(?:\.(\w+))? \}\}", str(value))
        if found:
            values[name] = target[found.group(1)][found.group(2)] if found.group(2) else target[found.group(1)]
    inventory = host.ansible.get_variables()
    values.update({k: v for k, v in inventory.items() if k.startswith("base_")})
    if "{{" in str(values["base_hostname"]):
        values["base_hostname"] = inventory["inventory_hostname"]
    return values


@pytest.fixture(scope="module")
def in_container(host):
    # The same question systemd asks for ConditionVirtualization=!container.
    return host.run("systemd-detect-virt --container").rc == 0


def _size_mib(text):
    number, unit = re.fullmatch(r"([0-9.]+)([KMGT]?)", text).groups()
    return float(number) * {"K": 1 / 1024, "": 1 / 1024**2, "M": 1, "G": 1024, "T": 1024**2}[unit]


def test_hostname(host, base_vars, in_container):
    name = host.check_output("hostname")
    if in_container and name != base_vars["base_hostname"]:
        pytest.skip(f"container runtime names this host {name}; the role leaves it")
    assert name == base_vars["base_hostname"]
    # The host resolves its own name (sudo, mail, many daemons need it).
    assert host.run("getent hosts %s", name).rc == 0


def test_timezone_is_utc(host, base_vars):
    assert host.check_output("date +%Z") == "UTC"
    assert host.check_output("timedatectl show --property=Timezone --value") == base_vars["base_timezone"]


def test_locale_is_generated_and_default(host, base_vars):
    wanted = base_vars["base_locale"]
    generated = host.check_output("locale -a").split()
    assert wanted.replace("UTF-8", "utf8") in generated
    assert f"LANG={wanted}" in host.check_output("localectl status")
    # A login session gets it, without "cannot set LC_ALL" complaints.
    run = host.run("env -i bash -lc 'set -a; . /etc/default/locale; locale charmap'")
    assert run.rc == 0 and run.stdout.strip() == "UTF-8" and run.stderr == ""


def test_essential_packages_installed(host, base_vars):
    for name in base_vars["base_packages"] + base_vars["base_packages_extra"] + [
        "locales",
        "logrotate",
        "systemd-timesyncd",
        "unattended-upgrades",
    ]:
        assert host.package(name).is_installed, name
    assert host.run("setfacl --version").rc == 0
    assert host.run("python3 -c 'import apt_pkg'").rc == 0


def test_unattended_upgrades_enabled_for_security(host, base_vars):
    dump = host.check_output("apt-config dump")
    assert 'APT::Periodic::Unattended-Upgrade "1";' in dump
    assert 'APT::Periodic::Update-Package-Lists "1";' in dump
    patterns = re.findall(r'^Unattended-Upgrade::Origins-Pattern:: "(.*)";$', dump, re.M)
    assert patterns == base_vars["base_unattended_upgrades_origins"]
    for timer in ("apt-daily.timer", "apt-daily-upgrade.timer"):
        assert host.service(timer).is_enabled and host.service(timer).is_running, timer
    assert host.service("unattended-upgrades").is_enabled
    assert host.service("unattended-upgrades").is_running
    # unattended-upgrade itself reads the configuration the way the daily run will.
    run = host.run("unattended-upgrade --dry-run --debug")
    assert run.rc == 0, run.stderr
    allowed = re.search(r"^Allowed origins are: (.*)$", run.stdout + run.stderr, re.M)
    # The configured patterns with the host's codename filled in: the security archive only.
    codename = targets.os_release(host)["VERSION_CODENAME"]
    assert allowed and allowed.group(1).split(", ") == [
        pattern.replace("${distro_codename}", codename) for pattern in base_vars["base_unattended_upgrades_origins"]]
    assert all("security" in pattern.lower() for pattern in allowed.group(1).split(", "))


def test_journald_retention_is_effective(host):
    dropin = "/etc/systemd/journald.conf.d/50-opspack.conf"
    # The values come from the host's drop-in, whatever the inventory chose.
    settings = dict(
        line.split("=", 1) for line in host.file(dropin).content_string.splitlines() if "=" in line
    )
    assert re.fullmatch(r"[0-9.]+[KMGT]?", settings["SystemMaxUse"])
    assert settings["MaxRetentionSec"]
    # The drop-in is read, and no file read after it (a packaged syslog.conf on Debian 13) sets
    # what it sets: the last value of each of its settings is its own.
    config = host.check_output("systemd-analyze cat-config systemd/journald.conf")
    assert host.file(dropin).content_string.rstrip() in config
    effective = dict(line.split("=", 1) for line in config.splitlines() if "=" in line and not line.startswith("#"))
    assert {key: effective[key] for key in settings} == settings
    assert host.service("systemd-journald").is_running
    # journald reports the limit it actually applies each time it (re)starts.
    lines = host.check_output(
        "journalctl --unit=systemd-journald --output=cat --grep='^System Journal' --no-pager"
    ).splitlines()
    applied = re.search(r"max ([0-9.]+[KMGT]?),", lines[-1]).group(1)
    assert _size_mib(applied) <= _size_mib(settings["SystemMaxUse"])


def test_time_sync_enabled(host, in_container):
    timesyncd = host.service("systemd-timesyncd")
    assert timesyncd.is_enabled
    if in_container:
        # systemd declines to start it (ConditionVirtualization=!container): the host's
        # kernel keeps the clock. Anything else than a failed condition is a fault.
        assert not timesyncd.is_running
        assert host.check_output("systemctl show --property=ConditionResult --value systemd-timesyncd") == "no"
        assert host.check_output("systemctl show --property=Result --value systemd-timesyncd") == "success"
    else:
        assert timesyncd.is_running


def test_logrotate_runs_daily(host):
    assert host.service("logrotate.timer").is_enabled
    assert host.service("logrotate.timer").is_running
    assert host.run("logrotate --debug /etc/logrotate.conf").rc == 0


def test_swap_on_small_hosts(host, base_vars, in_container):
    memory_mb = int(host.check_output("free --mebi | awk '/^Mem:/ {print $2}'"))
    if memory_mb >= base_vars["base_swap_when_memory_below_mb"]:
        pytest.skip(f"{memory_mb} MiB of memory: no swap file wanted")
    if in_container:
        pytest.skip("container: swapon is not permitted, swap is the host's business")
    swap_file = base_vars["base_swap_file"]
    assert swap_file in host.check_output("swapon --show=NAME --noheadings").split()
    assert host.file(swap_file).mode == 0o600
    assert re.search(rf"^{re.escape(swap_file)}\s+none\s+swap\s", host.file("/etc/fstab").content_string, re.M)
