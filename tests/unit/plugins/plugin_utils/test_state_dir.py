"""The control-node state directory rule the lookup, the records callback and the opspack command share."""

from __future__ import annotations

import pytest

from ansible_collections.opspack.platform.plugins.plugin_utils import state_dir


def test_one_inventory_has_one_name_however_it_is_given(tmp_path):
    inventory = tmp_path / "inventories" / "production"
    inventory.mkdir(parents=True)
    (inventory / "hosts.yml").write_text("all: {}\n")
    assert state_dir.inventory_name([str(inventory)]) == "production"
    assert state_dir.inventory_name([str(inventory / "hosts.yml")]) == "production"
    assert state_dir.inventory_name([str(inventory) + "/"]) == "production"


def test_a_host_list_is_no_place_and_nothing_gives_default(tmp_path):
    assert state_dir.inventory_name(["web-1,web-2"]) == "default"
    assert state_dir.inventory_name([]) == "default"
    assert state_dir.inventory_name(["web-1,", str(tmp_path / "staging" / "hosts.yml")]) == "staging"


def test_the_default_is_in_the_xdg_data_home_never_beside_the_inventory(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    sources = [str(tmp_path / "project" / "inventories" / "production" / "hosts.yml")]
    assert state_dir.default_state_dir(sources, {}) == str(tmp_path / "home" / ".local" / "share" / "opspack" / "production")
    assert state_dir.default_state_dir(sources, {"XDG_DATA_HOME": "/data"}) == "/data/opspack/production"
    # A relative XDG_DATA_HOME is invalid by the XDG spec and ignored.
    assert state_dir.default_state_dir(sources, {"XDG_DATA_HOME": "rel"}).startswith(str(tmp_path / "home"))


def test_a_configured_directory_wins_and_is_made_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert state_dir.state_dir("/srv/state", ["x/hosts.yml"]) == "/srv/state"
    assert state_dir.state_dir("~/state", []) == str(tmp_path / "home" / "state")
    assert state_dir.state_dir("state", []) == str(tmp_path / "state")


def test_only_known_parts(tmp_path):
    assert state_dir.part("/s", "lab-ca") == "/s/lab-ca"
    with pytest.raises(ValueError, match="records, artifacts, backups, lab-ca"):
        state_dir.part("/s", "../etc")


def test_the_records_directory_is_its_own_setting_else_records_of_the_state_directory(tmp_path):
    assert state_dir.records_dir("/r", "/s", []) == "/r"
    assert state_dir.records_dir(None, "/s", []) == "/s/records"
    assert state_dir.records_dir(None, None, [str(tmp_path / "prod" / "hosts.yml")], {"XDG_DATA_HOME": "/d"}) == \
        "/d/opspack/prod/records"
