"""`ansible-galaxy collection build` must yield collection content only, and the installed
collection must work outside this repository: its example inventory passes the site check with
nothing but the installed tarball on the collection path."""

import os
import posixpath
import re
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
NOT_CONTENT = (".venv", ".cache", ".git", ".ci", "collections", "molecule", "src", "tests", "execution-environment",
               ".pytest_cache", "records", "__pycache__")
BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def tarball(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("build")
    subprocess.run([str(BIN / "ansible-galaxy"), "collection", "build", "--output-path", str(out), str(ROOT)],
                   check=True, capture_output=True, text=True)
    (built,) = out.glob("opspack-platform-*.tar.gz")
    return built


def test_tarball_holds_collection_content_only(tarball):
    with tarfile.open(tarball) as archive:
        names = archive.getnames()
        contents = b"".join(archive.extractfile(member).read() for member in archive.getmembers() if member.isfile())
    top_level = {name.split("/")[0] for name in names}
    assert not top_level & set(NOT_CONTENT), sorted(top_level & set(NOT_CONTENT))
    assert not [name for name in names if name.endswith((".pyc", "id_ed25519", "id_ed25519.pub", "known_hosts"))]
    assert not [name for name in names if name.startswith(("inventories/lab", "changelogs/fragments"))]
    assert b"PRIVATE KEY" not in contents and b"lab-canary" not in contents
    for expected in ("MANIFEST.json", "FILES.json", "LICENSE", "meta/runtime.yml", "meta/execution-environment.yml",
                     "requirements.txt", "bindep.txt", "roles/preflight/meta/argument_specs.yml", "playbooks/preflight.yml",
                     "README.md", "docs/sites.md", "inventories/example/hosts.yml",
                     "inventories/example/group_vars/all/vault.yml.example", "changelogs/config.yaml"):
        assert expected in names, expected


def test_the_shipped_docs_link_only_to_what_ships(tarball):
    """A user of the installed collection can follow every link of its docs; the repository's
    development docs (the lab, the test suite) stay out, and only README, the repository's front
    page too, may point at them."""
    with tarfile.open(tarball) as archive:
        names = set(archive.getnames())
        docs = {member.name: archive.extractfile(member).read().decode() for member in archive.getmembers()
                if member.isfile() and member.name.endswith(".md")}
    assert not [name for name in names if name.startswith("docs/development")]
    assert {"docs/state.md", "docs/sites.md", "docs/awx.md"} <= names
    broken = []
    for name, text in docs.items():
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text):
            if re.match(r"[a-z]+:", target):
                continue
            path = posixpath.normpath(posixpath.join(posixpath.dirname(name), target))
            if path.startswith("docs/development/") and name == "README.md":
                continue
            if path not in names and not any(other.startswith(path + "/") for other in names):
                broken.append(f"{name} -> {target}")
    assert not broken, broken


def test_the_installed_collection_checks_its_example_inventory_outside_the_repository(tarball, tmp_path):
    installed = tmp_path / "collections"
    # An operator's project: no ansible.cfg of ours, only the installed collection (and the ones
    # the ansible package bundles) on the path.
    env = {key: value for key, value in os.environ.items() if not key.startswith("ANSIBLE_")}
    env.update(ANSIBLE_COLLECTIONS_PATH=str(installed), ANSIBLE_NOCOLOR="1", PATH=os.pathsep.join([str(BIN), env.get("PATH", "")]))
    subprocess.run([str(BIN / "ansible-galaxy"), "collection", "install", "--offline", "--no-deps", "--force",
                    "-p", str(installed), str(tarball)], check=True, capture_output=True, text=True, cwd=tmp_path, env=env)
    collection = installed / "ansible_collections" / "opspack" / "platform"
    inventory = tmp_path / "inventory"
    shutil.copytree(collection / "inventories" / "example", inventory)
    shutil.copy(inventory / "group_vars" / "all" / "vault.yml.example", inventory / "group_vars" / "all" / "vault.yml")
    ran = subprocess.run([str(BIN / "ansible"), "-i", str(inventory), "all", "-m", "ansible.builtin.debug",
                          "-a", "msg={{ lookup('opspack.platform.sites', 'check') }}"],
                         capture_output=True, text=True, cwd=tmp_path, env=env)
    assert ran.returncode == 0 and ran.stdout.count("SUCCESS") == 3, (ran.stdout + ran.stderr)[-3000:]
    assert "api: api.example.com -> 127.0.0.1:" in ran.stdout
    listed = subprocess.run([str(BIN / "ansible-playbook"), "-i", str(inventory), "opspack.platform.deploy", "--list-hosts"],
                            capture_output=True, text=True, cwd=tmp_path, env=env)
    assert listed.returncode == 0 and "web-1" in listed.stdout, (listed.stdout + listed.stderr)[-3000:]
