# Copyright: opspack developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The site model: an operator describes each site once (`opspack_sites`), and every role reads
what it needs from here (the database and Redis user it gets, the nginx server it is, its units,
slot ports and settings of its releases) instead of restating another role's defaults.

`normalize()` checks every entry and fills in defaults, naming the site and the field of every
problem; `views()` gives, for one host, what each role takes as input. Values are plain Python:
the lookup plugin `opspack.platform.sites` templates the inventory's values (vault references
included) field by field before they come here.
"""

from __future__ import annotations

import re
import zlib

from ansible_collections.opspack.platform.plugins.module_utils.common import OpspackError

# What an `auto` port is drawn from: buckets of ten ports, chosen by a hash of the site's name,
# so a site keeps its port when other sites come and go (an app port must never move under a
# serving site). Far from the services a host runs (SSH, nginx, PostgreSQL, Redis, exporters).
AUTO_PORT_BASE = 20000
AUTO_PORT_BUCKETS = 1000
AUTO_PORT_STEP = 10

DEFAULT_HEALTH_PATH = "/health/ready"
APP_KINDS = ("wsgi", "asgi")

# Every field of a site, with its default (REQUIRED: none; a dict: the keys of a sub-entry).
REQUIRED = object()
SITE_FIELDS = {
    "name": REQUIRED,
    "hosts": REQUIRED,
    "domains": REQUIRED,
    "app": {},
    "user": None,
    "port": "auto",
    "health_path": DEFAULT_HEALTH_PATH,
    "smoke_paths": ["/"],
    "release_header": "",
    "database": None,
    "redis": None,
    "migrations": {},
    "shared_paths": ["uploads"],
    "system_packages": [],
    "system_site_packages": False,
    "env": {},
    "secrets": {},
    "maintenance_file": "",
    "backup": {},
    "thresholds": {},
    "required_env": [],
    "queue": {},
    "gate": {},
}
APP_FIELDS = {"kind": "wsgi", "module": "", "web_command": "", "worker_command": "", "workers": 2}
DATABASE_FIELDS = {"name": None, "user": None, "password": REQUIRED}
REDIS_FIELDS = {"user": None, "password": REQUIRED, "db": 0, "acl": ""}
MIGRATIONS_FIELDS = {"dir": "migrations", "command": [], "rollback_command": []}
BACKUP_FIELDS = {"critical_tables": [], "drill_query": ""}
# The runbooks' monitoring thresholds of the health checks and alerts (plugins/module_utils/health.py).
THRESHOLD_FIELDS = {"cpu_percent": 80, "memory_percent": 85, "disk_percent": 80, "error_rate_percent": 0.5,
                    "p95_seconds": 2, "queue_length": 1000}
# Fields whose values are secrets: never in a message, never in the public view of a site.
# Where the health checks read the length of the app's queue: a command (argv, run as the
# site's user, printing a number) or a URL answering with one.
QUEUE_FIELDS = {"command": [], "url": ""}
# What the release gate (opspack.platform.release_gate) runs and reads in a release's tree: the
# app's tests (argv, run in the unpacked release), its pinned requirements, its reviewed
# detect-secrets baseline.
GATE_FIELDS = {"test_command": [], "requirements": "requirements.txt", "secrets_baseline": ".secrets.baseline"}
SECRET_FIELDS = ("database.password", "redis.password", "secrets")

# A site's name becomes its service user, units, directories, database and backups: the
# strictest of those rules (app_runtime's), so a name is refused here, before anything changes.
SITE_DEFINITION_NAME = re.compile(r"[a-z][a-z0-9-]{0,23}")
# No wildcard: certificates are issued per name (ACME http-01 cannot validate a wildcard).
DOMAIN = re.compile(r"(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)*[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")
# Paths go into nginx locations and URLs: plain characters only (no quotes, braces, ; or $).
URL_PATH = re.compile(r"/[A-Za-z0-9._~%/-]*(\?[A-Za-z0-9._~%&=/-]*)?")
# Accounts a site's user must never be (app_runtime sets a site user's home and shell).
SYSTEM_USERS = {"root", "daemon", "bin", "sys", "sync", "games", "man", "lp", "mail", "news", "uucp", "proxy", "www-data",
                "backup", "list", "irc", "nobody", "postgres", "redis", "sshd", "messagebus", "prometheus", "_apt"}
PG_RESERVED = {"postgres", "template0", "template1", "public"}
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
UNIX_NAME = re.compile(r"[a-z_][a-z0-9_-]{0,31}")
PG_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")
HEADER_NAME = re.compile(r"[A-Za-z0-9-]+")
# The settings the old per-role variables carried, and where each lives now.
LEGACY_VARIABLES = {
    "postgresql_sites": "database: {name, user, password}",
    "nginx_sites": "domains, port, maintenance_file",
    "app_runtime_sites": "app: {kind, module, web_command, worker_command}, user, port, env",
    "app_runtime_site_secrets": "secrets (DATABASE_URL and REDIS_URL are made from database and redis)",
    "release_health_path": "health_path",
    "release_smoke_paths": "smoke_paths",
    "release_system_site_packages": "system_site_packages",
    "release_system_packages": "system_packages",
    "release_migrations_dir": "migrations: {dir}",
    "release_shared_links": "shared_paths",
    "app_runtime_default_port": "port (auto, or a number per site)",
    "nginx_upstream_port": "port (auto, or a number per site)",
    "release_migrate_command": "migrations: {command}",
    "release_migrate_rollback_command": "migrations: {rollback_command}",
}


class SiteDefinitionError(OpspackError):
    """opspack_sites is wrong; the message names the site and the field."""


def _problem(site, field, message):
    return SiteDefinitionError(f"opspack_sites: site {site}: {field}: {message}")


def _fill(site, field, given, spec):
    """A sub-entry with its defaults, refusing keys the spec does not know."""
    if not isinstance(given, dict):
        raise _problem(site, field, f"must be a mapping of {', '.join(sorted(spec))}")
    unknown = sorted(set(given) - set(spec))
    if unknown:
        raise _problem(site, f"{field}.{unknown[0]}", f"unknown key (known: {', '.join(sorted(spec))})")
    out = {}
    for key, default in spec.items():
        if key in given and given[key] is not None:
            out[key] = given[key]
        elif default is REQUIRED:
            raise _problem(site, f"{field}.{key}", "missing")
        else:
            out[key] = list(default) if isinstance(default, list) else default
    return out


def _strings(site, field, value, pattern=None, what="", allow_empty=True):
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise _problem(site, field, "must be a list of strings")
    if not allow_empty and not value:
        raise _problem(site, field, "must name at least one")
    for item in value:
        if pattern is not None and not pattern.fullmatch(item):
            raise _problem(site, field, f"{item!r} is not {what}")
    return list(value)


def _boolean(site, field, value):
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "yes", "on", "1", "false", "no", "off", "0"):
        return value.lower() in ("true", "yes", "on", "1")
    raise _problem(site, field, "must be true or false")


def _integer(site, field, value, low, high):
    # The value is never echoed: a secret given in the wrong field must not reach a message.
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise _problem(site, field, f"must be a number from {low} to {high}") from None
    if isinstance(value, bool) or not low <= number <= high or str(value).strip() != str(number):
        raise _problem(site, field, f"must be a number from {low} to {high}")
    return number


def _secret(site, field, value):
    if not isinstance(value, str) or not value:
        raise _problem(site, field, "is empty: give it from the vault (e.g. \"{{ vault_" + site.replace("-", "_")
                       + "_" + field.split(".")[0] + "_password }}\")")
    if "\n" in value:
        raise _problem(site, field, "must be one line")
    return value


def _command(site, field, value):
    if isinstance(value, str):
        raise _problem(site, field, "must be a list of arguments (argv), not one string")
    return _strings(site, field, value)


def auto_port(name: str) -> int:
    return AUTO_PORT_BASE + AUTO_PORT_STEP * (zlib.crc32(name.encode("utf-8")) % AUTO_PORT_BUCKETS)


def normalize_site(raw, base_dir="/srv"):
    """One entry of opspack_sites, checked and with every default filled in."""
    if not isinstance(raw, dict):
        raise SiteDefinitionError(f"opspack_sites: every entry must be a mapping, not {raw!r}")
    name = raw.get("name")
    if not isinstance(name, str) or not SITE_DEFINITION_NAME.fullmatch(name):
        raise SiteDefinitionError(f"opspack_sites: site {name!r}: name: lower-case letters, digits and -, starting with "
                                  "a letter, at most 24 (it names the site's user, units, directories and database)")
    unknown = sorted(set(raw) - set(SITE_FIELDS))
    if unknown:
        hint = ""
        if unknown[0] in ("password", "db_password", "db_name", "db_user"):
            hint = "; the database is database: {name, user, password}"
        raise _problem(name, unknown[0], f"unknown key (known: {', '.join(SITE_FIELDS)}){hint}")
    site = {}
    for key, default in SITE_FIELDS.items():
        if key in raw and raw[key] is not None:
            site[key] = raw[key]
        elif default is REQUIRED:
            hint = {"hosts": "name the inventory group (or host) whose hosts run the site",
                    "domains": "the names the site answers to, the first is its main name"}[key]
            raise _problem(name, key, f"missing: {hint}")
        else:
            site[key] = list(default) if isinstance(default, list) else dict(default) if isinstance(default, dict) else default

    site["hosts"] = _strings(name, "hosts", site["hosts"], allow_empty=False)
    site["domains"] = [domain.lower() for domain in _strings(name, "domains", site["domains"], allow_empty=False)]
    for domain in site["domains"]:
        if not DOMAIN.fullmatch(domain):
            raise _problem(name, "domains", f"{domain!r} is not a host name (no wildcards: each name gets its certificate)")

    app = _fill(name, "app", site["app"], APP_FIELDS)
    if app["kind"] not in APP_KINDS:
        raise _problem(name, "app.kind", f"must be one of {', '.join(APP_KINDS)}")
    app["workers"] = _integer(name, "app.workers", app["workers"], 1, 64)
    for key in ("module", "web_command", "worker_command"):
        if not isinstance(app[key], str) or "\n" in app[key]:
            raise _problem(name, f"app.{key}", "must be one line of text")
    if not app["web_command"] and not app["module"]:
        raise _problem(name, "app", "give module (e.g. module: app:application, served by the gunicorn or uvicorn "
                       "of the release's requirements) or web_command")
    if app["module"] and not re.fullmatch(r"[A-Za-z_][\w.]*(:[A-Za-z_][\w.()]*)?", app["module"]):
        raise _problem(name, "app.module", "is not MODULE:CALLABLE")
    site["app"] = app

    user = site["user"] if site["user"] is not None else name
    if not isinstance(user, str) or not UNIX_NAME.fullmatch(user):
        raise _problem(name, "user", "is not a user name (lower-case letters, digits, _ and -)")
    if user in SYSTEM_USERS or user.startswith("systemd-"):
        raise _problem(name, "user", f"{user} is a system account: a site runs as a user of its own")
    site["user"] = user

    if site["port"] == "auto":
        site["port"] = auto_port(name)
        site["port_auto"] = True
    else:
        site["port"] = _integer(name, "port", site["port"], 1024, 65000)
        site["port_auto"] = False

    if not isinstance(site["health_path"], str) or not URL_PATH.fullmatch(site["health_path"]):
        raise _problem(name, "health_path", f"{site['health_path']!r} is not a URL path (/ then letters, digits, . _ ~ % / -)")
    if site["health_path"].split("?")[0] == "/" or site["health_path"].startswith("/opspack-"):
        raise _problem(name, "health_path", "must be a path of its own: it stays proxied during maintenance "
                       "(not /, and not /opspack-*, which nginx answers itself)")
    site["smoke_paths"] = _strings(name, "smoke_paths", site["smoke_paths"], URL_PATH,
                                   "a URL path (/ then letters, digits, . _ ~ % / -)")
    if site["release_header"] and (not isinstance(site["release_header"], str)
                                   or not HEADER_NAME.fullmatch(site["release_header"])):
        raise _problem(name, "release_header", f"{site['release_header']!r} is not a header name")

    if site["database"] is not None:
        database = _fill(name, "database", site["database"], DATABASE_FIELDS)
        for key in ("name", "user"):
            database[key] = database[key] if database[key] is not None else name.replace("-", "_")
            if not isinstance(database[key], str) or not PG_NAME.fullmatch(database[key]):
                raise _problem(name, f"database.{key}", "is not a PostgreSQL name (lower-case letters, digits and _)")
            if database[key] in PG_RESERVED or database[key].startswith("pg_"):
                raise _problem(name, f"database.{key}", f"{database[key]} is PostgreSQL's own: give the site one of its own")
        database["password"] = _secret(name, "database.password", database["password"])
        site["database"] = database
    if site["redis"] is not None:
        redis = _fill(name, "redis", site["redis"], REDIS_FIELDS)
        redis["user"] = redis["user"] if redis["user"] is not None else name
        if not isinstance(redis["user"], str) or not re.fullmatch(r"[A-Za-z0-9_.-]+", redis["user"]):
            raise _problem(name, "redis.user", "is not a Redis user name (letters, digits, _ . -)")
        if redis["user"] == "default":
            raise _problem(name, "redis.user", "default is Redis's own user, which opspack disables")
        redis["db"] = _integer(name, "redis.db", redis["db"], 0, 15)
        redis["password"] = _secret(name, "redis.password", redis["password"])
        if not re.fullmatch(r"\S{16,}", redis["password"]):
            raise _problem(name, "redis.password", "must be at least 16 characters without spaces (as the redis role requires)")
        if not isinstance(redis["acl"], str) or "\n" in redis["acl"]:
            raise _problem(name, "redis.acl", "must be one line of ACL rules")
        site["redis"] = redis

    migrations = _fill(name, "migrations", site["migrations"], MIGRATIONS_FIELDS)
    if not isinstance(migrations["dir"], str) or migrations["dir"].startswith("/") or ".." in migrations["dir"].split("/"):
        raise _problem(name, "migrations.dir", f"{migrations['dir']!r} must be a directory inside the release")
    migrations["command"] = _command(name, "migrations.command", migrations["command"])
    migrations["rollback_command"] = _command(name, "migrations.rollback_command", migrations["rollback_command"])
    if bool(migrations["command"]) != bool(migrations["rollback_command"]):
        raise _problem(name, "migrations", "command and rollback_command go together (a migration without its way "
                       "back cannot be undone when a release fails)")
    if site["database"] is None:
        if migrations["command"] or "dir" in site["migrations"]:
            raise _problem(name, "migrations", "the site has no database")
        migrations["dir"] = ""
    site["migrations"] = migrations

    site["shared_paths"] = _strings(name, "shared_paths", site["shared_paths"], re.compile(r"[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*"),
                                    "a relative path inside the release")
    for path in site["shared_paths"]:
        parts = path.split("/")
        if "." in parts or ".." in parts or parts[0] in ("venv", "wheels"):
            raise _problem(name, "shared_paths", f"{path} must be a path inside the release, not . or .., nor the "
                           "venv or wheels opspack builds there")
    site["system_packages"] = _strings(name, "system_packages", site["system_packages"],
                                       re.compile(r"[a-z0-9][a-z0-9+.-]+"), "a Debian package name")
    site["system_site_packages"] = _boolean(name, "system_site_packages", site["system_site_packages"])

    for key in ("env", "secrets"):
        if not isinstance(site[key], dict):
            raise _problem(name, key, "must be a mapping of NAME: value")
        for variable, value in site[key].items():
            if not isinstance(variable, str) or not ENV_NAME.fullmatch(variable):
                raise _problem(name, key, f"{variable!r} is not an environment variable name")
            if value is None or isinstance(value, (dict, list)) or "\n" in str(value):
                raise _problem(name, f"{key}.{variable}", "must be one line of text")
    site["env"] = {variable: str(value) for variable, value in site["env"].items()}
    site["secrets"] = {variable: _secret(name, f"secrets.{variable}", str(value)) for variable, value in site["secrets"].items()}
    clash = sorted(set(site["env"]) & set(site["secrets"]))
    if clash:
        raise _problem(name, f"env.{clash[0]}", "also given in secrets; keep it in one of them")

    if not isinstance(site["maintenance_file"], str) or (site["maintenance_file"] and not site["maintenance_file"].startswith("/")):
        raise _problem(name, "maintenance_file", "must be an absolute path on the host")
    backup = _fill(name, "backup", site["backup"], BACKUP_FIELDS)
    backup["critical_tables"] = _strings(name, "backup.critical_tables", backup["critical_tables"],
                                         re.compile(r"[A-Za-z_][\w.]*"), "a table name")
    if not isinstance(backup["drill_query"], str):
        raise _problem(name, "backup.drill_query", "must be one SQL query")
    if (backup["critical_tables"] or backup["drill_query"]) and site["database"] is None:
        raise _problem(name, "backup", "the site has no database to check")
    site["backup"] = backup
    thresholds = _fill(name, "thresholds", site["thresholds"], THRESHOLD_FIELDS)
    for key, value in thresholds.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            raise _problem(name, f"thresholds.{key}", "must be a number of 0 or more")
    site["thresholds"] = thresholds
    site["required_env"] = sorted(set(_strings(name, "required_env", site["required_env"], ENV_NAME,
                                               "an environment variable name")))
    gate = _fill(name, "gate", site["gate"], GATE_FIELDS)
    gate["test_command"] = _command(name, "gate.test_command", gate["test_command"])
    # requirements "" declares an app without Python dependencies.
    for key in ("requirements", "secrets_baseline"):
        value = gate[key]
        if (not isinstance(value, str) or (not value and key == "secrets_baseline") or value.startswith("/")
                or ".." in value.split("/")):
            raise _problem(name, f"gate.{key}", f"{value!r} must be a file inside the release")
    site["gate"] = gate

    queue = _fill(name, "queue", site["queue"], QUEUE_FIELDS)
    queue["command"] = _command(name, "queue.command", queue["command"])
    if not isinstance(queue["url"], str) or (queue["url"] and not re.fullmatch(r"https?://[^\s]+", queue["url"])):
        raise _problem(name, "queue.url", "must be an http:// or https:// URL")
    if queue["command"] and queue["url"]:
        raise _problem(name, "queue", "give command or url, not both")
    site["queue"] = {key: value for key, value in queue.items() if value}

    site["dir"] = f"{base_dir}/{name}"
    return site


def normalize(raw_sites, base_dir="/srv"):
    """Every site checked alone, then together: names and domains are one site's each."""
    if raw_sites is None:
        return []
    if not isinstance(raw_sites, list):
        raise SiteDefinitionError("opspack_sites must be a list of sites (one entry per site)")
    sites = [normalize_site(raw, base_dir) for raw in raw_sites]
    seen = {}
    for site in sites:
        if site["name"] in seen:
            raise SiteDefinitionError(f"opspack_sites: site {site['name']}: name: given twice")
        seen[site["name"]] = site
    owner = {}
    for site in sites:
        for domain in site["domains"]:
            if domain in owner and owner[domain] != site["name"]:
                raise _problem(site["name"], "domains", f"{domain} is also a domain of site {owner[domain]}: a name "
                               "answers for one site only")
            owner[domain] = site["name"]
    return sites


def runs_on(site, host, host_groups, known_names):
    """Whether the site runs on host; a hosts entry that names no group or host is a typo."""
    for target in site["hosts"]:
        if target not in known_names:
            raise _problem(site["name"], "hosts", f"{target!r} is no group or host of the inventory")
    return any(target == host or target == "all" or target in host_groups for target in site["hosts"])


def hosts_running(site, groups):
    """The inventory's hosts that run the site (groups: the inventory's {group: [hosts]}, with all)."""
    members = set()
    for target in site["hosts"]:
        members.update(groups[target] if target in groups else [target])
    return sorted(members)


def check_accounts(sites, host_redis_users=()):
    """On one host: a site's user, database and database role are its own, and a Redis user is
    one site's (or several sites' alike), never also one of the host's own (redis_users)."""
    users, db_names, db_users = {}, {}, {}
    for site in sites:
        if site["user"] in users:
            raise _problem(site["name"], "user", f"{site['user']} is also the user of site {users[site['user']]}: "
                           "each site runs as its own user")
        users[site["user"]] = site["name"]
        if site["database"] is not None:
            for key, seen in (("name", db_names), ("user", db_users)):
                value = site["database"][key]
                if value in seen:
                    raise _problem(site["name"], f"database.{key}", f"{value} is also the database {key} of site "
                                   f"{seen[value]}: each site has a database and role of its own")
                seen[value] = site["name"]
        if site["redis"] is not None and site["redis"]["user"] in host_redis_users:
            raise _problem(site["name"], "redis.user", f"{site['redis']['user']} is also a user of redis_users (the "
                           "host's own): give the site a user of its own")


def slot_ports(site, slots):
    """The port of each slot on 127.0.0.1: the site's port for the first, the next ones after it."""
    return {slot: site["port"] + index for index, slot in enumerate(slots)}


def check_host(sites, slots, reserved):
    """Ports on one host: each site's slots take port .. port+len(slots)-1, and no two sites, and
    no service of the host (reserved: {port: what}), may share one."""
    taken = {}
    for site in sites:
        ports = slot_ports(site, slots)
        for slot, port in ports.items():
            if port in reserved:
                raise _problem(site["name"], "port", f"{port} (slot {slot}) is the port of {reserved[port]}: "
                               "give the site another port")
            if port in taken:
                other = taken[port]
                how = " (both from port: auto; give one of them a port)" if site["port_auto"] and other["port_auto"] else ""
                raise _problem(site["name"], "port", f"{port} (slot {slot}) is also a port of site {other['name']} on this "
                               f"host{how}; ports {site['port']}-{max(ports.values())} are the site's slots")
            taken[port] = site


def _url(scheme, user, password, host, port, path):
    from urllib.parse import quote
    return f"{scheme}://{quote(user, safe='')}:{quote(password, safe='')}@{host}:{port}/{path}"


def web_command(site, base_dir="/srv"):
    """The command of a slot's web process (systemd unit template: %i is the slot, PORT its port)."""
    app = site["app"]
    if app["web_command"]:
        return app["web_command"]
    venv = f"{base_dir}/{site['name']}/slots/%i/venv/bin"
    if app["kind"] == "asgi":
        return f"{venv}/uvicorn --host 127.0.0.1 --port ${{PORT}} --workers {app['workers']} {app['module']}"
    return f"{venv}/gunicorn --bind 127.0.0.1:${{PORT}} --workers {app['workers']} {app['module']}"


def without_secrets(site):
    """A site with every SECRET_FIELDS entry left out (a secrets mapping keeps only its names)."""
    out = {key: value for key, value in site.items() if key != "secrets"}
    out["secret_names"] = sorted(site["secrets"])
    for key in ("database", "redis"):
        if site[key] is not None:
            out[key] = {k: v for k, v in site[key].items() if k != "password"}
    return out


def public(site, slots):
    """A site without its secrets: what releases, checks and messages may read (with the port of
    each of its slots)."""
    out = without_secrets(site)
    out["slot_ports"] = slot_ports(site, slots)
    return out


def health_site(site):
    """What the health checks read of a site (plugins/module_utils/health.py): never a secret, only
    the names of the settings it must have."""
    required = set(site["required_env"]) | set(site["secrets"])
    if site["database"] is not None:
        required.add("DATABASE_URL")
    if site["redis"] is not None:
        required.add("REDIS_URL")
    found = {"name": site["name"], "domains": site["domains"], "user": site["user"], "env_file": f"{site['dir']}/shared/env",
             "required_env": sorted(required), "env_names": sorted(name for name, value in site["env"].items() if value),
             "thresholds": site["thresholds"], "health_path": site["health_path"], "smoke_paths": site["smoke_paths"]}
    if site["database"] is not None:
        found["database"] = site["database"]["name"]
    if site["queue"]:
        found["queue"] = site["queue"]
    return found


def views(sites, host, host_groups, known_names, slots=("blue", "green"), reserved=None, base_dir="/srv",
          postgresql_port=5432, redis_port=6379, redis_default_acl="~* &* +@all -@dangerous", host_redis_users=()):
    """What each role takes for this host, from the sites that run on it."""
    here = [site for site in sites if runs_on(site, host, host_groups, known_names)]
    check_host(here, list(slots), reserved or {})
    check_accounts(here, host_redis_users)
    redis_users = {}
    for site in here:
        if site["redis"] is not None:
            user = site["redis"]["user"]
            entry = {"name": user, "password": site["redis"]["password"],
                     "acl": site["redis"]["acl"] or redis_default_acl}
            if user in redis_users and redis_users[user] != entry:
                raise _problem(site["name"], "redis.user", f"{user} is also the Redis user of another site on this host "
                               "with another password or ACL")
            redis_users[user] = entry
    secrets = {}
    for site in here:
        env = {}
        if site["database"] is not None:
            db = site["database"]
            env["DATABASE_URL"] = _url("postgresql", db["user"], db["password"], "127.0.0.1", postgresql_port, db["name"])
        if site["redis"] is not None:
            redis = site["redis"]
            env["REDIS_URL"] = _url("redis", redis["user"], redis["password"], "127.0.0.1", redis_port, redis["db"])
        env.update(site["secrets"])
        if env:
            secrets[site["name"]] = env
    return {
        "sites": [public(site, list(slots)) for site in here],
        "site_names": [site["name"] for site in here],
        "all_site_names": [site["name"] for site in sites],
        "postgresql_sites": [{"name": site["name"], "db_name": site["database"]["name"], "db_user": site["database"]["user"],
                              "db_password": site["database"]["password"]}
                             for site in here if site["database"] is not None],
        "redis_users": [redis_users[user] for user in sorted(redis_users)],
        "nginx_sites": [dict({"name": site["name"], "server_names": site["domains"], "upstream_port": site["port"],
                              "health_path": site["health_path"]},
                             **({"maintenance_file": site["maintenance_file"]} if site["maintenance_file"] else {}))
                        for site in here],
        "app_runtime_sites": [dict({"name": site["name"], "user": site["user"], "port": site["port"],
                                    "web_command": web_command(site, base_dir), "env": site["env"]},
                                   **({"worker_command": site["app"]["worker_command"]} if site["app"]["worker_command"] else {}))
                              for site in here],
        "app_runtime_site_secrets": secrets,
        "health_sites": [health_site(site) for site in here],
        "backup_site_checks": {site["name"]: site["backup"] for site in here
                               if site["backup"]["critical_tables"] or site["backup"]["drill_query"]},
    }


def summary(view):
    """One line per site on the host, safe to print (no secret, no value of one)."""
    lines = []
    for site in view["sites"]:
        uses = [word for word, on in (("PostgreSQL", site["database"]), ("Redis", site["redis"])) if on]
        lines.append(f"{site['name']}: {', '.join(site['domains'])} -> 127.0.0.1:{site['port']}"
                     f"{' (auto)' if site['port_auto'] else ''}; health {site['health_path']}; "
                     f"{' and '.join(uses) or 'no database, no Redis'}")
    return lines
