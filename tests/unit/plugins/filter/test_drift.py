"""Unit tests for the drift filters, fed with real ansible.builtin.find output."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
from ansible.errors import AnsibleFilterError

from ansible_collections.opspack.platform.plugins.filter import drift

def run_find(tmp_path: Path, **args) -> dict:
    """Run the real find module locally, as a host would, and return its result."""
    args_file = tmp_path / "args.json"
    args_file.write_text(json.dumps({"ANSIBLE_MODULE_ARGS": args}))
    out = subprocess.run([sys.executable, "-m", "ansible.modules.find", str(args_file)],
                         capture_output=True, text=True, check=True).stdout
    return json.loads(out)


@pytest.fixture(name="tree")
def fixture_tree(tmp_path):
    (tmp_path / "etc" / "app").mkdir(parents=True)
    conf = tmp_path / "etc" / "app" / "app.conf"
    conf.write_text("listen 127.0.0.1\n")
    conf.chmod(0o640)
    (tmp_path / "etc" / "app" / "data").mkdir(mode=0o750)
    (tmp_path / "etc" / "app" / "data").chmod(0o750)
    return tmp_path


def test_find_spec_starts_at_top_level_directories():
    spec = drift.find_spec(["/etc/nginx/nginx.conf", "/srv/blog/shared", "/etc/fail2ban/jail.d/sshd.local"])
    assert spec == {"paths": ["/etc", "/srv"], "patterns": ["nginx.conf", "shared", "sshd.local"], "depth": 3}


@pytest.mark.parametrize("bad", ["/etc/x", ["etc/x"], ["/etc"], [None], []])
def test_find_spec_refuses_what_it_cannot_search(bad):
    with pytest.raises(AnsibleFilterError):
        drift.find_spec(bad)


def test_same_content_and_attributes_do_not_differ(tree):
    found = run_find(tree, paths=[str(tree)], patterns=["app.conf", "data"], recurse=True, depth=3,
                     file_type="any", get_checksum=True)
    me = found["files"][0]["pw_name"]
    group = found["files"][0]["gr_name"]
    conf = str(tree / "etc/app/app.conf")
    assert not drift.file_differs(found, conf, "listen 127.0.0.1\n", me, group, "0640")
    assert not drift.dir_differs(found, str(tree / "etc/app/data") + "/", me, group, "0750")


def test_any_difference_makes_the_task_run(tree):
    found = run_find(tree, paths=[str(tree)], patterns=["app.conf", "data"], recurse=True, depth=3,
                     file_type="any", get_checksum=True)
    me = found["files"][0]["pw_name"]
    group = found["files"][0]["gr_name"]
    conf = str(tree / "etc/app/app.conf")
    assert drift.file_differs(found, conf, "listen 0.0.0.0\n", me, group, "0640")  # content
    assert drift.file_differs(found, conf, "listen 127.0.0.1\n", me, group, "0644")  # mode
    assert drift.file_differs(found, conf, "listen 127.0.0.1\n", "nobody", group, "0640")  # owner
    assert drift.file_differs(found, str(tree / "etc/app/missing.conf"), "", me, group, "0640")
    assert drift.file_differs(found, str(tree / "etc/app/data"), "", me, group, "0750")  # a directory
    assert drift.dir_differs(found, conf, me, group, "0640")  # a file where a directory belongs
    # Attributes only (content unknown to the controller, e.g. a private key).
    assert not drift.file_differs(found, conf, None, me, group, "0640")
    assert drift.file_differs(found, conf, None, me, group, "0644")
    assert drift.file_differs(found, str(tree / "etc/app/data"), None, me, group, "0750")
    assert drift.dir_differs(found, str(tree / "etc/app/data"), me, group, "0755")


def test_a_failed_or_skipped_probe_makes_every_task_run():
    assert drift.file_differs({"failed": True, "files": []}, "/etc/x", "")
    assert drift.dir_differs({"skipped": True}, "/etc/x")


def test_content_is_compared_as_utf8():
    text = "grüße\n"
    found = [{"path": "/etc/x", "isreg": True, "checksum": hashlib.sha1(text.encode()).hexdigest(),
              "pw_name": "root", "gr_name": "root", "mode": "0644"}]
    assert not drift.file_differs(found, "/etc/x", text)


def test_packages_missing_against_package_facts():
    facts = {"nginx": [{"version": "1.22"}], "redis-server": [{"version": "7.0"}]}
    # A pinned version is apt's to check: always handed to apt.
    assert drift.packages_missing(facts, ["nginx", "redis-server=7.0", "fail2ban"]) == ["redis-server=7.0", "fail2ban"]
    assert drift.packages_missing({}, ["nginx"]) == ["nginx"]
    assert drift.packages_missing(None, "nginx") == ["nginx"]


def test_bad_mode_is_a_clear_error():
    found = [{"path": "/etc/x", "isreg": True, "checksum": hashlib.sha1(b"").hexdigest(),
              "pw_name": "root", "gr_name": "root", "mode": "0644"}]
    with pytest.raises(AnsibleFilterError, match="octal"):
        drift.file_differs(found, "/etc/x", "", mode="rw-r--r--")


SHOW = """Id=apt-daily.timer
ActiveState=active
UnitFileState=enabled

Id=systemd-timesyncd.service
ActiveState=inactive
UnitFileState=enabled

Id=missing.service
ActiveState=inactive
UnitFileState=
"""


def test_unit_settled_reads_systemctl_show():
    assert drift.unit_settled(SHOW, "apt-daily.timer")
    assert not drift.unit_settled(SHOW, "systemd-timesyncd.service")
    assert drift.unit_settled(SHOW, "systemd-timesyncd.service", started=False)
    assert not drift.unit_settled(SHOW, "missing.service", started=False)
    assert not drift.unit_settled(SHOW, "not-asked.service")
    assert drift.unit_settled({"rc": 0, "stdout": SHOW}, "apt-daily.timer")
    assert not drift.unit_settled({"rc": 1, "stdout": SHOW}, "apt-daily.timer")
    assert not drift.unit_settled({"skipped": True}, "apt-daily.timer")


DPKG_LISTING = (
    "ii  nginx 1.22.1-9 amd64\n"
    "hi  pgbackrest 2.45-1 amd64\n"
    "rc  apache2 2.4.57-2 amd64\n"
    "iFR redis-server 5:7.0.15-1 amd64\n"
)


def test_dpkg_packages_lists_installed_packages_with_their_selection():
    packages = drift.dpkg_packages(DPKG_LISTING)
    assert sorted(packages) == ["nginx", "pgbackrest"]
    assert packages["pgbackrest"] == [{"name": "pgbackrest", "version": "2.45-1", "arch": "amd64",
                                      "source": "apt", "selection": "hold"}]
    assert packages["nginx"][0]["selection"] == "install"
    # Removed-but-configured and half-configured packages count as missing, so apt runs.
    assert drift.packages_missing(packages, ["nginx", "apache2", "redis-server"]) == ["apache2", "redis-server"]


def test_dpkg_packages_reads_a_registered_result_and_treats_failure_as_unknown():
    assert "nginx" in drift.dpkg_packages({"rc": 0, "stdout": DPKG_LISTING})
    assert drift.dpkg_packages({"rc": 2, "stdout": ""}) == {}
    assert drift.dpkg_packages({"skipped": True}) == {}


def test_dpkg_packages_rejects_output_of_another_format():
    with pytest.raises(AnsibleFilterError, match="dpkg-query format"):
        drift.dpkg_packages("nginx 1.22\n")


UNITS_SHOWN = """Id=nginx.service
ActiveState=active

Id=postgresql@17-main.service
ActiveState=active

Id=redis-server.service
ActiveState=failed
"""


def test_units_inactive_names_each_unit_not_active_and_each_pattern_matching_none():
    from ansible_collections.opspack.platform.plugins.filter.drift import units_inactive
    assert units_inactive(UNITS_SHOWN, ["nginx.service", "postgresql@*-main.service"]) == []
    assert units_inactive({"stdout": UNITS_SHOWN, "rc": 0}, ["redis-server.service", "postgresql@15-main.service",
                                                     "opspack-blog@*.service"]) == [
        "redis-server.service is failed", "postgresql@15-main.service is not loaded", "opspack-blog@*.service is not loaded"]
    assert units_inactive({"failed": True}, ["nginx.service"]) == ["systemctl show did not run"]
