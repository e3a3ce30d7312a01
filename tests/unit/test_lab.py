"""Unit tests of the lab's logic: no Docker engine needed."""

import json
import socket
import subprocess
import sys
import threading
from pathlib import Path

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
        ("l" * 49, 1, 22000, "use 1-48 lowercase letters"),
    ],
)
def test_bad_requests_are_refused_with_exit_code_2(name, hosts, base_port, fragment):
    with pytest.raises(lab.LabError) as raised:
        lab.validate_request(name, hosts, base_port)
    assert fragment in str(raised.value)
    assert raised.value.exit_code == 2
    assert "\n" not in str(raised.value)


def test_every_scenarios_lab_name_is_valid():
    for scenario in (lab_root := Path(__file__).resolve().parents[2] / "molecule").glob("*/molecule.yml"):
        lab.validate_request(f"mol-{scenario.parent.name}", 2, 22000)
    assert lab_root.is_dir()


def test_good_request_passes():
    lab.validate_request("mol-provision", 20, 22000)


def test_recipe_hash_is_stable_and_names_the_image():
    assert lab.recipe_hash("debian12") == lab.recipe_hash("debian12")
    assert lab.image_ref("debian12") == f"opspack/lab-vps:debian12-{lab.recipe_hash('debian12')}"
    # The default target is what a new VPS gets today.
    assert lab.DEFAULT_TARGET == "debian13"
    assert lab.image_ref() == f"opspack/lab-vps:debian13-{lab.recipe_hash('debian13')}"


def test_recipe_hash_differs_per_target():
    hashes = {name: lab.recipe_hash(name) for name in lab.TARGETS}
    assert len(set(hashes.values())) == len(lab.TARGETS) >= 2


def test_recipe_hash_covers_a_targets_suite_and_drop_ins(monkeypatch):
    before = lab.recipe_hash("debian13")
    target = lab.TARGETS["debian13"]
    monkeypatch.setitem(lab.TARGETS, "debian13", lab.dataclasses.replace(target, dropins=()))
    assert lab.recipe_hash("debian13") != before
    monkeypatch.setitem(lab.TARGETS, "debian13", lab.dataclasses.replace(target, suite="forky"))
    assert lab.recipe_hash("debian13") != before


def test_recipe_hash_changes_with_the_recipe(monkeypatch):
    before = lab.recipe_hash()
    monkeypatch.setattr(lab, "PACKAGES", lab.PACKAGES + ("curl",))
    assert lab.recipe_hash() != before


@pytest.mark.parametrize("target", ["debian13", "ubuntu2404"])
def test_systemd_255_targets_carry_the_seccomp_drop_in_and_ssh_and_cron_opt_out(target):
    assert lab.TARGETS["debian12"].dropins == ()
    files = dict(lab.TARGETS[target].dropins)
    lines = files["etc/systemd/system/service.d/20-lab-seccomp.conf"].splitlines()
    assert lines[lines.index("[Service]"):] == ["[Service]", "SystemCallFilter=~capset", "SystemCallErrorNumber=EPERM"]
    # Same file name in the unit's own directory: it replaces the global one there.
    for unit in ("ssh.service", "cron.service", "dbus.service"):
        opt_out = files[f"etc/systemd/system/{unit}.d/20-lab-seccomp.conf"]
        assert "[Service]" in opt_out and "SystemCallFilter" not in opt_out


@pytest.mark.parametrize("name", ["ubuntu2204", "bookworm", "", "Debian13"])
def test_an_unknown_os_is_refused_in_one_line_listing_the_targets(name):
    with pytest.raises(lab.LabError) as raised:
        lab.resolve_target(name)
    assert str(raised.value) == f"--os {name!r} is not a lab target: choose one of debian12, debian13, ubuntu2404"
    assert raised.value.exit_code == 2


def test_cli_refuses_an_unknown_os_before_touching_docker(tmp_path):
    result = subprocess.run([sys.executable, "-m", "opspack.cli", "lab", "up", "--os", "ubuntu2204", "--dir", str(tmp_path / "lab")],
                            capture_output=True, text=True, check=False)
    assert result.returncode == 2
    assert result.stderr == ("opspack: error: --os 'ubuntu2204' is not a lab target: choose one of debian12, debian13, "
                             "ubuntu2404\n")
    assert not (tmp_path / "lab").exists()


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


DEB822 = (
    "Types: deb\n# http://mirror.test/archive/debian/20250520T000000Z bookworm\nURIs: http://mirror.test/debian\n"
    "Suites: bookworm bookworm-updates\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n"
    "\n"
    "Types: deb\nURIs: http://mirror.test/debian-security\nSuites: bookworm-security\nComponents: main\n"
    "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n"
)
ONE_LINE = (
    "# deb http://old.test/debian bookworm main\n"
    "deb [arch=amd64 signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://mirror.test/debian bookworm main contrib\n"
    "deb http://mirror.test/debian bookworm-updates main\n"
    "deb-src http://mirror.test/debian bookworm main\n"
    "deb http://mirror.test/debian-security bookworm-security main\n"
    "deb http://vendor.test/apt stable main\n"
)


def _etc_apt(tmp_path, deb822=None, one_line=None):
    if deb822 is not None:
        (tmp_path / "sources.list.d").mkdir()
        (tmp_path / "sources.list.d/debian.sources").write_text(deb822)
    if one_line is not None:
        (tmp_path / "sources.list").write_text(one_line)
    return tmp_path


def test_mirror_is_read_from_deb822_sources(tmp_path):
    uri, path, suite = lab.find_apt_sources(_etc_apt(tmp_path, deb822=DEB822), "bookworm")
    assert (uri, path.name, suite) == ("http://mirror.test/debian", "debian.sources", "bookworm")


def test_mirror_is_read_from_classic_sources_list(tmp_path):
    etc_apt = _etc_apt(tmp_path, one_line=ONE_LINE)
    assert lab.find_apt_sources(etc_apt, "bookworm") == ("http://mirror.test/debian", tmp_path / "sources.list", "bookworm")


def test_another_suite_is_found_for_a_target_the_machine_does_not_run(tmp_path):
    # A Debian 12 machine building a Debian 13 image: its bookworm mirror is the one to use.
    uri, _, suite = lab.find_apt_sources(_etc_apt(tmp_path, deb822=DEB822), "trixie")
    assert (uri, suite) == ("http://mirror.test/debian", "bookworm")


def test_deb822_suites_are_renamed_and_nothing_else(tmp_path):
    text = lab.rewrite_suites(DEB822, "bookworm", "trixie")
    assert text == DEB822.replace("Suites: bookworm bookworm-updates", "Suites: trixie trixie-updates").replace(
        "Suites: bookworm-security", "Suites: trixie-security")
    # The comment that names bookworm is left alone.
    assert "20250520T000000Z bookworm\n" in text


def test_one_line_suites_are_renamed_and_nothing_else():
    assert lab.rewrite_suites(ONE_LINE, "bookworm", "trixie").splitlines() == [
        "# deb http://old.test/debian bookworm main",
        "deb [arch=amd64 signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://mirror.test/debian trixie main contrib",
        "deb http://mirror.test/debian trixie-updates main",
        "deb-src http://mirror.test/debian trixie main",
        "deb http://mirror.test/debian-security trixie-security main",
        "deb http://vendor.test/apt stable main",
    ]


def test_a_machine_naming_stable_gets_the_targets_codename(tmp_path, monkeypatch):
    monkeypatch.delenv(lab.MIRROR_ENV, raising=False)
    sources = "Types: deb\nURIs: http://mirror.test/debian\nSuites: stable stable-updates\nComponents: main\n"
    got = lab.apt_sources(lab.TARGETS["debian12"], etc_apt=_etc_apt(tmp_path, deb822=sources))
    assert "Suites: bookworm bookworm-updates\n" in got.text


def test_debian12_on_a_debian12_machine_copies_the_sources_file_unchanged(tmp_path, monkeypatch):
    monkeypatch.delenv(lab.MIRROR_ENV, raising=False)
    got = lab.apt_sources(lab.TARGETS["debian12"], etc_apt=_etc_apt(tmp_path, deb822=DEB822))
    assert got == lab.AptSources("http://mirror.test/debian", "sources.list.d/debian.sources", DEB822,
                                 str(tmp_path / "sources.list.d/debian.sources"))


def test_debian13_on_a_debian12_machine_gets_its_sources_with_trixie_suites(tmp_path, monkeypatch):
    monkeypatch.delenv(lab.MIRROR_ENV, raising=False)
    got = lab.apt_sources(lab.TARGETS["debian13"], etc_apt=_etc_apt(tmp_path, one_line=ONE_LINE))
    assert (got.mirror, got.path) == ("http://mirror.test/debian", "sources.list")
    assert got.text == lab.rewrite_suites(ONE_LINE, "bookworm", "trixie")
    assert "bookworm read as trixie" in got.origin


def test_a_mirror_setting_replaces_the_machines_sources(tmp_path, monkeypatch):
    monkeypatch.setenv(lab.MIRROR_ENV, "http://env.test/debian")
    from_env = lab.apt_sources(lab.TARGETS["debian13"], etc_apt=_etc_apt(tmp_path, deb822=DEB822))
    assert from_env.mirror == "http://env.test/debian" and from_env.origin == lab.MIRROR_ENV
    assert "URIs: http://env.test/debian\nSuites: trixie trixie-updates\n" in from_env.text
    # --mirror wins over the environment.
    given = lab.apt_sources(lab.TARGETS["debian12"], "https://option.test/debian", etc_apt=tmp_path)
    assert given.mirror == "https://option.test/debian" and given.origin == "--mirror"
    assert "Suites: bookworm bookworm-updates\n" in given.text


def test_a_mirror_that_is_no_url_is_refused(tmp_path):
    with pytest.raises(lab.LabError, match="is not an http\\(s\\) URL") as raised:
        lab.apt_sources(lab.TARGETS["debian13"], "mirror.test/debian", etc_apt=tmp_path)
    assert raised.value.exit_code == 2


def test_no_mirror_is_a_clear_one_line_error(tmp_path, monkeypatch):
    monkeypatch.delenv(lab.MIRROR_ENV, raising=False)
    with pytest.raises(lab.LabError) as raised:
        lab.apt_sources(lab.TARGETS["debian13"], etc_apt=tmp_path)
    message = str(raised.value)
    assert message.startswith("no Debian mirror found") and "set OPSPACK_LAB_MIRROR (or pass --mirror)" in message
    assert "\n" not in message


def test_an_ubuntu_target_without_a_mirror_setting_leaves_the_mirror_to_debootstrap(tmp_path, monkeypatch):
    monkeypatch.delenv("OPSPACK_LAB_UBUNTU_MIRROR", raising=False)
    # The machine's Debian mirror is never taken for Ubuntu's.
    assert lab.apt_sources(lab.TARGETS["ubuntu2404"], etc_apt=_etc_apt(tmp_path, deb822=DEB822)) is None
    rootfs = tmp_path / "rootfs"
    (rootfs / "etc/apt").mkdir(parents=True)
    (rootfs / "etc/apt/sources.list").write_text("deb http://ubuntu-mirror.test/ubuntu noble main universe\n")
    got = lab.sources_from_bootstrap(lab.TARGETS["ubuntu2404"], rootfs)
    assert (got.mirror, got.path) == ("http://ubuntu-mirror.test/ubuntu", "sources.list.d/ubuntu.sources")
    assert got.text.splitlines()[1:] == [
        "Types: deb", "URIs: http://ubuntu-mirror.test/ubuntu", "Suites: noble noble-updates noble-security",
        "Components: main universe", "Signed-By: /usr/share/keyrings/ubuntu-archive-keyring.gpg"]


def test_an_ubuntu_mirror_comes_from_its_own_setting(tmp_path, monkeypatch):
    monkeypatch.setenv(lab.MIRROR_ENV, "http://debian.test/debian")
    monkeypatch.setenv("OPSPACK_LAB_UBUNTU_MIRROR", "http://ubuntu.test/ubuntu")
    got = lab.apt_sources(lab.TARGETS["ubuntu2404"], etc_apt=tmp_path)
    assert got.mirror == "http://ubuntu.test/ubuntu" and got.origin == "OPSPACK_LAB_UBUNTU_MIRROR"
    with pytest.raises(lab.LabError, match="not an http\\(s\\) URL of a Ubuntu archive mirror \\(--mirror or OPSPACK_LAB_UBUNTU_MIRROR"):
        lab.apt_sources(lab.TARGETS["ubuntu2404"], "archive.test", etc_apt=tmp_path)


def test_debootstrap_naming_no_mirror_is_a_clear_error(tmp_path):
    with pytest.raises(lab.LabError, match="set OPSPACK_LAB_UBUNTU_MIRROR"):
        lab.sources_from_bootstrap(lab.TARGETS["ubuntu2404"], tmp_path)


@pytest.mark.parametrize("one_line", [True, False])
def test_the_bootstrap_tools_apt_reads_only_its_own_sources(tmp_path, one_line):
    name = "sources.list" if one_line else "debian.sources"
    options = lab.private_apt(tmp_path / "apt", tmp_path / name, "THE SOURCES\n")
    settings = dict(option.split("=", 1) for option in options if "=" in option)
    listed = Path(settings["Dir::Etc::SourceList"]).read_text()
    parts = {path.name: path.read_text() for path in Path(settings["Dir::Etc::SourceParts"]).iterdir()}
    assert (listed, parts) == (("THE SOURCES\n", {}) if one_line else ("", {name: "THE SOURCES\n"}))
    assert all(str(tmp_path) in settings[key] for key in ("Dir::State::Lists", "Dir::Cache"))


def test_a_vendor_repository_is_not_taken_for_the_debian_mirror(tmp_path):
    etc_apt = _etc_apt(tmp_path, one_line="deb http://vendor.test/apt nodistro main\n")
    with pytest.raises(lab.LabError, match="no Debian mirror found"):
        lab.find_apt_sources(etc_apt, "trixie")


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


def _planned(count=1):
    return [lab.LabHost(name, f"opspack-lab-{name}", lab.host_ports(22000, index))
            for index, name in enumerate(lab.host_names(count), start=1)]


def test_lab_json_records_the_target(tmp_path):
    state_dir = tmp_path / "lab"
    lab.Lab("lab", state_dir, print)._write_state(
        _planned(), ["ssh-ed25519 AAAA"], {"vps1": lab.image_ref("debian12")}, None, lab.TARGETS["debian12"])
    state = json.loads((state_dir / "lab.json").read_text())
    assert state["os"] == "debian12" and state["image"] == lab.image_ref("debian12")


@pytest.fixture
def no_docker(monkeypatch):
    """Lab methods without an engine: one running container per planned host of lab 'lab'."""
    monkeypatch.setattr(lab, "ensure_engine", lambda log, root: None)
    monkeypatch.setattr(lab, "engine_answers", lambda: True)
    monkeypatch.setattr(lab.Lab, "containers", lambda self: {"opspack-lab-vps1": "running"})
    monkeypatch.setattr(lab.Lab, "_system_state", lambda self, container: "running")
    monkeypatch.setattr(lab, "ssh_greets", lambda port: True)
    monkeypatch.setattr(lab, "run", lambda *args, **kwargs: pytest.fail(f"ran {args}"))


def _running_lab(tmp_path, os_target):
    running = lab.Lab("lab", tmp_path / "lab", print)
    running._write_state(_planned(), ["ssh-ed25519 AAAA"], {"vps1": lab.image_ref(os_target)}, None,
                         lab.TARGETS[os_target])
    return running


def test_a_running_lab_is_not_restarted_with_another_os(tmp_path, no_docker):
    running = _running_lab(tmp_path, "debian12")
    with pytest.raises(lab.LabError) as raised:
        running.up(1, 22000, os_target="debian13")
    assert str(raised.value) == ("lab 'lab' runs debian12, not debian13: run 'opspack lab down --name lab' first, "
                                 "then 'opspack lab up --os debian13'")
    # Without --os the default (debian13) is asked for: refused the same way.
    with pytest.raises(lab.LabError, match="runs debian12, not debian13"):
        running.up(1, 22000)
    # The same OS: the running lab is reused.
    assert [host.name for host in running.up(1, 22000, os_target="debian12")] == ["vps1"]


def test_a_lab_json_without_a_target_is_a_debian12_lab(tmp_path, no_docker):
    running = _running_lab(tmp_path, "debian12")
    state = json.loads(running.state_file.read_text())
    del state["os"]
    running.state_file.write_text(json.dumps(state))
    assert [host.name for host in running.up(1, 22000, os_target="debian12")] == ["vps1"]
    with pytest.raises(lab.LabError, match="runs debian12, not debian13"):
        running.up(1, 22000, os_target="debian13")


def test_status_shows_the_target(tmp_path, no_docker):
    healthy, text = _running_lab(tmp_path, "debian13").status()
    assert healthy
    assert text.splitlines()[0] == f"lab 'lab' (debian13, Debian 13 trixie): inventory {tmp_path / 'lab/hosts.yml'}"


def test_a_snapshot_gives_its_target_and_refuses_another(tmp_path, monkeypatch, no_docker):
    monkeypatch.setattr(lab.Lab, "containers", lambda self: {})
    monkeypatch.setattr(lab, "read_snapshot", lambda directory, hosts: {"key": "pabc", "os": "debian12", "images": {}})
    with pytest.raises(lab.LabError) as raised:
        lab.Lab("lab", tmp_path / "lab", print).up(1, 22000, tmp_path / "snap", os_target="debian13")
    assert str(raised.value) == "snapshot pabc holds debian12 hosts, not debian13: leave out --os or give --os debian12"
    assert raised.value.exit_code == 2


def test_cli_refuses_a_bad_mirror_before_touching_docker(tmp_path):
    result = subprocess.run([sys.executable, "-m", "opspack.cli", "lab", "up", "--mirror", "ftp://mirror.test/debian",
                             "--dir", str(tmp_path / "lab")], capture_output=True, text=True, check=False)
    assert result.returncode == 2
    assert result.stderr == ("opspack: error: mirror 'ftp://mirror.test/debian' is not an http(s) URL of a Debian "
                             "archive mirror (--mirror or OPSPACK_LAB_MIRROR)\n")
