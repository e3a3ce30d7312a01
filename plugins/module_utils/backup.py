# Copyright: opspack developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Backup sets shared by every engine: ids, manifests, checksums, retention.

A backup set in a backup directory is two files:

  <id>.<suffix>         the data, written as <id>.<suffix>.partial and renamed when complete
  <id>.manifest.json    written last, atomically; a data file without one is not a backup

An engine (PostgreSQL today, see postgresql_backup.py; Neo4j's dump/load would be another)
knows how to dump a consistent copy with facts that prove its content (row counts, content
checksums, the answer to a site query) and how to load a copy and read the same facts back.
Everything else (ids, manifests, checksums, retention, finding a backup) lives here, so a new
engine is one class plus a thin module. docs/backups.md describes the interface.
"""

from __future__ import annotations

import datetime
import json
import os
import re
import shutil
import tempfile
import time

from ansible_collections.opspack.platform.plugins.module_utils.common import (
    SITE_NAME, OpspackError, sha256_file, write_json_atomic)
from ansible_collections.opspack.platform.plugins.module_utils.events import event, tell_failures, timings

MANIFEST_SUFFIX = ".manifest.json"
PARTIAL_SUFFIX = ".partial"
MANIFEST_FORMAT = 1
# <site>-<engine>-<UTC stamp>: sorts by time within a site and engine, and says what it is.
BACKUP_ID = re.compile(r"^(?P<site>" + SITE_NAME + r"?)-(?P<engine>[a-z0-9]+)-(?P<stamp>\d{8}T\d{6}Z)$")
STAMP_FORMAT = "%Y%m%dT%H%M%SZ"
MANIFEST_REQUIRED = ("format", "backup_id", "site", "engine", "file", "sha256", "size_bytes", "started_at", "ended_at")


class BackupError(OpspackError):
    """A backup, drill or retention step cannot go on; the message says why, for an operator."""


class ChecksumMismatch(BackupError):
    """The data file is not the one its manifest describes."""


def utc_now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)


def to_iso(moment: datetime.datetime) -> str:
    return moment.astimezone(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def from_iso(text: str) -> datetime.datetime:
    try:
        return datetime.datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.timezone.utc)
    except (TypeError, ValueError) as exc:
        raise BackupError(f"{text!r} is not a UTC time such as 2026-11-23T04:00:00Z") from exc


def new_backup_id(site: str, engine: str, moment: datetime.datetime) -> str:
    backup_id = f"{site}-{engine}-{moment.astimezone(datetime.timezone.utc).strftime(STAMP_FORMAT)}"
    if not BACKUP_ID.match(backup_id):
        raise BackupError(f"site name {site!r} cannot name a backup (use lower-case letters, digits, - and _)")
    return backup_id


def manifest_path(directory: str, backup_id: str) -> str:
    return os.path.join(directory, backup_id + MANIFEST_SUFFIX)


def read_manifest(path: str) -> dict:
    try:
        with open(path, encoding="utf-8") as handle:
            manifest = json.load(handle)
    except (OSError, ValueError) as exc:
        raise BackupError(f"cannot read manifest {path}: {exc}") from exc
    missing = [key for key in MANIFEST_REQUIRED if key not in manifest]
    if not isinstance(manifest, dict) or missing:
        raise BackupError(f"manifest {path} lacks {', '.join(missing) or 'everything'}")
    return manifest


def own_name(manifest: dict, name: str, directory: str) -> None:
    """A manifest must be named after its own well-formed id, whose site and engine it holds:
    retention deletes by that id, so a copied or forged manifest (an off-host copy comes from
    the host) can never point a deletion outside its directory or at another backup."""
    backup_id = str(manifest["backup_id"])
    match = BACKUP_ID.match(backup_id)
    if (not match or name != backup_id + MANIFEST_SUFFIX
            or match.group("site") != manifest["site"] or match.group("engine") != manifest["engine"]):
        raise BackupError(f"manifest {os.path.join(directory, name)} names backup {manifest['backup_id']!r} "
                          f"(site {manifest['site']!r}, engine {manifest['engine']!r}), not its own file name; "
                          "move it out of the backup directory")


def list_backups(directory: str, site: str | None = None, engine: str | None = None) -> list[dict]:
    """Complete backups in directory (those with a readable manifest), oldest first.

    Ordered by the time recorded in the manifest, then by id: never by file mtime."""
    if not os.path.isdir(directory):
        return []
    found = []
    for name in os.listdir(directory):
        if not name.endswith(MANIFEST_SUFFIX) or name.startswith("."):
            continue
        manifest = read_manifest(os.path.join(directory, name))
        own_name(manifest, name, directory)
        if (site is None or manifest["site"] == site) and (engine is None or manifest["engine"] == engine):
            found.append(manifest)
    return sorted(found, key=lambda item: (from_iso(item["ended_at"]), item["backup_id"]))


def find_backup(directory: str, backup_id: str = "latest", site: str | None = None, engine: str | None = None) -> dict:
    backups = list_backups(directory, site, engine)
    if not backups:
        raise BackupError(f"no backup of site {site or '(any)'} in {directory}")
    if backup_id == "latest":
        return backups[-1]
    for manifest in backups:
        if manifest["backup_id"] == backup_id:
            return manifest
    known = ", ".join(item["backup_id"] for item in backups[-5:])
    raise BackupError(f"unknown backup id {backup_id!r} in {directory} (newest: {known})")


def verify_checksum(directory: str, manifest: dict) -> str:
    """Path of the data file, after proving its size and sha256 equal the manifest's."""
    path = os.path.join(directory, os.path.basename(manifest["file"]))
    if not os.path.isfile(path):
        raise BackupError(f"backup {manifest['backup_id']}: data file {path} is missing")
    size = os.path.getsize(path)
    if size != manifest["size_bytes"]:
        raise ChecksumMismatch(f"backup {manifest['backup_id']}: {path} has {size} bytes, the manifest says {manifest['size_bytes']}")
    actual = sha256_file(path)
    if actual != manifest["sha256"]:
        raise ChecksumMismatch(f"backup {manifest['backup_id']}: checksum error: sha256 of {path} is {actual}, "
                               f"the manifest says {manifest['sha256']}")
    return path


def retention_plan(manifests: list[dict], keep_last: int, keep_daily_days: int,
                   now: datetime.datetime, always_keep: tuple = ()) -> tuple[list[str], list[str]]:
    """Which backup ids to keep and which to delete.

    Kept: the keep_last newest, and the newest backup of each UTC day within the last
    keep_daily_days days (today included), and every id in always_keep (the backup just taken:
    a manifest dated in the future, from a clock that stepped back, must not push it out).
    Everything else is deleted. The newest backup is always kept, whatever the numbers say."""
    if keep_last < 1 or keep_daily_days < 0:
        raise BackupError("retention needs keep_last >= 1 and keep_daily_days >= 0")
    ordered = sorted(manifests, key=lambda item: (from_iso(item["ended_at"]), item["backup_id"]), reverse=True)
    keep = {item["backup_id"] for item in ordered[:keep_last]} | set(always_keep)
    oldest_day = (now.astimezone(datetime.timezone.utc) - datetime.timedelta(days=keep_daily_days - 1)).date()
    days_seen = set()
    for item in ordered:
        day = from_iso(item["ended_at"]).date()
        if keep_daily_days and day >= oldest_day and day not in days_seen:
            days_seen.add(day)
            keep.add(item["backup_id"])
    kept = [item["backup_id"] for item in reversed(ordered) if item["backup_id"] in keep]
    deleted = [item["backup_id"] for item in reversed(ordered) if item["backup_id"] not in keep]
    return kept, deleted


def delete_backup(directory: str, manifest: dict, kept_manifests: list[dict]) -> list[str]:
    """Delete one backup set: its manifest first (a half-deleted backup is then an orphan file,
    never a broken backup), then its data file, but only a data file named after this backup
    and named by no kept manifest (a copied or hand-edited manifest must not take a kept
    backup's data with it)."""
    deleted = []
    own_manifest = manifest_path(directory, manifest["backup_id"])
    if os.path.exists(own_manifest):
        os.unlink(own_manifest)
        deleted.append(os.path.basename(own_manifest))
    data_name = os.path.basename(manifest["file"])
    if not data_name.startswith(manifest["backup_id"] + "."):
        return deleted
    if any(os.path.basename(kept["file"]) == data_name for kept in kept_manifests):
        return deleted
    data = os.path.join(directory, data_name)
    if os.path.exists(data):
        os.unlink(data)
        deleted.append(data_name)
    return deleted


def prune(directory: str, manifests: list[dict], kept_ids: list[str], deleted_ids: list[str]) -> list[str]:
    """Delete the backups a retention plan deleted, each by delete_backup against the kept ones;
    the names of the files removed."""
    by_id = {item["backup_id"]: item for item in manifests}
    kept = [by_id[backup_id] for backup_id in kept_ids]
    removed = []
    for backup_id in deleted_ids:
        removed += delete_backup(directory, by_id[backup_id], kept)
    return removed


def reserve(path: str) -> None:
    """Create path exclusively: two runs that picked the same backup id cannot both write it."""
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except FileExistsError as exc:
        raise BackupError(f"{path} exists: another backup with this id is running; run again in a second") from exc


def free_bytes(directory: str) -> int:
    stats = os.statvfs(directory)
    return stats.f_bavail * stats.f_frsize


def check_target(directory: str, need_bytes: int) -> None:
    """Refuse a backup directory that is missing, unwritable or too full, before writing to it."""
    if not os.path.isdir(directory):
        raise BackupError(f"backup target {directory} does not exist (the backup role creates it)")
    if not os.access(directory, os.W_OK | os.X_OK):
        raise BackupError(f"backup target {directory} is not writable by {_user()}")
    free = free_bytes(directory)
    if free < need_bytes:
        raise BackupError(f"backup target {directory} has {free // 1048576} MiB free, "
                          f"this backup needs at least {need_bytes // 1048576} MiB")


def _user() -> str:
    try:
        import pwd  # pylint: disable=import-outside-toplevel
        return pwd.getpwuid(os.geteuid()).pw_name
    except (ImportError, KeyError):
        return f"uid {os.geteuid()}"


def retention_argument_spec() -> dict:
    """Options every engine's backup module takes (see doc fragment backup_retention)."""
    return {
        "site": {"type": "str", "required": True},
        "backup_dir": {"type": "path", "required": True},
        "keep_last": {"type": "int", "default": 7},
        "keep_daily_days": {"type": "int", "default": 30},
        "prune": {"type": "bool", "default": True},
        "min_free_mb": {"type": "int", "default": 0},
    }


def run_backup(module, engine: str, suffix: str, dump, describe=str, errors: tuple = (), extra: dict | None = None) -> None:
    """The flow every engine's backup module shares, ending in exit_json or fail_json.

    dump(partial_path) writes the data to partial_path (which exists, empty and reserved for this
    run) and returns the engine's own manifest fields. Around it: the id, check mode, the
    partial-then-rename protocol, the manifest written last, retention and the result. extra
    (which dump may fill in as it goes) is added to the result, also when the backup fails.
    Not in check mode, the result tells the records the backup (or its failure) as its
    opspack_event (backup_event)."""
    params = module.params
    directory = params["backup_dir"]
    started = utc_now()
    extra = {} if extra is None else extra
    result = {"changed": False, "manifest": {}, "kept": [], "deleted": [], "deleted_files": []}
    progress = {"step": "name the backup"}
    tell_failures(module, lambda msg: backup_event(params["site"], engine, result["manifest"], started,
                                                   failure=dict(progress, reason=msg)))
    try:
        backup_id = new_backup_id(params["site"], engine, started)
        data_path = os.path.join(directory, backup_id + suffix)
        result.update(backup_id=backup_id, path=data_path, manifest_path=manifest_path(directory, backup_id))
        existing = list_backups(directory, params["site"], engine)
        if any(item["backup_id"] == backup_id for item in existing):
            raise BackupError(f"backup {backup_id} already exists; wait a second and run again")
        if module.check_mode:
            check_target(directory, params["min_free_mb"] * 1048576)
            planned = existing + [{"backup_id": backup_id, "ended_at": to_iso(started)}]
        else:
            result.update(_take(params, backup_id, started, data_path, engine, dump, progress))
            result["changed"] = True
            progress["step"] = "apply retention"
            planned = list_backups(directory, params["site"], engine)
        result["kept"], result["deleted"] = retention_plan(
            planned, params["keep_last"], params["keep_daily_days"], started, always_keep=(backup_id,))
        if params["prune"] and not module.check_mode:
            result["deleted_files"] = prune(directory, planned, result["kept"], result["deleted"])
        if not params["prune"]:
            result["deleted"] = []
    except (BackupError, OSError, *errors) as exc:
        # The event is added by tell_failures.
        module.fail_json(msg=describe(exc), **extra, **result)
    if not module.check_mode:
        result["opspack_event"] = backup_event(params["site"], engine, result["manifest"], started)
    module.exit_json(**extra, **result)


def backup_event(site: str, engine: str, manifest: dict, started, failure: dict | None = None) -> dict:
    """The opspack_event of a backup: ok, timed by its manifest; or failed, with the step under
    way and what the failure left (a backup whose manifest was written exists, whatever failed
    after it; without one, no backup of this run exists)."""
    fields = {"engine": engine, "backup_id": manifest.get("backup_id"), "backup_ended_at": manifest.get("ended_at"),
              "timings": timings(manifest.get("started_at") or to_iso(started), manifest.get("ended_at"))}
    if failure is None:
        return event("operation", site, "backup", "ok", **fields)
    if manifest:
        impact = f"backup {manifest['backup_id']} was taken, but {failure['step']} did not finish"
    else:
        impact = f"no new {engine} backup of {site} was taken; the earlier ones are as they were"
    return event("operation", site, "backup", "failed", step=failure["step"], reason=failure["reason"],
                 impact=impact, **fields)


def _take(params: dict, backup_id: str, started, data_path: str, engine: str, dump, progress: dict | None = None) -> dict:
    directory = params["backup_dir"]
    partial = data_path + PARTIAL_SUFFIX
    progress = {} if progress is None else progress
    clock = time.monotonic()
    progress["step"] = "check the backup target"
    check_target(directory, params["min_free_mb"] * 1048576)
    # Another run's file with this name is theirs: refuse before writing, and leave it alone.
    reserve(partial)
    published = False
    try:
        progress["step"] = f"take the {engine} backup"
        fields = dump(partial)
        # A hard link never replaces an existing file: a run that picked the same id a moment
        # later cannot overwrite a finished backup, it fails instead.
        progress["step"] = "write the manifest"
        try:
            os.link(partial, data_path)
        except FileExistsError as exc:
            raise BackupError(f"{data_path} exists: another backup with this id finished first; run again") from exc
        published = True
        os.unlink(partial)
        manifest = dict(fields, format=MANIFEST_FORMAT, backup_id=backup_id, site=params["site"], engine=engine,
                        file=os.path.basename(data_path), size_bytes=os.path.getsize(data_path),
                        sha256=sha256_file(data_path), started_at=to_iso(started), ended_at=to_iso(utc_now()))
        write_json_atomic(manifest_path(directory, backup_id), manifest, mode=0o600)
    except BaseException:
        # No manifest, no backup: remove what this run wrote, and only that.
        for path in (partial, data_path if published else None):
            if path and os.path.exists(path):
                os.unlink(path)
        raise
    return {"manifest": manifest, "sha256": manifest["sha256"], "size_bytes": manifest["size_bytes"],
            "duration_seconds": round(time.monotonic() - clock, 3)}


def drill_argument_spec() -> dict:
    """Options of the drill modules of engines without a database server (doc fragment backup_selection)."""
    return {
        "site": {"type": "str", "required": True},
        "backup_dir": {"type": "path", "required": True},
        "backup_id": {"type": "str", "default": "latest"},
        "scratch_parent": {"type": "path", "default": "/var/tmp"},
    }


def run_drill(module, engine: str, prove, describe=str, errors: tuple = ()) -> None:
    """The flow the Redis and files drill modules share, ending in exit_json or fail_json.

    Finds the latest or chosen backup of the engine, records its age (RPO) and verifies its
    size and sha256; then (not in check mode) prove(manifest, path, scratch, result) restores
    it into scratch, a new private directory removed afterwards whatever happens, and raises
    BackupError unless the restored data equals what the manifest recorded. RTO runs from the
    start to the proven copy. A failed drill still returns every field, to be recorded; not in
    check mode, the result tells the records the drill as its opspack_event (drill_event)."""
    params = module.params
    clock = time.monotonic()
    result = {"changed": False, "passed": False, "reason": "", "engine": engine, "site": params["site"],
              "checks": {}, "started_at": to_iso(utc_now()), "rto_seconds": 0.0}
    progress = {"step": "find the backup"}
    tell_failures(module, lambda msg: drill_event(params["site"], dict(
        result, passed=False, reason=msg, rto_seconds=round(time.monotonic() - clock, 3)), step=progress["step"]))
    try:
        manifest = find_backup(params["backup_dir"], params["backup_id"], params["site"], engine)
        result.update(backup_id=manifest["backup_id"], backup_ended_at=manifest["ended_at"],
                      rpo_seconds=int((from_iso(result["started_at"]) - from_iso(manifest["ended_at"])).total_seconds()))
        progress["step"] = "verify the backup's checksum"
        path = verify_checksum(params["backup_dir"], manifest)
        result["checks"]["checksum"] = True
        if module.check_mode:
            result.update(passed=True, reason="check mode: backup found and its checksum verified; nothing restored")
        else:
            progress["step"] = "restore the backup into scratch and prove it"
            scratch = tempfile.mkdtemp(prefix=f"opspack-{engine}-drill-", dir=params["scratch_parent"])
            try:
                prove(manifest, path, scratch, result)
            finally:
                shutil.rmtree(scratch, ignore_errors=True)
                result["scratch_removed"] = not os.path.exists(scratch)
            result.update(passed=True, reason="all checks passed", rto_seconds=round(time.monotonic() - clock, 3))
    except (BackupError, OSError, *errors) as exc:
        reason = describe(exc)
        result.update(passed=False, reason=reason, rto_seconds=round(time.monotonic() - clock, 3))
        if not module.check_mode:
            result["opspack_event"] = drill_event(params["site"], result, step=progress["step"])
        module.fail_json(msg=f"restore drill failed: {reason}", **result)
    if not module.check_mode:
        result["opspack_event"] = drill_event(params["site"], result)
    module.exit_json(**result)


def drill_event(site: str, result: dict, step: str = "") -> dict:
    """The opspack_event of a drill from its result (passed, reason, engine, backup_id,
    backup_ended_at, rto_seconds, rpo_seconds); step names where a failed drill stopped."""
    passed = bool(result.get("passed")) and not step
    return event("operation", site, "drill", "pass" if passed else "fail", engine=result.get("engine"),
                 backup_id=result.get("backup_id"), backup_ended_at=result.get("backup_ended_at"),
                 rto_s=result.get("rto_seconds"), rpo_s=result.get("rpo_seconds"),
                 reason="" if passed else result.get("reason"), step=step)
