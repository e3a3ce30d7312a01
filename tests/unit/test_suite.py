"""tests/suite.py counts every pytest run's outcome from its output, Molecule's framed output too."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import suite  # noqa: E402  (tests/suite.py)


def test_plain_and_framed_summaries_are_summed():
    text = "\n".join([
        "============================== 279 passed in 31.02s ===============================",
        "  \x1b[2m│\x1b[0m ============================== 7 passed in 14.11s",
        "  │ =============== 20 failed, 1 passed, 1 error in 62.80s (0:01:02)",
        "  │ ===== 146 passed, 4 skipped, 2 deselected in 300.00s =====",
    ])
    assert suite.pytest_counts(suite.ANSI.sub("", text)) == {
        "passed": 433, "failed": 20, "errors": 1, "skipped": 4, "deselected": 2}


def test_a_quiet_summary_without_its_rule_is_counted():
    assert suite.pytest_counts("....\n12 passed, 1 skipped in 3.40s\n") == {"passed": 12, "skipped": 1}


def test_output_without_a_summary_counts_nothing():
    assert suite.pytest_counts("Passed: 0 failure(s), 0 warning(s) in 252 files") == {}


def test_every_scenario_runs_in_exactly_one_tier_and_ubuntus_in_their_own():
    tiers = {tier: [job.name for job in suite.lab_jobs(tier)] for tier in ("lab", *suite.OWN_TIER)}
    scenarios = {path.parent.name for path in (suite.ROOT / "molecule").glob("*/molecule.yml")}
    everything = [name for names in tiers.values() for name in names]
    assert sorted(everything) == sorted({f"molecule-{name}" for name in scenarios} | {"lab"})
    assert tiers["ubuntu"] and all(name.endswith("-ubuntu2404") for name in tiers["ubuntu"])
    assert not [name for name in tiers["lab"] if "ubuntu" in name]


def test_an_unknown_tier_is_refused(capsys):
    assert suite.main(["ubuntu2404"]) == 2
    assert "use fast, lab or ubuntu" in capsys.readouterr().err
