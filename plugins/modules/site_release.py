#!/usr/bin/python
# Copyright: opspack developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Unpack, record and prune a site's releases on its host."""

from __future__ import annotations

DOCUMENTATION = r"""
module: site_release
short_description: Unpack, record and prune the releases of a site on its host
version_added: 0.1.0
author: opspack developers (@opspack)
description:
  - Keeps C(<base_dir>/<site>/releases/<release_id>/), one complete release tree each, and the
    site's release record C(<base_dir>/<site>/release-state.json) (current release and slot,
    previous release, last known good, and the status of every release).
  - O(state=present) verifies the artifact's sha256, unpacks it into C(<release_id>.partial),
    links the site's shared paths into it, builds its virtual environment, and only then
    renames it to C(<release_id>), so that a release directory is always complete. A release already
    in place with the same sha256 is left alone.
  - O(state=live) records that O(release_id) serves traffic from O(slot) (it becomes the
    current release; the one before becomes the previous release). With O(last_known_good=true)
    (its smoke tests passed) it also becomes the last known good release.
  - O(state=failed) records a release that never went live or was rolled back; failed
    releases never count towards O(keep).
  - O(state=pruned) removes the oldest releases beyond the O(keep) newest good ones, every
    failed one and every leftover C(.partial) directory, and never the current release, the
    previous one, the last known good one, one in a slot, or one in O(protect). Releases are
    ordered by the time recorded when they were unpacked, never by file times.
  - M(opspack.platform.site_release_info) reads all this, and what really serves the site.
  - Each change returns a C(step) event in RV(opspack_event) (unpack, record or prune) for the records.
options:
  state:
    description: What to do; see the description.
    type: str
    choices: [present, live, failed, pruned]
    default: present
  release_id:
    description: The release id (C(<version>+<12 hex digits>)). Required for O(state=present), V(live) and V(failed).
    type: str
  artifact:
    description: Path on the host of the release tarball. Required for O(state=present).
    type: path
  sha256:
    description: Expected sha256 of O(artifact). Required for O(state=present).
    type: str
  group:
    description: Group that may read the release (the site's service user).
    type: str
  shared_links:
    description:
      - Paths inside the release that are links to the same path under C(<site>/shared/), e.g. C(uploads).
      - A path the release ships itself is replaced by the link.
    type: list
    elements: str
    default: []
  venv:
    description: Build a virtual environment C(venv/) in the release (C(python3 -m venv)).
    type: bool
    default: true
  system_site_packages:
    description: Let the virtual environment see the host's Python packages (Debian's python3-*).
    type: bool
    default: false
  requirements:
    description: File in the release with the packages C(pip) installs into the virtual environment, when present and not empty.
    type: str
    default: requirements.txt
  wheels_dir:
    description:
      - Directory in the release holding the wheels of its requirements. When it exists, C(pip)
        installs from it alone (C(--no-index --find-links)), so a host needs no package index and
        the release installs exactly what was shipped.
    type: str
    default: wheels
  migrations_dir:
    description: The release's migrations directory (relative), copied to O(export_migrations).
    type: str
    default: migrations
  export_migrations:
    description:
      - Directory where each release's O(migrations_dir) is copied to C(<export_migrations>/<release_id>),
        readable by the database's system user (which may not enter the site's tree). Pruned with the release.
      - Empty copies nothing.
    type: path
  slot:
    description: The slot serving O(release_id), for O(state=live).
    type: str
  last_known_good:
    description: With O(state=live), record the release as the last known good one (its smoke tests passed).
    type: bool
    default: false
  replaces:
    description:
      - With O(state=live), the release that served before this run switched (what nginx served when
        it began). It becomes the previous release, and with O(went_live_by=rollback) the one
        recorded C(rolled_back). Empty means the record's current release (they differ only after
        an interrupted run).
    type: str
    default: ""
  went_live_by:
    description:
      - With O(state=live), what put the release live. V(deploy) gives it the next place in the site's
        deploy order (plain rollbacks go back along that order); V(rollback) keeps its place and
        records the release it left as C(rolled_back), which no plain rollback goes to again.
    type: str
    choices: [deploy, rollback]
    default: deploy
  config_files:
    description:
      - With O(state=live), the site's configuration files whose contents make up RV(config_hash)
        (its unit, its slot's environment, its nginx site). Keep secrets out of it, since the hash is
        written into the records and a hash of a short secret can be guessed.
    type: list
    elements: path
    default: []
  reason:
    description: Why a release failed, for O(state=failed) (one line, kept in the record).
    type: str
    default: ""
  keep:
    description: How many good releases O(state=pruned) keeps (besides the protected ones).
    type: int
    default: 5
  protect:
    description: Release ids O(state=pruned) never removes.
    type: list
    elements: str
    default: []
extends_documentation_fragment:
  - opspack.platform.site
attributes:
  check_mode:
    description: Can run in check_mode and return changed status prediction without modifying the target.
    support: full
    details: Reports what would be unpacked, recorded or removed; changes nothing.
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in check_mode), when in diff mode.
    support: none
seealso:
  - module: opspack.platform.site_release_info
  - module: opspack.platform.release_artifact
  - module: opspack.platform.deploy_lock
  - module: opspack.platform.site_upstream
"""

EXAMPLES = r"""
- name: Unpack the release and build its virtual environment
  opspack.platform.site_release:
    site: blog
    release_id: 1.4.2+0a1b2c3d4e5f
    artifact: /srv/blog/artifacts/1.4.2+0a1b2c3d4e5f.tar.gz
    sha256: "{{ blog_release.sha256 }}"
    group: blog
    shared_links: [uploads]

- name: Record it as live and last known good after its smoke tests
  opspack.platform.site_release:
    site: blog
    state: live
    release_id: 1.4.2+0a1b2c3d4e5f
    slot: green
    last_known_good: true

- name: Keep the five newest good releases
  opspack.platform.site_release:
    site: blog
    state: pruned
    keep: 5
"""

RETURN = r"""
site:
  description: The site.
  returned: always
  type: str
operation:
  description: What the module was asked to do (its O(state); C(state) itself is taken by the file facts Ansible adds for the returned path).
  returned: always
  type: str
release_id:
  description: The release acted on (empty for O(state=pruned)).
  returned: always
  type: str
path:
  description: The release's directory.
  returned: always
  type: str
config_hash:
  description:
    - With O(state=live), sha256 over O(config_files) (each path and the sha256 of its content, or C(missing)),
      in the order given; empty without O(config_files). The records keep it with the last known good state.
  returned: when O(state=live)
  type: str
  sample: 9f2c1b0e4d5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b1c
record:
  description: The site's release record after the module ran (current, previous, last_known_good, releases).
  returned: always
  type: dict
migrations_path:
  description: Where the release's migrations were exported (O(export_migrations)), when they were.
  returned: when exported
  type: str
removed:
  description: Release directories removed (O(state=pruned)).
  returned: always
  type: list
  elements: str
opspack_event:
  description: The step this run made, for the records (C(kind=step); C(step) unpack, record, or prune), when something changed (not in check mode).
  returned: when something changed
  type: dict
  sample: {"kind": "step", "site": "blog", "result": "done", "step": "unpack", "release": "1.4.2+0a1b2c3d4e5f"}
duration_s:
  description: Seconds the module took.
  returned: always
  type: float
"""

import grp
import hashlib
import json
import os
import shutil
import tarfile
import time

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.opspack.platform.plugins.module_utils.common import makedirs_mode, sha256_file
from ansible_collections.opspack.platform.plugins.module_utils.release import (
    ReleaseError, check_links, check_release_id, resolve_in_tree)
from ansible_collections.opspack.platform.plugins.module_utils.site_state import (
    read_record, slot_links, slot_of, write_record)
from ansible_collections.opspack.platform.plugins.module_utils.events import event, utc_stamp

STEPS = {"present": "unpack", "live": "record", "failed": "record failed", "pruned": "prune"}


def safe_members(tar: tarfile.TarFile, shared: list[str]) -> list[tarfile.TarInfo]:
    """The artifact's members, once every one is known to stay inside the release: relative names
    without `..` (the kernel would follow a link before climbing, a textual normpath would not),
    each once, only files, directories and links, no member written through a link, and every
    link resolved (through the others, as the kernel would) to a place inside the tree. The
    shared paths become links to shared/, which the site's user writes: no link may lead there."""
    members, names, links = [], {}, {}
    for member in tar.getmembers():
        parts = [part for part in member.name.split("/") if part not in ("", ".")]
        name = "/".join(parts)
        if (member.name.startswith("/") or ".." in parts or not name or name in names
                or not (member.isfile() or member.isdir() or member.issym())):
            raise ReleaseError(f"the artifact holds {member.name!r}, which would land outside the release, "
                               "comes twice, or is not a file, directory or link: refused, nothing was unpacked")
        names[name] = member.name
        if member.issym():
            links[name] = member.linkname
        members.append(member)
    try:
        check_links(links)
        # The shared paths become links to shared/ (outside the release): resolved with them, no
        # link of the artifact may lead there.
        with_shared = dict(links, **{path.strip("/"): "/srv/<site>/shared" for path in shared})
        for name in sorted(links):
            try:
                resolve_in_tree(with_shared, name)
            except ReleaseError:
                raise ReleaseError(f"{name} links to {links[name]}, into the site's shared files") from None
        for name, original in names.items():
            parent = os.path.dirname(name)
            if parent and resolve_in_tree(links, parent) != parent:
                raise ReleaseError(f"{original} would be written through a link")
    except ReleaseError as exc:
        raise ReleaseError(f"the artifact is refused, nothing was unpacked: {exc}") from None
    return members


def run(module: AnsibleModule, argv: list[str], cwd: str, what: str) -> None:
    rc, out, err = module.run_command(argv, cwd=cwd)
    if rc != 0:
        tail = (err or out).strip().splitlines()[-5:]
        raise ReleaseError(f"{what} failed (exit {rc}): {' | '.join(tail)}")


def unpack(module: AnsibleModule, site_dir: str, result: dict) -> None:
    params = module.params
    release_id = check_release_id(params["release_id"])
    releases = os.path.join(site_dir, "releases")
    final = os.path.join(releases, release_id)
    result["path"] = final
    if not os.path.isfile(params["artifact"] or ""):
        if module.check_mode and not os.path.isdir(final):
            # A dry run has not copied the artifact: report the unpack it would do.
            result["changed"] = True
            return
        raise ReleaseError(f"the artifact {params['artifact']} is not on the host")
    found = sha256_file(params["artifact"])
    if found != params["sha256"]:
        raise ReleaseError(f"the artifact {params['artifact']} has sha256 {found}, not {params['sha256']}: "
                           "it was damaged or replaced; nothing was unpacked")
    record = read_record(site_dir)
    known = record["releases"].get(release_id, {})
    if os.path.isdir(final) and known.get("sha256") == found:
        export(module, final, release_id, result)
        return
    if os.path.isdir(final):
        raise ReleaseError(f"{final} exists but is not the release this artifact holds (sha256 differs or "
                           "unrecorded): refused to replace it")
    result["changed"] = True
    if module.check_mode:
        return
    partial = final + ".partial"
    shutil.rmtree(partial, ignore_errors=True)  # a killed run's leftovers
    try:
        build_release(module, site_dir, partial)
        if params["export_migrations"]:
            migration_files(module, partial, release_id)  # refused here, before the release exists
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    if params["venv"]:
        retarget_venv(os.path.join(partial, "venv"), os.path.join(final, "venv"))
    os.rename(partial, final)
    record["releases"][release_id] = {"sha256": found, "unpacked_at": utc_stamp(), "status": "unpacked"}
    write_record(site_dir, record)
    export(module, final, release_id, result)


def build_release(module: AnsibleModule, site_dir: str, partial: str) -> None:
    """Unpack the artifact into partial, link the shared paths, build the venv, set owners."""
    params = module.params
    with tarfile.open(params["artifact"]) as tar:
        # Checked before anything is written.
        members = safe_members(tar, params["shared_links"])
        os.mkdir(partial, 0o750)
        tar.extractall(partial, members=members)  # nosec B202 - every member checked by safe_members
    for relative in params["shared_links"]:
        link = os.path.join(partial, relative)
        if os.path.isdir(link) and not os.path.islink(link):
            shutil.rmtree(link)
        elif os.path.lexists(link):
            os.unlink(link)
        os.makedirs(os.path.dirname(link), exist_ok=True)
        os.symlink(os.path.join(site_dir, "shared", relative), link)
    if params["venv"]:
        argv = ["python3", "-m", "venv"] + (["--system-site-packages"] if params["system_site_packages"] else []) + ["venv"]
        run(module, argv, partial, "building the virtual environment")
        requirements = os.path.join(partial, params["requirements"])
        if os.path.isfile(requirements) and os.path.getsize(requirements) > 0:
            wheels = os.path.join(partial, params["wheels_dir"])
            offline = ["--no-index", "--find-links", wheels] if params["wheels_dir"] and os.path.isdir(wheels) else []
            run(module, [os.path.join(partial, "venv", "bin", "pip"), "install", "--no-input", "--disable-pip-version-check"]
                + offline + ["-r", requirements], partial, f"pip install -r {params['requirements']}")
    gid = grp.getgrnam(params["group"]).gr_gid if params["group"] else -1
    for directory, subdirectories, names in os.walk(partial):
        for name in [directory] + [os.path.join(directory, entry) for entry in subdirectories + names]:
            if not os.path.islink(name):
                os.chown(name, 0, gid)
    os.chmod(partial, 0o750)


def retarget_venv(built: str, final: str) -> None:
    """The venv is built inside <release>.partial and renamed with it: every console script's
    shebang (pip, gunicorn, alembic...), the activate scripts and pyvenv.cfg name the path it was
    built at. Point them at the path it will live at, before the rename makes the release exist."""
    old, new = built.encode(), final.encode()
    candidates = [os.path.join(built, "pyvenv.cfg")] + [
        os.path.join(built, "bin", name) for name in sorted(os.listdir(os.path.join(built, "bin")))]
    for path in candidates:
        if os.path.islink(path) or not os.path.isfile(path) or os.path.getsize(path) > 1 << 20:
            continue
        with open(path, "rb") as handle:
            data = handle.read()
        if old in data and b"\0" not in data:
            mode = os.stat(path).st_mode & 0o7777
            with open(path, "wb") as handle:
                handle.write(data.replace(old, new))
            os.chmod(path, mode)


def export(module: AnsibleModule, final: str, release_id: str, result: dict) -> None:
    """Copy the release's migrations where the database's user can read them (complete or absent).

    Runs as root, so it follows no link it has not resolved: the migrations directory and each
    file in it must resolve to a regular file inside the release tree (never into shared/, which
    the site's user can write, nor anywhere else on the host). Anything else is refused before
    anything is copied."""
    params = module.params
    if not params["export_migrations"]:
        return
    files = migration_files(module, final, release_id)
    if files is None:
        return
    target = os.path.join(params["export_migrations"], release_id)
    result["migrations_path"] = target
    if os.path.isdir(target):
        return
    result["changed"] = True
    if module.check_mode:
        return
    makedirs_mode(params["export_migrations"], 0o755)
    partial = target + ".partial"
    shutil.rmtree(partial, ignore_errors=True)
    os.mkdir(partial, 0o755)
    for name, real in files.items():
        shutil.copyfile(real, os.path.join(partial, name))
        os.chmod(os.path.join(partial, name), 0o644)
    os.chmod(partial, 0o755)
    os.rename(partial, target)


def migration_files(module: AnsibleModule, final: str, release_id: str) -> dict | None:
    """Each migration file's name and the real file it resolves to (None: the release has none)."""
    params = module.params
    tree = os.path.realpath(final)
    source = os.path.join(final, params["migrations_dir"])
    if not os.path.lexists(source):
        return None
    if not inside(os.path.realpath(source), tree) or not os.path.isdir(source):
        raise ReleaseError(f"{params['migrations_dir']} of release {release_id} is not a directory inside the release "
                           "(it leads elsewhere through a link): refused, nothing was exported")
    files = {}
    for name in sorted(os.listdir(source)):
        real = os.path.realpath(os.path.join(source, name))
        if not inside(real, tree) or not os.path.isfile(real):
            raise ReleaseError(f"{params['migrations_dir']}/{name} of release {release_id} is not a file inside the "
                               "release (a directory, or a link leading out of it): refused, nothing was exported")
        files[name] = real
    return files


def inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root + os.sep)


def config_hash(paths: list[str]) -> str:
    """One digest of the site's configuration: each file's path and the digest of its content."""
    if not paths:
        return ""
    lines = []
    for path in paths:
        try:
            lines.append(f"{path}\0{sha256_file(path)}")
        except FileNotFoundError:
            lines.append(f"{path}\0missing")
    return hashlib.sha256("\n".join(lines).encode("utf-8")).hexdigest()


def mark(module: AnsibleModule, site_dir: str, result: dict) -> None:
    params = module.params
    release_id = check_release_id(params["release_id"])
    result["path"] = os.path.join(site_dir, "releases", release_id)
    record = read_record(site_dir)
    entry = dict(record["releases"].get(release_id, {"unpacked_at": utc_stamp()}))
    before = json.dumps(record, sort_keys=True)
    if params["state"] == "failed":
        already = entry.get("status") == "failed"
        entry.update(status="failed", reason=params["reason"][:300],
                     failed_at=entry.get("failed_at") if already else utc_stamp())
    else:
        if not params["slot"]:
            raise ReleaseError("state=live needs the slot that serves the release")
        current = {"release_id": release_id, "slot": params["slot"]}
        was_current = dict(record["current"])
        replaced = params["replaces"] or was_current.get("release_id", "")
        arrives = was_current.get("release_id") != release_id
        if arrives or was_current.get("slot") != params["slot"]:
            record["current"] = dict(current, since=utc_stamp())
        if replaced and replaced != release_id and record["previous"].get("release_id") != replaced:
            record["previous"] = was_current if was_current.get("release_id") == replaced else \
                {"release_id": replaced, "slot": slot_of(site_dir, replaced), "since": utc_stamp()}
        elif arrives and was_current and not (replaced and replaced != release_id):
            record["previous"] = was_current
        if params["went_live_by"] == "deploy" and (arrives or "deploy_order" not in entry):
            entry["deploy_order"] = 1 + max((item.get("deploy_order", 0) for item in record["releases"].values()), default=0)
        if params["went_live_by"] == "rollback" and replaced and replaced != release_id and replaced in record["releases"]:
            # The release a rollback left is no rollback target any more, and not a good one.
            record["releases"][replaced] = dict(record["releases"][replaced], status="rolled_back",
                                                reason=f"rolled back to {release_id}")
        entry.update(status="live")
        entry.pop("reason", None)
        if params["last_known_good"] and record["last_known_good"].get("release_id") != release_id:
            record["last_known_good"] = dict(current, since=utc_stamp())
    record["releases"][release_id] = entry
    if params["state"] == "live":
        result["config_hash"] = config_hash(params["config_files"])
    if json.dumps(record, sort_keys=True) != before:
        result["changed"] = True
        if not module.check_mode:
            write_record(site_dir, record)
    result["record"] = record


def prune(module: AnsibleModule, site_dir: str, result: dict) -> None:
    params = module.params
    releases_dir = os.path.join(site_dir, "releases")
    record = read_record(site_dir)
    protected = set(params["protect"])
    for key in ("current", "previous", "last_known_good"):
        if record[key].get("release_id"):
            protected.add(record[key]["release_id"])
    protected |= set(slot_links(site_dir).values())
    present = sorted(os.listdir(releases_dir)) if os.path.isdir(releases_dir) else []
    partials = [name for name in present if name.endswith(".partial")]
    good = [name for name in present if name in record["releases"] and record["releases"][name].get("status") != "failed"]
    good.sort(key=lambda name: (record["releases"][name].get("unpacked_at", ""), name), reverse=True)
    keep = set(good[:max(params["keep"], 0)]) | protected
    doomed = [name for name in present if name not in keep and (name in partials or name in record["releases"])]
    result["removed"] = sorted(doomed)
    if doomed:
        result["changed"] = True
        if not module.check_mode:
            for name in doomed:
                shutil.rmtree(os.path.join(releases_dir, name))
                if params["export_migrations"]:
                    shutil.rmtree(os.path.join(params["export_migrations"], name), ignore_errors=True)
                record["releases"].pop(name, None)
            write_record(site_dir, record)
    result["record"] = record


def main() -> None:
    module = AnsibleModule(
        argument_spec=dict(
            site=dict(type="str", required=True),
            base_dir=dict(type="path", default="/srv"),
            state=dict(type="str", choices=["present", "live", "failed", "pruned"], default="present"),
            release_id=dict(type="str"),
            artifact=dict(type="path"),
            sha256=dict(type="str"),
            group=dict(type="str"),
            shared_links=dict(type="list", elements="str", default=[]),
            venv=dict(type="bool", default=True),
            system_site_packages=dict(type="bool", default=False),
            requirements=dict(type="str", default="requirements.txt"),
            wheels_dir=dict(type="str", default="wheels"),
            migrations_dir=dict(type="str", default="migrations"),
            export_migrations=dict(type="path"),
            slot=dict(type="str"),
            last_known_good=dict(type="bool", default=False),
            went_live_by=dict(type="str", choices=["deploy", "rollback"], default="deploy"),
            replaces=dict(type="str", default=""),
            config_files=dict(type="list", elements="path", default=[]),
            reason=dict(type="str", default=""),
            keep=dict(type="int", default=5),
            protect=dict(type="list", elements="str", default=[]),
        ),
        required_if=[
            ("state", "present", ["release_id", "artifact", "sha256"]),
            ("state", "live", ["release_id", "slot"]),
            ("state", "failed", ["release_id"]),
        ],
        supports_check_mode=True,
    )
    started = time.monotonic()
    site_dir = os.path.join(module.params["base_dir"], module.params["site"])
    result = dict(changed=False, site=module.params["site"], operation=module.params["state"],
                  release_id=module.params["release_id"] or "", path="", record={}, removed=[])
    state = module.params["state"]
    try:
        if not os.path.isdir(os.path.join(site_dir, "releases")):
            raise ReleaseError(f"site {module.params['site']} has no {site_dir}/releases on this host: is it provisioned?")
        if state == "present":
            unpack(module, site_dir, result)
        elif state in ("live", "failed"):
            mark(module, site_dir, result)
        else:
            prune(module, site_dir, result)
        if not result["record"]:
            result["record"] = read_record(site_dir)
    except (ReleaseError, OSError, tarfile.TarError, KeyError) as exc:
        module.fail_json(msg=str(exc), duration_s=round(time.monotonic() - started, 3),
                         opspack_event=event("step", module.params["site"], "", "failed", step=STEPS[state],
                                             release=result["release_id"], reason=str(exc)), **result)
    if result["changed"] and not module.check_mode:
        result["opspack_event"] = event("step", module.params["site"], "", "done", step=STEPS[state],
                                        release=result["release_id"], slot=module.params["slot"] or "")
    module.exit_json(duration_s=round(time.monotonic() - started, 3), **result)


if __name__ == "__main__":
    main()
