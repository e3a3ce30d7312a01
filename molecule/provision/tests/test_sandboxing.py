"""Every service opspack installs runs sandboxed: `systemd-analyze security` rates its exposure
"OK" or better (below 5.0 of 10), read on the host from the units as installed.

In a lab container the seccomp filters, the capability bounding sets and NoNewPrivileges are
enforced; the file system namespaces (ProtectSystem, ProtectHome, PrivateTmp, PrivateDevices) are
loaded but cannot be set up without CAP_SYS_ADMIN, so they are proven on a VM. The services' own
runs are proven where they are used: the health check here, the backups in the backups scenario,
pgBackRest in operate and verify, the file integrity check in test_baseline.
"""

import re

# systemd-analyze's ratings: below 5.0 is "OK", below 1.0 "SAFE".
EXPOSURE_OK_BELOW = 5.0


def _opspack_services(host) -> list[str]:
    """The services opspack installed, a template as one of its instances (a site's slot)."""
    listed = host.check_output("systemctl list-unit-files --no-legend --type=service 'opspack-*'")
    slot = host.ansible.get_variables().get("app_runtime_slots", ["blue"])[0]
    return sorted(line.split()[0].replace("@.service", f"@{slot}.service") for line in listed.splitlines())


def test_every_opspack_service_is_rated_ok_or_better_by_systemd(host):
    services = _opspack_services(host)
    for expected in ("opspack-health.service", "opspack-backup.service", "opspack-file-integrity.service"):
        assert expected in services, services
    assert any(name.startswith("opspack-pgbackrest-") for name in services), services
    assert any("-web@" in name for name in services), services
    exposure = {}
    for name in services:
        out = host.check_output(f"systemd-analyze security --no-pager {name}")
        exposure[name] = float(re.search(r"Overall exposure level for \S+: (\d+\.\d+)", out).group(1))
    assert all(level < EXPOSURE_OK_BELOW for level in exposure.values()), exposure


def test_the_sandboxed_health_check_still_checks(host):
    """Its run as the timer starts it: psql as postgres through runuser, Redis, the node exporter,
    the logs. It exits 2 on an unhealthy finding (a lab site with no release answers 502): that is
    a check that ran; a check the sandbox stopped would be an error."""
    since = host.check_output("date '+%Y-%m-%d %H:%M:%S'")
    host.run("timeout 600 systemctl start opspack-health.service")
    assert host.check_output("systemctl show --property=ExecMainStatus --value opspack-health.service") in ("0", "2")
    report = host.check_output(f"journalctl --unit=opspack-health.service --since='{since}' --no-pager --output=cat")
    summary = re.search(r"^ops_daily status=\S+ .* errors=(\d+) ", report, re.M)
    assert summary and summary.group(1) == "0", report[-3000:]
    assert "check=db_connections status=ok" in report and "check=redis_memory status=ok" in report, report[-3000:]
    # Leave no failed unit behind (a failed unit marks the system degraded).
    host.run("systemctl reset-failed opspack-health.service")
