"""Run a module the way a host does: a separate Python process reading ANSIBLE_MODULE_ARGS."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

COLLECTIONS = Path(__file__).resolve().parents[4] / "collections"


@pytest.fixture(name="run_module")
def fixture_run_module(tmp_path_factory):
    args_dir = tmp_path_factory.mktemp("module-args")

    def run(name: str, check_mode: bool = False, **args) -> dict:
        if check_mode:
            args["_ansible_check_mode"] = True
        args_file = args_dir / f"{name}-args.json"
        args_file.write_text(json.dumps({"ANSIBLE_MODULE_ARGS": args}))
        env = dict(os.environ, PYTHONPATH=str(COLLECTIONS))
        out = subprocess.run([sys.executable, "-m", f"ansible_collections.opspack.platform.plugins.modules.{name}",
                              str(args_file)], capture_output=True, text=True, env=env, check=False).stdout
        return json.loads(out)
    return run
