"""Unit tests for opspack.platform.release_artifact, run for real on temporary trees and repositories."""

from __future__ import annotations

import hashlib
import os
import subprocess
import tarfile

import pytest

from ansible_collections.opspack.platform.plugins.module_utils import release


def site_tree(root):
    (root / "app").mkdir(parents=True)
    (root / "app" / "wsgi.py").write_text("def application(environ, start_response):\n    pass\n")
    (root / "migrations").mkdir()
    (root / "migrations" / "001_init.sql").write_text("CREATE TABLE t (id int);\n")
    (root / "bin").mkdir()
    (root / "bin" / "start").write_text("#!/bin/sh\nexec gunicorn app.wsgi\n")
    os.chmod(root / "bin" / "start", 0o700)
    os.symlink("bin/start", root / "start")
    # Never shipped:
    (root / ".env").write_text("SECRET=lab-canary-release-0001\n")
    (root / "app" / "__pycache__").mkdir()
    (root / "app" / "__pycache__" / "wsgi.cpython-311.pyc").write_bytes(b"\0")
    return root


def build(run_module, tmp_path, check_mode=False, **args) -> dict:
    args.setdefault("site", "blog")
    args.setdefault("version", "1.4.2")
    args.setdefault("dest", str(tmp_path / "artifacts"))
    return run_module("release_artifact", check_mode=check_mode, **args)


def test_a_tree_becomes_a_reproducible_tarball_named_by_version_and_digest(run_module, tmp_path):
    tree = site_tree(tmp_path / "src")
    result = build(run_module, tmp_path, source=str(tree))
    assert not result.get("failed"), result
    assert result["changed"] and result["release_id"] == f"1.4.2+{result['sha256'][:12]}"
    path = tmp_path / "artifacts" / "blog" / f"{result['release_id']}.tar.gz"
    assert result["path"] == str(path) and hashlib.sha256(path.read_bytes()).hexdigest() == result["sha256"]
    assert (tmp_path / "artifacts" / "blog" / f"{result['release_id']}.tar.gz.sha256").read_text().startswith(result["sha256"])
    with tarfile.open(path) as tar:
        members = {member.name: member for member in tar.getmembers()}
    assert sorted(members) == ["app", "app/wsgi.py", "bin", "bin/start", "migrations", "migrations/001_init.sql", "start"]
    assert members["bin/start"].mode == 0o755 and members["app/wsgi.py"].mode == 0o644
    assert all(member.uid == 0 and member.mtime == 0 for member in members.values())
    assert members["start"].issym() and members["start"].linkname == "bin/start"
    assert b"lab-canary-release-0001" not in path.read_bytes()
    # Built again: the same bytes, nothing changed.
    again = build(run_module, tmp_path, source=str(tree))
    assert again["changed"] is False and again["sha256"] == result["sha256"]


def test_the_digest_depends_on_content_only(run_module, tmp_path):
    first = build(run_module, tmp_path, source=str(site_tree(tmp_path / "one")))
    second_tree = site_tree(tmp_path / "two")
    os.utime(second_tree / "app" / "wsgi.py", (1, 1))
    os.chmod(second_tree / "migrations" / "001_init.sql", 0o600)
    assert build(run_module, tmp_path, source=str(second_tree))["sha256"] == first["sha256"]
    (second_tree / "app" / "wsgi.py").write_text("changed\n")
    assert build(run_module, tmp_path, source=str(second_tree))["sha256"] != first["sha256"]


def test_a_git_ref_gives_the_same_release_as_its_tree(run_module, tmp_path):
    tree = site_tree(tmp_path / "repo")
    env = dict(os.environ, GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@example.invalid",
               GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@example.invalid")
    for command in (["init", "-q"], ["add", "-A"], ["commit", "-qm", "v1"], ["tag", "v1.4.2"]):
        subprocess.run(["git", "-C", str(tree), *command], check=True, env=env, capture_output=True)
    sha = subprocess.run(["git", "-C", str(tree), "rev-parse", "HEAD"], check=True, capture_output=True, text=True).stdout.strip()
    from_git = build(run_module, tmp_path, git_repo=str(tree), git_ref="v1.4.2")
    assert not from_git.get("failed"), from_git
    assert from_git["git_sha"] == sha and from_git["dirty"] is False
    from_dir = build(run_module, tmp_path, source=str(tree))
    assert from_dir["git_sha"] == sha and from_dir["sha256"] == from_git["sha256"] and from_dir["changed"] is False
    (tree / "app" / "wsgi.py").write_text("uncommitted\n")
    assert build(run_module, tmp_path, source=str(tree))["dirty"] is True
    unknown = build(run_module, tmp_path, git_repo=str(tree), git_ref="v9.9.9")
    assert unknown["failed"] and "git rev-parse" in unknown["msg"]


@pytest.mark.parametrize("version", ["v1", "1.4", "01.2.3", "1.2.3 ", "1.2.3;rm -rf", "latest", "1.2.3-" + "x" * 60])
def test_a_malformed_version_is_refused_before_anything_is_built(run_module, tmp_path, version):
    result = build(run_module, tmp_path, source=str(site_tree(tmp_path / "src")), version=version)
    assert result["failed"] and "is not a release version" in result["msg"]
    assert not (tmp_path / "artifacts").exists()


def test_a_link_out_of_the_tree_is_refused(run_module, tmp_path):
    tree = site_tree(tmp_path / "src")
    os.symlink("/etc/passwd", tree / "passwd")
    result = build(run_module, tmp_path, source=str(tree))
    assert result["failed"] and "links to /etc/passwd, outside the release tree" in result["msg"]


def test_a_chain_of_links_that_only_leads_out_when_followed_is_refused(run_module, tmp_path):
    tree = site_tree(tmp_path / "src")
    (tree / "a" / "b" / "c" / "d").mkdir(parents=True)
    os.symlink("../../../..", tree / "a" / "b" / "c" / "d" / "l")
    (tree / "migrations").mkdir(exist_ok=True)
    os.symlink("../a/b/c/d/l/../../../../root/secret", tree / "migrations" / "x")
    result = build(run_module, tmp_path, source=str(tree))
    assert result["failed"] and "migrations/x links to" in result["msg"] and "climbs above the root" in result["msg"]
    assert not (tmp_path / "artifacts").exists()


def test_check_mode_names_the_release_and_writes_nothing(run_module, tmp_path):
    result = build(run_module, tmp_path, check_mode=True, source=str(site_tree(tmp_path / "src")))
    assert result["changed"] and result["release_id"].startswith("1.4.2+")
    assert not (tmp_path / "artifacts").exists()


@pytest.mark.parametrize(("value", "good"), [("1.4.2+0a1b2c3d4e5f", True), ("2.0.0-rc.1+0a1b2c3d4e5f", True),
                                             ("1.4.2", False), ("1.4.2+0A1B", False), ("../1.4.2+0a1b2c3d4e5f", False)])
def test_release_ids_are_checked(value, good):
    if good:
        assert release.check_release_id(value) == value
    else:
        with pytest.raises(release.ReleaseError):
            release.check_release_id(value)
