"""Run `ansible-test sanity` on the collection from a path ansible-test accepts.

ansible-test wants the collection at .../ansible_collections/opspack/platform and lists its
files with git. The repo root is the collection root but also holds the Python tooling and
the lab, so the collection content (what `ansible-galaxy collection build` would take) is
staged into a temporary ansible_collections tree with a git index of its own.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import ansible_test
import yaml

ROOT = Path(__file__).resolve().parents[2]


def collection_files() -> list[str]:
    ignored = yaml.safe_load((ROOT / "galaxy.yml").read_text())["build_ignore"]
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"],
                            cwd=ROOT, check=True, capture_output=True, text=True).stdout.splitlines()
    return [name for name in listed
            if (ROOT / name).is_file() and not any(part in ignored for part in Path(name).parts)
            and not name.endswith(tuple(pattern.lstrip("*") for pattern in ignored if pattern.startswith("*")))]


def install_pip_standin() -> None:
    """ansible-test fetches a get-pip script from a host we cannot reach; give it ours."""
    source = (Path(ansible_test.__file__).parent / "_internal/python_requirements.py").read_text()
    version = re.search(r"pip='([0-9.]+)'", source).group(1)
    cache = Path.home() / ".ansible/test/cache" / f"get_pip_{version.replace('.', '_')}.py"
    cache.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(Path(__file__).with_name("get_pip_standin.py"), cache)


def main() -> int:
    install_pip_standin()
    with tempfile.TemporaryDirectory(prefix="opspack-sanity-") as staging:
        target = Path(staging) / "ansible_collections/opspack/platform"
        for name in collection_files():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, target / name)
        subprocess.run(["git", "init", "-q"], cwd=target, check=True)
        subprocess.run(["git", "add", "-A"], cwd=target, check=True)
        python = f"{sys.version_info.major}.{sys.version_info.minor}"
        return subprocess.run(["ansible-test", "sanity", "--color", "no", "--python", python, *sys.argv[1:]],
                              cwd=target, check=False).returncode


if __name__ == "__main__":
    sys.exit(main())
