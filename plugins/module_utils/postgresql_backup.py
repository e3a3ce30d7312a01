# Copyright: opspack developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The PostgreSQL backup engine: a consistent pg_dump plus facts that prove its content.

The facts (exact row counts of every table, a content checksum of each critical table, the
answer to a site-defined query) are read in the very snapshot pg_dump dumps: one REPEATABLE
READ transaction exports its snapshot, reads them, and stays open while
`pg_dump --snapshot` runs. A drill reads the same facts from the restored copy and compares.
"""

from __future__ import annotations

import os
import re
import threading
import time

try:
    import psycopg2
    from psycopg2 import extensions as pg_extensions
    from psycopg2 import sql
    HAS_PSYCOPG2 = True
    PSYCOPG2_IMPORT_ERROR = None
    DATABASE_ERRORS = (psycopg2.Error,)
except ImportError as import_error:  # pragma: no cover - the postgresql role installs it
    HAS_PSYCOPG2 = False
    PSYCOPG2_IMPORT_ERROR = import_error
    DATABASE_ERRORS = ()

from ansible_collections.opspack.platform.plugins.module_utils.backup import BackupError, check_target
from ansible_collections.opspack.platform.plugins.module_utils.common import OpspackError

ENGINE = "postgresql"
FILE_SUFFIX = ".pgdump"
SCRATCH_PREFIX = "opspack_drill_"

# Row text (and so the checksums) depends on these session settings: pin them in every session.
SESSION_SETTINGS = (
    "SET TIME ZONE 'UTC'",
    "SET DateStyle = 'ISO, YMD'",
    "SET IntervalStyle = 'postgres'",
    "SET extra_float_digits = 3",
    "SET bytea_output = 'hex'",
)

# Ordinary tables outside the system schemas that are not part of an extension.
TABLES_SQL = """
SELECT n.nspname, c.relname
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind = 'r'
  AND n.nspname <> 'information_schema' AND n.nspname !~ '^pg_'
  AND NOT EXISTS (SELECT 1 FROM pg_depend d
                  WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e')
ORDER BY 1, 2
"""

# Order-independent and memory-flat: the sum of a 64-bit hash of each row. rowhash64 hashes the
# column values with their types' own extended hash functions (hash_record_extended, the ones
# behind hash partitioning, so stable across pg_upgrade; no text conversion, half the CPU of
# texthash64). A table with a column type that has none (json, point...) falls back to
# texthash64, a hash of the row's text. The label says which, so a drill computes the same one.
CHECKSUM_SQL = {
    "rowhash64": "SELECT count(*), coalesce(sum(hash_record_extended(t, 0)), 0)::text FROM {} AS t",
    "texthash64": "SELECT count(*), coalesce(sum(hashtextextended(t::text, 0)), 0)::text FROM {} AS t",
}

SCRATCH_NAME = re.compile(r"^" + SCRATCH_PREFIX + r"[a-z0-9_]{1,49}$")


def describe_error(exc: BaseException) -> str:
    """One line for an operator, whatever failed: ours, the database's or the file system's."""
    if isinstance(exc, OpspackError):
        return str(exc)
    if isinstance(exc, OSError):
        return f"{exc.strerror or exc}: {exc.filename}" if exc.filename else str(exc)
    return f"database error: {str(exc).strip()}"


def connection_argument_spec() -> dict:
    """Options every opspack PostgreSQL module takes (see doc fragment postgresql_connection)."""
    return {
        "login_unix_socket": {"type": "path", "default": "/var/run/postgresql"},
        "login_port": {"type": "int", "default": 5432},
        "login_user": {"type": "str"},
    }


def compress_argument() -> dict:
    """pg_dump's zlib level (doc fragment pg_dump): 1 by default, half the CPU of pg_dump's 6, so
    that the proof read beside the dump costs no wall time on a busy host."""
    return {"type": "int", "default": 1, "choices": list(range(10))}


def restore_argument_spec() -> dict:
    """Options of the modules that read a backup back (doc fragments postgresql_connection and
    backup_selection)."""
    spec = connection_argument_spec()
    spec.update(
        site={"type": "str", "required": True},
        backup_dir={"type": "path", "required": True},
        backup_id={"type": "str", "default": "latest"},
        jobs={"type": "int", "default": 2},
    )
    return spec


def connect(params: dict, database: str, autocommit: bool = False, readonly: bool = False):
    if not HAS_PSYCOPG2:
        raise BackupError(f"psycopg2 is needed on the host (python3-psycopg2): {PSYCOPG2_IMPORT_ERROR}")
    try:
        conn = psycopg2.connect(dbname=database, host=params["login_unix_socket"], port=params["login_port"],
                                user=params.get("login_user"), application_name="opspack")
    except psycopg2.Error as exc:
        raise BackupError(f"cannot connect to database {database}: {str(exc).strip()}") from exc
    conn.autocommit = autocommit
    if readonly:
        # Drill queries come from manifests on disk: they may read, never write or reach out.
        conn.set_session(readonly=True)
    return conn


def query_rows(params: dict, database: str, query: str) -> list[list]:
    """Rows of a read-only query as lists of strings; a failing query is a BackupError."""
    conn = connect(params, database, readonly=True)
    try:
        cursor = conn.cursor()
        for statement in SESSION_SETTINGS:
            cursor.execute(statement)
        cursor.execute(query)
        return [[None if value is None else str(value) for value in row] for row in cursor.fetchall()]
    except psycopg2.Error as exc:
        raise BackupError(f"query failed in database {database}: {str(exc).strip()}") from exc
    finally:
        conn.close()


def libpq_args(params: dict) -> list[str]:
    args = ["--host", params["login_unix_socket"], "--port", str(params["login_port"])]
    if params.get("login_user"):
        args += ["--username", params["login_user"]]
    return args


def qualified(name: str) -> tuple[str, str]:
    schema, _dot, table = name.rpartition(".")
    return schema or "public", table


def read_facts(cursor, critical_tables: list[str], query: str | None, migrations_table: str | None,
               serial: bool = True) -> dict:
    """Row counts, critical-table checksums, the site query's answer and the migration version.

    serial keeps each scan on one core: during a backup pg_dump has the other one."""
    for statement in SESSION_SETTINGS:
        cursor.execute(statement)
    cursor.execute(TABLES_SQL)
    tables = [f"{schema}.{name}" for schema, name in cursor.fetchall()]
    facts = {"tables": {}, "checksums": {}, "query": None, "migration_version": None}
    critical = []
    for name in critical_tables:
        table = ".".join(qualified(name))
        if table not in tables:
            raise BackupError(f"critical table {name} does not exist in this database")
        critical.append(table)
    # A critical table is scanned once: its checksum query counts its rows too.
    if serial:
        cursor.execute("SET LOCAL max_parallel_workers_per_gather = 0")
    for table in critical:
        rows, method, total = table_checksum(cursor, table)
        facts["checksums"][table] = f"rows={rows} {method}={total}"
        facts["tables"][table] = rows
    for table in tables:
        if table not in facts["tables"]:
            cursor.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(*qualified(table))))
            facts["tables"][table] = cursor.fetchone()[0]
    facts["tables"] = dict(sorted(facts["tables"].items()))
    if query:
        try:
            cursor.execute(query)
            answer = [[None if value is None else str(value) for value in row] for row in cursor.fetchall()]
        except psycopg2.Error as exc:
            raise BackupError(f"the site's drill query failed: {str(exc).strip()}") from exc
        facts["query"] = {"sql": query, "answer": answer}
    if migrations_table and ".".join(qualified(migrations_table)) in facts["tables"]:
        cursor.execute(sql.SQL("SELECT max(version)::text FROM {}").format(sql.Identifier(*qualified(migrations_table))))
        facts["migration_version"] = cursor.fetchone()[0]
    return facts


def table_checksum(cursor, table: str) -> tuple:
    """(rows, method, sum) for one table, by the cheapest method its column types allow."""
    identifier = sql.Identifier(*qualified(table))
    cursor.execute("SAVEPOINT opspack_checksum")
    try:
        cursor.execute(sql.SQL(CHECKSUM_SQL["rowhash64"]).format(identifier))
        rows, total = cursor.fetchone()
        method = "rowhash64"
    except psycopg2.Error:
        # No extended hash function for one of its types: the text form always has one.
        cursor.execute("ROLLBACK TO SAVEPOINT opspack_checksum")
        cursor.execute(sql.SQL(CHECKSUM_SQL["texthash64"]).format(identifier))
        rows, total = cursor.fetchone()
        method = "texthash64"
    cursor.execute("RELEASE SAVEPOINT opspack_checksum")
    return rows, method, total


class SnapshotSession:
    """A read-only REPEATABLE READ transaction whose snapshot pg_dump shares."""

    def __init__(self, params: dict, database: str):
        self.conn = connect(params, database)
        self.conn.set_session(isolation_level=pg_extensions.ISOLATION_LEVEL_REPEATABLE_READ, readonly=True)
        self.cursor = self.conn.cursor()
        self.cursor.execute("SELECT pg_export_snapshot(), current_setting('server_version'), pg_database_size(current_database())")
        self.snapshot, self.server_version, self.database_bytes = self.cursor.fetchone()

    def close(self) -> None:
        try:
            self.conn.rollback()
        finally:
            self.conn.close()


def dump_command(params: dict, database: str, snapshot: str, path: str, compress: int | None) -> list[str]:
    command = ["pg_dump", "--format=custom", f"--snapshot={snapshot}", f"--file={path}", *libpq_args(params)]
    if compress is not None:
        command.append(f"--compress={compress}")
    return command + ["--dbname", database]


def restore_command(params: dict, database: str, path: str, jobs: int, keep_owners: bool = False) -> list[str]:
    """--exit-on-error: a restore that hits any error stops and fails, never "succeeds" partially.
    Drills drop owners and privileges (the roles may not exist on a drill host); a real restore
    on the site's own host keeps them."""
    ownership = [] if keep_owners else ["--no-owner", "--no-privileges"]
    return ["pg_restore", "--exit-on-error", *ownership, f"--jobs={jobs}",
            *libpq_args(params), "--dbname", database, path]


INCOMING_SUFFIX = "__restoring"


def create_database(params: dict, name: str, template_owner_of: str) -> None:
    """A new, empty database with the owner and encoding of an existing one."""
    conn = connect(params, "postgres", autocommit=True)
    try:
        cursor = conn.cursor()
        cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
        if cursor.fetchone():
            raise BackupError(f"database {name} exists: an earlier restore stopped half way. It was never swapped "
                              f"in; drop it (DROP DATABASE {name}) and run again")
        cursor.execute("SELECT pg_get_userbyid(datdba), pg_encoding_to_char(encoding) FROM pg_database WHERE datname = %s",
                       (template_owner_of,))
        found = cursor.fetchone()
        if not found:
            raise BackupError(f"database {template_owner_of} does not exist on this server")
        owner, encoding = found
        cursor.execute(sql.SQL("CREATE DATABASE {} OWNER {} ENCODING {} TEMPLATE template0").format(
            sql.Identifier(name), sql.Identifier(owner), sql.Literal(encoding)))
    finally:
        conn.close()


def drop_database_quietly(params: dict, name: str) -> None:
    """Drop a restore's incoming database; nothing else is ever dropped here."""
    if not name.endswith(INCOMING_SUFFIX):
        raise BackupError(f"refusing to drop {name!r}: only a restore's incoming database may be dropped")
    try:
        conn = connect(params, "postgres", autocommit=True)
    except BackupError:
        return
    try:
        conn.cursor().execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
    except DATABASE_ERRORS:
        pass
    finally:
        conn.close()


def name_fits(name: str) -> bool:
    """PostgreSQL cuts identifiers at 63 bytes (not characters): a longer name would silently
    become another one."""
    return len(name.encode("utf-8")) <= 63


def allow_connections(params: dict, database: str) -> None:
    """Let sessions join database again, through a connection of its own (the one that forbade
    them may be the one that failed)."""
    conn = connect(params, "postgres", autocommit=True)
    try:
        conn.cursor().execute(sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS true").format(sql.Identifier(database)))
    finally:
        conn.close()


def swap_databases(params: dict, database: str, incoming: str, previous: str, attempts: int = 5) -> str | None:
    """Put incoming in database's place and keep the old one as previous.

    The database-level privileges (CONNECT, TEMPORARY: pg_dump of one database does not carry
    them) are copied first. Then no new sessions may join the old database, its sessions are
    ended, and both renames happen in one transaction (PostgreSQL allows ALTER DATABASE RENAME
    in a transaction block, so they commit or roll back together). Whatever fails before the
    commit, the old database accepts connections again, under its own name."""
    conn = connect(params, "postgres", autocommit=True)
    committed = False
    try:
        cursor = conn.cursor()
        cursor.execute("SELECT a.grantee, a.privilege_type FROM pg_database d, aclexplode(d.datacl) a "
                       "WHERE d.datname = %s AND a.grantee <> d.datdba", (database,))
        grants = cursor.fetchall()
        cursor.execute("SELECT datacl IS NULL FROM pg_database WHERE datname = %s", (database,))
        if not cursor.fetchone()[0]:
            cursor.execute(sql.SQL("REVOKE ALL ON DATABASE {} FROM PUBLIC").format(sql.Identifier(incoming)))
            for grantee, privilege in grants:
                cursor.execute("SELECT CASE WHEN %s::oid = 0 THEN 'PUBLIC' ELSE pg_get_userbyid(%s::oid) END", (grantee, grantee))
                role = cursor.fetchone()[0]
                target = sql.SQL("PUBLIC") if role == "PUBLIC" else sql.Identifier(role)
                cursor.execute(sql.SQL("GRANT {} ON DATABASE {} TO {}").format(
                    sql.SQL(privilege), sql.Identifier(incoming), target))
        cursor.execute(sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS false").format(sql.Identifier(database)))
        for attempt in range(attempts):
            cursor.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s "
                           "AND pid <> pg_backend_pid()", (database,))
            time.sleep(0.2 * (attempt + 1))
            conn.autocommit = False
            try:
                cursor.execute(sql.SQL("ALTER DATABASE {} RENAME TO {}").format(sql.Identifier(database), sql.Identifier(previous)))
                cursor.execute(sql.SQL("ALTER DATABASE {} RENAME TO {}").format(sql.Identifier(incoming), sql.Identifier(database)))
                conn.commit()
                committed = True
                break
            except DATABASE_ERRORS:
                conn.rollback()
                if attempt == attempts - 1:
                    raise
            finally:
                conn.autocommit = True
    finally:
        conn.close()
        if not committed:
            allow_connections(params, database)
    # The swap is done; the kept database opens again for inspection or for going back. A
    # failure here changes nothing about the restore: it is said, not raised.
    try:
        allow_connections(params, previous)
    except (BackupError, *DATABASE_ERRORS) as exc:
        return (f"{previous} still refuses connections ({describe_error(exc)}); "
                f"run ALTER DATABASE {previous} ALLOW_CONNECTIONS true to inspect it")
    return None


def create_scratch(params: dict, name: str) -> None:
    if not SCRATCH_NAME.match(name):
        raise BackupError(f"refusing scratch database name {name!r}: drills only create {SCRATCH_PREFIX}* databases")
    conn = connect(params, "postgres", autocommit=True)
    try:
        cursor = conn.cursor()
        cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
        if cursor.fetchone():
            raise BackupError(f"scratch database {name} already exists; a drill never reuses a database")
        cursor.execute(sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(sql.Identifier(name)))
    finally:
        conn.close()


def leftover_scratch(params: dict, site: str, older_than: int = 600) -> list[str]:
    """Scratch databases an earlier drill of this site left (killed before it could drop them):
    created more than older_than seconds ago and with nobody connected, so a drill running in
    parallel keeps its own."""
    prefix = scratch_prefix(site)
    conn = connect(params, "postgres", autocommit=True)
    try:
        cursor = conn.cursor()
        cursor.execute("SELECT d.datname FROM pg_database d WHERE starts_with(d.datname, %s) "
                       "AND NOT EXISTS (SELECT 1 FROM pg_stat_activity a WHERE a.datname = d.datname) ORDER BY 1",
                       (prefix,))
        names = [row[0] for row in cursor.fetchall()]
    finally:
        conn.close()
    cutoff = time.time() - older_than
    return [name for name in names if SCRATCH_NAME.match(name) and name[len(prefix):].isdigit()
            and int(name[len(prefix):]) < cutoff]


def scratch_prefix(site: str) -> str:
    """opspack_drill_<site>_ with the site shortened to fit PostgreSQL's 63-byte names."""
    return f"{SCRATCH_PREFIX}{re.sub('[^a-z0-9_]', '_', site)[:30]}_"


def check_room_to_restore(params: dict, manifest: dict, note: str = "") -> None:
    """Refuse a restore that could fill the disk it lands on: the cluster's data directory, which
    production shares. Twice the database's size at backup time must be free."""
    conn = connect(params, "postgres", autocommit=True)
    try:
        cursor = conn.cursor()
        cursor.execute("SELECT current_setting('data_directory')")
        directory = cursor.fetchone()[0]
    finally:
        conn.close()
    stats = os.statvfs(directory)
    free = stats.f_bavail * stats.f_frsize
    need = int(manifest.get("database_bytes") or manifest["size_bytes"] * 4) * 2
    if free < need:
        raise BackupError(f"{directory} has {free // 1048576} MiB free; restoring this backup beside the "
                          f"live database needs {need // 1048576} MiB{note}")


def restore_and_prove(module, database: str, path: str, manifest: dict, keep_owners: bool = False, note: str = "") -> None:
    """pg_restore the backup at path into database (which exists, empty), then prove it: every
    fact in the manifest must be read back. note ends each failure message."""
    params = module.params
    rc, _out, err = module.run_command(restore_command(params, database, path, params["jobs"], keep_owners=keep_owners))
    if rc != 0:
        raise BackupError(f"pg_restore failed (exit {rc}): {err.strip()[-2000:]}{note}")
    problems = compare_facts(manifest, scratch_facts(params, database, manifest))
    if problems:
        raise BackupError("the restored data differs from the backup: " + "; ".join(problems) + note)


def drop_scratch(params: dict, name: str) -> None:
    if not SCRATCH_NAME.match(name):
        raise BackupError(f"refusing to drop {name!r}: drills only drop {SCRATCH_PREFIX}* databases")
    conn = connect(params, "postgres", autocommit=True)
    try:
        conn.cursor().execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
    finally:
        conn.close()


def scratch_facts(params: dict, name: str, manifest: dict) -> dict:
    conn = connect(params, name, readonly=True)
    try:
        # Nothing else runs during this read: parallel workers may help.
        return read_facts(conn.cursor(), list(manifest.get("checksums", {})),
                          (manifest.get("query") or {}).get("sql"), None, serial=False)
    finally:
        conn.close()


def compare_facts(expected: dict, restored: dict) -> list[str]:
    """Every way the restored copy differs from the manifest, as lines for an operator."""
    problems = []
    for table, rows in sorted(expected.get("tables", {}).items()):
        got = restored["tables"].get(table)
        if got is None:
            problems.append(f"table {table} is missing from the restored copy")
        elif got != rows:
            problems.append(f"table {table} has {got} rows, the backup had {rows}")
    for table in sorted(set(restored["tables"]) - set(expected.get("tables", {}))):
        problems.append(f"table {table} is in the restored copy but not in the manifest")
    for table, checksum in sorted(expected.get("checksums", {}).items()):
        if restored["checksums"].get(table) != checksum:
            problems.append(f"content checksum of {table} is {restored['checksums'].get(table)}, the backup had {checksum}")
    query = expected.get("query")
    if query and (restored.get("query") or {}).get("answer") != query["answer"]:
        # The answers are site data: say that they differ, never what they are.
        problems.append("the site query's answer differs from its answer at backup time")
    return problems


def dump_database(module, params: dict, partial: str) -> dict:
    """pg_dump into partial while the facts are read in the same snapshot; the manifest fields.

    params holds the backup options (pg_backup's) and the connection to dump from.

    pg_dump imports the exported snapshot and runs in its own process, so the row counts and
    checksums are read at the same time (a backup then takes about as long as the longer of the
    two, not their sum); the exporting transaction stays open until both are done."""
    session = SnapshotSession(params, params["database"])
    dumped = {}
    try:
        check_target(params["backup_dir"], max(params["min_free_mb"] * 1048576, session.database_bytes // 2))
        command = dump_command(params, params["database"], session.snapshot, partial, params["compress"])
        dumper = threading.Thread(target=lambda: dumped.update(zip(("rc", "out", "err"), module.run_command(command))))
        dumper.start()
        try:
            facts = read_facts(session.cursor, params["critical_tables"], params["drill_query"],
                               None if params["migration_version"] else params["migrations_table"])
        finally:
            dumper.join()
        if dumped.get("rc") != 0:
            raise BackupError(f"pg_dump failed (exit {dumped.get('rc')}): {dumped.get('err', '').strip()[-2000:]}")
    finally:
        session.close()
    return {
        "database": params["database"],
        "dump_format": "custom",
        "compress_level": params["compress"],
        "server_version": session.server_version,
        "database_bytes": session.database_bytes,
        "release": params["release"],
        "migration_version": params["migration_version"] or facts["migration_version"],
        "tables": facts["tables"],
        "checksums": facts["checksums"],
        "query": facts["query"],
    }
