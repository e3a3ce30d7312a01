"""Run pytest on a Molecule scenario whose hosts are up (after `molecule create` and `converge`),
with the environment Molecule's verify step gives its testinfra tests, so one test runs alone:

    python tests/scenario.py release-lifecycle molecule/release-lifecycle/tests/test_deploy.py::test_x
    python tests/scenario.py backups -k drill        # any pytest arguments after the scenario

Without a test path among the arguments it runs the scenario's tests/ directory.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from opspack.testing.config import tool_env

ROOT = Path(__file__).resolve().parents[1]


def ephemeral_directory(scenario: str) -> Path:
    """Where Molecule keeps a scenario's state: <ansible cache>/tmp/molecule.<checksum>.<scenario>,
    the cache being the venv's, the project's or ~/.ansible (ansible-compat's choice)."""
    from molecule.text import checksum

    name = f"molecule.{checksum(ROOT.name, 4)}.{scenario.replace('/', '--')}"
    caches = [Path(os.environ["VIRTUAL_ENV"]) / ".ansible"] if "VIRTUAL_ENV" in os.environ else []
    caches += [ROOT / ".ansible", Path(os.environ.get("ANSIBLE_HOME", "~/.ansible")).expanduser()]
    candidates = [cache / "tmp" / name for cache in caches]
    return next((path for path in candidates if (path / "inventory").exists()), candidates[-1])


def main(argv: list[str]) -> int:
    if not argv or argv[0].startswith("-"):
        print(__doc__, file=sys.stderr)
        return 2
    scenario, args = argv[0], argv[1:]
    scenario_dir = ROOT / "molecule" / scenario
    ephemeral = ephemeral_directory(scenario)
    inventory = ephemeral / "inventory" / "ansible_inventory.yml"
    if not (scenario_dir / "molecule.yml").exists():
        print(f"scenario: no scenario {scenario!r} under molecule/", file=sys.stderr)
        return 2
    if not inventory.exists():
        print(f"scenario: {scenario} has no hosts up ({inventory} missing): run 'molecule create -s {scenario}' "
              f"and 'molecule converge -s {scenario}' first", file=sys.stderr)
        return 2
    os.environ.update({
        "PATH": tool_env()["PATH"],
        "MOLECULE_PROJECT_DIRECTORY": str(ROOT),
        "MOLECULE_SCENARIO_NAME": scenario,
        "MOLECULE_SCENARIO_DIRECTORY": str(scenario_dir),
        "MOLECULE_EPHEMERAL_DIRECTORY": str(ephemeral),
        "MOLECULE_INVENTORY_FILE": str(inventory),
        "ANSIBLE_CONFIG": str(ephemeral / "ansible.cfg"),
        # The verifier env of .config/molecule/config.yml.
        "OPSPACK_SCENARIO_DIR": str(scenario_dir),
        "OPSPACK_TEST_LAB_CA": str(ephemeral / "lab-ca"),
    })
    import pytest  # after the environment is set: the scenario's helpers read it at import

    # Without a test file or directory among the arguments (only options such as -k), the
    # scenario's tests/ is what runs.
    if not any(Path(arg.split("::")[0]).exists() for arg in args if not arg.startswith("-")):
        args.append(str(scenario_dir / "tests"))
    return pytest.main(["--hosts=all", f"--ansible-inventory={inventory}", "--connection=ansible", "-p", "no:cacheprovider",
                        *args])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
