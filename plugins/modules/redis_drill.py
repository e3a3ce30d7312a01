#!/usr/bin/python
# Copyright: opspack developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Prove a Redis backup restores: load it into a scratch redis-server and count what it holds."""

from __future__ import annotations

DOCUMENTATION = r"""
module: redis_drill
short_description: Prove a Redis backup restores, by loading it into a scratch server
version_added: 0.1.0
author: opspack developers (@opspack)
description:
  - Takes the latest (or a chosen) backup made by M(opspack.platform.redis_backup), verifies
    its size and sha256 against its manifest, checks the RDB's own structure and CRC64 with
    C(redis-check-rdb), then loads it into a scratch C(redis-server) that listens on a private
    Unix socket only (no TCP port, no persistence) and counts the keys it loaded.
  - The keys loaded must equal the keys in the file (less any that expired since the
    backup) and the keys the manifest counted in the file at backup time.
  - Measures the recovery time (RTO, from start to verified) and the recovery point (RPO, the
    backup's age). The scratch server is stopped and its directory removed afterwards, also
    when the drill fails. The production Redis is never contacted.
  - A failed drill fails the task with the reason and still returns every field below.
extends_documentation_fragment:
  - opspack.platform.backup_selection
options:
  scratch_parent:
    description: Directory the scratch server's directory is made in; it needs room for the RDB and the data in memory.
    type: path
    default: /var/tmp
  timeout:
    description: Seconds to wait for the scratch server to load the RDB.
    type: int
    default: 300
attributes:
  check_mode:
    description: Can run in check_mode and return changed status prediction without modifying the target.
    support: partial
    details: Chooses the backup and verifies its checksum; loads nothing.
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in check_mode), when in diff mode.
    support: none
notes:
  - Needs C(redis-server) (and so C(redis-check-rdb)) on the host, as the C(opspack.platform.redis) role installs it.
seealso:
  - module: opspack.platform.redis_backup
  - module: opspack.platform.restore_drill
"""

EXAMPLES = r"""
- name: Drill the newest Redis backup
  opspack.platform.redis_drill:
    site: redis
    backup_dir: /var/backups/opspack/redis
  become: true
  register: redis_drill
  failed_when: false
"""

RETURN = r"""
passed:
  description: Whether every check passed.
  returned: always
  type: bool
reason:
  description: Why the drill failed, or C(all checks passed).
  returned: always
  type: str
site:
  description: The site drilled.
  returned: always
  type: str
engine:
  description: Always C(redis).
  returned: always
  type: str
backup_id:
  description: The backup drilled.
  returned: when a backup was found
  type: str
backup_ended_at:
  description: When that backup ended, in UTC.
  returned: when a backup was found
  type: str
started_at:
  description: When the drill started, in UTC.
  returned: always
  type: str
rpo_seconds:
  description: Age of the backup when the drill started.
  returned: when a backup was found
  type: int
rto_seconds:
  description: Seconds from the start of the drill to the loaded, counted copy.
  returned: always
  type: float
checks:
  description: What was checked (checksum, rdb_valid, keys_in_file, keys_loaded).
  returned: always
  type: dict
scratch_removed:
  description: Whether the scratch server's directory is gone again.
  returned: when the RDB was loaded
  type: bool
opspack_event:
  description: The drill for the records (C(operation=drill), C(result) pass or fail; see the records callback).
  returned: when not in check mode
  type: dict
  sample: {"kind": "operation", "site": "redis", "operation": "drill", "result": "fail", "engine": "redis",
           "backup_id": "redis-redis-20261123T040000Z", "backup_ended_at": "2026-11-23T04:00:41Z",
           "rto_s": 12.4, "rpo_s": 30559, "step": "restore the backup into scratch and prove it",
           "reason": "the restored data differs from the backup: 2 keys loaded, the file holds 3 (0 with a time to live)"}
"""

import os
import re
import shutil
import signal
import time

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.opspack.platform.plugins.module_utils import backup
from ansible_collections.opspack.platform.plugins.module_utils.redis_rdb import check_rdb

ENGINE = "redis"


class ScratchRedis:
    """A redis-server on a private socket in directory, loading dump.rdb from it."""

    def __init__(self, module: AnsibleModule, directory: str):
        self.module = module
        self.directory = directory
        self.socket = os.path.join(directory, "redis.sock")
        self.pidfile = os.path.join(directory, "redis.pid")

    def start(self) -> None:
        server = self.module.get_bin_path("redis-server", required=True)
        # No TCP port, no saving, no AOF: the copy is read, never written back anywhere.
        rc, out, err = self.module.run_command(
            [server, "--port", "0", "--unixsocket", self.socket, "--unixsocketperm", "700",
             "--dir", self.directory, "--dbfilename", "dump.rdb", "--appendonly", "no", "--save", "",
             "--daemonize", "yes", "--pidfile", self.pidfile, "--logfile", os.path.join(self.directory, "redis.log")])
        if rc != 0:
            raise backup.BackupError(f"the scratch server did not start: {(err or out).strip()[:300]} {self.log_tail()}")

    def pid(self) -> int | None:
        try:
            with open(self.pidfile, encoding="ascii") as handle:
                return int(handle.read().strip())
        except (OSError, ValueError):
            return None

    def running(self) -> bool:
        pid = self.pid()
        if pid is None:
            return False
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True

    def cli(self, *command: str) -> str:
        rc, out, err = self.module.run_command(["redis-cli", "-s", self.socket, *command])
        if rc != 0:
            raise backup.BackupError(f"the scratch server did not answer {command[0]}: {(err or out).strip()[:300]}")
        return out.strip()

    def wait_loaded(self, timeout: int) -> dict:
        """INFO of the server once it has loaded the RDB."""
        deadline = time.monotonic() + timeout
        while True:
            if os.path.exists(self.socket):
                try:
                    info = dict(line.split(":", 1) for line in self.cli("INFO").splitlines() if ":" in line)
                    if info.get("loading") == "0":
                        return info
                except backup.BackupError:
                    pass
            if self.pid() is not None and not self.running():
                raise backup.BackupError(f"the scratch server stopped while loading the RDB: {self.log_tail()}")
            if time.monotonic() > deadline:
                raise backup.BackupError(f"the scratch server did not load the RDB within {timeout} s")
            time.sleep(0.1)

    def log_tail(self) -> str:
        try:
            with open(os.path.join(self.directory, "redis.log"), encoding="utf-8", errors="replace") as log:
                return " | ".join(log.read().strip().splitlines()[-3:])
        except OSError:
            return ""

    def stop(self) -> None:
        """Stop the server (it saves nothing); kill it if it does not go within ten seconds."""
        if not self.running():
            return
        self.module.run_command(["redis-cli", "-s", self.socket, "SHUTDOWN", "NOSAVE"])
        deadline = time.monotonic() + 10
        while self.running() and time.monotonic() < deadline:
            time.sleep(0.1)
        if self.running():
            os.kill(self.pid(), signal.SIGKILL)


def keys_in(info: dict) -> int:
    """Keys over every database, from INFO's keyspace section (db0:keys=3,expires=0,...)."""
    return sum(int(dict(part.split("=") for part in value.split(","))["keys"])
               for name, value in info.items() if re.match(r"^db\d+$", name))


def prove(module: AnsibleModule, manifest: dict, path: str, scratch: str, result: dict) -> None:
    rdb = os.path.join(scratch, "dump.rdb")
    shutil.copyfile(path, rdb)
    in_file = check_rdb(module, rdb, scratch)
    result["checks"].update(rdb_valid=True, keys_in_file=in_file["keys"])
    server = ScratchRedis(module, scratch)
    server.start()
    try:
        loaded = keys_in(server.wait_loaded(module.params["timeout"]))
    finally:
        server.stop()
    result["checks"]["keys_loaded"] = loaded
    problems = []
    # Keys with a time to live that passed since the backup are dropped on load, and only those.
    if not in_file["keys"] - in_file["expires"] <= loaded <= in_file["keys"] - in_file["expired"]:
        problems.append(f"{loaded} keys loaded, the file holds {in_file['keys']} ({in_file['expires']} with a time to live)")
    recorded = manifest.get("rdb_keys")
    if recorded is not None and recorded != in_file["keys"]:
        problems.append(f"the file holds {in_file['keys']} keys, the backup counted {recorded} in it")
    if problems:
        raise backup.BackupError("the restored data differs from the backup: " + "; ".join(problems))


def main() -> None:
    spec = backup.drill_argument_spec()
    spec.update(timeout={"type": "int", "default": 300})
    module = AnsibleModule(argument_spec=spec, supports_check_mode=True)
    # The copy holds every key: readable by its owner only.
    os.umask(0o077)
    backup.run_drill(module, ENGINE, lambda manifest, path, scratch, result: prove(module, manifest, path, scratch, result))


if __name__ == "__main__":
    main()
