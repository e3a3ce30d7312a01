# Copyright: opspack developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Release artifacts: versions, release ids and reproducible tarballs of a site's source tree.

A release id is <version>+<first 12 hex digits of the tarball's sha256>: the same tree always
gives the same id (and the same bytes), two different trees never share one, and it sorts and
reads as the version first. It is fixed once, on the control node, for every host of a run.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import re
import stat
import tarfile

from ansible_collections.opspack.platform.plugins.module_utils.backup import BackupError

# Semantic versioning's core with an optional pre-release and build part; at most 64 characters.
VERSION = re.compile(r"^(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)(-[0-9A-Za-z][0-9A-Za-z.-]*)?$")
RELEASE_ID = re.compile(r"^(?P<version>[0-9A-Za-z.-]{5,64})\+(?P<digest>[0-9a-f]{12})$")
# Never shipped: version control, caches, virtual environments and local secrets.
EXCLUDED = (".git", ".hg", ".svn", "__pycache__", ".venv", "venv", "node_modules", ".env", ".pytest_cache")


class ReleaseError(BackupError):
    """A release cannot be built or used; the message says why, for an operator."""


def check_version(version: str) -> str:
    if not isinstance(version, str) or len(version) > 64 or not VERSION.match(version):
        raise ReleaseError(f"version {version!r} is not a release version such as 1.4.2 or 2.0.0-rc.1 "
                           "(MAJOR.MINOR.PATCH, an optional -pre-release, at most 64 characters)")
    return version


def release_id(version: str, sha256: str) -> str:
    return f"{check_version(version)}+{sha256[:12]}"


def check_release_id(value: str) -> str:
    match = RELEASE_ID.match(value or "")
    if not match or not VERSION.match(match.group("version")):
        raise ReleaseError(f"release id {value!r} is not <version>+<12 hex digits> such as 1.4.2+0a1b2c3d4e5f")
    return value


def tree_members(root: str) -> list[str]:
    """Relative paths of everything shipped below root, sorted, directories before their contents."""
    found = []
    for directory, subdirectories, names in os.walk(root):
        subdirectories[:] = sorted(name for name in subdirectories if name not in EXCLUDED)
        for name in sorted(subdirectories + [name for name in names if name not in EXCLUDED]):
            found.append(os.path.relpath(os.path.join(directory, name), root))
    return sorted(found)


def build_tarball(root: str) -> bytes:
    """A gzipped tar of the tree that depends on its content only: sorted entries, owner root,
    times zero, modes reduced to 0755/0644 (and 0755 for executables), links kept as links
    (only relative ones that stay inside the tree), no devices."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for relative in tree_members(root):
            full = os.path.join(root, relative)
            info = tar.gettarinfo(full, arcname=relative)
            info.uid = info.gid = 0
            info.uname = info.gname = "root"
            info.mtime = 0
            info.pax_headers = {}
            if info.issym():
                target = os.path.normpath(os.path.join(os.path.dirname(relative), info.linkname))
                if os.path.isabs(info.linkname) or target.startswith(".."):
                    raise ReleaseError(f"{relative} links to {info.linkname}, outside the release tree")
                tar.addfile(info)
            elif info.isdir():
                info.mode = 0o755
                tar.addfile(info)
            elif info.isreg():
                info.mode = 0o755 if os.stat(full).st_mode & stat.S_IXUSR else 0o644
                with open(full, "rb") as handle:
                    tar.addfile(info, handle)
            else:
                raise ReleaseError(f"{relative} is not a file, directory or link: it cannot be shipped")
    # gzip with a zero time and no file name in its header, so the bytes depend on content only.
    return gzip.compress(buffer.getvalue(), compresslevel=6, mtime=0)


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
