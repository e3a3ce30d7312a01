# Copyright: opspack developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A throwaway PostgreSQL cluster on the control node, for the release gate's migration check:
made in a temporary directory, listening on a Unix socket only (no TCP port), removed after.

It needs PostgreSQL's server programs (Debian: the postgresql package; any version). PostgreSQL
refuses to run as root: run as root (CI), the cluster belongs to the postgres account.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile

from ansible_collections.opspack.platform.plugins.module_utils.common import OpspackError

# Where Debian and Ubuntu keep each version's server programs; elsewhere they are on PATH.
SERVER_DIRS = "/usr/lib/postgresql/*/bin"


class ScratchError(OpspackError):
    """The scratch cluster could not be made or used; the message names what to do."""


def server_bin() -> str:
    candidates = sorted(glob.glob(SERVER_DIRS), key=lambda path: int(path.split("/")[-2]) if path.split("/")[-2].isdigit() else 0)
    for directory in reversed(candidates):
        if os.access(os.path.join(directory, "initdb"), os.X_OK):
            return directory
    found = shutil.which("initdb")
    if found:
        return os.path.dirname(os.path.realpath(found))
    raise ScratchError("no PostgreSQL server programs (initdb) on the control node: install PostgreSQL "
                       "(apt install postgresql)")


class ScratchCluster:
    """with ScratchCluster() as pg: pg.psql(sql) ... ; the cluster is stopped and removed on exit."""

    def __init__(self, timeout: float = 120):
        self.timeout = timeout
        self.bin = server_bin()
        self.directory = ""
        self.user = None if os.geteuid() != 0 else "postgres"

    def _run(self, argv: list[str], input_text: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
        # As root, the programs run as the postgres account (its own groups only), from a
        # directory it may enter.
        as_user = {"user": self.user, "group": self.user, "extra_groups": [], "cwd": "/"} if self.user else {}
        done = subprocess.run(argv, input=input_text, capture_output=True, text=True, timeout=self.timeout, check=False,
                              env={"PATH": "/usr/bin:/bin", "LC_ALL": "C.UTF-8", "PGTZ": "UTC"}, **as_user)
        if check and done.returncode != 0:
            raise ScratchError(f"{os.path.basename(argv[0])}: {(done.stderr or done.stdout).strip()[-600:]}")
        return done

    def __enter__(self) -> ScratchCluster:
        if self.user:
            try:
                account = pwd.getpwnam(self.user)
            except KeyError as error:
                raise ScratchError("run as root, the scratch cluster needs the postgres account (apt install postgresql)") from error
        self.directory = tempfile.mkdtemp(prefix="opspack-gate-pg-")
        if self.user:
            os.chown(self.directory, account.pw_uid, account.pw_gid)
        self.data = os.path.join(self.directory, "data")
        try:
            self._run([os.path.join(self.bin, "initdb"), "--pgdata", self.data, "--auth", "trust", "--username", "gate",
                       "--encoding", "UTF8", "--no-sync"])
            self._run([os.path.join(self.bin, "pg_ctl"), "--pgdata", self.data, "--wait", "--log",
                       os.path.join(self.directory, "log"), "--options",
                       f"-c listen_addresses='' -c unix_socket_directories='{self.directory}' -c fsync=off", "start"])
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc) -> None:
        try:
            if self.directory and os.path.exists(os.path.join(self.data, "postmaster.pid")):
                self._run([os.path.join(self.bin, "pg_ctl"), "--pgdata", self.data, "--mode", "immediate", "--wait", "stop"],
                          check=False)
        finally:
            if self.directory:
                shutil.rmtree(self.directory, ignore_errors=True)

    def psql(self, sql: str, database: str = "postgres", check: bool = True) -> subprocess.CompletedProcess:
        """Run SQL in one transaction, stopping at the first error."""
        return self._run([os.path.join(self.bin, "psql"), "--no-psqlrc", "--host", self.directory, "--username", "gate",
                          "--dbname", database, "--set", "ON_ERROR_STOP=1", "--single-transaction", "--quiet",
                          "--file", "-"], input_text=sql, check=check)

    def create_database(self, name: str) -> None:
        self._run([os.path.join(self.bin, "createdb"), "--host", self.directory, "--username", "gate", name])

    def schema(self, database: str) -> str:
        """The database's schema as pg_dump writes it (what a clean revert must give back)."""
        return self._run([os.path.join(self.bin, "pg_dump"), "--host", self.directory, "--username", "gate",
                          "--schema-only", "--no-owner", "--no-privileges", database]).stdout
