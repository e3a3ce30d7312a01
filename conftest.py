"""Shared by every pytest run in this repository (unit, lab, Molecule's testinfra, benchmarks).

Tests run the tools of the environment whose Python runs them (ansible-playbook, molecule,
opspack), even when that environment's bin directory is not on PATH: `.venv/bin/python -m
pytest tests` behaves as `make test` does.
"""

import os

from opspack.testing.config import tool_env

os.environ["PATH"] = tool_env()["PATH"]
