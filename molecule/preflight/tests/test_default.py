"""testinfra checks of the harness scenario, run over SSH on each lab host."""


def test_host_is_a_systemd_debian_12_vps(host):
    assert host.system_info.distribution == "debian"
    assert host.system_info.release.startswith("12")
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
