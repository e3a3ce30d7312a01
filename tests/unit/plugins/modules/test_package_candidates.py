"""package_candidates: what apt can install of a plan, judged from `apt-cache policy`."""

from __future__ import annotations

import os
import stat

from ansible_collections.opspack.platform.plugins.modules import package_candidates

POLICY = """pgbackrest:
  Installed: (none)
  Candidate: 2.45-1
  Version table:
     2.45-1 500
        500 http://mirror.invalid/debian bookworm/main amd64 Packages
nginx:
  Installed: 1.22.1-9
  Candidate: 1.22.1-9+deb12u1
  Version table:
     1.22.1-9+deb12u1 500
        500 http://mirror.invalid/debian-security bookworm-security/main amd64 Packages
 *** 1.22.1-9 100
        100 /var/lib/dpkg/status
mail-transport-agent:
  Installed: (none)
  Candidate: (none)
  Version table:
"""


def test_the_policy_is_read_per_package():
    policy = package_candidates.parse_policy(POLICY)
    assert policy["pgbackrest"] == {"installed": None, "candidate": "2.45-1", "versions": ["2.45-1"]}
    assert policy["nginx"]["installed"] == "1.22.1-9"
    assert policy["nginx"]["versions"] == ["1.22.1-9+deb12u1", "1.22.1-9"]
    assert policy["mail-transport-agent"]["candidate"] is None


def test_unknown_unpinnable_and_candidate_less_packages_are_missing_with_a_reason():
    installable, missing = package_candidates.judge(
        ["pgbackrest=2.45-*", "nginx", "postgresql-99", "pgbackrest=2.55.1-*", "mail-transport-agent"],
        package_candidates.parse_policy(POLICY))
    assert installable == [{"name": "pgbackrest", "version": "2.45-1"}, {"name": "nginx", "version": "1.22.1-9"}]
    reasons = {item["wanted"]: item["reason"] for item in missing}
    assert reasons["postgresql-99"] == "postgresql-99: no package of that name in this host's apt sources"
    assert reasons["pgbackrest=2.55.1-*"] == "pgbackrest: no version 2.55.1-* in this host's apt sources (offered: 2.45-1)"
    assert reasons["mail-transport-agent"] == "mail-transport-agent: apt has no installation candidate"


def test_the_module_asks_apt_once_and_changes_nothing(run_module, tmp_path, monkeypatch):
    fake = tmp_path / "bin" / "apt-cache"
    fake.parent.mkdir()
    calls = tmp_path / "calls"
    fake.write_text(f"#!/bin/sh\necho \"$@\" >> {calls}\ncat <<'EOF'\n{POLICY}EOF\n")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{fake.parent}{os.pathsep}{os.environ['PATH']}")
    result = run_module("package_candidates", packages=["nginx", "pgbackrest=2.45-*", "postgresql-99"])
    assert result["changed"] is False and [item["name"] for item in result["missing"]] == ["postgresql-99"]
    assert calls.read_text().splitlines() == ["policy -- nginx pgbackrest postgresql-99"]
    checked = run_module("package_candidates", check_mode=True, packages=["nginx"])
    assert checked["changed"] is False and checked["missing"] == []
