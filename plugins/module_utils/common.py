# Copyright: opspack developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What every opspack module shares, whatever its concern: the error an operator reads, site
names, checksums and atomic writes."""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile

# A site's name: it names directories, units, databases, backups and nginx files.
SITE_NAME = r"[a-z0-9][a-z0-9_-]*"


class OpspackError(Exception):
    """A step cannot go on; the message says why, for an operator."""


def check_site_name(site: str) -> str:
    if not isinstance(site, str) or not re.fullmatch(SITE_NAME, site):
        raise OpspackError(f"site name {site!r} is not valid (lower-case letters, digits, - and _, "
                           "starting with a letter or digit)")
    return site


def sha256_file(path: str, chunk_size: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(chunk_size), b""):
            digest.update(chunk)
    return digest.hexdigest()


def makedirs_mode(path: str, mode: int = 0o755) -> None:
    """os.makedirs, with every directory it creates given exactly mode: os.makedirs' own mode is
    cut by the umask, and a host's login.defs may set 027, which would shut out the other users
    (postgres, the site's user, nginx) that must reach what is inside."""
    missing = []
    head = os.path.abspath(path)
    while head and not os.path.isdir(head):
        missing.append(head)
        head = os.path.dirname(head)
    for directory in reversed(missing):
        try:
            os.mkdir(directory, mode)
        except FileExistsError:
            continue
        os.chmod(directory, mode)


def write_bytes_atomic(path: str, data: bytes, mode: int = 0o640) -> None:
    """Replace path with data in one rename (temp file in the same directory, fsynced first), so
    a reader sees the old file or the new one, never half of it."""
    directory = os.path.dirname(path) or "."
    handle, temp = tempfile.mkstemp(prefix=".tmp-", dir=directory)
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(temp, mode)
        os.replace(temp, path)
    except BaseException:
        if os.path.exists(temp):
            os.unlink(temp)
        raise


def write_json_atomic(path: str, data: dict, mode: int = 0o640) -> None:
    """Deterministic JSON (sorted keys, two-space indent, final newline) via temp file + rename."""
    write_bytes_atomic(path, (json.dumps(data, indent=2, sort_keys=True) + "\n").encode("utf-8"), mode)
