"""The collection's needs on the control node are found by ansible-builder (introspect), and the
execution-environment definition makes a build context (create; no container engine needed)."""

import shutil
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def test_introspect_lists_the_controllers_python_and_system_needs():
    ran = subprocess.run([str(BIN / "ansible-builder"), "introspect", "--sanitize", str(ROOT / "collections")],
                         capture_output=True, text=True, check=True)
    found = yaml.safe_load(ran.stdout.split("\n", 1)[1])
    assert any(line.startswith("cryptography") and "opspack.platform" in line for line in found["python"]), found
    for package in ("git", "tar", "openssh-client"):
        assert any(line.startswith(package + " ") and "opspack.platform" in line for line in found["system"]), (package, found)


def test_ansible_builder_creates_the_build_context(tmp_path):
    build = tmp_path / "build"
    subprocess.run([str(BIN / "ansible-galaxy"), "collection", "build", "--output-path", str(build), str(ROOT)],
                   check=True, capture_output=True)
    definition = tmp_path / "ee"
    shutil.copytree(ROOT / "execution-environment", definition)
    (tarball,) = build.glob("opspack-platform-*.tar.gz")
    shutil.copy(tarball, definition / "opspack-platform.tar.gz")
    context = tmp_path / "context"
    ran = subprocess.run([str(BIN / "ansible-builder"), "create", "-f", str(definition / "execution-environment.yml"),
                          "-c", str(context)], capture_output=True, text=True)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    containerfile = next(context.glob("[CD]*file")).read_text()
    assert "ansible-galaxy" in containerfile or "install-from-bindep" in containerfile
    assert (context / "_build" / "collections" / "opspack-platform.tar.gz").is_file()
    requirements = yaml.safe_load((context / "_build" / "requirements.yml").read_text())
    assert requirements["collections"][0]["name"].endswith("opspack-platform.tar.gz")
