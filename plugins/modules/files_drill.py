#!/usr/bin/python
# Copyright: opspack developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Prove a site-files backup restores: unpack it into a scratch directory and digest the tree again."""

from __future__ import annotations

DOCUMENTATION = r"""
module: files_drill
short_description: Prove a site-files backup restores, file by file
version_added: 0.1.0
author: opspack developers (@opspack)
description:
  - Takes the latest (or a chosen) backup made by M(opspack.platform.files_backup), verifies
    its size and sha256 against its manifest, unpacks it into a new private scratch directory,
    and proves the tree. The number of files, their total size and the tree digest (a sha256
    over every file's relative path, size and sha256) must equal what the manifest recorded at
    backup time.
  - Refuses an archive with a member that would land outside the scratch directory (absolute
    paths, C(..)) or that is a device or pipe. Links are kept in the archive but not unpacked,
    as the digest covers regular files only, like the backup's.
  - Measures the recovery time (RTO, from start to verified) and the recovery point (RPO, the
    backup's age). The scratch directory is removed afterwards, also when the drill fails; the
    site's own files are never touched.
  - A failed drill fails the task with the reason and still returns every field below.
extends_documentation_fragment:
  - opspack.platform.backup_selection
options:
  scratch_parent:
    description: Directory the scratch directory is made in; it needs room for the unpacked tree.
    type: path
    default: /var/tmp
attributes:
  check_mode:
    description: Can run in check_mode and return changed status prediction without modifying the target.
    support: partial
    details: Chooses the backup and verifies its checksum; unpacks nothing.
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in check_mode), when in diff mode.
    support: none
seealso:
  - module: opspack.platform.files_backup
  - module: opspack.platform.restore_drill
"""

EXAMPLES = r"""
- name: Drill the newest backup of the blog's uploads
  opspack.platform.files_drill:
    site: blog
    backup_dir: /var/backups/opspack/blog/files/shared_uploads
  become: true
  register: uploads_drill
  failed_when: false
"""

RETURN = r"""
passed:
  description: Whether every check passed.
  returned: always
  type: bool
reason:
  description: Why the drill failed, or C(all checks passed).
  returned: always
  type: str
site:
  description: The site drilled.
  returned: always
  type: str
engine:
  description: Always C(files).
  returned: always
  type: str
backup_id:
  description: The backup drilled.
  returned: when a backup was found
  type: str
backup_ended_at:
  description: When that backup ended, in UTC.
  returned: when a backup was found
  type: str
started_at:
  description: When the drill started, in UTC.
  returned: always
  type: str
rpo_seconds:
  description: Age of the backup when the drill started.
  returned: when a backup was found
  type: int
rto_seconds:
  description: Seconds from the start of the drill to the proven tree.
  returned: always
  type: float
checks:
  description: What was checked (checksum, files, bytes, tree digest).
  returned: always
  type: dict
scratch_removed:
  description: Whether the scratch directory is gone again.
  returned: when the tree was unpacked
  type: bool
opspack_event:
  description: The drill for the records (C(operation=drill), C(result) pass or fail; see the records callback).
  returned: when not in check mode
  type: dict
  sample: {"kind": "operation", "site": "blog", "operation": "drill", "result": "fail", "engine": "files",
           "backup_id": "blog-files-20261123T040000Z", "backup_ended_at": "2026-11-23T04:00:41Z",
           "rto_s": 12.4, "rpo_s": 30559, "step": "restore the backup into scratch and prove it",
           "reason": "the restored files differ from the backup: 1 files restored, the backup had 2"}
"""

import os
import tarfile

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.opspack.platform.plugins.module_utils import backup
from ansible_collections.opspack.platform.plugins.module_utils.tree import tree_digest

ENGINE = "files"


def members_to_unpack(tar: tarfile.TarFile, root: str) -> list:
    """The directories and regular files of the archive, after refusing any member that would
    land outside root or is a device or pipe. Links are not unpacked: the tree digest covers
    regular files only, and a link unpacked could lead a later member out of the tree."""
    root = os.path.realpath(root)
    members = []
    for member in tar.getmembers():
        target = os.path.realpath(os.path.join(root, member.name))
        if os.path.isabs(member.name) or (target != root and not target.startswith(root + os.sep)):
            raise backup.BackupError(f"the archive holds {member.name!r}, which would land outside the tree: refusing it")
        if member.isreg() or member.isdir():
            members.append(member)
        elif not (member.issym() or member.islnk()):
            raise backup.BackupError(f"the archive holds {member.name!r}, which is not a file, directory or link")
    return members


def prove(manifest: dict, path: str, scratch: str, result: dict) -> None:
    tree = os.path.join(scratch, "tree")
    os.mkdir(tree, 0o700)
    with tarfile.open(path, "r:gz") as tar:
        members = members_to_unpack(tar, tree)
        # Checked above; the data filter (Python 3.11.4+) checks again where it exists.
        if hasattr(tarfile, "data_filter"):
            tar.extractall(tree, members=members, filter="data")
        else:
            tar.extractall(tree, members=members)  # nosec B202 - members checked by members_to_unpack
    files, size, digest = tree_digest(tree)
    result["checks"].update(files=files, bytes=size, tree_sha256=digest == manifest.get("tree_sha256"))
    problems = []
    if files != manifest.get("files"):
        problems.append(f"{files} files restored, the backup had {manifest.get('files')}")
    if size != manifest.get("bytes"):
        problems.append(f"{size} bytes restored, the backup had {manifest.get('bytes')}")
    if digest != manifest.get("tree_sha256"):
        problems.append("the restored tree's digest differs from the one recorded at backup time")
    if problems:
        raise backup.BackupError("the restored files differ from the backup: " + "; ".join(problems))


def main() -> None:
    module = AnsibleModule(argument_spec=backup.drill_argument_spec(), supports_check_mode=True)
    # The unpacked tree is the site's data: readable by its owner only.
    os.umask(0o077)
    backup.run_drill(module, ENGINE, prove)


if __name__ == "__main__":
    main()
