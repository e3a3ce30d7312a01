#!/usr/bin/python
# Copyright: opspack developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Back up a site's files (its shared uploads): a compressed archive with a digest of the tree."""

from __future__ import annotations

DOCUMENTATION = r"""
module: files_backup
short_description: Archive a site's files with a checksum and a digest of the tree
version_added: 0.1.0
author: opspack developers (@opspack)
description:
  - Archives O(path) (by default a site's shared uploads) as a gzip-compressed tar in
    O(backup_dir), with a manifest holding the archive's sha256 and size, the number of files
    and bytes archived, and a digest of the tree (every file's relative path, size and sha256,
    in sorted order), so a restore can prove it got back exactly these files.
  - Members are added in sorted order with their owners, modes and times; symbolic links are
    kept as links, never followed out of the tree.
  - Applies retention like every opspack backup module.
extends_documentation_fragment:
  - opspack.platform.backup_retention
options:
  path:
    description: Directory to archive.
    type: path
    required: true
attributes:
  check_mode:
    description: Can run in check_mode and return changed status prediction without modifying the target.
    support: full
    details: Reports the backup it would take and the backups retention would delete.
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in check_mode), when in diff mode.
    support: none
seealso:
  - module: opspack.platform.pg_backup
"""

EXAMPLES = r"""
- name: Archive the blog's uploads
  opspack.platform.files_backup:
    site: blog
    path: /srv/blog/shared/uploads
    backup_dir: /var/backups/opspack/blog/files
  become: true
"""

RETURN = r"""
backup_id:
  description: Id of the backup taken (or that would be taken in check mode).
  returned: always
  type: str
  sample: blog-files-20261123T040000Z
path:
  description: Path of the archive on the host.
  returned: always
  type: str
manifest:
  description: The manifest written (empty in check mode), with files, bytes and tree_sha256.
  returned: always
  type: dict
sha256:
  description: sha256 of the archive.
  returned: when a backup was taken
  type: str
kept:
  description: Backup ids retention keeps, oldest first.
  returned: always
  type: list
  elements: str
deleted:
  description: Backup ids retention deleted (or would delete in check mode), oldest first.
  returned: always
  type: list
  elements: str
deleted_files:
  description: File names retention removed from O(backup_dir) (empty in check mode).
  returned: always
  type: list
  elements: str
opspack_event:
  description: The backup for the records (C(operation=backup), C(result) ok or failed; see the records callback).
  returned: when not in check mode
  type: dict
  sample: {"kind": "operation", "site": "blog", "operation": "backup", "result": "ok", "engine": "files",
           "backup_id": "blog-files-20261123T040000Z", "backup_ended_at": "2026-11-23T04:00:41Z",
           "timings": {"started": "2026-11-23T04:00:00Z", "ended": "2026-11-23T04:00:41Z", "duration_s": 41.0}}
"""

import hashlib
import os
import tarfile

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.opspack.platform.plugins.module_utils import backup
from ansible_collections.opspack.platform.plugins.module_utils.tree import HashingReader, digest_line, entries

ENGINE = "files"
FILE_SUFFIX = ".tar.gz"


def archive(module: AnsibleModule, partial: str) -> dict:
    """Archive the tree, hashing each file from the very bytes written into the archive (a file
    that changes meanwhile cannot make the manifest disagree with the archive)."""
    root = module.params["path"]
    if not os.path.isdir(root):
        raise backup.BackupError(f"{root} is not a directory: nothing to archive")
    lines, files, total = {}, 0, 0
    with tarfile.open(partial, "w:gz") as tar:
        tar.add(root, arcname=".", recursive=False)
        for relative in entries(root):
            full = os.path.join(root, relative)
            info = tar.gettarinfo(full, arcname=relative)
            if info.isreg():
                with open(full, "rb") as handle:
                    reader = HashingReader(handle)
                    tar.addfile(info, reader)
                lines[relative] = digest_line(relative, info.size, reader.digest.hexdigest())
                files, total = files + 1, total + info.size
            else:
                tar.addfile(info)
    digest = hashlib.sha256()
    for relative in sorted(lines):
        digest.update(lines[relative])
    return {"source": root, "files": files, "bytes": total, "tree_sha256": digest.hexdigest()}


def main() -> None:
    spec = backup.retention_argument_spec()
    spec.update(path={"type": "path", "required": True})
    module = AnsibleModule(argument_spec=spec, supports_check_mode=True)
    os.umask(0o077)
    backup.run_backup(module, ENGINE, FILE_SUFFIX, lambda partial: archive(module, partial))


if __name__ == "__main__":
    main()
