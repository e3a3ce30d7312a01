"""A deploy of a site on hosts that do not run it is a mistake (a --limit that missed): refused
before anything happens. The hosts here are local connections, and the run stops in preflight,
before any task that would change a host."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

from opspack.testing.config import tool_env

ROOT = Path(__file__).resolve().parents[3]


def test_a_deploy_where_no_host_runs_the_site_is_refused(tmp_path):
    local = {"ansible_connection": "local", "ansible_python_interpreter": sys.executable}
    (tmp_path / "hosts.yml").write_text(yaml.safe_dump({"all": {
        "children": {"web": {"hosts": {"a": local}}, "api": {"hosts": {"b": local}}},
        "vars": {"opspack_sites": [{"name": "api", "hosts": "api", "domains": ["api.example.com"],
                                     "app": {"module": "httpbin:app"}}]}}}))
    env = tool_env(ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"), ANSIBLE_NOCOLOR="1", OPSPACK_RECORDS_DIR=str(tmp_path / "records"))
    ran = subprocess.run([str(Path(sys.executable).parent / "ansible-playbook"), "-i", str(tmp_path / "hosts.yml"),
                          "opspack.platform.deploy", "-e", "release_site=api", "-e", "release_version=1.0.0",
                          "-e", f"release_source={tmp_path / 'nothing'}", "--limit", "a"],
                         capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
    out = ran.stdout + ran.stderr
    assert ran.returncode != 0 and "site api runs on none of a (opspack_sites[].hosts says where it runs" in out, out[-3000:]
    assert "Release | Take the deploy lock" not in out
