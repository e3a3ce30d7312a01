# Copyright: opspack developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The site definitions (opspack_sites) as each role needs them on the current host."""

from __future__ import annotations

DOCUMENTATION = r"""
name: sites
short_description: What the roles need from the site definitions (opspack_sites) on this host
version_added: 0.2.0
author: opspack developers (@opspack)
description:
  - Reads C(opspack_sites), the one description of every site (docs/sites.md), checks it and
    returns one view of it for the current host. The roles' own site variables
    (C(postgresql_sites), C(nginx_sites), C(app_runtime_sites), ...) default to these views.
  - Values are templated field by field, so a vault reference that is not defined is reported
    with the site and the field that use it, and never with a value.
  - Runs on the control node and never connects, so a bad definition fails before the first change.
options:
  _terms:
    description:
      - The view. C(sites) (every site on the host without secrets), C(site) with O(name) (one
        of them), C(site_names), C(postgresql_sites), C(redis_users), C(nginx_sites),
        C(app_runtime_sites), C(app_runtime_site_secrets), C(backup_site_checks), C(site_hosts) with
        O(name) (the inventory hosts that run it), C(definition) with O(name) (one site wherever it
        runs, without its secrets), C(all_site_names), or C(summary)
        (lines safe to print), or C(check) (the summary, after refusing the per-role site variables
        that opspack_sites replaced).
    type: list
    elements: str
    required: true
  name:
    description: The site of the C(site) and C(site_hosts) views.
    type: str
"""

EXAMPLES = r"""
- name: The sites of this host, checked (the first task of every opspack playbook)
  ansible.builtin.debug:
    msg: "{{ lookup('opspack.platform.sites', 'summary') }}"

- name: One site's settings
  ansible.builtin.set_fact:
    blog: "{{ lookup('opspack.platform.sites', 'site', name='blog') }}"
"""

RETURN = r"""
_raw:
  description: The view asked for.
  type: list
  elements: raw
"""

from ansible.errors import AnsibleError, AnsibleLookupError, AnsibleUndefinedVariable
from ansible.plugins.lookup import LookupBase

from ansible_collections.opspack.platform.plugins.module_utils.site_model import (
    LEGACY_VARIABLES, SiteDefinitionError, hosts_running, normalize, summary, views, without_secrets)


class LookupModule(LookupBase):

    def _value(self, variables, name, default):
        if name not in variables:
            return default
        return self._templar.template(variables[name])

    def _template(self, value, site, path):
        """Template one field; an undefined variable names the site and the field, never a value."""
        if isinstance(value, dict):
            return {key: self._template(item, site, f"{path}.{key}" if path else str(key)) for key, item in value.items()}
        if isinstance(value, list):
            return [self._template(item, site, path) for item in value]
        try:
            return self._templar.template(value)
        except AnsibleUndefinedVariable as error:
            raise AnsibleLookupError(
                f"opspack_sites: site {site}: {path}: {error.message.split(chr(10))[0]} (define it, secrets in the "
                "inventory's vault file; nothing was changed)") from None

    def run(self, terms, variables=None, **kwargs):
        self.set_options(var_options=variables, direct=kwargs)
        variables = variables or {}
        raw = variables.get("opspack_sites", [])
        if isinstance(raw, str):
            raw = self._templar.template(raw)
        if not isinstance(raw, list):
            raise AnsibleLookupError("opspack_sites must be a list of sites (one entry per site)")
        templated = []
        for entry in raw:
            name = entry.get("name", "?") if isinstance(entry, dict) else "?"
            templated.append(self._template(entry, self._templar.template(name), ""))
        groups = self._value(variables, "groups", {}) or {}
        host = variables.get("inventory_hostname", "localhost")
        known = set(groups) | {h for members in groups.values() for h in members} | {"all", host}
        # The host's own services (from the roles' variables, their defaults when unset).
        exporter = str(self._value(variables, "monitoring_node_exporter_listen", "127.0.0.1:9100"))
        postgresql_port = int(self._value(variables, "postgresql_port", 5432))
        redis_port = int(self._value(variables, "redis_port", 6379))
        reserved = {80: "nginx", 443: "nginx", int(self._value(variables, "access_ssh_port", 22)): "SSH",
                    postgresql_port: "PostgreSQL", redis_port: "Redis"}
        if exporter.rpartition(":")[2].isdigit():
            reserved[int(exporter.rpartition(":")[2])] = "the node exporter"
        # Only the names of the host's own Redis users (their passwords are not needed here).
        raw_redis_users = variables.get("redis_users") or []
        host_redis_users = [self._templar.template(user.get("name")) for user in raw_redis_users
                            if isinstance(user, dict) and user.get("name")] if isinstance(raw_redis_users, list) else []
        base_dir = self._value(variables, "app_runtime_base_dir", "/srv")
        try:
            sites = normalize(templated, base_dir=base_dir)
            view = views(sites, host, self._value(variables, "group_names", []) or [], known,
                         slots=tuple(self._value(variables, "app_runtime_slots", ["blue", "green"])),
                         reserved=reserved, base_dir=base_dir,
                         postgresql_port=postgresql_port, redis_port=redis_port,
                         redis_default_acl=self._value(variables, "redis_user_default_acl", "~* &* +@all -@dangerous"),
                         host_redis_users=host_redis_users)
        except SiteDefinitionError as error:
            raise AnsibleLookupError(f"{error} (host {host}; nothing was changed)") from None
        out = []
        for term in terms:
            if term == "check":
                legacy = [name for name in LEGACY_VARIABLES if name in variables]
                if legacy:
                    raise AnsibleLookupError(
                        "; ".join(f"{name} is now part of the site definition: opspack_sites[].{LEGACY_VARIABLES[name]}"
                                  for name in legacy)
                        + ". Describe each site once in opspack_sites (docs/sites.md maps every old variable; "
                        "`opspack sites convert FILE` writes the entries from a file of the old variables). Nothing was changed.")
                out.append(summary(view))
            elif term == "summary":
                out.append(summary(view))
            elif term == "site_hosts":
                # The inventory's hosts that run the site (its hosts: groups, hosts or all).
                name = self.get_option("name")
                found = [site for site in sites if site["name"] == name]
                if not found:
                    raise AnsibleLookupError(f"site {name!r} is not defined in opspack_sites")
                out.append(hosts_running(found[0], groups))
            elif term == "definition":
                # One site as opspack_sites defines it, wherever it runs, without its secrets (the
                # control node's own tasks, such as the release gate, read it).
                name = self.get_option("name")
                found = [site for site in sites if site["name"] == name]
                if not found:
                    raise AnsibleLookupError(f"site {name!r} is not defined in opspack_sites")
                out.append(without_secrets(found[0]))
            elif term == "site":
                name = self.get_option("name")
                found = [site for site in view["sites"] if site["name"] == name]
                if not found:
                    raise AnsibleLookupError(
                        f"site {name!r} does not run on {host} (its sites: {', '.join(view['site_names']) or 'none'}; "
                        "opspack_sites[].hosts says where a site runs)")
                out.append(found[0])
            elif term in view:
                out.append(view[term])
            else:
                raise AnsibleError(f"sites: unknown view {term!r} (known: site, summary, {', '.join(sorted(view))})")
        return out
