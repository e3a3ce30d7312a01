"""The sample site: a small WSGI app served by gunicorn, using PostgreSQL and Redis.

It is what opspack's tests deploy (opspack itself stays app-agnostic). Settings come from the
environment the unit gives it: DATABASE_URL, REDIS_URL and the slot's PORT; the release's
version from the VERSION file beside this one. A release built with a file named
HEALTH_FAILS beside it answers 503 on /health/ready: the tests' failing-health version. One built with
SERVES_5XX (a number N) answers health and its smoke paths but 500 on every Nth request to /work
of a worker: the tests' release that is unhealthy only under traffic.

  /              the version, as plain text
  /health/live   200 as long as the process runs
  /health/ready  200 with {"version", "database", "redis", "migration"} when PostgreSQL and
                 Redis answer, else 503 saying which does not
  /notes         the number of notes (a request that reads the site's own table)
  /work          "done" (the path the tests' traffic loads; SERVES_5XX releases fail some of it)
"""

import json
import os

import psycopg2
import redis

HERE = os.path.dirname(os.path.abspath(__file__))
with open(os.path.join(HERE, "VERSION"), encoding="utf-8") as handle:
    VERSION = handle.read().strip()
HEALTH_FAILS = os.path.exists(os.path.join(HERE, "HEALTH_FAILS"))
try:
    with open(os.path.join(HERE, "SERVES_5XX"), encoding="utf-8") as handle:
        ERROR_EVERY = int(handle.read().strip())
except FileNotFoundError:
    ERROR_EVERY = 0
_served = {"work": 0}


def _database():
    return psycopg2.connect(os.environ["DATABASE_URL"], connect_timeout=3)


def _ready():
    """What /health/ready reports: each dependency checked for real, nothing cached."""
    report = {"version": VERSION, "slot": os.environ.get("OPSPACK_SLOT", "")}
    ok = not HEALTH_FAILS
    if HEALTH_FAILS:
        report["error"] = "this release fails its health check on purpose"
    try:
        with _database() as connection, connection.cursor() as cursor:
            cursor.execute("SELECT to_regclass('public.opspack_schema_history') IS NOT NULL")
            if cursor.fetchone()[0]:
                cursor.execute("SELECT coalesce(max(version)::text, '') FROM public.opspack_schema_history")
                report["migration"] = cursor.fetchone()[0]
            report["database"] = "ok"
    except psycopg2.Error as exc:
        ok = False
        report["database"] = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    try:
        redis.Redis.from_url(os.environ["REDIS_URL"], socket_timeout=3).ping()
        report["redis"] = "ok"
    except redis.RedisError as exc:
        ok = False
        report["redis"] = type(exc).__name__
    return ok, report


def _notes():
    with _database() as connection, connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM notes")
        return {"version": VERSION, "notes": cursor.fetchone()[0]}


def application(environ, start_response):
    path = environ.get("PATH_INFO", "/")
    if path == "/":
        body, status, kind = f"sample site {VERSION}\n".encode(), "200 OK", "text/plain"
    elif path == "/work":
        _served["work"] += 1
        if ERROR_EVERY and _served["work"] % ERROR_EVERY == 0:
            body, status, kind = b"failing on purpose\n", "500 Internal Server Error", "text/plain"
        else:
            body, status, kind = b"done\n", "200 OK", "text/plain"
    elif path == "/health/live":
        body, status, kind = b"ok\n", "200 OK", "text/plain"
    elif path == "/health/ready":
        ok, report = _ready()
        body, status, kind = json.dumps(report).encode(), "200 OK" if ok else "503 Service Unavailable", "application/json"
    elif path == "/notes":
        body, status, kind = json.dumps(_notes()).encode(), "200 OK", "application/json"
    else:
        body, status, kind = b"not found\n", "404 Not Found", "text/plain"
    start_response(status, [("Content-Type", kind), ("Content-Length", str(len(body))), ("X-Release", VERSION)])
    return [body]
