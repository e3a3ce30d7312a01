"""A webhook and dead-man's-switch receiver for the lab: run on a lab host on 127.0.0.1, it
stands in for Slack, a generic JSON endpoint and healthchecks.io. Standard library only (it is
copied to the host and run there with the host's python3, as a transient systemd unit that stops
by itself after --seconds).

    python3 receiver.py --port 18080 --log /var/tmp/receiver.jsonl --seconds 1800

POST /hook/<name>            a webhook call: logged (path, body)
POST /ping/<uuid>[/start|/fail|/<exit status>]
                              a dead-man's-switch ping: logged
GET  /status/<uuid>?period=S&grace=S
                              healthchecks' verdict on the last ping: new, up, down or failed,
                              by the receiver's clock
POST /advance?seconds=N       move the receiver's clock forward (a missed run without waiting)
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

STATE = {"offset": 0.0, "pings": {}}
LOCK = threading.Lock()


def now() -> float:
    return time.time() + STATE["offset"]


class Handler(BaseHTTPRequestHandler):
    log_path = ""

    def _answer(self, code: int, body: str) -> None:
        data = body.encode()
        self.send_response(code)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self):  # noqa: N802 (http.server's name)
        url = urlparse(self.path)
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode("utf-8", "replace")
        parts = url.path.strip("/").split("/")
        with LOCK:
            if parts[0] == "advance":
                STATE["offset"] += float(parse_qs(url.query)["seconds"][0])
                return self._answer(200, "ok\n")
            if parts[0] == "ping" and len(parts) >= 2:
                kind = parts[2] if len(parts) > 2 else "success"
                STATE["pings"].setdefault(parts[1], []).append((now(), kind))
            with open(self.log_path, "a", encoding="utf-8") as log:
                log.write(json.dumps({"path": url.path, "body": body, "at": now(),
                                      "content_type": self.headers.get("Content-Type", "")}) + "\n")
        return self._answer(200, "ok\n")

    def do_GET(self):  # noqa: N802
        url = urlparse(self.path)
        parts = url.path.strip("/").split("/")
        if parts[0] != "status" or len(parts) != 2:
            return self._answer(404, "unknown\n")
        query = parse_qs(url.query)
        period, grace = float(query.get("period", ["86400"])[0]), float(query.get("grace", ["3600"])[0])
        with LOCK:
            pings = [ping for ping in STATE["pings"].get(parts[1], []) if ping[1] != "start"]
        if not pings:
            return self._answer(200, "new\n")
        at, kind = pings[-1]
        if kind not in ("success", "0"):
            return self._answer(200, "failed\n")
        return self._answer(200, "down\n" if now() - at > period + grace else "up\n")

    def log_message(self, *_args):
        pass


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--log", required=True)
    parser.add_argument("--seconds", type=float, default=1800)
    args = parser.parse_args()
    Handler.log_path = args.log
    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    threading.Timer(args.seconds, server.shutdown).start()
    server.serve_forever()


if __name__ == "__main__":
    main()
