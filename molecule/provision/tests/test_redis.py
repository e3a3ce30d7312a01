"""testinfra checks of the redis role: loopback only, no unauthenticated access, ACL limits."""

import os
import shlex

import pytest

# Lab defaults equal the throwaway vars the lab is converged with; set the env vars elsewhere.
APP_USER = os.environ.get("OPSPACK_TEST_REDIS_USER", "app")
APP_PASSWORD = os.environ.get("OPSPACK_TEST_REDIS_PASSWORD", "lab-redis-app-password-0001")
ACL_FILE = "/etc/redis/users.acl"


class Result:
    def __init__(self, rc, stdout, stderr):
        self.rc, self.stdout, self.stderr = rc, stdout, stderr


def cli(host, *args, user=None, password=None):
    """Run redis-cli against 127.0.0.1 on the host.

    With a password the command goes through Ansible's raw module: a module such as shell
    would log its arguments, the password among them, to the host's journal. The password
    reaches redis-cli through REDISCLI_AUTH, not its argv.
    """
    # --raw: plain replies even on the tty that raw allocates.
    cmd = "redis-cli --raw -h 127.0.0.1 -p 6379"
    if user:
        cmd += " --user " + shlex.quote(user)
    cmd += " " + " ".join(args)
    if password is None:
        out = host.run(cmd)
        return Result(out.rc, out.stdout, out.stderr)
    res = host.ansible("raw", "REDISCLI_AUTH=%s %s" % (shlex.quote(password), cmd), check=False)
    # Drop the tty's \r and ssh's closing notice.
    lines = [ln.rstrip("\r") for ln in res.get("stdout", "").splitlines()
             if not ln.startswith("Shared connection to")]
    return Result(res.get("rc"), "\n".join(lines), res.get("stderr", ""))


def test_redis_server_is_active_and_enabled(host):
    svc = host.service("redis-server")
    assert svc.is_running
    assert svc.is_enabled


def test_listens_on_loopback_only(host):
    assert host.socket("tcp://127.0.0.1:6379").is_listening
    listening = host.run("ss -Hltn 'sport = :6379'").stdout.split("\n")
    local = sorted({line.split()[3] for line in listening if line.strip()})
    ipv6_lo = host.run("ip -6 addr show dev lo").stdout.strip() != ""
    expected = ["127.0.0.1:6379", "[::1]:6379"] if ipv6_lo else ["127.0.0.1:6379"]
    assert local == sorted(expected)
    # Nothing on a wildcard or a public address.
    assert not host.socket("tcp://0.0.0.0:6379").is_listening


def test_unauthenticated_ping_is_refused(host):
    out = cli(host, "PING")
    assert "NOAUTH" in out.stdout + out.stderr
    assert "PONG" not in out.stdout


def test_default_user_cannot_log_in_without_password(host):
    out = cli(host, "AUTH", "default", "x")
    assert "PONG" not in out.stdout
    assert "OK" not in out.stdout


def test_app_user_gets_pong(host):
    out = cli(host, "PING", user=APP_USER, password=APP_PASSWORD)
    assert out.stdout.strip() == "PONG", out.stdout + out.stderr


def test_app_user_wrong_password_is_refused(host):
    out = cli(host, "PING", user=APP_USER, password=APP_PASSWORD + "-wrong")
    assert "PONG" not in out.stdout
    assert "WRONGPASS" in out.stdout + out.stderr


@pytest.mark.parametrize(
    "command",
    ["FLUSHALL", "FLUSHDB", "DEBUG SLEEP 0", "CONFIG GET maxmemory", "KEYS '*'"],
)
def test_dangerous_commands_are_refused_for_app_user(host, command):
    out = cli(host, command, user=APP_USER, password=APP_PASSWORD)
    # DEBUG is refused before the ACL check by enable-debug-command no.
    refusals = ("NOPERM", "ERR DEBUG command not allowed")
    # The raw module's tty sometimes puts an empty line before the reply.
    assert out.stdout.lstrip().startswith(refusals), out.stdout


def test_app_user_can_write_and_read(host):
    assert cli(host, "SET", "opspack:test", "1", "EX", "60",
               user=APP_USER, password=APP_PASSWORD).stdout.strip() == "OK"
    assert cli(host, "GET", "opspack:test",
               user=APP_USER, password=APP_PASSWORD).stdout.strip() == "1"


def test_config_file_settings(host):
    conf = host.file("/etc/redis/redis.conf")
    assert conf.user == "redis"
    assert conf.mode == 0o640
    lines = [line.strip() for line in conf.content_string.splitlines()]
    for wanted in (
        "bind 127.0.0.1 -::1",
        "protected-mode yes",
        "port 6379",
        "maxmemory-policy allkeys-lru",
        "save 900 1",
        "save 300 10",
        "save 60 10000",
        "dir /var/lib/redis",
        "dbfilename dump.rdb",
        "appendonly no",
        "aclfile " + ACL_FILE,
    ):
        assert wanted in lines, wanted
    assert not any(line.startswith(("requirepass", "user ")) for line in lines)
    assert "enable-debug-command no" in lines


def test_live_maxmemory_policy(host):
    # Live value through a user whose ACL allows CONFIG GET, if the ACL file defines one that
    # the lab gives a known password; the app user cannot (see the NOPERM test above).
    admin = os.environ.get("OPSPACK_TEST_REDIS_ADMIN_USER", "opsadmin")
    password = os.environ.get(
        "OPSPACK_TEST_REDIS_ADMIN_PASSWORD", "lab-redis-admin-password-0001")
    if "user %s " % admin not in host.file(ACL_FILE).content_string:
        pytest.skip("no admin user %s in %s; the config file test covers it" % (admin, ACL_FILE))
    out = cli(host, "CONFIG GET maxmemory-policy", user=admin, password=password)
    assert out.stdout.split() == ["maxmemory-policy", "allkeys-lru"], out.stdout + out.stderr
    out = cli(host, "CONFIG GET maxmemory", user=admin, password=password)
    maxmemory = int(out.stdout.split()[1])
    assert 0 < maxmemory <= 512 * 1024 * 1024
    out = cli(host, "CONFIG GET appendonly", user=admin, password=password)
    assert out.stdout.split() == ["appendonly", "no"], out.stdout


def test_acl_file_is_private_and_holds_only_hashes(host):
    acl = host.file(ACL_FILE)
    assert acl.user == "redis"
    assert acl.mode == 0o640
    lines = acl.content_string.splitlines()
    assert lines[0].startswith("user default off")
    for line in lines[1:]:
        words = line.split()
        assert words[0] == "user" and words[2] == "on"
        # Passwords only in '#<sha256>' form, never '>plain' nor nopass.
        assert not any(w.startswith(">") or w == "nopass" for w in words)
        assert any(w.startswith("#") and len(w) == 65 for w in words)


def test_plain_password_is_not_on_disk_in_etc_redis(host):
    # grep runs through raw as well, so the password is not logged on the host by the check.
    res = host.ansible(
        "raw", "grep -rlF -e %s /etc/redis/; echo rc=$?" % shlex.quote(APP_PASSWORD), check=False)
    assert "rc=1" in res["stdout"], res["stdout"]  # 1 = no match, 2 = error
