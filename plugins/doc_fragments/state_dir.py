# Copyright: opspack developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Options of the control-node plugins that find the inventory's state directory (docs/state.md):
the lookup opspack.platform.state_dir and the records callback, configured the same way."""

from __future__ import annotations


class ModuleDocFragment:  # pylint: disable=too-few-public-methods
    DOCUMENTATION = r"""
options:
  state_dir:
    description:
      - The inventory's state directory on the control node, when the inventory variable
        C(opspack_state_dir) does not name it; by default C(~/.local/share/opspack/<inventory name>).
      - An absolute path (or C(~/...)) is clearest; a relative one is taken from the current
        directory, or from C(ansible.cfg)'s directory when set there. Under AWX, put it on
        persistent storage (docs/awx.md).
    type: path
    env:
      - name: OPSPACK_STATE_DIR
    ini:
      - section: opspack
        key: state_dir
  records_dir:
    description: The records directory, when it is not C(records/) of the state directory.
    type: path
    env:
      - name: OPSPACK_RECORDS_DIR
    ini:
      - section: opspack_records
        key: records_dir
"""
