"""The scheduled-backup program, built as the action plugin builds it and run by a bare python3."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys

import pytest

from ansible_collections.opspack.platform.plugins.action.backup_schedule import build_program, program_members
from ansible_collections.opspack.platform.plugins.module_utils import scheduled_backup


def bare_python() -> list[str]:
    """A python3 that cannot import Ansible, as on a host: Debian's, else this one without site-packages."""
    system = shutil.which("python3", path="/usr/bin")
    if system and subprocess.run([system, "-I", "-c", "import ansible"], capture_output=True, check=False).returncode:
        return [system, "-I"]
    return [sys.executable, "-I", "-S"]


@pytest.fixture(name="program", scope="module")
def fixture_program(tmp_path_factory):
    path = tmp_path_factory.mktemp("program") / "opspack-backup.pyz"
    path.write_bytes(build_program())
    return path


@pytest.fixture(name="lab")
def fixture_lab(tmp_path, program):
    uploads = tmp_path / "srv/blog/shared/uploads"
    uploads.mkdir(parents=True)
    (uploads / "a.txt").write_text("first upload\n")
    (tmp_path / "backups").mkdir()

    def jobs(*extra):
        document = {"format": 1, "failure_marker_dir": str(tmp_path / "markers"), "job_timeout": 120, "jobs": [
            {"name": "blog-files-shared_uploads", "module": "files_backup", "requires_dir": str(uploads),
             "args": {"site": "blog", "path": str(uploads), "backup_dir": str(tmp_path / "backups")}},
            *extra]}
        (tmp_path / "jobs.json").write_text(json.dumps(document))

    def run(*args):
        return subprocess.run([*bare_python(), str(program), "run", "--jobs", str(tmp_path / "jobs.json"), *args],
                              capture_output=True, text=True, check=False, timeout=120, cwd="/")
    jobs()
    return {"root": tmp_path, "jobs": jobs, "run": run}


def test_the_program_is_the_same_bytes_from_the_same_sources():
    assert hashlib.sha256(build_program()).digest() == hashlib.sha256(build_program()).digest()
    members = program_members()
    assert "ansible/module_utils/basic.py" in members and "__main__.py" in members
    assert {"ansible_collections/opspack/platform/plugins/modules/" + name + ".py"
            for name in scheduled_backup.MODULES} <= set(members)


def test_a_scheduled_run_takes_the_backup_with_its_manifest(lab):
    done = lab["run"]()
    assert done.returncode == 0, done.stdout + done.stderr
    manifests = sorted((lab["root"] / "backups").glob("*.manifest.json"))
    assert len(manifests) == 1, done.stdout
    manifest = json.loads(manifests[0].read_text())
    assert manifest["site"] == "blog" and manifest["files"] == 1 and manifest["engine"] == "files", manifest
    assert done.stdout.startswith(f"blog-files-shared_uploads: took {manifest['backup_id']}"), done.stdout
    assert not (lab["root"] / "markers").exists()


def test_a_failed_job_leaves_a_marker_the_others_still_run_and_success_removes_it(lab):
    lab["jobs"]({"name": "blog-postgresql", "module": "files_backup",
                 "args": {"site": "blog", "path": str(lab["root"] / "srv/blog/shared/uploads"),
                          "backup_dir": str(lab["root"] / "missing")}})
    failed = lab["run"]()
    assert failed.returncode == 1, failed.stdout + failed.stderr
    marker = lab["root"] / "markers/backup-blog-postgresql"
    when, reason = marker.read_text().splitlines()
    assert when.endswith("Z") and "does not exist" in reason, reason
    assert "blog-postgresql: FAILED" in failed.stdout and "blog-files-shared_uploads: took" in failed.stdout
    (lab["root"] / "missing").mkdir()
    # Only the failed job: the other would get the same id within the same second, and be refused.
    again = lab["run"]("blog-postgresql")
    assert again.returncode == 0 and not marker.exists(), again.stdout
    assert "blog-files-shared_uploads" not in again.stdout


def test_check_mode_says_what_it_would_take_and_takes_nothing(lab):
    dry = lab["run"]("--check")
    assert dry.returncode == 0 and "would take blog-files-" in dry.stdout, dry.stdout + dry.stderr
    assert not list((lab["root"] / "backups").iterdir())


def test_a_job_whose_directory_does_not_exist_yet_is_skipped_and_unknown_names_refused(lab):
    shutil.rmtree(lab["root"] / "srv")
    skipped = lab["run"]()
    assert skipped.returncode == 0 and "skipped:" in skipped.stdout, skipped.stdout
    unknown = lab["run"]("no-such-job")
    assert unknown.returncode == 2 and "no job named no-such-job" in unknown.stdout


def test_a_broken_jobs_file_is_refused(lab):
    (lab["root"] / "jobs.json").write_text('{"format": 1, "jobs": [{"name": "x", "module": "shell", "args": {}}]}')
    refused = lab["run"]()
    assert refused.returncode == 2 and "is not one of" in refused.stdout, refused.stdout


def test_credentials_and_the_release_are_read_at_run_time(tmp_path):
    (tmp_path / "creds").mkdir()
    (tmp_path / "creds/redis-password").write_text("s3cret\n")
    os.symlink("releases/20261201-1", tmp_path / "current")
    job = {"name": "x", "module": "pg_backup", "args": {"site": "blog", "backup_dir": "/b"},
           "credentials": {"login_password": "redis-password"}, "release_link": str(tmp_path / "current")}
    args = scheduled_backup.job_arguments(job, str(tmp_path / "creds"))
    assert args["login_password"] == "s3cret" and args["release"] == "20261201-1"
    with pytest.raises(scheduled_backup.JobsError, match="run through the systemd unit"):
        scheduled_backup.job_arguments(job, None)
    assert "s3cret" not in scheduled_backup.summary(job, {"changed": True, "backup_id": "b", "kept": ["b"]})
