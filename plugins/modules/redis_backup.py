#!/usr/bin/python
# Copyright: opspack developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Back up Redis: a fresh RDB snapshot, copied with its checksum into a backup set."""

from __future__ import annotations

DOCUMENTATION = r"""
module: redis_backup
short_description: Take a fresh Redis RDB snapshot and keep a checksummed copy
version_added: 0.1.0
author: opspack developers (@opspack)
description:
  - Asks the local Redis for a snapshot (C(BGSAVE SCHEDULE), which waits for a save already
    running), waits until C(INFO persistence) counts a save that started after the request
    (C(rdb_saves); C(LASTSAVE) has one-second resolution) and reports it C(ok), then copies the RDB file
    into O(backup_dir) as a backup set with a manifest (sha256, size, Redis version, the keys
    C(redis-check-rdb) counts in the copy as C(rdb_keys) (it also checks the copy's structure
    and CRC64, so a damaged snapshot fails the backup), keys per
    database) and applies retention, like every opspack backup module.
  - Redis writes its RDB to a temporary file and renames it when complete, so the file copied
    after the snapshot finished is consistent. (With AOF on, Redis would ignore a restored RDB
    alone; opspack's redis role keeps AOF off.)
  - The password reaches C(redis-cli) through its environment (C(REDISCLI_AUTH)), never its
    command line, so it does not show in the host's process list.
extends_documentation_fragment:
  - opspack.platform.backup_retention
options:
  login_user:
    description: ACL user that may run C(BGSAVE), C(LASTSAVE) and C(INFO).
    type: str
    required: true
  login_password:
    description: That user's password.
    type: str
    required: true
  login_port:
    description: Port Redis listens on at 127.0.0.1.
    type: int
    default: 6379
  rdb_path:
    description: The RDB file Redis writes (its C(dir) and C(dbfilename)).
    type: path
    default: /var/lib/redis/dump.rdb
  timeout:
    description: Seconds to wait for the snapshot.
    type: int
    default: 300
attributes:
  check_mode:
    description: Can run in check_mode and return changed status prediction without modifying the target.
    support: full
    details: Reports the backup it would take and the backups retention would delete; asks Redis for nothing.
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in check_mode), when in diff mode.
    support: none
notes:
  - Run it as root (it reads the RDB file owned by the redis user).
seealso:
  - module: opspack.platform.pg_backup
"""

EXAMPLES = r"""
- name: Snapshot Redis and keep a week plus 30 days of dailies
  opspack.platform.redis_backup:
    site: redis
    backup_dir: /var/backups/opspack/redis
    login_user: opsadmin
    login_password: "{{ vault_redis_opsadmin_password }}"
  become: true
"""

RETURN = r"""
backup_id:
  description: Id of the backup taken (or that would be taken in check mode).
  returned: always
  type: str
  sample: redis-redis-20261123T040000Z
path:
  description: Path of the copied RDB file on the host.
  returned: always
  type: str
manifest:
  description: The manifest written (empty in check mode).
  returned: always
  type: dict
sha256:
  description: sha256 of the copied RDB file.
  returned: when a backup was taken
  type: str
size_bytes:
  description: Size of the copied RDB file.
  returned: when a backup was taken
  type: int
kept:
  description: Backup ids retention keeps, oldest first.
  returned: always
  type: list
  elements: str
deleted:
  description: Backup ids retention deleted (or would delete in check mode), oldest first.
  returned: always
  type: list
  elements: str
deleted_files:
  description: File names retention removed from O(backup_dir) (empty in check mode).
  returned: always
  type: list
  elements: str
opspack_event:
  description: The backup for the records (C(operation=backup), C(result) ok or failed; see the records callback).
  returned: when not in check mode
  type: dict
  sample: {"kind": "operation", "site": "redis", "operation": "backup", "result": "ok", "engine": "redis",
           "backup_id": "redis-redis-20261123T040000Z", "backup_ended_at": "2026-11-23T04:00:41Z",
           "timings": {"started": "2026-11-23T04:00:00Z", "ended": "2026-11-23T04:00:41Z", "duration_s": 41.0}}
"""

import os
import shutil
import tempfile
import time

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.opspack.platform.plugins.module_utils import backup
from ansible_collections.opspack.platform.plugins.module_utils.redis_rdb import check_rdb

ENGINE = "redis"
FILE_SUFFIX = ".rdb"


class RedisCli:
    def __init__(self, module: AnsibleModule):
        self.module = module
        self.params = module.params

    def __call__(self, *command: str) -> str:
        args = ["redis-cli", "-h", "127.0.0.1", "-p", str(self.params["login_port"]),
                "--user", self.params["login_user"], "--no-auth-warning", *command]
        rc, out, err = self.module.run_command(args, environ_update={"REDISCLI_AUTH": self.params["login_password"]})
        answer = out.strip()
        if rc != 0 or answer.startswith(("ERR", "NOPERM", "WRONGPASS", "NOAUTH")):
            raise backup.BackupError(f"redis-cli {command[0]} failed: {(answer or err).strip()[:500]}")
        return answer


def info_fields(text: str) -> dict:
    return dict(line.split(":", 1) for line in text.splitlines() if ":" in line and not line.startswith("#"))


def snapshot(module: AnsibleModule, partial: str) -> dict:
    """A snapshot that started after this call, proven finished and ok; its RDB copied to partial.

    BGSAVE SCHEDULE waits its turn when a save is already running (plain BGSAVE would refuse).
    Completion is read from rdb_saves, which counts finished saves; LASTSAVE has one-second
    resolution and would miss a quick save. A save already running when asked started before
    this call, so it does not count: one more must finish."""
    cli = RedisCli(module)
    before = info_fields(cli("INFO", "persistence"))
    wanted = int(before.get("rdb_saves", 0)) + (2 if before.get("rdb_bgsave_in_progress") == "1" else 1)
    started = cli("BGSAVE", "SCHEDULE")
    if "started" not in started and "scheduled" not in started:
        raise backup.BackupError(f"Redis refused BGSAVE: {started}")
    deadline = time.monotonic() + module.params["timeout"]
    while True:
        persistence = info_fields(cli("INFO", "persistence"))
        if int(persistence.get("rdb_saves", 0)) >= wanted and persistence.get("rdb_bgsave_in_progress") == "0":
            break
        if time.monotonic() > deadline:
            raise backup.BackupError(f"Redis did not finish its snapshot within {module.params['timeout']} s")
        time.sleep(0.2)
    if persistence.get("rdb_last_bgsave_status") != "ok":
        raise backup.BackupError(f"Redis reports its last snapshot as {persistence.get('rdb_last_bgsave_status')}")
    shutil.copyfile(module.params["rdb_path"], partial)
    # The copy's own structure and CRC64, and its key count for drills to compare with.
    workdir = tempfile.mkdtemp(prefix="opspack-redis-backup-")
    try:
        in_file = check_rdb(module, partial, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    server = info_fields(cli("INFO", "server"))
    keyspace = info_fields(cli("INFO", "keyspace"))
    keys = {name: int(dict(part.split("=") for part in value.split(","))["keys"]) for name, value in keyspace.items()}
    return {"redis_version": server.get("redis_version"), "keys": keys, "rdb_keys": in_file["keys"],
            "rdb_saves": int(persistence.get("rdb_saves", 0)), "lastsave": int(persistence.get("rdb_last_save_time", 0))}


def main() -> None:
    spec = backup.retention_argument_spec()
    spec.update(
        login_user={"type": "str", "required": True},
        login_password={"type": "str", "required": True, "no_log": True},
        login_port={"type": "int", "default": 6379},
        rdb_path={"type": "path", "default": "/var/lib/redis/dump.rdb"},
        timeout={"type": "int", "default": 300},
    )
    module = AnsibleModule(argument_spec=spec, supports_check_mode=True)
    # The copy holds every key: readable by its owner only.
    os.umask(0o077)
    backup.run_backup(module, ENGINE, FILE_SUFFIX, lambda partial: snapshot(module, partial))


if __name__ == "__main__":
    main()
