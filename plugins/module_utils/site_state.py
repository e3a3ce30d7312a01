# Copyright: opspack developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A site's release state on its host, in one place: the release record
(<site>/release-state.json), the slots (<site>/slots/<slot> links to a release) and nginx's
upstream file (which slot takes the traffic). site_release writes the record, site_upstream the
upstream file; site_release_info reads all three."""

from __future__ import annotations

import json
import os
import re

from ansible_collections.opspack.platform.plugins.module_utils.common import write_json_atomic
from ansible_collections.opspack.platform.plugins.module_utils.deploy_lock import lock_dir, read_holder
from ansible_collections.opspack.platform.plugins.module_utils.release import ReleaseError, previous_good

RECORD = "release-state.json"
# The upstream file: its name under nginx's conf.d, and what it says (the slot in a comment the
# readers parse, the port in the server line nginx reads).
UPSTREAM_FILE = "opspack-upstream-{site}.conf"
UPSTREAM_SLOT = re.compile(r"^# slot: (\S+)$", re.MULTILINE)
UPSTREAM_SERVER = re.compile(r"^\s*server\s+127\.0\.0\.1:(\d+)\s*;", re.MULTILINE)


def upstream_path(conf_dir: str, site: str) -> str:
    return os.path.join(conf_dir, UPSTREAM_FILE.format(site=site))


def render_upstream(site: str, slot: str, port: int) -> str:
    return (
        "# Owned by the opspack release lifecycle (opspack.platform.site_upstream): swapped atomically\n"
        "# on each switch of traffic. Edit the release variables, not this file.\n"
        f"# slot: {slot}\n"
        f"upstream opspack_{site} {{\n"
        f"    server 127.0.0.1:{port};\n"
        "    keepalive 16;\n"
        "}\n"
    )


def upstream_slot(text: str) -> str:
    found = UPSTREAM_SLOT.search(text)
    return found.group(1) if found else ""


def upstream_port(text: str) -> int:
    found = UPSTREAM_SERVER.search(text)
    return int(found.group(1)) if found else 0


def read_record(site_dir: str) -> dict:
    try:
        with open(os.path.join(site_dir, RECORD), encoding="utf-8") as handle:
            record = json.load(handle)
    except FileNotFoundError:
        record = {}
    except ValueError as exc:
        raise ReleaseError(f"{os.path.join(site_dir, RECORD)} is not valid JSON ({exc}); "
                           "fix or move it before deploying") from exc
    for key in ("current", "previous", "last_known_good", "releases"):
        record.setdefault(key, {})
    return record


def write_record(site_dir: str, record: dict) -> None:
    write_json_atomic(os.path.join(site_dir, RECORD), record, 0o644)


def slot_links(site_dir: str) -> dict[str, str]:
    """Each slot that links to a release, and that release's id."""
    slots_dir = os.path.join(site_dir, "slots")
    slots = {}
    for name in sorted(os.listdir(slots_dir)) if os.path.isdir(slots_dir) else []:
        path = os.path.join(slots_dir, name)
        if os.path.islink(path):
            slots[name] = os.path.basename(os.readlink(path).rstrip("/"))
    return slots


def slot_of(site_dir: str, release_id: str) -> str:
    """The slot that links to release_id, or ''."""
    return next((slot for slot, linked in slot_links(site_dir).items() if linked == release_id), "")


def serving(site: str, site_dir: str, upstream_conf_dir: str) -> dict:
    """What really serves (the slot nginx's upstream names and the release it links to), the
    slots, the record, and the release a plain rollback goes back to."""
    slots = slot_links(site_dir)
    try:
        with open(upstream_path(upstream_conf_dir, site), encoding="utf-8") as handle:
            slot = upstream_slot(handle.read())
    except FileNotFoundError:
        slot = ""
    releases_dir = os.path.join(site_dir, "releases")
    present = {name for name in os.listdir(releases_dir) if os.path.isdir(os.path.join(releases_dir, name))}
    record = read_record(site_dir)
    # A lock left behind names the run that was interrupted: what it was doing decides where a
    # plain rollback goes.
    interrupted, _age = read_holder(lock_dir(site_dir))
    found = {"slot": slot, "release_id": slots.get(slot, "")}
    return {"slots": slots, "serving": found, "record": record,
            "rollback_target": previous_good(record, found["release_id"], present, interrupted)}
