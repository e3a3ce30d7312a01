"""`opspack lab report`: what each lab host serves, checked for real from the control node
(TLS verified against the lab CA, never -k). `make demo` ends with it."""

from __future__ import annotations

import http.client
import json
import socket
import ssl
from pathlib import Path

from opspack.lab import LabError

SERVER_NAME = "blog.lab.test"


class LabHTTPSConnection(http.client.HTTPSConnection):
    """HTTPS to 127.0.0.1:port while naming (SNI, Host, certificate check) the site."""

    def connect(self):
        raw = socket.create_connection(("127.0.0.1", self.port), timeout=self.timeout)
        self.sock = self._context.wrap_socket(raw, server_hostname=self.host)


def report(lab_dir: Path) -> int:
    ca_file = lab_dir / "opspack-lab-ca" / "ca.crt"
    try:
        state = json.loads((lab_dir / "lab.json").read_text())
        context = ssl.create_default_context(cafile=str(ca_file))
    except (OSError, ValueError) as error:
        raise LabError(f"nothing to report from {lab_dir} ({error}): run 'opspack lab up' and provision first "
                       "(make demo does both)") from error
    ok = True
    for host in state["hosts"]:
        try:
            line, healthy = check_host(host, context)
        except (OSError, http.client.HTTPException) as error:
            line, healthy = f"{host['name']}: not serving ({error})", False
        print(line)
        ok = ok and healthy
    return 0 if ok else 1


def check_host(host: dict, context: ssl.SSLContext) -> tuple[str, bool]:
    plain = http.client.HTTPConnection("127.0.0.1", host["http_port"], timeout=10)
    plain.request("GET", "/", headers={"Host": SERVER_NAME})
    redirect = plain.getresponse()
    secure = LabHTTPSConnection(SERVER_NAME, host["https_port"], timeout=10, context=context)
    secure.request("GET", "/opspack-health")
    health = secure.getresponse()
    health.read()
    tls = secure.sock.version()
    # The app behind nginx, once a release is deployed (502 before the first deploy).
    secure.request("GET", "/")
    app = secure.getresponse()
    app.read()
    release = app.getheader("X-Release")
    line = (f"{host['name']}: http -> {redirect.status} {redirect.getheader('Location')}; "
            f"https://{SERVER_NAME} ({tls}, certificate verified by the lab CA) /opspack-health -> {health.status}; "
            f"/ -> {app.status}{f' from release {release}' if release else ' (no release deployed)'}; "
            f"ssh: ops with sudo (root login off)")
    return line, redirect.status == 301 and health.status == 200
