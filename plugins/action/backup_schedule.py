# Copyright: opspack developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Build the host-side backup program on the control node, then let the module install it.

The program is a zip application holding the backup modules, opspack's module utilities and
Ansible's own module_utils (what AnsiballZ would ship for each module run), so the host needs
nothing but python3. The zip is built byte for byte the same from the same sources (sorted
members, fixed times, stored), so its sha256 tells the module whether the installed one is
current, and the ~3 MB are sent only when it is not.
"""

from __future__ import annotations

import hashlib
import io
import os
import tempfile
import zipfile

import ansible.module_utils

from ansible.plugins.action import ActionBase

from ansible_collections.opspack.platform.plugins.module_utils.scheduled_backup import MODULES

MODULE_NAME = "opspack.platform.backup_schedule"
PLUGINS_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MAIN = (b"from ansible_collections.opspack.platform.plugins.module_utils.scheduled_backup import main\n"
        b"main()\n")


def _python_files(root: str):
    for directory, subdirectories, files in os.walk(root):
        subdirectories[:] = sorted(name for name in subdirectories if name != "__pycache__")
        for name in sorted(files):
            if name.endswith(".py"):
                yield os.path.join(directory, name)


def program_members() -> dict[str, bytes]:
    """Archive name -> content of every member of the program."""
    members = {"__main__.py": MAIN, "ansible/__init__.py": b""}
    ansible_utils = os.path.dirname(ansible.module_utils.__file__)
    for path in _python_files(ansible_utils):
        members["ansible/module_utils/" + os.path.relpath(path, ansible_utils)] = _read(path)
    collection = "ansible_collections/opspack/platform/plugins/"
    for package in ("ansible_collections", "ansible_collections/opspack", "ansible_collections/opspack/platform",
                    collection, collection + "modules", collection + "module_utils"):
        members[package.rstrip("/") + "/__init__.py"] = b""
    for path in _python_files(os.path.join(PLUGINS_DIR, "module_utils")):
        members[collection + "module_utils/" + os.path.relpath(path, os.path.join(PLUGINS_DIR, "module_utils"))] = _read(path)
    for name in MODULES:
        members[collection + f"modules/{name}.py"] = _read(os.path.join(PLUGINS_DIR, "modules", name + ".py"))
    return members


def build_program() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as archive:
        for name, content in sorted(program_members().items()):
            info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr = 0o644 << 16
            archive.writestr(info, content)
    return buffer.getvalue()


def _read(path: str) -> bytes:
    with open(path, "rb") as handle:
        return handle.read()


class ActionModule(ActionBase):
    TRANSFERS_FILES = True

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        del tmp  # the remote tmp is made by _make_tmp_path below
        program = build_program()
        args = dict(self._task.args, program_sha256=hashlib.sha256(program).hexdigest())
        args.pop("program_src", None)
        try:
            first = self._execute_module(MODULE_NAME, module_args=args, task_vars=task_vars)
            if first.get("failed") or not first.get("program_needed") or self._task.check_mode:
                result.update(first)
                return result
            remote_tmp = self._connection._shell.tmpdir or self._make_tmp_path()  # pylint: disable=protected-access
            remote_program = self._connection._shell.join_path(remote_tmp, "opspack-backup.pyz")  # pylint: disable=protected-access
            with tempfile.NamedTemporaryFile(prefix="opspack-backup-", suffix=".pyz") as local:
                local.write(program)
                local.flush()
                self._transfer_file(local.name, remote_program)
            self._fixup_perms2((remote_tmp, remote_program))
            second = self._execute_module(MODULE_NAME, module_args=dict(args, program_src=remote_program),
                                          task_vars=task_vars)
            result.update(second)
            if not second.get("failed"):
                result["changed"] = True
                # The first call wrote the units; the second found them current.
                result["units_changed"] = bool(first.get("units_changed") or second.get("units_changed"))
                result["changed_files"] = first.get("changed_files", []) + [
                    path for path in second.get("changed_files", []) if path not in first.get("changed_files", [])]
                if "diff" in first:
                    result["diff"] = first["diff"]
            return result
        finally:
            self._remove_tmp_path(self._connection._shell.tmpdir)  # pylint: disable=protected-access
