"""Unit tests for module_utils/release_gate: the git policy on real repositories made here, and the
fail-closed judgement of the dependency audit and the secret scan."""

from __future__ import annotations

import datetime
import shutil
import subprocess
from pathlib import Path

import pytest

from ansible_collections.opspack.platform.plugins.plugin_utils import release_gate as gate
from ansible_collections.opspack.platform.plugins.plugin_utils.scratch_postgres import ScratchCluster

TODAY = datetime.date(2026, 12, 6)


def git(repo, *args):
    subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True,
                   env={"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.org", "GIT_COMMITTER_NAME": "t",
                        "GIT_COMMITTER_EMAIL": "t@example.org", "PATH": "/usr/bin:/bin", "HOME": str(repo)})


@pytest.fixture
def repo(tmp_path):
    """An app repository on main whose HEAD is annotated-tagged v1.2.0, with its changelog entry."""
    path = tmp_path / "app"
    path.mkdir()
    git(path, "init", "-q", "-b", "main")
    (path / "app.py").write_text("print('hello')\n")
    (path / "CHANGELOG.md").write_text("# Changelog\n\n## [1.2.0] - 2026-12-01\n- notes\n\n## 1.1.0\n- older\n")
    git(path, "add", "-A")
    git(path, "commit", "-q", "-m", "1.2.0")
    git(path, "tag", "-a", "v1.2.0", "-m", "Release 1.2.0")
    return path


def check(repo, ref="v1.2.0", version="1.2.0", **policy):
    return gate.git_policy(str(repo), ref, version, gate.check_policy(policy))


def test_a_tagged_release_on_main_passes(repo):
    outcome = check(repo)
    assert outcome["status"] == "pass", outcome
    assert outcome["details"]["tag"] == "v1.2.0" and outcome["details"]["branches"] == ["main"]
    # The commit named by its sha passes too: the gate judges the commit, not how it is named.
    sha = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    assert check(repo, ref=sha)["status"] == "pass"


def test_an_untagged_commit_is_refused_naming_the_tag_to_make(repo):
    (repo / "app.py").write_text("print('later')\n")
    git(repo, "commit", "-qam", "later")
    outcome = check(repo, ref="HEAD")
    assert outcome["status"] == "fail" and "is not tagged v1.2.0" in outcome["reason"]
    assert "git tag -a v1.2.0" in outcome["fix"]


def test_a_tag_of_another_version_is_a_mismatch(repo):
    outcome = check(repo, version="1.2.1")
    assert outcome["status"] == "fail"
    assert "tagged v1.2.0, not v1.2.1" in outcome["reason"]


def test_a_lightweight_tag_is_refused_unless_the_policy_allows_it(repo):
    git(repo, "tag", "-d", "v1.2.0")
    git(repo, "tag", "v1.2.0")
    assert "lightweight" in check(repo)["reason"]
    assert check(repo, annotated_tag=False)["status"] == "pass"


def test_a_tag_on_a_feature_branch_only_is_refused(repo):
    git(repo, "checkout", "-q", "-b", "feature/x")
    (repo / "app.py").write_text("print('feature')\n")
    (repo / "CHANGELOG.md").write_text("## 1.3.0\n")
    git(repo, "commit", "-qam", "feature")
    git(repo, "tag", "-a", "v1.3.0", "-m", "x")
    outcome = check(repo, ref="v1.3.0", version="1.3.0")
    assert outcome["status"] == "fail" and "on no release branch" in outcome["reason"] and "feature/x" in outcome["reason"]
    assert check(repo, ref="v1.3.0", version="1.3.0", branches=["feature/*"])["status"] == "pass"
    # A release branch by pattern.
    git(repo, "branch", "release/1.3")
    assert check(repo, ref="v1.3.0", version="1.3.0")["status"] == "pass"


def test_the_changelog_must_have_a_heading_for_the_version(repo):
    (repo / "CHANGELOG.md").write_text("# Changelog\n\nmentions 1.3.0 in passing, and 1.3.01\n## 1.3.0.1\n")
    git(repo, "commit", "-qam", "1.3.0")
    git(repo, "tag", "-a", "v1.3.0", "-m", "x")
    outcome = check(repo, ref="v1.3.0", version="1.3.0")
    assert outcome["status"] == "fail" and "no heading for 1.3.0" in outcome["reason"]
    assert check(repo, ref="v1.3.0", version="1.3.0", changelog="")["status"] == "pass"


@pytest.mark.parametrize("text, ok", [
    ("## [1.3.0] - 2026-12-06\n", True),
    ("# v1.3.0\n", True),
    ("1.3.0 (2026-12-06)\n==================\n", True),
    ("## 1.3.0-rc.1\n", False),
    ("## 11.3.0\n", False),
    ("1.3.0 was good\n", False),
])
def test_changelog_headings(text, ok):
    assert gate.changelog_names(text, "1.3.0") is ok


def test_a_dirty_or_untracked_work_tree_is_refused(repo):
    (repo / "migrations").mkdir()
    (repo / "migrations" / "002_new.sql").write_text("select 1;\n")
    outcome = check(repo)
    assert outcome["status"] == "fail" and "uncommitted or untracked" in outcome["reason"]
    assert "migrations/" in outcome["reason"]
    assert check(repo, clean_tree=False)["status"] == "pass"


def test_a_ref_that_does_not_exist_and_a_bad_version(repo):
    assert "is not a commit" in check(repo, ref="v9.9.9", version="9.9.9")["reason"]
    assert "not a semantic version" in check(repo, version="1.2")["reason"]


@pytest.mark.parametrize("policy, message", [
    ({"tag": "x"}, "unknown key"),
    ({"tag_format": "release"}, "must name {version} once"),
    ({"tag_format": "{version}-{x}"}, "must name {version} once"),
    ({"branches": []}, "at least one branch"),
    ({"annotated_tag": "yes"}, "must be a bool"),
])
def test_a_bad_policy_is_refused(policy, message):
    with pytest.raises(gate.GateError, match=message):
        gate.check_policy(policy)


@pytest.mark.parametrize("waiver, message", [
    ({"reason": "x", "expires": "2027-01-01"}, "advisory: missing"),
    ({"advisory": "GHSA-1", "expires": "2027-01-01"}, "reason: missing"),
    ({"advisory": "GHSA-1", "reason": "x"}, "expires: missing"),
    ({"advisory": "GHSA-1", "reason": "x", "expires": "someday"}, "expires: missing or not a date"),
    ({"advisory": "GHSA-1", "reason": "x", "expires": "2027-01-01", "until": 1}, "unknown key"),
])
def test_a_waiver_without_advisory_reason_or_date_is_refused(waiver, message):
    with pytest.raises(gate.GateError, match=message):
        gate.check_waivers([waiver])


def test_requirements_must_be_pinned():
    text = ("# pinned by pip-compile\nrequests==2.31.0 \\\n    --hash=sha256:abc\nFlask[async]==3.0.0 ; python_version > '3'\n"
            "gunicorn>=21\n-r other.txt\n--index-url https://example.org\n")
    pins, loose = gate.pinned_requirements(text)
    assert pins == {"requests": "2.31.0", "flask": "3.0.0"}
    assert loose == ["gunicorn>=21", "-r other.txt"]


VULN = {"id": "PYSEC-2018-28", "aliases": ["CVE-2018-18074", "GHSA-x84v-xcm2-53pg"], "fix_versions": ["2.20.0"]}


def audit(dependencies, pins=None, waivers=(), loose=()):
    report = {"dependencies": dependencies, "fixes": []} if dependencies is not None else None
    pins = pins if pins is not None else {d["name"]: d.get("version", "") for d in dependencies or []}
    return gate.dependency_audit(report, pins, list(loose), gate.check_waivers(list(waivers)), TODAY, error="boom")


def test_a_clean_audit_passes():
    outcome = audit([{"name": "flask", "version": "3.0.0", "vulns": []}])
    assert outcome["status"] == "pass" and outcome["details"]["audited"] == 1


def test_an_advisory_without_waiver_fails_naming_it_and_the_fix():
    outcome = audit([{"name": "requests", "version": "2.19.0", "vulns": [VULN]}])
    assert outcome["status"] == "fail"
    assert "requests 2.19.0 has PYSEC-2018-28 (fixed in 2.20.0)" in outcome["reason"]


def test_a_waiver_by_any_alias_in_force_passes_and_is_reported():
    outcome = audit([{"name": "requests", "version": "2.19.0", "vulns": [VULN]}],
                    waivers=[{"advisory": "CVE-2018-18074", "reason": "not reachable", "expires": "2027-01-31"}])
    assert outcome["status"] == "pass" and "1 waived" in outcome["reason"]
    assert outcome["details"]["waived"][0]["reason"] == "not reachable"
    # A waiver for another package does not cover it.
    other = audit([{"name": "requests", "version": "2.19.0", "vulns": [VULN]}],
                  waivers=[{"advisory": "CVE-2018-18074", "reason": "x", "expires": "2027-01-31", "package": "urllib3"}])
    assert other["status"] == "fail"


def test_an_expired_waiver_fails_even_when_nothing_needs_it():
    waiver = {"advisory": "CVE-2018-18074", "reason": "not reachable", "expires": "2026-12-05"}
    outcome = audit([{"name": "requests", "version": "2.19.0", "vulns": [VULN]}], waivers=[waiver])
    assert outcome["status"] == "fail" and "expired on 2026-12-05" in outcome["reason"]
    assert "PYSEC-2018-28" in outcome["reason"]
    assert audit([{"name": "flask", "version": "3.0.0", "vulns": []}], waivers=[waiver])["status"] == "fail"
    # The day it expires, it still holds.
    assert audit([{"name": "flask", "version": "3.0.0", "vulns": []}],
                 waivers=[{**waiver, "expires": "2026-12-06"}])["status"] == "pass"


def test_the_audit_fails_closed():
    # A package the service could not check.
    skipped = audit([{"name": "internal-lib", "skip_reason": "Dependency not found on PyPI and could not be audited"}],
                    pins={"internal-lib": "1.0"})
    assert skipped["status"] == "fail" and "internal-lib could not be audited" in skipped["reason"]
    # No report at all.
    assert "gave no report (boom)" in audit(None, pins={"flask": "3.0.0"})["reason"]
    # A pinned requirement the report does not mention.
    missing = audit([{"name": "flask", "version": "3.0.0", "vulns": []}], pins={"flask": "3.0.0", "jinja2": "3.1.4"})
    assert "jinja2==3.1.4 is missing from the audit's report" in missing["reason"]
    # A requirement not pinned.
    loose = audit([{"name": "flask", "version": "3.0.0", "vulns": []}], loose=["gunicorn>=21"])
    assert loose["status"] == "fail" and "not pinned" in loose["reason"]
    # Audited at another version than the release pins.
    assert "audited at 3.0.0" in audit([{"name": "flask", "version": "3.0.0", "vulns": []}],
                                       pins={"flask": "3.0.1"})["reason"]


FINDING = {"type": "Secret Keyword", "hashed_secret": "0123abcd", "line_number": 4, "is_verified": False}


def test_secret_scan():
    results = {"settings.py": [FINDING]}
    assert gate.secret_scan({}, None)["status"] == "pass"
    new = gate.secret_scan(results, {"results": {}})
    assert new["status"] == "fail" and "1 new possible secret(s): settings.py:4 (Secret Keyword)" in new["reason"]
    reviewed = {"results": {"settings.py": [{**FINDING, "line_number": 9, "is_secret": False}]}}
    assert gate.secret_scan(results, reviewed)["status"] == "pass", "a reviewed false positive that moved lines"
    unreviewed = {"results": {"settings.py": [FINDING]}}
    assert "never reviewed" in gate.secret_scan(results, unreviewed)["reason"]
    real = {"results": {"settings.py": [{**FINDING, "is_secret": True}]}}
    assert "marks as real" in gate.secret_scan(results, real)["reason"]
    assert gate.secret_scan(None, None, error="no detect-secrets")["status"] == "fail"


def test_the_verdict_is_safe_only_when_every_gate_ran_and_passed():
    release = {"release_id": "1.2.0+0123456789ab", "site": "blog", "version": "1.2.0", "sha256": "0" * 64}
    passed = [gate.result(name, True, "ok") for name in gate.GATES]
    assert gate.verdict(release, passed)["safe_to_ship"] is True
    partial = gate.verdict(release, passed[:-1])
    assert partial["safe_to_ship"] is False and partial["failed"] == ["secret_scan"]
    hotfix = gate.verdict({**release, "version": "1.2.1-hotfix.1"}, passed)
    assert hotfix["hotfix"] is True


SAMPLE = Path(__file__).resolve().parents[3] / "sample_site"


@pytest.fixture(scope="module")
def cluster():
    with ScratchCluster() as made:
        yield made


def copy_migrations(tmp_path, version="v2"):
    target = tmp_path / "migrations"
    shutil.copytree(SAMPLE / version / "migrations", target)
    return target


def test_migrations_that_apply_and_revert_pass(cluster, tmp_path):
    outcome = gate.migrations_gate(str(copy_migrations(tmp_path)), cluster, database="ok_check")
    assert outcome["status"] == "pass", outcome
    assert outcome["details"]["migrations"] == 2


def test_a_rollback_that_does_not_revert_is_named(cluster, tmp_path):
    migrations = copy_migrations(tmp_path)
    (migrations / "002_add_note_tags.rollback.sql").write_text("SELECT 1;\n")
    outcome = gate.migrations_gate(str(migrations), cluster, database="norevert_check")
    assert outcome["status"] == "fail"
    assert "002_add_note_tags.rollback.sql does not revert 002_add_note_tags.sql" in outcome["reason"]
    assert "tags" in outcome["reason"], "names what the rollback left"


def test_a_missing_rollback_a_failing_migration_and_a_failing_rollback(cluster, tmp_path):
    migrations = copy_migrations(tmp_path)
    (migrations / "002_add_note_tags.rollback.sql").unlink()
    assert "without a rollback script: 002_add_note_tags.sql" in gate.migrations_gate(str(migrations), cluster)["reason"]
    bad = gate.migrations_gate(str(copy_migrations(tmp_path / "b", "v3-bad-migration")), cluster, database="bad_check")
    assert bad["status"] == "fail" and "003_archive_notes.sql fails on an empty database" in bad["reason"]
    broken = copy_migrations(tmp_path / "c")
    (broken / "001_create_notes.rollback.sql").write_text("DROP TABLE no_such_table;\n")
    outcome = gate.migrations_gate(str(broken), cluster, database="broken_check")
    assert "001_create_notes.rollback.sql fails after 001_create_notes.sql" in outcome["reason"]


def head(repo):
    return subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()


def test_the_commit_judged_must_be_the_one_the_artifact_was_built_from(repo):
    policy = gate.check_policy({})
    assert gate.git_policy(str(repo), "v1.2.0", "1.2.0", policy, packed=head(repo))["status"] == "pass"
    outcome = gate.git_policy(str(repo), "v1.2.0", "1.2.0", policy, packed="")
    assert outcome["status"] == "fail" and "built from no commit (a directory)" in outcome["reason"]


def feature_release(repo):
    git(repo, "checkout", "-q", "-b", "feature/x")
    (repo / "CHANGELOG.md").write_text("## 1.3.0\n")
    git(repo, "commit", "-qam", "feature")
    git(repo, "tag", "-a", "v1.3.0", "-m", "x")
    git(repo, "checkout", "-q", "main")
    return head_of(repo, "feature/x")


def head_of(repo, ref):
    return subprocess.run(["git", "-C", str(repo), "rev-parse", ref], capture_output=True, text=True).stdout.strip()


def test_only_the_policy_remote_counts_and_replace_refs_are_ignored(repo):
    feature = feature_release(repo)
    git(repo, "update-ref", "refs/remotes/fork/main", feature)
    assert check(repo, ref="v1.3.0", version="1.3.0")["status"] == "fail", "another remote's main is not a release branch"
    git(repo, "update-ref", "refs/remotes/origin/release/1.3", feature)
    assert check(repo, ref="v1.3.0", version="1.3.0")["status"] == "pass"
    git(repo, "update-ref", "-d", "refs/remotes/origin/release/1.3")
    # `git replace` showing main's tip with the feature commit as its parent: the real main does not have it.
    tree = head_of(repo, "main^{tree}")
    fake = subprocess.run(["git", "-C", str(repo), "commit-tree", tree, "-p", head_of(repo, "main"), "-p", feature, "-m", "x"],
                          capture_output=True, text=True, env={"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@e",
                                                               "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@e",
                                                               "PATH": "/usr/bin:/bin"}).stdout.strip()
    git(repo, "replace", head_of(repo, "main"), fake)
    assert check(repo, ref="v1.3.0", version="1.3.0")["status"] == "fail"


def test_a_tag_object_of_another_name_is_not_the_annotated_tag(repo):
    git(repo, "tag", "-a", "v0.9.0", "-m", "old")
    obj = head_of(repo, "refs/tags/v0.9.0")
    git(repo, "tag", "-d", "v1.2.0")
    git(repo, "update-ref", "refs/tags/v1.2.0", obj)
    assert "no annotated tag of its own" in check(repo)["reason"]


def test_credentials_never_reach_a_reason():
    pins, loose = gate.pinned_requirements("private @ https://deploy:ghp_secret@git.example.org/p.tar.gz\n")
    outcome = gate.dependency_audit({"dependencies": []}, pins, loose, [], TODAY)
    assert "ghp_secret" not in outcome["reason"] and "//***@" in outcome["reason"]


def test_odd_audit_reports_fail_closed_and_versions_compare_as_versions():
    assert audit([{"name": "flask", "version": "3.0.0", "vulns": None}])["status"] == "fail"
    assert audit(["flask"], pins={"flask": "3.0"})["status"] == "fail"
    assert audit([{"name": "flask", "version": "3.0.0", "vulns": []}], pins={"flask": "3.0"})["status"] == "pass"


def test_a_baseline_that_is_not_one_fails_the_secret_scan():
    assert "not a detect-secrets baseline" in gate.secret_scan({}, {"results": []})["reason"]
