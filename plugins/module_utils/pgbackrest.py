# Copyright: opspack developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""pgBackRest for point-in-time recovery: choosing the backup set, recovering it into a scratch
cluster and proving where recovery stopped.

The trap this guards against: recovery replays WAL from a backup's end, so when the chosen
backup ends after the target time, PostgreSQL cannot stop at the target and silently recovers
to a later point. The set is therefore chosen explicitly (the newest that ended at or before
the target), and the server log must say that recovery stopped before a commit later than the
target; anything else fails the restore.
"""

from __future__ import annotations

import datetime
import json
import os
import re
import shutil
import time

from ansible_collections.opspack.platform.plugins.module_utils import postgresql_backup as engine
from ansible_collections.opspack.platform.plugins.module_utils.backup import BackupError, free_bytes, to_iso, utc_now

# "recovery stopping before commit of transaction 745, time 2026-11-23 17:10:03.123456+00"
STOPPING = re.compile(r"recovery stopping before (?:commit|abort) of transaction \d+, time (?P<time>[0-9-]+ [0-9:.]+[+-][0-9:]+)")
NOT_REACHED = "recovery ended before configured recovery target was reached"


def parse_pg_time(text: str) -> datetime.datetime:
    """A time as PostgreSQL logs it (2026-11-23 17:10:03.123456+00)."""
    value = text.strip()
    if re.search(r"[+-]\d\d$", value):
        value += ":00"
    try:
        return datetime.datetime.fromisoformat(value)
    except ValueError as exc:
        raise BackupError(f"cannot read time {text!r} from the PostgreSQL log") from exc


def stanza_backups(info_json: str, stanza: str) -> list[dict]:
    """The stanza's entries under "backup" in `pgbackrest info --output=json` (with or without --set)."""
    try:
        stanzas = json.loads(info_json)
    except ValueError as exc:
        raise BackupError(f"cannot read pgbackrest info: {exc}") from exc
    for entry in stanzas:
        if entry.get("name") == stanza:
            return entry.get("backup", [])
    raise BackupError(f"stanza {stanza} is not in the pgBackRest repository (is provisioning done?)")


def backup_sets(info_json: str, stanza: str) -> list[dict]:
    """The stanza's backups from `pgbackrest info --output=json`, oldest first."""
    sets = [{"label": item["label"], "type": item["type"], "size": item.get("info", {}).get("size", 0),
             "start": datetime.datetime.fromtimestamp(item["timestamp"]["start"], datetime.timezone.utc),
             "stop": datetime.datetime.fromtimestamp(item["timestamp"]["stop"], datetime.timezone.utc)}
            for item in stanza_backups(info_json, stanza)]
    return sorted(sets, key=lambda item: item["stop"])


def choose_set(sets: list[dict], target: datetime.datetime) -> dict:
    """The newest backup set that ended before target: the only ones that can stop there.

    pgBackRest records stop times in whole seconds, so a set counts only when it ended a
    full second before the target."""
    usable = [item for item in sets if item["stop"] + datetime.timedelta(seconds=1) <= target]
    if not usable:
        first = f"the first backup ended at {to_iso(sets[0]['stop'])}" if sets else "the repository holds no backup"
        raise BackupError(f"target time {to_iso(target)} is before any backup can reach it: {first}")
    return usable[-1]


def recovery_stop(log_text: str, target: datetime.datetime) -> datetime.datetime:
    """Where recovery stopped, proven from the server log; overshooting or not reaching fails."""
    if NOT_REACHED in log_text:
        raise BackupError("recovery ended before the target time was reached: the archived WAL does not cover it "
                          "(no commit after the target has been archived yet)")
    stops = [parse_pg_time(match.group("time")) for match in STOPPING.finditer(log_text)]
    if not stops:
        raise BackupError("the PostgreSQL log does not say where recovery stopped; refusing a restore that "
                          "may have recovered past the target")
    stopped = stops[-1]
    if stopped <= target:
        raise BackupError(f"recovery stopped before a commit at {stopped.isoformat()}, not after the target "
                          f"{to_iso(target)}: it did not stop at the target")
    return stopped


MARKER = ".opspack-pitr-scratch"
# Marker of scratch clusters made before the marker was shared by pitr_drill and pitr_backup.
OLD_MARKERS = (".opspack-pitr-drill",)


def parse_target(text: str) -> datetime.datetime:
    try:
        moment = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise BackupError(f"target_time {text!r} is not a time such as 2026-11-23T17:10:03Z") from exc
    if moment.tzinfo is None:
        raise BackupError(f"target_time {text!r} has no time zone: give it in UTC with a Z")
    return moment.astimezone(datetime.timezone.utc)


def scratch_config(directory: str, port: int) -> str:
    return "\n".join([
        "# Scratch cluster of an opspack point-in-time recovery: socket only, no archiving, small.",
        f"port = {port}",
        "listen_addresses = ''",
        f"unix_socket_directories = '{directory}'",
        f"hba_file = '{directory}/pg_hba.conf'",
        f"ident_file = '{directory}/pg_ident.conf'",
        "archive_mode = off",
        # No connections during recovery: no need to match the primary's max_connections, and
        # pg_ctl -w returns only once recovery has stopped and the cluster is promoted.
        "hot_standby = off",
        "max_connections = 20",
        "shared_buffers = '128MB'",
        "log_destination = 'stderr'",
        "logging_collector = off",
        "",
    ])


class ScratchCluster:
    def __init__(self, module):
        self.module = module
        self.params = module.params
        self.root = module.params["scratch_dir"]
        # The marker and log sit beside the data directory: pgBackRest restores into an empty one.
        self.directory = os.path.join(self.root, "data")
        self.log = os.path.join(self.root, "postgresql.log")
        self.pg_ctl = os.path.join(module.params["pg_bin_dir"], "pg_ctl")

    def clear(self) -> None:
        """Remove a leftover of an earlier drill; refuse anything else at that path."""
        if not os.path.exists(self.root):
            return
        if not any(os.path.exists(os.path.join(self.root, name)) for name in (MARKER, *OLD_MARKERS)):
            raise BackupError(f"scratch_dir {self.root} exists and is not an opspack scratch cluster: refusing to touch it")
        self.remove()

    def create(self) -> None:
        os.makedirs(self.directory, mode=0o700)
        os.chmod(self.root, 0o700)
        with open(os.path.join(self.root, MARKER), "w", encoding="utf-8") as marker:
            marker.write("scratch cluster of an opspack point-in-time recovery; safe to delete\n")

    def configure(self) -> None:
        files = {"postgresql.conf": scratch_config(self.directory, self.params["scratch_port"]), "pg_hba.conf": "local all all peer\n", "pg_ident.conf": ""}
        for name, content in files.items():
            with open(os.path.join(self.directory, name), "w", encoding="utf-8") as out:
                out.write(content)

    def start(self) -> None:
        rc, _out, err = self.module.run_command(
            [self.pg_ctl, "-D", self.directory, "-l", self.log, "-w", "-t", str(self.params["timeout"]), "start"])
        if rc != 0:
            raise BackupError(f"the scratch cluster did not start: {self.log_tail() or err.strip()}")

    def wait_promoted(self, deadline: float) -> None:
        while True:
            try:
                conn = engine.connect({"login_unix_socket": self.directory, "login_port": self.params["scratch_port"]},
                                      "postgres", autocommit=True)
                try:
                    cursor = conn.cursor()
                    cursor.execute("SELECT pg_is_in_recovery()")
                    if not cursor.fetchone()[0]:
                        return
                finally:
                    conn.close()
            except (BackupError, *engine.DATABASE_ERRORS):
                if self.stopped():
                    raise BackupError(f"the scratch cluster stopped during recovery: {self.log_tail()}") from None
            if time.monotonic() > deadline:
                raise BackupError(f"recovery did not finish within {self.params['timeout']} s")
            time.sleep(0.5)

    def stopped(self) -> bool:
        rc, _out, _err = self.module.run_command([self.pg_ctl, "-D", self.directory, "status"])
        return rc != 0

    def stop(self) -> None:
        """Stop the scratch server; a server that will not stop keeps its directory and fails the drill."""
        if not os.path.exists(os.path.join(self.directory, "postmaster.pid")):
            return
        rc, _out, err = self.module.run_command([self.pg_ctl, "-D", self.directory, "-m", "immediate", "-w", "stop"])
        if rc != 0 and not self.stopped():
            raise BackupError(f"the scratch cluster in {self.root} did not stop: {err.strip()}")

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.root)

    def log_text(self) -> str:
        try:
            with open(self.log, encoding="utf-8", errors="replace") as handle:
                return handle.read()
        except OSError:
            return ""

    def log_tail(self) -> str:
        lines = [line for line in self.log_text().splitlines() if "FATAL" in line or "ERROR" in line]
        return " | ".join(lines[-3:])

    @property
    def connection(self) -> dict:
        """Connection options (postgresql_connection) that reach the scratch cluster."""
        return {"login_unix_socket": self.directory, "login_port": self.params["scratch_port"], "login_user": None}

    def query(self, database: str, sql_text: str) -> list:
        return engine.query_rows(self.connection, database, sql_text)


def run(module, *args: str) -> str:
    """Run pgbackrest for the module's stanza; its output, or a BackupError."""
    rc, out, err = module.run_command(["pgbackrest", f"--stanza={module.params['stanza']}", *args])
    if rc != 0:
        raise BackupError(f"pgbackrest {args[-1]} failed (exit {rc}): {(err or out).strip()[-1500:]}")
    return out


def scratch_argument_spec(default_dir: str, default_port: int) -> dict:
    """Options of the modules that recover into a scratch cluster (each documents its own defaults)."""
    return {
        "target_time": {"type": "str", "required": True},
        "stanza": {"type": "str", "default": "main"},
        "scratch_dir": {"type": "path", "default": default_dir},
        "scratch_port": {"type": "int", "default": default_port},
        "pg_bin_dir": {"type": "path"},
        "production_data_dir": {"type": "path"},
        "timeout": {"type": "int", "default": 600},
    }


def cluster_paths(params: dict, lib_dir: str = "/usr/lib/postgresql", data_root: str = "/var/lib/postgresql") -> None:
    """pg_bin_dir and production_data_dir, when not given, from the one PostgreSQL major installed
    (Debian's and Ubuntu's layout: <lib_dir>/<major>/bin, <data_root>/<major>/main)."""
    if params.get("pg_bin_dir") and params.get("production_data_dir"):
        return
    try:
        majors = sorted(name for name in os.listdir(lib_dir) if os.path.isfile(os.path.join(lib_dir, name, "bin", "pg_ctl")))
    except FileNotFoundError:
        majors = []
    if len(majors) != 1:
        raise BackupError(f"PostgreSQL servers installed: {', '.join(majors) or 'none'} (in {lib_dir}): "
                          "give pg_bin_dir and production_data_dir for the cluster to recover")
    params["pg_bin_dir"] = params.get("pg_bin_dir") or os.path.join(lib_dir, majors[0], "bin")
    params["production_data_dir"] = params.get("production_data_dir") or os.path.join(data_root, majors[0], "main")


def plan(module, result: dict) -> tuple[datetime.datetime, dict]:
    """The target (refused in the future) and the backup set that can stop there, noted in result."""
    target = parse_target(module.params["target_time"])
    result["target_time"] = target.isoformat().replace("+00:00", "Z")
    if target > utc_now() + datetime.timedelta(seconds=1):
        raise BackupError(f"target time {result['target_time']} is in the future")
    cluster_paths(module.params)
    chosen = choose_set(backup_sets(run(module, "--output=json", "info"), module.params["stanza"]), target)
    result.update(backup_set=chosen["label"], backup_set_stopped_at=to_iso(chosen["stop"]))
    return target, chosen


def tablespace_links(data_dir: str) -> dict[str, str]:
    """The cluster's tablespaces as pg_tblspc shows them: oid -> location."""
    links = os.path.join(data_dir, "pg_tblspc")
    try:
        names = sorted(os.listdir(links))
    except FileNotFoundError as exc:
        raise BackupError(f"{links} does not exist: production_data_dir is not the cluster's data directory") from exc
    return {name: os.readlink(os.path.join(links, name)) for name in names if os.path.islink(os.path.join(links, name))}


def set_tablespaces(info_json: str, stanza: str, label: str) -> dict[str, str]:
    """The tablespaces a backup set holds (`pgbackrest info --set --output=json`): oid -> name."""
    for item in stanza_backups(info_json, stanza):
        if item.get("label") == label:
            return {str(space["oid"]): space.get("name", "") for space in item.get("tablespace") or []}
    raise BackupError(f"backup set {label} is not in stanza {stanza}")


def tablespace_guard(production: dict[str, str], in_set: dict[str, str], label: str) -> None:
    """Refuse a recovery beside production that would replay the creation of a tablespace.

    A tablespace created after the set is created again by WAL replay, at its original location:
    PostgreSQL's redo first removes what is there, i.e. production's tablespace data. Only
    tablespaces inside the set can be moved away (--tablespace-map-all)."""
    later = {oid: location for oid, location in production.items() if oid not in in_set}
    if later:
        spaces = ", ".join(f"oid {oid} at {location}" for oid, location in sorted(later.items()))
        raise BackupError(f"tablespace(s) {spaces} are not in backup set {label}: recovering it beside production "
                          "would replay their creation into production's own directories. Take a new backup "
                          "(pgbackrest --type=full backup) and choose a target after it")


def prepare(module, cluster: ScratchCluster, chosen: dict) -> None:
    """Archive the current WAL segment (so recent commits are in the repository), clear a
    leftover scratch cluster (refusing anything else at its path), check the room and create it.

    Call it before the try whose finally removes the cluster: a path that is not a scratch
    cluster's must never be removed."""
    run(module, "check")
    chosen["tablespaces"] = set_tablespaces(run(module, f"--set={chosen['label']}", "--output=json", "info"),
                                            module.params["stanza"], chosen["label"])
    tablespace_guard(tablespace_links(module.params["production_data_dir"]), chosen["tablespaces"], chosen["label"])
    cluster.clear()
    # The scratch cluster lands beside production: refuse one that could fill its disk.
    parent = os.path.dirname(cluster.root.rstrip("/")) or "/"
    free = free_bytes(parent)
    if chosen["size"] and free < 2 * chosen["size"]:
        raise BackupError(f"{parent} has {free // 1048576} MiB free; recovering this cluster there "
                          f"needs {2 * chosen['size'] // 1048576} MiB")
    cluster.create()


def restore_arguments(cluster: ScratchCluster, target: datetime.datetime, chosen: dict) -> list[str]:
    """pgbackrest restore into the scratch cluster; its tablespaces go below the scratch root,
    never back to their original (production's) locations."""
    arguments = [f"--pg1-path={cluster.directory}", f"--set={chosen['label']}", "--type=time",
                 f"--target={target.strftime('%Y-%m-%d %H:%M:%S.%f')}+00", "--target-action=promote",
                 "--archive-mode=off", "--log-level-console=warn"]
    if chosen.get("tablespaces"):
        arguments.append(f"--tablespace-map-all={os.path.join(cluster.root, 'tablespaces')}")
    return arguments + ["restore"]


def recover(module, cluster: ScratchCluster, target: datetime.datetime, chosen: dict, clock: float) -> datetime.datetime:
    """Restore the chosen set into the prepared scratch cluster, recover to target and promote.

    Returns where recovery stopped, proven from the log."""
    run(module, *restore_arguments(cluster, target, chosen))
    cluster.configure()
    cluster.start()
    cluster.wait_promoted(clock + module.params["timeout"])
    return recovery_stop(cluster.log_text(), target)
