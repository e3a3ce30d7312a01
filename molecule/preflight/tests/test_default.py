"""testinfra checks of the harness scenario, run over SSH on each lab host; and preflight's
refusals of a plan the host cannot carry out, proven on fresh hosts (root login still on,
nothing changed)."""

import testinfra

from opspack.testing import targets
from opspack.testing.scenario import INVENTORY, playbook


def test_host_is_a_systemd_vps_of_a_supported_target(host):
    name = targets.name_of(host)
    assert targets.of(host)["target_name"] == name
    assert host.run("systemctl is-system-running").stdout.strip() == "running"


def test_sshd_runs_and_listens(host):
    assert host.service("ssh").is_running
    assert host.socket("tcp://0.0.0.0:22").is_listening


def test_host_is_marked_managed(host):
    marker = host.file("/etc/opspack/managed-by")
    assert marker.exists
    assert marker.user == "root"
    assert marker.mode == 0o644
    assert marker.content_string == "opspack.platform\n"


def test_hosts_have_their_own_identity(host):
    # Host keys and machine-id are made at first boot, never shared through the image.
    assert host.file("/etc/ssh/ssh_host_ed25519_key").exists
    assert len(host.file("/etc/machine-id").content_string.strip()) == 32


def untouched(host) -> None:
    """What provisioning's first changes would have left: none of it is there."""
    assert host.user("root").exists and host.run("true").rc == 0  # testinfra comes in as root: root login is on
    assert not host.package("nginx").is_installed and not host.package("pgbackrest").is_installed
    assert not host.user("ops").exists
    assert not host.file("/etc/ssh/sshd_config.d/00-opspack.conf").exists


def lab_host(name: str):
    """One host of the scenario as root (these tests run once, not once per host)."""
    return testinfra.get_host(f"ansible://{name}?ansible_inventory={INVENTORY}")


def test_a_pin_without_a_candidate_is_refused_before_anything_changes():
    vps1 = lab_host("vps1")
    ran = playbook("provision", "--limit", "vps1", "-e", "pgbackrest_version=9.9.9", site=None)
    out = ran.stdout + ran.stderr
    assert ran.returncode != 0
    assert "cannot install what provisioning needs: pgbackrest: no version 9.9.9-* in this host's apt sources" in out, out[-3000:]
    untouched(vps1)


def test_another_postgresql_major_already_installed_is_refused():
    vps2 = lab_host("vps2")
    ours = targets.of(vps2)["target_postgresql_version"]
    assert vps2.run(f"DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql-{ours}").rc == 0
    try:
        ran = playbook("provision", "--limit", "vps2", "-e", "postgresql_version=99", site=None)
        out = ran.stdout + ran.stderr
        assert ran.returncode != 0
        assert (f"already has PostgreSQL {ours} installed; this run would set up PostgreSQL 99" in out
                and f'postgresql_version: "{ours}"' in out), out[-3000:]
        untouched(vps2)
    finally:
        vps2.run(f"DEBIAN_FRONTEND=noninteractive apt-get purge -y -qq postgresql-{ours} postgresql-common && apt-get autoremove -y -qq")
