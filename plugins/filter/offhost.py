# Copyright: opspack developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""offhost_missing: the backups kept on a host whose off-host copy the control node lacks."""

from __future__ import annotations

import os


def offhost_missing(results, found, backup_dir, offhost_dir):
    """From the backup modules' results of this run (each names the backups retention kept, the
    scheduled ones included) and a find of the off-host directory: every kept backup whose data
    file or manifest has no copy there, with where each comes from and goes to."""
    have = {os.path.normpath(item["path"]) for item in (found or {}).get("files", []) if "path" in item}
    missing = []
    for result in results or []:
        if not isinstance(result, dict) or result.get("failed") or result.get("skipped"):
            continue
        backup_id, path = result.get("backup_id"), result.get("path")
        if not backup_id or not path or not os.path.basename(path).startswith(backup_id):
            continue
        directory = os.path.dirname(path)
        suffix = os.path.basename(path)[len(backup_id):]
        dest_dir = os.path.normpath(os.path.join(offhost_dir, os.path.relpath(directory, backup_dir)))
        for kept in result.get("kept") or []:
            item = {"backup_id": kept, "src": os.path.join(directory, kept + suffix),
                    "manifest_src": os.path.join(directory, kept + ".manifest.json"), "dest_dir": dest_dir,
                    "offhost_path": os.path.join(dest_dir, kept + suffix),
                    "offhost_manifest": os.path.join(dest_dir, kept + ".manifest.json")}
            if item["offhost_path"] not in have or item["offhost_manifest"] not in have:
                missing.append(item)
    return sorted(missing, key=lambda item: item["offhost_path"])


class FilterModule:
    """Off-host copies of backups."""

    def filters(self):
        return {"offhost_missing": offhost_missing}
