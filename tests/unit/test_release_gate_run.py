"""opspack.platform.release_gate end to end on the control node (the gate touches no host): a real
app repository, the real tools (pip-audit against a recorded OSV service on 127.0.0.1,
cyclonedx-py, detect-secrets), a throwaway PostgreSQL cluster, the records callback. A release that
passes every gate, then each gate failing alone."""

from __future__ import annotations

import datetime
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from opspack.testing.config import ROOT, tool_env
from opspack.testing.osv import RecordedOsv

SAMPLE = ROOT / "tests" / "sample_site"
SITE = "shop"
GIT_ENV = {"GIT_AUTHOR_NAME": "Release Manager", "GIT_AUTHOR_EMAIL": "rm@example.org",
           "GIT_COMMITTER_NAME": "Release Manager", "GIT_COMMITTER_EMAIL": "rm@example.org"}
PASSING_TEST = "import unittest\n\nclass T(unittest.TestCase):\n    def test_ok(self):\n        self.assertTrue(True)\n"


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True,
                          env=tool_env(**GIT_ENV)).stdout.strip()


def release(repo: Path, version: str, files: dict[str, str] | None = None, tag: bool = True) -> None:
    """Commit files and a changelog heading for version on the current branch, and tag it."""
    for name, text in (files or {}).items():
        path = repo / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    changelog = repo / "CHANGELOG.md"
    changelog.write_text(f"# Changelog\n\n## {version}\n- what changed\n\n" + changelog.read_text().split("\n", 2)[-1]
                         if changelog.exists() else f"# Changelog\n\n## {version}\n- first release\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", f"Release {version}")
    if tag:
        git(repo, "tag", "-a", f"v{version}", "-m", f"Release {version}")


@pytest.fixture(scope="module")
def osv():
    with RecordedOsv() as service:
        yield service


@pytest.fixture
def repo(tmp_path):
    """The shop app at v1.0.0: the sample site's app and migrations, pinned requirements, tests, and
    a reviewed detect-secrets baseline."""
    path = tmp_path / "shop"
    shutil.copytree(SAMPLE / "app", path / "app")
    shutil.copytree(SAMPLE / "v2" / "migrations", path / "migrations")
    git(path, "init", "-q", "-b", "main")
    scan = subprocess.run([sys.executable, "-m", "detect_secrets", "scan", "--all-files", "."], cwd=path,
                          capture_output=True, text=True, check=True)
    baseline = json.loads(scan.stdout)
    for entries in baseline["results"].values():
        for entry in entries:
            entry["is_secret"] = False  # reviewed: the sample app's placeholders
    release(path, "1.0.0", {"requirements.txt": "flask==3.0.3\ngunicorn==23.0.0\n",
                            "tests/test_app.py": PASSING_TEST, "tests/__init__.py": "",
                            ".secrets.baseline": json.dumps(baseline, indent=2) + "\n"})
    return path


def gate(tmp_path, repo, osv, version="1.0.0", ref=None, check=False, **extra):
    tmp_path.mkdir(parents=True, exist_ok=True)
    state = tmp_path / "state"
    variables = {
        "opspack_state_dir": str(state),
        "opspack_sites": [{"name": SITE, "hosts": ["web"], "domains": ["shop.example.org"],
                           "app": {"module": "app:application"}, "database": {"password": "not-used-here"},
                           "gate": {"test_command": ["python3", "-m", "unittest", "discover", "-s", "tests"]}}],
        "release_site": SITE, "release_version": version, "release_git_repo": str(repo),
        "release_git_ref": ref or f"v{version}", "release_gate_audit_service": "osv", "release_gate_osv_url": osv.url,
        **extra}
    (tmp_path / "vars.yml").write_text(yaml.safe_dump(variables))
    # The site's hosts are in the inventory, as in an operator's; the gate never connects to them.
    (tmp_path / "hosts.yml").write_text(yaml.safe_dump({"all": {
        "hosts": {"localhost": {"ansible_connection": "local", "ansible_python_interpreter": sys.executable}},
        "children": {"web": {"hosts": {"shop1": {"ansible_host": "192.0.2.10"}}}}}}))
    ran = subprocess.run(["ansible-playbook", "-i", str(tmp_path / "hosts.yml"), str(ROOT / "playbooks" / "release_gate.yml"),
                          "-e", f"@{tmp_path / 'vars.yml'}", *(["--check"] if check else [])], cwd=ROOT, capture_output=True, text=True, check=False,
                         env=tool_env(ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"), ANSIBLE_NOCOLOR="1"))
    verdicts = sorted((state / "artifacts" / SITE).glob("*.gate.json"))
    history = state / "records" / "history.jsonl"
    return ran, (json.loads(verdicts[-1].read_text()) if verdicts else None), \
        [json.loads(line) for line in history.read_text().splitlines()] if history.exists() else []


def test_a_release_that_passes_every_gate_is_safe_to_ship_with_its_sbom_and_record(tmp_path, repo, osv):
    ran, verdict, history = gate(tmp_path, repo, osv)
    assert ran.returncode == 0, ran.stdout[-3000:]
    assert verdict["safe_to_ship"] is True and verdict["failed"] == []
    assert [g["gate"] for g in verdict["gates"]] == ["git_policy", "tests", "migrations", "sbom", "dependency_audit", "secret_scan"]
    release_id = verdict["release_id"]
    assert release_id.startswith("1.0.0+") and len(verdict["sha256"]) == 64
    # The SBOM beside the artifact, valid by the CycloneDX library's own validator, naming the pins.
    from cyclonedx.schema import SchemaVersion
    from cyclonedx.validation.json import JsonStrictValidator
    sbom = (tmp_path / "state" / "artifacts" / SITE / f"{release_id}.cdx.json").read_text()
    assert JsonStrictValidator(SchemaVersion.V1_6).validate_str(sbom) is None
    assert sorted(c["purl"] for c in json.loads(sbom)["components"]) == ["pkg:pypi/flask@3.0.3", "pkg:pypi/gunicorn@23.0.0"]
    assert ("flask", "3.0.3") in osv.asked, "the audit asked the (recorded) advisory service"
    # The records keep the verdict by release id; a gate is history only (no matrix row, no incident).
    assert [(e["operation"], e["result"], e["release"]) for e in history] == [("gate", "pass", release_id)]
    assert not (tmp_path / "state" / "records" / "what-broke-last-time.md").exists()
    matrix = tmp_path / "state" / "records" / "loop-sites-matrix.md"
    assert not matrix.exists() or f"| {SITE} |" not in matrix.read_text()


def only_failed(ran, verdict, name):
    assert ran.returncode != 0
    assert verdict["safe_to_ship"] is False and verdict["failed"] == [name], verdict["failed"]
    failed = next(g for g in verdict["gates"] if g["gate"] == name)
    assert failed["fix"], "a failed gate says what to do"
    assert f"{name}: " in ran.stdout and "(what to do: " in ran.stdout
    return failed


def test_an_untagged_ref_a_dirty_tree_and_a_version_mismatch_fail_the_git_policy(tmp_path, repo, osv):
    (repo / "app" / "extra.py").write_text("X = 1\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "after the release")
    assert "is not tagged v1.0.1" in only_failed(*gate(tmp_path / "a", repo, osv, "1.0.1", ref="HEAD")[:2], "git_policy")["reason"]
    assert "tagged v1.0.0, not v1.0.1" in only_failed(*gate(tmp_path / "b", repo, osv, "1.0.1", ref="v1.0.0")[:2],
                                                      "git_policy")["reason"]
    (repo / "migrations" / "003_forgotten.sql").write_text("SELECT 1;\n")
    assert "untracked" in only_failed(*gate(tmp_path / "c", repo, osv)[:2], "git_policy")["reason"]


def test_failing_tests_fail_the_tests_gate(tmp_path, repo, osv):
    release(repo, "1.0.1", {"tests/test_app.py": PASSING_TEST.replace("assertTrue(True)", "assertTrue(False)")})
    failed = only_failed(*gate(tmp_path, repo, osv, "1.0.1")[:2], "tests")
    assert "the tests failed (exit status 1)" in failed["reason"]


def test_a_rollback_that_does_not_revert_fails_the_migrations_gate(tmp_path, repo, osv):
    release(repo, "1.0.1", {"migrations/002_add_note_tags.rollback.sql": "SELECT 1;\n"})
    assert "does not revert 002_add_note_tags.sql" in only_failed(*gate(tmp_path, repo, osv, "1.0.1")[:2], "migrations")["reason"]


def test_an_advisory_without_waiver_fails_and_a_waiver_in_force_lets_it_pass(tmp_path, repo, osv):
    release(repo, "1.0.1", {"requirements.txt": "flask==2.3.1\ngunicorn==23.0.0\n"})
    failed = only_failed(*gate(tmp_path / "a", repo, osv, "1.0.1")[:2], "dependency_audit")
    assert "flask 2.3.1 has PYSEC-2023-62 (fixed in 2.2.5, 2.3.2)" in failed["reason"]
    tomorrow = (datetime.date.today() + datetime.timedelta(days=1)).isoformat()
    waiver = {"advisory": "CVE-2023-30861", "reason": "no caching proxy in front of the shop", "expires": tomorrow}
    ran, verdict, history = gate(tmp_path / "b", repo, osv, "1.0.1", release_gate_waivers=[waiver])
    assert ran.returncode == 0 and verdict["safe_to_ship"], ran.stdout[-2000:]
    audit = next(g for g in verdict["gates"] if g["gate"] == "dependency_audit")
    assert audit["details"]["waived"][0]["reason"] == waiver["reason"]


def test_an_expired_waiver_fails(tmp_path, repo, osv):
    yesterday = (datetime.date.today() - datetime.timedelta(days=1)).isoformat()
    waiver = {"advisory": "PYSEC-2023-62", "reason": "was planned", "expires": yesterday}
    failed = only_failed(*gate(tmp_path, repo, osv, release_gate_waivers=[waiver])[:2], "dependency_audit")
    assert f"expired on {yesterday}" in failed["reason"]


def test_a_package_that_cannot_be_audited_fails_closed(tmp_path, repo, osv):
    release(repo, "1.0.1", {"requirements.txt": "flask==3.0.3\ninternal-billing==1.4.0\n"})
    failed = only_failed(*gate(tmp_path, repo, osv, "1.0.1")[:2], "dependency_audit")
    assert "gave no report" in failed["reason"] or "could not be audited" in failed["reason"]


def test_a_planted_secret_fails_the_secret_scan(tmp_path, repo, osv):
    # An inline allowlist comment is no review: only the baseline is.
    release(repo, "1.0.1", {"app/settings.py": "AWS_ACCESS_KEY_ID = 'AKIAIOSFODNN7EXAMPLE'  # pragma: allowlist secret\n"})
    failed = only_failed(*gate(tmp_path, repo, osv, "1.0.1")[:2], "secret_scan")
    assert "app/settings.py:1 (AWS Access Key)" in failed["reason"]


def test_bad_input_is_refused_before_anything_is_built(tmp_path, repo, osv):
    ran, verdict, _ = gate(tmp_path, repo, osv, release_gate_waivers=[{"advisory": "PYSEC-2023-62", "expires": "2027-01-01"}])
    assert ran.returncode != 0 and "release_gate_waivers[0].reason: missing" in ran.stdout
    assert verdict is None and not list((tmp_path / "state").glob("artifacts/*/*.tar.gz"))


def test_a_release_without_its_requirements_file_fails_the_sbom_and_the_audit(tmp_path, repo, osv):
    git(repo, "rm", "-q", "requirements.txt")
    release(repo, "1.0.1")
    ran, verdict, _ = gate(tmp_path, repo, osv, "1.0.1")
    assert ran.returncode != 0 and verdict["failed"] == ["sbom", "dependency_audit"]
    assert "the release has no requirements.txt" in ran.stdout


def test_the_gate_is_never_a_pass_in_check_mode(tmp_path, repo, osv):
    ran, verdict, history = gate(tmp_path, repo, osv, "1.0.0", check=True)
    assert ran.returncode != 0 and "not judged in check mode" in ran.stdout
    assert verdict is None and history == []
