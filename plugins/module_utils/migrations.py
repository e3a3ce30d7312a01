# Copyright: opspack developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""SQL migrations of a site: reading a release's files and planning what to apply or revert.

A release ships NNN_name.sql files, each with NNN_name.rollback.sql beside it. The database
keeps a history table with one row per applied migration: its checksum and its rollback SQL
(so an older release, which lacks the newer files, can still revert them). Everything here is
pure planning; pg_migrations executes the plan.
"""

from __future__ import annotations

import hashlib
import os
import re

from ansible_collections.opspack.platform.plugins.module_utils.common import OpspackError

MIGRATION_FILE = re.compile(r"^(?P<version>\d{1,18})_(?P<name>[a-z0-9][a-z0-9_]*)\.sql$")
ROLLBACK_SUFFIX = ".rollback.sql"


class MigrationError(OpspackError):
    """A migration plan or step cannot go on; the message says why, for an operator."""


def checksum(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def read_release(path: str) -> list[dict]:
    """The migrations in path, oldest first: {version, name, file, sql, checksum, rollback_sql}.

    Files that are neither migrations nor rollback scripts are refused, so that a typo
    (002-add.sql, 002_Add.sql) cannot silently skip a migration."""
    if not os.path.isdir(path):
        raise MigrationError(f"migrations directory {path} does not exist")
    names = sorted(os.listdir(path))
    found, by_version = [], {}
    for name in names:
        if name.endswith(ROLLBACK_SUFFIX):
            if name[: -len(ROLLBACK_SUFFIX)] + ".sql" not in names:
                raise MigrationError(f"{name} in {path} rolls back no migration")
            continue
        match = MIGRATION_FILE.match(name)
        if not match:
            raise MigrationError(f"{name} in {path} is not a migration (NNN_name.sql, lower case) or its rollback "
                                 f"(NNN_name{ROLLBACK_SUFFIX})")
        version = int(match.group("version"))
        if version in by_version:
            raise MigrationError(f"{name} and {by_version[version]} in {path} have the same version {version}")
        by_version[version] = name
        with open(os.path.join(path, name), encoding="utf-8") as handle:
            sql_text = handle.read()
        rollback = os.path.join(path, name[:-4] + ROLLBACK_SUFFIX)
        rollback_sql = None
        if os.path.exists(rollback):
            with open(rollback, encoding="utf-8") as handle:
                rollback_sql = handle.read()
        found.append({"version": version, "name": name[:-4], "file": name, "sql": sql_text,
                      "checksum": checksum(sql_text), "rollback_sql": rollback_sql})
    return sorted(found, key=lambda item: item["version"])


def plan(release: list[dict], applied: dict, target: str, require_rollback: bool = True) -> dict:
    """What to revert (newest first) and apply (oldest first) to bring the database to target.

    applied maps version -> {name, checksum, rollback_sql} from the history table. target is
    'head' (the release's newest migration), 'current' (the newest applied: nothing to do, a way
    to read the history) or a version number. Refuses, before anything runs:
    an applied migration whose file changed, one the release lacks but would keep, a pending
    migration older than an applied one, a migration to apply without a rollback script (when
    required) and one to revert whose rollback SQL is known nowhere."""
    in_release = {item["version"]: item for item in release}
    if target == "current":
        goal = max(applied, default=0)
    elif target == "head":
        goal = max(in_release, default=0)
    elif re.fullmatch(r"\d{1,18}", str(target)):
        goal = int(target)
        if goal and goal not in in_release and goal not in applied:
            raise MigrationError(f"target version {goal} is neither in this release nor applied")
    else:
        raise MigrationError(f"target {target!r} is not 'head', 'current' or a migration version number")
    for version, row in sorted(applied.items()):
        mine = in_release.get(version)
        if mine and mine["checksum"] != row["checksum"]:
            raise MigrationError(f"migration {mine['name']} was changed after it was applied (its sha256 is "
                                 f"{mine['checksum'][:12]}..., the database applied {row['checksum'][:12]}...)")
        if version <= goal and not mine and release:
            raise MigrationError(f"migration {version} ({row['name']}) is applied but missing from this release")
    newest_applied = max(applied, default=0)
    to_apply = [item for item in release if item["version"] not in applied and item["version"] <= goal]
    late = [item["name"] for item in to_apply if item["version"] < newest_applied and newest_applied <= goal]
    if late:
        raise MigrationError(f"migration(s) {', '.join(late)} are older than applied migration {newest_applied}: "
                             "renumber them after it")
    if require_rollback:
        missing = [item["file"] for item in to_apply if item["rollback_sql"] is None]
        if missing:
            raise MigrationError(f"no rollback script for {', '.join(missing)} (each NNN_name.sql needs "
                                 f"NNN_name{ROLLBACK_SUFFIX}); nothing was applied")
    to_revert = []
    for version in sorted((v for v in applied if v > goal), reverse=True):
        rollback_sql = applied[version].get("rollback_sql") or (in_release.get(version) or {}).get("rollback_sql")
        if not rollback_sql:
            raise MigrationError(f"migration {applied[version]['name']} cannot be reverted: no rollback SQL was "
                                 "recorded when it was applied and this release has no rollback script for it")
        to_revert.append({"version": version, "name": applied[version]["name"], "rollback_sql": rollback_sql})
    return {"goal": goal, "apply": to_apply, "revert": to_revert}
