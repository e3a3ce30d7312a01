"""`opspack lab` end to end: real containers, real sshd, real Ansible over SSH."""

import os
import shutil
import sys
import socket
import subprocess
from pathlib import Path

from conftest import BASE_PORT, ROOT, containers_of, opspack, read_state

from opspack import lab


def ansible(inventory: Path, *args):
    return subprocess.run(["ansible", "all", "-i", str(inventory), *args], capture_output=True, text=True,
                          check=False, cwd=ROOT, env=dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg")))


def test_up_gives_ssh_reachable_systemd_hosts_and_down_removes_them(lab_name, lab_dir):
    up = opspack("lab", "up", "--name", lab_name, "--dir", str(lab_dir), "--hosts", "2", "--base-port", str(BASE_PORT))
    assert up.returncode == 0, up.stderr
    inventory = lab_dir / "hosts.yml"
    assert inventory.exists() and (lab_dir / "known_hosts").exists()
    assert sorted(containers_of(lab_name)) == [f"opspack-{lab_name}-vps1", f"opspack-{lab_name}-vps2"]

    ping = ansible(inventory, "-m", "ansible.builtin.ping")
    assert ping.returncode == 0, ping.stdout + ping.stderr
    assert ping.stdout.count("SUCCESS") == 2
    system = ansible(inventory, "-m", "ansible.builtin.command", "-a", "systemctl is-system-running")
    assert system.returncode == 0, system.stdout + system.stderr
    assert system.stdout.count("running") == 2

    # Plain ssh with the generated key and the pinned host key, as an operator would.
    state = read_state(lab_dir)
    hostname = subprocess.run(
        ["ssh", "-i", state["key_file"], "-p", str(state["hosts"][1]["ssh_port"]), "-o", "BatchMode=yes",
         "-o", f"UserKnownHostsFile={state['known_hosts']}", "-o", "StrictHostKeyChecking=yes",
         "root@127.0.0.1", "hostname"], capture_output=True, text=True, check=False, timeout=30)
    assert hostname.stdout.strip() == "vps2", hostname.stderr

    status = opspack("lab", "status", "--name", lab_name, "--dir", str(lab_dir))
    assert status.returncode == 0, status.stdout + status.stderr
    assert status.stdout.count("answers") == 2

    again = opspack("lab", "up", "--name", lab_name, "--dir", str(lab_dir), "--hosts", "2", "--base-port", str(BASE_PORT))
    assert again.returncode == 0 and "already up" in again.stderr

    down = opspack("lab", "down", "--name", lab_name, "--dir", str(lab_dir))
    assert down.returncode == 0, down.stderr
    assert containers_of(lab_name) == []
    assert not inventory.exists()
    assert subprocess.run(["docker", "image", "inspect", lab.image_ref()], capture_output=True, check=False).returncode == 0

    gone = opspack("lab", "status", "--name", lab_name, "--dir", str(lab_dir))
    assert gone.returncode == 1 and "is not up" in gone.stdout


def test_zero_hosts_is_refused_with_one_line(lab_name, lab_dir):
    result = opspack("lab", "up", "--name", lab_name, "--dir", str(lab_dir), "--hosts", "0")
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("opspack: error: --hosts")
    assert containers_of(lab_name) == []
    assert not lab_dir.exists()


def test_a_taken_port_is_refused_and_nothing_starts(lab_name, lab_dir):
    # The second host's SSH port is taken: not even the first host may start.
    taken = lab.host_ports(BASE_PORT + 100, 2).ssh
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", taken))
        squatter.listen()
        result = opspack("lab", "up", "--name", lab_name, "--dir", str(lab_dir), "--hosts", "2",
                         "--base-port", str(BASE_PORT + 100))
    assert result.returncode == 2
    assert result.stderr == f"opspack: error: port(s) {taken} on 127.0.0.1 already in use: free them or choose other ports with --base-port\n"
    assert containers_of(lab_name) == []
    assert not (lab_dir / "hosts.yml").exists()


def test_no_engine_and_not_root_says_what_to_do(lab_name, lab_dir, tmp_path):
    # A real unprivileged user: it cannot reach the engine's socket, and opspack must not try
    # to install or start one. The system Python runs the package straight from src/.
    python = shutil.which("python3", path="/usr/bin:/bin")
    result = subprocess.run(
        ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", python, "-m", "opspack.cli",
         "lab", "up", "--name", lab_name, "--dir", str(tmp_path / "nobody-lab"), "--hosts", "1"],
        capture_output=True, text=True, check=False, cwd="/",
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT / "src"), "HOME": "/nonexistent"},
    )
    assert result.returncode == 1, result.stderr
    assert result.stderr.count("\n") == 1
    assert "no Docker engine answers" in result.stderr and "start Docker yourself" in result.stderr
    assert containers_of(lab_name) == []


def test_a_lab_with_a_stopped_host_is_not_reused(lab_name, lab_dir):
    up = opspack("lab", "up", "--name", lab_name, "--dir", str(lab_dir), "--hosts", "1", "--base-port", str(BASE_PORT + 200))
    assert up.returncode == 0, up.stderr
    subprocess.run(["docker", "stop", "--time", "5", f"opspack-{lab_name}-vps1"], check=True, capture_output=True)
    again = opspack("lab", "up", "--name", lab_name, "--dir", str(lab_dir), "--hosts", "1", "--base-port", str(BASE_PORT + 200))
    assert again.returncode == 1
    assert f"has stopped hosts (opspack-{lab_name}-vps1)" in again.stderr
    status = opspack("lab", "status", "--name", lab_name, "--dir", str(lab_dir))
    assert status.returncode == 1 and "exited" in status.stdout
    assert opspack("lab", "down", "--name", lab_name, "--dir", str(lab_dir)).returncode == 0
    assert containers_of(lab_name) == []


def test_down_without_an_engine_clears_stale_state(lab_dir):
    # Molecule's first step is a destroy, on a machine whose engine may not run yet.
    lab_dir.mkdir(parents=True)
    (lab_dir / "hosts.yml").write_text("stale\n")
    result = subprocess.run(
        [sys.executable, "-m", "opspack.cli", "lab", "down", "--name", "nothing", "--dir", str(lab_dir)],
        capture_output=True, text=True, check=False, cwd=ROOT,
        env=dict(os.environ, DOCKER_HOST="unix:///nonexistent/docker.sock"),
    )
    assert result.returncode == 0, result.stderr
    assert not (lab_dir / "hosts.yml").exists()
