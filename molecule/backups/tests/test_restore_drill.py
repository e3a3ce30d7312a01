"""Backups and restore drills on a provisioned lab host, run as an operator runs them.

Each test runs the real playbooks (backup.yml, restore_drill.yml) with ansible-playbook against
the scenario's host and checks the host, the control node's off-host copies and the drill
records. In file order the first takes the backups the later ones drill; run alone, a test gets
them from the `backed_up` fixture (autouse: nothing to do when the host has them).
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path


import pytest
import yaml

from opspack.testing import targets
from opspack.testing.config import SCENARIO_SITES, canaries
from opspack.testing.playbooks import playbook as run_playbook
from opspack.testing.scenario import sql

PROJECT = Path(os.environ["MOLECULE_PROJECT_DIRECTORY"])
EPHEMERAL = Path(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"])
INVENTORY = EPHEMERAL / "inventory"
# The backups scenario's own files, also when another scenario (backups-debian13, ...) runs these tests.
BACKUPS_SCENARIO = Path(__file__).resolve().parents[1]
SITE_DIR = "/var/backups/opspack/blog/postgresql"
OFFHOST = EPHEMERAL / "backups" / "vps1" / "blog" / "postgresql"
DRILLS = EPHEMERAL / "records" / "drills.jsonl"
CANARIES = canaries()


def playbook(name: str, *extra: str) -> subprocess.CompletedProcess:
    ran = run_playbook(INVENTORY, name, *extra)
    # Where a failure's message goes depends on the config (Molecule's sends it to stderr):
    # the tests read both streams as one.
    return subprocess.CompletedProcess(ran.args, ran.returncode, stdout=ran.stdout + ran.stderr, stderr=ran.stderr)


def listing(host) -> list[str]:
    return sorted(host.check_output(f"ls -1 {SITE_DIR}").split())


def manifests(host) -> list[dict]:
    """Every manifest in the site's backup directory, read in one round trip."""
    read_all = "import glob, json; print(json.dumps([json.load(open(p)) for p in sorted(glob.glob('%s/*.manifest.json'))]))"
    return json.loads(host.check_output("python3 -c " + shlex.quote(read_all % SITE_DIR)))


def latest(host) -> dict:
    return max(manifests(host), key=lambda item: (item["ended_at"], item["backup_id"]))


def assert_refused_and_backups_stay(host, name: str, message: str, *extra: str) -> None:
    """The playbook fails, says why, and the site's backups are exactly as before."""
    before = listing(host)
    ran = playbook(name, *extra)
    assert ran.returncode != 0
    assert message in ran.stdout, ran.stdout[-3000:]
    assert listing(host) == before


# The host runs the lab's other sites too (molecule/shared/vars/sites.yml); the tests are about blog.
OTHER_SITES = [site["name"] for site in yaml.safe_load(SCENARIO_SITES.read_text())["opspack_sites"] if site["name"] != "blog"]


def last_drill(engine: str | None = "postgresql") -> dict:
    """The last drill record of one engine's logical drills (None: whatever came last), never
    one of another site's."""
    records = [json.loads(line) for line in DRILLS.read_text().splitlines()]
    if engine:
        records = [item for item in records if item["operation"] == "drill" and item.get("engine") == engine
                   and item.get("site") not in OTHER_SITES]
    return records[-1]


def production_facts(host) -> dict:
    return {"posts": sql(host, "SELECT count(*), md5(string_agg(p::text, ',' ORDER BY id)) FROM posts p"),
            "accounts": sql(host, "SELECT count(*), sum(abalance) FROM pgbench_accounts"),
            "databases": sql(host, "SELECT string_agg(datname, ',' ORDER BY datname) FROM pg_database", "postgres")}


def scratch_databases(host) -> str:
    return sql(host, "SELECT count(*) FROM pg_database WHERE datname LIKE 'opspack\\_drill\\_%'", "postgres")


def something_to_back_up(host) -> None:
    """Something in Redis and in the uploads, to find again in their backups."""
    host.check_output("REDISCLI_AUTH=lab-redis-admin-password-0001 redis-cli --user opsadmin --no-auth-warning "
                      "SET opspack:drill:canary-key present")
    host.check_output("install -o blog -g blog -m 0640 /dev/null /srv/blog/shared/uploads/avatar.png && "
                      "printf 'not really a png' > /srv/blog/shared/uploads/avatar.png")


@pytest.fixture(autouse=True)
def backed_up(request, host):
    """The backups the tests drill (blog's database, Redis, the uploads, with something in each),
    taken when the host has none yet, unless the test is the one that takes them."""
    if request.node.originalname == "test_backup_then_drill_passes_and_is_recorded":
        return
    if host.run("ls /var/backups/opspack/redis/*.manifest.json >/dev/null 2>&1").rc == 0 and manifests(host):
        return
    something_to_back_up(host)
    taken = playbook("backup.yml")
    assert taken.returncode == 0, taken.stdout[-3000:]


def test_backup_then_drill_passes_and_is_recorded(host):
    something_to_back_up(host)
    taken = playbook("backup.yml", "-vvvv")
    assert taken.returncode == 0, taken.stdout[-3000:]
    manifest = latest(host)
    assert manifest["tables"]["public.pgbench_accounts"] == 100000
    assert manifest["tables"]["public.posts"] == 500
    assert set(manifest["checksums"]) == {"public.posts", "public.pgbench_branches", "public.pgbench_tellers"}
    assert manifest["query"]["answer"] == [["100000", "0", "1"]]
    assert manifest["server_version"].startswith(targets.of(host)["target_postgresql_version"] + ".")
    data = host.file(f"{SITE_DIR}/{manifest['file']}")
    assert data.user == "postgres" and data.mode == 0o600
    # pg_backup's own zlib level (1, not pg_dump's 6), recorded and really used: the archive says so.
    assert manifest["compress_level"] == 1
    header = host.check_output(f"runuser -u postgres -- pg_restore --list {SITE_DIR}/{manifest['file']}")
    # Archives of PostgreSQL 16 and later name the method (gzip) instead of the zlib level.
    if int(targets.of(host)["target_postgresql_version"]) >= 16:
        assert ";     Compression: gzip" in header.splitlines(), header[:400]
    else:
        assert ";     Compression: 1" in header.splitlines(), header[:400]
    # The off-host copy on the control node is the same file, proven by its sha256.
    copy = OFFHOST / manifest["file"]
    assert hashlib.sha256(copy.read_bytes()).hexdigest() == manifest["sha256"]
    assert json.loads((OFFHOST / f"{manifest['backup_id']}.manifest.json").read_text()) == manifest

    drilled = playbook("restore_drill.yml")
    assert drilled.returncode == 0, drilled.stdout[-3000:]
    record = last_drill()
    assert record["result"] == "pass" and record["backup_id"] == manifest["backup_id"], record
    assert float(record["rto_seconds"]) > 0 and int(record["rpo_seconds"]) >= 0
    assert record["reason"] == "all checks passed"
    assert scratch_databases(host) == "0"
    # Every data store is drilled: the Redis snapshot loads, the uploads unpack to the same tree.
    for engine in ("redis", "files"):
        other = last_drill(engine)
        assert other["result"] == "pass" and other["reason"] == "all checks passed", other
        assert other["backup_id"].startswith(("redis-redis-", "blog-files-")) and float(other["rto_seconds"]) > 0
    assert host.check_output("ls -A /var/tmp | grep -c '^opspack-' || true") == "0"
    # The records callback wrote the same drills into the history and the sites matrix.
    history = [json.loads(line) for line in (EPHEMERAL / "records" / "history.jsonl").read_text().splitlines()]
    drills = [entry for entry in history
              if entry["operation"] == "drill" and entry["site"] == "blog" and entry.get("engine") == "postgresql"]
    assert drills and drills[-1]["result"] == "pass" and drills[-1]["backup_id"] == manifest["backup_id"]
    assert drills[-1]["rto_s"] > 0 and drills[-1]["rpo_s"] >= 0
    row = [line for line in (EPHEMERAL / "records" / "loop-sites-matrix.md").read_text().splitlines()
           if line.startswith("| blog |")]
    assert row and "| pass |" in row[0], row


def test_a_damaged_redis_snapshot_fails_its_drill_even_with_a_matching_checksum(host):
    """A copy whose sha256 was taken after it broke: redis-check-rdb still catches it."""
    directory = "/var/backups/opspack/redis"
    names = host.check_output(f"ls -1 {directory}").split()
    good = json.loads(host.file(f"{directory}/{sorted(n for n in names if n.endswith('.manifest.json'))[-1]}").content_string)
    later = datetime.datetime.strptime(good["ended_at"], "%Y-%m-%dT%H:%M:%SZ") + datetime.timedelta(seconds=1)
    broken_id = "redis-redis-" + later.strftime("%Y%m%dT%H%M%SZ")
    host.check_output(
        "python3 -c " + shlex.quote(
            "import hashlib, json, sys; d, good, new = sys.argv[1:4]; data = bytearray(open(f'{d}/{good}.rdb', 'rb').read());"
            " data[len(data) // 2] ^= 0x01; open(f'{d}/{new}.rdb', 'wb').write(data);"
            " m = json.load(open(f'{d}/{good}.manifest.json'));"
            " m.update(backup_id=new, file=f'{new}.rdb', sha256=hashlib.sha256(data).hexdigest(), ended_at=sys.argv[4]);"
            " json.dump(m, open(f'{d}/{new}.manifest.json', 'w'))") + f" {directory} {good['backup_id']} {broken_id} "
        + later.strftime("%Y-%m-%dT%H:%M:%SZ"))
    try:
        drilled = playbook("restore_drill.yml", "-e", f"restore_drill_backup_id={broken_id}")
        assert drilled.returncode != 0
        record = last_drill("redis")
        assert record["backup_id"] == broken_id and record["result"] == "fail", record
        assert "redis-check-rdb rejects the RDB" in record["reason"], record
    finally:
        host.check_output(f"rm -f {directory}/{broken_id}.rdb {directory}/{broken_id}.manifest.json")
    assert host.check_output("ls -A /var/tmp | grep -c '^opspack-' || true") == "0"


def test_redis_and_site_files_are_backed_up_with_checksums_off_host_too(host):
    for kind, suffix in (("redis", ".rdb"), ("blog/files/shared_uploads", ".tar.gz")):
        names = host.check_output(f"ls -1 /var/backups/opspack/{kind}").split()
        manifest_name = sorted(name for name in names if name.endswith(".manifest.json"))[-1]
        manifest = json.loads(host.file(f"/var/backups/opspack/{kind}/{manifest_name}").content_string)
        data = host.file(f"/var/backups/opspack/{kind}/{manifest['file']}")
        assert manifest["file"].endswith(suffix) and data.mode == 0o600
        assert host.check_output(f"sha256sum /var/backups/opspack/{kind}/{manifest['file']}").split()[0] == manifest["sha256"]
        copy = EPHEMERAL / "backups" / "vps1" / kind / manifest["file"]
        assert hashlib.sha256(copy.read_bytes()).hexdigest() == manifest["sha256"]
        if kind == "redis":
            assert manifest["keys"]["db0"] >= 1
            # The snapshot holds the key written before the backup.
            assert b"opspack:drill:canary-key" in copy.read_bytes()
        else:
            assert manifest["files"] >= 1 and "avatar.png" in host.check_output(f"tar -tzf {data.path}")


def test_one_failing_backup_does_not_cost_the_others_theirs(host):
    redis_before = host.check_output("ls -1 /var/backups/opspack/redis | grep -c manifest")
    before = listing(host)
    ran = playbook("backup.yml", "-e", '{"backup_site_checks": {"blog": {"critical_tables": ["no_such_table"]}}}')
    assert ran.returncode != 0
    assert "backup failed: blog-postgresql-" in ran.stdout and "critical table no_such_table does not exist" in ran.stdout
    assert listing(host) == before
    # Redis (and the uploads) were still backed up in the same run.
    assert int(host.check_output("ls -1 /var/backups/opspack/redis | grep -c manifest")) == int(redis_before) + 1


def test_check_mode_says_what_it_would_take_and_takes_nothing(host):
    before = listing(host)
    dry = playbook("backup.yml", "--check", "-v")
    assert dry.returncode == 0, dry.stdout[-3000:]
    assert '"backup_id": "blog-postgresql-' in dry.stdout and '"deleted": []' in dry.stdout
    assert listing(host) == before


def test_a_flipped_byte_fails_the_drill_with_a_checksum_error_and_production_is_untouched(host):
    before = production_facts(host)
    manifest = latest(host)
    path = f"{SITE_DIR}/{manifest['file']}"
    host.check_output(
        "python3 -c " + shlex.quote(
            "import sys; f = open(sys.argv[1], 'r+b'); f.seek(int(sys.argv[2])); b = f.read(1); f.seek(int(sys.argv[2]));"
            " f.write(bytes([b[0] ^ 0x01])); f.close()") + f" {path} {manifest['size_bytes'] // 2}")
    drilled = playbook("restore_drill.yml")
    assert drilled.returncode != 0
    assert "checksum error" in drilled.stdout
    record = last_drill()
    assert record["result"] == "fail" and "checksum error" in record["reason"], record
    assert production_facts(host) == before
    assert scratch_databases(host) == "0"


def test_a_restore_whose_data_differs_from_the_manifest_fails_and_the_scratch_database_is_dropped(host):
    """Prove the data, not the exit code: pg_restore succeeds, the row count does not match."""
    taken = playbook("backup.yml")
    assert taken.returncode == 0, taken.stdout[-3000:]
    good = latest(host)
    # A manifest that claims one more post than the dump holds (a backup that lost a row).
    later = (datetime.datetime.strptime(good["ended_at"], "%Y-%m-%dT%H:%M:%SZ") + datetime.timedelta(seconds=1))
    lying = dict(good, backup_id="blog-postgresql-" + later.strftime("%Y%m%dT%H%M%SZ"),
                 ended_at=later.strftime("%Y-%m-%dT%H:%M:%SZ"), file=good["file"],
                 tables=dict(good["tables"], **{"public.posts": 501}))
    host.check_output("runuser -u postgres -- tee {}/{}.manifest.json >/dev/null <<'EOF'\n{}\nEOF".format(
        SITE_DIR, lying["backup_id"], json.dumps(lying)))
    try:
        drilled = playbook("restore_drill.yml")
        assert drilled.returncode != 0
        record = last_drill()
        assert record["backup_id"] == lying["backup_id"] and record["result"] == "fail"
        assert "table public.posts has 500 rows, the backup had 501" in record["reason"], record
        assert scratch_databases(host) == "0"
    finally:
        host.check_output(f"rm -f {SITE_DIR}/{lying['backup_id']}.manifest.json")


def test_an_unknown_backup_id_is_refused_and_backups_stay(host):
    # At -vvvv: a failing run prints the most, and still no secret (checked in playbook()).
    assert_refused_and_backups_stay(host, "restore_drill.yml", "unknown backup id 'blog-postgresql-20000101T000000Z'",
                                    "-vvvv", "-e", "restore_drill_backup_id=blog-postgresql-20000101T000000Z")


def test_an_unknown_site_is_refused_before_anything(host):
    drilled = playbook("restore_drill.yml", "-e", '{"restore_drill_sites": ["nope"]}')
    assert drilled.returncode != 0
    assert "unknown site(s) nope" in drilled.stdout


def test_a_full_backup_target_is_refused_and_backups_stay(host):
    assert_refused_and_backups_stay(host, "backup.yml", "MiB free, this backup needs at least",
                                    "-vvvv", "-e", "backup_min_free_mb=100000000")


def test_an_off_host_target_that_cannot_be_written_is_refused_before_any_backup(host):
    assert_refused_and_backups_stay(host, "backup.yml", "cannot be written on the control node",
                                    "-e", "backup_offhost_dir=/etc/hostname/backups")


FABRICATE = r"""
import datetime, hashlib, json, os, sys
directory, days = sys.argv[1], int(sys.argv[2])
now = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
for day in range(1, days + 1):
    for hour in (2, 14):
        ended = (now - datetime.timedelta(days=day)).replace(hour=hour, minute=0, second=0)
        backup_id = 'blog-postgresql-' + ended.strftime('%Y%m%dT%H%M%SZ')
        data = b'fabricated ' + backup_id.encode()
        with open(os.path.join(directory, backup_id + '.pgdump'), 'wb') as out:
            out.write(data)
        manifest = {'format': 1, 'backup_id': backup_id, 'site': 'blog', 'engine': 'postgresql',
                    'file': backup_id + '.pgdump', 'sha256': hashlib.sha256(data).hexdigest(),
                    'size_bytes': len(data), 'started_at': ended.strftime('%Y-%m-%dT%H:%M:%SZ'),
                    'ended_at': ended.strftime('%Y-%m-%dT%H:%M:%SZ')}
        with open(os.path.join(directory, backup_id + '.manifest.json'), 'w') as out:
            json.dump(manifest, out)
"""


def test_retention_over_40_days_keeps_exactly_what_the_policy_keeps(host):
    host.check_output(f"runuser -u postgres -- python3 -c {shlex.quote(FABRICATE)} {SITE_DIR} 40")
    # The control node holds copies of the same 40 days and of 5 more that the host deleted long
    # ago (as the host's timer deletes backups between two runs of the playbook).
    subprocess.run([sys.executable, "-c", FABRICATE, str(OFFHOST), "45"], check=True)
    taken = playbook("backup.yml", "-e", "backup_keep_last=3", "-e", "backup_keep_daily_days=30")
    assert taken.returncode == 0, taken.stdout[-3000:]
    remaining = manifests(host)
    ids = sorted(item["backup_id"] for item in remaining)
    today = datetime.datetime.now(datetime.timezone.utc).date()
    # Today's backups are real ones from this scenario: the newest of today is kept by both rules.
    by_day: dict = {}
    for item in remaining:
        by_day.setdefault(item["ended_at"][:10], []).append(item["backup_id"])
    assert len(by_day[today.isoformat()]) >= 1
    # Days 1..29 back keep exactly their 14:00 backup (the newest of that day); older days nothing,
    # except what keep_last holds (only today's backups are newer, so nothing from before).
    for day in range(1, 41):
        date = (today - datetime.timedelta(days=day)).isoformat()
        expected = [f"blog-postgresql-{date.replace('-', '')}T140000Z"] if day < 30 else []
        assert sorted(by_day.get(date, [])) == expected, (date, by_day.get(date))
    # Every data file that stays has its manifest and vice versa.
    files = listing(host)
    assert sorted(name[: -len(".pgdump")] for name in files if name.endswith(".pgdump")) == ids
    # The policy is applied to the control node's copies by their own manifests: the same ones
    # remain there, the copies of what the host had deleted are gone, each with its data file.
    copies = sorted(path.name[: -len(".manifest.json")] for path in OFFHOST.glob("*.manifest.json"))
    assert copies == ids, sorted(set(copies) ^ set(ids))
    assert sorted(path.name[: -len(".pgdump")] for path in OFFHOST.glob("*.pgdump")) == ids


def test_the_canary_secret_is_in_no_backup_record_or_copy(host):
    for path in [DRILLS, *sorted((EPHEMERAL / "backups").rglob("*.manifest.json")),
                 *sorted(path for path in (EPHEMERAL / "records").rglob("*") if path.is_file())]:
        assert not [canary for canary in CANARIES if canary in path.read_text()], path
    on_host = host.check_output("find /var/backups/opspack -name '*.manifest.json' -exec cat {} +")
    assert not [canary for canary in CANARIES if canary in on_host]


def utc_stamp(host) -> str:
    """The host's clock, as the PITR target format wants it (the drill runs on the host)."""
    return host.check_output("date -u +%Y-%m-%dT%H:%M:%S.%NZ")


def test_pitr_to_t1_has_the_t1_rows_and_not_the_t2_rows(host):
    sql(host, "DROP TABLE IF EXISTS pitr_probe")
    sql(host, "CREATE TABLE pitr_probe (label text NOT NULL, at timestamptz NOT NULL DEFAULT clock_timestamp())")
    sql(host, "INSERT INTO pitr_probe (label) VALUES ('t1-a'), ('t1-b')")
    t1 = utc_stamp(host)
    sql(host, "INSERT INTO pitr_probe (label) VALUES ('t2-a')")
    # The trap: a backup that ends after the target cannot stop there. The drill must not pick it.
    host.check_output("runuser -u postgres -- pgbackrest --stanza=main --type=diff backup")
    sets = json.loads(host.check_output("runuser -u postgres -- pgbackrest --stanza=main --output=json info"))[0]["backup"]
    after_t2 = sets[-1]["label"]
    before = production_facts(host)
    query = BACKUPS_SCENARIO / "vars" / "pitr-query.yml"
    drilled = playbook("restore_drill.yml", "-e", f"restore_drill_target_time={t1}", "-e", "restore_drill_pitr_database=blog",
                       "-e", f"@{query}")
    assert drilled.returncode == 0, drilled.stdout[-3000:]
    assert "-> [['t1-a,t1-b']]" in drilled.stdout
    record = last_drill(None)
    assert record["operation"] == "pitr_drill" and record["result"] == "pass", record
    assert record["backup_set"] != after_t2
    target = datetime.datetime.fromisoformat(record["target_time"].replace("Z", "+00:00"))
    assert datetime.datetime.fromisoformat(record["recovery_stopped_before"]) > target
    assert datetime.datetime.fromisoformat(record["backup_set_stopped_at"].replace("Z", "+00:00")) < target
    # Production still has every row, and the scratch cluster is gone.
    assert sql(host, "SELECT string_agg(label, ',' ORDER BY label) FROM pitr_probe") == "t1-a,t1-b,t2-a"
    assert production_facts(host) == before
    assert not host.file("/var/lib/postgresql/opspack-pitr-drill").exists


def test_pitr_to_a_time_before_the_first_backup_is_refused(host):
    drilled = playbook("restore_drill.yml", "-e", "restore_drill_target_time=2020-01-01T00:00:00Z")
    assert drilled.returncode != 0
    assert "target time 2020-01-01T00:00:00Z is before any backup can reach it: the first backup ended at" in drilled.stdout
    assert not host.file("/var/lib/postgresql/opspack-pitr-drill").exists


TABLESPACE = "/var/lib/postgresql/opspack-lab-tablespace"


def test_a_tablespace_is_recovered_below_the_scratch_root_and_one_newer_than_the_set_is_refused(host):
    """WAL replay of CREATE TABLESPACE empties the tablespace's original directory: production's."""
    host.check_output(f"install -d -o postgres -g postgres -m 700 {TABLESPACE}")
    sql(host, f"CREATE TABLESPACE lab_space LOCATION '{TABLESPACE}'", "postgres")
    sql(host, "CREATE TABLE ts_probe (label text NOT NULL) TABLESPACE lab_space")
    sql(host, "INSERT INTO ts_probe VALUES ('in-space')")
    try:
        query = ["-e", '{"restore_drill_pitr_query": "SELECT string_agg(label, \',\' ORDER BY label) FROM ts_probe"}',
                 "-e", "restore_drill_pitr_database=blog"]
        refused = playbook("restore_drill.yml", "-e", f"restore_drill_target_time={utc_stamp(host)}", *query)
        assert refused.returncode != 0 and "are not in backup set" in refused.stdout, refused.stdout[-3000:]
        assert f"at {TABLESPACE}" in refused.stdout and sql(host, "SELECT label FROM ts_probe") == "in-space"

        # A set that holds the tablespace: recovered below the scratch root, production's left alone.
        host.check_output("runuser -u postgres -- pgbackrest --stanza=main --type=diff backup")
        info = "runuser -u postgres -- pgbackrest --stanza=main --output=json info"
        newest = json.loads(host.check_output(info))[0]["backup"][-1]["label"]
        held = json.loads(host.check_output(f"{info} --set={newest}"))[0]["backup"][-1]["tablespace"]
        assert [space["name"] for space in held] == ["lab_space"], held
        # pgBackRest's stop times are whole seconds: a set counts for targets a second after it.
        time.sleep(2)
        sql(host, "INSERT INTO ts_probe VALUES ('after')")
        target = utc_stamp(host)
        sql(host, "INSERT INTO ts_probe VALUES ('too-late')")
        sql(host, "CHECKPOINT", "postgres")
        files = f"find {TABLESPACE} -type f -printf '%P %s\\n' | sort"
        before = host.check_output(files)
        drilled = playbook("restore_drill.yml", "-e", f"restore_drill_target_time={target}", *query)
        assert drilled.returncode == 0, drilled.stdout[-3000:]
        assert "-> [['after,in-space']]" in drilled.stdout
        assert last_drill(None)["backup_set"] == newest
        assert host.check_output(files) == before
        assert sql(host, "SELECT string_agg(label, ',' ORDER BY label) FROM ts_probe") == "after,in-space,too-late"
        assert not host.file("/var/lib/postgresql/opspack-pitr-drill").exists
    finally:
        # Later tests recover past this point; the directory stays, as a dropped tablespace's does.
        sql(host, "DROP TABLE IF EXISTS ts_probe")
        sql(host, "DROP TABLESPACE IF EXISTS lab_space", "postgres")


def test_a_failed_scheduled_backup_leaves_a_marker_and_a_good_one_clears_it(host):
    marker = "/var/lib/opspack/backup-failed/pgbackrest-diff"
    host.check_output("chmod 000 /var/lib/pgbackrest")
    try:
        assert host.run("systemctl start opspack-pgbackrest-diff.service").rc != 0
    finally:
        host.check_output("chmod 750 /var/lib/pgbackrest")
    assert host.file(marker).exists
    assert host.file(marker).content_string.startswith(datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d"))
    assert host.run("systemctl start opspack-pgbackrest-diff.service").rc == 0
    assert not host.file(marker).exists


def manifest_count(host, kind: str) -> int:
    return int(host.check_output(f"find /var/backups/opspack/{kind} -maxdepth 1 -name '*.manifest.json' | wc -l"))


def test_the_hosts_timer_takes_every_backup_and_a_failed_job_leaves_a_marker(host):
    timer = host.service("opspack-backup.timer")
    assert timer.is_enabled and timer.is_running
    jobs = json.loads(host.file("/etc/opspack/backup/jobs.json").content_string)
    names = [job["name"] for job in jobs["jobs"]]
    sites = [site["name"] for site in yaml.safe_load(SCENARIO_SITES.read_text())["opspack_sites"]]
    assert [name for name in names if name.endswith("-postgresql")] == [f"{site}-postgresql" for site in sites], names
    assert "blog-files-shared_uploads" in names and names[-1] == "redis", names
    credential = host.file("/etc/opspack/backup/credentials/redis-password")
    assert credential.user == "root" and credential.mode == 0o600 and host.file("/etc/opspack/backup/credentials").mode == 0o700
    for path in ("/etc/opspack/backup/jobs.json", "/etc/systemd/system/opspack-backup.service"):
        assert not [canary for canary in CANARIES if canary in host.file(path).content_string], path
    kinds = ("blog/postgresql", "blog/files/shared_uploads", "redis")
    before = {kind: manifest_count(host, kind) for kind in kinds}

    started = host.run("systemctl start opspack-backup.service")
    assert started.rc == 0, started.stderr
    assert {kind: manifest_count(host, kind) for kind in kinds} == {kind: count + 1 for kind, count in before.items()}
    taken = latest(host)
    assert taken["checksums"]["public.posts"] and taken["tables"]["public.posts"] >= 500, "the site's checks apply"
    assert taken["query"]["sql"], taken

    marker = "/var/lib/opspack/backup-failed/backup-blog-postgresql"
    # Backup ids are per second: a second run within the same second would refuse its own id.
    time.sleep(1.1)
    host.check_output(f"chmod 500 {SITE_DIR}")
    try:
        assert host.run("systemctl start opspack-backup.service").rc != 0
    finally:
        host.check_output(f"chmod 700 {SITE_DIR}")
    when, reason = host.file(marker).content_string.splitlines()
    assert when.startswith(datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d")) and SITE_DIR in reason, reason
    assert manifest_count(host, "redis") == before["redis"] + 2, "the other jobs ran all the same"
    journal = host.check_output("journalctl -u opspack-backup.service --no-pager -o cat")
    assert "blog-postgresql: FAILED" in journal and "redis: took redis-redis-" in journal
    assert not [canary for canary in CANARIES if canary in journal]

    time.sleep(1.1)
    assert host.run("systemctl start opspack-backup.service").rc == 0
    assert not host.file(marker).exists

    # The next run of the backup playbook copies what the timer took off the host, verified.
    scheduled = latest(host)
    copied = playbook("backup.yml")
    assert copied.returncode == 0, copied.stdout[-3000:]
    copy = OFFHOST / scheduled["file"]
    assert hashlib.sha256(copy.read_bytes()).hexdigest() == scheduled["sha256"]
    assert json.loads((OFFHOST / f"{scheduled['backup_id']}.manifest.json").read_text()) == scheduled
    assert playbook("backup.yml").stdout.count(f"{scheduled['backup_id']} data") == 0, "copied once only"


def restore(*extra: str) -> subprocess.CompletedProcess:
    return playbook("restore.yml", "-e", "restore_site=blog", *extra)


def test_a_restore_without_the_typed_confirmation_changes_nothing(host):
    before = production_facts(host)
    assert_refused_and_backups_stay(host, "restore.yml", "missing required arguments: restore_confirm",
                                    "-e", "restore_site=blog")
    assert_refused_and_backups_stay(host, "restore.yml", "Run again with -e restore_confirm=blog to confirm",
                                    "-e", "restore_site=blog", "-e", "restore_confirm=yes")
    assert_refused_and_backups_stay(host, "restore.yml", "unknown site nope on vps1",
                                    "-e", "restore_site=nope", "-e", "restore_confirm=nope")
    assert production_facts(host) == before


def test_a_restore_whose_proof_fails_leaves_the_site_untouched(host):
    taken = playbook("backup.yml")
    assert taken.returncode == 0, taken.stdout[-3000:]
    good = latest(host)
    later = datetime.datetime.strptime(good["ended_at"], "%Y-%m-%dT%H:%M:%SZ") + datetime.timedelta(seconds=1)
    lying = dict(good, backup_id="blog-postgresql-" + later.strftime("%Y%m%dT%H%M%SZ"),
                 ended_at=later.strftime("%Y-%m-%dT%H:%M:%SZ"),
                 tables=dict(good["tables"], **{"public.posts": good["tables"]["public.posts"] + 1}))
    host.check_output("runuser -u postgres -- tee {}/{}.manifest.json >/dev/null <<'EOF'\n{}\nEOF".format(
        SITE_DIR, lying["backup_id"], json.dumps(lying)))
    before = production_facts(host)
    try:
        ran = restore("-e", f"restore_backup_id={lying['backup_id']}", "-e", "restore_confirm=blog")
        assert ran.returncode != 0
        assert "the restored data differs from the backup" in ran.stdout and "the site's database is untouched" in ran.stdout
    finally:
        host.check_output(f"rm -f {SITE_DIR}/{lying['backup_id']}.manifest.json")
    assert production_facts(host) == before
    assert sql(host, "SELECT count(*) FROM pg_database WHERE datname = 'blog__restoring'", "postgres") == "0"
    assert sql(host, "SELECT datallowconn FROM pg_database WHERE datname = 'blog'", "postgres") == "t"
    assert not host.file("/var/lib/opspack/maintenance/blog/maintenance.on").exists


def test_a_restore_brings_the_backup_back_keeps_the_old_database_and_a_safety_backup(host):
    taken = playbook("backup.yml")
    assert taken.returncode == 0, taken.stdout[-3000:]
    backup_id = latest(host)["backup_id"]
    sql(host, "INSERT INTO posts VALUES (9001, 'written after the backup', true, now())")
    count_before = len(manifests(host))
    restored = restore("-e", f"restore_backup_id={backup_id}", "-e", "restore_confirm=blog")
    assert restored.returncode == 0, restored.stdout[-3000:]
    assert f"blog now runs on {backup_id}" in restored.stdout
    # The row written after the backup is gone; ownership and the site's own login still work.
    assert sql(host, "SELECT count(*) FROM posts WHERE id = 9001") == "0"
    assert sql(host, "SELECT tableowner FROM pg_tables WHERE tablename = 'posts'") == "blog"
    login = host.run("PGPASSWORD=lab-canary-Pg-7f3a9c psql -XAtqw -h 127.0.0.1 -U blog -d blog -c 'SELECT count(*) FROM posts'")
    assert login.rc == 0 and login.stdout.strip() == "500", login.stderr
    # Other roles still cannot connect to the site's database (its CONNECT privilege came along).
    assert sql(host, "SELECT has_database_privilege('public', 'blog', 'CONNECT')", "postgres") == "f"
    # The way back: the old database, with the late row, under its new name.
    previous = sql(host, "SELECT datname FROM pg_database WHERE datname LIKE 'blog\\_\\_before\\_%' ORDER BY 1 DESC LIMIT 1",
                   "postgres")
    assert sql(host, "SELECT count(*) FROM posts WHERE id = 9001", previous) == "1"
    # A safety backup was taken first (and nothing was pruned), and maintenance is off again.
    assert len(manifests(host)) == count_before + 1
    assert not host.file("/var/lib/opspack/maintenance/blog/maintenance.on").exists


def test_a_restore_to_a_point_in_time_rewinds_only_the_site_database(host):
    sql(host, "DROP TABLE IF EXISTS pitr_restore_probe")
    sql(host, "CREATE TABLE pitr_restore_probe (label text NOT NULL)")
    sql(host, "INSERT INTO pitr_restore_probe VALUES ('t1')")
    t1 = utc_stamp(host)
    sql(host, "INSERT INTO pitr_restore_probe VALUES ('t2')")
    # Written after the target in another database of the same cluster: it must survive.
    sql(host, "CREATE TABLE IF NOT EXISTS opspack_test_other_site (n int)", "postgres")
    sql(host, "INSERT INTO opspack_test_other_site VALUES (2)", "postgres")
    # A backup set that ends after the target cannot stop there: the restore must not use it.
    host.check_output("runuser -u postgres -- pgbackrest --stanza=main --type=diff backup")
    count_before = len(manifests(host))
    restored = restore("-e", f"restore_target_time={t1}", "-e", "restore_confirm=blog")
    assert restored.returncode == 0, restored.stdout[-3000:]
    assert sql(host, "SELECT string_agg(label, ',' ORDER BY label) FROM pitr_restore_probe") == "t1"
    assert sql(host, "SELECT count(*) FROM opspack_test_other_site WHERE n = 2", "postgres") == "1"
    # The point-in-time backup is an ordinary, proven one that says what it recovered to.
    made = [item for item in manifests(host) if item.get("recovered_to")]
    assert made, "no point-in-time backup manifest"
    target = datetime.datetime.fromisoformat(t1.replace("Z", "+00:00")[:26] + "+00:00")
    recovered_to = datetime.datetime.fromisoformat(made[-1]["recovered_to"].replace("Z", "+00:00"))
    assert abs((recovered_to - target).total_seconds()) < 0.001
    assert f"blog now runs on {made[-1]['backup_id']}" in restored.stdout
    # It, and a safety backup, were added; the old database keeps the t2 row; all is clean again.
    assert len(manifests(host)) == count_before + 2
    previous = sql(host, "SELECT datname FROM pg_database WHERE datname LIKE 'blog\\_\\_before\\_%' ORDER BY 1 DESC LIMIT 1",
                   "postgres")
    assert sql(host, "SELECT string_agg(label, ',' ORDER BY label) FROM pitr_restore_probe", previous) == "t1,t2"
    assert not host.file("/var/lib/postgresql/opspack-pitr-backup").exists
    assert not host.file("/var/lib/opspack/maintenance/blog/maintenance.on").exists


def test_a_restore_to_a_time_before_every_backup_or_with_a_backup_id_too_is_refused(host):
    before = production_facts(host)
    assert_refused_and_backups_stay(host, "restore.yml", "is before any backup can reach it",
                                    "-e", "restore_site=blog", "-e", "restore_confirm=blog",
                                    "-e", "restore_target_time=2020-01-01T00:00:00Z")
    assert_refused_and_backups_stay(host, "restore.yml", "Give either restore_backup_id",
                                    "-e", "restore_site=blog", "-e", "restore_confirm=blog",
                                    "-e", "restore_target_time=2026-01-01T00:00:00Z", "-e", "restore_backup_id=x")
    assert production_facts(host) == before
    assert not host.file("/var/lib/postgresql/opspack-pitr-backup").exists
