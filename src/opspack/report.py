"""`opspack lab report`: what each lab host serves, checked for real from the control node
(TLS verified against the lab CA, never -k). `make demo` ends with it."""

from __future__ import annotations

import http.client
import json
import socket
import ssl
import subprocess
from pathlib import Path

import yaml

from opspack.lab import LabError



class LabHTTPSConnection(http.client.HTTPSConnection):
    """HTTPS to 127.0.0.1:port while naming (SNI, Host, certificate check) the site."""

    def connect(self):
        raw = socket.create_connection(("127.0.0.1", self.port), timeout=self.timeout)
        self.sock = self._context.wrap_socket(raw, server_hostname=self.host)


def lab_sites(sites_file: Path) -> list[str]:
    """The main domain of each site the lab runs (opspack_sites of the lab's variables file)."""
    try:
        sites = (yaml.safe_load(sites_file.read_text()) or {}).get("opspack_sites") or []
    except (OSError, yaml.YAMLError) as error:
        raise LabError(f"cannot read the lab's sites from {sites_file} ({error})") from error
    domains = [site["domains"][0] for site in sites if isinstance(site, dict) and site.get("domains")]
    if not domains:
        raise LabError(f"{sites_file} defines no site (opspack_sites)")
    return domains


def ssh_login(state: dict, host: dict, user: str) -> bool:
    """Whether USER logs in to the host with the lab's key (host key checked, never asked)."""
    ran = subprocess.run(["ssh", "-i", state["key_file"], "-p", str(host["ssh_port"]), "-o", "BatchMode=yes",
                          "-o", f"UserKnownHostsFile={state['known_hosts']}", "-o", "StrictHostKeyChecking=yes",
                          "-o", "IdentitiesOnly=yes", "-o", "ConnectTimeout=10", f"{user}@127.0.0.1", "true"],
                         capture_output=True, text=True, timeout=30, check=False)
    return ran.returncode == 0


def report(lab_dir: Path, sites_file: Path = Path("inventories/lab-site.yml"), operator: str = "ops") -> int:
    ca_file = lab_dir / "lab-ca" / "ca.crt"
    try:
        state = json.loads((lab_dir / "lab.json").read_text())
        context = ssl.create_default_context(cafile=str(ca_file))
    except (OSError, ValueError) as error:
        raise LabError(f"nothing to report from {lab_dir} ({error}): run 'opspack lab up' and provision first "
                       "(make demo does both)") from error
    domains = lab_sites(sites_file)
    ok = True
    for host in state["hosts"]:
        for domain in domains:
            try:
                line, healthy = check_site(host, domain, context)
            except (OSError, http.client.HTTPException) as error:
                line, healthy = f"{host['name']} {domain}: not serving ({error})", False
            print(line)
            ok = ok and healthy
        root, operator_in = ssh_login(state, host, "root"), ssh_login(state, host, operator)
        print(f"{host['name']} ssh: {operator} {'logs in' if operator_in else 'CANNOT log in'}; "
              f"root login {'ON (not provisioned?)' if root else 'refused'}")
        ok = ok and operator_in and not root
    return 0 if ok else 1


def check_site(host: dict, domain: str, context: ssl.SSLContext) -> tuple[str, bool]:
    plain = http.client.HTTPConnection("127.0.0.1", host["http_port"], timeout=10)
    plain.request("GET", "/", headers={"Host": domain})
    redirect = plain.getresponse()
    secure = LabHTTPSConnection(domain, host["https_port"], timeout=10, context=context)
    secure.request("GET", "/opspack-health")
    health = secure.getresponse()
    health.read()
    tls = secure.sock.version()
    # The app behind nginx, once a release is deployed (502 before the first deploy).
    secure.request("GET", "/")
    app = secure.getresponse()
    app.read()
    release = app.getheader("X-Release")
    line = (f"{host['name']} {domain}: http -> {redirect.status} {redirect.getheader('Location')}; "
            f"https ({tls}, certificate verified by the lab CA) /opspack-health -> {health.status}; "
            f"/ -> {app.status}{f' from release {release}' if release else (' (no release deployed)' if app.status == 502 else '')}")
    return line, redirect.status == 301 and health.status == 200
