"""The opspack lab: local Debian hosts that look like freshly handed-over cloud VPSes.

Each host is a container running systemd and sshd, reached over SSH on a 127.0.0.1 port
with a key generated for the lab, exactly as a real VPS is reached. Operators use it to
rehearse a runbook; the test suite uses it to prove every capability end to end. A lab runs
one OS target (TARGETS, `opspack lab up --os`): Debian 12, Debian 13 or Ubuntu 24.04.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Callable, Iterable

# What a fresh cloud VPS has: an init system, sshd, Python for Ansible, sudo. Nothing else.
PACKAGES = (
    "systemd",
    "systemd-sysv",
    "dbus",
    "openssh-server",
    "python3",
    "sudo",
    "iproute2",
    "ca-certificates",
)
# Lab-only: user namespaces cannot be set up inside these containers, so units with
# PrivateUsers=yes (Debian's redis-server) would fail with 217/USER. Never on a real server.
LAB_SERVICE_DROPIN = "[Service]\nPrivateUsers=no\n"
# Host keys are made on each host's first boot, so no two lab hosts share one; only then, as a
# VPS provider's first boot does: a later start must not bring back key types the access role deleted.
SSH_HOSTKEY_DROPIN = (
    "[Service]\nExecStartPre=\n"
    "ExecStartPre=/bin/sh -c 'ls /etc/ssh/ssh_host_*_key >/dev/null 2>&1 || exec /usr/bin/ssh-keygen -A'\n"
    "ExecStartPre=/usr/sbin/sshd -t\n"
)
# Lab-only, Debian 13 and Ubuntu 24.04: systemd 255 and later keep CAP_SYS_ADMIN across the switch
# to User= so that it can load a unit's seccomp filters (LockPersonality=, ProtectKernel*=, SystemCallArchitectures=,
# SystemCallFilter=...) after it, and these containers have no CAP_SYS_ADMIN, so such units fail
# with 217/USER "Failed to keep CAP_SYS_ADMIN" (an open upstream issue; a real VM is not affected).
# systemd skips that path when the unit's filter does not allow capset: it then loads the filters
# under NoNewPrivileges, as systemd before 255 did. Given to every service (transient ones too),
# since the image cannot know the units roles will install. No per-call errno (`~capset:EPERM`):
# in a unit with an allow-list (redis-server's @system-service) that keeps capset in the list as
# "fails with EPERM", and systemd still takes the failing path; the errno comes from
# SystemCallErrorNumber=EPERM instead, so a call a unit's filter forbids fails with EPERM rather
# than killing the process. Never on a real server.
SECCOMP_DROPIN = (
    "# opspack lab only, never on a real server. systemd 255+ in a container without CAP_SYS_ADMIN fails\n"
    "# units that combine User= with seccomp hardening (217/USER); a filter that does not allow capset\n"
    "# makes it load their filters under NoNewPrivileges instead.\n"
    "[Service]\nSystemCallFilter=~capset\nSystemCallErrorNumber=EPERM\n"
)
# ...except where it would be felt: any seccomp filter implies NoNewPrivileges in a container
# without CAP_SYS_ADMIN, and under NoNewPrivileges no process of an SSH login or a cron job could
# gain privileges with sudo (or any setuid program); Ubuntu's dbus-daemon stops when the capset
# with which it drops its capabilities fails. A drop-in of the same name in a unit's own
# directory replaces the global one for that unit.
SECCOMP_OPT_OUT = "# opspack lab only: this unit keeps no lab seccomp filter, so that sudo works under it\n[Service]\n"
SECCOMP_DROPIN_NAME = "20-lab-seccomp.conf"
SECCOMP_DROPINS = (
    (f"etc/systemd/system/service.d/{SECCOMP_DROPIN_NAME}", SECCOMP_DROPIN),
    *((f"etc/systemd/system/{unit}.d/{SECCOMP_DROPIN_NAME}", SECCOMP_OPT_OUT)
      for unit in ("ssh.service", "cron.service", "dbus.service")),
)

# Lab-only: a 64 MiB tmpfs on every lab host (molecule/shared/vars/sites.yml adds it to the
# health checks' disks), for tests that fill a disk to its threshold.
LAB_DATA_DISK = "/mnt/lab-data"


@dataclasses.dataclass(frozen=True)
class Target:
    """An OS a lab host can run: what debootstrap installs and what is lab-only about it."""

    name: str           # the --os value
    distribution: str   # as Ansible reports it (ansible_distribution), for messages
    version: str        # ansible_distribution_major_version
    suite: str          # the archive suite debootstrap installs
    # Extra lab-only files of the image: (path in the image, content).
    dropins: tuple[tuple[str, str], ...] = ()
    # Whose archive `suite` is in: "debian" (the mirror is read from the machine's apt
    # configuration) or "ubuntu" (ARCHIVES: a setting, else debootstrap's default for the suite).
    archive: str = "debian"
    # The archive components its hosts' apt sources name.
    components: tuple[str, ...] = ("main",)

    @property
    def label(self) -> str:
        return f"{self.distribution} {self.version} {self.suite}"


TARGETS: dict[str, Target] = {target.name: target for target in (
    Target("debian12", "Debian", "12", "bookworm"),
    Target("debian13", "Debian", "13", "trixie", dropins=SECCOMP_DROPINS),
    # Built with Debian's current debootstrap and Debian's copy of the Ubuntu keyring (BootstrapTools):
    # Debian 12's debootstrap has no noble script and Debian 12 packages no Ubuntu keyring. Its sshd is
    # socket-activated, as on an Ubuntu VPS: Lab._wait_ready connects before it reads the host key.
    # Ubuntu packages the server software in universe.
    Target("ubuntu2404", "Ubuntu", "24.04", "noble", archive="ubuntu", components=("main", "universe"),
           dropins=SECCOMP_DROPINS),
)}
# What a new VPS gets today.
DEFAULT_TARGET = "debian13"
# Snapshots and lab.json files written before there were targets: all were Debian 12.
LEGACY_TARGET = "debian12"
# The Debian suite names a machine's own apt configuration may use; the lab's hosts get the
# machine's sources with that name changed to their target's suite.
DEBIAN_SUITES = ("bullseye", "bookworm", "trixie", "forky", "oldstable", "stable", "testing")
MIRROR_ENV = "OPSPACK_LAB_MIRROR"


@dataclasses.dataclass(frozen=True)
class Archive:
    """Where a target's packages come from, and how the lab finds a mirror of it."""

    mirror_env: str   # the setting naming a mirror (--mirror overrides it)
    keyring: str      # the keyring its hosts' apt sources are signed by, as installed in the image
    # Where a mirror comes from when no setting names one, for messages and docs.
    default: str
    # The pockets a written sources file names beside the suite itself.
    pockets: tuple[str, ...] = ("updates",)
    # Debian packages (downloaded, never installed) whose debootstrap and keyring build this
    # archive's suites; none: this machine's debootstrap does, and the mirror comes from its apt
    # configuration when no setting names one.
    bootstrap_tools: tuple[str, ...] = ()


ARCHIVES = {
    "debian": Archive(MIRROR_ENV, "/usr/share/keyrings/debian-archive-keyring.gpg",
                      "the Debian mirror in this machine's /etc/apt sources"),
    # This machine's apt configuration names no Ubuntu mirror; none is written into the repo either.
    # The Ubuntu archive is not among the registries these machines are promised: a build that
    # cannot reach it fails naming the setting (never a silent skip).
    # Ubuntu's archive carries its security pocket beside the others. Debian 12's debootstrap has no
    # script for today's Ubuntu suites and Debian 12 packages no Ubuntu keyring: the newest Debian
    # target's debootstrap and ubuntu-keyring build them on any Debian machine.
    "ubuntu": Archive("OPSPACK_LAB_UBUNTU_MIRROR", "/usr/share/keyrings/ubuntu-archive-keyring.gpg",
                      "debootstrap's default mirror for the suite", pockets=("updates", "security"),
                      bootstrap_tools=("debootstrap", "ubuntu-keyring")),
}
# The Debian suite whose packages are downloaded as an archive's bootstrap_tools, from the machine's
# Debian mirror, and unpacked into the cache.
BOOTSTRAP_TOOLS_SUITE = max((target for target in TARGETS.values() if target.archive == "debian"),
                            key=lambda target: int(target.version)).suite
RECIPE_VERSION = 1
IMAGE_REPOSITORY = "opspack/lab-vps"
# Lab hosts committed after a converge (`opspack lab snapshot`): later labs start from them in
# seconds. One image per host, since a host's name shapes what was provisioned on it.
SNAPSHOT_REPOSITORY = "opspack/lab-snapshot"
SNAPSHOT_MANIFEST = "snapshot.json"
# The host key files a snapshot's host had (the access role keeps only some types): the base image's
# `ssh-keygen -A` makes every type at first boot, and the lab deletes those the snapshot did not have.
SNAPSHOT_HOST_KEYS = "/etc/ssh/lab-snapshot-host-keys"
KEEP_SNAPSHOT_HOST_KEYS = (
    f"if [ -f {SNAPSHOT_HOST_KEYS} ]; then for key in /etc/ssh/ssh_host_*_key; do "
    f"grep -qxF \"$key\" {SNAPSHOT_HOST_KEYS} || rm -f \"$key\" \"$key.pub\"; done; fi"
)
# Run in each host before it is committed: what must differ between two hosts started from one
# snapshot is removed, and made again at their first boot, as on the base image (sshd's
# `ssh-keygen -A` drop-in, systemd's machine-id). Apt's package cache is not state. The timers'
# stamps go too: a persistent timer whose stamp predates a missed run would fire at first boot.
SNAPSHOT_PREPARE = (
    f"set -e; ls /etc/ssh/ssh_host_*_key > {SNAPSHOT_HOST_KEYS}; rm -f /etc/ssh/ssh_host_*; : > /etc/machine-id; rm -f /var/lib/systemd/timers/stamp-*; "
    "if [ -f /var/lib/dbus/machine-id ] && [ ! -L /var/lib/dbus/machine-id ]; then rm -f /var/lib/dbus/machine-id; fi; "
    "rm -rf /var/log/journal/*; apt-get clean"
)
LAB_LABEL = "io.opspack.lab"
HOST_LABEL = "io.opspack.lab.host"
# Each host gets a block of ports on 127.0.0.1: SSH, HTTP and HTTPS.
PORTS_PER_HOST = 10
DEFAULT_BASE_PORT = 22000
MAX_HOSTS = 20
BOOT_TIMEOUT = 90.0
ENGINE_TIMEOUT = 60.0
# Molecule's labs are mol-<scenario> (mol-release-lifecycle-ubuntu2404: 32 characters).
NAME_PATTERN = re.compile(r"^[a-z][a-z0-9-]{0,47}$")

Log = Callable[[str], None]


class LabError(Exception):
    """A problem the operator can act on; the message is one line that says what to do."""

    def __init__(self, message: str, exit_code: int = 1):
        super().__init__(message)
        self.exit_code = exit_code


@dataclasses.dataclass(frozen=True)
class HostPorts:
    ssh: int
    http: int
    https: int

    def all(self) -> tuple[int, int, int]:
        return (self.ssh, self.http, self.https)


def resolve_target(name: str | None) -> Target:
    """The target called `name` (None: the default); an unknown name is refused in one line."""
    name = DEFAULT_TARGET if name is None else name
    if name not in TARGETS:
        raise LabError(f"--os {name!r} is not a lab target: choose one of {', '.join(TARGETS)}", exit_code=2)
    return TARGETS[name]


def recipe_hash(target: str = DEFAULT_TARGET) -> str:
    """Hash of everything that goes into a target's image: a new recipe means a new image tag."""
    chosen = resolve_target(target)
    recipe = json.dumps(
        [RECIPE_VERSION, chosen.name, chosen.archive, chosen.suite, chosen.components, PACKAGES,
         LAB_SERVICE_DROPIN, SSH_HOSTKEY_DROPIN, chosen.dropins],
        sort_keys=True,
    )
    return hashlib.sha256(recipe.encode()).hexdigest()[:12]


def image_ref(target: str = DEFAULT_TARGET) -> str:
    return f"{IMAGE_REPOSITORY}:{target}-{recipe_hash(target)}"


def host_names(count: int) -> list[str]:
    return [f"vps{index}" for index in range(1, count + 1)]


def host_ports(base_port: int, index: int) -> HostPorts:
    """Ports of the index-th host (1-based)."""
    block = base_port + PORTS_PER_HOST * (index - 1)
    return HostPorts(ssh=block, http=block + 1, https=block + 2)


def validate_request(name: str, hosts: int, base_port: int) -> None:
    if not NAME_PATTERN.match(name):
        raise LabError(
            f"lab name {name!r} is not valid: use 1-48 lowercase letters, digits or '-', starting with a letter",
            exit_code=2,
        )
    if not 1 <= hosts <= MAX_HOSTS:
        raise LabError(f"--hosts must be between 1 and {MAX_HOSTS} (got {hosts})", exit_code=2)
    last_port = host_ports(base_port, hosts).https
    if base_port < 1024 or last_port > 65535:
        raise LabError(
            f"--base-port {base_port} gives ports {base_port}-{last_port}: choose a base port so that all of them lie in 1024-65535",
            exit_code=2,
        )


def port_in_use(port: int, address: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        # Connections left in TIME_WAIT by a lab just taken down do not make a port busy;
        # with SO_REUSEADDR only a real listener does.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((address, port))
        except OSError:
            return True
    return False


def taken_ports(ports: Iterable[int], in_use: Callable[[int], bool] = port_in_use) -> list[int]:
    return [port for port in ports if in_use(port)]


def _deb822_stanzas(text: str) -> Iterable[dict[str, list[str]]]:
    for stanza in re.split(r"\n\s*\n", text):
        fields = {}
        for line in stanza.splitlines():
            if line.startswith("#") or ":" not in line:
                continue
            key, value = line.split(":", 1)
            fields[key.strip().lower()] = value.split()
        yield fields


def _one_line_entries(text: str) -> Iterable[list[str]]:
    for line in text.splitlines():
        # "deb [options] URI SUITE COMPONENTS...": drop the options before reading fields.
        parts = re.sub(r"\[[^]]*\]", " ", line).split()
        if len(parts) >= 3 and parts[0] == "deb":
            yield parts


def find_apt_sources(etc_apt: Path, suite: str) -> tuple[str, Path, str]:
    """The Debian mirror this machine uses, the file that names it, and the suite it names there.

    A file naming `suite` itself wins; else the first one naming any Debian suite (DEBIAN_SUITES),
    whose suite names the caller changes (rewrite_suites). The lab image is bootstrapped from that
    mirror and gets a copy of that file, so apt inside the hosts reaches the same mirror; no
    mirror name is ever written into the repo.
    """
    found: list[tuple[str, Path, str]] = []
    for sources in sorted((etc_apt / "sources.list.d").glob("*.sources")):
        for fields in _deb822_stanzas(sources.read_text()):
            if "deb" not in fields.get("types", ["deb"]) or not fields.get("uris"):
                continue
            found += [(fields["uris"][0], sources, name) for name in fields.get("suites", [])]
    classic = etc_apt / "sources.list"
    if classic.exists():
        found += [(parts[1], classic, parts[2]) for parts in _one_line_entries(classic.read_text())]
    for wanted in (suite, *DEBIAN_SUITES):
        for uri, path, name in found:
            if name == wanted:
                return uri, path, name
    raise LabError(
        f"no Debian mirror found in {etc_apt}/sources.list.d/*.sources or {etc_apt}/sources.list: "
        f"set {MIRROR_ENV} (or pass --mirror) to the URL of a Debian archive mirror"
    )


def rewrite_suites(text: str, old: str, new: str) -> str:
    """An apt sources file with suite `old` and its companions (old-updates, old-security...) renamed
    to `new`: the Suites fields of a deb822 .sources file, the suite of each one-line sources.list
    entry. URIs, components, options and comments are kept as they are."""
    if old == new:
        return text

    def rename(suite: str) -> str:
        if suite == old:
            return new
        if suite.startswith(f"{old}-"):
            return new + suite[len(old):]
        return suite

    def suites_field(match: re.Match) -> str:
        return match.group(1) + re.sub(r"\S+", lambda word: rename(word.group(0)), match.group(2))

    def one_line(match: re.Match) -> str:
        return match.group(1) + rename(match.group(2)) + match.group(3)

    lines = []
    for line in text.splitlines(keepends=True):
        line = re.sub(r"^(Suites:[ \t]*)(.*)", suites_field, line, flags=re.IGNORECASE)
        line = re.sub(r"^(\s*deb(?:-src)?\s+(?:\[[^]]*\]\s+)?\S+\s+)(\S+)(.*)", one_line, line, flags=re.DOTALL)
        lines.append(line)
    return "".join(lines)


def check_mirror(mirror: str | None, archive: str = "debian") -> str | None:
    """The mirror setting of an archive (`mirror`, else its environment variable), None when unset;
    one that is not an http(s) URL is refused in one line."""
    setting = ARCHIVES[archive].mirror_env
    mirror = mirror or os.environ.get(setting) or None
    if mirror and not re.fullmatch(r"https?://[^\s/]+(/\S*)?", mirror):
        raise LabError(f"mirror {mirror!r} is not an http(s) URL of a {archive.capitalize()} archive mirror "
                       f"(--mirror or {setting})", exit_code=2)
    return mirror


@dataclasses.dataclass(frozen=True)
class AptSources:
    """Where a target's image comes from and the apt sources file its hosts get."""

    mirror: str | None   # what debootstrap installs from (None: debootstrap's default)
    path: str     # the file's place in the image, under etc/apt
    text: str
    origin: str   # for messages: which file or setting it came from


def written_sources(target: Target, mirror: str, origin: str) -> AptSources:
    """A deb822 sources file naming `mirror` for the target's suite and its companions."""
    archive = ARCHIVES[target.archive]
    suites = [target.suite, *(f"{target.suite}-{pocket}" for pocket in archive.pockets)]
    text = (f"# Written by 'opspack lab up' from {origin}.\n"
            f"Types: deb\nURIs: {mirror}\nSuites: {' '.join(suites)}\nComponents: {' '.join(target.components)}\n"
            f"Signed-By: {archive.keyring}\n")
    return AptSources(mirror, f"sources.list.d/{target.archive}.sources", text, origin)


def apt_sources(target: Target, mirror: str | None = None, etc_apt: Path = Path("/etc/apt")) -> AptSources | None:
    """The mirror and sources file of a target's image: `mirror` (--mirror, else the archive's
    setting) when set; else, for a Debian target, the machine's own apt configuration with its suite
    names changed to the target's; else None: debootstrap's default mirror, known once it ran
    (sources_from_bootstrap)."""
    setting = ARCHIVES[target.archive].mirror_env
    origin = "--mirror" if mirror else setting
    mirror = check_mirror(mirror, target.archive)
    if mirror:
        return written_sources(target, mirror, origin)
    if ARCHIVES[target.archive].bootstrap_tools:
        return None
    uri, sources_file, suite = find_apt_sources(etc_apt, target.suite)
    path = "sources.list" if sources_file.name == "sources.list" else f"sources.list.d/{sources_file.name}"
    text = rewrite_suites(sources_file.read_text(), suite, target.suite)
    origin = str(sources_file) if suite == target.suite else f"{sources_file}, {suite} read as {target.suite}"
    return AptSources(uri, path, text, origin)


def cache_root() -> Path:
    """Where the lab keeps what is not project state: the engine log and image build space."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "opspack"


def is_root() -> bool:
    return os.geteuid() == 0


def is_debian() -> bool:
    return Path("/etc/debian_version").exists()


def run(args: list[str], *, check: bool = True, input_text: str | None = None, timeout: float | None = None,
        env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    try:
        result = subprocess.run(
            args, input=input_text, capture_output=True, text=True, timeout=timeout, check=False, env=env, cwd=cwd
        )
    except FileNotFoundError as error:
        raise LabError(f"{args[0]} is not installed: {error}") from error
    except subprocess.TimeoutExpired as error:
        raise LabError(f"'{' '.join(args[:3])}' did not finish within {timeout:.0f} s") from error
    if check and result.returncode != 0:
        detail = (result.stderr or result.stdout).strip().splitlines()
        raise LabError(f"'{' '.join(args[:3])}' failed: {detail[-1] if detail else f'exit {result.returncode}'}")
    return result


def engine_answers() -> bool:
    if shutil.which("docker") is None:
        return False
    return run(["docker", "info", "--format", "{{.ServerVersion}}"], check=False, timeout=20).returncode == 0


def apt_install(packages: list[str], log: Log) -> None:
    log(f"installing {' '.join(packages)} with apt-get")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for args in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", *packages]):
        result = subprocess.run(args, capture_output=True, text=True, env=env, check=False)
        if result.returncode != 0:
            tail = (result.stderr or result.stdout).strip().splitlines()[-1:]
            raise LabError(f"'{' '.join(args[:3])}' failed ({' '.join(tail)}): install {' '.join(packages)} by hand and re-run")


def ensure_engine(log: Log, state_root: Path) -> None:
    """Make sure a Docker engine answers; install and start one only as root on Debian."""
    if engine_answers():
        return
    if not (is_root() and is_debian()):
        raise LabError(
            "no Docker engine answers ('docker info' failed) and opspack installs or starts one only as root on Debian: "
            "start Docker yourself (e.g. 'sudo systemctl start docker', or add your user to the docker group) and re-run"
        )
    if shutil.which("dockerd") is None or shutil.which("docker") is None:
        apt_install(["docker.io"], log)
    if Path("/run/systemd/system").is_dir():
        log("starting the Docker engine with systemctl")
        run(["systemctl", "start", "docker"])
    else:
        # No systemd on this machine (a container or CI sandbox): run dockerd detached.
        state_root.mkdir(parents=True, exist_ok=True)
        engine_log = state_root / "dockerd.log"
        log(f"starting dockerd (log: {engine_log})")
        with open(engine_log, "ab") as handle:
            subprocess.Popen(  # pylint: disable=consider-using-with
                ["dockerd"], stdout=handle, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
    deadline = time.monotonic() + ENGINE_TIMEOUT
    while time.monotonic() < deadline:
        if engine_answers():
            return
        time.sleep(1)
    raise LabError(f"started the Docker engine but it did not answer within {ENGINE_TIMEOUT:.0f} s: see {state_root / 'dockerd.log'}")


def image_exists(ref: str) -> bool:
    return run(["docker", "image", "inspect", ref], check=False).returncode == 0


def sources_from_bootstrap(target: Target, rootfs: Path) -> AptSources:
    """The sources of an image bootstrapped from debootstrap's default mirror, which debootstrap names
    in the new system's sources.list."""
    listed = rootfs / "etc/apt/sources.list"
    for parts in _one_line_entries(listed.read_text() if listed.exists() else ""):
        return written_sources(target, parts[1], "debootstrap's default mirror")
    raise LabError(f"debootstrap named no mirror in {listed}: set {ARCHIVES[target.archive].mirror_env} (or pass --mirror)")


@dataclasses.dataclass(frozen=True)
class BootstrapTools:
    """A debootstrap to run and the keyring it checks the archive with (None: its own default)."""

    command: tuple[str, ...] = ("debootstrap",)
    env: tuple[tuple[str, str], ...] = ()
    keyring: Path | None = None


def private_apt(work: Path, sources_file: Path, text: str) -> list[str]:
    """apt-get options for an apt of its own under `work`: the given sources only, its own lists and
    cache; this machine's apt configuration and installed packages are left untouched."""
    (work / "lists/partial").mkdir(parents=True, exist_ok=True)
    (work / "cache/archives/partial").mkdir(parents=True, exist_ok=True)
    (work / "parts").mkdir(exist_ok=True)
    one_line = sources_file.name == "sources.list"
    (work / "sources.list").write_text(text if one_line else "")
    if not one_line:
        (work / "parts" / sources_file.name).write_text(text)
    return ["-o", f"Dir::Etc::SourceList={work / 'sources.list'}", "-o", f"Dir::Etc::SourceParts={work / 'parts'}",
            "-o", f"Dir::State::Lists={work / 'lists'}", "-o", f"Dir::Cache={work / 'cache'}",
            "-o", "APT::Sandbox::User=root", "-qq"]


def bootstrap_tools(target: Target, log: Log, work_root: Path, etc_apt: Path = Path("/etc/apt")) -> BootstrapTools:
    """The debootstrap that builds `target`: this machine's, or its archive's bootstrap_tools
    unpacked into the cache (downloaded once)."""
    archive = ARCHIVES[target.archive]
    if not archive.bootstrap_tools:
        if shutil.which("debootstrap") is None:
            if not (is_root() and is_debian()):
                raise LabError("building the lab image needs debootstrap and root: install debootstrap "
                               "(apt-get install debootstrap) and run as root")
            apt_install(["debootstrap"], log)
        return BootstrapTools()
    suite = BOOTSTRAP_TOOLS_SUITE
    tools = work_root / f"bootstrap-tools-{suite}"
    if not (tools / ".complete").exists():
        if not is_debian() or shutil.which("apt-get") is None:
            raise LabError(f"building the {target.label} image needs Debian's {' and '.join(archive.bootstrap_tools)} packages, "
                           "which opspack downloads with this machine's apt: run it on a Debian machine")
        uri, sources_file, found = find_apt_sources(etc_apt, suite)
        log(f"downloading {', '.join(archive.bootstrap_tools)} ({suite}) from {uri} to build {target.label} images")
        shutil.rmtree(tools, ignore_errors=True)
        work_root.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix="bootstrap-tools-", dir=work_root))
        try:
            options = private_apt(work, sources_file, rewrite_suites(sources_file.read_text(), found, suite))
            run(["apt-get", *options, "update"], timeout=600)
            downloads = work / "debs"
            downloads.mkdir()
            fetched = run(["apt-get", *options, "download", *archive.bootstrap_tools], cwd=downloads, timeout=600,
                          check=False)
            if fetched.returncode != 0:
                detail = (fetched.stderr or fetched.stdout).strip().splitlines()[-1:]
                raise LabError(f"downloading {', '.join(archive.bootstrap_tools)} ({suite}) from {uri} failed: {' '.join(detail)}")
            debs = sorted(downloads.glob("*.deb"))
            for deb in debs:
                run(["dpkg-deb", "-x", str(deb), str(work / "tools")])
            (work / "tools/.complete").write_text("".join(f"{deb.name}\n" for deb in debs))
            os.replace(work / "tools", tools)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return BootstrapTools(command=(str(tools / "usr/sbin/debootstrap"),),
                          env=(("DEBOOTSTRAP_DIR", str(tools / "usr/share/debootstrap")),),
                          keyring=tools / archive.keyring.lstrip("/"))


def build_image(ref: str, target: Target, log: Log, work_root: Path, mirror: str | None = None) -> None:
    """debootstrap a minimal system of the target with systemd and sshd, then import it as an image."""
    if not is_root():
        raise LabError("building the lab image runs debootstrap, which needs root: run 'opspack lab up' once as root")
    sources = apt_sources(target, mirror)
    tools = bootstrap_tools(target, log, work_root)
    work_root.mkdir(parents=True, exist_ok=True)
    build_dir = Path(tempfile.mkdtemp(prefix="lab-image-", dir=work_root))
    rootfs = build_dir / "rootfs"
    started = time.monotonic()
    origin = f"the mirror of {sources.origin}" if sources else ARCHIVES[target.archive].default
    log(f"building lab image {ref} ({target.label}) with debootstrap from {origin} (first run only, a few minutes)")
    try:
        options = [f"--components={','.join(target.components)}"] if target.components != ("main",) else []
        if tools.keyring:
            options.append(f"--keyring={tools.keyring}")
        env = dict(os.environ, **dict(tools.env))
        if target.archive == "ubuntu":
            # debootstrap's default Ubuntu mirror is the archive for a suite it believes supported and
            # old-releases otherwise; it asks ubuntu-distro-info, else endoflife.date over the network,
            # and a machine without either answers "unsupported". Every lab target is a supported
            # release, so the lab answers for it.
            shims = build_dir / "bin"
            shims.mkdir()
            (shims / "ubuntu-distro-info").write_text(f"#!/bin/sh\necho {target.suite}\n")
            (shims / "ubuntu-distro-info").chmod(0o755)
            env["PATH"] = f"{shims}:{env.get('PATH', os.defpath)}"
        bootstrap = run([*tools.command, "--variant=minbase", f"--include={','.join(PACKAGES)}", *options, target.suite,
                         str(rootfs), *([sources.mirror] if sources else [])], env=env, timeout=900, check=False)
        if bootstrap.returncode != 0:
            detail = [line for line in (bootstrap.stderr + bootstrap.stdout).splitlines() if line.strip()][-2:]
            raise LabError(f"debootstrap of {target.label} from {origin} failed ({' / '.join(detail)}): check that "
                           f"the archive answers from this machine, or set {ARCHIVES[target.archive].mirror_env} "
                           "(or pass --mirror) to a mirror that does")
        sources = sources or sources_from_bootstrap(target, rootfs)
        apt_dir = rootfs / "etc/apt"
        # Only the sources written here: debootstrap's sources.list and a distribution's default file go.
        (apt_dir / "sources.list").unlink(missing_ok=True)
        (apt_dir / f"sources.list.d/{target.archive}.sources").unlink(missing_ok=True)
        (apt_dir / sources.path).parent.mkdir(parents=True, exist_ok=True)
        (apt_dir / sources.path).write_text(sources.text)
        lab_files = (("etc/systemd/system/service.d/10-lab.conf", LAB_SERVICE_DROPIN),
                     ("etc/systemd/system/ssh.service.d/10-lab-hostkeys.conf", SSH_HOSTKEY_DROPIN), *target.dropins)
        for path, text in lab_files:
            (rootfs / path).parent.mkdir(parents=True, exist_ok=True)
            (rootfs / path).write_text(text)
        for host_key in (rootfs / "etc/ssh").glob("ssh_host_*"):
            host_key.unlink()
        # An empty machine-id gives every host its own at first boot.
        (rootfs / "etc/machine-id").write_text("")
        for cached in (rootfs / "var/cache/apt/archives").glob("*.deb"):
            cached.unlink()
        tar = subprocess.Popen(["tar", "-C", str(rootfs), "--numeric-owner", "-c", "."], stdout=subprocess.PIPE)
        imported = subprocess.run(
            ["docker", "import", "--change", 'CMD ["/sbin/init"]',
             "--message", f"opspack lab recipe {recipe_hash(target.name)} ({target.label})", "-", ref],
            stdin=tar.stdout, capture_output=True, text=True, check=False,
        )
        tar.stdout.close()
        tar.wait()
        if tar.returncode != 0 or imported.returncode != 0:
            raise LabError(f"importing the lab image failed: {imported.stderr.strip() or 'tar exit ' + str(tar.returncode)}")
    finally:
        shutil.rmtree(build_dir, ignore_errors=True)
    log(f"built lab image {ref} in {time.monotonic() - started:.0f} s")


@dataclasses.dataclass
class LabHost:
    name: str
    container: str
    ports: HostPorts

    def as_dict(self) -> dict:
        return {"name": self.name, "container": self.container, **{f"{key}_port": value for key, value in dataclasses.asdict(self.ports).items()}}


class Lab:
    """One named lab: its containers (found by label) and its state directory."""

    def __init__(self, name: str, state_dir: Path, log: Log):
        self.name = name
        self.state_dir = state_dir.resolve()
        self.log = log

    @property
    def key_file(self) -> Path:
        return self.state_dir / "id_ed25519"

    @property
    def known_hosts(self) -> Path:
        return self.state_dir / "known_hosts"

    @property
    def inventory(self) -> Path:
        return self.state_dir / "hosts.yml"

    @property
    def state_file(self) -> Path:
        return self.state_dir / "lab.json"

    def container_name(self, host: str) -> str:
        return f"opspack-{self.name}-{host}"

    def containers(self) -> dict[str, str]:
        """Container name -> state, for every container of this lab."""
        result = run(["docker", "ps", "--all", "--filter", f"label={LAB_LABEL}={self.name}",
                      "--format", "{{.Names}}\t{{.State}}"])
        return dict(line.split("\t", 1) for line in result.stdout.splitlines() if "\t" in line)

    # -- up --------------------------------------------------------------------------------
    def up(self, hosts: int, base_port: int, snapshot: Path | None = None, os_target: str | None = None,
           mirror: str | None = None) -> list[LabHost]:
        """Start the hosts from the base image of `os_target` (None: DEFAULT_TARGET), or from a
        snapshot's images (then with the snapshot's key, which its hosts' operator accounts already
        trust, and its target). `mirror` is used only when the base image is built (apt_sources)."""
        validate_request(self.name, hosts, base_port)
        target = resolve_target(os_target)
        check_mirror(mirror, target.archive)
        ensure_engine(self.log, cache_root())
        manifest = read_snapshot(snapshot, hosts) if snapshot else None
        if manifest:
            taken_from = resolve_target(manifest.get("os", LEGACY_TARGET))
            if os_target is not None and os_target != taken_from.name:
                raise LabError(f"snapshot {manifest['key']} holds {taken_from.name} hosts, not {os_target}: "
                               f"leave out --os or give --os {taken_from.name}", exit_code=2)
            target = taken_from
        planned = [LabHost(name, self.container_name(name), host_ports(base_port, index))
                   for index, name in enumerate(host_names(hosts), start=1)]
        existing = self.containers()
        if existing:
            recorded = self._state()
            running_os = recorded.get("os", LEGACY_TARGET) if recorded else target.name
            if running_os != target.name:
                raise LabError(f"lab '{self.name}' runs {running_os}, not {target.name}: run 'opspack lab down --name {self.name}' "
                               f"first, then 'opspack lab up --os {target.name}'")
            wanted = {host.container for host in planned}
            if (set(existing) == wanted and all(state == "running" for state in existing.values())
                    and self._state_matches(planned, manifest["key"] if manifest else None, target)):
                self.log(f"lab '{self.name}' is already up with {hosts} host(s)")
                return planned
            stopped = sorted(name for name, state in existing.items() if state != "running")
            problem = (f"has stopped hosts ({', '.join(stopped)})" if stopped and set(existing) == wanted
                       else f"already has hosts ({', '.join(sorted(existing))}) that differ from this request")
            raise LabError(f"lab '{self.name}' {problem}: run 'opspack lab down --name {self.name}', then 'opspack lab up' again")
        taken = taken_ports(port for host in planned for port in host.ports.all())
        if taken:
            raise LabError(
                f"port(s) {', '.join(map(str, taken))} on 127.0.0.1 already in use: free them or choose other ports with --base-port",
                exit_code=2,
            )
        self.state_dir.mkdir(parents=True, exist_ok=True)
        if manifest:
            images = {host.name: manifest["images"][host.name] for host in planned}
            self.log(f"starting from snapshot {manifest['key']} ({snapshot})")
            for name in ("id_ed25519", "id_ed25519.pub"):
                shutil.copyfile(snapshot / name, self.state_dir / name)
            self.key_file.chmod(0o600)
        else:
            ref = image_ref(target.name)
            if image_exists(ref):
                self.log(f"using cached lab image {ref} ({target.label})")
            else:
                build_image(ref, target, self.log, cache_root(), mirror)
            images = {host.name: ref for host in planned}
            self._ensure_key()
        started: list[str] = []
        try:
            for host in planned:
                # Recorded before `docker run`: a run that fails can still leave a created container.
                started.append(host.container)
                self._start(host, images[host.name])
            host_keys = [self._wait_ready(host) for host in planned]
            self._write_state(planned, host_keys, images, manifest["key"] if manifest else None, target)
        except BaseException:
            # Never leave a half-started lab behind: remove what this call started.
            for container in started:
                run(["docker", "rm", "--force", "--volumes", container], check=False)
            self._remove_state()
            raise
        return planned

    def _state(self) -> dict:
        """lab.json, or {} when there is none (or it cannot be read)."""
        try:
            state = json.loads(self.state_file.read_text())
        except (OSError, ValueError):
            return {}
        return state if isinstance(state, dict) else {}

    def _state_matches(self, planned: list[LabHost], snapshot_key: str | None, target: Target) -> bool:
        """The running lab is the one asked for: same hosts and ports, same origin (base image or
        which snapshot), same OS target."""
        state = self._state()
        return (bool(state) and state.get("hosts") == [host.as_dict() for host in planned]
                and state.get("snapshot") == snapshot_key and state.get("os", LEGACY_TARGET) == target.name
                and self.inventory.exists())

    def _ensure_key(self) -> None:
        if not self.key_file.exists():
            run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"opspack-lab-{self.name}", "-f", str(self.key_file)])

    def _start(self, host: LabHost, ref: str) -> None:
        self.log(f"starting {host.name} (ssh 127.0.0.1:{host.ports.ssh})")
        run([
            "docker", "run", "--detach", "--name", host.container, "--hostname", host.name,
            "--label", f"{LAB_LABEL}={self.name}", "--label", f"{HOST_LABEL}={host.name}",
            # systemd shuts down cleanly on SIGRTMIN+3, not on docker's default SIGTERM.
            "--stop-signal", "SIGRTMIN+3",
            # A VPS owns its network stack: nftables and fail2ban need it. (--privileged is
            # neither needed nor possible on these machines.)
            "--cap-add", "NET_ADMIN",
            "--tmpfs", "/run", "--tmpfs", "/run/lock", "--tmpfs", "/tmp",
            # A small filesystem of its own (LAB_DATA_DISK), for tests that fill a disk to its
            # threshold without filling the machine's.
            "--tmpfs", f"{LAB_DATA_DISK}:size=64m,mode=0755",
            "--volume", "/sys/fs/cgroup:/sys/fs/cgroup:ro",
            "--publish", f"127.0.0.1:{host.ports.ssh}:22",
            "--publish", f"127.0.0.1:{host.ports.http}:80",
            "--publish", f"127.0.0.1:{host.ports.https}:443",
            ref, "/sbin/init",
        ])

    def _system_state(self, container: str) -> str:
        result = run(["docker", "exec", container, "systemctl", "is-system-running"], check=False, timeout=20)
        return result.stdout.strip() or "unknown"

    def _wait_ready(self, host: LabHost) -> str:
        """Wait until systemd says running and sshd greets on the published port; return the host key."""
        deadline = time.monotonic() + BOOT_TIMEOUT
        state = "unknown"
        while time.monotonic() < deadline:
            state = self._system_state(host.container)
            if state in ("running", "degraded"):
                break
            time.sleep(0.5)
        if state != "running":
            failed = run(["docker", "exec", host.container, "systemctl", "--failed", "--plain", "--no-legend"], check=False).stdout
            units = ", ".join(line.split()[0] for line in failed.splitlines() if line.strip()) or "none listed"
            # A boot that is still "starting" has jobs queued: name them, they are what holds it.
            jobs = run(["docker", "exec", host.container, "systemctl", "list-jobs", "--plain", "--no-legend"], check=False).stdout
            waiting = "; ".join(" ".join(line.split()[1:4]) for line in jobs.splitlines() if line.strip()) or "none listed"
            raise LabError(f"{host.name} did not reach systemd state 'running' within {BOOT_TIMEOUT:.0f} s "
                           f"(state {state}; failed units: {units}; queued jobs: {waiting})")
        authorized = self.key_file.with_suffix(".pub").read_text()
        run(["docker", "exec", "-i", host.container, "sh", "-c",
             "umask 077 && mkdir -p /root/.ssh && cat > /root/.ssh/authorized_keys"], input_text=authorized)
        # Greeted first, read second: ssh.service makes the host keys before sshd starts
        # (SSH_HOSTKEY_DROPIN), and on Ubuntu, whose sshd is socket-activated, it starts only when
        # a first connection comes. The key is read from the host, never trusted from the wire.
        while time.monotonic() < deadline:
            if ssh_greets(host.ports.ssh):
                run(["docker", "exec", host.container, "sh", "-c", KEEP_SNAPSHOT_HOST_KEYS], timeout=20)
                host_key = run(["docker", "exec", host.container, "cat", "/etc/ssh/ssh_host_ed25519_key.pub"],
                               check=False).stdout.split()
                if len(host_key) >= 2:
                    return f"{host_key[0]} {host_key[1]}"
            time.sleep(0.5)
        raise LabError(f"{host.name}: sshd did not answer on 127.0.0.1:{host.ports.ssh} with a host key within {BOOT_TIMEOUT:.0f} s")

    def _write_state(self, planned: list[LabHost], host_keys: list[str], images: dict[str, str],
                     snapshot_key: str | None, target: Target) -> None:
        known = "".join(f"[127.0.0.1]:{host.ports.ssh} {key}\n" for host, key in zip(planned, host_keys))
        write_atomically(self.known_hosts, known)
        write_atomically(self.inventory, render_inventory(self.name, planned, self.key_file, self.known_hosts, self.state_dir))
        write_atomically(self.state_file, json.dumps(
            {"name": self.name, "os": target.name, "image": images[planned[0].name], "snapshot": snapshot_key,
             "key_file": str(self.key_file), "known_hosts": str(self.known_hosts),
             "inventory": str(self.inventory), "hosts": [host.as_dict() for host in planned]}, indent=2) + "\n")

    # -- snapshot --------------------------------------------------------------------------
    def snapshot(self, target: Path, key: str, control_files: dict[str, Path] | None = None) -> dict:
        """Commit every host of this running lab as a snapshot and stop the lab.

        `target` receives the manifest, the lab key and `control/` (control-node files the
        hosts' state goes with, such as the lab CA that signed their certificates). Written
        beside and renamed into place: a snapshot directory is either whole or absent.
        """
        if not re.fullmatch(r"[a-z0-9][a-z0-9.-]{0,60}", key):
            raise LabError(f"snapshot key {key!r} is not valid: use lowercase letters, digits, '.' and '-'", exit_code=2)
        try:
            state = json.loads(self.state_file.read_text())
        except (OSError, ValueError) as error:
            raise LabError(f"lab '{self.name}' has no state in {self.state_dir}: start it with 'opspack lab up' first") from error
        running = self.containers()
        hosts = state["hosts"]
        down = [host["name"] for host in hosts if running.get(host["container"]) != "running"]
        if down:
            raise LabError(f"lab '{self.name}': {', '.join(down)} not running; a snapshot is taken from running hosts")
        target = target.resolve()
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
        images = {}
        try:
            for host in hosts:
                ref = f"{SNAPSHOT_REPOSITORY}:{key}-{host['name']}"
                self.log(f"committing {host['name']} as {ref}")
                run(["docker", "exec", host["container"], "sh", "-c", SNAPSHOT_PREPARE], timeout=120)
                # A clean shutdown, so that PostgreSQL and the rest start without recovery.
                run(["docker", "stop", "--time", "60", host["container"]], timeout=120)
                run(["docker", "commit", "--change", 'CMD ["/sbin/init"]',
                     "--message", f"opspack lab snapshot {key} of {host['name']}", host["container"], ref], timeout=600)
                images[host["name"]] = ref
            for name in ("id_ed25519", "id_ed25519.pub"):
                shutil.copyfile(self.state_dir / name, staging / name)
            (staging / "id_ed25519").chmod(0o600)
            (staging / "control").mkdir()
            for name, source in (control_files or {}).items():
                if source.is_dir():
                    shutil.copytree(source, staging / "control" / name, symlinks=True)
                elif source.exists():
                    shutil.copy2(source, staging / "control" / name)
            manifest = {"key": key, "os": state.get("os", LEGACY_TARGET), "base_image": state.get("image"), "images": images,
                        "hosts": [host["name"] for host in hosts]}
            (staging / SNAPSHOT_MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
            if target.exists():
                shutil.rmtree(target)
            os.replace(staging, target)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return manifest

    def _remove_state(self) -> None:
        for path in (self.inventory, self.known_hosts, self.state_file):
            path.unlink(missing_ok=True)

    # -- status and down -------------------------------------------------------------------
    def status(self) -> tuple[bool, str]:
        if not engine_answers():
            raise LabError("no Docker engine answers ('docker info' failed): the lab is not running; 'opspack lab up' starts it")
        containers = self.containers()
        if not containers:
            return False, f"lab '{self.name}' is not up: 'opspack lab up --name {self.name}' starts it"
        state = self._state()
        try:
            hosts = {host["container"]: host for host in state["hosts"]}
        except (KeyError, TypeError):
            hosts = {}
        target = TARGETS.get(state.get("os", LEGACY_TARGET)) if state else None
        runs = f"{target.name}, {target.label}" if target else "OS unknown: no lab.json"
        rows = [("HOST", "CONTAINER", "CONTAINER STATE", "SYSTEMD", "SSH")]
        healthy = True
        for container, state in sorted(containers.items()):
            host = hosts.get(container)
            system = self._system_state(container) if state == "running" else "-"
            ssh = "-"
            if host:
                ssh = f"127.0.0.1:{host['ssh_port']} " + ("answers" if ssh_greets(host["ssh_port"]) else "silent")
            healthy = healthy and state == "running" and system == "running" and ssh.endswith("answers")
            rows.append((host["name"] if host else "?", container, state, system, ssh))
        widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
        table = "\n".join("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows)
        return healthy, f"lab '{self.name}' ({runs}): inventory {self.inventory}\n{table}"

    def down(self) -> list[str]:
        if not engine_answers():
            # No engine, so no host of this lab can be running: only stale state files remain.
            self._remove_state()
            return []
        containers = sorted(self.containers())
        if containers:
            run(["docker", "rm", "--force", "--volumes", *containers])
        self._remove_state()
        return containers


def read_snapshot(directory: Path, hosts: int) -> dict:
    """A snapshot's manifest, checked: enough hosts, and every image still in the engine."""
    try:
        manifest = json.loads((directory / SNAPSHOT_MANIFEST).read_text())
    except (OSError, ValueError) as error:
        raise LabError(f"{directory} is not a lab snapshot (no readable {SNAPSHOT_MANIFEST}): take one with 'opspack lab snapshot'") from error
    wanted = host_names(hosts)
    missing = [name for name in wanted if name not in manifest.get("images", {})]
    if missing:
        raise LabError(f"snapshot {manifest.get('key')} has no {', '.join(missing)}: it holds {', '.join(manifest.get('hosts', []))}", exit_code=2)
    gone = [manifest["images"][name] for name in wanted if not image_exists(manifest["images"][name])]
    if gone:
        raise LabError(f"snapshot image(s) {', '.join(gone)} are no longer in the Docker engine: take the snapshot again")
    return manifest


def ssh_greets(port: int, timeout: float = 2.0) -> bool:
    """True when an SSH server sends its banner on 127.0.0.1:port (a bare TCP accept is not enough:
    Docker's port proxy accepts before the host listens)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as connection:
            return connection.recv(4).startswith(b"SSH-")
    except OSError:
        return False


def render_inventory(name: str, hosts: list[LabHost], key_file: Path, known_hosts: Path, state_dir: Path) -> str:
    lines = [
        f"# Written by 'opspack lab up --name {name}'; 'opspack lab down' removes it. Not for git.",
        "all:",
        "  children:",
        "    lab:",
        "      hosts:",
    ]
    for host in hosts:
        lines += [
            f"        {host.name}:",
            "          ansible_host: 127.0.0.1",
            f"          ansible_port: {host.ports.ssh}",
            f"          opspack_lab_http_port: {host.ports.http}",
            f"          opspack_lab_https_port: {host.ports.https}",
        ]
    lines += [
        "      vars:",
        "        ansible_user: root",
        f"        ansible_ssh_private_key_file: {json.dumps(str(key_file))}",
        # Host keys are pinned from the hosts themselves: real verification, as on a real VPS.
        f"        ansible_ssh_common_args: {json.dumps(f'-o UserKnownHostsFile={known_hosts} -o StrictHostKeyChecking=yes -o IdentitiesOnly=yes')}",
        # The lab keeps opspack's control-node state (records, artifacts, backups, lab CA) with its
        # own files, so one directory holds everything of a lab (all's variables: `opspack matrix`
        # asks Ansible for it on the implicit localhost, which reads no other group's).
        "  vars:",
        f"    opspack_state_dir: {json.dumps(str(state_dir))}",
        "",
    ]
    return "\n".join(lines)


def write_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(handle, "w") as stream:
            stream.write(text)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
