"""testinfra checks of the postgresql role: loopback only, SCRAM, WAL archiving, site database.

The site checked is read from the environment so the same file serves the lab and a real host:
OPSPACK_TEST_DB_NAME, OPSPACK_TEST_DB_USER and OPSPACK_TEST_DB_PASSWORD. The defaults are the
lab's throwaway canary values, never a real secret.
"""

import ipaddress
import os
import shlex

import pytest

from opspack.testing import targets

PORT = 5432
DB_NAME = os.environ.get("OPSPACK_TEST_DB_NAME", "blog")
DB_USER = os.environ.get("OPSPACK_TEST_DB_USER", "blog")
DB_PASSWORD = os.environ.get("OPSPACK_TEST_DB_PASSWORD", "lab-canary-Pg-7f3a9c")
LOOPBACK = {"127.0.0.1/32", "::1/128"}


def superuser_sql(host, sql, db="postgres"):
    """Run SQL as postgres over the socket (peer) and return the bare output."""
    cmd = "runuser -u postgres -- psql -XAtq -v ON_ERROR_STOP=1 -d {} -c {}".format(
        shlex.quote(db), shlex.quote(sql)
    )
    return host.check_output(cmd).strip()


def tcp_login(host, address, user, db, password=None):
    """Try a TCP login as a client would; never prompts, ignores any ~/.pgpass."""
    env = "PGPASSFILE=/dev/null PGCONNECT_TIMEOUT=5"
    if password is not None:
        env += " PGPASSWORD={}".format(shlex.quote(password))
    return host.run(
        "env {} psql -XAtqw -h {} -p {} -U {} -d {} -c 'SELECT current_user'".format(
            env, address, PORT, shlex.quote(user), shlex.quote(db)
        )
    )


def test_service_is_active_and_enabled_at_boot(host):
    assert host.service(targets.postgresql_unit(host)).is_running
    # Debian starts clusters at boot through postgresql.service.
    assert host.service("postgresql").is_enabled


def test_listens_on_loopback_only(host):
    assert host.socket("tcp://127.0.0.1:{}".format(PORT)).is_listening
    assert not host.socket("tcp://0.0.0.0:{}".format(PORT)).is_listening
    listening = [
        s for s in host.socket.get_listening_sockets()
        if s.startswith("tcp://") and s.endswith(":{}".format(PORT))
    ]
    assert listening
    for sock in listening:
        address = sock[len("tcp://"):].rsplit(":", 1)[0].strip("[]")
        assert ipaddress.ip_address(address).is_loopback, sock
    assert superuser_sql(host, "SHOW listen_addresses") == "localhost"


def _hba_rules(host):
    """Non-comment pg_hba.conf lines as lists of fields."""
    major = targets.of(host)["target_postgresql_version"]
    content = host.file(f"/etc/postgresql/{major}/main/pg_hba.conf").content_string
    rules = []
    for line in content.splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            rules.append(line.split())
    return rules


def test_pg_hba_allows_nothing_remote(host):
    rules = _hba_rules(host)
    assert ["local", "all", "postgres", "peer"] in rules
    for rule in rules:
        kind = rule[0]
        if kind == "local":
            assert rule[-1] in ("peer", "scram-sha-256"), rule
        else:
            assert kind.startswith("host"), rule
            address, method = rule[3], rule[4]
            # Only loopback may authenticate; any other address is a reject line.
            assert address in LOOPBACK or method == "reject", rule
            if address in LOOPBACK:
                assert method == "scram-sha-256", rule
    # The live server agrees with the file (it was reloaded, and parsed without error).
    assert superuser_sql(host, "SELECT count(*) FROM pg_hba_file_rules WHERE error IS NOT NULL") == "0"
    live = superuser_sql(
        host,
        "SELECT coalesce(address, '') || '/' || coalesce(netmask, '') || ' ' || auth_method "
        "FROM pg_hba_file_rules WHERE type LIKE 'host%' AND auth_method <> 'reject'",
    ).splitlines()
    assert sorted(live) == sorted(
        ["127.0.0.1/255.255.255.255 scram-sha-256",
         "::1/ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff scram-sha-256"]
    )


def test_passwords_are_scram(host):
    assert superuser_sql(host, "SHOW password_encryption") == "scram-sha-256"
    stored = superuser_sql(
        host, "SELECT rolpassword FROM pg_authid WHERE rolname = '{}'".format(DB_USER)
    )
    assert stored.startswith("SCRAM-SHA-256$")


@pytest.mark.parametrize("address", ["127.0.0.1", "::1"])
def test_site_user_connects_with_its_password(host, address):
    if address == "::1" and "::1" not in host.run("ip -6 addr show dev lo").stdout:
        pytest.skip("this host has no IPv6 loopback")
    result = tcp_login(host, address, DB_USER, DB_NAME, DB_PASSWORD)
    assert result.rc == 0, result.stderr
    assert result.stdout.strip() == DB_USER


def test_site_user_is_refused_without_or_with_a_wrong_password(host):
    without = tcp_login(host, "127.0.0.1", DB_USER, DB_NAME)
    assert without.rc != 0
    assert "no password supplied" in without.stderr
    wrong = tcp_login(host, "127.0.0.1", DB_USER, DB_NAME, DB_PASSWORD + "-wrong")
    assert wrong.rc != 0
    assert "password authentication failed" in wrong.stderr


def test_superuser_has_no_tcp_login(host):
    result = tcp_login(host, "127.0.0.1", "postgres", "postgres", DB_PASSWORD)
    assert result.rc != 0


def test_site_database_is_owned_by_the_site_user(host):
    owner = superuser_sql(
        host,
        "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = '{}'".format(DB_NAME),
    )
    assert owner == DB_USER


def test_wal_archiving_is_ready_for_pitr(host):
    assert superuser_sql(host, "SHOW wal_level") == "replica"
    assert superuser_sql(host, "SHOW archive_mode") == "on"
    command = superuser_sql(host, "SHOW archive_command")
    assert command not in ("", "(disabled)", "/bin/true", "true")
    archive_dir = host.file("/var/lib/postgresql/wal-archive")
    assert archive_dir.is_directory
    assert archive_dir.user == "postgres"
    assert archive_dir.mode == 0o700
    # A forced segment switch is archived without failures.
    superuser_sql(host, "SELECT pg_switch_wal()")
    archived = superuser_sql(
        host,
        "SELECT pg_sleep(2); SELECT archived_count > 0 AND "
        "(last_failed_time IS NULL OR last_archived_time > last_failed_time) FROM pg_stat_archiver",
    )
    assert archived.splitlines()[-1] == "t"


def test_pg_stat_statements_is_preloaded_and_in_the_site_database(host):
    assert "pg_stat_statements" in superuser_sql(host, "SHOW shared_preload_libraries")
    assert superuser_sql(
        host, "SELECT count(*) FROM pg_extension WHERE extname = 'pg_stat_statements'", db=DB_NAME
    ) == "1"
    # The view only answers when the library is really loaded.
    assert int(superuser_sql(host, "SELECT count(*) FROM pg_stat_statements", db=DB_NAME)) >= 0


def test_memory_settings_are_sized(host):
    shared = superuser_sql(
        host, "SELECT setting::bigint * 8 / 1024 FROM pg_settings WHERE name = 'shared_buffers'"
    )
    # Default derivation: 25% of RAM, never above the 4096 MiB cap; more than Debian's 128 MiB.
    assert 128 < int(shared) <= 4096
    assert not superuser_sql(host, "SELECT string_agg(name, ',') FROM pg_settings WHERE pending_restart")
