# Copyright: opspack developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Redis RDB files: what redis-check-rdb says about one (a backup counts its keys with it, a drill
checks the count again)."""

from __future__ import annotations

import os
import re

from ansible_collections.opspack.platform.plugins.module_utils.backup import BackupError

KEYS_READ = re.compile(r"(\d+) keys read")
ALREADY_EXPIRED = re.compile(r"(\d+) already expired")
EXPIRES = re.compile(r"(\d+) expires")


def check_rdb(module, rdb: str, workdir: str) -> dict:
    """redis-check-rdb's verdict on a file: {keys, expires, expired}; a BackupError if it is damaged.

    redis-check-rdb is redis-server under another name (it picks its role from argv[0]):
    where the package ships no such link, one is made in workdir."""
    program = module.get_bin_path("redis-check-rdb")
    if program is None:
        server = module.get_bin_path("redis-server", required=True)
        program = os.path.join(workdir, "redis-check-rdb")
        os.symlink(server, program)
    rc, out, err = module.run_command([program, rdb])
    text = out + err
    if rc != 0 or "RDB looks OK" not in text:
        lines = [line for line in text.splitlines() if line.strip()]
        raise BackupError(f"redis-check-rdb rejects the RDB: {' | '.join(lines[-3:])}")

    def count(pattern):
        found = pattern.search(text)
        return int(found.group(1)) if found else 0
    return {"keys": count(KEYS_READ), "expires": count(EXPIRES), "expired": count(ALREADY_EXPIRED)}
