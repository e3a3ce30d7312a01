# Copyright: opspack developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""pgBackRest for point-in-time recovery: choosing the backup set and proving where recovery stopped.

The trap this guards against: recovery replays WAL from a backup's end, so when the chosen
backup ends after the target time, PostgreSQL cannot stop at the target and silently recovers
to a later point. The set is therefore chosen explicitly (the newest that ended at or before
the target), and the server log must say that recovery stopped before a commit later than the
target; anything else fails the restore.
"""

from __future__ import annotations

import datetime
import json
import re

from ansible_collections.opspack.platform.plugins.module_utils.backup import BackupError, to_iso

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


def backup_sets(info_json: str, stanza: str) -> list[dict]:
    """The stanza's backups from `pgbackrest info --output=json`, oldest first."""
    try:
        stanzas = json.loads(info_json)
    except ValueError as exc:
        raise BackupError(f"cannot read pgbackrest info: {exc}") from exc
    for entry in stanzas:
        if entry.get("name") == stanza:
            sets = [{"label": item["label"], "type": item["type"], "size": item.get("info", {}).get("size", 0),
                     "start": datetime.datetime.fromtimestamp(item["timestamp"]["start"], datetime.timezone.utc),
                     "stop": datetime.datetime.fromtimestamp(item["timestamp"]["stop"], datetime.timezone.utc)}
                    for item in entry.get("backup", [])]
            return sorted(sets, key=lambda item: item["stop"])
    raise BackupError(f"stanza {stanza} is not in the pgBackRest repository (is provisioning done?)")


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
