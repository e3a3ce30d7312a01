"""The release-safety scenario's tests share one host. `make soak` sets OPSPACK_SOAK=1 to
run only the long state sequence (the other tests are deselected, and the run says so)."""

from __future__ import annotations

import os

SEQUENCE_FILE = "test_release_sequence.py"


def pytest_collection_modifyitems(config, items):
    if os.environ.get("OPSPACK_SOAK") != "1":
        return
    kept = [item for item in items if item.path.name == SEQUENCE_FILE]
    dropped = [item for item in items if item.path.name != SEQUENCE_FILE]
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept
        print(f"soak: {len(dropped)} other test(s) of the scenario deselected; running the state sequence only")
