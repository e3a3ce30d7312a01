"""One place names a target's versions: the target role's vars files. A PostgreSQL major, a
Debian or Ubuntu release, a pgBackRest version found anywhere else in the collection's code
(roles, plugins, playbooks) would go stale on the next target."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[3]
TARGET_VARS = ROOT / "roles" / "target" / "vars"
PATTERNS = {
    "a PostgreSQL major": re.compile(r"postgresql[-@/]1\d\b|PostgreSQL 1\d\b|postgresql_version[^\n]*['\"]1\d['\"]"),
    "a Debian or Ubuntu release": re.compile(r"\b(bookworm|trixie|noble|jammy|bullseye)\b|Debian 1\d\b|Ubuntu 2\d\.\d\d"),
    "a pgBackRest version": re.compile(r"pgbackrest[= ]2\.\d+|pgBackRest 2\.\d+|pgbackrest\w*version[^\n]*['\"]2\.\d+"),
}


def code_files():
    for folder in ("roles", "plugins", "playbooks"):
        for path in sorted((ROOT / folder).rglob("*")):
            if not path.is_file() or path.suffix not in (".yml", ".yaml", ".py", ".j2") or "__pycache__" in path.parts:
                continue
            if path.parent == TARGET_VARS and path.name != "main.yml":
                continue  # the one place: a vars file per target
            yield path


def test_no_version_of_a_target_outside_its_vars_file():
    found = []
    for path in code_files():
        text = path.read_text()
        for what, pattern in PATTERNS.items():
            for match in pattern.finditer(text):
                line = text[:match.start()].count("\n") + 1
                found.append(f"{path.relative_to(ROOT)}:{line}: {what} ({match.group(0)})")
    assert not found, "\n".join(found)


def test_every_target_vars_file_has_every_variable():
    files = sorted(TARGET_VARS.glob("*.yml"))
    targets = {path.stem: yaml.safe_load(path.read_text()) for path in files if path.stem != "main"}
    assert set(targets) == {"debian12", "debian13", "ubuntu2404"}
    keys = {name: set(values) for name, values in targets.items()}
    first = keys["debian12"]
    for name, variables in keys.items():
        assert variables == first, f"{name}: {sorted(variables ^ first)}"
        assert targets[name]["target_name"] == name
        assert set(targets[name]["target_packages"]) == set(targets["debian12"]["target_packages"]), name
    supported = yaml.safe_load((ROOT / "roles" / "target" / "defaults" / "main.yml").read_text())["target_supported"]
    # Every supported target has its vars file (a vars file may wait for its lab proof: Ubuntu).
    assert set(supported) <= set(targets)


def test_the_support_matrix_in_the_docs_is_what_the_vars_files_say():
    """docs/provision.md shows the targets side by side; each vars file's first line names its
    system and versions, and its variables the ones roles use: the three must agree."""
    matrix = (ROOT / "docs" / "provision.md").read_text().split("## Supported systems", 1)[1].split("\n## ", 1)[0]
    rows = {cells[0]: cells[1:] for cells in (
        [cell.strip() for cell in line.strip("|").split("|")] for line in matrix.splitlines()
        if line.startswith("| ") and not line.startswith("| target"))}
    for path in sorted(TARGET_VARS.glob("*.yml")):
        if path.stem == "main":
            continue
        values = yaml.safe_load(path.read_text())
        header = re.fullmatch(r"# (.+?): PostgreSQL (\S+), pgBackRest (\S+), Redis (\S+), nginx (\S+), OpenSSH (\S+), "
                              r"Python (\S+)\.", path.read_text().splitlines()[1])
        assert header, f"{path.name}: its first comment names the system and its versions"
        system, postgresql, pgbackrest, *others, python = header.groups()
        assert (postgresql, pgbackrest, python) == (values["target_postgresql_version"], values["target_pgbackrest_version"],
                                                    values["target_python_version"]), path.name
        assert rows.get(system) == [postgresql, pgbackrest, *others, python], f"docs/provision.md's row for {system}"
    assert len(rows) == len(list(TARGET_VARS.glob("*.yml"))) - 1
