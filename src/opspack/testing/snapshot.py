"""The provisioned-host snapshot: lab hosts converged once by opspack.platform.provision with the
lab scenarios' variables, committed as images (`opspack lab snapshot`), from which every scenario
that is not about provisioning starts in seconds (`opspack lab up --snapshot`).

The snapshot is keyed by a hash of everything that shapes a provisioned host: the roles (tasks,
templates, defaults, vars), the playbooks and plugins they run, the variables files, the base
image's recipe, the Ansible version and this builder's recipe. Change any of them and the key
changes, so the next scenario builds a new snapshot; an unchanged tree reuses the one it has.
Provisioning itself is never tested from a snapshot: the provision scenario starts fresh hosts.

    python -m opspack.testing.snapshot key [--os debian13]      # print the key of this tree
    python -m opspack.testing.snapshot ensure [--hosts N] [--os X]   # build if missing; print its directory

Each OS target (`opspack lab up --os`) has its own snapshot; the default is $OPSPACK_LAB_OS, else
the lab's default target. A snapshot holds as many hosts as the largest scenario started from it
declares (its platforms in molecule/*/molecule.yml): provisioning a host costs minutes of both
cores, so a target whose scenarios all run on one host gets a one-host snapshot.
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

from opspack import lab
from opspack.testing.config import OPERATOR, ROOT, SITE_VARS_FILES, operator_vars, tool_env
from opspack.testing.playbooks import command

BUILDER_VERSION = 1
# What shapes a provisioned host, relative to the repository root.
SHAPING = ("roles", "playbooks", "plugins", "meta", "galaxy.yml", "ansible.cfg")
# Plugins that run on the control node only and write nothing to a host (nor do *.md files).
NOT_SHAPING = ("plugins/callback",)
# The scenarios: where each one's hosts come from (OPSPACK_LAB_FROM) and their OS target
# (OPSPACK_LAB_OS), in its provisioner env or, for what it leaves out, Molecule's base config's.
SCENARIOS = ROOT / "molecule"
MOLECULE_BASE_CONFIG = ROOT / ".config" / "molecule" / "config.yml"
# Away from the demo lab (22000+), Molecule's scenarios (23000+), the lab tests (24000+) and the
# benches (26000+): five blocks, so that builds for different trees (two clones) run side by side.
BUILD_BASE_PORT = int(os.environ.get("OPSPACK_SNAPSHOT_BASE_PORT", "25900"))
BUILD_BLOCKS = 5
# Snapshots kept beside the newest (older ones are removed, images included, when one is built).
KEEP = 2
# A build that failed this recently is not tried again by the next scenario: it would fail the same
# way (the key is the same tree). Remove the .failed.log to try at once.
FAILED_BUILD_HOLD_S = 1800


def shaping_files(root: Path = ROOT) -> list[Path]:
    files: list[Path] = []
    for name in SHAPING:
        path = root / name
        candidates = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
        for candidate in candidates:
            relative = candidate.relative_to(root).as_posix()
            if ("__pycache__" in candidate.parts or relative.startswith(NOT_SHAPING)
                    or candidate.suffix in (".pyc", ".md")):
                continue
            files.append(candidate)
    return files


def os_target(name: str | None = None) -> str:
    """The OS target asked for: NAME, else $OPSPACK_LAB_OS, else the lab's default (checked)."""
    return lab.resolve_target(name or os.environ.get("OPSPACK_LAB_OS") or None).name


def size(target: str | None = None) -> int:
    """How many hosts the snapshot of an OS target holds: the platforms of the largest scenario
    started from it (at least one)."""
    target = os_target(target)
    base_env = ((yaml.safe_load(MOLECULE_BASE_CONFIG.read_text()) or {}).get("provisioner") or {}).get("env") or {}
    sizes = [1]
    for path in sorted(SCENARIOS.glob("*/molecule.yml")):
        config = yaml.safe_load(path.read_text()) or {}
        env = {**base_env, **((config.get("provisioner") or {}).get("env") or {})}
        if (env.get("OPSPACK_LAB_FROM") == "snapshot"
                and lab.resolve_target(env.get("OPSPACK_LAB_OS") or None).name == target):
            sizes.append(len(config.get("platforms") or []))
    return max(sizes)


def key(root: Path = ROOT, vars_files=SITE_VARS_FILES, target: str | None = None, hosts: int | None = None) -> str:
    digest = hashlib.sha256()
    recipe = {"builder": BUILDER_VERSION, "prepare": lab.SNAPSHOT_PREPARE, "base_image": lab.image_ref(os_target(target)),
              # The ansible package carries the collections the roles use; ansible-core runs them.
              "ansible": [importlib.metadata.version(name) for name in ("ansible", "ansible-core")],
              "hosts": hosts or size(target),
              "operator": OPERATOR}
    digest.update(json.dumps(recipe, sort_keys=True).encode())
    for path in [*shaping_files(root), *(Path(p) for p in vars_files)]:
        name = path.relative_to(root).as_posix() if path.is_relative_to(root) else str(path)
        digest.update(f"\0{name}\0".encode())
        digest.update(path.read_bytes())
    return "p" + digest.hexdigest()[:16]


def snapshots_dir() -> Path:
    return lab.cache_root() / "snapshots"


def usable(directory: Path, hosts: int) -> bool:
    try:
        lab.read_snapshot(directory, hosts)
    except lab.LabError:
        return False
    return True


def log(message: str) -> None:
    print(f"snapshot: {message}", file=sys.stderr, flush=True)


def free_base_port(hosts: int = 2) -> int:
    """The first of the build's port blocks (HOSTS hosts each) that nothing listens on."""
    block = lab.PORTS_PER_HOST * hosts
    for base in range(BUILD_BASE_PORT, BUILD_BASE_PORT + BUILD_BLOCKS * block, block):
        if not lab.taken_ports(port for index in range(1, hosts + 1) for port in lab.host_ports(base, index).all()):
            return base
    raise lab.LabError(f"no free ports for a snapshot build in {BUILD_BASE_PORT}-{BUILD_BASE_PORT + BUILD_BLOCKS * block - 1} "
                       "on 127.0.0.1: other builds are running; wait, or set OPSPACK_SNAPSHOT_BASE_PORT")


def build(snapshot_key: str, target: Path, os_name: str, hosts: int) -> None:
    """Provision fresh lab hosts with the lab scenarios' variables and commit them."""
    work = target.with_name(f"{target.name}.build")
    shutil.rmtree(work, ignore_errors=True)
    lab_dir = work / "lab"
    name = f"snap-{snapshot_key[:12]}"
    builder = lab.Lab(name, lab_dir, log)
    builder.down()
    started = time.monotonic()
    try:
        # Builds of two keys (two trees, or two OS targets of one tree) run side by side: the free
        # port block is chosen and taken under one lock, or both would choose the same.
        with open(snapshots_dir() / "ports.lock", "w", encoding="utf-8") as ports:
            fcntl.flock(ports, fcntl.LOCK_EX)
            builder.up(hosts, free_base_port(hosts), os_target=os_name)
        operator = work / "operator.yml"
        operator.write_text(json.dumps(operator_vars(builder.key_file.with_suffix(".pub"))))
        args = command(builder.inventory, "provision", "-e", f"@{operator}")
        log(f"provisioning {hosts} fresh host(s) for snapshot {snapshot_key} (once per change of the roles)")
        ran = subprocess.run(args, capture_output=True, text=True, check=False, cwd=ROOT,
                             env=tool_env(ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"), ANSIBLE_NOCOLOR="1"))
        if ran.returncode != 0:
            failed_log(target).write_text(ran.stdout + ran.stderr)
            raise lab.LabError(f"provisioning the snapshot hosts failed (exit {ran.returncode}): see {failed_log(target)}")
        if key(target=os_name, hosts=hosts) != snapshot_key:
            raise lab.LabError("the tree changed while its snapshot was built (the key is no longer "
                               f"{snapshot_key}): nothing was kept; run again")
        builder.snapshot(target, snapshot_key, {"lab-ca": lab_dir / "lab-ca"})
        log(f"snapshot {snapshot_key} taken in {time.monotonic() - started:.0f} s: {target}")
    finally:
        builder.down()
        shutil.rmtree(work, ignore_errors=True)


def failed_log(target: Path) -> Path:
    return target.with_name(f"{target.name}.failed.log")


def prune(current: str) -> None:
    """Remove all but the newest KEEP other snapshots (their images and directories), never one
    whose lock another run holds (being built or about to be used)."""
    others = sorted((path for path in snapshots_dir().glob("p*") if path.is_dir() and path.name != current
                     and (path / lab.SNAPSHOT_MANIFEST).exists()),
                    key=lambda path: (path / lab.SNAPSHOT_MANIFEST).stat().st_mtime, reverse=True)
    for old in others[KEEP:]:
        with open(snapshots_dir() / f"{old.name}.lock", "w", encoding="utf-8") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue
            images = json.loads((old / lab.SNAPSHOT_MANIFEST).read_text()).get("images", {}).values()
            lab.run(["docker", "image", "rm", "--force", *images], check=False)
            shutil.rmtree(old, ignore_errors=True)
            log(f"removed old snapshot {old.name}")


def ensure(hosts: int = 1, os_name: str | None = None) -> Path:
    """The directory of this tree's snapshot for an OS target with at least HOSTS hosts, built first
    if missing. Concurrent callers (two scenarios at once) wait for one build instead of running two."""
    os_name = os_target(os_name)
    # Every scenario of a target asks for the same snapshot (its size), whatever its own host count.
    hosts = max(hosts, size(os_name))
    snapshot_key = key(target=os_name, hosts=hosts)
    target = snapshots_dir() / snapshot_key
    snapshots_dir().mkdir(parents=True, exist_ok=True)
    lab.ensure_engine(log, lab.cache_root())
    with open(snapshots_dir() / f"{snapshot_key}.lock", "w", encoding="utf-8") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log(f"another run is building snapshot {snapshot_key}; waiting for it")
            fcntl.flock(lock, fcntl.LOCK_EX)
        if usable(target, hosts):
            return target
        failed = failed_log(target)
        if failed.exists() and time.time() - failed.stat().st_mtime < FAILED_BUILD_HOLD_S:
            raise lab.LabError(f"the snapshot build of this tree failed minutes ago: see {failed} "
                               "(fix the cause, or remove that file to try again)")
        failed.unlink(missing_ok=True)
        build(snapshot_key, target, os_name, hosts)
        prune(snapshot_key)
        return target


def start_lab(name: str, lab_dir: Path, hosts: int, base_port: int, os_name: str | None = None) -> lab.Lab:
    """A lab of provisioned hosts from this tree's snapshot, with the snapshot's control-node
    files (the lab CA) in its directory, the lab's state directory, where the roles look for them."""
    directory = ensure(hosts, os_name)
    provisioned = lab.Lab(name, lab_dir, log)
    provisioned.up(hosts, base_port, directory)
    shutil.copytree(directory / "control", lab_dir, dirs_exist_ok=True, symlinks=True)
    return provisioned


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m opspack.testing.snapshot", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    key_parser = commands.add_parser("key", help="print the snapshot key of this tree")
    ensure_parser = commands.add_parser("ensure", help="build the snapshot if missing; print its directory")
    ensure_parser.add_argument("--hosts", type=int, default=1,
                               help="at least this many hosts (default: as many as its largest scenario has)")
    for each in (key_parser, ensure_parser):
        each.add_argument("--os", dest="os_name", metavar="TARGET", help="the OS target (default: $OPSPACK_LAB_OS, else the lab's)")
    args = parser.parse_args(argv)
    try:
        if args.command == "key":
            print(key(target=args.os_name))
        else:
            print(ensure(args.hosts, args.os_name))
        return 0
    except lab.LabError as error:
        print(f"snapshot: error: {error}", file=sys.stderr)
        return error.exit_code


if __name__ == "__main__":
    sys.exit(main())
