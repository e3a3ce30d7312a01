"""Unit tests of the lab's logic: no Docker engine needed."""

import socket
import subprocess
import sys
import threading

import pytest
import yaml

from opspack import lab


def test_ports_are_blocks_of_ten_per_host():
    assert lab.host_ports(22000, 1) == lab.HostPorts(ssh=22000, http=22001, https=22002)
    assert lab.host_ports(22000, 3) == lab.HostPorts(ssh=22020, http=22021, https=22022)


@pytest.mark.parametrize(
    ("name", "hosts", "base_port", "fragment"),
    [
        ("lab", 0, 22000, "--hosts must be between 1 and 20"),
        ("lab", 21, 22000, "--hosts must be between 1 and 20"),
        ("lab", 2, 80, "--base-port 80"),
        ("lab", 2, 65530, "--base-port 65530"),
        ("Bad_Name", 1, 22000, "lab name 'Bad_Name' is not valid"),
    ],
)
def test_bad_requests_are_refused_with_exit_code_2(name, hosts, base_port, fragment):
    with pytest.raises(lab.LabError) as raised:
        lab.validate_request(name, hosts, base_port)
    assert fragment in str(raised.value)
    assert raised.value.exit_code == 2
    assert "\n" not in str(raised.value)


def test_good_request_passes():
    lab.validate_request("mol-provision", 20, 22000)


def test_recipe_hash_is_stable_and_names_the_image():
    assert lab.recipe_hash() == lab.recipe_hash()
    assert lab.image_ref() == f"opspack/lab-vps:bookworm-{lab.recipe_hash()}"


def test_recipe_hash_changes_with_the_recipe(monkeypatch):
    before = lab.recipe_hash()
    monkeypatch.setattr(lab, "PACKAGES", lab.PACKAGES + ("curl",))
    assert lab.recipe_hash() != before


def test_listening_port_is_taken_and_time_wait_is_not():
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        assert lab.port_in_use(port)
        assert lab.taken_ports([port]) == [port]
    assert not lab.port_in_use(port)


def test_taken_ports_keeps_order():
    assert lab.taken_ports([1, 2, 3], in_use=lambda port: port != 2) == [1, 3]


def test_mirror_is_read_from_deb822_sources(tmp_path):
    (tmp_path / "sources.list.d").mkdir()
    (tmp_path / "sources.list.d/debian.sources").write_text(
        "Types: deb\n# a comment: with colon\nURIs: http://mirror.test/debian\nSuites: bookworm bookworm-updates\n"
        "Components: main\n\nTypes: deb\nURIs: http://mirror.test/security\nSuites: bookworm-security\n"
    )
    uri, path = lab.find_apt_sources(tmp_path)
    assert uri == "http://mirror.test/debian"
    assert path.name == "debian.sources"


def test_mirror_is_read_from_classic_sources_list(tmp_path):
    (tmp_path / "sources.list").write_text(
        "# deb http://old.test/debian buster main\ndeb [arch=amd64] http://mirror.test/debian bookworm main\n"
    )
    assert lab.find_apt_sources(tmp_path) == ("http://mirror.test/debian", tmp_path / "sources.list")


def test_no_mirror_is_a_clear_error(tmp_path):
    with pytest.raises(lab.LabError, match="no Debian bookworm mirror"):
        lab.find_apt_sources(tmp_path)


def test_inventory_pins_host_keys_and_uses_the_lab_key(tmp_path):
    hosts = [lab.LabHost(name, f"opspack-lab-{name}", lab.host_ports(22000, index))
             for index, name in enumerate(lab.host_names(2), start=1)]
    text = lab.render_inventory("lab", hosts, tmp_path / "id_ed25519", tmp_path / "known_hosts", tmp_path)
    inventory = yaml.safe_load(text)
    group = inventory["all"]["children"]["lab"]
    assert group["hosts"]["vps2"] == {
        "ansible_host": "127.0.0.1", "ansible_port": 22010,
        "opspack_lab_http_port": 22011, "opspack_lab_https_port": 22012,
    }
    assert group["vars"]["ansible_ssh_private_key_file"] == str(tmp_path / "id_ed25519")
    assert "StrictHostKeyChecking=yes" in group["vars"]["ansible_ssh_common_args"]
    assert f"UserKnownHostsFile={tmp_path / 'known_hosts'}" in group["vars"]["ansible_ssh_common_args"]


def _serve_once(payload: bytes) -> int:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()

    def answer():
        connection, _ = server.accept()
        connection.sendall(payload)
        connection.close()
        server.close()

    threading.Thread(target=answer, daemon=True).start()
    return server.getsockname()[1]


def test_ssh_greeting_needs_an_ssh_banner():
    assert lab.ssh_greets(_serve_once(b"SSH-2.0-OpenSSH_9.2\r\n"))
    # Docker's port proxy accepts and closes before sshd listens: not ready.
    assert not lab.ssh_greets(_serve_once(b""))


def test_write_atomically_replaces_whole_file(tmp_path):
    target = tmp_path / "sub/hosts.yml"
    lab.write_atomically(target, "one\n")
    lab.write_atomically(target, "two\n")
    assert target.read_text() == "two\n"
    assert [path.name for path in target.parent.iterdir()] == ["hosts.yml"]


def test_cli_refuses_zero_hosts_with_one_line():
    result = subprocess.run([sys.executable, "-m", "opspack.cli", "lab", "up", "--hosts", "0"],
                            capture_output=True, text=True, check=False)
    assert result.returncode == 2
    assert result.stderr == "opspack: error: --hosts must be between 1 and 20 (got 0)\n"


def test_snapshot_control_files_must_be_name_equals_path(capsys):
    from opspack import cli
    code = cli.main(["lab", "snapshot", "--name", "lab", "--dir", "/nonexistent", "--to", "/nonexistent/snap",
                     "--key", "pabc", "--control", "no-equals-sign"])
    assert code == 2 and "give NAME=PATH" in capsys.readouterr().err


def test_a_snapshot_key_is_checked_before_any_host_is_touched(tmp_path):
    with pytest.raises(lab.LabError, match="snapshot key 'Bad Key!' is not valid") as raised:
        lab.Lab("lab", tmp_path, print).snapshot(tmp_path / "snap", "Bad Key!")
    assert raised.value.exit_code == 2
