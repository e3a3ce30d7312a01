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

from ansible_collections.opspack.platform.plugins.module_utils.common import OpspackError

# Semantic versioning's core with an optional pre-release and build part; at most 64 characters.
VERSION = re.compile(r"^(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)(-[0-9A-Za-z][0-9A-Za-z.-]*)?$")
RELEASE_ID = re.compile(r"^(?P<version>[0-9A-Za-z.-]{5,64})\+(?P<digest>[0-9a-f]{12})$")
# Never shipped: version control, caches, virtual environments and local secrets.
EXCLUDED = (".git", ".hg", ".svn", "__pycache__", ".venv", "venv", "node_modules", ".env", ".pytest_cache")


class ReleaseError(OpspackError):
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


# More links than this on one path is a loop (Linux's own limit is 40).
MAX_LINKS_ON_A_PATH = 40


def resolve_in_tree(links: dict[str, str], path: str) -> str:
    """Where path (relative to a tree's root) lands, following the tree's own links the way the
    kernel would, without touching the disk: links maps each link's relative path to its text.

    Raises ReleaseError when the path or any link on the way is absolute, climbs above the root
    (at any step, not only at the end: `l/../..` where l points at the root climbs out), or loops.
    A link's text is not enough to judge it: `a/l -> ../..` may look harmless and still lead out
    once another link goes through it."""
    pending = [part for part in path.split("/") if part not in ("", ".")]
    if path.startswith("/"):
        raise ReleaseError(f"{path} is an absolute path")
    resolved: list[str] = []
    followed = 0
    while pending:
        part = pending.pop(0)
        if part == "..":
            if not resolved:
                raise ReleaseError(f"{path} climbs above the root" + (f" after {followed} link(s)" if followed else ""))
            resolved.pop()
            continue
        candidate = "/".join(resolved + [part])
        if candidate not in links:
            resolved.append(part)
            continue
        followed += 1
        if followed > MAX_LINKS_ON_A_PATH:
            raise ReleaseError(f"{path} follows more than {MAX_LINKS_ON_A_PATH} links (a loop)")
        text = links[candidate]
        if text.startswith("/"):
            raise ReleaseError(f"{candidate} links to the absolute path {text}")
        # A link's text is relative to the directory holding the link.
        pending = [piece for piece in text.split("/") if piece not in ("", ".")] + pending
    return "/".join(resolved)


def check_links(links: dict[str, str]) -> None:
    """Refuse a tree any of whose links, resolved through the others, lands outside it."""
    for name in sorted(links):
        try:
            resolve_in_tree(links, name)
        except ReleaseError as exc:
            raise ReleaseError(f"{name} links to {links[name]}, outside the release tree ({exc})") from None


def build_tarball(root: str) -> bytes:
    """A gzipped tar of the tree that depends on its content only: sorted entries, owner root,
    times zero, modes reduced to 0755/0644 (and 0755 for executables), links kept as links
    (only relative ones that resolve inside the tree, see check_links), no devices."""
    members = tree_members(root)
    check_links({relative: os.readlink(os.path.join(root, relative))
                 for relative in members if os.path.islink(os.path.join(root, relative))})
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for relative in members:
            full = os.path.join(root, relative)
            info = tar.gettarinfo(full, arcname=relative)
            info.uid = info.gid = 0
            info.uname = info.gname = "root"
            info.mtime = 0
            info.pax_headers = {}
            if info.issym():
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


def deploy_order(entry: dict) -> tuple:
    """Where a release stands in its site's history: the order deploys put it live in (a rollback
    changes nothing here), then, for records written before that was kept, when it was unpacked."""
    return (entry.get("deploy_order", 0), entry.get("unpacked_at", ""))


def previous_good(record: dict, serving: str, present: set[str], interrupted: dict | None = None) -> str:
    """The release a plain rollback goes back to: of the releases still on the host that went
    live and were neither failed nor rolled back, the one deployed last before the one that
    serves. Never a release deployed after it (that is a deploy, which applies its migrations),
    so rolling back twice goes further back instead of forward to the release just left.

    When what serves is not what the record names current, a run was interrupted after its
    switch. interrupted (the lock that run left: its operation and release) says which: after a
    deploy, the rollback goes back to the recorded release; after a rollback (or, without the
    lock, when what serves went live before), it finishes on the release that serves.
    Empty when there is none."""
    releases = record.get("releases", {})
    current = record.get("current", {}).get("release_id", "")

    def good(release_id: str) -> bool:
        return release_id in present and releases.get(release_id, {}).get("status") == "live"

    if serving and current and serving != current and serving in releases:
        lock = interrupted or {}
        killed_deploy = lock.get("operation") == "deploy" and lock.get("version") == serving
        if not killed_deploy and (lock.get("operation") == "rollback" or releases[serving].get("status") == "live"):
            return serving
        return current if good(current) else ""
    base = serving or current
    if base not in releases:
        return ""
    here = deploy_order(releases[base])
    earlier = [(deploy_order(entry), release_id) for release_id, entry in releases.items()
               if release_id != base and good(release_id) and deploy_order(entry) < here]
    return max(earlier)[1] if earlier else ""
