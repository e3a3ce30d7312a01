"""Run `ansible-test sanity` on the collection from a path ansible-test accepts.

ansible-test wants the collection at .../ansible_collections/opspack/platform and lists its
files with git. The repo root is the collection root but also holds the Python tooling and
the lab, so the collection content (what `ansible-galaxy collection build` would take) is
staged into a temporary ansible_collections tree with a git index of its own.

ansible-test keeps its virtual environments and its pip bootstrap script under ~/.ansible/test.
Two runs at once there rebuild each other's environments mid-use (and a venv whose pyvenv.cfg
vanished installs into the interpreter itself: the machine's pip changed). So ansible-test gets
a home of its own in opspack's cache (~/.cache/opspack/ansible-test/home, kept between runs, so
its environments are built once per machine, never in the user's ~/.ansible) and runs there one
at a time: a second run waits for the first under a lock.
"""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import ansible_test
import yaml

ROOT = Path(__file__).resolve().parents[2]
STATE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "opspack/ansible-test"
HOME = STATE / "home"


def collection_files() -> list[str]:
    ignored = yaml.safe_load((ROOT / "galaxy.yml").read_text())["build_ignore"]
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"],
                            cwd=ROOT, check=True, capture_output=True, text=True).stdout.splitlines()
    return [name for name in listed
            if (ROOT / name).is_file() and not any(part in ignored for part in Path(name).parts)
            and not name.endswith(tuple(pattern.lstrip("*") for pattern in ignored if pattern.startswith("*")))]


def install_pip_standin(home: Path) -> None:
    """ansible-test fetches a get-pip script from a host we cannot reach; give it ours."""
    source = (Path(ansible_test.__file__).parent / "_internal/python_requirements.py").read_text()
    version = re.search(r"pip='([0-9.]+)'", source).group(1)
    cache = home / ".ansible/test/cache" / f"get_pip_{version.replace('.', '_')}.py"
    cache.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(Path(__file__).with_name("get_pip_standin.py"), cache)


def sanity_environment() -> dict[str, str]:
    env = dict(os.environ, HOME=str(HOME))
    # pip's download cache is safe to share and saves the downloads on a fresh checkout.
    env.setdefault("PIP_CACHE_DIR", str(Path.home() / ".cache/pip"))
    return env


def main() -> int:
    HOME.mkdir(parents=True, exist_ok=True)
    with open(STATE / "lock", "w", encoding="utf-8") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"sanity: another sanity run holds {STATE / 'lock'}; waiting for it", file=sys.stderr)
            fcntl.flock(lock, fcntl.LOCK_EX)
        install_pip_standin(HOME)
        with tempfile.TemporaryDirectory(prefix="opspack-sanity-") as staging:
            target = Path(staging) / "ansible_collections/opspack/platform"
            for name in collection_files():
                (target / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(ROOT / name, target / name)
            subprocess.run(["git", "init", "-q"], cwd=target, check=True)
            subprocess.run(["git", "add", "-A"], cwd=target, check=True)
            python = f"{sys.version_info.major}.{sys.version_info.minor}"
            return subprocess.run(["ansible-test", "sanity", "--color", "no", "--python", python, *sys.argv[1:]],
                                  cwd=target, env=sanity_environment(), check=False).returncode


if __name__ == "__main__":
    sys.exit(main())
