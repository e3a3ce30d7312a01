# Copyright: opspack developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The health checks of one host and its sites: the runbooks' daily check (`ops_daily`) and the
production verification (`prod_verify`), with the contract operators' tooling parses.

This file is also the program the host runs on its own timer: the health role installs it as
/usr/local/lib/opspack/health.py, and /usr/local/sbin/ops_daily and /usr/local/sbin/prod_verify
call its cli(), so it imports nothing but Python's standard library. The module
opspack.platform.health_check runs the same checks from a playbook.

The contract (keep it exactly):
- exit codes: 0 healthy, 1 error (a check could not run), 2 unhealthy or insufficient data;
- a site with no request in the window: ``status=insufficient_data reason=delivered_total_0``
  (a scheduled run counts the host green when nothing else is wrong);
- a site whose required settings are missing: ``prod_config status=fail reason=missing_env``
  with the names (never values);
- output lines are aggregate-only: check names, site names (the inventory's), counts, rates and
  thresholds; never a domain, address, path, user agent, database name or setting value.

Signals: the node exporter (CPU, memory), statvfs of the data paths (disk, with a forecast from
earlier runs), nginx's access log of the window (requests, 5xx rate, p95 of $request_time),
PostgreSQL (connections against max_connections, long queries, lock waits, WAL archiving,
replication lag, database growth), Redis (memory against maxmemory, evictions), the backup
failure markers, the host's services, each site's required environment and queue length.

Scheduled runs (``ops_daily --scheduled``) also keep state (CPU counters, disk history, alert
state), ping a dead-man's switch (healthchecks.io style: ``/start``, then the URL itself on
success or ``/<exit status>``) and send alerts to webhooks (Slack-compatible or generic JSON),
one message per webhook per run, a breach re-sent only after ``alert_repeat_minutes``, at most
``alert_max_per_hour`` messages an hour, and a resolved message when a breach clears.
"""

from __future__ import annotations

import argparse
import http.client
import datetime
import fnmatch
import hashlib
import json
import math
import os
import re
import socket
import ssl
import subprocess
import tempfile
import time
import urllib.parse
from stat import S_ISREG

CONFIG_PATH = "/etc/opspack/health/config.json"
CONFIG_VERSION = 1
EXIT_OK, EXIT_ERROR, EXIT_UNHEALTHY = 0, 1, 2
INSUFFICIENT_DATA = "status=insufficient_data reason=delivered_total_0"
MISSING_ENV = "prod_config status=fail reason=missing_env"
STATUSES = ("ok", "warn", "fail", "insufficient_data", "error", "skipped")

# Host-wide limits; a site's own thresholds (the site model's) take over for its metrics, and
# the strictest site's for the host's CPU, memory and disk.
# SITE_THRESHOLDS are the site model's defaults (site_model.THRESHOLD_FIELDS; this program runs
# alone on the host, so a unit test keeps the two the same).
SITE_THRESHOLDS = {"cpu_percent": 80, "memory_percent": 85, "disk_percent": 80, "error_rate_percent": 0.5,
                   "p95_seconds": 2, "queue_length": 1000}
HOST_THRESHOLDS = {
    **{name: SITE_THRESHOLDS[name] for name in ("cpu_percent", "memory_percent", "disk_percent")},
    "disk_full_days": 7, "db_connections_percent": 80, "long_query_seconds": 300, "long_queries": 0, "lock_waits": 5,
    "replication_lag_seconds": 300, "redis_memory_percent": 85,
}
# The runbooks' P1-P4: what a breach of each check is, and who hears of it.
SEVERITIES = {
    "services": "P1", "error_rate": "P1", "env": "P1",
    "p95": "P2", "queue": "P2", "disk": "P2", "db_connections": "P2", "archiving": "P2",
    "replication_lag": "P2", "backups": "P2",
    "cpu": "P3", "memory": "P3", "disk_forecast": "P3", "long_queries": "P3", "lock_waits": "P3",
    "redis_memory": "P3", "error": "P3", "schedule": "P2",
    "redis_evictions": "P4", "traffic": "P4",
    # The production verification's own checks.
    "https_redirect": "P2", "tls_protocols": "P2", "security_headers": "P3", "maintenance": "P2",
    "firewall": "P2", "ssh": "P2", "ssh_host_keys": "P2", "hardening": "P2", "file_integrity": "P2",
    "package_integrity": "P2",
    "backup_age": "P2", "backup_missing": "P2", "pitr": "P2", "updates": "P3",
}
# Who hears of each severity (events.CHANNELS names the same for incidents; a unit test keeps them equal).
CHANNELS = {"P1": "page", "P2": "page", "P3": "notify", "P4": "log"}
HTTP_TIMEOUT = 10
CPU_SAMPLE_SECONDS = 1.0
DISK_HISTORY_DAYS = 14
DISK_FORECAST_MIN_HOURS = 6

# nginx's `opspack` log_format (roles/nginx): ... [time_local] "request" status bytes "ref" "ua" host=H rt=T ...
# $remote_user is not escaped (a client's Basic-auth name may hold spaces); $upstream_addr lists
# every upstream tried ("A, B" for retries, "A : B" across upstream groups): the last one answered.
LOG_LINE = re.compile(r'^\S+ - .*? \[(?P<time>[^\]]+)\] "(?:[^"\\]|\\.)*" (?P<status>\d{3}) \S+ '
                      r'"(?:[^"\\]|\\.)*" "(?:[^"\\]|\\.)*" host=(?P<host>\S+) rt=(?P<rt>[0-9.]+)'
                      r'(?: uct=.*? urt=.*? ua=(?P<upstream>.*?))?\s*$')
MONTHS = {name: index for index, name in enumerate(
    ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"), start=1)}


class CheckError(Exception):
    """A check could not run; the message is a fixed reason token (safe to print)."""


class Finding:
    """One check's result for the host (site None) or a site."""

    def __init__(self, check, status, site=None, value=None, threshold=None, reason="", severity="", **figures):
        if status not in STATUSES:
            raise ValueError(f"status {status!r} is not one of {STATUSES}")
        self.check, self.status, self.site = check, status, site
        self.value, self.threshold, self.reason, self.severity = value, threshold, reason, severity
        self.figures = figures

    @property
    def key(self) -> str:
        return f"{self.site or 'host'}:{self.check}"

    def as_dict(self) -> dict:
        found = {"check": self.check, "status": self.status, "site": self.site, "value": self.value,
                 "threshold": self.threshold, "reason": self.reason, "severity": self.severity}
        found.update(self.figures)
        return {key: value for key, value in found.items() if value not in (None, "")}

    def line(self) -> str:
        if self.check == "env" and self.status == "fail":
            return f"{MISSING_ENV} site={self.site} names={','.join(self.figures.get('names', []))}"
        head = f"site={self.site}" if self.site else "host"
        words = [head, f"check={self.check}"]
        if self.status == "insufficient_data" and self.reason == "delivered_total_0":
            words.append(INSUFFICIENT_DATA)
        else:
            words.append(f"status={self.status}")
            if self.reason:
                words.append(f"reason={self.reason}")
        for name, number in (("value", self.value), ("threshold", self.threshold)):
            if number is not None:
                words.append(f"{name}={_number(number)}")
        for name in sorted(self.figures):
            if name != "names":
                words.append(f"{name}={_number(self.figures[name])}")
        # Names a check reports are its own vocabulary (header names, sshd keywords, units), never values.
        if self.figures.get("names") and self.status != "ok":
            words.append(f"names={','.join(self.figures['names'])}")
        if self.severity and self.status == "fail":
            words.append(f"severity={self.severity}")
        return " ".join(words)


def _number(value) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, int) or float(value).is_integer() and abs(value) < 1e15:
        return str(int(value))
    return f"{value:.2f}" if abs(value) >= 0.1 else f"{value:.4f}"


# --- configuration -----------------------------------------------------------------------------

def load_config(path: str) -> dict:
    try:
        with open(path, encoding="utf-8") as handle:
            config = json.load(handle)
    except FileNotFoundError as exc:
        raise CheckError("config_missing") from exc
    except (OSError, ValueError) as exc:
        raise CheckError("config_unreadable") from exc
    if not isinstance(config, dict) or config.get("version") != CONFIG_VERSION:
        raise CheckError("config_version")
    return config


def credential(config: dict, name: str) -> str:
    """A secret from systemd's LoadCredential= directory, else from the credentials directory."""
    for directory in (os.environ.get("CREDENTIALS_DIRECTORY"), config.get("credentials_dir")):
        if directory:
            try:
                with open(os.path.join(directory, name), encoding="utf-8") as handle:
                    return handle.read().strip()
            except OSError:
                continue
    raise CheckError("credential_missing")


def host_threshold(config: dict, name: str):
    """A host-wide limit: the host's own (health_thresholds) when set, else the strictest of its
    sites' values, else the default."""
    given = config.get("thresholds", {}).get(name)
    if isinstance(given, (int, float)) and not isinstance(given, bool):
        return given
    values = [site.get("thresholds", {}).get(name) for site in config.get("sites", [])]
    values = [value for value in values if isinstance(value, (int, float)) and not isinstance(value, bool)]
    return min(values) if values else HOST_THRESHOLDS.get(name)


def severity_of(config: dict, check: str) -> str:
    return config.get("severities", {}).get(check) or SEVERITIES.get(check, "P3")


def channel_of(config: dict, severity: str) -> str:
    return config.get("channels", {}).get(severity) or CHANNELS.get(severity, "notify")


# --- signals -----------------------------------------------------------------------------------

def parse_metrics(text: str) -> dict:
    """Prometheus text format: name -> list of (labels, value)."""
    metrics: dict = {}
    pattern = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)')
    for raw in text.splitlines():
        if not raw or raw.startswith("#"):
            continue
        match = pattern.match(raw)
        if not match:
            continue
        labels = dict(re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"', match.group(2) or ""))
        try:
            value = float(match.group(3))
        except ValueError:
            continue
        metrics.setdefault(match.group(1), []).append((labels, value))
    return metrics


def http_request(url: str, body: bytes | None = None, content_type: str = "application/json",
                 limit: int = 16 << 20) -> bytes:
    """GET (or POST body) url with http.client: the program runs where Ansible's open_url is not.
    Raises OSError on a failed connection or an answer other than 2xx."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("not an http(s) URL")
    kind = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    connection = kind(parts.hostname, parts.port, timeout=HTTP_TIMEOUT)
    try:
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        headers = {"User-Agent": "opspack-health"}
        if body is not None:
            headers["Content-Type"] = content_type
        try:
            connection.request("POST" if body is not None else "GET", path, body=body, headers=headers)
            response = connection.getresponse()
            data = response.read(limit)
        except http.client.HTTPException as exc:
            raise OSError(f"HTTP: {type(exc).__name__}") from exc
        if not 200 <= response.status < 300:
            raise OSError(f"HTTP {response.status}")
        return data
    finally:
        connection.close()


def read_metrics(url: str) -> dict:
    try:
        return parse_metrics(http_request(url).decode("utf-8", "replace"))
    except (OSError, ValueError) as exc:
        raise CheckError("node_exporter_unreachable") from exc


def cpu_counters(metrics: dict) -> tuple[float, float]:
    """(all CPU seconds, idle and iowait seconds) over every CPU."""
    samples = metrics.get("node_cpu_seconds_total")
    if not samples:
        raise CheckError("node_exporter_no_cpu")
    total = sum(value for _labels, value in samples)
    idle = sum(value for labels, value in samples if labels.get("mode") in ("idle", "iowait"))
    return total, idle


def cpu_percent(first: tuple[float, float], second: tuple[float, float]):
    spent = second[0] - first[0]
    if spent <= 0:
        return None
    return max(0.0, min(100.0, 100.0 * (1 - (second[1] - first[1]) / spent)))


def memory_percent(metrics: dict) -> float:
    try:
        total = metrics["node_memory_MemTotal_bytes"][0][1]
        available = metrics["node_memory_MemAvailable_bytes"][0][1]
    except (KeyError, IndexError) as exc:
        raise CheckError("node_exporter_no_memory") from exc
    return 100.0 * (1 - available / total) if total else 0.0


def disk_usage(paths) -> list[dict]:
    """Each filesystem holding one of paths, once: used percent as df counts it."""
    seen, found = set(), []
    for path in paths:
        try:
            stat = os.statvfs(path)
            device = os.stat(path).st_dev
        except OSError:
            continue
        if device in seen or not stat.f_blocks:
            continue
        seen.add(device)
        used = (stat.f_blocks - stat.f_bfree) * stat.f_frsize
        available = stat.f_bavail * stat.f_frsize
        found.append({"path": path, "used": used, "available": available,
                      "percent": 100.0 * used / (used + available) if used + available else 0.0})
    return found


def disk_days_left(history: list, available: float):
    """Days until full at the growth rate of the history [[time, used], ...]; None when not growing
    or the history spans less than DISK_FORECAST_MIN_HOURS."""
    if len(history) < 2:
        return None
    (first_time, first_used), (last_time, last_used) = history[0], history[-1]
    span = last_time - first_time
    if span < DISK_FORECAST_MIN_HOURS * 3600 or last_used <= first_used:
        return None
    per_second = (last_used - first_used) / span
    return available / per_second / 86400


def parse_log_time(stamp: str) -> float:
    """nginx's $time_local (06/Dec/2026:05:23:39 +0000) as a UNIX time, without strptime's cost."""
    day, month, year = stamp[0:2], MONTHS[stamp[3:6]], stamp[7:11]
    moment = datetime.datetime(int(year), month, int(day), int(stamp[12:14]), int(stamp[15:17]), int(stamp[18:20]))
    sign = -1 if stamp[21] == "-" else 1
    offset = sign * (int(stamp[22:24]) * 3600 + int(stamp[24:26]) * 60)
    return moment.replace(tzinfo=datetime.timezone.utc).timestamp() - offset


def log_requests(lines, domains, tally=None):
    """(site, time, status, request time, upstream address) of each line of nginx's `opspack`
    format whose host is one of domains (lower-case name -> site); other lines are passed over.
    tally, when given, counts the lines read and those in the format ({"lines", "matched"})."""
    for raw in lines:
        match = LOG_LINE.match(raw)
        if tally is not None:
            tally["lines"] += 1
            tally["matched"] += match is not None
        if not match:
            continue
        site = domains.get(match.group("host").lower())
        if site is None:
            continue
        try:
            moment = parse_log_time(match.group("time"))
        except (KeyError, ValueError, IndexError):
            continue
        upstream = re.split(r", | : ", match.group("upstream") or "")[-1]
        yield site, moment, int(match.group("status")), float(match.group("rt")), upstream


def read_traffic(paths, domains: dict, since: float, until: float) -> dict:
    """Per site over [since, until], a Window of its requests from nginx's logs.
    domains: lower-case name -> site. Lines of another format or host are passed over."""
    traffic = {site: Window() for site in set(domains.values())}
    found, tally = 0, {"lines": 0, "matched": 0}
    for path in paths:
        try:
            handle = open(path, encoding="utf-8", errors="replace")  # pylint: disable=consider-using-with
        except FileNotFoundError:
            continue
        except OSError as exc:
            raise CheckError("nginx_log_unreadable") from exc
        found += 1
        with handle:
            for site, moment, status, seconds, _upstream in log_requests(handle, domains, tally):
                if since <= moment <= until:
                    traffic[site].add(status, seconds)
    # No log at all, or lines none of which is in the opspack format: a path or format that drifted
    # would otherwise read as "no traffic".
    if paths and not found:
        raise CheckError("nginx_log_missing")
    if tally["lines"] >= 20 and not tally["matched"]:
        raise CheckError("nginx_log_format")
    return traffic


class Window:
    """Requests, 5xx and request times in a stretch of time (a site's, or one release slot's)."""

    def __init__(self):
        self.requests, self.errors, self.times = 0, 0, []

    def add(self, status: int, seconds: float) -> None:
        self.requests += 1
        self.errors += status >= 500
        self.times.append(seconds)

    @property
    def error_rate(self) -> float:
        return 100.0 * self.errors / self.requests if self.requests else 0.0

    @property
    def p95(self) -> float:
        return percentile(self.times, 0.95) or 0.0

    def figures(self) -> dict:
        return {"requests": self.requests, "errors_5xx": self.errors, "error_rate_percent": round(self.error_rate, 3),
                "p95_seconds": round(self.p95, 3)}


def watch_breach(new: Window, baseline: Window, error_rate_percent: float, p95_seconds: float,
                 min_requests: int = 50, min_errors: int = 3, factor: float = 2.0) -> str:
    """Why the new release is worse than its threshold and than the release before it, or "".
    Judged only on min_requests (and a 5xx rate only on min_errors), so that a few early requests
    never decide; "worse than before" is more than factor times the baseline's figure."""
    if new.requests < min_requests:
        return ""
    if (new.errors >= min_errors and new.error_rate > error_rate_percent
            and (not baseline.requests or new.error_rate > factor * baseline.error_rate)):
        return (f"5xx rate {new.error_rate:.2f} % over {new.requests} requests is above {error_rate_percent:g} % "
                f"(the release before: {baseline.error_rate:.2f} % over {baseline.requests})")
    if new.p95 > p95_seconds and (not baseline.requests or new.p95 > factor * baseline.p95):
        return (f"p95 response time {new.p95:.3f} s over {new.requests} requests is above {p95_seconds:g} s "
                f"(the release before: {baseline.p95:.3f} s over {baseline.requests})")
    return ""


class LogFollower:
    """nginx's access log, each complete line once, streamed from where the last read stopped.
    After a rotation the old file is read to its end first, then the new one from its start."""

    def __init__(self, path: str):
        self.path, self.handle, self.inode, self.partial = path, None, None, b""

    def _drain(self):
        for raw in iter(self.handle.readline, b""):
            if not raw.endswith(b"\n"):
                self.partial += raw  # a line still being written: the rest comes with the next read
                return
            yield (self.partial + raw).decode("utf-8", "replace").rstrip("\n")
            self.partial = b""

    def lines(self):
        if self.handle is not None:
            yield from self._drain()
            try:
                stat = os.stat(self.path)
            except FileNotFoundError:
                return
            if stat.st_ino == self.inode and stat.st_size >= self.handle.tell():
                return
            self.handle.close()
            self.handle, self.partial = None, b""
        try:
            self.handle = open(self.path, "rb")  # pylint: disable=consider-using-with  # kept open between reads
        except FileNotFoundError:
            return
        self.inode = os.fstat(self.handle.fileno()).st_ino
        yield from self._drain()

    def close(self):
        if self.handle is not None:
            self.handle.close()


def percentile(values, fraction: float):
    """Nearest-rank percentile; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


def parse_env_file(path: str) -> dict:
    """NAME=value lines (systemd EnvironmentFile, quoted or not) -> {NAME: value}."""
    found = {}
    with open(path, encoding="utf-8") as handle:
        for raw in handle:
            line = raw.strip()
            if not line or line.startswith("#") or "=" not in line:
                continue
            name, value = line.split("=", 1)
            value = value.strip()
            if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
                value = value[1:-1]
            found[name.strip()] = value
    return found


def missing_env(site: dict) -> list[str]:
    """The site's required names that are neither set (non-empty) in its env file nor in its plain env."""
    required = site.get("required_env", [])
    if not required:
        return []
    present = set(site.get("env_names", []))
    path = site.get("env_file")
    if path:
        try:
            present |= {name for name, value in parse_env_file(path).items() if value}
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise CheckError("env_file_unreadable") from exc
    return sorted(set(required) - present)


def run(argv, env=None, timeout=30, ok_codes=(0,)) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False,
                              env=dict(os.environ, **(env or {})))
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise CheckError(f"{os.path.basename(argv[0])}_failed") from exc
    if done.returncode not in ok_codes:
        raise CheckError(f"{os.path.basename(argv[0])}_failed")
    return done.stdout


def as_user(user: str | None, argv: list) -> list:
    """argv run as user when this program runs as root (the timer's unit, sudo); as is otherwise."""
    return ["runuser", "-u", user, "--"] + argv if user and os.geteuid() == 0 else argv


def psql(config: dict, sql: str) -> list[list[str]]:
    port = str(config.get("postgresql", {}).get("port", 5432))
    try:
        out = run(as_user("postgres", ["psql", "-XAtq", "-p", port, "-d", "postgres", "-F", "\t", "-c", sql]))
    except CheckError as exc:
        raise CheckError("postgresql_unreachable") from exc
    return [row.split("\t") for row in out.splitlines() if row]


def redis_info(config: dict) -> dict:
    settings = config.get("redis", {})
    argv = ["redis-cli", "-h", "127.0.0.1", "-p", str(settings.get("port", 6379)), "--no-auth-warning"]
    env = {}
    if settings.get("user"):
        argv += ["--user", settings["user"]]
        env["REDISCLI_AUTH"] = credential(config, "redis-password")
    try:
        out = run(argv + ["INFO"], env=env)
    except CheckError as exc:
        raise CheckError("redis_unreachable") from exc
    if "used_memory:" not in out:
        raise CheckError("redis_refused")
    return dict(line.split(":", 1) for line in out.replace("\r", "").splitlines() if ":" in line and not line.startswith("#"))


def queue_length(site: dict) -> int:
    queue = site.get("queue") or {}
    try:
        if queue.get("command"):
            text = run(as_user(site.get("user"), list(queue["command"])), timeout=20)
        else:
            text = http_request(queue["url"], limit=4096).decode("utf-8", "replace")
        return int(text.strip().split()[0])
    except (CheckError, OSError, ValueError, IndexError, KeyError) as exc:
        raise CheckError("queue_unreadable") from exc


def unit_active(unit: str) -> bool:
    done = subprocess.run(["systemctl", "is-active", "--quiet", unit], check=False)
    return done.returncode == 0


def unit_failed(unit: str) -> bool:
    done = subprocess.run(["systemctl", "is-failed", "--quiet", unit], check=False)
    return done.returncode == 0


def unit_last_run(unit: str) -> dict:
    """How a unit's last run ended, as systemd remembers it since boot: Result, ExecMainStatus and
    ExecMainExitTimestampMonotonic (0 when it has not run)."""
    out = run(["systemctl", "show", "--property=Result,ExecMainStatus,ExecMainExitTimestampMonotonic", unit])
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


# --- what the production verification reads besides the daily signals -------------------------

class _SiteHTTPS(http.client.HTTPSConnection):
    """HTTPS to this host's own nginx (an address) naming the site (SNI and Host), as a visitor
    would. The certificate chain and its days are verified from the control node (the smoke
    tests); here the point is what the server answers, so the chain is not verified."""

    def __init__(self, address, port, server_name, context):
        super().__init__(address, port, timeout=HTTP_TIMEOUT, context=context)
        self._server_name, self._tls = server_name, context

    def connect(self):
        sock = socket.create_connection((self.host, self.port), self.timeout)
        self.sock = self._tls.wrap_socket(sock, server_hostname=self._server_name)


def _tls_context(version=None):
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    if version is not None:
        # Legacy protocols are off at the client's default security level: lower it, or the
        # client would refuse what the check asks the server about.
        context.set_ciphers("DEFAULT:@SECLEVEL=0")
        context.minimum_version = context.maximum_version = version
    return context


def site_answer(web: dict, server_name: str, path: str, https: bool = True) -> tuple[int, dict]:
    """(status, lower-cased headers) of a GET of path on this host's nginx for server_name."""
    address = web.get("address", "127.0.0.1")
    if https:
        connection = _SiteHTTPS(address, int(web.get("https_port", 443)), server_name, _tls_context())
    else:
        connection = http.client.HTTPConnection(address, int(web.get("http_port", 80)), timeout=HTTP_TIMEOUT)
    try:
        connection.request("GET", path, headers={"Host": server_name, "User-Agent": "opspack-verify"})
        response = connection.getresponse()
        response.read(65536)
        return response.status, {name.lower(): value for name, value in response.getheaders()}
    except (OSError, http.client.HTTPException) as exc:
        raise CheckError("site_unreachable") from exc
    finally:
        connection.close()


def tls_handshake(web: dict, server_name: str, version) -> bool:
    """Whether this host's nginx completes a handshake for server_name at exactly version."""
    try:
        context = _tls_context(version)
    except (ValueError, ssl.SSLError):
        return False  # this client cannot even offer it
    try:
        sock = socket.create_connection((web.get("address", "127.0.0.1"), int(web.get("https_port", 443))), HTTP_TIMEOUT)
    except OSError as exc:
        raise CheckError("site_unreachable") from exc
    try:
        with context.wrap_socket(sock, server_hostname=server_name):
            return True
    except (ssl.SSLError, ConnectionError):
        return False  # refused in the handshake, by an alert or by closing the connection
    finally:
        sock.close()


# Headers every TLS answer must carry (roles/nginx, opspack-security-headers.conf); a frame
# policy may come from X-Frame-Options or a CSP frame-ancestors.
SECURITY_HEADERS = ("strict-transport-security", "x-content-type-options", "referrer-policy")


def missing_headers(headers: dict) -> list[str]:
    missing = [name for name in SECURITY_HEADERS if not headers.get(name)]
    if headers.get("x-content-type-options", "").strip().lower() not in ("", "nosniff"):
        missing.append("x-content-type-options")
    if not headers.get("x-frame-options") and "frame-ancestors" not in headers.get("content-security-policy", ""):
        missing.append("x-frame-options")
    return sorted(set(missing))


def ruleset_fingerprint(listing: str) -> dict:
    """What a live nftables table is, from `nft -j -s list table ...`, without what changes on its
    own (handles, counters, the addresses a meter's dynamic sets hold): its rule count and a hash."""
    try:
        items = json.loads(listing)["nftables"]
    except (ValueError, KeyError, TypeError) as exc:
        raise CheckError("nft_output_unreadable") from exc

    def plain(node):
        if isinstance(node, dict):
            return {key: plain(value) for key, value in node.items()
                    if key not in ("handle", "elem", "counter", "metainfo", "packets", "bytes")}
        if isinstance(node, list):
            return [plain(value) for value in node]
        return node
    kept = [plain(item) for item in items if "metainfo" not in item]
    kept = [item for item in kept if item]
    text = json.dumps(kept, sort_keys=True, separators=(",", ":"))
    return {"rules": sum(1 for item in kept if "rule" in item),
            "sha256": hashlib.sha256(text.encode()).hexdigest()}


def live_ruleset(table: str) -> dict:
    return ruleset_fingerprint(run(["nft", "-j", "-s", "list", "table"] + table.split(" ", 1)))


def sshd_settings() -> dict:
    """sshd's effective configuration (`sshd -T`): keyword -> value (the first, as sshd reads it)."""
    found = {}
    for line in run(["sshd", "-T"]).splitlines():
        keyword, value = (line.strip().split(" ", 1) + [""])[:2]
        if keyword and keyword.lower() not in found:
            found[keyword.lower()] = value.strip()
    return found


def host_key_types(directory: str = "/etc/ssh") -> list[str]:
    """Types of the host key files on disk (ssh_host_<type>_key), whether sshd offers them or not."""
    found = []
    for name in sorted(os.listdir(directory)) if os.path.isdir(directory) else []:
        match = re.match(r"^ssh_host_([a-z0-9]+)_key$", name)
        if match:
            found.append(match.group(1))
    return found


def _file_sha256(path: str) -> str:
    try:
        with open(path, "rb") as handle:
            return hashlib.sha256(handle.read()).hexdigest()
    except OSError:
        return ""


def _login_defs(path: str = "/etc/login.defs") -> dict:
    found = {}
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            for line in handle:
                words = line.split()
                if len(words) >= 2 and not words[0].startswith("#"):
                    found.setdefault(words[0], words[1])
    except OSError:
        pass
    return found


def _installed(packages) -> bool:
    if not packages:
        return True
    # dpkg-query exits 1 when it knows a package not at all (purged): the others are still listed.
    listing = run(["dpkg-query", "-W", "-f", "${db:Status-Abbrev} ${Package}\n", *packages], timeout=60, ok_codes=(0, 1))
    installed = {line.split()[1] for line in listing.splitlines() if line.startswith("ii ") and len(line.split()) > 1}
    return set(packages) <= installed


def _sysctl_writable() -> bool:
    # A container's /proc/sys is read-only: there the settings are only in the files.
    return os.access("/proc/sys/kernel/dmesg_restrict", os.W_OK)


def control_holds(control: dict) -> bool:
    """Whether one baseline control (a manifest entry) holds on this host."""
    for path, digest in control.get("files", {}).items():
        if _file_sha256(path) != digest:
            return False
    if any(os.path.lexists(path) for path in control.get("absent", [])):
        return False
    for path, mode in control.get("modes", {}).items():
        try:
            if os.stat(path).st_mode & 0o7777 != int(str(mode), 8):
                return False
        except OSError:
            return False
    restricted = control.get("executables_restricted")
    if restricted and _executables_open_to_others(restricted["dir"], restricted["patterns"]):
        return False
    if control.get("login_defs"):
        defs = _login_defs()
        if any(defs.get(key) != str(value) for key, value in control["login_defs"].items()):
            return False
    if control.get("modprobe_refuses"):
        try:
            config = run(["modprobe", "--showconfig"], timeout=60).splitlines()
        except CheckError:  # modprobe gone (kmod removed): nothing keeps the modules out
            return False
        if any(f"install {name.replace('-', '_')} /bin/false" not in config for name in control["modprobe_refuses"]):
            return False
    if control.get("sysctl") and _sysctl_writable():
        for key, value in control["sysctl"].items():
            try:
                with open("/proc/sys/" + key.replace(".", "/"), encoding="utf-8") as handle:
                    if handle.read().split() != str(value).split():
                        return False
            except OSError:
                return False
    return _installed(control.get("packages", []))


def _executables_open_to_others(directory: str, patterns: list) -> list:
    """The files in directory named by one of the (shell) patterns that are not root's (owner and
    group) or that others may run: links are left out (they point at the files themselves)."""
    open_files = []
    try:
        names = sorted(os.listdir(directory))
    except OSError:
        return []
    for name in names:
        if not any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns):
            continue
        path = os.path.join(directory, name)
        try:
            status = os.lstat(path)
        except OSError:
            continue
        if S_ISREG(status.st_mode) and (status.st_uid != 0 or status.st_gid != 0 or status.st_mode & 0o007):
            open_files.append(path)
    return open_files


def _sshd_value(value) -> str:
    # sshd -T prints PermitRootLogin prohibit-password under its older name on some versions.
    text = str(value).strip().lower()
    return "prohibit-password" if text == "without-password" else text


def backup_manifests(directory: str) -> list[dict]:
    """Every backup manifest under directory (roles/backup: <id>.manifest.json beside its data)."""
    found = []
    for root, _dirs, files in os.walk(directory):
        for name in files:
            if name.endswith(".manifest.json") and not name.startswith("."):
                try:
                    with open(os.path.join(root, name), encoding="utf-8") as handle:
                        manifest = json.load(handle)
                except (OSError, ValueError):
                    continue
                if isinstance(manifest, dict) and manifest.get("backup_id") and manifest.get("file"):
                    manifest["_dir"] = root
                    found.append(manifest)
    return found


def stamp_seconds(text: str) -> float:
    return datetime.datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.timezone.utc).timestamp()


def security_updates() -> int:
    """Packages apt would upgrade from a security suite, as of the last package list update."""
    out = run(["apt-get", "-s", "-o", "Debug::NoLocking=1", "dist-upgrade"], timeout=120)
    return sum(1 for line in out.splitlines() if line.startswith("Inst ") and "security" in line.lower())


# --- state -------------------------------------------------------------------------------------

class State:
    """What a scheduled run keeps for the next (CPU counters, disk history, alerts); read-only
    runs read it and write nothing."""

    def __init__(self, directory: str | None, writable: bool):
        self.directory, self.writable = directory, writable and bool(directory)
        self.failed = False

    def read(self, name: str, default):
        if not self.directory:
            return default
        try:
            with open(os.path.join(self.directory, name), encoding="utf-8") as handle:
                return json.load(handle)
        except (OSError, ValueError):
            return default

    def write(self, name: str, data) -> None:
        if not self.writable:
            return
        try:
            os.makedirs(self.directory, mode=0o750, exist_ok=True)
            write_json(os.path.join(self.directory, name), data)
        except OSError:
            # A full or read-only /var must not cost the run its findings: reported as an error.
            self.failed = True


def write_json(path: str, data) -> None:
    handle, temp = tempfile.mkstemp(prefix=".tmp-", dir=os.path.dirname(path))
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            out.write(json.dumps(data, indent=2, sort_keys=True) + "\n")
            out.flush()
            os.fsync(out.fileno())
        os.chmod(temp, 0o640)
        os.replace(temp, path)
    except BaseException:
        if os.path.exists(temp):
            os.unlink(temp)
        raise


# --- the checks --------------------------------------------------------------------------------

class Checks:
    """Every check of one run; each adds Findings, a check that cannot run adds an error."""

    def __init__(self, config: dict, state: State, now: float | None = None, strict: bool = True,
                 scheduled: bool = False):
        self.config, self.state, self.strict, self.scheduled = config, state, strict, scheduled
        self.now = now if now is not None else time.time()
        self.findings: list[Finding] = []

    def add(self, check, status, site=None, value=None, threshold=None, reason="", **figures):
        severity = severity_of(self.config, "traffic" if status == "insufficient_data" else check)
        self.findings.append(Finding(check, status, site, value, threshold, reason, severity, **figures))

    def limit(self, check, site, value, threshold, **figures):
        """A value against its threshold (a breach is strictly above it)."""
        self.add(check, "fail" if value > threshold else "ok", site, round(value, 4), threshold, **figures)

    def guarded(self, check, step, site=None):
        try:
            step()
        except CheckError as exc:
            self.add(check, "error", site, reason=str(exc))
        except Exception as exc:  # pylint: disable=broad-except  # a bug in one check must not hide the others
            self.add(check, "error", site, reason=f"internal_{type(exc).__name__}")

    def config_checks(self):
        for site in self.config.get("sites", []):
            def required(site=site):
                missing = missing_env(site)
                if missing:
                    self.add("env", "fail", site["name"], reason="missing_env", names=missing)
                else:
                    self.add("env", "ok", site["name"], required=len(site.get("required_env", [])))
            self.guarded("env", required, site["name"])

    def all(self):
        self.config_checks()
        self.guarded("node", self.node)
        self.guarded("disk", self.disk)
        self.guarded("traffic", self.traffic)
        if self.config.get("services"):
            self.guarded("services", self.services)
        if self.config.get("postgresql", {}).get("enabled"):
            self.guarded("postgresql", self.postgresql)
        if self.config.get("redis", {}).get("enabled"):
            self.guarded("redis", self.redis)
        if self.config.get("failure_marker_dir"):
            self.guarded("backups", self.backups)
        if self.config.get("hardening"):
            self.guarded("file_integrity", self.file_integrity)
            self.guarded("package_integrity", self.package_integrity)
        # Seen from a run by hand or from the control node: is the scheduled check still running?
        if self.config.get("schedule") and not self.scheduled:
            self.guarded("schedule", self.schedule)
        for site in self.config.get("sites", []):
            if site.get("queue"):
                self.guarded("queue", lambda site=site: self.queue(site), site["name"])
        return self.findings

    def node(self):
        url = self.config.get("node_exporter_url", "http://127.0.0.1:9100/metrics")
        metrics = read_metrics(url)
        counters = cpu_counters(metrics)
        previous = self.state.read("cpu.json", {}) if self.scheduled else {}
        usage = None
        # A scheduled run compares with the last one: the average since then, not one busy second.
        # A run by hand measures now, over one second.
        if isinstance(previous, dict) and 60 <= self.now - previous.get("time", 0) <= 2 * 86400:
            usage = cpu_percent((previous.get("total", 0), previous.get("idle", 0)), counters)
        if usage is None:
            time.sleep(CPU_SAMPLE_SECONDS)
            later = cpu_counters(read_metrics(url))
            usage = cpu_percent(counters, later)
            counters = later
        self.state.write("cpu.json", {"time": self.now, "total": counters[0], "idle": counters[1]})
        if usage is None:
            raise CheckError("node_exporter_cpu_still")
        self.limit("cpu", None, usage, host_threshold(self.config, "cpu_percent"))
        self.limit("memory", None, memory_percent(metrics), host_threshold(self.config, "memory_percent"))

    def disk(self):
        found = disk_usage(self.config.get("disk_paths", ["/"]))
        if not found:
            raise CheckError("disk_paths_missing")
        history = self.state.read("disk.json", {})
        history = history if isinstance(history, dict) else {}
        threshold = host_threshold(self.config, "disk_percent")
        worst = max(found, key=lambda entry: entry["percent"])
        self.limit("disk", None, worst["percent"], threshold, filesystems=len(found))
        days_left = []
        horizon = self.now - DISK_HISTORY_DAYS * 86400
        for entry in found:
            points = [point for point in history.get(entry["path"], []) if point[0] >= horizon][-59:]
            points.append([self.now, entry["used"]])
            history[entry["path"]] = points
            days = disk_days_left(points, entry["available"])
            if days is not None:
                days_left.append(days)
        self.state.write("disk.json", {path: history[path] for path in sorted(history)
                                       if path in {entry["path"] for entry in found}})
        if days_left:
            self.add("disk_forecast", "fail" if min(days_left) < host_threshold(self.config, "disk_full_days") else "ok",
                     None, round(min(days_left), 1), host_threshold(self.config, "disk_full_days"))

    def traffic(self):
        window = float(self.config.get("window_minutes", 1440)) * 60
        domains = {domain.lower(): site["name"] for site in self.config.get("sites", []) for domain in site.get("domains", [])}
        figures = read_traffic(self.config.get("nginx_logs", []), domains, self.now - window, self.now)
        for site in self.config.get("sites", []):
            name, found = site["name"], figures.get(site["name"], Window())
            limits = dict(SITE_THRESHOLDS, **site.get("thresholds", {}))
            if not found.requests:
                self.add("traffic", "insufficient_data", name, reason="delivered_total_0")
                continue
            self.add("traffic", "ok", name, requests=found.requests, errors_5xx=found.errors)
            self.limit("error_rate", name, found.error_rate, limits["error_rate_percent"])
            self.limit("p95", name, found.p95, limits["p95_seconds"])

    def services(self):
        inactive = [unit for unit in self.config["services"] if not unit_active(unit)]
        self.add("services", "fail" if inactive else "ok", None, reason="units_inactive" if inactive else "",
                 units=len(self.config["services"]), inactive=len(inactive), names=inactive)

    def postgresql(self):
        long_seconds = int(host_threshold(self.config, "long_query_seconds"))
        rows = psql(self.config, (
            "SELECT current_setting('max_connections')::int,"
            " (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'),"
            " (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend' AND state <> 'idle'"
            f"   AND now() - query_start > interval '{long_seconds} seconds'),"
            " (SELECT count(*) FROM pg_locks WHERE NOT granted),"
            " (SELECT coalesce(max(extract(epoch FROM replay_lag)), 0) FROM pg_stat_replication),"
            " (SELECT (last_failed_time IS NOT NULL AND (last_archived_time IS NULL OR last_failed_time > last_archived_time))::int"
            "   FROM pg_stat_archiver),"
            " current_setting('archive_mode')"))
        max_connections, connections, long_queries, lock_waits, lag, archive_failing, archive_mode = rows[0]
        self.limit("db_connections", None, 100.0 * int(connections) / max(int(max_connections), 1),
                   host_threshold(self.config, "db_connections_percent"), connections=int(connections))
        self.limit("long_queries", None, int(long_queries), host_threshold(self.config, "long_queries"))
        self.limit("lock_waits", None, int(lock_waits), host_threshold(self.config, "lock_waits"))
        self.limit("replication_lag", None, float(lag), host_threshold(self.config, "replication_lag_seconds"))
        if archive_mode != "off":
            self.add("archiving", "fail" if archive_failing == "1" else "ok", None)
        databases = sorted({site["database"] for site in self.config.get("sites", []) if site.get("database")})
        if databases:
            names = ",".join("'" + name.replace("'", "''") + "'" for name in databases)
            sizes = psql(self.config, f"SELECT datname, pg_database_size(datname) FROM pg_database WHERE datname IN ({names})")
            sizes = {name: int(size) for name, size in sizes}
            history = self.state.read("databases.json", {})
            history = history if isinstance(history, dict) else {}
            for site in self.config.get("sites", []):
                size = sizes.get(site.get("database"))
                if size is None:
                    continue
                figures = {"size_mb": round(size / 1048576, 1)}
                before = history.get(site["database"])
                if isinstance(before, list) and len(before) == 2 and self.now - before[0] >= 3600:
                    figures["growth_mb_per_day"] = round((size - before[1]) / 1048576 / ((self.now - before[0]) / 86400), 2)
                self.add("database", "ok", site["name"], **figures)
            self.state.write("databases.json", {name: [self.now, sizes[name]] for name in sorted(sizes)})

    def redis(self):
        info = redis_info(self.config)
        used, limit = int(info.get("used_memory", 0)), int(info.get("maxmemory", 0) or 0)
        if limit:
            self.limit("redis_memory", None, 100.0 * used / limit, host_threshold(self.config, "redis_memory_percent"))
        evicted = int(info.get("evicted_keys", 0))
        previous = self.state.read("redis.json", {})
        before = previous.get("evicted_keys") if isinstance(previous, dict) else None
        if isinstance(before, int) and evicted >= before:
            self.limit("redis_evictions", None, evicted - before, 0)
        self.state.write("redis.json", {"evicted_keys": evicted})

    def backups(self):
        directory = self.config["failure_marker_dir"]
        try:
            markers = [name for name in os.listdir(directory) if not name.startswith(".")]
        except FileNotFoundError:
            markers = []
        except OSError as exc:
            raise CheckError("failure_markers_unreadable") from exc
        self.add("backups", "fail" if markers else "ok", None, failed_jobs=len(markers))

    def schedule(self):
        """The host's own daily check: its timer waits, its last run did not fail, and it ran
        within max_age_hours (a stopped timer or a run that never ends is a missed run)."""
        settings = self.config["schedule"]
        last = self.state.read("last-ops_daily.json", {})
        last = last if isinstance(last, dict) else {}
        if not unit_active(settings["timer"]):
            self.add("schedule", "fail", reason="timer_inactive")
        # The unit fails on an unhealthy host too (exit 2, which the other checks report): only a
        # run that could not check (exit 1, or no report) is a schedule that does not work.
        elif unit_failed(settings["service"]) and last.get("exit") in (None, EXIT_ERROR):
            self.add("schedule", "fail", reason="last_run_failed")
        else:
            stamp = last.get("generated_at")
            if not stamp:
                self.add("schedule", "ok", reason="not_run_yet")
                return
            hours = round((self.now - stamp_seconds(stamp)) / 3600, 1)
            late = hours > settings["max_age_hours"]
            self.add("schedule", "fail" if late else "ok", None, hours, settings["max_age_hours"],
                     reason="missed_run" if late else "")

    # --- the production verification's checks (prod_verify verify) ---------------------------

    def verify(self, expected_backups=()):
        """Every daily check, then what a go-live verification adds: each site as visitors reach
        it (HTTPS redirect, TLS protocols, security headers, not in maintenance), the firewall and
        SSH as provisioned, backups fresh and present, the PITR window, pending security updates."""
        self.all()
        for site in self.config.get("sites", []):
            if site.get("domains"):
                self.guarded("web", lambda site=site: self.web(site), site["name"])
        if self.config.get("firewall"):
            self.guarded("firewall", self.firewall)
        if self.config.get("ssh"):
            self.guarded("ssh", self.ssh)
        if self.config.get("hardening"):
            self.guarded("hardening", self.hardening)
        if self.config.get("backups"):
            self.guarded("backup_age", lambda: self.backup_age(expected_backups))
        if self.config.get("pitr"):
            self.guarded("pitr", self.pitr)
        if self.config.get("updates", True):
            self.guarded("updates", self.updates)
        return self.findings

    def web(self, site):
        web, name, server = self.config.get("web", {}), site["name"], site["domains"][0]
        status, headers = site_answer(web, server, "/", https=False)
        location = headers.get("location", "")
        redirected = status in (301, 302, 307, 308) and location.lower().startswith(f"https://{server.lower()}")
        self.add("https_redirect", "ok" if redirected else "fail", name, reason="" if redirected else "no_redirect_to_https",
                 http_status=status)
        legacy = [label for label, version in (("1.0", ssl.TLSVersion.TLSv1), ("1.1", ssl.TLSVersion.TLSv1_1))
                  if tls_handshake(web, server, version)]
        modern = tls_handshake(web, server, ssl.TLSVersion.TLSv1_2)
        self.add("tls_protocols", "fail" if legacy or not modern else "ok", name,
                 reason="legacy_tls_accepted" if legacy else ("" if modern else "tls12_refused"))
        status, headers = site_answer(web, server, site.get("health_path", "/health"))
        missing = missing_headers(headers)
        self.add("security_headers", "fail" if missing else "ok", name, reason="missing_headers" if missing else "",
                 missing=len(missing), names=missing)
        path = (site.get("smoke_paths") or ["/"])[0]
        status, headers = site_answer(web, server, path)
        # The maintenance page (roles/nginx) answers 503 with Retry-After to everyone outside the allow list.
        on = status == 503 and "retry-after" in headers
        self.add("maintenance", "fail" if on else "ok", name, reason="maintenance_on" if on else "")

    def firewall(self):
        settings = self.config["firewall"]
        try:
            with open(settings["baseline"], encoding="utf-8") as handle:
                provisioned = json.load(handle)
        except FileNotFoundError as exc:
            raise CheckError("firewall_baseline_missing") from exc
        except (OSError, ValueError) as exc:
            raise CheckError("firewall_baseline_unreadable") from exc
        try:
            live = live_ruleset(provisioned["table"])
        except (CheckError, KeyError, AttributeError):
            self.add("firewall", "fail", reason="table_missing")
            return
        same = live.get("sha256") == provisioned.get("sha256")
        self.add("firewall", "ok" if same else "fail", reason="" if same else "ruleset_changed_by_hand",
                 rules=live["rules"], rules_provisioned=provisioned.get("rules", 0))

    def ssh(self):
        expected = self.config["ssh"]
        live = sshd_settings()
        differs = sorted(keyword for keyword, value in expected.items()
                         if _sshd_value(live.get(keyword.lower(), "")) != _sshd_value(value))
        self.add("ssh", "fail" if differs else "ok", reason="policy_differs" if differs else "",
                 settings=len(expected), differs=len(differs), names=differs)
        allowed = self.config.get("ssh_host_key_types")
        if allowed is not None:
            extra = sorted(set(host_key_types()) - set(allowed))
            self.add("ssh_host_keys", "fail" if extra else "ok", reason="host_key_not_allowed" if extra else "",
                     names=extra)

    def hardening(self):
        """Each control of the OS baseline as the baseline role left it (its manifest): files
        with their content, files that must be gone, modes, login.defs keys, packages, modules
        modprobe refuses, and the kernel settings live where the host may set them. Fails naming
        the controls that differ."""
        try:
            with open(self.config["hardening"]["manifest"], encoding="utf-8") as handle:
                controls = json.load(handle)["controls"]
        except (OSError, ValueError, KeyError, TypeError):
            self.add("hardening", "fail", reason="baseline_not_applied")
            return
        differs = sorted(name for name, control in controls.items() if not control_holds(control))
        self.add("hardening", "fail" if differs else "ok", reason="control_changed" if differs else "",
                 controls=len(controls), differs=len(differs), names=differs)

    def file_integrity(self):
        """The daily file integrity check (AIDE against the reference the baseline role made): fails
        when its last run found files added, removed or changed (named in its journal), when it
        failed, or when the database is gone."""
        def verdict(status):
            if 1 <= status <= 7:
                # AIDE's exit status: 1 files added, 2 removed, 4 changed (summed).
                return {"reason": "files_changed", "added": status & 1, "removed": (status & 2) >> 1,
                        "changed": (status & 4) >> 2}
            return {"reason": "check_failed", "exit_status": status}
        self.scheduled_check("file_integrity", "file_integrity", verdict)

    def package_integrity(self):
        """The daily package integrity check (debsums: the installed programs and libraries against
        their packages' checksums, configuration files left out): fails when its last run found a
        file changed or missing (named in its journal), or when it failed."""
        def verdict(status):
            # debsums' exit status: 2 a file changed or missing, 1 an error; both can be set (3).
            if status & 2 and status < 8:
                return {"reason": "files_changed", "exit_status": status}
            return {"reason": "check_failed", "exit_status": status}
        self.scheduled_check("package_integrity", "debsums", verdict)

    def scheduled_check(self, check, control_name, verdict):
        """The last run of a check the baseline role schedules (its unit, and the reference it
        needs, named in the baseline's manifest under the control's `integrity`). `verdict` turns
        a failed run's exit status into the result's reason and fields."""
        try:
            with open(self.config["hardening"]["manifest"], encoding="utf-8") as handle:
                control = json.load(handle)["controls"].get(control_name) or {}
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return  # no baseline here: the verification's hardening check says so
        integrity = control.get("integrity")
        if not integrity:
            return
        if integrity.get("database") and not os.path.exists(integrity["database"]):
            self.add(check, "fail", reason="database_missing")
            return
        last = unit_last_run(integrity["service"])
        if last.get("ExecMainExitTimestampMonotonic", "0") in ("", "0"):
            self.add(check, "ok", checked=0)  # not run since boot: nothing to report yet
            return
        # `systemctl reset-failed` (an operator who has seen the findings) makes the Result success again.
        if last.get("Result") == "success":
            self.add(check, "ok", checked=1)
        else:
            self.add(check, "fail", checked=1, **verdict(int(last.get("ExecMainStatus") or 0)))

    def backup_age(self, expected_backups=()):
        settings = self.config["backups"]
        manifests = backup_manifests(settings["dir"])
        limit = float(settings.get("max_age_hours", 26))
        for name in settings.get("sites", []):
            # The database's own backups: a fresh files or Redis backup must not hide a stale dump.
            own = [manifest for manifest in manifests if manifest.get("site") == name and manifest.get("ended_at")
                   and manifest.get("engine") == "postgresql"]
            if not own:
                self.add("backup_age", "fail", name, reason="no_backup")
                continue
            hours = round((self.now - max(stamp_seconds(manifest["ended_at"]) for manifest in own)) / 3600, 1)
            self.add("backup_age", "fail" if hours > limit else "ok", name, hours, limit, reason="stale" if hours > limit else "",
                     backups=len(own))
        # The newest backup the records hold for each site and engine must still be here (with its data).
        present = {manifest["backup_id"]: manifest for manifest in manifests}
        for name in sorted({item.get("site") for item in expected_backups if item.get("site")}):
            wanted = [item["backup_id"] for item in expected_backups if item.get("site") == name and item.get("backup_id")]
            gone = [backup_id for backup_id in wanted if backup_id not in present
                    or not os.path.exists(os.path.join(present[backup_id]["_dir"], os.path.basename(present[backup_id]["file"])))]
            self.add("backup_missing", "fail" if gone else "ok", name, reason="recorded_backup_missing" if gone else "",
                     recorded=len(wanted), missing=len(gone))

    def pitr(self):
        settings = self.config["pitr"]
        argv = ["pgbackrest", "--output=json", f"--stanza={settings.get('stanza', 'main')}", "info"]
        try:
            stanzas = json.loads(run(as_user("postgres", argv), timeout=60))
        except ValueError as exc:
            raise CheckError("pgbackrest_output_unreadable") from exc
        stanza = stanzas[0] if isinstance(stanzas, list) and stanzas else {}
        backups = stanza.get("backup") or []
        code = (stanza.get("status") or {}).get("code")
        if not backups:
            self.add("pitr", "fail", reason="no_backup")
            return
        stamps = [backup.get("timestamp") or {} for backup in backups if isinstance(backup, dict)]
        starts = [stamp["start"] for stamp in stamps if isinstance(stamp.get("start"), (int, float))]
        stops = [stamp["stop"] for stamp in stamps if isinstance(stamp.get("stop"), (int, float))]
        if not starts or not stops:
            raise CheckError("pgbackrest_output_unreadable")
        oldest, newest = min(starts), max(stops)
        days = round((self.now - oldest) / 86400, 2)
        newest_hours = round((self.now - newest) / 3600, 1)
        limit = float(settings.get("max_age_hours", 8 * 24))
        if code not in (0, None):
            self.add("pitr", "fail", reason="stanza_not_ok", window_days=days, backups=len(backups))
        else:
            self.add("pitr", "fail" if newest_hours > limit else "ok", None, newest_hours, limit,
                     reason="newest_backup_too_old" if newest_hours > limit else "", window_days=days, backups=len(backups))

    def updates(self):
        pending = security_updates()
        # Pending security updates are a warning: the unattended-upgrades timer applies them.
        self.add("updates", "warn" if pending else "ok", None, pending, 0, reason="security_updates_pending" if pending else "")

    def queue(self, site):
        limits = dict(SITE_THRESHOLDS, **site.get("thresholds", {}))
        self.limit("queue", site["name"], queue_length(site), limits["queue_length"])


def verdict(findings, strict: bool = True) -> tuple[int, str]:
    """The contract's exit code and status word: a breach first (it is known whatever else
    failed), then a check that could not run, then a site without traffic."""
    statuses = {finding.status for finding in findings}
    if "fail" in statuses:
        return EXIT_UNHEALTHY, "unhealthy"
    if "error" in statuses:
        return EXIT_ERROR, "error"
    if "insufficient_data" in statuses and strict:
        return EXIT_UNHEALTHY, "insufficient_data"
    return EXIT_OK, "healthy"


def counts_green(findings) -> bool:
    """A scheduled run is green when nothing failed or errored (a site without traffic yet is)."""
    return not any(finding.status in ("fail", "error") for finding in findings)


# --- alerts and the dead-man's switch ----------------------------------------------------------

def post(url: str, payload: bytes | None, content_type: str = "application/json") -> None:
    try:
        http_request(url, payload if payload is not None else b"", content_type, limit=1024)
    except (OSError, ValueError) as exc:
        raise CheckError("delivery_failed") from exc


def alert_message(fmt: str, host: str, firing: list, resolved: list, suppressed: int) -> bytes:
    if fmt == "slack":
        lines = [f"[{alert['severity']}] {host} {alert['site'] or 'host'}: {alert['metric']} {_number(alert['value'])}"
                 f" > {_number(alert['threshold'])} ({alert['channel']})" for alert in firing]
        lines += [f"[resolved] {host} {alert['site'] or 'host'}: {alert['metric']}" for alert in resolved]
        if suppressed:
            lines.append(f"({suppressed} earlier alert message(s) suppressed by the rate limit)")
        return json.dumps({"text": "\n".join(lines)}, sort_keys=True).encode()
    return json.dumps({"source": "opspack", "host": host, "firing": firing, "resolved": resolved,
                       "suppressed": suppressed}, sort_keys=True).encode()


def _alert(key: str, **fields) -> dict:
    site, metric = key.split(":", 1)
    return dict({"site": None if site == "host" else site, "metric": metric}, **fields)


class Alerts:
    """Which breaches to tell which webhook now, kept per webhook: a breach new to it (or whose
    severity changed), one it was told of alert_repeat_minutes ago, and a resolved one it was told
    of; at most alert_max_per_hour messages an hour per webhook, the rest held back and counted. A
    breach whose check did not report this run (it could not run, or the site had no traffic) stays
    open: nothing is known to be resolved; one not seen for OPEN_FORGET_DAYS is forgotten."""

    OPEN_FORGET_DAYS = 7

    def __init__(self, config: dict, state: State, now: float):
        self.config, self.state, self.now = config, state, now
        saved = state.read("alerts.json", {})
        self.saved = saved if isinstance(saved, dict) else {}

    def _hooks(self):
        for hook in self.config.get("webhooks", []):
            channels = hook.get("channels", ["page", "notify"])
            yield hook, {channels} if isinstance(channels, str) else set(channels)

    def deliver(self, findings, host: str) -> dict:
        repeat = float(self.config.get("alert_repeat_minutes", 360)) * 60
        per_hour = int(self.config.get("alert_max_per_hour", 6))
        before = {key: entry for key, entry in self.saved.get("open", {}).items() if isinstance(entry, dict)}
        failing = {finding.key: finding for finding in findings if finding.status == "fail"}
        reported = {finding.key for finding in findings if finding.status in ("ok", "insufficient_data")}
        opened, resolving = {}, dict(self.saved.get("resolving", {}))
        for key, finding in failing.items():
            severity = finding.severity or severity_of(self.config, finding.check)
            entry = before.get(key, {})
            opened[key] = {"since": entry.get("since", self.now), "seen": self.now, "severity": severity,
                           "told": entry.get("told", {}) if entry.get("severity") == severity else {},
                           "value": finding.value if finding.value is not None else len(finding.figures.get("names", [])),
                           "threshold": finding.threshold if finding.threshold is not None else 0}
            resolving.pop(key, None)
        for key, entry in before.items():
            if key in opened:
                continue
            if key in reported:
                # Resolved: each webhook that was told of it hears that it cleared.
                if entry.get("told"):
                    resolving[key] = {"severity": entry.get("severity", "P3"), "hooks": sorted(entry["told"])}
            elif self.now - entry.get("seen", self.now) < self.OPEN_FORGET_DAYS * 86400:
                opened[key] = entry
        times_before, held_before = self.saved.get("sent", {}), self.saved.get("suppressed", {})
        times_now, held_now = {}, {}
        counts = {"sent": 0, "suppressed": 0, "failed": 0, "firing": 0, "resolved": 0}
        for hook, channels in self._hooks():
            name = hook["name"]
            times = [moment for moment in times_before.get(name, []) if moment > self.now - 3600]
            held = int(held_before.get(name, 0))
            firing = [key for key, entry in sorted(opened.items()) if key in failing
                      and channel_of(self.config, entry["severity"]) in channels
                      and self.now - entry["told"].get(name, -repeat) >= repeat]
            cleared = [key for key, entry in sorted(resolving.items()) if name in entry["hooks"]]
            if firing or cleared:
                if len(times) >= per_hour:
                    held += 1
                    counts["suppressed"] += 1
                else:
                    message = alert_message(
                        hook.get("format", "json"), host,
                        [_alert(key, value=opened[key]["value"], threshold=opened[key]["threshold"],
                                severity=opened[key]["severity"], channel=channel_of(self.config, opened[key]["severity"]))
                         for key in firing],
                        [_alert(key, channel=channel_of(self.config, resolving[key]["severity"])) for key in cleared], held)
                    try:
                        post(credential(self.config, hook["credential"]), message)
                    except CheckError:
                        counts["failed"] += 1
                    else:
                        counts["sent"] += 1
                        counts["firing"] += len(firing)
                        counts["resolved"] += len(cleared)
                        times.append(self.now)
                        held = 0
                        for key in firing:
                            opened[key]["told"] = dict(opened[key]["told"], **{name: self.now})
                        for key in cleared:
                            resolving[key]["hooks"] = [other for other in resolving[key]["hooks"] if other != name]
            times_now[name] = times
            if held:
                held_now[name] = held
        hooks = {hook["name"] for hook in self.config.get("webhooks", [])}
        resolving = {key: dict(entry, hooks=[name for name in entry["hooks"] if name in hooks])
                     for key, entry in sorted(resolving.items())}
        self.state.write("alerts.json", {"open": opened, "sent": times_now, "suppressed": held_now,
                                         "resolving": {key: entry for key, entry in resolving.items() if entry["hooks"]}})
        return counts


def ping(config: dict, suffix: str, body: str = "") -> bool:
    """One dead-man's-switch ping; False when it could not be sent (the run goes on)."""
    name = config.get("deadman_credential")
    if not name:
        return True
    try:
        base = credential(config, name).rstrip("/")
        post(base + suffix, body.encode()[:10000], "text/plain")
        return True
    except CheckError:
        return False


# --- the programs ------------------------------------------------------------------------------

def report(tool: str, mode: str, findings, code: int, status: str, now: float, delivery=None) -> dict:
    found = {"tool": tool, "mode": mode, "exit": code, "status": status,
             "generated_at": datetime.datetime.fromtimestamp(now, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
             "checks": [finding.as_dict() for finding in findings],
             "lines": [finding.line() for finding in findings]}
    if delivery is not None:
        found["delivery"] = delivery
    return found


def summary_line(tool: str, mode: str, findings, code: int, status: str) -> str:
    count = {name: sum(1 for finding in findings if finding.status == name)
             for name in ("fail", "error", "insufficient_data", "warn")}
    return (f"{tool} status={status} mode={mode} exit={code} checks={len(findings)} failed={count['fail']}"
            f" errors={count['error']} insufficient_data={count['insufficient_data']} warnings={count['warn']}")


def run_checks(config: dict, tool: str, mode: str, scheduled: bool = False, now: float | None = None,
               expected_backups=()) -> tuple[int, dict]:
    """One run of a tool: ops_daily (mode prod or dev) or prod_verify (dry_run or verify).
    Returns the exit code and the report (its lines are what the programs print)."""
    now = now if now is not None else time.time()
    strict = mode != "dev"
    state = State(config.get("state_dir"), writable=scheduled)
    checks = Checks(config, state, now, strict=strict, scheduled=scheduled)
    if tool == "prod_verify" and mode == "dry_run":
        checks.config_checks()
    elif tool == "prod_verify":
        checks.verify(expected_backups)
    else:
        checks.all()
    findings = checks.findings

    def broken(check: str, reason: str) -> None:
        """The run itself could not do something (deliver, keep its state): an error finding."""
        findings.append(Finding(check, "error", reason=reason, severity=severity_of(config, "error")))

    delivery = None
    if scheduled:
        delivery = Alerts(config, state, now).deliver(findings, config.get("host", "host"))
        if delivery["failed"]:
            broken("alerts", "delivery_failed")
    if state.failed:
        broken("state", "state_unwritable")
    code, status = verdict(findings, strict)
    found = report(tool, mode, findings, code, status, now, delivery)
    found["green"] = counts_green(findings)
    found["lines"].append(summary_line(tool, mode, findings, code, status))
    if scheduled:
        state.write(f"last-{tool}.json", found)
        if state.failed and not any(finding.check == "state" for finding in findings):
            # Only the last write failed: the report it could not keep still says so.
            broken("state", "state_unwritable")
            code, status = verdict(findings, strict)
            found["green"] = False
            found["lines"][-1:] = [findings[-1].line(), summary_line(tool, mode, findings, code, status)]
            found.update(exit=code, status=status)
    return code, found


def cli(argv, tool: str) -> tuple[int, str, str]:
    """ops_daily or prod_verify (tool) on the command line: (exit code, stdout, stderr). The
    programs in /usr/local/sbin call it and print; a usage error is an error (1), never 2."""
    tool = tool if tool in ("ops_daily", "prod_verify") else "ops_daily"
    parser = argparse.ArgumentParser(prog=tool, description=__doc__.split("\n\n", maxsplit=1)[0])
    parser.add_argument("--config", default=CONFIG_PATH)
    parser.add_argument("--json", action="store_true", help="print the report as JSON instead of lines")
    if tool == "prod_verify":
        parser.add_argument("mode", choices=("dry_run", "verify"))
    else:
        parser.add_argument("--mode", choices=("prod", "dev"), default="prod",
                            help="prod: strict (default); dev: a site without traffic is not a failure")
        parser.add_argument("--scheduled", action="store_true",
                            help="as the timer runs it: keep state, send alerts, ping the dead-man's switch")
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help (0) or a usage error, which argparse has explained on stderr
        return (EXIT_OK if exc.code == 0 else EXIT_ERROR), "", ""
    scheduled = getattr(args, "scheduled", False)
    try:
        config = load_config(args.config)
    except CheckError as exc:
        if scheduled and os.environ.get("CREDENTIALS_DIRECTORY"):
            # The unit still hands over the dead-man's URL: say at once that the check broke.
            ping({"deadman_credential": "deadman-url"}, "/fail")
        return EXIT_ERROR, f"{tool} status=error reason={exc} exit={EXIT_ERROR}\n", ""
    if scheduled:
        ping(config, "/start")
    try:
        code, found = run_checks(config, tool, args.mode, scheduled=scheduled)
    except Exception as exc:  # pylint: disable=broad-except  # the contract: 1 when the check itself broke
        if scheduled:
            ping(config, "/fail")
        return EXIT_ERROR, f"{tool} status=error reason=internal_{type(exc).__name__} exit={EXIT_ERROR}\n", ""
    out = (json.dumps(found, indent=2, sort_keys=True) if args.json else "\n".join(found["lines"])) + "\n"
    err = ""
    if scheduled:
        if not ping(config, "" if found["green"] else f"/{code}", "\n".join(found["lines"])):
            err = f"{tool} deadman status=error reason=delivery_failed\n"
        # The timer's unit succeeds when the host is green: a site without traffic yet is not a failure.
        return (EXIT_OK if found["green"] else code), out, err
    return code, out, err
