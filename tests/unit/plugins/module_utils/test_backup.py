"""Unit tests for the engine-independent backup sets: ids, manifests, checksums, retention."""

from __future__ import annotations

import datetime
import json

import pytest

from ansible_collections.opspack.platform.plugins.module_utils import backup
from ansible_collections.opspack.platform.plugins.module_utils import postgresql_backup

UTC = datetime.timezone.utc
NOW = datetime.datetime(2026, 11, 23, 12, 0, 0, tzinfo=UTC)


def fake_backup(directory, site, ended: datetime.datetime, payload=b"data") -> dict:
    backup_id = backup.new_backup_id(site, "postgresql", ended)
    data = directory / f"{backup_id}.pgdump"
    data.write_bytes(payload)
    manifest = {"format": 1, "backup_id": backup_id, "site": site, "engine": "postgresql", "file": data.name,
                "sha256": backup.sha256_file(str(data)), "size_bytes": len(payload),
                "started_at": backup.to_iso(ended), "ended_at": backup.to_iso(ended)}
    backup.write_json_atomic(backup.manifest_path(str(directory), backup_id), manifest)
    return manifest


def test_backup_ids_sort_by_time_and_refuse_bad_site_names():
    assert backup.new_backup_id("blog", "postgresql", NOW) == "blog-postgresql-20261123T120000Z"
    with pytest.raises(backup.BackupError, match="cannot name a backup"):
        backup.new_backup_id("Blog Site", "postgresql", NOW)


def test_manifests_are_deterministic_json(tmp_path):
    backup.write_json_atomic(str(tmp_path / "m.json"), {"b": 1, "a": {"z": 2, "y": 3}})
    assert (tmp_path / "m.json").read_text() == '{\n  "a": {\n    "y": 3,\n    "z": 2\n  },\n  "b": 1\n}\n'
    assert not [name for name in tmp_path.iterdir() if name.name.startswith(".tmp-")]


def test_list_orders_by_manifest_time_not_mtime_and_ignores_partials(tmp_path):
    newer = fake_backup(tmp_path, "blog", NOW)
    older = fake_backup(tmp_path, "blog", NOW - datetime.timedelta(days=1))
    fake_backup(tmp_path, "shop", NOW)
    (tmp_path / "blog-postgresql-20261124T000000Z.pgdump.partial").write_bytes(b"half")
    listed = backup.list_backups(str(tmp_path), "blog")
    assert [item["backup_id"] for item in listed] == [older["backup_id"], newer["backup_id"]]
    assert backup.find_backup(str(tmp_path), "latest", "blog")["backup_id"] == newer["backup_id"]


def test_unknown_backup_id_names_the_known_ones(tmp_path):
    known = fake_backup(tmp_path, "blog", NOW)
    with pytest.raises(backup.BackupError, match=f"unknown backup id 'blog-postgresql-1'.*{known['backup_id']}"):
        backup.find_backup(str(tmp_path), "blog-postgresql-1", "blog")
    with pytest.raises(backup.BackupError, match="no backup of site shop"):
        backup.find_backup(str(tmp_path), "latest", "shop")


def test_one_flipped_byte_is_a_checksum_error(tmp_path):
    manifest = fake_backup(tmp_path, "blog", NOW, payload=b"0123456789")
    assert backup.verify_checksum(str(tmp_path), manifest).endswith(".pgdump")
    data = tmp_path / manifest["file"]
    flipped = bytearray(data.read_bytes())
    flipped[4] ^= 0x01
    data.write_bytes(bytes(flipped))
    with pytest.raises(backup.ChecksumMismatch, match="checksum error"):
        backup.verify_checksum(str(tmp_path), manifest)


def test_a_truncated_file_is_caught_by_its_size(tmp_path):
    manifest = fake_backup(tmp_path, "blog", NOW, payload=b"0123456789")
    (tmp_path / manifest["file"]).write_bytes(b"01234")
    with pytest.raises(backup.ChecksumMismatch, match="has 5 bytes"):
        backup.verify_checksum(str(tmp_path), manifest)


def test_a_manifest_without_required_fields_is_refused(tmp_path):
    (tmp_path / "x.manifest.json").write_text(json.dumps({"backup_id": "x"}))
    with pytest.raises(backup.BackupError, match="lacks format"):
        backup.list_backups(str(tmp_path))


def test_retention_keeps_last_n_and_the_newest_of_each_day_within_d_days():
    # Two backups a day (03:00 and 15:00) for 40 days, the newest at 03:00 today.
    manifests = []
    for day in range(40):
        for hour in (3, 15):
            ended = (NOW - datetime.timedelta(days=day)).replace(hour=hour)
            if ended <= NOW:
                manifests.append({"backup_id": backup.new_backup_id("blog", "postgresql", ended),
                                  "ended_at": backup.to_iso(ended)})
    kept, deleted = backup.retention_plan(manifests, keep_last=3, keep_daily_days=30, now=NOW)
    newest_per_day = {(NOW - datetime.timedelta(days=day)).replace(hour=15 if day else 3) for day in range(30)}
    expected = {backup.new_backup_id("blog", "postgresql", moment) for moment in newest_per_day}
    expected |= {item["backup_id"] for item in sorted(manifests, key=lambda m: m["ended_at"])[-3:]}
    assert set(kept) == expected
    assert len(kept) == 31  # 30 days (today's single backup included) + yesterday's 03:00 from keep_last
    assert set(kept) | set(deleted) == {item["backup_id"] for item in manifests}
    assert kept == sorted(kept) and deleted == sorted(deleted)


def test_retention_always_keeps_the_newest_and_checks_its_numbers():
    old = [{"backup_id": "blog-postgresql-20200101T000000Z", "ended_at": "2020-01-01T00:00:00Z"}]
    assert backup.retention_plan(old, keep_last=1, keep_daily_days=30, now=NOW) == (
        ["blog-postgresql-20200101T000000Z"], [])
    with pytest.raises(backup.BackupError):
        backup.retention_plan(old, keep_last=0, keep_daily_days=30, now=NOW)


def test_check_target_refuses_missing_unwritable_and_full(tmp_path):
    with pytest.raises(backup.BackupError, match="does not exist"):
        backup.check_target(str(tmp_path / "nope"), 0)
    with pytest.raises(backup.BackupError, match="MiB free"):
        backup.check_target(str(tmp_path), backup.free_bytes(str(tmp_path)) + (1 << 40))
    backup.check_target(str(tmp_path), 0)


def test_compare_facts_names_every_difference():
    expected = {"tables": {"public.posts": 42, "public.users": 3}, "checksums": {"public.posts": "rows=42 rowhash64=9"},
                "query": {"sql": "SELECT 1", "answer": [["1"]]}}
    same = {"tables": dict(expected["tables"]), "checksums": dict(expected["checksums"]), "query": dict(expected["query"])}
    assert not postgresql_backup.compare_facts(expected, same)
    restored = {"tables": {"public.posts": 41, "public.extra": 0}, "checksums": {"public.posts": "rows=41 rowhash64=8"},
                "query": {"sql": "SELECT 1", "answer": [["2"]]}}
    problems = postgresql_backup.compare_facts(expected, restored)
    assert problems == [
        "table public.posts has 41 rows, the backup had 42",
        "table public.users is missing from the restored copy",
        "table public.extra is in the restored copy but not in the manifest",
        "content checksum of public.posts is rows=41 rowhash64=8, the backup had rows=42 rowhash64=9",
        "the site query's answer differs from its answer at backup time",
    ]
    assert "'2'" not in " ".join(problems)


@pytest.mark.parametrize("name", ["blog", "opspack_drill_", "opspack_drill_x; DROP", "postgres"])
def test_drills_only_touch_scratch_databases(name):
    with pytest.raises(backup.BackupError, match="refusing"):
        postgresql_backup.drop_scratch({}, name)


def test_retention_never_deletes_the_backup_just_taken():
    future = {"backup_id": "blog-postgresql-20300101T000000Z", "ended_at": "2030-01-01T00:00:00Z"}
    taken = {"backup_id": "blog-postgresql-20261123T120000Z", "ended_at": "2026-11-23T12:00:00Z"}
    kept, deleted = backup.retention_plan([future, taken], keep_last=1, keep_daily_days=0, now=NOW,
                                          always_keep=(taken["backup_id"],))
    assert taken["backup_id"] in kept and not deleted


def test_deleting_a_backup_never_takes_data_a_kept_manifest_names(tmp_path):
    good = fake_backup(tmp_path, "blog", NOW)
    copy = dict(good, backup_id="blog-postgresql-20261123T120001Z")
    backup.write_json_atomic(backup.manifest_path(str(tmp_path), copy["backup_id"]), copy)
    backup.delete_backup(str(tmp_path), copy, [good])
    assert (tmp_path / good["file"]).exists()
    assert not (tmp_path / f"{copy['backup_id']}.manifest.json").exists()
    backup.delete_backup(str(tmp_path), good, [])
    assert not (tmp_path / good["file"]).exists()


def test_a_reserved_name_cannot_be_taken_twice(tmp_path):
    backup.reserve(str(tmp_path / "x.partial"))
    with pytest.raises(backup.BackupError, match="another backup with this id is running"):
        backup.reserve(str(tmp_path / "x.partial"))


# --- the opspack_event of run_backup and run_drill ---------------------------------------------

class Ended(Exception):
    """exit_json or fail_json of FakeModule: the module's result."""

    def __init__(self, result: dict):
        super().__init__(result.get("msg", ""))
        self.result = result


class FakeModule:
    def __init__(self, check_mode=False, **params):
        self.check_mode = check_mode
        self.params = params

    def exit_json(self, **result):
        raise Ended(result)

    def fail_json(self, msg, **result):
        raise Ended(dict(result, failed=True, msg=msg))


def backup_module(tmp_path, check_mode=False, **params):
    return FakeModule(check_mode, **dict(dict(site="blog", backup_dir=str(tmp_path), keep_last=7, keep_daily_days=30,
                                              prune=True, min_free_mb=0), **params))


def run_backup(module, dump) -> dict:
    with pytest.raises(Ended) as ended:
        backup.run_backup(module, "files", ".bin", dump)
    return ended.value.result


def write_data(partial):
    with open(partial, "wb") as out:
        out.write(b"data")
    return {"files": 1}


def test_a_backup_tells_the_records_its_id_and_when_it_ended(tmp_path):
    result = run_backup(backup_module(tmp_path), write_data)
    told = result["opspack_event"]
    assert told["kind"] == "operation" and told["operation"] == "backup" and told["result"] == "ok", told
    assert told["site"] == "blog" and told["engine"] == "files" and told["backup_id"] == result["backup_id"]
    assert told["backup_ended_at"] == result["manifest"]["ended_at"]
    assert told["timings"]["started"] == result["manifest"]["started_at"]
    assert told["timings"]["ended"] == result["manifest"]["ended_at"] and told["timings"]["duration_s"] >= 0
    assert not {"step", "reason", "impact"} & set(told)


def test_a_failed_backup_is_an_incident_naming_its_step(tmp_path):
    def broken(partial):
        raise backup.BackupError("the source went away")
    result = run_backup(backup_module(tmp_path), broken)
    told = result["opspack_event"]
    assert result["failed"] and told["result"] == "failed" and told["operation"] == "backup", told
    assert told["step"] == "take the files backup" and told["reason"] == "the source went away"
    assert told["impact"] == "no new files backup of blog was taken; the earlier ones are as they were"
    assert "backup_id" not in told and "backup_ended_at" not in told, "no backup of this run exists"
    assert run_backup(backup_module(tmp_path / "nope"), write_data)["opspack_event"]["step"] == "check the backup target"
    assert run_backup(backup_module(tmp_path, site="Blog"), write_data)["opspack_event"]["step"] == "name the backup"


def test_a_backup_whose_retention_fails_says_it_was_taken(tmp_path, monkeypatch):
    def refuse(*args):
        raise OSError(13, "Permission denied", "old.bin")
    monkeypatch.setattr(backup, "prune", refuse)
    result = run_backup(backup_module(tmp_path), write_data)
    told = result["opspack_event"]
    assert result["failed"] and told["result"] == "failed" and told["step"] == "apply retention", told
    assert told["backup_id"] == result["backup_id"] and told["backup_ended_at"] == result["manifest"]["ended_at"]
    assert told["impact"] == f"backup {result['backup_id']} was taken, but apply retention did not finish"


def test_a_failure_inside_ansibles_own_helpers_is_told_too(tmp_path):
    module = backup_module(tmp_path)

    def fails_in_run_command(partial):
        module.fail_json(msg="[Errno 2] No such file or directory: b'pg_dump'", rc=2)
    told = run_backup(module, fails_in_run_command)["opspack_event"]
    assert told["result"] == "failed" and told["step"] == "take the files backup", told
    assert told["reason"] == "[Errno 2] No such file or directory: b'pg_dump'"


def test_a_backup_in_check_mode_tells_nothing(tmp_path):
    assert "opspack_event" not in run_backup(backup_module(tmp_path, check_mode=True), write_data)
    assert "opspack_event" not in run_backup(backup_module(tmp_path / "nope", check_mode=True), write_data)


def drill_module(tmp_path, check_mode=False, **params):
    return FakeModule(check_mode, **dict(dict(site="blog", backup_dir=str(tmp_path), backup_id="latest",
                                              scratch_parent=str(tmp_path)), **params))


def run_drill(module, prove=lambda manifest, path, scratch, result: None) -> dict:
    with pytest.raises(Ended) as ended:
        backup.run_drill(module, "postgresql", prove)
    return ended.value.result


def test_a_drill_tells_pass_or_fail_with_its_measures(tmp_path):
    manifest = fake_backup(tmp_path, "blog", NOW)
    result = run_drill(drill_module(tmp_path))
    told = result["opspack_event"]
    assert told["kind"] == "operation" and told["operation"] == "drill" and told["result"] == "pass", told
    assert told["site"] == "blog" and told["engine"] == "postgresql" and told["backup_id"] == manifest["backup_id"]
    assert told["backup_ended_at"] == manifest["ended_at"] and told["rpo_s"] == result["rpo_seconds"]
    assert told["rto_s"] == result["rto_seconds"] and "reason" not in told and "step" not in told

    def differs(manifest, path, scratch, result):
        raise backup.BackupError("the restored data differs from the backup: 1 row")
    told = run_drill(drill_module(tmp_path), differs)["opspack_event"]
    assert told["result"] == "fail" and told["step"] == "restore the backup into scratch and prove it", told
    assert told["reason"] == "the restored data differs from the backup: 1 row" and told["backup_id"] == manifest["backup_id"]


def test_a_drill_without_a_backup_fails_for_its_site(tmp_path):
    told = run_drill(drill_module(tmp_path))["opspack_event"]
    assert told["result"] == "fail" and told["site"] == "blog" and told["step"] == "find the backup", told
    assert told["reason"].startswith("no backup of site blog") and "backup_id" not in told


def test_a_drill_in_check_mode_tells_nothing(tmp_path):
    fake_backup(tmp_path, "blog", NOW)
    assert "opspack_event" not in run_drill(drill_module(tmp_path, check_mode=True))
    assert "opspack_event" not in run_drill(drill_module(tmp_path / "empty", check_mode=True))
