"""Unit tests for opspack.platform.backup_retention: the policy applied to copies by their manifests."""

from __future__ import annotations

import datetime

from ansible_collections.opspack.platform.plugins.module_utils import backup
from ansible_collections.opspack.platform.plugins.modules import backup_retention


def seed(directory, days: int, site: str = "blog", engine: str = "postgresql", hour: int = 14) -> list[str]:
    """One complete backup set per day, days ago down to yesterday, oldest first."""
    now = backup.utc_now().replace(hour=hour, minute=0, second=0, microsecond=0)
    ids = []
    for day in range(days, 0, -1):
        ended = now - datetime.timedelta(days=day)
        backup_id = backup.new_backup_id(site, engine, ended)
        (directory / f"{backup_id}.dat").write_bytes(backup_id.encode())
        backup.write_json_atomic(backup.manifest_path(str(directory), backup_id), {
            "format": 1, "backup_id": backup_id, "site": site, "engine": engine, "file": f"{backup_id}.dat",
            "sha256": backup.sha256_file(str(directory / f"{backup_id}.dat")), "size_bytes": len(backup_id),
            "started_at": backup.to_iso(ended), "ended_at": backup.to_iso(ended)})
        ids.append(backup_id)
    return ids


def names(directory) -> list[str]:
    return sorted(path.name for path in directory.iterdir())


def test_copies_beyond_the_policy_are_deleted_and_a_second_run_changes_nothing(run_module, tmp_path):
    ids = seed(tmp_path, 40)
    result = run_module("backup_retention", backup_dir=str(tmp_path), keep_last=2, keep_daily_days=30)
    assert not result.get("failed"), result
    # Days 1..29 are within 30 days (today included, which has none): the 11 oldest go.
    assert result["changed"] is True
    assert result["deleted"] == ids[:11] and result["kept"] == ids[11:]
    assert names(tmp_path) == sorted([f"{backup_id}.dat" for backup_id in ids[11:]]
                                     + [f"{backup_id}.manifest.json" for backup_id in ids[11:]])
    assert sorted(result["deleted_files"]) == sorted([f"{backup_id}.dat" for backup_id in ids[:11]]
                                                     + [f"{backup_id}.manifest.json" for backup_id in ids[:11]])
    again = run_module("backup_retention", backup_dir=str(tmp_path), keep_last=2, keep_daily_days=30)
    assert again["changed"] is False and again["deleted"] == [] and again["kept"] == ids[11:]


def test_check_mode_says_what_would_go_and_deletes_nothing(run_module, tmp_path):
    ids = seed(tmp_path, 10)
    before = names(tmp_path)
    result = run_module("backup_retention", check_mode=True, backup_dir=str(tmp_path), keep_last=3, keep_daily_days=0)
    assert result["changed"] is True and result["deleted"] == ids[:7] and result["deleted_files"] == []
    assert names(tmp_path) == before


def test_each_site_and_engine_keeps_its_own_newest(run_module, tmp_path):
    blog = seed(tmp_path, 5, site="blog")
    shop = seed(tmp_path, 5, site="shop", hour=9)
    redis = seed(tmp_path, 5, site="redis", engine="redis", hour=2)
    result = run_module("backup_retention", backup_dir=str(tmp_path), keep_last=1, keep_daily_days=0)
    assert sorted(result["kept"]) == sorted([blog[-1], shop[-1], redis[-1]])
    filtered = run_module("backup_retention", check_mode=True, backup_dir=str(tmp_path), site="blog", keep_last=1,
                          keep_daily_days=0)
    assert filtered["kept"] == [blog[-1]] and filtered["deleted"] == []


def test_an_unreadable_manifest_fails_before_anything_is_deleted(run_module, tmp_path):
    seed(tmp_path, 10)
    (tmp_path / "blog-postgresql-20200101T000000Z.manifest.json").write_text("{not json")
    before = names(tmp_path)
    result = run_module("backup_retention", backup_dir=str(tmp_path), keep_last=1, keep_daily_days=0)
    assert result["failed"] and "cannot read manifest" in result["msg"]
    assert names(tmp_path) == before


def test_a_data_file_a_kept_manifest_names_stays(run_module, tmp_path):
    ids = seed(tmp_path, 3)
    # A hand-made manifest of the newest backup that names the oldest one's data file.
    manifest = backup.read_manifest(backup.manifest_path(str(tmp_path), ids[-1]))
    manifest["file"] = f"{ids[0]}.dat"
    backup.write_json_atomic(backup.manifest_path(str(tmp_path), ids[-1]), manifest)
    result = run_module("backup_retention", backup_dir=str(tmp_path), keep_last=1, keep_daily_days=0)
    assert result["deleted"] == ids[:2]
    assert (tmp_path / f"{ids[0]}.dat").exists() and not (tmp_path / f"{ids[0]}.manifest.json").exists()


def test_a_directory_that_does_not_exist_holds_nothing(run_module, tmp_path):
    result = run_module("backup_retention", backup_dir=str(tmp_path / "none"))
    assert not result.get("failed") and result["changed"] is False and result["kept"] == []


def test_argument_spec_shares_the_retention_defaults():
    spec = backup_retention.argument_spec()
    assert spec["keep_last"]["default"] == 7 and spec["keep_daily_days"]["default"] == 30
    assert "prune" not in spec and "min_free_mb" not in spec


def test_ids_the_host_kept_stay_whatever_the_policy_says(run_module, tmp_path):
    ids = seed(tmp_path, 5)
    result = run_module("backup_retention", backup_dir=str(tmp_path), keep_last=1, keep_daily_days=0,
                        keep=[ids[0], "blog-postgresql-20990101T000000Z"])
    assert result["kept"] == [ids[0], ids[-1]] and result["deleted"] == ids[1:-1]


def test_a_manifest_not_named_after_its_own_id_fails_before_anything_is_deleted(run_module, tmp_path):
    ids = seed(tmp_path, 5)
    forged = backup.read_manifest(backup.manifest_path(str(tmp_path), ids[-1]))
    # Copied under another name, pointing its deletion at a path outside the directory.
    forged["backup_id"] = "../../elsewhere/blog-postgresql-20261201T000000Z"
    backup.write_json_atomic(str(tmp_path / "blog-postgresql-20991231T000000Z.manifest.json"), forged)
    before = names(tmp_path)
    result = run_module("backup_retention", backup_dir=str(tmp_path), keep_last=1, keep_daily_days=0)
    assert result["failed"] and "not its own file name" in result["msg"], result
    assert names(tmp_path) == before


def test_a_manifest_whose_id_is_not_text_is_a_clear_error(run_module, tmp_path):
    seed(tmp_path, 2)
    backup.write_json_atomic(str(tmp_path / "blog-postgresql-20991231T000000Z.manifest.json"), {
        "format": 1, "backup_id": 20991231, "site": "blog", "engine": "postgresql", "file": "x.dat",
        "sha256": "0", "size_bytes": 1, "started_at": "2099-12-31T00:00:00Z", "ended_at": "2099-12-31T00:00:00Z"})
    before = names(tmp_path)
    result = run_module("backup_retention", backup_dir=str(tmp_path), keep_last=1, keep_daily_days=0)
    assert result["failed"] and "not its own file name" in result["msg"], result
    assert names(tmp_path) == before
