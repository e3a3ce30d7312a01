"""Shared by every pytest run in this repository (unit, lab, Molecule's testinfra, benchmarks).

Tests run the tools of the environment whose Python runs them (ansible-playbook, molecule,
opspack), even when that environment's bin directory is not on PATH: `.venv/bin/python -m
pytest tests` behaves as `make test` does.
"""

import os
import sys
from pathlib import Path

_ENV_BIN = str(Path(sys.executable).parent)
if os.environ.get("PATH", "").split(os.pathsep)[0] != _ENV_BIN:
    os.environ["PATH"] = os.pathsep.join([_ENV_BIN, os.environ.get("PATH", os.defpath)])
