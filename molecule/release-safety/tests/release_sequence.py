"""Seeded random sequences of release operations on the scenario's host, with the invariants
checked after every step (the state-sequence test of the release lifecycle).

Steps: deploy (a good release, older, newer or the same; one failing its health gate; one failing
its migration), rollback (plain, named, unknown), maintenance on/off, and an operation killed
with SIGKILL at a random point (its control process and workers, as a lost laptop would). A
bounded HTTPS request loop on the health path runs the whole time.

After every step that finished:
- exactly one complete release serves (nginx's slot links a release directory that is not
  .partial) and it answers, through nginx, healthy and as itself;
- the schema is exactly what the serving release's own migrations define;
- the host's record (current, last known good), the audit log's last "done" line, the control
  node's history.jsonl, the sites matrix and last-known-good/blog.json all name what serves;
- a run that said it succeeded moved traffic where it was asked; one that failed moved nothing;
- no .partial is left and the deploy lock is free.
After a killed step only the first point is checked (the next run puts right what the killed one
left, so the next step re-runs it: the same deploy, or a deploy of the release that serves).

OPSPACK_SEQUENCE_SEED replays a sequence; OPSPACK_SEQUENCE_STEPS sets its length.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import time
from dataclasses import dataclass, field

from opspack.testing.scenario import EPHEMERAL, PROJECT, command, deploy_args, get, history, record

# version -> the migrations its tree defines (tests/sample_site/build_releases.py)
SCHEMA = {"1.0.0": [1], "2.0.0": [1, 2], "4.0.0": [1, 2]}
GOOD = tuple(SCHEMA)
HEALTH_FAILS = "2.1.0"
MIGRATION_FAILS = "3.0.0"
UNKNOWN = "7.7.7+000000000000"
AFTER_KILL_S = 8


@dataclass
class Step:
    kind: str
    args: tuple[str, ...]
    label: str
    kill_after: float | None = None


@dataclass
class Outcome:
    steps: int = 0
    checks: int = 0
    kills: int = 0
    refused: int = 0
    failed_runs: int = 0
    log: list[str] = field(default_factory=list)


def run(step: Step) -> tuple[int | None, str]:
    """The step's playbook; None as return code when it was killed."""
    env = dict(os.environ, ANSIBLE_NOCOLOR="1", ANSIBLE_FORCE_COLOR="0")
    argv = command(step.kind, *step.args)
    if step.kill_after is None:
        ran = subprocess.run(argv, cwd=PROJECT, env=env, capture_output=True, text=True, check=False, timeout=900)
        return ran.returncode, ran.stdout + ran.stderr
    process = subprocess.Popen(argv, cwd=PROJECT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True)
    try:
        process.wait(timeout=step.kill_after)
        return process.returncode, ""
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=60)
        # The module the run had started on the host may still finish there (the SSH master
        # connection outlives the control process): give it the time one task takes.
        time.sleep(AFTER_KILL_S)
        return None, ""


def choose(rng: random.Random, host, maintenance: bool, killed: Step | None, serving: str) -> Step:
    if killed is not None:
        # The operator runs again: the killed deploy, or (after a killed rollback) a deploy of what serves.
        if killed.kind == "deploy":
            return Step("deploy", killed.args, f"re-run {killed.label}")
        version = serving.split("+")[0]
        return Step("deploy", deploy_args(version), f"deploy {version} (what serves, after a killed rollback)")
    roll = rng.random()
    if roll < 0.35:
        version = rng.choice(GOOD)
        return Step("deploy", deploy_args(version), f"deploy {version}")
    if roll < 0.42:
        return Step("deploy", deploy_args(HEALTH_FAILS) + ("-e", "release_health_retries=3"), f"deploy {HEALTH_FAILS} (fails health)")
    if roll < 0.48:
        return Step("deploy", deploy_args(MIGRATION_FAILS), f"deploy {MIGRATION_FAILS} (fails its migration)")
    if roll < 0.66:
        return Step("rollback", (), "rollback")
    if roll < 0.76:
        releases = sorted(record(host)["releases"])
        target = rng.choice(releases) if releases else UNKNOWN
        return Step("rollback", ("-e", f"release_rollback_to={target}"), f"rollback to {target}")
    if roll < 0.79:
        return Step("rollback", ("-e", f"release_rollback_to={UNKNOWN}"), "rollback to an unknown release")
    if roll < 0.88:
        state = "off" if maintenance else "on"
        return Step("maintenance", ("-e", f"release_maintenance={state}"), f"maintenance {state}")
    kind = rng.choice(("deploy", "rollback"))
    if kind == "deploy":
        version = rng.choice(GOOD + (HEALTH_FAILS,))
        return Step("deploy", deploy_args(version), f"deploy {version}", kill_after=rng.uniform(2.0, 25.0))
    return Step("rollback", (), "rollback", kill_after=rng.uniform(2.0, 12.0))


# --- what the host and the records say ------------------------------------------------------

# Everything the invariants read on the host, in one SSH round trip (each testinfra command is one).
STATE_SCRIPT = r"""
slot=$(sed -n 's/^# slot: //p' /etc/nginx/conf.d/opspack-upstream-blog.conf)
target=$(basename "$(readlink /srv/blog/slots/$slot)")
complete=no
[ -f "/srv/blog/releases/$target/VERSION" ] && [ -d "/srv/blog/releases/$target/venv" ] && complete=yes
applied=$(runuser -u postgres -- psql -XAtq -d blog -c \
  "SELECT coalesce(string_agg(version::text, ',' ORDER BY version), '') FROM opspack_schema_history")
done_line=$(grep -E ' (deploy|rollback) done ' /var/log/opspack/blog-audit.log | tail -n 1)
partial=$(ls -d /srv/blog/releases/*.partial /var/lib/opspack/migrations/blog/*.partial 2>/dev/null | tr '\n' ' ')
lock=no; [ -e /srv/blog/deploy.lock ] && lock=yes
printf '%s\n' "$slot" "$target" "$complete" "$applied" "$done_line" "$partial" "$lock"
cat /srv/blog/release-state.json
"""


def host_state(host) -> dict:
    lines = host.check_output(STATE_SCRIPT).split("\n", 7)
    slot, release_id, complete, applied, done_line, partial, lock = (line.strip() for line in lines[:7])
    done = next((word.split("=", 1)[1] for word in done_line.split() if word.startswith(("release=", "to="))), "")
    return {"slot": slot, "release_id": release_id, "complete": complete == "yes",
            "applied": [int(number) for number in applied.split(",") if number], "last_done": done,
            "partial": partial, "lock": lock == "yes", "record": json.loads(lines[7])}


def serving(host) -> tuple[str, str]:
    """(slot, release id) nginx sends the site's traffic to."""
    state = host_state(host)
    return state["slot"], state["release_id"]


def last_recorded() -> dict:
    serving_ops = [entry for entry in history() if entry.get("site") == "blog" and entry.get("result") == "ok"
                   and entry.get("operation") in ("deploy", "upgrade", "rollback")]
    return serving_ops[-1] if serving_ops else {}


def matrix_version() -> str:
    for line in (EPHEMERAL / "records" / "loop-sites-matrix.md").read_text().splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if cells and cells[0] == "blog":
            return cells[3]
    return ""


def check(host, outcome: Outcome, *, full: bool, maintenance: bool, before: str, step: Step, rc: int | None) -> str:
    """Assert the invariants; returns the release that serves."""
    problems = []

    def expect(condition: bool, what: str) -> None:
        outcome.checks += 1
        if not condition:
            problems.append(what)

    state = host_state(host)
    slot, release_id = state["slot"], state["release_id"]
    version = release_id.split("+")[0]
    expect(bool(release_id) and not release_id.endswith(".partial") and state["complete"],
           f"slot {slot} links {release_id!r}, not a complete release")
    status, answered, _body = get(host, "/health/ready")
    expect((status, answered) == (200, version), f"health through nginx answered {status} from {answered!r}, not 200 from {version}")
    status, _answered, _body = get(host, "/")
    expect(status == (503 if maintenance else 200), f"/ answered {status} with maintenance {'on' if maintenance else 'off'}")
    if full:
        expect(state["applied"] == SCHEMA.get(version, state["applied"]),
               f"schema {state['applied']} is not what {version} defines ({SCHEMA.get(version)})")
        record_ = state["record"]
        expect(record_["current"].get("release_id") == release_id, f"record's current is {record_['current'].get('release_id')}")
        expect(record_["last_known_good"].get("release_id") == release_id,
               f"record's last known good is {record_['last_known_good'].get('release_id')}")
        expect(state["last_done"] == release_id, f"audit log's last done line names {state['last_done']}")
        expect(last_recorded().get("release") == release_id, f"history.jsonl's last serving entry is {last_recorded().get('release')}")
        expect(matrix_version() == version, f"matrix shows {matrix_version()}")
        lkg = json.loads((EPHEMERAL / "records" / "last-known-good" / "blog.json").read_text())
        expect(lkg.get("release") == release_id, f"last-known-good/blog.json names {lkg.get('release')}")
        expect(not state["partial"], f".partial left: {state['partial']}")
        expect(not state["lock"], "the deploy lock is still held")
        if rc == 0 and step.kind in ("deploy", "rollback"):
            asked = next((arg.split("=", 1)[1] for arg in step.args if arg.startswith("release_version=")), "")
            rolled_to = next((arg.split("=", 1)[1] for arg in step.args if arg.startswith("release_rollback_to=")), "")
            if asked:
                expect(version == asked, f"the deploy of {asked} succeeded but {version} serves")
            elif rolled_to:
                expect(release_id == rolled_to, f"the rollback to {rolled_to} succeeded but {release_id} serves")
            elif not step.label.startswith("re-run"):
                expect(release_id != before, "the rollback succeeded but nothing moved")
        if rc != 0:
            expect(release_id == before, f"a failed {step.label} moved traffic from {before} to {release_id}")
    assert not problems, f"after {step.label}: " + "; ".join(problems)
    return release_id


def play(host, steps: int, seed: int, loop) -> Outcome:
    rng = random.Random(seed)
    outcome = Outcome()
    maintenance = False
    killed: Step | None = None
    current = serving(host)[1]
    for number in range(1, steps + 1):
        step = choose(rng, host, maintenance, killed, current)
        failed_before = loop.failed
        started = time.monotonic()
        rc, out = run(step)
        was_killed = rc is None
        if step.kind == "maintenance" and rc == 0:
            maintenance = step.args[-1].endswith("on")
        if was_killed:
            outcome.kills += 1
        elif rc != 0:
            outcome.failed_runs += 1
            if "Nothing was changed" in out:
                outcome.refused += 1
        line = (f"step {number} (seed {seed}): {step.label}"
                + (f" killed after {step.kill_after:.1f} s" if was_killed else f" -> rc {rc}")
                + f" in {time.monotonic() - started:.0f} s")
        assert rc is not None or step.kill_after is not None
        current = check(host, outcome, full=not was_killed, maintenance=maintenance, before=current, step=step, rc=rc)
        assert loop.failed == failed_before, f"{line}: requests failed during the step: {loop.statuses}"
        line += f"; invariants hold ({outcome.checks} checks so far, {loop.total} requests, 0 failed)"
        outcome.log.append(line)
        print(line, flush=True)
        killed = step if was_killed else None
        outcome.steps += 1
    if killed is not None or maintenance:
        # Leave the host settled for whatever runs next.
        if killed is not None:
            rc, out = run(choose(rng, host, maintenance, killed, current))
        if maintenance:
            run(Step("maintenance", ("-e", "release_maintenance=off"), "maintenance off"))
    return outcome
