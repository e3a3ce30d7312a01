"""A recorded OSV vulnerability service on 127.0.0.1, for the release gate's tests: these machines
cannot reach the advisory databases, so pip-audit (`--vulnerability-service osv --osv-url`) asks
this one, which answers from recorded OSV entries (tests/fixtures/osv-advisories.json).

It answers only for the packages the recording knows (with the entries that affect the asked
version, by OSV's ECOSYSTEM ranges); any other package gets HTTP 503, as a service that cannot
answer, so the gate's fail-closed path is exercised by the real pip-audit.

    with RecordedOsv() as osv:
        ... pip-audit -s osv --osv-url {osv.url} ...
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from packaging.version import InvalidVersion, Version

from opspack.testing.config import ROOT

RECORDING = ROOT / "tests" / "fixtures" / "osv-advisories.json"


def affects(entry: dict, name: str, version: str) -> bool:
    try:
        asked = Version(version)
    except InvalidVersion:
        return False
    for affected in entry.get("affected", []):
        package = affected.get("package", {})
        if package.get("ecosystem") != "PyPI" or package.get("name", "").lower() != name:
            continue
        if version in affected.get("versions", []):
            return True
        for ranges in affected.get("ranges", []):
            if ranges.get("type") != "ECOSYSTEM":
                continue
            introduced, inside = None, False
            for point in ranges.get("events", []):
                if "introduced" in point:
                    introduced = Version("0") if point["introduced"] == "0" else Version(point["introduced"])
                    inside = asked >= introduced
                elif "fixed" in point and inside and asked < Version(point["fixed"]):
                    return True
                elif "fixed" in point:
                    inside = False
            if inside:
                return True
    return False


class RecordedOsv:
    def __init__(self, recording: Path = RECORDING):
        data = json.loads(recording.read_text())
        self.known = {name.lower() for name in data["packages"]}
        self.entries = data["vulns"]
        self.asked: list[tuple[str, str]] = []
        self.server: ThreadingHTTPServer | None = None

    def answer(self, name: str, version: str) -> dict | None:
        self.asked.append((name, version))
        if name not in self.known:
            return None
        vulns = [entry for entry in self.entries if affects(entry, name, version)]
        return {"vulns": vulns} if vulns else {}

    def __enter__(self) -> RecordedOsv:
        service = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - the http.server API
                query = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                package = query.get("package", {})
                found = service.answer(str(package.get("name", "")).lower(), str(query.get("version", "")))
                if found is None:
                    self.send_response(503)
                    self.end_headers()
                    return
                body = json.dumps(found).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1/query"

    def __exit__(self, *exc) -> None:
        if self.server:
            self.server.shutdown()
            self.server.server_close()
