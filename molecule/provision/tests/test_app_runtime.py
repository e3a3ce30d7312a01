"""testinfra checks of opspack.platform.app_runtime, run over SSH on each provisioned host.

Sites are found from the unit templates the role installed, so the checks follow whatever
app_runtime_sites the scenario converged with.
"""

import re

import pytest

UNIT_DIR = "/etc/systemd/system"
BASE_DIR = "/srv"
SLOTS = ("blue", "green")


def _sites(host):
    """{site: service user} for every opspack web unit template on the host."""
    out = host.check_output(f"find {UNIT_DIR} -maxdepth 1 -name 'opspack-*-web@.service' -printf '%f\\n'")
    sites = {}
    for unit in out.split():
        site = re.match(r"^opspack-(.+)-web@\.service$", unit).group(1)
        text = host.file(f"{UNIT_DIR}/{unit}").content_string
        sites[site] = re.search(r"^User=(\S+)$", text, re.M).group(1)
    assert sites, "no opspack-SITE-web@.service template found: app_runtime_sites is empty?"
    return sites


def _units(host, site):
    kinds = ["web"]
    if host.file(f"{UNIT_DIR}/opspack-{site}-worker@.service").exists:
        kinds.append("worker")
    return [f"opspack-{site}-{kind}@{slot}.service" for kind in kinds for slot in SLOTS]


def test_python_toolchain_builds_wheels(host):
    for pkg in ("python3", "python3-venv", "python3-pip", "python3-dev", "build-essential", "libpq-dev", "git"):
        assert host.package(pkg).is_installed, pkg
    # What psycopg's build needs: a compiler, Python headers and libpq's pg_config.
    assert host.run("gcc --version").rc == 0
    assert host.run("pg_config --includedir").rc == 0
    assert host.file("/usr/include/postgresql/libpq-fe.h").exists
    venv = host.run("d=$(mktemp -d) && python3 -m venv $d/v && $d/v/bin/python -m pip --version; rc=$?; rm -rf $d; exit $rc")
    assert venv.rc == 0, venv.stderr


def test_service_users_are_unprivileged_and_cannot_log_in(host):
    for site, user in _sites(host).items():
        u = host.user(user)
        assert u.exists
        assert u.shell == "/usr/sbin/nologin"
        assert u.home == f"{BASE_DIR}/{site}"
        assert u.uid < 1000, "not a system account"
        assert u.group == user
        assert u.password.startswith(("!", "*")), "password must be locked"
        login = host.run(f"su - {user} -c true")
        assert login.rc != 0
        assert "not available" in (login.stdout + login.stderr)


def test_site_layout_and_ownership(host):
    for site, user in _sites(host).items():
        root = host.file(f"{BASE_DIR}/{site}")
        assert root.is_directory
        assert (root.user, root.group, root.mode) == ("root", user, 0o750)
        for sub in ("releases", "shared", "shared/uploads", "shared/log"):
            d = host.file(f"{BASE_DIR}/{site}/{sub}")
            assert d.is_directory, sub
            assert (d.user, d.group, d.mode) == (user, user, 0o750), sub
        # The service user may write its shared tree; others may not even look.
        probe = f"{BASE_DIR}/{site}/shared/uploads/.testinfra-probe"
        assert host.run(f"runuser -u {user} -- touch {probe} && rm -f {probe}").rc == 0
        assert host.run(f"runuser -u nobody -- ls {BASE_DIR}/{site}").rc != 0


def test_secret_env_file_is_private(host):
    for site, user in _sites(host).items():
        env = host.file(f"{BASE_DIR}/{site}/shared/env")
        if not env.exists:
            continue
        assert (env.user, env.group, env.mode) == ("root", user, 0o640)
        assert host.run(f"runuser -u {user} -- test -r {env.path}").rc == 0
        assert host.run(f"runuser -u {user} -- test -w {env.path}").rc != 0


def test_unit_templates_verify_clean(host):
    for site, user in _sites(host).items():
        units = _units(host, site)
        result = host.run("systemd-analyze verify " + " ".join(units))
        # Before the first release a slot's executables are missing: the only message allowed.
        expected = re.compile(
            rf"^opspack-{re.escape(site)}-(web|worker)@\S+\.service: Command "
            rf"{re.escape(BASE_DIR)}/{re.escape(site)}/slots/\S+ is not executable: No such file or directory$"
        )
        unexpected = [line for line in result.stderr.splitlines() if line and not expected.match(line)]
        assert unexpected == [], unexpected


@pytest.mark.parametrize("slot", SLOTS)
def test_units_are_hardened_and_not_started(host, slot):
    for site, user in _sites(host).items():
        for unit in _units(host, site):
            if not unit.endswith(f"@{slot}.service"):
                continue
            props = dict(
                line.split("=", 1)
                for line in host.check_output(
                    f"systemctl show {unit} -p User -p WorkingDirectory -p NoNewPrivileges -p ProtectSystem"
                    " -p ReadWritePaths -p PrivateTmp -p ProtectHome -p Restart -p ActiveState"
                    " -p EnvironmentFiles -p LoadState"
                ).splitlines()
            )
            assert props["LoadState"] == "loaded", unit
            assert props["User"] == user
            assert props["WorkingDirectory"] == f"{BASE_DIR}/{site}/slots/{slot}"
            assert props["NoNewPrivileges"] == "yes"
            assert props["ProtectSystem"] == "strict"
            assert props["ReadWritePaths"] == f"{BASE_DIR}/{site}/shared"
            assert props["PrivateTmp"] == "yes"
            assert props["ProtectHome"] == "yes"
            assert props["Restart"] == "on-failure"
            assert props["EnvironmentFiles"].startswith(f"{BASE_DIR}/{site}/shared/env (ignore_errors=yes)")
            # No release exists yet: the role must not have started anything.
            assert props["ActiveState"] == "inactive", unit
