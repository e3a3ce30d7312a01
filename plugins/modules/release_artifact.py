#!/usr/bin/python
# Copyright: opspack developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Build a site's release artifact on the control node: a reproducible tarball with its sha256."""

from __future__ import annotations

DOCUMENTATION = r"""
module: release_artifact
short_description: Build a reproducible release tarball of a site, with its sha256 and release id
version_added: 0.1.0
author: opspack developers (@opspack)
description:
  - Packs a site's source tree, from a directory (O(source)) or a git ref (O(git_repo) and
    O(git_ref), through C(git archive)), into C(<dest>/<site>/<release_id>.tar.gz) beside a
    C(.sha256) file and a C(.json) description (version, release id, sha256, git sha, source).
  - The tarball depends on the tree's content only (sorted entries, owner root, times zero,
    modes 0755/0644), so the same tree always gives the same bytes. Version control
    directories, caches, virtual environments and C(.env) files are never packed. Links that
    point outside the tree and special files are refused.
  - The release id is C(<version>+<first 12 hex digits of the sha256>); building the same tree
    again reports no change. Run it once per run on the control node (C(delegate_to=localhost),
    C(run_once)) and hand the id to every host, so that every host of a run gets the same release.
  - O(version) must be a release version, C(MAJOR.MINOR.PATCH) with an optional
    C(-pre-release) (semantic versioning, at most 64 characters); anything else is refused
    before anything is built.
options:
  site:
    description: The site the release is of (its artifacts go to O(dest)/O(site)).
    type: str
    required: true
  version:
    description: The release's version, such as C(1.4.2) or C(2.0.0-rc.1).
    type: str
    required: true
  source:
    description: Directory holding the site's release tree.
    type: path
  git_repo:
    description: A git repository to take the tree from, at O(git_ref).
    type: path
  git_ref:
    description: Branch, tag or commit of O(git_repo) to pack.
    type: str
  dest:
    description: Directory on the control node for the artifacts.
    type: path
    required: true
attributes:
  check_mode:
    description: Can run in check_mode and return changed status prediction without modifying the target.
    support: full
    details: Packs the tree in memory and reports the release id and sha256; writes nothing.
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in check_mode), when in diff mode.
    support: none
notes:
  - Runs where the source is, normally the control node.
seealso:
  - module: opspack.platform.pg_migrations
"""

EXAMPLES = r"""
- name: Build release 1.4.2 of the blog from its git tag
  opspack.platform.release_artifact:
    site: blog
    version: 1.4.2
    git_repo: ~/src/blog
    git_ref: v1.4.2
    dest: "{{ playbook_dir }}/../artifacts"
  delegate_to: localhost
  run_once: true
  register: blog_release
"""

RETURN = r"""
site:
  description: The site.
  returned: always
  type: str
release_id:
  description: The release id, C(<version>+<12 hex digits>).
  returned: always
  type: str
  sample: 1.4.2+0a1b2c3d4e5f
version:
  description: The version, as validated.
  returned: always
  type: str
sha256:
  description: sha256 of the tarball.
  returned: always
  type: str
path:
  description: Path of the tarball.
  returned: always
  type: str
size_bytes:
  description: Size of the tarball.
  returned: always
  type: int
files:
  description: Number of entries packed.
  returned: always
  type: int
git_sha:
  description: The commit packed (from O(git_ref), or the HEAD of a O(source) inside a git work tree), if any.
  returned: always
  type: str
dirty:
  description: Whether a O(source) inside a git work tree has uncommitted changes (the tarball holds them).
  returned: always
  type: bool
"""

import os
import shutil
import tarfile
import tempfile

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.opspack.platform.plugins.module_utils import release
from ansible_collections.opspack.platform.plugins.module_utils.common import (
    OpspackError, check_site_name, sha256_file, write_bytes_atomic, write_json_atomic)
from ansible_collections.opspack.platform.plugins.module_utils.events import utc_stamp


def git(module: AnsibleModule, repo: str, *args: str) -> str:
    rc, out, err = module.run_command(["git", "-C", repo, *args])
    if rc != 0:
        raise release.ReleaseError(f"git {args[0]} in {repo} failed: {(err or out).strip()[:500]}")
    return out


def tree_from_git(module: AnsibleModule, scratch: str) -> tuple[str, str]:
    repo, ref = module.params["git_repo"], module.params["git_ref"]
    sha = git(module, repo, "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}").strip()
    archive = os.path.join(scratch, "source.tar")
    git(module, repo, "archive", "--format=tar", f"--output={archive}", sha)
    tree = os.path.join(scratch, "tree")
    os.mkdir(tree)
    with tarfile.open(archive) as tar:
        if hasattr(tarfile, "data_filter"):
            tar.extractall(tree, filter="data")
        else:
            tar.extractall(tree)  # nosec B202 - git archive of a commit writes inside the tree only
    return tree, sha


def git_state_of(module: AnsibleModule, source: str) -> tuple[str, bool]:
    """HEAD and whether the tree has uncommitted changes, for a directory inside a git work tree."""
    if module.get_bin_path("git") is None:
        return "", False
    rc, out, _err = module.run_command(["git", "-C", source, "rev-parse", "--verify", "--quiet", "HEAD"])
    if rc != 0:
        return "", False
    _rc, status, _err = module.run_command(["git", "-C", source, "status", "--porcelain", "--", "."])
    return out.strip(), bool(status.strip())


def build(module: AnsibleModule, result: dict) -> None:
    params = module.params
    result["version"] = release.check_version(params["version"])
    check_site_name(params["site"])
    scratch = tempfile.mkdtemp(prefix="opspack-release-")
    try:
        if params["source"]:
            if not os.path.isdir(params["source"]):
                raise release.ReleaseError(f"source {params['source']} is not a directory")
            tree = params["source"]
            result["git_sha"], result["dirty"] = git_state_of(module, tree)
        else:
            tree, result["git_sha"] = tree_from_git(module, scratch)
        result["files"] = len(release.tree_members(tree))
        if result["files"] == 0:
            raise release.ReleaseError("the release tree is empty")
        data = release.build_tarball(tree)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    result["sha256"] = release.sha256_bytes(data)
    result["size_bytes"] = len(data)
    result["release_id"] = release.release_id(result["version"], result["sha256"])
    directory = os.path.join(params["dest"], params["site"])
    result["path"] = os.path.join(directory, result["release_id"] + ".tar.gz")
    if os.path.isfile(result["path"]) and sha256_file(result["path"]) == result["sha256"]:
        return
    result["changed"] = True
    if module.check_mode:
        return
    os.makedirs(directory, mode=0o755, exist_ok=True)
    write_bytes_atomic(result["path"], data, 0o644)
    write_bytes_atomic(result["path"] + ".sha256", f"{result['sha256']}  {os.path.basename(result['path'])}\n".encode())
    description = {key: result[key] for key in ("release_id", "version", "sha256", "size_bytes", "files", "git_sha", "dirty")}
    description.update(site=params["site"], source=params["source"] or f"{params['git_repo']}@{params['git_ref']}",
                       built_at=utc_stamp())
    write_json_atomic(os.path.join(directory, result["release_id"] + ".json"), description, 0o644)


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "site": {"type": "str", "required": True},
            "version": {"type": "str", "required": True},
            "source": {"type": "path"},
            "git_repo": {"type": "path"},
            "git_ref": {"type": "str"},
            "dest": {"type": "path", "required": True},
        },
        required_one_of=[("source", "git_repo")],
        mutually_exclusive=[("source", "git_repo")],
        required_together=[("git_repo", "git_ref")],
        supports_check_mode=True,
    )
    result = {"changed": False, "site": module.params["site"], "release_id": "", "version": "", "sha256": "", "path": "", "size_bytes": 0,
              "files": 0, "git_sha": "", "dirty": False}
    try:
        build(module, result)
    except (OpspackError, OSError, tarfile.TarError) as exc:
        module.fail_json(msg=str(exc), **result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
