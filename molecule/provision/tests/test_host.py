"""The host as a whole after provisioning: every unit healthy, nothing exposed but SSH and web."""

import re

from opspack.testing import targets

EXPOSED_PORTS_ALLOWED = {22, 80, 443}


def test_every_service_is_active(host):
    assert host.run("systemctl is-system-running").stdout.strip() == "running"
    failed = host.run("systemctl --failed --plain --no-legend").stdout.strip()
    assert failed == ""
    # A socket-activated sshd (Ubuntu) is started at boot by its socket, not enabled itself.
    ssh = "ssh.socket" if targets.of(host)["target_ssh_socket_activated"] else "ssh"
    for unit in (ssh, "nftables", "fail2ban", targets.postgresql_unit(host), "redis-server", "nginx",
                 "prometheus-node-exporter", "unattended-upgrades"):
        assert host.service(unit).is_running, unit
        assert host.service(unit).is_enabled, unit
    assert host.service("ssh").is_running


def test_nothing_but_ssh_and_web_listens_beyond_loopback(host):
    exposed = set()
    for line in host.run("ss -Htuln").stdout.splitlines():
        local = line.split()[4]
        address, port = local.rsplit(":", 1)
        address = address.strip("[]").split("%")[0]
        if re.fullmatch(r"127(\.\d+){3}|::1", address):
            continue
        exposed.add(int(port))
    assert exposed <= EXPOSED_PORTS_ALLOWED, exposed - EXPOSED_PORTS_ALLOWED
    assert {22, 80, 443} <= exposed
