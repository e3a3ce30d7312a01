# Copyright: opspack developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Off-host copies of backups: which the control node lacks, and where they live there."""

from __future__ import annotations

import os


def _taken(results):
    """The backup module results of a run that succeeded, each with its data file's path."""
    for result in results or []:
        if not isinstance(result, dict) or result.get("failed") or result.get("skipped"):
            continue
        backup_id, path = result.get("backup_id"), result.get("path")
        if backup_id and path and os.path.basename(path).startswith(backup_id):
            yield result


def _dest_dir(path, backup_dir, offhost_dir):
    """The off-host directory mirroring the host directory of path below backup_dir. The
    control node's ~ is expanded: find reports expanded paths, and they are compared."""
    return os.path.normpath(os.path.join(os.path.expanduser(offhost_dir), os.path.relpath(os.path.dirname(path), backup_dir)))


def offhost_missing(results, found, backup_dir, offhost_dir):
    """From the backup modules' results of this run (each names the backups retention kept, the
    scheduled ones included) and a find of the off-host directory: every kept backup whose data
    file or manifest has no copy there, with where each comes from and goes to."""
    have = {os.path.normpath(item["path"]) for item in (found or {}).get("files", []) if "path" in item}
    missing = []
    for result in _taken(results):
        backup_id, path = result["backup_id"], result["path"]
        directory = os.path.dirname(path)
        suffix = os.path.basename(path)[len(backup_id):]
        dest_dir = _dest_dir(path, backup_dir, offhost_dir)
        for kept in result.get("kept") or []:
            item = {"backup_id": kept, "src": os.path.join(directory, kept + suffix),
                    "manifest_src": os.path.join(directory, kept + ".manifest.json"), "dest_dir": dest_dir,
                    "offhost_path": os.path.join(dest_dir, kept + suffix),
                    "offhost_manifest": os.path.join(dest_dir, kept + ".manifest.json")}
            if item["offhost_path"] not in have or item["offhost_manifest"] not in have:
                missing.append(item)
    return sorted(missing, key=lambda item: item["offhost_path"])


def offhost_dirs(results, backup_dir, offhost_dir):
    """The off-host directories of this run's successful backups, sorted, each once, with the
    backup ids the host kept there (its new one among them): where the retention policy is
    applied to the copies, which never deletes what the host kept. A failed backup's directory
    is left alone, as on the host."""
    keep = {}
    for result in _taken(results):
        ids = keep.setdefault(_dest_dir(result["path"], backup_dir, offhost_dir), set())
        ids.update([result["backup_id"], *(result.get("kept") or [])])
    return [{"path": path, "keep": sorted(ids)} for path, ids in sorted(keep.items())]


class FilterModule:
    """Off-host copies of backups."""

    def filters(self):
        return {"offhost_missing": offhost_missing, "offhost_dirs": offhost_dirs}
