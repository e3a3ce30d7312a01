"""`opspack sites convert`: the per-role site variables of 0.1 become opspack_sites entries the site
model accepts, with every secret turned into a vault reference (never copied)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import yaml

from ansible_collections.opspack.platform.plugins.module_utils import site_model

OLD = """
postgresql_sites:
  - {name: blog, db_name: blog, db_user: blog, db_password: old-canary-db-0001}
  - {name: shop, db_name: shopdb, db_user: shopper, db_password: old-canary-db-0002}
nginx_sites:
  - {name: blog, server_names: [blog.example.com]}
  - {name: shop, server_names: [shop.example.com], upstream_port: 8100, maintenance_file: /run/shop.off}
app_runtime_sites:
  - {name: blog, web_command: "/srv/blog/slots/%i/venv/bin/gunicorn app:app", env: {MODE: prod}}
  - {name: shop, port: 8100, user: shopuser, worker_command: /bin/worker}
app_runtime_site_secrets:
  blog:
    DATABASE_URL: postgresql://blog:old-canary-db-0001@127.0.0.1:5432/blog
    REDIS_URL: redis://app:old-canary-redis-0001@127.0.0.1:6379/2
    API_TOKEN: old-canary-token-0001
redis_users:
  - {name: app, password: old-canary-redis-0001, acl: "~app:* +@all -@dangerous"}
  - {name: opsadmin, password: old-canary-redis-0002}
release_health_path: /ping
release_smoke_paths: [/, /about]
release_migrate_command: [venv/bin/python, manage.py, migrate]
release_migrate_rollback_command: [venv/bin/python, manage.py, back]
backup_site_checks:
  blog: {critical_tables: [posts]}
"""


def test_old_variables_become_one_definition_per_site_without_a_secret(tmp_path):
    old = tmp_path / "group_vars.yml"
    old.write_text(OLD)
    ran = subprocess.run([sys.executable, "-m", "opspack.cli", "sites", "convert", str(old)],
                         capture_output=True, text=True, check=True, cwd=Path(__file__).resolve().parents[2])
    assert "old-canary" not in ran.stdout + ran.stderr
    assert "#   vault_blog_db_password: ..." in ran.stdout and "#   vault_blog_api_token: ..." in ran.stdout
    # The references, as the lookup would template them from a vault (values of 20 characters).
    entries = yaml.safe_load(re.sub(r"\{\{ (vault_\w+) \}\}", r"\1-value-000000000", ran.stdout))["opspack_sites"]
    sites = {site["name"]: site for site in site_model.normalize(entries)}
    blog, shop = sites["blog"], sites["shop"]
    assert blog["domains"] == ["blog.example.com"] and blog["port"] == 8000 and blog["health_path"] == "/ping"
    assert blog["smoke_paths"] == ["/", "/about"] and blog["env"] == {"MODE": "prod"}
    assert blog["app"]["web_command"] == "/srv/blog/slots/%i/venv/bin/gunicorn app:app"
    assert "password: '{{ vault_blog_db_password }}'" in ran.stdout
    assert blog["database"] == {"name": "blog", "user": "blog", "password": "vault_blog_db_password-value-000000000"}
    assert blog["redis"] == {"user": "app", "password": "vault_blog_redis_password-value-000000000", "db": 2,
                             "acl": "~app:* +@all -@dangerous"}
    assert "# Remove from redis_users (each is now a site's own Redis user, its ACL carried over): app\n" in ran.stdout
    assert blog["secrets"] == {"API_TOKEN": "vault_blog_api_token-value-000000000"}
    assert blog["migrations"]["command"] == ["venv/bin/python", "manage.py", "migrate"]
    assert blog["backup"]["critical_tables"] == ["posts"]
    assert shop["port"] == 8100 and shop["user"] == "shopuser" and shop["app"]["worker_command"] == "/bin/worker"
    assert shop["database"]["name"] == "shopdb" and shop["maintenance_file"] == "/run/shop.off"


def test_a_file_without_sites_is_an_error(tmp_path):
    empty = tmp_path / "vars.yml"
    empty.write_text("release_keep: 3\n")
    ran = subprocess.run([sys.executable, "-m", "opspack.cli", "sites", "convert", str(empty)], capture_output=True, text=True)
    assert ran.returncode == 1 and "no sites found" in ran.stderr


def test_the_lab_report_reads_the_labs_sites_from_its_variables_file(tmp_path):
    from opspack.lab import LabError
    from opspack.report import lab_sites
    assert lab_sites(Path(__file__).resolve().parents[2] / "inventories" / "lab-site.yml") == ["blog.lab.test"]
    empty = tmp_path / "vars.yml"
    empty.write_text("release_keep: 3\n")
    try:
        lab_sites(empty)
    except LabError as error:
        assert "defines no site" in str(error)
    else:
        raise AssertionError("a file without sites was accepted")
