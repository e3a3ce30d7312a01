# Copyright: opspack developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Where the control node keeps what opspack writes for an inventory: the one rule that the
state_dir lookup (the roles) and the records callback share (the opspack command asks the lookup)."""

from __future__ import annotations

import os

# What lives in the state directory, one sub-directory each.
PARTS = ("records", "artifacts", "backups", "lab-ca")


def inventory_name(sources) -> str:
    """The name of the run's inventory: its directory's name (inventories/production for both
    `-i inventories/production` and `-i inventories/production/hosts.yml`), so one inventory
    keeps one state directory however it is named on the command line."""
    for source in sources or ():
        source = str(source)
        if "," in source and not os.path.exists(source):
            continue  # a host list (`-i web-1,`) is no place
        source = os.path.normpath(os.path.abspath(os.path.expanduser(source)))
        directory = source if os.path.isdir(source) else os.path.dirname(source)
        name = os.path.basename(directory)
        if name:
            return name
    return "default"


def data_home(environ=None) -> str:
    """$XDG_DATA_HOME, else ~/.local/share (the XDG base directory default)."""
    environ = os.environ if environ is None else environ
    configured = environ.get("XDG_DATA_HOME", "")
    if os.path.isabs(configured):
        return configured
    return os.path.join(os.path.expanduser("~"), ".local", "share")


def default_state_dir(sources, environ=None) -> str:
    """~/.local/share/opspack/<inventory name>: outside the inventory, so Ansible never reads a
    record as inventory, and outside the project, so backups and keys are never committed by
    accident."""
    return os.path.join(data_home(environ), "opspack", inventory_name(sources))


def state_dir(configured, sources, environ=None) -> str:
    """The configured directory (absolute once expanded), else the default."""
    if configured:
        return os.path.abspath(os.path.expanduser(str(configured)))
    return default_state_dir(sources, environ)


def records_dir(configured_records, configured_state, sources, environ=None) -> str:
    """The records directory: the one configured for the records, else records/ of the state directory."""
    if configured_records:
        return state_dir(configured_records, [])
    return part(state_dir(configured_state, sources, environ), "records")


def part(directory: str, name: str) -> str:
    if name not in PARTS:
        raise ValueError(f"{name!r} is not a part of the state directory: use one of {', '.join(PARTS)}")
    return os.path.join(directory, name)
