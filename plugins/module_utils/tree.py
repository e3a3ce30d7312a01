# Copyright: opspack developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Site file trees: the digest a files backup records and a files drill computes again."""

from __future__ import annotations

import hashlib
import os

from ansible_collections.opspack.platform.plugins.module_utils.common import sha256_file


class HashingReader:
    """Hands tarfile a file's bytes and hashes exactly those bytes on the way."""

    def __init__(self, handle):
        self.handle = handle
        self.digest = hashlib.sha256()

    def read(self, size=-1):
        chunk = self.handle.read(size)
        self.digest.update(chunk)
        return chunk


def entries(root: str) -> list[str]:
    """Every entry below root, relative, directories before their contents, in sorted order."""
    found = []
    for directory, subdirectories, names in os.walk(root):
        subdirectories.sort()
        found += [os.path.relpath(os.path.join(directory, name), root) for name in sorted(subdirectories + names)]
    return found


def digest_line(relative: str, size: int, sha256: str) -> bytes:
    return f"{relative}\0{size}\0{sha256}\n".encode("utf-8", "surrogateescape")


def tree_digest(root: str) -> tuple[int, int, str]:
    """Files, bytes and a sha256 over (relative path, size, sha256) of every regular file, in
    sorted order: what a restored tree must give again."""
    files, total, digest = 0, 0, hashlib.sha256()
    for relative in sorted(entries(root)):
        full = os.path.join(root, relative)
        if os.path.isfile(full) and not os.path.islink(full):
            size = os.path.getsize(full)
            digest.update(digest_line(relative, size, sha256_file(full)))
            files, total = files + 1, total + size
    return files, total, digest.hexdigest()
