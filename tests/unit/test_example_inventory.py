"""The example inventory is a user's starting point: its site definitions pass the check every
playbook makes first, and a bad edit of it (a port collision, an unknown key, a missing vault
secret, two sites with one domain, an old per-role variable) stops ansible-playbook before the
first connection, naming the site and the field. The hosts are TEST-NET addresses: a run that got
as far as connecting would report them unreachable, which every refusal below asserts it did not.
(The lab test molecule/example-inventory provisions and deploys from a copy of it.)"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from opspack.testing.config import tool_env

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "inventories" / "example"
VAULT_PASSWORD = "example-vault-password-for-tests"


def ansible(tool: str, inventory: Path, *args: str) -> subprocess.CompletedProcess:
    env = tool_env(ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"), ANSIBLE_TIMEOUT="3", ANSIBLE_FORCE_COLOR="0",
                   ANSIBLE_NOCOLOR="1", XDG_DATA_HOME=str(inventory.parent / "data"))
    return subprocess.run([tool, "-i", str(inventory), "--vault-password-file", str(inventory.parent / "vault-pass"), *args],
                          capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)


@pytest.fixture
def inventory(tmp_path) -> Path:
    """A copy of the example with its vault made as README says: from the example, encrypted."""
    copy = tmp_path / "inventory"
    shutil.copytree(EXAMPLE, copy)
    (tmp_path / "vault-pass").write_text(VAULT_PASSWORD + "\n")
    vault = copy / "group_vars" / "all" / "vault.yml"
    shutil.copy(vault.with_name("vault.yml.example"), vault)
    subprocess.run([str(Path(sys.executable).parent / "ansible-vault"), "encrypt", "--vault-password-file",
                    str(tmp_path / "vault-pass"), str(vault)], check=True, capture_output=True)
    return copy


def edit(path: Path, old: str, new: str, count: int = 1) -> None:
    text = path.read_text()
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new, count))


def check(inventory: Path) -> subprocess.CompletedProcess:
    """The site check of every playbook, on every host of the inventory (no connection)."""
    return ansible(str(Path(sys.executable).parent / "ansible"), inventory, "all", "-m", "ansible.builtin.debug",
                   "-a", "msg={{ lookup('opspack.platform.sites', 'check') }}")


def refuse(inventory: Path) -> str:
    ran = ansible(str(Path(sys.executable).parent / "ansible-playbook"), inventory, "opspack.platform.provision")
    out = ran.stdout + ran.stderr
    assert ran.returncode != 0, out[-2000:]
    assert "UNREACHABLE" not in out and "Login | Try that login" not in out, "the run connected: " + out[-2000:]
    for secret in ("change-me-blog-db", "change-me-blog-redis", "change-me-blog-secret", "change-me-redis-admin"):
        assert secret not in out, "a vault secret reached the output"
    return out


def test_the_example_passes_the_check_on_every_host(inventory):
    ran = check(inventory)
    out = ran.stdout + ran.stderr
    assert ran.returncode == 0, out[-3000:]
    assert "blog: blog.example.com, www.blog.example.com -> 127.0.0.1:" in out
    assert "blog: blog.staging.example.com -> 127.0.0.1:" in out
    assert "api: api.example.com -> 127.0.0.1:" in out and "no database, no Redis" in out
    assert out.count("SUCCESS") == 3 and "change-me" not in out


def test_a_port_collision_is_refused_before_connecting(inventory):
    sites = inventory / "group_vars" / "all" / "sites.yml"
    edit(sites, "port: auto", "port: 8000")
    edit(sites, "port: auto", "port: 8001")
    out = refuse(inventory)
    assert "opspack_sites: site api: port: 8001 (slot blue) is also a port of site blog on this host" in out


def test_an_unknown_key_is_refused_before_connecting(inventory):
    edit(inventory / "group_vars" / "all" / "sites.yml", "    health_path: /status/200", "    helth_path: /status/200")
    assert "opspack_sites: site api: helth_path: unknown key" in refuse(inventory)


def test_a_missing_vault_secret_is_refused_naming_the_site_and_field(inventory):
    vault = inventory / "group_vars" / "all" / "vault.yml"
    vault.unlink()
    edit(vault.with_name("vault.yml.example"), "vault_blog_redis_password:", "vault_blog_redis_passwrd:")
    shutil.copy(vault.with_name("vault.yml.example"), vault)
    out = refuse(inventory)
    assert "opspack_sites: site blog: redis.password: 'vault_blog_redis_password' is undefined" in out


def test_two_sites_with_one_domain_are_refused_before_connecting(inventory):
    edit(inventory / "group_vars" / "staging" / "main.yml", "api_domains: [api.staging.example.com]",
         "api_domains: [api.staging.example.com, blog.staging.example.com]")
    assert "opspack_sites: site api: domains: blog.staging.example.com is also a domain of site blog" in refuse(inventory)


def test_an_old_per_role_site_variable_is_refused_naming_its_new_place(inventory):
    edit(inventory / "group_vars" / "all" / "main.yml", "release_keep: 5", "release_keep: 5\nrelease_health_path: /ping")
    assert "release_health_path is now part of the site definition: opspack_sites[].health_path" in refuse(inventory)


def test_hosts_given_different_state_directories_are_refused_before_connecting(inventory):
    """One run, one control-node state directory: staging's own would split the records from the backups."""
    edit(inventory / "group_vars" / "staging" / "main.yml", "api_domains:", "opspack_state_dir: /srv/opspack-state/staging\napi_domains:")
    out = refuse(inventory)
    assert "opspack_state_dir differs between the hosts of this run" in out and "/srv/opspack-state/staging" in out


PLAYBOOKS = sorted(path.stem for path in (ROOT / "playbooks").glob("*.yml"))
# Playbooks of the control node alone (hosts: localhost): an inventory host is never in them.
CONTROL_NODE_PLAYBOOKS = {"release_gate"}


def plays_and_hosts(listing: str) -> dict[str, list[str]]:
    """`ansible-playbook --list-hosts` output as {play: [hosts]}."""
    plays, current = {}, None
    for line in listing.splitlines():
        play = re.match(r"\s*play #\d+ \(([^)]*)\): (.*?)\s+TAGS", line)
        if play:
            current = play.group(2)
            plays[current] = []
        elif current and line.startswith("      ") and line.strip() and not line.strip().startswith("pattern:"):
            plays[current].append(line.strip())
    return plays


@pytest.mark.parametrize("narrow", [("--limit", "web-2"), ("-e", "opspack_hosts=web-2"), ("-e", "release_hosts=web-2")])
def test_every_play_of_every_playbook_runs_on_the_narrowed_hosts_only(inventory, narrow):
    # --limit on every playbook; the variables (the same expression in every play) on a few.
    for name in PLAYBOOKS if narrow[0] == "--limit" else ["login", "provision", "backup", "smoke"]:
        ran = ansible(str(Path(sys.executable).parent / "ansible-playbook"), inventory, f"opspack.platform.{name}",
                      "--list-hosts", *narrow)
        assert ran.returncode == 0, (name, (ran.stdout + ran.stderr)[-2000:])
        plays = plays_and_hosts(ran.stdout)
        assert plays, (name, ran.stdout)
        if name in CONTROL_NODE_PLAYBOOKS:
            assert all(hosts in ([], ["localhost"]) for hosts in plays.values()), (name, plays)
            continue
        assert all(hosts == ["web-2"] for hosts in plays.values()), (name, plays)
    whole = plays_and_hosts(ansible(str(Path(sys.executable).parent / "ansible-playbook"), inventory,
                                    "opspack.platform.deploy", "--list-hosts").stdout)
    assert all(sorted(hosts) == ["staging-1", "web-1", "web-2"] for hosts in whole.values()), whole
