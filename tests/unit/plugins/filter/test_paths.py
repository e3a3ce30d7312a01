"""Unit tests for beside_inventory."""

from ansible_collections.opspack.platform.plugins.filter.paths import beside_inventory


def test_beside_an_inventory_file_is_in_its_directory():
    assert beside_inventory("/p/inventories/prod", ["/p/inventories/prod/hosts.yml"], "records") == "/p/inventories/prod/records"


def test_beside_an_inventory_directory_is_next_to_it():
    assert beside_inventory("/m/inventory", ["/m/inventory/"], "records") == "/m/records"
    assert beside_inventory("/m/inventory", ["/other/hosts.yml", "/m/inventory"], "backups") == "/m/backups"
