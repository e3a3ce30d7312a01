#!/usr/bin/python
# Copyright: opspack developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Apply or revert a site's SQL migrations: verified, locked, one transaction each, with a history."""

from __future__ import annotations

DOCUMENTATION = r"""
module: pg_migrations
short_description: Apply or revert a site's SQL migrations, each in its own transaction
version_added: 0.1.0
author: opspack developers (@opspack)
description:
  - Brings O(database) to O(target) with the migrations of a release in O(path),
    C(NNN_name.sql) files, each with C(NNN_name.rollback.sql) beside it. Applies pending ones
    oldest first, or reverts applied ones newer than O(target) newest first.
  - Before anything runs, verifies the checksum of every migration already applied against
    its file, and refuses a migration to apply without a rollback script (see
    O(require_rollback)), a changed or missing applied migration, and one older than an
    applied one. A plan that cannot be carried out changes nothing.
  - Takes a PostgreSQL advisory lock, so two runs never migrate the same database at once;
    a run that cannot get it within O(lock_timeout) fails naming the session that holds it.
  - Each migration runs in its own transaction together with its row in O(history_table)
    (version, name, sha256, rollback SQL, time, release, duration), so the history never
    disagrees with the schema. The rollback SQL is kept in the history, so an older release
    that lacks the newer files can still revert them.
  - When a migration fails, its transaction is rolled back and the migrations this run had
    already applied are reverted with their rollback scripts, so the schema is as it was before
    the run. The task fails naming the migration and the error.
  - The SQL runs as the database's owner (C(SET ROLE)), so the objects it creates belong to
    the site, not to C(postgres).
  - In check mode nothing runs; the result lists what would be applied and reverted.
  - With O(site), a run that changed the schema, or failed, tells it as a C(step) event
    (C(step=migrate), see the records callback) in its C(opspack_event).
extends_documentation_fragment:
  - opspack.platform.postgresql_connection
options:
  database:
    description: The site's database.
    type: str
    required: true
  path:
    description:
      - Directory on the host with the release's migration files. It may be omitted to revert
        to O(target) with the rollback SQL recorded in the history alone.
    type: path
  target:
    description:
      - C(head) (the newest migration in O(path)) or a migration version number to go to.
      - C(current) stays where the database is (nothing runs). With O(path) omitted it is a way to read
        RV(history), for example to check a release's migrations against it before deploying.
    type: str
    default: head
  history_table:
    description: The table that records applied migrations (created, owned by the database owner, when missing).
    type: str
    default: public.opspack_schema_history
  release:
    description: The release applying the migrations, for the history.
    type: str
  require_rollback:
    description: Refuse to apply a migration that has no rollback script.
    type: bool
    default: true
  role:
    description: Role the migrations run as; by default the database's owner.
    type: str
  lock_timeout:
    description: Seconds to wait for another run's migration lock before failing.
    type: int
    default: 60
  site:
    description:
      - The site the database belongs to, named in its C(opspack_event). Without it the module
        returns no C(opspack_event).
    type: str
attributes:
  check_mode:
    description: Can run in check_mode and return changed status prediction without modifying the target.
    support: full
    details: Verifies the history and reports the migrations that would be applied and reverted.
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in check_mode), when in diff mode.
    support: none
notes:
  - Run it as the C(postgres) user (C(become_user=postgres)) on the database host.
  - Statements that cannot run inside a transaction (such as C(CREATE INDEX CONCURRENTLY)) are not supported in migrations.
seealso:
  - module: opspack.platform.pg_backup
"""

EXAMPLES = r"""
- name: Migrate the blog to the newest migration of release 2.1.0
  opspack.platform.pg_migrations:
    database: blog
    path: /srv/blog/releases/2.1.0/migrations
    release: 2.1.0
  become: true
  become_user: postgres
  register: blog_migrations

- name: Show what a deploy would run (dry run)
  opspack.platform.pg_migrations:
    database: blog
    path: /srv/blog/releases/2.2.0/migrations
  check_mode: true
  become: true
  become_user: postgres

- name: Roll the schema back to migration 3 with the recorded rollback scripts
  opspack.platform.pg_migrations:
    database: blog
    target: "3"
  become: true
  become_user: postgres
"""

RETURN = r"""
version_before:
  description: Newest applied migration version before the run (0 for none).
  returned: always
  type: int
version_after:
  description: Newest applied migration version after the run (in check mode, after the plan).
  returned: always
  type: int
applied:
  description: Migrations applied by this run (in check mode, that would be), oldest first, as C(NNN_name).
  returned: always
  type: list
  elements: str
reverted:
  description: Migrations reverted by this run (in check mode, that would be), newest first.
  returned: always
  type: list
  elements: str
history:
  description: The migrations applied before the run, oldest first, as C(NNN_name).
  returned: always
  type: list
  elements: str
duration_seconds:
  description: Time the run took, lock wait included.
  returned: always
  type: float
opspack_event:
  description:
    - What changed, for the records (see the records callback). A C(step) event (C(step=migrate))
      for O(site), with C(result=done) and the C(migrations) (C(version), the RV(version_after);
      C(applied) and C(reverted), as RV(applied) and RV(reverted)), or C(result=failed) with the
      C(reason) and, when the history was read, the C(migrations) as they stand after the failure.
    - Its C(operation) is empty - the module does not know whether it serves a deploy or a
      rollback; the deploy lock's events say.
  returned: when O(site) is given and the run changed the schema or failed, not in check mode
  type: dict
  sample: {"kind": "step", "site": "blog", "step": "migrate", "result": "done",
           "migrations": {"version": 4, "applied": ["003_tags", "004_post_tags"], "reverted": []}}
"""

import time

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.opspack.platform.plugins.module_utils import migrations
from ansible_collections.opspack.platform.plugins.module_utils import postgresql_backup as engine
from ansible_collections.opspack.platform.plugins.module_utils.events import event

try:
    from psycopg2 import sql
except ImportError:  # pragma: no cover - reported by engine.connect
    sql = None

# One advisory lock key for every opspack migration run (advisory locks are per database).
LOCK_KEY = 7_164_825_503_391_552_001


class Migrator:
    def __init__(self, module: AnsibleModule):
        self.module = module
        self.params = module.params
        self.conn = engine.connect(self.params, self.params["database"])
        self.cursor = self.conn.cursor()
        self.table = sql.Identifier(*engine.qualified(self.params["history_table"]))

    def close(self) -> None:
        try:
            self.conn.rollback()
            self.cursor.execute("SELECT pg_advisory_unlock_all()")
            self.conn.commit()
        finally:
            self.conn.close()

    def lock(self) -> None:
        deadline = time.monotonic() + self.params["lock_timeout"]
        while True:
            self.cursor.execute("SELECT pg_try_advisory_lock(%s)", (LOCK_KEY,))
            locked = self.cursor.fetchone()[0]
            self.conn.commit()
            if locked:
                return
            if time.monotonic() > deadline:
                self.cursor.execute(
                    "SELECT a.pid, a.usename, a.application_name, a.backend_start::text FROM pg_locks l "
                    "JOIN pg_stat_activity a USING (pid) WHERE l.locktype = 'advisory' AND l.granted "
                    "AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()) LIMIT 1")
                holder = self.cursor.fetchone()
                self.conn.rollback()
                who = (f"pid {holder[0]} ({holder[1]}, {holder[2] or 'no application name'}, since {holder[3]})"
                       if holder else "another session")
                raise migrations.MigrationError(f"another migration run holds the lock of database "
                                                f"{self.params['database']}: {who}")
            time.sleep(0.5)

    def become_owner(self) -> None:
        role = self.params["role"]
        if not role:
            self.cursor.execute("SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = current_database()")
            role = self.cursor.fetchone()[0]
        self.cursor.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(role)))
        self.conn.commit()

    def history_exists(self) -> bool:
        self.cursor.execute("SELECT to_regclass(%s) IS NOT NULL", (".".join(engine.qualified(self.params["history_table"])),))
        exists = self.cursor.fetchone()[0]
        self.conn.commit()
        return exists

    def create_history(self) -> None:
        self.cursor.execute(sql.SQL(
            "CREATE TABLE IF NOT EXISTS {} (version bigint PRIMARY KEY, name text NOT NULL, checksum text NOT NULL, "
            "rollback_sql text, applied_at timestamptz NOT NULL DEFAULT now(), release text, duration_ms integer)"
        ).format(self.table))
        self.conn.commit()

    def applied(self) -> dict:
        self.cursor.execute(sql.SQL("SELECT version, name, checksum, rollback_sql FROM {} ORDER BY version").format(self.table))
        rows = {row[0]: {"name": row[1], "checksum": row[2], "rollback_sql": row[3]} for row in self.cursor.fetchall()}
        self.conn.commit()
        return rows

    def apply(self, item: dict) -> None:
        started = time.monotonic()
        try:
            self.cursor.execute(item["sql"])
            self.cursor.execute(sql.SQL("INSERT INTO {} (version, name, checksum, rollback_sql, release, duration_ms) "
                                        "VALUES (%s, %s, %s, %s, %s, %s)").format(self.table),
                                (item["version"], item["name"], item["checksum"], item["rollback_sql"],
                                 self.params["release"], int((time.monotonic() - started) * 1000)))
            self.conn.commit()
        except engine.DATABASE_ERRORS:
            self.conn.rollback()
            raise

    def revert(self, item: dict) -> None:
        try:
            self.cursor.execute(item["rollback_sql"])
            self.cursor.execute(sql.SQL("DELETE FROM {} WHERE version = %s").format(self.table), (item["version"],))
            self.conn.commit()
        except engine.DATABASE_ERRORS:
            self.conn.rollback()
            raise


def first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def migrate(module: AnsibleModule, result: dict, progress: dict) -> None:
    params = module.params
    release = migrations.read_release(params["path"]) if params["path"] else []
    migrator = Migrator(module)
    try:
        migrator.lock()
        migrator.become_owner()
        if not migrator.history_exists():
            if not module.check_mode:
                migrator.create_history()
            applied = {}
        else:
            applied = migrator.applied()
        result["version_before"] = max(applied, default=0)
        result["history"] = [row["name"] for _version, row in sorted(applied.items())]
        # From here the schema's version is known: the version before, until a plan says more.
        progress["version"] = "version_before"
        steps = migrations.plan(release, applied, params["target"], params["require_rollback"])
        result["applied"] = [item["name"] for item in steps["apply"]]
        result["reverted"] = [item["name"] for item in steps["revert"]]
        remaining = (set(applied) - {item["version"] for item in steps["revert"]}) | {item["version"] for item in steps["apply"]}
        result["version_after"] = max(remaining, default=0)
        # From here the result says where the schema stands, also when the run fails.
        progress["version"] = "version_after"
        if module.check_mode:
            result["changed"] = bool(steps["apply"] or steps["revert"])
            return
        # What is applied right now, kept true step by step, so a failure reports where it stands
        # (and a failure that cannot say leaves the version unknown to the event).
        progress["version"] = ""
        current = set(applied)
        reverted = []
        for item in steps["revert"]:
            try:
                migrator.revert(item)
            except engine.DATABASE_ERRORS as exc:
                result.update(reverted=reverted, applied=[], version_after=max(current, default=0))
                progress["version"] = "version_after"
                raise migrations.MigrationError(f"rollback of {item['name']} failed: {first_line(exc)}; "
                                                f"reverted before it: {', '.join(reverted) or 'none'}") from exc
            current.discard(item["version"])
            reverted.append(item["name"])
            result["changed"] = True
        done = []
        for item in steps["apply"]:
            try:
                migrator.apply(item)
            except engine.DATABASE_ERRORS as exc:
                undone = revert_run(migrator, done)
                current -= {entry["version"] for entry in done}
                result.update(applied=[], version_after=max(current, default=0))
                progress["version"] = "version_after"
                raise migrations.MigrationError(
                    f"migration {item['name']} failed: {first_line(exc)}; its transaction was rolled back"
                    + (f" and this run's {', '.join(undone)} reverted" if undone else "")
                    + (f": the schema is at version {max(current, default=0)}" if reverted
                       else ": the schema is as before the run")) from exc
            current.add(item["version"])
            done.append(item)
            result["changed"] = True
        progress["version"] = "version_after"
    finally:
        migrator.close()


def revert_run(migrator: Migrator, done: list[dict]) -> list[str]:
    """Revert the migrations this run applied, newest first; a failure here is loud."""
    undone = []
    for item in reversed(done):
        try:
            migrator.revert(item)
        except engine.DATABASE_ERRORS as exc:
            raise migrations.MigrationError(
                f"migration after {item['name']} failed, and reverting {item['name']} failed too: {first_line(exc)}; "
                f"reverted: {', '.join(undone) or 'none'}. The schema is NOT as before: restore the pre-migration backup"
            ) from exc
        undone.append(item["name"])
    return undone


def main() -> None:
    spec = engine.connection_argument_spec()
    spec.update(
        database={"type": "str", "required": True},
        path={"type": "path"},
        target={"type": "str", "default": "head"},
        history_table={"type": "str", "default": "public.opspack_schema_history"},
        release={"type": "str"},
        require_rollback={"type": "bool", "default": True},
        role={"type": "str"},
        lock_timeout={"type": "int", "default": 60},
        site={"type": "str"},
    )
    module = AnsibleModule(argument_spec=spec, supports_check_mode=True,
                           required_if=[("target", "head", ("path",))])
    clock = time.monotonic()
    result = {"changed": False, "version_before": 0, "version_after": 0, "applied": [], "reverted": [], "history": []}
    progress = {"version": ""}
    try:
        migrate(module, result, progress)
    except (migrations.MigrationError, engine.BackupError, OSError, *engine.DATABASE_ERRORS) as exc:
        # BackupError: the connection (or psycopg2) is missing, before anything ran.
        result["duration_seconds"] = round(time.monotonic() - clock, 3)
        msg = engine.describe_error(exc)
        if module.params["site"] and not module.check_mode:
            result["opspack_event"] = event("step", module.params["site"], "", "failed", step="migrate", reason=msg,
                                            migrations=told(result, progress["version"]))
        module.fail_json(msg=msg, **result)
    result["duration_seconds"] = round(time.monotonic() - clock, 3)
    if module.params["site"] and result["changed"] and not module.check_mode:
        result["opspack_event"] = event("step", module.params["site"], "", "done", step="migrate",
                                        migrations=told(result, "version_after"))
    module.exit_json(**result)


def told(result: dict, version: str) -> dict | None:
    """The migrations field of an opspack_event: where the schema stands (the result's version
    field named, none when the history was not read) and what this run did."""
    if not version:
        return None
    return {"version": result[version], "applied": result["applied"], "reverted": result["reverted"]}


if __name__ == "__main__":
    main()
