"""`opspack sites convert FILE...`: the per-role site variables of opspack 0.1 (postgresql_sites,
nginx_sites, app_runtime_sites, app_runtime_site_secrets, backup_site_checks and the release_*
settings) turned into the one site definition, opspack_sites (docs/sites.md).

Secrets are never copied: each becomes a reference to a vault variable, and the output ends with
the names to define in the vault file (the values stay where they were, for the operator to move).
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from urllib.parse import unquote, urlsplit

import yaml

# release_* settings of 0.1 that applied to every site on a host, and their field in a site.
RELEASE_SETTINGS = {
    "release_health_path": "health_path",
    "release_smoke_paths": "smoke_paths",
    "release_system_site_packages": "system_site_packages",
    "release_system_packages": "system_packages",
    "release_shared_links": "shared_paths",
}


class ConvertError(Exception):
    pass


def _vault_name(site: str, what: str) -> str:
    return "vault_" + re.sub(r"[^a-z0-9]+", "_", f"{site}_{what}".lower()).strip("_")


def convert(variables: dict) -> tuple[list[dict], list[str], list[str]]:
    """The opspack_sites entries of the old variables, the vault variables they refer to, and the
    redis_users entries that became sites' own users (to remove from redis_users)."""
    apps = {site["name"]: site for site in variables.get("app_runtime_sites") or []}
    nginx = {site["name"]: site for site in variables.get("nginx_sites") or []}
    databases = {site["name"]: site for site in variables.get("postgresql_sites") or []}
    secrets = variables.get("app_runtime_site_secrets") or {}
    checks = variables.get("backup_site_checks") or {}
    names = list(dict.fromkeys(list(apps) + list(nginx) + list(databases)))
    if not names:
        raise ConvertError("no sites found: give the file(s) that set app_runtime_sites, nginx_sites or postgresql_sites")
    redis_acls = {user.get("name"): user.get("acl", "") for user in variables.get("redis_users") or [] if isinstance(user, dict)}
    moved_redis_users: list[str] = []
    vault: list[str] = []
    sites = []
    for name in names:
        app, web, db = apps.get(name, {}), nginx.get(name, {}), databases.get(name, {})
        site: dict = {"name": name, "hosts": "all"}
        if not web.get("server_names"):
            raise ConvertError(f"site {name}: no nginx_sites entry with server_names; its domains cannot be known")
        site["domains"] = list(web["server_names"])
        site["port"] = app.get("port", web.get("upstream_port", variables.get("app_runtime_default_port", 8000)))
        site["app"] = {"web_command": app["web_command"]} if app.get("web_command") else {"module": "app:application"}
        if app.get("worker_command"):
            site["app"]["worker_command"] = app["worker_command"]
        if app.get("user", name) != name:
            site["user"] = app["user"]
        for old, new in RELEASE_SETTINGS.items():
            if old in variables:
                site[new] = copy.deepcopy(variables[old])
        migrations = {}
        if "release_migrations_dir" in variables and variables["release_migrations_dir"] != "migrations":
            migrations["dir"] = variables["release_migrations_dir"]
        command = app.get("migrate_command") or variables.get("release_migrate_command")
        back = app.get("migrate_rollback_command") or variables.get("release_migrate_rollback_command")
        if command:
            migrations["command"] = command
        if back:
            migrations["rollback_command"] = back
        if db:
            site["database"] = {"name": db.get("db_name", name), "user": db.get("db_user", name),
                                "password": "{{ " + _vault_name(name, "db_password") + " }}"}
            vault.append(_vault_name(name, "db_password"))
            if migrations:
                site["migrations"] = migrations
        site_secrets = dict(secrets.get(name) or {})
        site_secrets.pop("DATABASE_URL", None)  # made from database now
        redis_url = site_secrets.pop("REDIS_URL", None)
        if redis_url:
            parts = urlsplit(redis_url)
            user = unquote(parts.username or "default")
            site["redis"] = {"user": user, "password": "{{ " + _vault_name(name, "redis_password") + " }}",
                             "db": int((parts.path or "/0").strip("/") or 0)}
            if redis_acls.get(user):
                site["redis"]["acl"] = redis_acls[user]
            if user in redis_acls:
                moved_redis_users.append(user)
            vault.append(_vault_name(name, "redis_password"))
        if app.get("env"):
            site["env"] = dict(app["env"])
        if site_secrets:
            site["secrets"] = {}
            for key in sorted(site_secrets):
                site["secrets"][key] = "{{ " + _vault_name(name, key) + " }}"
                vault.append(_vault_name(name, key))
        if name in checks:
            site["backup"] = dict(checks[name])
        if web.get("maintenance_file"):
            site["maintenance_file"] = web["maintenance_file"]
        sites.append(site)
    return sites, vault, list(dict.fromkeys(moved_redis_users))


def render(paths: list[Path]) -> str:
    variables: dict = {}
    for path in paths:
        loaded = yaml.safe_load(path.read_text()) or {}
        if not isinstance(loaded, dict):
            raise ConvertError(f"{path}: not a file of variables")
        variables.update(loaded)
    sites, vault, moved = convert(variables)
    out = ["---", "# Written by `opspack sites convert` from " + ", ".join(str(p) for p in paths) + ".",
           "# Check `hosts` (the old variables applied to every host their file applied to) and the",
           "# domains, then remove the old variables (every playbook refuses them from now on).",
           yaml.safe_dump({"opspack_sites": sites}, sort_keys=False, default_flow_style=False, width=1000).rstrip()]
    if moved:
        out += ["", "# Remove from redis_users (each is now a site's own Redis user, its ACL carried over): "
                + ", ".join(moved)]
    if vault:
        out += ["", "# Define these in the inventory's vault file, with the values of the old variables:"]
        out += [f"#   {name}: ..." for name in dict.fromkeys(vault)]
    return "\n".join(out) + "\n"
