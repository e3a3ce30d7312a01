"""testinfra checks of the nginx role.

pytest runs on the control node: the TLS checks connect from here to the host's published
ports on 127.0.0.1 (inventory vars opspack_lab_http_port / opspack_lab_https_port) and verify
the certificate against the lab CA for real (no "insecure" mode). Sites, server names and
maintenance flag paths are read from the host's own nginx configuration.

OPSPACK_TEST_LAB_CA: the lab CA certificate, or the directory holding ca.crt
(default /tmp/h-nginx/ca).
"""

import http.client
import os
import re
import ssl
import time
import warnings

import pytest
from conftest import lab_port

from opspack.report import LabHTTPSConnection

CONF_D = "/etc/nginx/conf.d"
TIMEOUT = 10


def _lab_ca():
    path = os.environ.get("OPSPACK_TEST_LAB_CA", "/tmp/h-nginx/ca")
    if os.path.isdir(path):
        path = os.path.join(path, "ca.crt")
    return path


def _port(host, name):
    return lab_port(host, name.removeprefix("opspack_lab_").removesuffix("_port"))


def _sites(host):
    """[(site, [server names], maintenance flag path)] from the rendered site servers."""
    listing = host.run(f"ls {CONF_D}")
    assert listing.rc == 0, listing.stderr
    sites = []
    for name in sorted(listing.stdout.split()):
        match = re.fullmatch(r"opspack-site-(.+)\.conf", name)
        if not match:
            continue
        conf = host.file(f"{CONF_D}/{name}").content_string
        server_names = re.search(r"^\s*server_name\s+([^;]+);", conf, re.M).group(1).split()
        flag = re.search(r"if \(-f (\S+)\)", conf).group(1)
        sites.append((match.group(1), server_names, flag))
    if not sites:
        pytest.skip("no opspack site configured on this host")
    return sites


def _context(minimum=ssl.TLSVersion.TLSv1_2, maximum=ssl.TLSVersion.MAXIMUM_SUPPORTED):
    ca = _lab_ca()
    assert os.path.isfile(ca), f"lab CA {ca} not found (set OPSPACK_TEST_LAB_CA)"
    context = ssl.create_default_context(cafile=ca)
    with warnings.catch_warnings():
        # Naming TLS 1.1 is deprecated in Python; the test needs it to prove the refusal.
        warnings.simplefilter("ignore", DeprecationWarning)
        context.minimum_version = minimum
        context.maximum_version = maximum
    return context


def _get(conn, server_name, path):
    try:
        conn.request("GET", path, headers={"Host": server_name})
        response = conn.getresponse()
        return response.status, response.headers, response.read().decode(errors="replace")
    finally:
        conn.close()


def _https(port, server_name, path, context=None):
    # The same connection `opspack lab report` uses: 127.0.0.1:port, SNI and check for server_name.
    return _get(LabHTTPSConnection(server_name, port, timeout=TIMEOUT, context=context or _context()),
                server_name, path)


def _http(port, server_name, path):
    return _get(http.client.HTTPConnection("127.0.0.1", port, timeout=TIMEOUT), server_name, path)


def test_nginx_runs_and_listens_on_80_and_443(host):
    nginx = host.service("nginx")
    assert nginx.is_running
    assert nginx.is_enabled
    assert host.socket("tcp://0.0.0.0:80").is_listening
    assert host.socket("tcp://0.0.0.0:443").is_listening
    check = host.run("nginx -t")
    assert check.rc == 0, check.stderr
    # Not even a warning: HTTP/2 is switched on the way the target's nginx wants it (`http2 on;`
    # from 1.25.1; the older `listen ... http2` warns on every reload there).
    assert "[warn]" not in check.stderr, check.stderr


def test_each_site_answers_over_verified_tls_with_security_headers(host):
    port = _port(host, "opspack_lab_https_port")
    for site, server_names, _flag in _sites(host):
        for server_name in server_names:
            status, headers, body = _https(port, server_name, "/opspack-health")
            assert (status, body) == (200, "ok\n"), (site, server_name)
            assert headers["Strict-Transport-Security"].startswith("max-age=")
            assert headers["X-Content-Type-Options"] == "nosniff"
            assert headers["X-Frame-Options"] in ("DENY", "SAMEORIGIN")
            assert headers["Referrer-Policy"]
            # server_tokens off: no version in the Server header.
            assert headers["Server"] == "nginx"


def test_certificate_also_names_127_0_0_1(host):
    # Without SNI the default server answers with the first site's certificate, whose
    # lab-CA SANs include IP:127.0.0.1: verify the name check for the IP itself.
    port = _port(host, "opspack_lab_https_port")
    _sites(host)
    status, headers, body = _https(port, "127.0.0.1", "/opspack-health")
    assert (status, body) == (200, "ok\n")
    assert "Strict-Transport-Security" in headers


def test_only_tls_1_2_and_1_3_are_offered(host):
    port = _port(host, "opspack_lab_https_port")
    _site, server_names, _flag = _sites(host)[0]
    for version in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3):
        context = _context(minimum=version, maximum=version)
        assert _https(port, server_names[0], "/opspack-health", context)[0] == 200, version

    old = _context(minimum=ssl.TLSVersion.TLSv1_1, maximum=ssl.TLSVersion.TLSv1_1)
    # Let this client try TLS 1.1 at all, so that the refusal comes from the server.
    old.set_ciphers("DEFAULT:@SECLEVEL=0")
    with pytest.raises(ssl.SSLError) as refused:
        _https(port, server_names[0], "/opspack-health", old)
    assert "PROTOCOL_VERSION" in str(refused.value).upper().replace(" ", "_"), refused.value


def test_http_redirects_to_https_with_301(host):
    port = _port(host, "opspack_lab_http_port")
    _site, server_names, _flag = _sites(host)[0]
    status, headers, _body = _http(port, server_names[0], "/some/page?x=1")
    assert status == 301
    assert headers["Location"] == f"https://{server_names[0]}/some/page?x=1"


def test_acme_challenges_are_served_over_plain_http(host):
    port = _port(host, "opspack_lab_http_port")
    _site, server_names, _flag = _sites(host)[0]
    base = host.file(f"{CONF_D}/opspack-base.conf").content_string
    webroot = re.search(r"acme-challenge/ \{\s*root (\S+);", base).group(1)
    token = f"opspack-test-{os.getpid()}"
    path = f"{webroot}/.well-known/acme-challenge/{token}"
    # As an ACME client publishes it: readable by the web server whatever root's umask (the
    # baseline's UMASK 027 would make a plain redirect's file 0640).
    assert host.run(f"echo {token}.proof | install -m 0644 /dev/stdin {path}").rc == 0
    try:
        status, _headers, body = _http(port, server_names[0], f"/.well-known/acme-challenge/{token}")
        assert (status, body) == (200, f"{token}.proof\n")
    finally:
        host.run(f"rm -f {path}")


def _status_from_the_host_itself(host, server_name, path):
    # The host reaches itself from 127.0.0.1, which the default allow-list lets through.
    script = (
        "import socket, ssl\n"
        "c = ssl.create_default_context(); c.check_hostname = False; c.verify_mode = ssl.CERT_NONE\n"
        f"s = c.wrap_socket(socket.create_connection(('127.0.0.1', 443), {TIMEOUT}),"
        f" server_hostname='{server_name}')\n"
        f"s.sendall(b'GET {path} HTTP/1.1\\r\\nHost: {server_name}\\r\\nConnection: close\\r\\n\\r\\n')\n"
        "print(s.recv(64).split()[1].decode())\n"
    )
    result = host.run(f"python3 -c \"{script}\"")
    assert result.rc == 0, result.stderr
    return int(result.stdout.strip())


def test_maintenance_switch(host):
    port = _port(host, "opspack_lab_https_port")
    site, server_names, flag = _sites(host)[0]
    name = server_names[0]
    flag_dir = os.path.dirname(flag)
    # Provisioning made the flag's directory, so a flag made by hand works under UMASK 027.
    made_dir = not host.file(flag_dir).exists
    assert not made_dir or not flag.startswith("/var/lib/opspack/maintenance/"), flag_dir
    bypass_localhost = re.search(
        r"^\s*127\.0\.0\.1(/\d+)?\s+1;", host.file(f"{CONF_D}/opspack-base.conf").content_string, re.M
    )
    assert host.run(f"mkdir -p {flag_dir} && touch {flag}").rc == 0
    try:
        status, headers, body = _https(port, name, "/")
        assert status == 503, site
        assert int(headers["Retry-After"]) > 0
        assert "maintenance" in body.lower()
        assert "Strict-Transport-Security" in headers
        # nginx's own health and the app's /health paths stay reachable.
        assert _https(port, name, "/opspack-health")[0] == 200
        assert _https(port, name, "/health")[0] != 503
        if bypass_localhost:
            assert _status_from_the_host_itself(host, name, "/") != 503
    finally:
        host.run(f"rm -f {flag}")
        if made_dir:
            host.run(f"rmdir {flag_dir}")

    # Off again: the app answers (200) or, with no app running yet, nginx says 502.
    deadline = time.monotonic() + 5
    while True:
        status = _https(port, name, "/")[0]
        if status != 503 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert status in (200, 502)


def test_access_log_records_request_and_upstream_times(host):
    port = _port(host, "opspack_lab_https_port")
    _site, server_names, _flag = _sites(host)[0]
    _https(port, server_names[0], "/opspack-log-probe")
    log = host.run("tail -n 20 /var/log/nginx/access.log").stdout
    line = [entry for entry in log.splitlines() if "/opspack-log-probe" in entry][-1]
    assert re.search(r" rt=\d+\.\d{3} ", line)
    assert "urt=" in line
