"""The provisioned-host snapshot end to end: hosts started from it are provisioned (the operator
logs in with sudo, the site's services run) and each has its own SSH host keys and machine-id,
even two labs started from the one snapshot at once."""

import subprocess

from conftest import BASE_PORT, containers_of, opspack, read_state

from opspack.testing import snapshot

PORT = BASE_PORT + 400


def identity(container: str) -> tuple[str, str]:
    def read(path):
        return subprocess.run(["docker", "exec", container, "cat", path], capture_output=True, text=True,
                              check=True).stdout.strip()
    return read("/etc/machine-id"), read("/etc/ssh/ssh_host_ed25519_key.pub").split()[1]


def test_hosts_from_one_snapshot_are_provisioned_and_each_has_its_own_identity(engine, tmp_path):
    directory = snapshot.ensure(1)
    started = []
    try:
        identities = []
        for index in (1, 2):
            name, lab_dir = f"pytest-snapshot-{index}", tmp_path / f"lab{index}"
            started.append((name, lab_dir))
            up = opspack("lab", "up", "--name", name, "--dir", str(lab_dir), "--hosts", "1",
                         "--base-port", str(PORT + 10 * index), "--snapshot", str(directory))
            assert up.returncode == 0, up.stderr
            state = read_state(lab_dir)
            assert state["snapshot"] == snapshot.key()
            container = containers_of(name)[0]
            identities.append(identity(container))
            # Provisioned: root login is off, the operator comes in with the lab key, the site runs.
            ssh = ["ssh", "-i", state["key_file"], "-p", str(state["hosts"][0]["ssh_port"]), "-o", "BatchMode=yes",
                   "-o", f"UserKnownHostsFile={state['known_hosts']}", "-o", "StrictHostKeyChecking=yes"]
            services = subprocess.run([*ssh, "ops@127.0.0.1", "sudo sh -c 'systemctl is-active postgresql@$(ls /etc/postgresql)-main nginx redis-server'"],
                                      capture_output=True, text=True, check=False, timeout=60)
            assert services.stdout.split() == ["active"] * 3, services.stdout + services.stderr
            as_root = subprocess.run([*ssh, "root@127.0.0.1", "true"], capture_output=True, text=True, check=False, timeout=60)
            assert as_root.returncode != 0, "root login is off on a provisioned host"
        (first_id, first_key), (second_id, second_key) = identities
        assert len(first_id) == 32 and first_id != second_id, "each host makes its own machine-id"
        assert first_key != second_key, "each host makes its own SSH host keys"
    finally:
        for name, lab_dir in started:
            opspack("lab", "down", "--name", name, "--dir", str(lab_dir))
    assert not any(containers_of(name) for name, _ in started)
    assert snapshot.usable(directory, 1), "taking a lab down keeps the snapshot (its images are still there)"
