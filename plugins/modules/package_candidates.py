#!/usr/bin/python
# Copyright: opspack developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Whether apt can install every package of a plan on this host, asked before anything changes."""

from __future__ import annotations

DOCUMENTATION = r"""
module: package_candidates
short_description: Whether apt can install each package of a plan on this host (reads only)
version_added: 0.2.0
author: opspack developers (@opspack)
description:
  - Asks apt once (C(apt-cache policy)) about every package of the plan and reports the ones it
    could not install, whether unknown to the host's package sources, without an installation
    candidate, or with no version matching the one asked for. An installed package counts as installable.
  - Reads apt's package lists only and never refreshes them, installs or changes anything, so a
    caller (the preflight role) can refuse a host before the first change. Refresh the lists first
    (C(ansible.builtin.apt) with C(update_cache)) on a host whose lists may be stale or empty.
options:
  packages:
    description:
      - Package names, or C(NAME=VERSION) where VERSION may hold shell-style wildcards
        (C(NAME=1.2-*) asks for any packaging revision of upstream 1.2).
    type: list
    elements: str
    required: true
attributes:
  check_mode:
    support: full
    description: Reads only, in check mode as in a normal run.
  diff_mode:
    support: none
    description: Nothing to show.
  platform:
    support: full
    platforms: debian
    description: Debian and Ubuntu (apt).
notes:
  - Always reports C(changed=false).
"""

EXAMPLES = r"""
- name: Refuse the host when apt cannot install what provisioning would
  opspack.platform.package_candidates:
    packages: "{{ ['nginx', 'postgresql-' ~ postgresql_version, 'pgbackrest=' ~ pgbackrest_version ~ '-*'] }}"
  register: plan

- name: Say what is missing
  ansible.builtin.fail:
    msg: "{{ plan.missing | map(attribute='reason') | join('; ') }}"
  when: plan.missing | length > 0
"""

RETURN = r"""
installable:
  description: The packages of the plan apt can install (or that are installed), with the version apt would take.
  returned: always
  type: list
  elements: dict
  sample: [{"name": "nginx", "version": "1.26.3-3+deb13u1"}]
missing:
  description: The packages apt cannot install, each with a one-line reason.
  returned: always
  type: list
  elements: dict
  sample: [{"name": "postgresql-99", "wanted": "postgresql-99", "reason": "postgresql-99: no package of that name in this host's apt sources"}]
"""

import fnmatch
import re

from ansible.module_utils.basic import AnsibleModule

VERSION_LINE = re.compile(r"^\s+(?:\*\*\*\s+)?(\S+)\s+-?\d+\s*$")


def parse_policy(text: str) -> dict[str, dict]:
    """`apt-cache policy NAME...` as {name: {installed, candidate, versions}}; unknown names are absent."""
    found: dict[str, dict] = {}
    current = None
    in_table = False
    for line in text.splitlines():
        header = re.match(r"^(\S+):$", line)
        if header:
            current = found.setdefault(header.group(1), {"installed": None, "candidate": None, "versions": []})
            in_table = False
            continue
        if current is None:
            continue
        stripped = line.strip()
        if stripped.startswith("Installed:"):
            value = stripped.split(":", 1)[1].strip()
            current["installed"] = None if value == "(none)" else value
        elif stripped.startswith("Candidate:"):
            value = stripped.split(":", 1)[1].strip()
            current["candidate"] = None if value == "(none)" else value
        elif stripped.startswith("Version table:"):
            in_table = True
        elif in_table:
            version = VERSION_LINE.match(line)
            if version and not line.startswith(" " * 8):
                current["versions"].append(version.group(1))
    return found


def judge(wanted: list[str], policy: dict[str, dict]) -> tuple[list[dict], list[dict]]:
    installable, missing = [], []
    for spec in wanted:
        name, pattern = spec.split("=", 1) if "=" in spec else (spec, "")
        known = policy.get(name.split(":", 1)[0])
        if known is None:
            missing.append({"name": name, "wanted": spec,
                            "reason": f"{name}: no package of that name in this host's apt sources"})
            continue
        if pattern:
            matches = [version for version in [known["installed"], *known["versions"]]
                       if version and fnmatch.fnmatchcase(version, pattern)]
            if matches:
                installable.append({"name": name, "version": matches[0]})
            else:
                offered = ", ".join(dict.fromkeys(known["versions"])) or "none"
                missing.append({"name": name, "wanted": spec,
                                "reason": f"{name}: no version {pattern} in this host's apt sources (offered: {offered})"})
        elif known["installed"] or known["candidate"]:
            installable.append({"name": name, "version": known["installed"] or known["candidate"]})
        else:
            missing.append({"name": name, "wanted": spec, "reason": f"{name}: apt has no installation candidate"})
    return installable, missing


def main() -> None:
    module = AnsibleModule(argument_spec={"packages": {"type": "list", "elements": "str", "required": True}},
                           supports_check_mode=True)
    wanted = list(dict.fromkeys(module.params["packages"]))
    names = list(dict.fromkeys(spec.partition("=")[0] for spec in wanted))
    policy = {}
    if names:
        rc, out, err = module.run_command(["apt-cache", "policy", "--", *names],
                                          environ_update={"LC_ALL": "C", "LANG": "C"})
        if rc != 0:
            module.fail_json(msg=f"apt-cache policy failed (exit {rc}): {(err or out).strip()[-500:]}")
        policy = parse_policy(out)
    installable, missing = judge(wanted, policy)
    module.exit_json(changed=False, installable=installable, missing=missing)


if __name__ == "__main__":
    main()
