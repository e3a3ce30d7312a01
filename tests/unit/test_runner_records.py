"""The records callback under ansible-runner, as AWX runs content: a private_data_dir with the
callback enabled in env/envvars, a play that takes a real deploy lock and releases it with the
run's outcome (the opspack_event the callback records) and handles a canary secret under
no_log. The records land and the secret appears in none of them, nor in runner's artifacts."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import ansible_runner

ROOT = Path(__file__).resolve().parents[2]
CANARY = "lab-canary-runner-5d1e"

PLAY = """
- name: Take and release a deploy lock, as the release role does
  hosts: local
  gather_facts: false
  tasks:
    - name: Handle a secret
      ansible.builtin.set_fact:
        site_password: "{{ secret }}"
      no_log: true
    - name: Take the lock
      opspack.platform.deploy_lock:
        site: blog
        base_dir: "{{ base_dir }}"
        run_id: runner-run-1
        holder: awx@runner
        version: 1.0.0+0a1b2c3d4e5f
        reason: deploy
    - name: Release the lock
      opspack.platform.deploy_lock:
        site: blog
        base_dir: "{{ base_dir }}"
        run_id: runner-run-1
        state: released
        outcome:
          result: ok
"""


def test_ansible_runner_writes_the_same_records_and_no_secret(tmp_path):
    data = tmp_path / "private_data_dir"
    (data / "project").mkdir(parents=True)
    (data / "inventory").mkdir()
    (data / "env").mkdir()
    (data / "project" / "lock.yml").write_text(PLAY)
    # The module runs with the test's own Python (it has ansible's module_utils).
    (data / "inventory" / "hosts").write_text(
        f"[local]\nlocalhost ansible_connection=local ansible_python_interpreter={sys.executable}\n")
    (tmp_path / "srv" / "blog").mkdir(parents=True)
    records = tmp_path / "records"
    (data / "env" / "envvars").write_text(json.dumps({
        "ANSIBLE_CALLBACKS_ENABLED": "opspack.platform.records",
        "ANSIBLE_COLLECTIONS_PATH": str(ROOT / "collections"),
        "OPSPACK_RECORDS_DIR": str(records),
        "OPSPACK_ENVIRONMENT": "awx",
    }))
    (data / "env" / "extravars").write_text(json.dumps({"base_dir": str(tmp_path / "srv"), "secret": CANARY}))
    run = ansible_runner.run(private_data_dir=str(data), playbook="lock.yml", quiet=True)
    assert run.rc == 0, run.stdout.read()
    history = [json.loads(line) for line in (records / "history.jsonl").read_text().splitlines()]
    assert [(entry["site"], entry["environment"], entry["operation"], entry["result"], entry["release"])
            for entry in history] == [("blog", "awx", "deploy", "ok", "1.0.0+0a1b2c3d4e5f")]
    assert history[0]["version"] == "1.0.0" and isinstance(history[0]["duration_s"], float)
    assert "| blog | awx | localhost |" in (records / "loop-sites-matrix.md").read_text()
    for path in list(records.rglob("*")) + list((data / "artifacts").rglob("*")):
        if path.is_file():
            assert CANARY not in path.read_text(errors="replace"), f"the secret leaked into {path}"
