"""Benchmark: backup throughput and restore-drill time against plain pg_dump / pg_restore.

On one provisioned lab host (started from the tests' provisioned-host snapshot), with pgbench tables at scale 50 (5 million accounts) in the
lab site's database, it measures in the same run:

- baseline: plain `pg_dump --format=custom` of that database (pg_dump's defaults, zlib level 6),
  timed on the host;
- opspack.platform.pg_backup of the same database, timed on the host by the module itself,
  with the proof a site usually asks for (exact row counts of every table, row-by-row
  checksums of the small critical tables branches and tellers, a drill query): at its default
  zlib level 1 (the goal's figure) and, for comparison, at pg_dump's level 6 (on 2 cores
  pg_dump and the server's COPY keep both busy, so at the same level the proof's scans add
  their CPU almost in full); then once more with all 5 million rows of pgbench_accounts
  checksummed as well (the worst case);
- baseline: plain `pg_restore --jobs=2` of that last backup's dump into an empty database, timed on
  the host;
- opspack.platform.restore_drill of the backup (sha256 check, restore with the same jobs, every
  fact proven again, scratch database dropped), timed on the host by the module (its RTO).

Goals from issue 4: backup throughput at least 0.9 of plain pg_dump's; drill time at most 1.25
of a plain pg_restore (the difference is the verification). The drill is of the fully
checksummed backup. Speed goals live here, never in tests.
"""

from __future__ import annotations

import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from opspack.testing import snapshot
from opspack.testing.config import tool_env

ROOT = Path(__file__).resolve().parents[1]
LAB = "bench-backup"
BASE_PORT = int(os.environ.get("OPSPACK_BENCH_BACKUP_BASE_PORT", "26100"))
SCALE = int(os.environ.get("OPSPACK_BENCH_SCALE", "50"))
# Alternating rounds of plain pg_dump and pg_backup; the throughput ratio is of their medians.
ROUNDS = int(os.environ.get("OPSPACK_BENCH_ROUNDS", "5"))
BACKUP_DIR = "/var/backups/opspack/blog/postgresql"
THROUGHPUT_GOAL = 0.9
DRILL_GOAL = 1.25


def stolen_and_total() -> tuple[int, int]:
    """The machine's CPU time stolen by its hypervisor, and all CPU time, in jiffies (/proc/stat).

    The lab host is a container on this machine, so this says how noisy its measurements were."""
    fields = [int(value) for value in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (fields[7] if len(fields) > 7 else 0), sum(fields[:8])


def run(args: list[str], env: dict) -> str:
    result = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        sys.exit(f"bench: {' '.join(args[:3])} failed:\n{result.stdout[-3000:]}\n{result.stderr[-2000:]}")
    return result.stdout


class Host:
    """The bench host, reached as the operator with sudo, as after provisioning."""

    def __init__(self, lab_dir: Path, env: dict):
        self.lab_dir, self.env = lab_dir, env
        self.inventory = ["-i", str(lab_dir / "hosts.yml"), "-e", "ansible_user=ops", "--become"]

    def shell_as_postgres(self, command: str) -> str:
        return run(["ansible", "vps1", *self.inventory, "--become-user", "postgres", "-m", "ansible.builtin.command",
                    "-a", f"bash -c {shlex.quote(command)}", "-o"], self.env).split("(stdout)", 1)[-1].strip()

    def timed_on_host(self, command: str) -> float:
        """Seconds a command takes on the host itself (no SSH or Ansible in the figure)."""
        timer = f"s=$(date +%s.%N) && {command} >/dev/null && e=$(date +%s.%N) && python3 -c \"print($e - $s)\""
        return float(self.shell_as_postgres(timer).split()[-1])

    def module(self, name: str, args: dict) -> tuple[float, dict]:
        started = time.monotonic()
        out = run(["ansible", "vps1", *self.inventory, "--become-user", "postgres", "-m", f"opspack.platform.{name}",
                   "-a", json.dumps(args)], dict(self.env, ANSIBLE_LOAD_CALLBACK_PLUGINS="1", ANSIBLE_STDOUT_CALLBACK="json"))
        elapsed = time.monotonic() - started
        result = json.loads(out)["plays"][0]["tasks"][0]["hosts"]["vps1"]
        if result.get("failed"):
            sys.exit(f"bench: {name} failed: {result.get('msg')}")
        return elapsed, result


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="opspack-bench-") as scratch:
        lab_dir = Path(scratch) / "lab"
        env = tool_env(ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"))
        bench_lab = snapshot.start_lab(LAB, lab_dir, 1, BASE_PORT)
        try:
            host = Host(lab_dir, env)
            print(f"bench: loading pgbench at scale {SCALE}", flush=True)
            host.shell_as_postgres(f"pgbench --initialize --scale={SCALE} --quiet --host=/var/run/postgresql blog")
            size = host.shell_as_postgres("psql -XAtq -d blog -c 'SELECT pg_database_size(current_database())'")
            run(["ansible", "vps1", *host.inventory, "-m", "ansible.builtin.file", "-a",
                 f"path={BACKUP_DIR} state=directory owner=postgres group=postgres mode=0700"], env)
            print(f"bench: database size {int(size) / 1048576:.0f} MiB", flush=True)
            # Loading wrote ~1 GB of WAL that pgBackRest's archive-push compresses in the
            # background: measuring before it is done times the archiver, not the backups.
            settled = host.shell_as_postgres(
                "psql -XAtq -c CHECKPOINT >/dev/null && for i in $(seq 1 300); do "
                "ls /var/lib/postgresql/*/main/pg_wal/archive_status | grep -q '[.]ready$' || { echo $i; exit 0; }; "
                "sleep 1; done; echo never")
            print(f"bench: WAL archive settled after {settled} s", flush=True)

            # A discarded first dump warms the page cache, so no measured run pays for it. Then
            # ROUNDS rounds of plain pg_dump, pg_backup at its default level and at level 6 (the two
            # pg_backups swap places every round), so that a noisy moment of the machine hits each;
            # the ratios are of the medians.
            host.timed_on_host(f"pg_dump --format=custom --file={BACKUP_DIR}/plain.pgdump blog")
            query = "SELECT count(*), sum(abalance) FROM pgbench_accounts"
            usual = {"site": "blog", "database": "blog", "backup_dir": BACKUP_DIR,
                     "critical_tables": ["pgbench_branches", "pgbench_tellers"], "drill_query": query}
            # Level 1 is pg_backup as it ships (no compress given); level 6 is pg_dump's own.
            plain_dumps, dumps, last = [], {1: [], 6: []}, {}
            stolen_before, total_before = stolen_and_total()
            for _round in range(ROUNDS):
                plain_dumps.append(host.timed_on_host(f"pg_dump --format=custom --file={BACKUP_DIR}/plain.pgdump blog"))
                for level in ((1, 6) if _round % 2 == 0 else (6, 1)):
                    _wall, last[level] = host.module("pg_backup", usual if level == 1 else dict(usual, compress=level))
                    dumps[level].append(last[level]["duration_seconds"])
                    time.sleep(1.1)  # one backup id per second
            stolen_after, total_after = stolen_and_total()
            stolen = (stolen_after - stolen_before) / max(1, total_after - total_before)
            usual_dumps, level6_dumps, taken_usual, taken_level6 = dumps[1], dumps[6], last[1], last[6]
            plain_dump, usual_dump = statistics.median(plain_dumps), statistics.median(usual_dumps)
            level6_dump = statistics.median(level6_dumps)
            plain_bytes = int(host.shell_as_postgres(f"stat --format=%s {BACKUP_DIR}/plain.pgdump"))
            time.sleep(1.1)  # one backup id per second
            ours_dump, taken = host.module("pg_backup", dict(
                usual, critical_tables=["pgbench_accounts", "pgbench_branches", "pgbench_tellers"]))
            # The same dump the drill restores next (the latest backup), restored and nothing more.
            plain_restore = host.timed_on_host(
                f"createdb plain_restore && pg_restore --jobs=2 --exit-on-error --no-owner --no-privileges "
                f"--dbname=plain_restore {taken['path']} && dropdb plain_restore")
            ours_drill, drilled = host.module("restore_drill", {"site": "blog", "backup_dir": BACKUP_DIR, "jobs": 2})
        finally:
            bench_lab.down()
    # Both ratios compare work on the host: pg_dump's wall time there against the module's own
    # (from opening its snapshot to the manifest on disk). Ansible's round trip is shown apart.
    usual_throughput = plain_dump / usual_dump
    level6_throughput = plain_dump / level6_dump
    ours_dump_host = taken["duration_seconds"]
    throughput = plain_dump / ours_dump_host
    drill_ratio = drilled["rto_seconds"] / plain_restore
    print(f"database: pgbench scale {SCALE}, {int(size) / 1048576:.0f} MiB; plain pg_dump's file {plain_bytes / 1048576:.1f} MiB, "
          f"pg_backup's {taken_usual['size_bytes'] / 1048576:.1f} MiB at level {taken_usual['manifest']['compress_level']} "
          f"({taken_usual['size_bytes'] / plain_bytes:.3f} x), {taken_level6['size_bytes'] / 1048576:.1f} MiB at level 6")
    print(f"machine: {stolen:.1%} of its CPU time was stolen by the hypervisor during the rounds"
          f"{' (noisy: compare the rounds, and run again)' if stolen > 0.03 else ''}")
    print(f"per round, plain pg_dump / pg_backup: {', '.join(f'{p / o:.2f}' for p, o in zip(plain_dumps, usual_dumps))}")
    print(f"plain pg_dump -Fc (on the host, median of {ROUNDS}):  {plain_dump:6.1f} s  "
          f"({', '.join(f'{value:.1f}' for value in plain_dumps)})")
    print(f"opspack pg_backup (its default zlib level 1), row counts of every table, small tables checksummed, drill query (on the host, median of {ROUNDS}):\n"
          f"                                          {usual_dump:6.1f} s  ({', '.join(f'{value:.1f}' for value in usual_dumps)})  throughput = {usual_throughput:4.2f} x pg_dump's"
          f"  (goal >= {THROUGHPUT_GOAL}: {'met' if usual_throughput >= THROUGHPUT_GOAL else 'NOT met'})")
    print(f"  ... the same at pg_dump's own zlib level 6 (for comparison, not the goal):\n"
          f"                                          {level6_dump:6.1f} s  ({', '.join(f'{value:.1f}' for value in level6_dumps)})  throughput = {level6_throughput:4.2f} x pg_dump's")
    print(f"  ... and all 5M rows of pgbench_accounts checksummed row by row (on the host):\n"
          f"                                          {ours_dump_host:6.1f} s  throughput = {throughput:4.2f} x pg_dump's"
          f"  (goal >= {THROUGHPUT_GOAL}: {'met' if throughput >= THROUGHPUT_GOAL else 'NOT met'});"
          f" {ours_dump:.1f} s with Ansible's round trip")
    print(f"plain pg_restore -j2 (on the host):       {plain_restore:6.1f} s")
    print(f"opspack restore_drill (on the host, RTO): {drilled['rto_seconds']:6.1f} s  = {drill_ratio:4.2f} x pg_restore"
          f"  (goal <= {DRILL_GOAL}: {'met' if drill_ratio <= DRILL_GOAL else 'NOT met'}); {ours_drill:.1f} s with Ansible's round trip")
    return 0


if __name__ == "__main__":
    sys.exit(main())
