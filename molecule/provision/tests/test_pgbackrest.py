"""testinfra checks of the pgbackrest role: pinned and held, stanza checked, WAL archived, timers on."""

import json

from opspack.testing import targets


def test_pgbackrest_is_pinned_and_held(host):
    package = host.package("pgbackrest")
    # The target's upstream version, whatever the packaging revision.
    assert package.is_installed and package.version.startswith(targets.of(host)["target_pgbackrest_version"] + "-")
    assert "hold" in host.check_output("dpkg --get-selections pgbackrest")


def test_the_stanza_is_healthy_with_a_full_backup(host):
    info = json.loads(host.check_output("runuser -u postgres -- pgbackrest --stanza=main --output=json info"))
    assert info[0]["status"]["code"] == 0, info[0]["status"]
    assert any(item["type"] == "full" for item in info[0]["backup"])


def test_wal_is_archived_by_pgbackrest(host):
    command = host.check_output("runuser -u postgres -- psql -XAtq -c 'SHOW archive_command'")
    assert command == "pgbackrest --stanza=main archive-push %p"
    assert host.run("runuser -u postgres -- pgbackrest --stanza=main check").rc == 0


def test_full_and_differential_backups_are_scheduled(host):
    for kind in ("full", "diff"):
        timer = host.service(f"opspack-pgbackrest-{kind}.timer")
        assert timer.is_enabled and timer.is_running
    config = host.file("/etc/pgbackrest.conf")
    assert config.user == "root" and config.group == "postgres" and config.mode == 0o640


def test_backups_are_kept_for_30_days_of_recovery(host):
    # pgBackRest itself reports the values it read (an unknown option would make it fail).
    settings = " ".join(host.check_output("runuser -u postgres -- pgbackrest --stanza=main help expire").split())
    # An option whose value differs from its default reads "[current=X, default=Y]".
    assert "--repo-retention-full full backup retention count/time [current=30" in settings
    assert "--repo-retention-full-type retention type for full backups [current=time" in settings
    assert "--repo-retention-diff number of differential backups to retain [current=30" in settings
