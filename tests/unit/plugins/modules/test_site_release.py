"""Unit tests for opspack.platform.site_release on a temporary site tree with real tarballs."""

from __future__ import annotations

import grp
import hashlib
import io
import json
import os
import subprocess
import tarfile

import pytest

from ansible_collections.opspack.platform.plugins.module_utils import release


def artifact(tmp_path, version: str, extra: dict | None = None) -> tuple[str, str, str]:
    tree = tmp_path / f"src-{version}"
    (tree / "migrations").mkdir(parents=True, exist_ok=True)
    (tree / "VERSION").write_text(version + "\n")
    (tree / "uploads").mkdir(exist_ok=True)
    (tree / "uploads" / "shipped.txt").write_text("replaced by the shared link\n")
    for name, text in (extra or {}).items():
        (tree / name).write_text(text)
    data = release.build_tarball(str(tree))
    sha = hashlib.sha256(data).hexdigest()
    path = tmp_path / f"{version}.tar.gz"
    path.write_bytes(data)
    return release.release_id(version, sha), str(path), sha


@pytest.fixture(name="site")
def fixture_site(run_module, tmp_path):
    for sub in ("releases", "shared/uploads", "slots"):
        (tmp_path / "srv" / "blog" / sub).mkdir(parents=True)

    def run(check_mode=False, **args):
        args.setdefault("site", "blog")
        args.setdefault("base_dir", str(tmp_path / "srv"))
        args.setdefault("venv", False)
        args.setdefault("group", grp.getgrgid(os.getgid()).gr_name)
        return run_module("site_release", check_mode=check_mode, **args)
    run.dir = tmp_path / "srv" / "blog"
    # What serves the site is read by site_release_info, which shares the record's format.
    run.info = lambda **args: run_module("site_release_info", site="blog", base_dir=str(tmp_path / "srv"), **args)
    return run


def unpack(site, tmp_path, version, **extra):
    release_id, path, sha = artifact(tmp_path, version, extra or None)
    result = site(release_id=release_id, artifact=path, sha256=sha, shared_links=["uploads"])
    assert not result.get("failed"), result
    return release_id, result


def test_a_release_is_unpacked_complete_with_shared_links_and_recorded(site, tmp_path):
    release_id, result = unpack(site, tmp_path, "1.0.0")
    tree = site.dir / "releases" / release_id
    assert result["changed"] and (tree / "VERSION").read_text() == "1.0.0\n"
    assert os.readlink(tree / "uploads") == str(site.dir / "shared" / "uploads")
    assert not (site.dir / "releases" / f"{release_id}.partial").exists()
    record = json.loads((site.dir / "release-state.json").read_text())
    assert record["releases"][release_id]["status"] == "unpacked"
    _, again = unpack(site, tmp_path, "1.0.0")
    assert not again["changed"], "the same release again changes nothing"


def test_a_damaged_artifact_is_refused_and_nothing_is_unpacked(site, tmp_path):
    release_id, path, sha = artifact(tmp_path, "1.0.0")
    result = site(release_id=release_id, artifact=path, sha256="0" * 64)
    assert result["failed"] and "damaged or replaced" in result["msg"]
    assert os.listdir(site.dir / "releases") == []


def test_a_member_escaping_the_release_is_refused(site, tmp_path):
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        info = tarfile.TarInfo("../../evil")
        info.size = 0
        tar.addfile(info, io.BytesIO(b""))
    path = tmp_path / "evil.tar.gz"
    path.write_bytes(buffer.getvalue())
    sha = hashlib.sha256(buffer.getvalue()).hexdigest()
    result = site(release_id=f"1.0.0+{sha[:12]}", artifact=str(path), sha256=sha)
    assert result["failed"] and "outside the release" in result["msg"]
    assert not (site.dir.parent / "evil").exists()


def hostile_artifact(tmp_path, members: list[tuple[str, str]]) -> tuple[str, str, str]:
    """A tarball written by hand (build_tarball refuses such trees): (name, link text or '' for a file)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, link in members:
            info = tarfile.TarInfo(name)
            if link:
                info.type, info.linkname = tarfile.SYMTYPE, link
                tar.addfile(info)
            else:
                info.size = 3
                tar.addfile(info, io.BytesIO(b"sql"))
    path = tmp_path / "hostile.tar.gz"
    path.write_bytes(buffer.getvalue())
    sha = hashlib.sha256(buffer.getvalue()).hexdigest()
    return f"1.0.0+{sha[:12]}", str(path), sha


@pytest.mark.parametrize("members, reason", [
    # the chain: each text looks inside, followed together they reach /root/secret
    ([("a/b/c/d/l", "../../../.."), ("migrations/x", "../a/b/c/d/l/../../../../root/secret")], "climbs above the root"),
    ([("migrations", "/etc")], "absolute path /etc"),
    # a file whose name climbs (a textual normpath would drop `l/..`; the kernel follows l first)
    ([("a/b/c/l", "../../.."), ("a/b/c/l/../../../pwned", "")], "outside the release"),
    ([("l", "."), ("l/../x", "")], "outside the release"),
    # a file written through a link that stays inside is refused too: extraction would follow it
    ([("lib", "vendor"), ("vendor/x", ""), ("lib/y", "")], "written through a link"),
    ([("twice", ""), ("twice", "elsewhere")], "comes twice"),
])
def test_a_hostile_artifact_is_refused_before_anything_is_written(site, tmp_path, members, reason):
    release_id, path, sha = hostile_artifact(tmp_path, members)
    export = tmp_path / "export"
    result = site(release_id=release_id, artifact=path, sha256=sha, export_migrations=str(export))
    assert result["failed"] and reason in result["msg"] and "nothing was unpacked" in result["msg"], result
    assert os.listdir(site.dir / "releases") == [], "no release and no .partial may be left"
    assert not export.exists()


@pytest.mark.parametrize("link, target", [("requirements.txt", "uploads/r.txt"), ("venv", "uploads")])
def test_a_link_into_the_shared_files_is_refused(site, tmp_path, link, target):
    """shared/ is the site user's: root's pip or venv build must never follow a link into it."""
    release_id, path, sha = hostile_artifact(tmp_path, [("uploads/keep.txt", ""), (link, target)])
    result = site(release_id=release_id, artifact=path, sha256=sha, shared_links=["uploads"])
    assert result["failed"] and "into the site's shared files" in result["msg"], result
    assert os.listdir(site.dir / "releases") == []


def test_migrations_leading_into_shared_or_out_of_the_tree_are_never_exported(site, tmp_path):
    """shared/ is the site user's to write: a root export following a link there could be pointed
    at any file on the host. Refused before the release exists, and nothing is copied."""
    secret = tmp_path / "secret"
    secret.write_text("root only")
    os.chmod(secret, 0o600)
    (site.dir / "shared" / "migrations").mkdir()
    os.symlink(secret, site.dir / "shared" / "migrations" / "001_x.sql")
    release_id, path, sha = artifact(tmp_path, "1.0.0")
    export = tmp_path / "export"
    result = site(release_id=release_id, artifact=path, sha256=sha, shared_links=["uploads", "migrations"],
                  export_migrations=str(export))
    assert result["failed"] and "refused, nothing was exported" in result["msg"], result
    assert os.listdir(site.dir / "releases") == [] and not export.exists()


def test_migrations_are_exported_as_plain_files_readable_by_the_database_user(site, tmp_path):
    release_id, path, sha = artifact(tmp_path, "1.0.0")
    export = tmp_path / "export"
    result = site(release_id=release_id, artifact=path, sha256=sha, export_migrations=str(export))
    assert not result.get("failed"), result
    assert result["migrations_path"] == str(export / release_id) and os.listdir(export) == [release_id]


def test_live_records_current_previous_and_last_known_good(site, tmp_path):
    first, _ = unpack(site, tmp_path, "1.0.0")
    second, _ = unpack(site, tmp_path, "2.0.0")
    site(state="live", release_id=first, slot="blue", last_known_good=True)
    result = site(state="live", release_id=second, slot="green")
    record = result["record"]
    assert record["current"]["release_id"] == second and record["previous"]["release_id"] == first
    assert record["last_known_good"]["release_id"] == first, "no smoke tests passed: last known good stays"
    assert not site(state="live", release_id=second, slot="green")["changed"]


def serve(site, tmp_path, release_id: str, slot: str) -> None:
    """Point slot at the release and nginx's upstream (a file the status read parses) at slot."""
    link = site.dir / "slots" / slot
    if os.path.lexists(link):
        os.unlink(link)
    os.symlink(site.dir / "releases" / release_id, link)
    conf = tmp_path / "conf.d"
    conf.mkdir(exist_ok=True)
    (conf / "opspack-upstream-blog.conf").write_text(f"# slot: {slot}\nupstream opspack_blog {{\n}}\n")


def rollback_target(site, tmp_path) -> str:
    return site.info(upstream_conf_dir=str(tmp_path / "conf.d"))["rollback_target"]


def test_plain_rollbacks_go_back_along_the_deploy_order_never_forward(site, tmp_path):
    one, two, three = (unpack(site, tmp_path, version)[0] for version in ("1.0.0", "2.0.0", "3.0.0"))
    for release_id, slot in ((one, "blue"), (two, "green"), (three, "blue")):
        site(state="live", release_id=release_id, slot=slot, last_known_good=True)
        serve(site, tmp_path, release_id, slot)
    assert rollback_target(site, tmp_path) == two
    # rollback to 2.0.0: 3.0.0 is left and rolled back; the next plain rollback goes to 1.0.0
    site(state="live", release_id=two, slot="green", last_known_good=True, went_live_by="rollback")
    serve(site, tmp_path, two, "green")
    record = site.info(upstream_conf_dir=str(tmp_path / "conf.d"))["record"]
    assert record["releases"][three]["status"] == "rolled_back"
    assert rollback_target(site, tmp_path) == one
    site(state="live", release_id=one, slot="blue", last_known_good=True, went_live_by="rollback")
    serve(site, tmp_path, one, "blue")
    assert rollback_target(site, tmp_path) == "", "nothing was deployed before 1.0.0: never forward to 2.0.0"
    # a deploy of 3.0.0 again puts it last in the order; its plain rollback is 1.0.0, not the rolled-back 2.0.0
    site(state="live", release_id=three, slot="green", last_known_good=True)
    serve(site, tmp_path, three, "green")
    assert rollback_target(site, tmp_path) == one
    # 2.0.0 deployed again goes last too: its plain rollback is 3.0.0, deployed before it
    site(state="live", release_id=two, slot="blue", last_known_good=True)
    serve(site, tmp_path, two, "blue")
    record = site.info(upstream_conf_dir=str(tmp_path / "conf.d"))["record"]
    assert record["releases"][two]["deploy_order"] > record["releases"][three]["deploy_order"]
    assert rollback_target(site, tmp_path) == three


def test_the_rollback_target_follows_what_serves_and_what_is_on_the_host(site, tmp_path):
    one, two = (unpack(site, tmp_path, version)[0] for version in ("1.0.0", "2.0.0"))
    site(state="live", release_id=one, slot="blue", last_known_good=True)
    site(state="failed", release_id=two, reason="health gate")
    serve(site, tmp_path, one, "blue")
    assert rollback_target(site, tmp_path) == "", "a failed release is never a rollback target"
    site(state="live", release_id=two, slot="green", last_known_good=True)
    serve(site, tmp_path, two, "green")
    assert rollback_target(site, tmp_path) == one
    os.rename(site.dir / "releases" / one, tmp_path / "gone")
    assert rollback_target(site, tmp_path) == "", "a release no longer on the host cannot be gone back to"


def test_after_an_interrupted_run_a_plain_rollback_goes_to_the_recorded_release_or_finishes_the_rollback(site, tmp_path):
    one, two, three = (unpack(site, tmp_path, version)[0] for version in ("1.0.0", "2.0.0", "3.0.0"))
    for release_id, slot in ((one, "blue"), (two, "green")):
        site(state="live", release_id=release_id, slot=slot, last_known_good=True)
        serve(site, tmp_path, release_id, slot)
    # a deploy of 3.0.0 killed after its switch: 3.0.0 serves, the record still says 2.0.0
    serve(site, tmp_path, three, "blue")
    assert rollback_target(site, tmp_path) == two
    # a rollback from 2.0.0 killed after its switch: 1.0.0 serves, the record still says 2.0.0
    serve(site, tmp_path, one, "blue")
    assert rollback_target(site, tmp_path) == one, "the rollback is finished, never taken further back"


def test_a_rollback_after_a_killed_deploy_marks_the_release_that_served_and_no_other(site, tmp_path):
    p_, o_, n_ = (unpack(site, tmp_path, version)[0] for version in ("1.0.0", "2.0.0", "3.0.0"))
    for release_id, slot in ((p_, "blue"), (o_, "green")):
        site(state="live", release_id=release_id, slot=slot, last_known_good=True)
        serve(site, tmp_path, release_id, slot)
    serve(site, tmp_path, n_, "blue")  # a deploy of 3.0.0 killed after its switch
    assert rollback_target(site, tmp_path) == o_
    record = site(state="live", release_id=o_, slot="green", last_known_good=True, went_live_by="rollback",
                  replaces=n_)["record"]
    assert record["releases"][n_]["status"] == "rolled_back" and record["releases"][p_]["status"] == "live"
    assert record["previous"]["release_id"] == n_ and record["current"]["release_id"] == o_


def test_a_killed_named_rollback_is_finished_never_taken_forward(site, tmp_path):
    a, b, c = (unpack(site, tmp_path, version)[0] for version in ("1.0.0", "2.0.0", "3.0.0"))
    for release_id, slot in ((a, "blue"), (b, "green"), (c, "blue")):
        site(state="live", release_id=release_id, slot=slot, last_known_good=True)
        serve(site, tmp_path, release_id, slot)
    serve(site, tmp_path, a, "green")  # release_rollback_to=1.0.0 killed after its switch
    assert rollback_target(site, tmp_path) == a
    # a killed redeploy of a release that went live before looks the same; its lock tells them apart
    (site.dir / "deploy.lock").mkdir()
    (site.dir / "deploy.lock" / "holder.json").write_text(json.dumps({"operation": "deploy", "version": a}))
    assert rollback_target(site, tmp_path) == c


def test_a_settled_live_record_is_not_rewritten(site, tmp_path):
    one, _ = unpack(site, tmp_path, "1.0.0")
    assert site(state="live", release_id=one, slot="blue", last_known_good=True)["changed"]
    again = site(state="live", release_id=one, slot="blue", last_known_good=True)
    assert not again["changed"] and again["record"]["releases"][one]["deploy_order"] == 1


def test_prune_keeps_newest_good_and_protected_never_counts_failed(site, tmp_path):
    ids = [unpack(site, tmp_path, f"1.0.{n}")[0] for n in range(5)]
    site(state="failed", release_id=ids[4], reason="health gate")
    site(state="live", release_id=ids[0], slot="blue", last_known_good=True)
    (site.dir / "releases" / "9.9.9+000000000000.partial").mkdir()
    result = site(state="pruned", keep=2)
    # Good releases 1.0.3 and 1.0.2 are the newest two; 1.0.0 is current and last known good.
    assert result["removed"] == sorted([ids[1], ids[4], "9.9.9+000000000000.partial"]), result
    assert sorted(os.listdir(site.dir / "releases")) == sorted([ids[0], ids[2], ids[3]])
    assert site(state="pruned", keep=2, check_mode=True)["removed"] == []


def test_a_release_in_a_slot_is_never_pruned(site, tmp_path):
    ids = [unpack(site, tmp_path, f"1.0.{n}")[0] for n in range(3)]
    os.symlink(site.dir / "releases" / ids[0], site.dir / "slots" / "green")
    result = site(state="pruned", keep=1)
    assert ids[0] not in result["removed"] and ids[2] not in result["removed"] and result["removed"] == [ids[1]]


def test_bad_release_ids_and_unprovisioned_sites_are_refused(site, run_module, tmp_path):
    assert "is not <version>+<12 hex digits>" in site(state="failed", release_id="latest")["msg"]
    for module in ("site_release", "site_release_info"):
        result = run_module(module, site="shop", base_dir=str(tmp_path / "srv"),
                            **({"state": "pruned"} if module == "site_release" else {}))
        assert result["failed"] and "is it provisioned" in result["msg"], module


def test_a_dry_run_before_the_artifact_is_copied_reports_the_unpack(site, tmp_path):
    release_id, path, sha = artifact(tmp_path, "1.0.0")
    result = site(check_mode=True, release_id=release_id, artifact=str(tmp_path / "not-copied.tar.gz"), sha256=sha)
    assert result["changed"] and not result.get("failed") and os.listdir(site.dir / "releases") == []


def test_status_reads_the_slots_and_the_slot_nginx_serves(site, tmp_path):
    release_id, _ = unpack(site, tmp_path, "1.0.0")
    os.symlink(site.dir / "releases" / release_id, site.dir / "slots" / "green")
    conf = tmp_path / "conf.d"
    conf.mkdir()
    (conf / "opspack-upstream-blog.conf").write_text("# slot: green\nupstream opspack_blog {\n}\n")
    result = site.info(upstream_conf_dir=str(conf))
    assert result["slots"] == {"green": release_id}
    assert result["serving"] == {"slot": "green", "release_id": release_id}
    (conf / "opspack-upstream-blog.conf").write_text("upstream opspack_blog {\n}\n")
    assert site.info(upstream_conf_dir=str(conf))["serving"] == {"slot": "", "release_id": ""}


def test_live_returns_a_config_hash_that_follows_the_configuration(site, tmp_path):
    release_id, _ = unpack(site, tmp_path, "1.0.0")
    unit, slot_env = tmp_path / "web@.service", tmp_path / "blue.env"
    unit.write_text("[Service]\nExecStart=/srv/blog/run\n")
    slot_env.write_text("PORT=8000\n")
    files = [str(unit), str(slot_env)]
    first = site(state="live", release_id=release_id, slot="blue", last_known_good=True, config_files=files)
    assert len(first["config_hash"]) == 64
    again = site(state="live", release_id=release_id, slot="blue", config_files=files)
    assert again["config_hash"] == first["config_hash"] and not again["changed"], "the hash alone changes nothing"
    slot_env.write_text("PORT=8001\n")
    assert site(state="live", release_id=release_id, slot="blue", config_files=files)["config_hash"] != first["config_hash"]
    slot_env.unlink()
    assert len(site(state="live", release_id=release_id, slot="blue", config_files=files)["config_hash"]) == 64
    assert site(state="live", release_id=release_id, slot="blue")["config_hash"] == ""


def test_each_change_says_its_step_and_a_settled_one_says_nothing(site, tmp_path):
    release_id, path, sha = artifact(tmp_path, "1.0.0")
    first = site(release_id=release_id, artifact=path, sha256=sha)
    assert first["opspack_event"] == {"kind": "step", "site": "blog", "result": "done", "step": "unpack",
                                      "release": release_id}
    assert "opspack_event" not in site(release_id=release_id, artifact=path, sha256=sha)
    os.symlink(site.dir / "releases" / release_id, site.dir / "slots" / "green")
    live = site(state="live", release_id=release_id, slot="green", last_known_good=True)
    assert live["opspack_event"]["step"] == "record" and live["opspack_event"]["slot"] == "green"
    assert "opspack_event" not in site(check_mode=True, state="failed", release_id=release_id, reason="smoke")
    failed = site(state="failed", release_id="latest")
    assert failed["failed"] and failed["opspack_event"]["result"] == "failed" and failed["opspack_event"]["reason"]


def test_the_venv_built_in_partial_runs_its_console_scripts_from_the_release(site, tmp_path):
    """Built in <id>.partial and renamed: a console script's shebang must name the final path
    (an app's gunicorn or alembic from its requirements would fail with 203/EXEC otherwise)."""
    release_id, path, sha = artifact(tmp_path, "1.0.0")
    result = site(release_id=release_id, artifact=path, sha256=sha, venv=True)
    assert not result.get("failed"), result
    venv = site.dir / "releases" / release_id / "venv"
    pip = venv / "bin" / "pip"
    # A shebang, or (a path too long for one, as here) pip's /bin/sh trampoline naming it.
    assert f"{venv}/bin/python" in pip.read_text() and ".partial" not in pip.read_text(), pip.read_text()[:300]
    assert ".partial" not in (venv / "bin" / "activate").read_text() + (venv / "pyvenv.cfg").read_text()
    ran = subprocess.run([str(pip), "--version"], capture_output=True, text=True, check=False)
    assert ran.returncode == 0 and str(venv) in ran.stdout, ran.stdout + ran.stderr
