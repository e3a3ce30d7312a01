"""The site model: one definition per site, checked with the site and field named, and the views
every role takes from it."""

from __future__ import annotations

import copy

import pytest

from ansible_collections.opspack.platform.plugins.module_utils import site_model
from ansible_collections.opspack.platform.plugins.module_utils.site_model import SiteDefinitionError

BLOG = {
    "name": "blog", "hosts": "web", "domains": ["blog.example.com"], "app": {"module": "app:application"},
    "port": 8000, "database": {"password": "db-secret-value-1"}, "redis": {"password": "redis-secret-value-1"},
    "secrets": {"SECRET_KEY": "app-secret-value-1"},
}
API = {"name": "api", "hosts": ["web"], "domains": ["api.example.com"], "app": {"module": "httpbin:app"},
       "health_path": "/status/200"}
KNOWN = {"web", "db", "all", "vps1", "vps2"}
RESERVED = {22: "SSH", 80: "nginx", 443: "nginx", 5432: "PostgreSQL", 6379: "Redis", 9100: "the node exporter"}


def view(*sites, host="vps1", groups=("web",)):
    return site_model.views(site_model.normalize([copy.deepcopy(site) for site in sites]), host, list(groups), KNOWN,
                            reserved=RESERVED)


def refused(*sites, host="vps1", groups=("web",)) -> str:
    with pytest.raises(SiteDefinitionError) as error:
        view(*sites, host=host, groups=groups)
    return str(error.value)


def with_(site, **fields):
    out = copy.deepcopy(site)
    out.update(fields)
    return out


def test_every_role_gets_its_part_of_one_definition():
    got = view(BLOG, API)
    assert got["site_names"] == ["blog", "api"]
    assert got["sites"][0]["slot_ports"] == {"blue": 8000, "green": 8001}
    assert got["postgresql_sites"] == [{"name": "blog", "db_name": "blog", "db_user": "blog", "db_password": "db-secret-value-1"}]
    assert got["redis_users"] == [{"name": "blog", "password": "redis-secret-value-1", "acl": "~* &* +@all -@dangerous"}]
    assert [(s["name"], s["server_names"], s["upstream_port"]) for s in got["nginx_sites"]] == [
        ("blog", ["blog.example.com"], 8000), ("api", ["api.example.com"], site_model.auto_port("api"))]
    blog, api = got["app_runtime_sites"]
    assert blog["web_command"] == "/srv/blog/slots/%i/venv/bin/gunicorn --bind 127.0.0.1:${PORT} --workers 2 app:application"
    assert api["port"] == site_model.auto_port("api") and "worker_command" not in api
    secrets = got["app_runtime_site_secrets"]
    assert secrets["blog"] == {"DATABASE_URL": "postgresql://blog:db-secret-value-1@127.0.0.1:5432/blog",
                               "REDIS_URL": "redis://blog:redis-secret-value-1@127.0.0.1:6379/0",
                               "SECRET_KEY": "app-secret-value-1"}
    assert "api" not in secrets, "a site without a database, Redis or secrets has no secret environment"


def test_the_public_view_and_the_summary_hold_no_secret():
    got = view(BLOG, API)
    text = repr(got["sites"]) + repr(site_model.summary(got))
    for secret in ("db-secret-value-1", "redis-secret-value-1", "app-secret-value-1"):
        assert secret not in text
    assert got["sites"][0]["secret_names"] == ["SECRET_KEY"]
    assert site_model.summary(got)[1].endswith("no database, no Redis")


def test_a_site_without_a_database_has_no_migrations_and_its_own_health_path():
    api = view(API)["sites"][0]
    assert api["database"] is None and api["redis"] is None and api["migrations"]["dir"] == ""
    assert api["health_path"] == "/status/200" and api["smoke_paths"] == ["/"]


def test_secrets_in_urls_are_quoted():
    blog = with_(BLOG, database={"password": "p@ss:w/rd"})
    assert view(blog)["app_runtime_site_secrets"]["blog"]["DATABASE_URL"] == "postgresql://blog:p%40ss%3Aw%2Frd@127.0.0.1:5432/blog"


def test_an_auto_port_is_stable_whatever_else_the_host_runs():
    alone = view(API)["sites"][0]["port"]
    assert alone == view(BLOG, API)["sites"][1]["port"] == view(API, with_(BLOG, name="other", domains=["o.example.com"]))["sites"][0]["port"]
    assert 20000 <= alone < 30000 and alone % 10 == 0


def test_sites_run_only_where_their_hosts_say():
    db_only = with_(API, hosts="db")
    assert view(BLOG, db_only, groups=["web"])["site_names"] == ["blog"]
    groups = {"all": ["vps1", "vps2", "vps3"], "web": ["vps1", "vps2"], "db": ["vps3"]}
    blog, api, anywhere = site_model.normalize([BLOG, with_(API, hosts=["db", "vps1"]), with_(API, name="x", hosts="all", domains=["x.example.com"])])
    assert site_model.hosts_running(blog, groups) == ["vps1", "vps2"]
    assert site_model.hosts_running(api, groups) == ["vps1", "vps3"]
    assert site_model.hosts_running(anywhere, groups) == ["vps1", "vps2", "vps3"]
    assert view(BLOG, db_only, host="vps2", groups=["db"])["site_names"] == ["api"]
    assert view(with_(API, hosts="vps2"), host="vps2", groups=[])["site_names"] == ["api"]


@pytest.mark.parametrize("sites, words", [
    # port collisions: on a slot, with an auto port, with a host service
    ([BLOG, with_(API, port=8001)], "site api: port: 8001 (slot blue) is also a port of site blog on this host"),
    ([BLOG, with_(API, port=5431)], "site api: port: 5432 (slot green) is the port of PostgreSQL"),
    ([with_(BLOG, port=9100)], "site blog: port: 9100 (slot blue) is the port of the node exporter"),
    # unknown keys, at the top and inside
    ([with_(BLOG, helth_path="/x")], "site blog: helth_path: unknown key"),
    ([with_(BLOG, db_password="x")], "site blog: db_password: unknown key"),
    ([with_(BLOG, database={"password": "x", "port": 5433})], "site blog: database.port: unknown key"),
    # missing secrets and fields
    ([with_(BLOG, database={"name": "blog"})], "site blog: database.password: missing"),
    ([with_(BLOG, redis={"password": ""})], "site blog: redis.password: is empty"),
    ([{k: v for k, v in BLOG.items() if k != "hosts"}], "site blog: hosts: missing"),
    ([with_(BLOG, app={})], "site blog: app: give module"),
    # one domain, one site; one name, one site
    ([BLOG, with_(API, domains=["api.example.com", "BLOG.example.com"])], "site api: domains: blog.example.com is also a domain of site blog"),
    ([BLOG, with_(API, name="blog", domains=["x.example.com"])], "site blog: name: given twice"),
    # typos and bad values
    ([with_(BLOG, hosts="wbe")], "site blog: hosts: 'wbe' is no group or host of the inventory"),
    ([with_(BLOG, name="Blog")], "site 'Blog': name"),
    ([with_(BLOG, health_path="health")], "site blog: health_path: 'health' is not a URL path"),
    ([with_(BLOG, port="80x")], "site blog: port: must be a number"),
    ([with_(BLOG, migrations={"command": ["manage.py", "migrate"]})], "site blog: migrations: command and rollback_command go together"),
    ([with_(API, migrations={"dir": "migrations"})], "site api: migrations: the site has no database"),
    ([with_(BLOG, migrations={"command": "manage.py migrate", "rollback_command": ["x"]})], "site blog: migrations.command: must be a list"),
    ([with_(BLOG, env={"SECRET_KEY": "x"})], "site blog: env.SECRET_KEY: also given in secrets"),
    ([with_(BLOG, domains=["bad_domain!"])], "site blog: domains: 'bad_domain!' is not a host name"),
    ([with_(BLOG, domains=["*.example.com"])], "site blog: domains: '*.example.com' is not a host name (no wildcards"),
    ([with_(BLOG, name="my_site")], "site 'my_site': name: lower-case letters, digits and -"),
    ([with_(BLOG, name="a" * 25)], "name: lower-case letters, digits and -, starting with a letter, at most 24"),
    # what would break the host or another site
    ([with_(BLOG, shared_paths=["uploads/../.."])], "site blog: shared_paths: uploads/../.. must be a path inside the release"),
    ([with_(BLOG, shared_paths=["venv"])], "site blog: shared_paths: venv must be a path inside the release"),
    ([with_(BLOG, user="root")], "site blog: user: root is a system account"),
    ([with_(BLOG, user="www-data")], "site blog: user: www-data is a system account"),
    ([BLOG, with_(API, user="blog")], "site api: user: blog is also the user of site blog"),
    ([BLOG, with_(API, database={"user": "blog", "password": "x"})], "site api: database.user: blog is also the database user of site blog"),
    ([BLOG, with_(API, database={"name": "blog", "password": "x"})], "site api: database.name: blog is also the database name of site blog"),
    ([with_(BLOG, database={"name": "postgres", "password": "x"})], "site blog: database.name: postgres is PostgreSQL's own"),
    ([with_(BLOG, redis={"user": "default", "password": "redis-secret-value-1"})], "site blog: redis.user: default is Redis's own"),
    ([with_(BLOG, redis={"password": "short"})], "site blog: redis.password: must be at least 16 characters"),
    ([with_(BLOG, redis={"password": "redis-secret-value-1", "acl": "~* +@all\nuser evil on"})], "site blog: redis.acl: must be one line"),
    # nginx locations: plain paths, never / nor nginx's own
    ([with_(BLOG, health_path="/")], "site blog: health_path: must be a path of its own"),
    ([with_(BLOG, health_path="/opspack-health")], "site blog: health_path: must be a path of its own"),
    ([with_(BLOG, health_path='/h"; return 200; #')], "site blog: health_path: '/h\"; return 200; #' is not a URL path"),
    ([with_(BLOG, smoke_paths=["/a{b}"])], "site blog: smoke_paths: '/a{b}' is not a URL path"),
])
def test_a_bad_definition_is_refused_naming_the_site_and_the_field(sites, words):
    message = refused(*sites)
    assert words in message, message


def test_a_message_never_holds_a_secret():
    for bad in (with_(BLOG, database={"password": "db-secret-value-1\nx"}), with_(BLOG, secrets={"K": "app-secret\nvalue"}),
                with_(BLOG, redis={"password": "redis-secret-value-1", "db": 99}),
                # a secret put in the wrong field by mistake is not echoed either
                with_(BLOG, redis={"password": "redis-secret-value-1", "db": "app-secret-value-9"}),
                with_(BLOG, port="app-secret-value-9"), with_(BLOG, system_site_packages="app-secret-value-9")):
        message = refused(bad)
        assert "secret-value" not in message and "app-secret" not in message, message


def test_a_site_redis_user_is_never_one_of_the_hosts_own():
    sites = site_model.normalize([copy.deepcopy(BLOG)])
    with pytest.raises(SiteDefinitionError, match="site blog: redis.user: blog is also a user of redis_users"):
        site_model.views(sites, "vps1", ["web"], KNOWN, reserved=RESERVED, host_redis_users=["opsadmin", "blog"])


def test_two_sites_may_share_a_redis_user_only_alike():
    shared = {"user": "app", "password": "same-password-0001"}
    other = with_(API, redis=dict(shared, db=1))
    assert len(view(with_(BLOG, redis=shared), other)["redis_users"]) == 1
    message = refused(with_(BLOG, redis=shared), with_(other, redis={"user": "app", "password": "another-password-0001"}))
    assert "site api: redis.user: app is also the Redis user of another site" in message


def test_asgi_apps_run_under_uvicorn_and_a_command_wins():
    asgi = with_(API, app={"kind": "asgi", "module": "main:app", "workers": 4})
    assert view(asgi)["app_runtime_sites"][0]["web_command"] == \
        "/srv/api/slots/%i/venv/bin/uvicorn --host 127.0.0.1 --port ${PORT} --workers 4 main:app"
    own = with_(API, app={"web_command": "/usr/bin/true"})
    assert view(own)["app_runtime_sites"][0]["web_command"] == "/usr/bin/true"


def test_no_sites_is_no_views():
    assert view()["sites"] == [] and site_model.normalize(None) == []


def test_the_health_checks_get_names_of_required_settings_never_values():
    got = view(with_(BLOG, required_env=["MAIL_URL", "MAIL_URL"], env={"MODE": "prod", "EMPTY": ""},
                     queue={"command": ["/srv/blog/current/manage.py", "queue-length"]},
                     thresholds={"error_rate_percent": 1}), API)
    blog, api = got["health_sites"]
    assert blog == {"name": "blog", "domains": ["blog.example.com"], "user": "blog", "env_file": "/srv/blog/shared/env",
                    "required_env": ["DATABASE_URL", "MAIL_URL", "REDIS_URL", "SECRET_KEY"], "env_names": ["MODE"],
                    "database": "blog", "queue": {"command": ["/srv/blog/current/manage.py", "queue-length"]},
                    "thresholds": dict(site_model.THRESHOLD_FIELDS, error_rate_percent=1),
                    "health_path": "/health/ready", "smoke_paths": ["/"]}
    assert api["required_env"] == [] and "database" not in api and "queue" not in api
    for secret in ("db-secret-value-1", "redis-secret-value-1", "app-secret-value-1"):
        assert secret not in repr(got["health_sites"])


@pytest.mark.parametrize("fields, message", [
    ({"required_env": ["bad-name"]}, "site blog: required_env: 'bad-name' is not an environment variable name"),
    ({"queue": {"command": "manage.py queue"}}, "site blog: queue.command: must be a list of arguments"),
    ({"queue": {"url": "ftp://x"}}, "site blog: queue.url: must be an http:// or https:// URL"),
    ({"queue": {"url": "http://127.0.0.1/q", "command": ["x"]}}, "site blog: queue: give command or url, not both"),
    ({"queue": {"length": 3}}, "site blog: queue.length: unknown key"),
    ({"thresholds": {"p95_seconds": "db-secret-value-1"}}, "site blog: thresholds.p95_seconds: must be a number of 0 or more"),
])
def test_health_fields_are_checked_naming_the_field(fields, message):
    found = refused(with_(BLOG, **fields))
    assert message in found
    assert "db-secret-value-1" not in found, "a secret given in the wrong field is never echoed"


def test_the_health_program_knows_the_site_models_default_thresholds():
    """health.py runs alone on the host and keeps its own copy of the defaults: the same ones."""
    from ansible_collections.opspack.platform.plugins.module_utils import health
    assert health.SITE_THRESHOLDS == site_model.THRESHOLD_FIELDS


def test_the_health_program_and_the_incidents_page_the_same_severities():
    from ansible_collections.opspack.platform.plugins.module_utils import events, health
    assert health.CHANNELS == events.CHANNELS and sorted(events.CHANNELS) == list(events.SEVERITIES)
