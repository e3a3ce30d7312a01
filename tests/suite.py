"""The whole suite in tiers, as `make test` runs it, with the time each tier took and one summary
line at the end counting every test of every pytest run (unit, lab, each scenario's testinfra).

    python tests/suite.py fast          # lint, sanity, unit: no lab
    python tests/suite.py lab           # the Molecule scenarios and tests/lab, JOBS at a time
    python tests/suite.py fast lab      # everything (make test)
    python tests/suite.py ubuntu        # the Ubuntu 24.04 scenarios (make test-ubuntu)

Lab jobs run side by side (OPSPACK_TEST_JOBS, default 2): each scenario has its own lab, ports
and Molecule state; scenarios started from the provisioned-host snapshot wait for one build of it.
Each job's output goes to .cache/test-logs/<job>.log; a failing job's tail is printed.
"""

from __future__ import annotations

import concurrent.futures
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

from opspack.testing.config import tool_env

ROOT = Path(__file__).resolve().parents[1]
LOGS = ROOT / ".cache" / "test-logs"
# Longest first, so that the last job to finish starts early ("lab" is pytest tests/lab); the
# first snapshot scenario builds the snapshot while provision, on fresh hosts, runs beside it.
# Every scenario under molecule/ runs; one missing from this list runs last.
LAB_ORDER = ("release-lifecycle", "release-lifecycle-debian13", "provision", "provision-debian13", "lab", "release-safety",
             "example-inventory", "backups", "backups-debian13", "fleet", "verify", "migrations", "preflight",
             "operate", "operate-debian13", "provision-ubuntu2404", "release-lifecycle-ubuntu2404", "backups-ubuntu2404")
# Scenarios on a target whose archive the test machines are not promised (Ubuntu's): their own
# tier, which fails like any other when the archive cannot be reached; never part of `lab`.
OWN_TIER = {"ubuntu": "-ubuntu2404"}
OUTCOME = re.compile(r"(\d+) (passed|failed|skipped|errors?|deselected|xfailed|xpassed)")
# pytest's closing line ("===== 7 passed, 1 skipped in 14.11s ====="), also inside Molecule's
# framed output (a prefix before it, colour codes, the line wrapped after the time).
# With -q (PYTEST_ADDOPTS) the line has no "=" around it.
SUMMARY = re.compile(r"^[\s│|]*(?:={3,} )?((?:\d+ \w+(?:, )?)+) in [0-9.]+s", re.MULTILINE)
ANSI = re.compile(r"\x1b\[[0-9;]*m")
NO_COLOUR = {"PY_COLORS": "0", "ANSIBLE_FORCE_COLOR": "0", "ANSIBLE_NOCOLOR": "1", "NO_COLOR": "1"}
# pytest-xdist workers for the unit tests: the machine's cores (at least two).
FAST_WORKERS = max(2, os.cpu_count() or 2)
_print_lock = threading.Lock()


def say(message: str) -> None:
    with _print_lock:
        print(f"suite: {message}", flush=True)


class Job:
    def __init__(self, name: str, argv: list[str], env: dict | None = None):
        self.name, self.argv, self.env = name, argv, env or {}
        self.returncode: int | None = None
        self.seconds = 0.0
        self.counts: dict[str, int] = {}

    @property
    def log(self) -> Path:
        return LOGS / f"{self.name}.log"

    def run(self) -> "Job":
        LOGS.mkdir(parents=True, exist_ok=True)
        env = tool_env(**NO_COLOUR, **self.env)
        started = time.monotonic()
        say(f"{self.name}: started ({' '.join(self.argv)})")
        with open(self.log, "w", encoding="utf-8") as log:
            self.returncode = subprocess.run(self.argv, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                                             stdin=subprocess.DEVNULL, check=False).returncode
        self.seconds = time.monotonic() - started
        text = ANSI.sub("", self.log.read_text(errors="replace"))
        self.counts = pytest_counts(text)
        found = ", ".join(f"{count} {outcome}" for outcome, count in self.counts.items()) or "no pytest summary"
        if self.returncode == 0:
            say(f"{self.name}: ok in {self.seconds:.0f} s ({found})")
        else:
            tail = "\n".join(text.splitlines()[-120:])
            say(f"{self.name}: FAILED (exit {self.returncode}) in {self.seconds:.0f} s ({found}); log {self.log}\n{tail}")
        return self


def pytest_counts(text: str) -> dict[str, int]:
    """Outcome -> count, summed over every pytest summary line in a job's output."""
    counts: dict[str, int] = {}
    for summary in SUMMARY.findall(text):
        for count, outcome in OUTCOME.findall(summary):
            outcome = "errors" if outcome.startswith("error") else outcome
            counts[outcome] = counts.get(outcome, 0) + int(count)
    return counts


def fast_jobs() -> list[Job]:
    # Longest first. The unit tests spread over the cores (pytest-xdist): alone, pytest keeps one busy.
    return [Job("unit", [sys.executable, "-m", "pytest", "--numprocesses", str(FAST_WORKERS), "tests/unit"]),
            Job("lint", ["ansible-lint"]),
            Job("sanity", [sys.executable, "tests/sanity/run_sanity.py"])]


def scenarios(tier: str = "lab") -> list[str]:
    """A lab tier's jobs in running order: the scenarios (and "lab", pytest tests/lab, in the lab tier).
    Every scenario runs in exactly one tier: an OWN_TIER one's if its name ends so, else "lab"."""
    present = sorted(path.parent.name for path in (ROOT / "molecule").glob("*/molecule.yml")) + ["lab"]
    ordered = [name for name in LAB_ORDER if name in present] + [name for name in present if name not in LAB_ORDER]

    def tier_of(name: str) -> str:
        return next((own for own, suffix in OWN_TIER.items() if name.endswith(suffix)), "lab")

    return [name for name in ordered if tier_of(name) == tier]


def lab_jobs(tier: str = "lab") -> list[Job]:
    return [Job("lab", [sys.executable, "-m", "pytest", "tests/lab"]) if name == "lab"
            else Job(f"molecule-{name}", ["molecule", "test", "-s", name]) for name in scenarios(tier)]


def run_tier(name: str, jobs: list[Job], parallel: int) -> tuple[bool, float]:
    started = time.monotonic()
    if parallel <= 1:
        done = [job.run() for job in jobs]
    else:
        with concurrent.futures.ThreadPoolExecutor(max_workers=parallel) as pool:
            done = list(pool.map(Job.run, jobs))
    seconds = time.monotonic() - started
    ok = all(job.returncode == 0 for job in done)
    say(f"tier {name}: {'ok' if ok else 'FAILED'} in {seconds:.0f} s ({len(done)} jobs)")
    return ok, seconds


def main(argv: list[str]) -> int:
    tiers = argv or ["fast", "lab"]
    unknown = [tier for tier in tiers if tier not in ("fast", "lab", *OWN_TIER)]
    if unknown:
        print(f"suite: unknown tier(s) {', '.join(unknown)}: use fast, lab or {', '.join(OWN_TIER)}", file=sys.stderr)
        return 2
    parallel = int(os.environ.get("OPSPACK_TEST_JOBS", "2"))
    started = time.monotonic()
    results: list[tuple[str, bool, float]] = []
    all_jobs: list[Job] = []
    for tier in tiers:
        jobs = fast_jobs() if tier == "fast" else lab_jobs(tier)
        all_jobs += jobs
        # The fast tier's three jobs run side by side (none waits for another); stop there if one fails.
        ok, seconds = run_tier(tier, jobs, len(jobs) if tier == "fast" else parallel)
        results.append((tier, ok, seconds))
        if not ok:
            break
    total = time.monotonic() - started
    counts: dict[str, int] = {}
    for job in all_jobs:
        for outcome, count in job.counts.items():
            counts[outcome] = counts.get(outcome, 0) + count
    failed_jobs = [job.name for job in all_jobs if job.returncode not in (0, None)]
    timing = ", ".join(f"{tier} {seconds:.0f} s" for tier, _, seconds in results)
    outcome = ", ".join(f"{counts[key]} {key}" for key in ("failed", "errors", "passed", "skipped", "deselected",
                                                             "xfailed", "xpassed") if counts.get(key))
    if failed_jobs:
        outcome = f"{outcome}; failed jobs: {', '.join(failed_jobs)}"
    print(f"==== {outcome or 'nothing ran'} in {total:.0f}s (tiers: {timing}) ====", flush=True)
    return 0 if all(ok for _, ok, _ in results) and len(results) == len(tiers) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
