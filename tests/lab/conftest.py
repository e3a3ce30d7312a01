"""Lab tests run against a real Docker engine and real lab hosts. They never skip: when the
engine cannot be had, every test here fails with the reason."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from opspack import lab

ROOT = Path(__file__).resolve().parents[2]
# Away from the demo lab (22000+) and Molecule's (23000+), so all three can run side by side.
BASE_PORT = int(os.environ.get("OPSPACK_TEST_BASE_PORT", "24000"))


@pytest.fixture(scope="session")
def engine():
    try:
        lab.ensure_engine(lambda message: print(f"lab tests: {message}", file=sys.stderr), lab.cache_root())
    except lab.LabError as error:
        pytest.fail(f"the lab cannot start, so the lab tests cannot run: {error}", pytrace=False)


def opspack(*args, env=None, check=False):
    return subprocess.run([sys.executable, "-m", "opspack.cli", *args], capture_output=True, text=True,
                          env=env, check=check, cwd=ROOT)


def containers_of(name: str) -> list[str]:
    listed = subprocess.run(["docker", "ps", "--all", "--filter", f"label={lab.LAB_LABEL}={name}", "--format", "{{.Names}}"],
                            capture_output=True, text=True, check=True)
    return listed.stdout.split()


@pytest.fixture
def lab_dir(tmp_path):
    return tmp_path / "lab"


@pytest.fixture
def lab_name(request, engine):
    """A lab name of this test's own; whatever it started is removed afterwards."""
    name = "pytest-" + request.node.name.replace("_", "-")[5:25].strip("-")
    yield name
    leftovers = containers_of(name)
    if leftovers:
        subprocess.run(["docker", "rm", "--force", *leftovers], check=False, capture_output=True)


def read_state(lab_dir: Path) -> dict:
    return json.loads((lab_dir / "lab.json").read_text())
