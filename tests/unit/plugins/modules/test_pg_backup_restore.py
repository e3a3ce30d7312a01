"""Unit tests for opspack.platform.pg_backup_restore: what it refuses before touching a database.

The restore and the swap need a server: the backups Molecule scenario does them."""

from __future__ import annotations

import pytest

from ansible_collections.opspack.platform.plugins.module_utils import postgresql_backup

from .test_pg_backup import seed


def test_without_the_typed_confirmation_nothing_happens(run_module, tmp_path):
    seed(tmp_path, 1)
    result = run_module("pg_backup_restore", site="blog", database="blog", backup_dir=str(tmp_path), confirm="yes")
    assert result["failed"] and "confirm must repeat the site's name ('blog')" in result["msg"]
    assert result["changed"] is False and "backup_id" not in result


def test_an_unknown_backup_id_is_refused(run_module, tmp_path):
    seed(tmp_path, 1)
    result = run_module("pg_backup_restore", site="blog", database="blog", backup_dir=str(tmp_path), confirm="blog",
                        backup_id="blog-postgresql-20200101T000000Z")
    assert result["failed"] and "unknown backup id" in result["msg"]


def test_a_corrupt_backup_is_refused_before_the_database_is_touched(run_module, tmp_path):
    ids = seed(tmp_path, 1)
    (tmp_path / f"{ids[0]}.pgdump").write_bytes(b"y")
    result = run_module("pg_backup_restore", site="blog", database="blog", backup_dir=str(tmp_path), confirm="blog")
    assert result["failed"] and "checksum error" in result["msg"]


@pytest.mark.parametrize("name", ["blog", "blog__before_20261123T000000Z", "postgres"])
def test_only_an_incoming_database_can_be_dropped(name):
    with pytest.raises(postgresql_backup.BackupError, match="refusing to drop"):
        postgresql_backup.drop_database_quietly({}, name)


# --- the restore's opspack_event ----------------------------------------------------------------

def run_in_process(monkeypatch, capsys, main, **args) -> dict:
    """Run a module's main() here, so the database calls can be stood in for."""
    import json

    from ansible.module_utils.testing import patch_module_args
    with patch_module_args(args), pytest.raises(SystemExit):
        main()
    return json.loads(capsys.readouterr().out)


@pytest.fixture(name="server")
def fixture_server(monkeypatch, tmp_path):
    """A stand-in server: the databases it has (name -> allows connections) and what fails."""
    from ansible_collections.opspack.platform.plugins.modules import pg_backup_restore as module
    databases = {"blog": True}
    fails = {}

    def step(name):
        def run(*args, **kwargs):
            if name in fails:
                fails[name](databases, *args)
                raise postgresql_backup.BackupError(f"{name} broke")
        return run

    def create(params, name, template_owner_of):
        step("create")()
        databases[name] = True

    def swap(params, database, incoming, previous):
        step("swap")(params, database, incoming, previous)
        databases[previous] = databases.pop(database)
        databases[database] = databases.pop(incoming)

    monkeypatch.setattr(module.engine, "check_room_to_restore", lambda *args, **kwargs: None)
    monkeypatch.setattr(module.engine, "create_database", create)
    monkeypatch.setattr(module.engine, "restore_and_prove", lambda *args, **kwargs: step("prove")())
    monkeypatch.setattr(module.engine, "swap_databases", swap)
    monkeypatch.setattr(module.engine, "drop_database_quietly", lambda params, name: databases.pop(name, None))
    monkeypatch.setattr(module, "database_facts",
                        lambda params, name: {"allow_connections": databases[name]} if name in databases else {})
    seed(tmp_path, 1)
    return module, databases, fails


def restore_run(server, monkeypatch, capsys, tmp_path, **args):
    module = server[0]
    args = dict(dict(site="blog", database="blog", backup_dir=str(tmp_path), confirm="blog"), **args)
    return run_in_process(monkeypatch, capsys, module.main, **args)


def test_a_restore_tells_the_records_how_long_it_took_and_the_way_back(server, monkeypatch, capsys, tmp_path):
    result = restore_run(server, monkeypatch, capsys, tmp_path)
    assert result["changed"] and not result.get("failed"), result
    told = result["opspack_event"]
    assert told["kind"] == "operation" and told["operation"] == "restore" and told["result"] == "ok", told
    assert told["site"] == "blog" and told["backup_id"] == result["backup_id"]
    assert told["timings"]["duration_s"] == result["duration_seconds"] and told["timings"]["ended"].endswith("Z")
    assert told["actions"] == f"the previous database is kept as {result['previous_database']}"
    assert "step" not in told and "impact" not in told


def test_a_refused_restore_tells_nothing_was_replaced(run_module, tmp_path):
    seed(tmp_path, 1)
    result = run_module("pg_backup_restore", site="blog", database="blog", backup_dir=str(tmp_path), confirm="yes")
    told = result["opspack_event"]
    assert told["kind"] == "operation" and told["operation"] == "restore" and told["result"] == "failed", told
    assert told["step"] == "check the confirmation" and told["reason"].startswith("restore failed: confirm must repeat")
    assert told["impact"] == "the site's database was not replaced" and told["actions"] == "nothing changed"
    assert "backup_id" not in told and told["timings"]["duration_s"] == result["duration_seconds"]


def test_check_mode_is_the_restores_own_verification_and_tells_nothing(run_module, tmp_path):
    ids = seed(tmp_path, 1)
    (tmp_path / f"{ids[0]}.pgdump").write_bytes(b"y")
    result = run_module("pg_backup_restore", check_mode=True, site="blog", database="blog", backup_dir=str(tmp_path),
                        confirm="blog")
    assert result["failed"] and "opspack_event" not in result


def test_a_restore_that_does_not_prove_drops_its_copy_and_says_so(server, monkeypatch, capsys, tmp_path):
    server[2]["prove"] = lambda databases, *args: None
    result = restore_run(server, monkeypatch, capsys, tmp_path)
    told = result["opspack_event"]
    assert result["failed"] and told["result"] == "failed" and told["step"] == "restore and prove the backup", told
    assert told["reason"] == "restore failed: prove broke" and told["backup_id"] == result["backup_id"]
    assert told["impact"] == "the site's database was not replaced"
    assert told["actions"] == "the restored copy blog__restoring was dropped" and server[1] == {"blog": True}


def test_a_copy_that_cannot_be_dropped_is_named_for_the_operator(server, monkeypatch, capsys, tmp_path):
    server[2]["prove"] = lambda databases, *args: None
    monkeypatch.setattr(server[0].engine, "drop_database_quietly", lambda params, name: None)
    told = restore_run(server, monkeypatch, capsys, tmp_path)["opspack_event"]
    assert told["actions"].startswith("the restored copy blog__restoring could not be dropped"), told


def test_a_failed_swap_says_whether_the_site_was_left_unreachable(server, monkeypatch, capsys, tmp_path):
    server[2]["swap"] = lambda databases, *args: databases.update(blog=False)
    told = restore_run(server, monkeypatch, capsys, tmp_path)["opspack_event"]
    assert told["step"] == "swap the databases" and told["result"] == "failed", told
    assert told["impact"] == "the site's database was not replaced, but it refuses new connections"
    assert told["actions"] == ("the restored copy blog__restoring was dropped; "
                               "to open it again: ALTER DATABASE blog ALLOW_CONNECTIONS true")
    server[2]["swap"] = lambda databases, *args: databases.update(blog=True)
    told = restore_run(server, monkeypatch, capsys, tmp_path)["opspack_event"]
    assert told["impact"] == "the site's database was not replaced (the attempt may have ended its open sessions)"


def test_a_swap_that_went_through_before_failing_says_the_database_was_replaced(server, monkeypatch, capsys, tmp_path):
    def swapped_then_broke(databases, params, database, incoming, previous):
        databases[previous] = databases.pop(database)
        databases[database] = databases.pop(incoming)
    server[2]["swap"] = swapped_then_broke
    told = restore_run(server, monkeypatch, capsys, tmp_path)["opspack_event"]
    assert told["result"] == "failed" and told["impact"].startswith("the site's database was replaced by backup"), told
    assert "blog__before_" in told["actions"]
