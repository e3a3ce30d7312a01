# Copyright: opspack developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Filters that compare what a role wants with one probe of what a host has.

Each ansible.builtin.template or copy task costs two module runs on the host even when nothing
changes, each package or directory task one more. Roles read their files and directories with
a single ansible.builtin.find (get_checksum) and their packages from one dpkg-query listing
(dpkg_packages; package_facts loads apt's whole cache and costs a second per host), and skip the
tasks whose target is already in place. Anything missing, unreadable or different makes the
task run, so the full task (with its check mode and diff) stays the authority.
"""

from __future__ import annotations

import fnmatch
import hashlib

from ansible.errors import AnsibleFilterError

from ansible_collections.opspack.platform.plugins.module_utils.health import CheckError, ruleset_fingerprint


def _found_by_path(found):
    """Index an ansible.builtin.find result (or its files list) by path."""
    if isinstance(found, dict):
        if found.get("skipped") or found.get("failed"):
            return {}
        found = found.get("files", [])
    if not isinstance(found, list):
        raise AnsibleFilterError(f"expected an ansible.builtin.find result, got {type(found).__name__}")
    return {entry["path"]: entry for entry in found if isinstance(entry, dict) and "path" in entry}


def _mode_bits(mode):
    if mode is None:
        return None
    if isinstance(mode, int):
        return mode & 0o7777
    try:
        return int(str(mode), 8) & 0o7777
    except ValueError as exc:
        raise AnsibleFilterError(f"mode {mode!r} is not an octal number such as '0644'") from exc


def _attributes_differ(entry, owner, group, mode):
    return ((owner is not None and entry.get("pw_name") != owner)
            or (group is not None and entry.get("gr_name") != group)
            or (mode is not None and _mode_bits(entry.get("mode")) != _mode_bits(mode)))


def file_differs(found, path, content, owner="root", group="root", mode="0644"):
    """True unless a regular file at path holds exactly content, with these owner, group and mode.

    content None compares only that it is a regular file with these attributes (for files
    whose content the controller cannot know, such as private keys)."""
    entry = _found_by_path(found).get(path)
    if entry is None or not entry.get("isreg"):
        return True
    if content is None:
        return _attributes_differ(entry, owner, group, mode)
    if "checksum" not in entry:
        return True
    if isinstance(content, str):
        content = content.encode("utf-8")
    return (hashlib.sha1(content).hexdigest() != entry["checksum"]  # nosec B324: ansible's own checksum
            or _attributes_differ(entry, owner, group, mode))


def dir_differs(found, path, owner="root", group="root", mode="0755"):
    """True unless path is a directory with these owner, group and mode."""
    entry = _found_by_path(found).get(path.rstrip("/") or "/")
    return entry is None or not entry.get("isdir") or _attributes_differ(entry, owner, group, mode)


def find_spec(paths):
    """Arguments for one ansible.builtin.find call that sees every path given.

    The search starts at each path's top-level directory (/etc, /srv, /var...), which exists on
    every Debian host, so a fresh host gives no "path does not exist" warnings, and goes as deep
    as the deepest path. Matching is by base name: extra matches are harmless, the filters look
    entries up by full path.
    """
    if isinstance(paths, str) or not all(isinstance(path, str) and path.startswith("/") for path in paths):
        raise AnsibleFilterError(f"find_spec wants a list of absolute paths, got {paths!r}")
    parts = [[part for part in path.split("/") if part] for path in paths]
    if not parts:
        raise AnsibleFilterError("find_spec needs at least one path (skip the probe when a role manages none)")
    if any(len(part) < 2 for part in parts):
        raise AnsibleFilterError(f"find_spec wants paths below a top-level directory, got {paths!r}")
    return {"paths": sorted({"/" + part[0] for part in parts}),
            "patterns": sorted({part[-1] for part in parts}),
            "depth": max(len(part) - 1 for part in parts)}


# dpkg's desired-selection letters (first column of ${db:Status-Abbrev}).
_DPKG_SELECTIONS = {"u": "unknown", "i": "install", "h": "hold", "r": "deinstall", "p": "purge"}
DPKG_SHOWFORMAT = "${db:Status-Abbrev} ${Package} ${Version} ${Architecture}\n"


def dpkg_packages(listing):
    """The installed packages from `dpkg-query --show --showformat=DPKG_SHOWFORMAT` output (or a
    registered command result holding it), shaped like ansible_facts['packages'] plus each
    package's selection (install, hold, ...). Only fully installed packages count: a half
    configured one is left out, so the role's apt task runs and finishes it."""
    if isinstance(listing, dict):
        if listing.get("skipped") or listing.get("failed") or listing.get("rc", 0) != 0:
            return {}
        listing = listing.get("stdout", "")
    packages = {}
    for line in str(listing).splitlines():
        # Status-Abbrev is three letters, the last a space unless dpkg flags an error: split on
        # any run of white space (names, versions and architectures have none).
        fields = line.split()
        if len(fields) != 4 or len(fields[0]) < 2:
            raise AnsibleFilterError(f"dpkg_packages: not a line of the expected dpkg-query format: {line!r}")
        status, name, version, arch = fields
        if status[1] != "i":
            continue
        packages.setdefault(name, []).append({
            "name": name, "version": version, "arch": arch, "source": "apt",
            "selection": _DPKG_SELECTIONS.get(status[0], "unknown"),
        })
    return packages


def packages_missing(packages, names):
    """The names not installed according to dpkg_packages or package facts (all if unknown).

    A pinned name (name=version) always counts as missing, so apt itself checks the version."""
    names = [names] if isinstance(names, str) else list(names)
    if not isinstance(packages, dict) or not packages:
        return names
    return [name for name in names if "=" in name or name not in packages]


def _shown_units(show) -> dict | None:
    """`systemctl show` output (or a registered result holding it) as {Id: properties}; None
    when the command did not run."""
    if isinstance(show, dict):
        if show.get("skipped") or show.get("failed") or show.get("rc", 0) != 0:
            return None
        show = show.get("stdout", "")
    units = {}
    for block in str(show).strip().split("\n\n"):
        fields = dict(line.split("=", 1) for line in block.splitlines() if "=" in line)
        if "Id" in fields:
            units[fields["Id"]] = fields
    return units


def units_inactive(show, patterns):
    """What is wrong with the units `systemctl show -p Id -p ActiveState PATTERN...` shows: each
    unit a pattern matches that is not active, and each pattern that matches no unit at all
    (a glob such as postgresql@*-main.service matches only units systemd has loaded)."""
    units = _shown_units(show)
    if units is None:
        return ["systemctl show did not run"]
    problems = []
    for pattern in [patterns] if isinstance(patterns, str) else patterns:
        matched = sorted(name for name in units if fnmatch.fnmatchcase(name, pattern))
        if not matched:
            problems.append(f"{pattern} is not loaded")
        for name in matched:
            if units[name].get("ActiveState") != "active":
                problems.append(f"{name} is {units[name].get('ActiveState', 'unknown')}")
    return problems


def unit_settled(show, name, enabled=True, started=True):
    """True when `systemctl show -p Id -p UnitFileState -p ActiveState UNIT...` output (or a
    registered command result holding it) says unit name is enabled and, if started, active."""
    units = _shown_units(show)
    if units is None:
        return False
    unit = units.get(name)
    if unit is None:
        return False
    return ((not enabled or unit.get("UnitFileState") == "enabled")
            and (not started or unit.get("ActiveState") == "active"))


def nft_fingerprint(listing, table: str) -> dict:
    """The fingerprint (rule count and hash) of a table from `nft -j -s list table`, as the
    production verification compares it with the live table (module_utils/health.py)."""
    text = listing.get("stdout", "") if isinstance(listing, dict) else listing
    try:
        return dict(ruleset_fingerprint(text), table=table)
    except CheckError as exc:
        raise AnsibleFilterError(f"nft_fingerprint: not the JSON of 'nft -j list table' ({exc})") from exc


class FilterModule:
    """Compare desired state with one probe of the host."""

    def filters(self):
        return {
            "file_differs": file_differs,
            "nft_fingerprint": nft_fingerprint,
            "dir_differs": dir_differs,
            "find_spec": find_spec,
            "dpkg_packages": dpkg_packages,
            "packages_missing": packages_missing,
            "unit_settled": unit_settled,
            "units_inactive": units_inactive,
        }
