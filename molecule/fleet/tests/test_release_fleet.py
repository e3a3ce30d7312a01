"""A fleet deploy on the scenario's two provisioned hosts: serial batches, one release id on
every host, and a failing release stopping the fleet after the first batch (max_fail_percentage 0);
a host lost at login stopping the fleet before any change; preflight finding its way in.

Each test can run alone: the `fleet_at_1_0_0` fixture brings both hosts to the sample site's
1.0.0 when a test needs them there.
"""

from __future__ import annotations

import json
import subprocess

import pytest
import testinfra

from opspack.testing.scenario import INVENTORY, PROJECT, deploy, sample_releases
from opspack.testing.config import tool_env
from opspack.testing.playbooks import ENV

HOSTS = ("vps1", "vps2")
FLEET = ("-e", "release_serial=1", "-e", "release_max_fail_percentage=0")


def record(name: str) -> dict:
    host = testinfra.get_host(f"ansible://{name}?ansible_inventory={INVENTORY}")
    state = host.file("/srv/blog/release-state.json")
    return json.loads(state.content_string) if state.exists else {}


def serving(name: str) -> str:
    return record(name).get("current", {}).get("release_id", "")


@pytest.fixture
def fleet_at_1_0_0():
    """Both hosts serving blog 1.0.0, from one fleet deploy (nothing to do when they already are)."""
    sample_releases()
    if not all(serving(name).startswith("1.0.0+") for name in HOSTS):
        ran = deploy("1.0.0", *FLEET)
        assert ran.returncode == 0, ran.stdout[-3000:]
    return {name: serving(name) for name in HOSTS}


def test_a_fleet_deploy_goes_host_by_host_with_one_release_id_and_stops_at_the_first_failure():
    sample_releases()
    ran = deploy("1.0.0", *FLEET)
    assert ran.returncode == 0, ran.stdout[-3000:]
    # serial 1: the deploy play ran once per host, one batch after the other.
    assert ran.stdout.count("PLAY [Deploy | Ship the release]") == len(HOSTS), ran.stdout[-3000:]
    current = {name: serving(name) for name in HOSTS}
    assert len(set(current.values())) == 1 and current["vps1"].startswith("1.0.0+"), current

    bad = deploy("2.1.0", *FLEET)  # fails its health gate on the first host
    assert bad.returncode != 0
    assert bad.stdout.count("PLAY [Deploy | Ship the release]") == 1, "the fleet stopped after the failed batch"
    first, second = record("vps1"), record("vps2")
    assert any(key.startswith("2.1.0+") and entry["status"] == "failed" for key, entry in first["releases"].items())
    assert not any(key.startswith("2.1.0+") for key in second["releases"]), "vps2 was never touched"
    assert first["current"]["release_id"] == second["current"]["release_id"] == current["vps1"]


def test_a_host_lost_at_login_stops_the_fleet_before_any_change(tmp_path, fleet_at_1_0_0):
    """vps2 answers no login (its SSH port made a closed one in a later inventory source): the
    deploy must stop on every host, naming vps2, instead of going on with vps1 alone."""
    lost = tmp_path / "lost.yml"
    lost.write_text("all:\n  hosts:\n    vps2:\n      ansible_port: 1\n")
    before = record("vps1")
    ran = deploy("2.0.0", *FLEET, "-i", str(lost))
    out = ran.stdout + ran.stderr
    assert ran.returncode != 0 and "Cannot log in to vps2" in out and "before anything changed on any host" in out, out[-3000:]
    assert "PLAY [Deploy | Ship the release]" not in out
    assert record("vps1") == before, "vps1 was not touched"


def test_preflight_finds_its_way_into_a_provisioned_host(tmp_path):
    """An operator's inventory that still logs in as root (as on the fresh VPS): provisioning
    switched root login off, so preflight must come in as the operator, as every playbook does."""
    as_root = tmp_path / "as-root.yml"
    as_root.write_text("all:\n  hosts:\n" + "".join(f"    {name}:\n      ansible_user: root\n      ansible_become: false\n"
                                                   for name in HOSTS))
    ran = subprocess.run(["ansible-playbook", "-i", str(INVENTORY), "-i", str(as_root), "playbooks/preflight.yml"],
                         capture_output=True, text=True, check=False, cwd=PROJECT,
                         env=tool_env(**ENV))
    assert ran.returncode == 0, (ran.stdout + ran.stderr)[-3000:]
    assert "unreachable=0" in ran.stdout.split("PLAY RECAP")[-1] and "failed=0" in ran.stdout.split("PLAY RECAP")[-1]
