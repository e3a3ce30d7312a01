"""The release flow's one description cannot drift: the stages tasks/main.yml runs, the role's
stage list (hook points) and docs/releases.md's list are the same, in the same order, and every
stage file runs its before_ and after_ hooks."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[3]
TASKS = ROOT / "roles" / "release" / "tasks"


def stage_of(task: dict) -> str | None:
    """The stage a task of main.yml runs: its name says 'Release | <Stage> (...)' and it includes <stage>.yml."""
    included = task.get("ansible.builtin.include_tasks")
    return Path(included).stem if included else None


def flow() -> list[str]:
    stages = []
    for task in yaml.safe_load((TASKS / "main.yml").read_text()):
        for inner in [task] + task.get("block", []) + task.get("rescue", []) + task.get("always", []):
            stage = stage_of(inner)
            if stage and stage not in stages:
                stages.append(stage)
    return stages


def role_stages() -> list[str]:
    return yaml.safe_load((ROOT / "roles" / "release" / "vars" / "main.yml").read_text())["__release_stages"]


def test_main_runs_the_role_stages_in_order_and_only_the_undo_besides():
    assert [stage for stage in flow() if stage != "undo"] == role_stages()
    assert "undo" in flow()


def test_the_docs_list_the_same_stages_in_the_same_order():
    docs = (ROOT / "docs" / "releases.md").read_text()
    marker = re.search(r"<!-- stages: ([a-z_ ]+) -->", docs)
    assert marker, "docs/releases.md lost its stage list marker"
    assert marker.group(1).split() == role_stages()
    listed = re.findall(r"^\s*\d+\. \*\*([a-z_]+)\*\*", docs[marker.end():], re.MULTILINE)
    assert listed[:len(role_stages())] == role_stages(), listed


def flat(tasks: list[dict]) -> list[dict]:
    return [inner for task in tasks for inner in ([task] if "block" not in task else flat(task["block"]))]


def test_every_stage_runs_its_hooks_first_and_last():
    for stage in role_stages():
        tasks = flat(yaml.safe_load((TASKS / f"{stage}.yml").read_text()))
        hooks = [task["vars"]["__release_hook"] for task in tasks
                 if task.get("ansible.builtin.include_tasks") == "hooks.yml"]
        assert hooks == [f"before_{stage}", f"after_{stage}"], (stage, hooks)
        assert tasks[-1].get("ansible.builtin.include_tasks") == "hooks.yml", stage


def test_main_fits_on_one_screen_and_passes_no_file_name_in_a_variable():
    text = (TASKS / "main.yml").read_text()
    assert len(text.splitlines()) <= 60
    for path in TASKS.glob("*.yml"):
        for task in yaml.safe_load(path.read_text()) or []:
            for inner in [task] + task.get("block", []) + task.get("rescue", []) + task.get("always", []):
                included = inner.get("ansible.builtin.include_tasks") or inner.get("ansible.builtin.import_tasks")
                # Only the operator's hook files are named by a variable (hooks.yml).
                if included and "{{" in str(included):
                    assert path.name == "hooks.yml", (path.name, included)
                assert "ansible.builtin.include_role" not in inner and "ansible.builtin.import_role" not in inner, path.name
