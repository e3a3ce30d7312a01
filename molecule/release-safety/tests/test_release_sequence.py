"""The state-sequence test: a seeded random sequence of deploys, rollbacks, maintenance switches
and killed runs, the invariants checked after every step (see release_sequence.py).

A short sequence runs with the scenario (make test); `make soak` runs a long one. The seed is
printed; OPSPACK_SEQUENCE_SEED=<seed> replays it, OPSPACK_SEQUENCE_STEPS sets its length.
Runs last in the scenario (file order), from whatever the tests before it left.
"""

from __future__ import annotations

import os
import time

from opspack.testing.scenario import RequestLoop
from release_sequence import play


def test_no_sequence_of_operations_leaves_the_site_in_a_state_nobody_chose(host):
    seed = int(os.environ.get("OPSPACK_SEQUENCE_SEED") or time.time_ns() % 1_000_000)
    steps = int(os.environ.get("OPSPACK_SEQUENCE_STEPS") or 10)
    print(f"state sequence: seed {seed}, {steps} steps (replay with OPSPACK_SEQUENCE_SEED={seed})")
    # Bounded: at most 120 s per step, one request per 20 ms, to 127.0.0.1 only.
    with RequestLoop(host, seconds=120.0 * steps, interval=0.02, path="/health/ready") as loop:
        outcome = play(host, steps, seed, loop)
    print(f"state sequence (seed {seed}): {outcome.steps} steps run, {outcome.checks} invariant checks passed, "
          f"{outcome.kills} killed runs, {outcome.failed_runs} runs failed or refused as expected "
          f"({outcome.refused} refused before any change); {loop.total} requests, {loop.failed} failed")
    assert outcome.steps == steps and loop.failed == 0 and loop.total > 0
