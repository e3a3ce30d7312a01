# Copyright: opspack developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A site's deploy lock on its host: where it is and what its holder file says. deploy_lock
takes and releases it; site_release reads what an interrupted run left in it."""

from __future__ import annotations

import json
import os
import time

HOLDER_FILE = "holder.json"
# What a lock may say about its holder; nothing else is read back or returned.
HOLDER_FIELDS = ("holder", "run_id", "version", "operation", "reason", "since")


def lock_dir(site_dir: str) -> str:
    return os.path.join(site_dir, "deploy.lock")


def read_holder(path: str) -> tuple[dict, int]:
    """The holder recorded in a lock directory and the lock's age; a lock whose holder file
    was never written (its run died between mkdir and write) is held by an unknown run."""
    try:
        age = int(time.time() - os.stat(path).st_mtime)
    except FileNotFoundError:
        return {}, 0
    try:
        with open(os.path.join(path, HOLDER_FILE), encoding="utf-8") as handle:
            found = json.load(handle)
        holder = {key: str(found.get(key, "")) for key in HOLDER_FIELDS}
    except (OSError, ValueError):
        holder = {key: "" for key in HOLDER_FIELDS}
        holder["holder"] = "unknown (the lock has no readable holder file)"
    return holder, max(age, 0)
