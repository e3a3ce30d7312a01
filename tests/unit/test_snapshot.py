"""The provisioned-host snapshot's logic, without a Docker engine: what its key covers, which
scenarios may start from it, and how a snapshot directory is checked."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from opspack import lab
from opspack.testing import snapshot
from opspack.testing.config import ROOT, SITE_VARS_FILES


@pytest.fixture
def tree(tmp_path) -> Path:
    """A copy of what shapes a provisioned host, to change without touching the checkout."""
    for name in snapshot.SHAPING:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(source, tmp_path / name)
    return tmp_path


def test_the_key_is_stable_for_an_unchanged_tree(tree):
    assert snapshot.key(tree) == snapshot.key(tree)
    assert snapshot.key(tree).startswith("p") and len(snapshot.key(tree)) == 17


@pytest.mark.parametrize("changed", [
    "roles/nginx/templates/opspack-site.conf.j2",
    "roles/postgresql/defaults/main.yml",
    "roles/access/tasks/main.yml",
    "playbooks/provision.yml",
    "plugins/modules/backup_schedule.py",
])
def test_touching_what_shapes_a_host_changes_the_key(tree, changed):
    before = snapshot.key(tree)
    path = tree / changed
    assert path.exists(), f"{changed} moved: name another file of its kind here"
    path.write_text(path.read_text() + "\n# touched\n")
    assert snapshot.key(tree) != before


def test_a_new_template_changes_the_key(tree):
    before = snapshot.key(tree)
    (tree / "roles/nginx/templates/extra.conf.j2").write_text("# new\n")
    assert snapshot.key(tree) != before


def test_the_sites_variables_and_the_base_image_are_part_of_the_key(tree, tmp_path_factory, monkeypatch):
    before = snapshot.key(tree)
    other = tmp_path_factory.mktemp("vars") / "sites.yml"
    other.write_text(Path(SITE_VARS_FILES[-1]).read_text() + "\nextra_setting: 1\n")
    assert snapshot.key(tree, (SITE_VARS_FILES[0], other)) != before
    monkeypatch.setattr(lab, "RECIPE_VERSION", lab.RECIPE_VERSION + 1)
    assert snapshot.key(tree) != before


def test_docs_and_the_control_node_callback_do_not_shape_a_host(tree):
    before = snapshot.key(tree)
    (tree / "roles/nginx/README.md").write_text("reworded\n")
    callback = tree / "plugins/callback/records.py"
    callback.write_text(callback.read_text() + "\n# touched\n")
    assert snapshot.key(tree) == before


def scenario_env(name: str) -> dict:
    config = yaml.safe_load((ROOT / "molecule" / name / "molecule.yml").read_text())
    return config.get("provisioner", {}).get("env", {})


def test_provisioning_is_never_tested_from_the_snapshot():
    for name in ("preflight", "provision"):
        assert scenario_env(name).get("OPSPACK_LAB_FROM") == "fresh", name


def test_every_scenario_says_where_its_hosts_come_from_and_has_its_own_ports():
    names = sorted(path.parent.name for path in (ROOT / "molecule").glob("*/molecule.yml"))
    assert len(names) >= 7
    ports = {}
    for name in names:
        env = scenario_env(name)
        assert env.get("OPSPACK_LAB_FROM") in ("fresh", "snapshot"), name
        ports[name] = int(env["OPSPACK_SCENARIO_BASE_PORT"])
    # Two hosts at most, ten ports each: blocks 100 apart never overlap.
    starts = sorted(ports.values())
    assert all(later - earlier >= 100 for earlier, later in zip(starts, starts[1:])), ports


def test_a_directory_without_a_manifest_is_not_a_snapshot(tmp_path):
    with pytest.raises(lab.LabError, match="is not a lab snapshot"):
        lab.read_snapshot(tmp_path, 1)


def test_a_snapshot_with_too_few_hosts_or_lost_images_is_refused(tmp_path, monkeypatch):
    (tmp_path / lab.SNAPSHOT_MANIFEST).write_text(json.dumps(
        {"key": "pabc", "hosts": ["vps1"], "images": {"vps1": "opspack/lab-snapshot:pabc-vps1"}}))
    with pytest.raises(lab.LabError, match="has no vps2") as raised:
        lab.read_snapshot(tmp_path, 2)
    assert raised.value.exit_code == 2
    monkeypatch.setattr(lab, "image_exists", lambda ref: False)
    with pytest.raises(lab.LabError, match="no longer in the Docker engine: take the snapshot again"):
        lab.read_snapshot(tmp_path, 1)
    monkeypatch.setattr(lab, "image_exists", lambda ref: True)
    assert lab.read_snapshot(tmp_path, 1)["key"] == "pabc"


def test_what_a_snapshot_removes_before_the_commit_is_what_each_host_makes_at_boot():
    # Host keys: sshd's drop-in runs ssh-keygen -A; machine-id: systemd fills an empty file.
    assert "rm -f /etc/ssh/ssh_host_*" in lab.SNAPSHOT_PREPARE and "ssh-keygen -A" in lab.SSH_HOSTKEY_DROPIN
    assert ": > /etc/machine-id" in lab.SNAPSHOT_PREPARE
    # A persistent timer's stamp from the build would fire a missed run at first boot.
    assert "rm -f /var/lib/systemd/timers/stamp-*" in lab.SNAPSHOT_PREPARE


def test_a_build_takes_the_first_port_block_nothing_listens_on(monkeypatch):
    busy = {snapshot.BUILD_BASE_PORT + 2, snapshot.BUILD_BASE_PORT + 20}
    monkeypatch.setattr(lab, "taken_ports", lambda ports: [port for port in ports if port in busy])
    assert snapshot.free_base_port() == snapshot.BUILD_BASE_PORT + 40
    monkeypatch.setattr(lab, "taken_ports", lambda ports: list(ports))
    with pytest.raises(lab.LabError, match="no free ports for a snapshot build"):
        snapshot.free_base_port()


def test_a_snapshot_host_keeps_only_the_host_key_types_it_was_committed_with(tmp_path):
    # ssh-keygen -A at first boot makes every type; the lab deletes those the snapshot's host did
    # not have (the access role deletes ECDSA and DSA keys), and starts never make them again.
    etc_ssh = tmp_path / "ssh"
    etc_ssh.mkdir()
    (etc_ssh / "lab-snapshot-host-keys").write_text(f"{etc_ssh}/ssh_host_ed25519_key\n")
    for kind in ("ed25519", "ecdsa", "rsa"):
        (etc_ssh / f"ssh_host_{kind}_key").write_text("private")
        (etc_ssh / f"ssh_host_{kind}_key.pub").write_text("public")
    subprocess.run(["sh", "-c", lab.KEEP_SNAPSHOT_HOST_KEYS.replace("/etc/ssh", str(etc_ssh))], check=True)
    assert sorted(path.name for path in etc_ssh.iterdir()) == [
        "lab-snapshot-host-keys", "ssh_host_ed25519_key", "ssh_host_ed25519_key.pub"]
    assert "ls /etc/ssh/ssh_host_*_key >/dev/null 2>&1 ||" in lab.SSH_HOSTKEY_DROPIN
    assert lab.SNAPSHOT_PREPARE.index(lab.SNAPSHOT_HOST_KEYS) < lab.SNAPSHOT_PREPARE.index("rm -f /etc/ssh/ssh_host_*")


def test_a_snapshot_holds_as_many_hosts_as_the_largest_scenario_started_from_it():
    # fleet and verify run two Debian 12 hosts; every Debian 13 and Ubuntu scenario runs one.
    assert snapshot.size("debian12") == 2
    assert snapshot.size("debian13") == 1
    assert snapshot.size("ubuntu2404") == 1


def test_a_scenario_with_more_hosts_makes_a_bigger_snapshot_with_its_own_key(tmp_path, monkeypatch):
    scenario = tmp_path / "big" / "molecule.yml"
    scenario.parent.mkdir()
    scenario.write_text(yaml.safe_dump({"platforms": [{"name": f"vps{index}"} for index in (1, 2, 3)],
                                        "provisioner": {"env": {"OPSPACK_LAB_FROM": "snapshot", "OPSPACK_LAB_OS": "debian13"}}}))
    fresh = tmp_path / "fresh" / "molecule.yml"
    fresh.parent.mkdir()
    fresh.write_text(yaml.safe_dump({"platforms": [{"name": f"vps{index}"} for index in range(1, 6)],
                                     "provisioner": {"env": {"OPSPACK_LAB_FROM": "fresh", "OPSPACK_LAB_OS": "debian13"}}}))
    before = snapshot.key(target="debian13")
    monkeypatch.setattr(snapshot, "SCENARIOS", tmp_path)
    assert snapshot.size("debian13") == 3, "fresh scenarios do not count"
    assert snapshot.size("debian12") == 1
    assert snapshot.key(target="debian13") != before
    assert snapshot.key(target="debian13") == snapshot.key(target="debian13", hosts=3)
