"""opspack.platform.db_bootstrap on a provisioned lab host: a site's first database, the runbook's
way (dry run, then all), with the runbook's exact tokens.

The shop site gets its database from nothing: the test first drops the role and the database
provisioning made, as on a host where the site is new. Its release is the sample site's 2.0.0
(two migrations). Nothing else in this scenario uses the shop site."""

from __future__ import annotations

import re

import pytest

from opspack.testing.config import sites_with
from opspack.testing.scenario import playbook, sample_releases, sql

SITE = "shop"
RELEASE = "2.0.0"
DRY_RUN_OK = "db_bootstrap_dry_run status=ok migrations=2"
ALL_OK = "db_bootstrap status=ok mode=all"


def bootstrap(mode: str, *extra: str, release: str = RELEASE):
    return playbook("db_bootstrap", "-e", f"release_version={release}", "-e", f"release_source={sample_releases() / release}",
                    "-e", f"db_bootstrap_mode={mode}", *extra, site=SITE)


def recap_changed(output: str) -> int:
    return sum(int(found) for found in re.findall(r"changed=(\d+)", output.split("PLAY RECAP")[-1]))


def database_state(host) -> str:
    """Whether the shop's role and database exist, and its migrations history if it does."""
    found = sql(host, "SELECT (SELECT count(*) FROM pg_roles WHERE rolname = 'shop') || ':' || "
                      "(SELECT count(*) FROM pg_database WHERE datname = 'shop')", database="postgres")
    if found.endswith(":1"):
        if sql(host, "SELECT to_regclass('opspack_schema_history') IS NOT NULL", database=SITE) == "t":
            found += "|" + sql(host, "SELECT string_agg(version || ':' || name, ',' ORDER BY version) "
                                     "FROM opspack_schema_history", database=SITE)
        else:
            found += "|no history"
    return found


@pytest.fixture(scope="module", autouse=True)
def new_site(host):
    """The shop as a site new to this host: no database role, no database."""
    host.check_output("runuser -u postgres -- psql -XAtq -v ON_ERROR_STOP=1 -d postgres "
                      "-c 'DROP DATABASE IF EXISTS shop WITH (FORCE)' -c 'DROP ROLE IF EXISTS shop'")
    assert database_state(host) == "0:0"


def test_a_missing_required_setting_gives_the_prod_config_token_with_names_only(host):
    ran = bootstrap("all", *sites_with(SITE, required_env=["MAIL_URL", "PAYMENT_KEY"]))
    out = ran.stdout + ran.stderr
    assert ran.returncode != 0
    assert "prod_config status=fail reason=missing_env site=shop names=MAIL_URL,PAYMENT_KEY" in out, out[-3000:]
    assert ALL_OK not in out
    assert database_state(host) == "0:0", "refused before anything changed"


def test_the_dry_run_says_what_all_would_do_and_changes_nothing(host):
    ran = bootstrap("dry_run")
    out = ran.stdout + ran.stderr
    assert ran.returncode == 0, out[-3000:]
    assert DRY_RUN_OK in out
    assert "role shop: to create; database shop: to create; migrations to apply: 001_create_notes, 002_add_note_tags" in out
    assert recap_changed(out) == 0
    assert database_state(host) == "0:0"
    assert host.run("ls -d /var/tmp/opspack-db-bootstrap.* 2>/dev/null").stdout == "", "the scratch copy is removed"
    # --check is a dry run whatever the mode.
    checked = bootstrap("all", "--check")
    assert checked.returncode == 0 and DRY_RUN_OK in checked.stdout and ALL_OK not in checked.stdout, checked.stdout[-3000:]
    assert database_state(host) == "0:0"


def test_all_creates_the_role_and_database_and_applies_the_migrations_in_order_once(host):
    ran = bootstrap("all")
    out = ran.stdout + ran.stderr
    assert ran.returncode == 0, out[-3000:]
    assert ALL_OK in out
    assert database_state(host) == "1:1|1:001_create_notes,2:002_add_note_tags"
    # As provisioning makes them: the site's role owns its database, which PUBLIC may not reach.
    assert sql(host, "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = 'shop'", database="postgres") == "shop"
    assert sql(host, "SELECT has_database_privilege('public', 'shop', 'CONNECT')", database="postgres") == "f"
    assert sql(host, "SELECT tableowner FROM pg_tables WHERE tablename = 'notes'", database=SITE) == "shop"
    again = bootstrap("all")
    assert again.returncode == 0 and ALL_OK in again.stdout, again.stdout[-3000:]
    assert recap_changed(again.stdout) == 0, "a second all changes nothing"
    dry = bootstrap("dry_run")
    assert "db_bootstrap_dry_run status=ok migrations=0" in dry.stdout, dry.stdout[-3000:]
    assert "role shop: present; database shop: present" in dry.stdout


def test_a_database_past_the_release_is_not_a_first_setup_and_is_left_alone(host):
    before = database_state(host)
    assert before.startswith("1:1|"), "after the test above"
    ran = bootstrap("all", release="1.0.0")
    out = ran.stdout + ran.stderr
    assert ran.returncode != 0 and "it is not a first setup" in out, out[-3000:]
    assert ALL_OK not in out
    assert database_state(host) == before
