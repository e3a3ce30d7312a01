"""The full verification (opspack.platform.verify) on the scenario's two provisioned hosts.

First everything passes on both. Then one thing of each kind is broken on vps2, as it happens on
real hosts: a unit stopped, a certificate expired (signed by the lab CA with its end in the
past), the newest backup deleted, a disk filled to its threshold (the lab hosts' own 64 MiB
tmpfs), an nftables rule added by hand, a template edited by hand. Each is reported with its
reason, nothing else fails, vps1 still passes, and the records hold a verify entry per site.
The time of each whole verification is printed (make scenario S=verify PYTEST_ADDOPTS=-rA)."""

from __future__ import annotations

import datetime
import json
import re
import shutil
import struct
import subprocess
import sys
import time
import zlib

import pytest
import testinfra

from opspack.testing.scenario import CANARIES, EPHEMERAL, INVENTORY, PROJECT, RECORDS, deploy, history, playbook, sample_releases

HOSTS = ("vps1", "vps2")
SITES = ("blog", "shop")
REPORT = re.compile(r'"(PASS|WARN|FAIL) ([^ "]+) ([a-z_0-9]+)(?:: ((?:[^"\\]|\\.)*))?"')
SUMMARY = re.compile(r'"verify (\S+): (PASS|FAIL) \((\d+) checks, (\d+) failed, (\d+) warnings\)"')


def lab_host(name: str):
    return testinfra.get_host(f"ansible://{name}?ansible_inventory={INVENTORY}", sudo=True)


def run_verify() -> tuple[int, dict, dict, float, str]:
    """The verification, as an operator runs it: exit code, {host: {(check, site): reason}} of the
    failed checks, {host: summary}, seconds, output."""
    started = time.monotonic()
    ran = playbook("verify", site=None)
    seconds = time.monotonic() - started
    out = ran.stdout + ran.stderr
    for canary in CANARIES:
        assert canary not in out, "a secret reached the verification's output"
    failed: dict = {name: {} for name in HOSTS}
    for status, where, check, reason in REPORT.findall(out):
        site, _, host = where.rpartition("@")
        if status == "FAIL":
            failed[host][(check, site)] = reason
    summaries = {host: status for host, status, *_rest in SUMMARY.findall(out)}
    # The report's lines, and what the records keep of them, are safe to paste: no secret (above),
    # no address, URL or domain.
    lines = " ".join(" ".join(found) for found in REPORT.findall(out))
    kept = " ".join(path.read_text() for path in (RECORDS / "reports" / "verify").glob("*.json"))
    for needle in ("127.0.0.1", "://", "lab.test"):
        assert needle not in lines + kept, needle
    return ran.returncode, failed, summaries, seconds, out


@pytest.fixture(scope="module")
def operated():
    """Both sites serving, two backups of each (so that one can go), a pgBackRest backup and a
    restore drill of each site, all recorded."""
    sample_releases()
    for site in SITES:
        ran = deploy("1.0.0", site=site)
        assert ran.returncode == 0, ran.stdout[-2000:]
    for _ in range(2):
        ran = playbook("backup", site=None)
        assert ran.returncode == 0, ran.stdout[-3000:]
    for name in HOSTS:
        lab_host(name).check_output("systemctl start opspack-pgbackrest-full.service")
    ran = playbook("restore_drill", site=None)
    assert ran.returncode == 0, ran.stdout[-3000:]


def expire_certificate(host) -> None:
    """Sign blog's certificate with the lab CA, its validity ended yesterday, and serve it."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    ca_dir = EPHEMERAL / "lab-ca"
    ca_key = serialization.load_pem_private_key((ca_dir / "ca.key").read_bytes(), password=None)
    ca_cert = x509.load_pem_x509_certificate((ca_dir / "ca.crt").read_bytes())
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "blog.lab.test")]))
            .issuer_name(ca_cert.subject).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=30)).not_valid_after(now - datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("blog.lab.test")]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    pem_key = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    host.check_output(f"printf '%s' '{pem_key.decode()}' > /etc/nginx/tls/blog.key")
    host.check_output(f"printf '%s' '{cert.public_bytes(serialization.Encoding.PEM).decode()}' > /etc/nginx/tls/blog.crt")
    host.check_output("systemctl reload nginx")


def test_verify_passes_on_two_hosts_then_reports_each_broken_thing_and_nothing_else(operated):
    code, failed, summaries, seconds, out = run_verify()
    print(f"verify, two healthy hosts: {seconds:.1f} s")
    assert code == 0 and failed == {"vps1": {}, "vps2": {}}, out[-4000:]
    assert summaries == {"vps1": "PASS", "vps2": "PASS"}, out[-4000:]
    passed = [entry for entry in history() if entry.get("operation") == "verify"]
    assert {(entry["host"], entry["site"], entry["result"]) for entry in passed} == \
        {(name, site, "pass") for name in HOSTS for site in SITES}

    broken = lab_host("vps2")
    broken.check_output("systemctl stop opspack-health.timer")
    expire_certificate(broken)
    manifests = broken.check_output("ls -1 /var/backups/opspack/blog/postgresql/").split()
    newest = sorted(name for name in manifests if name.endswith(".manifest.json"))[-1].removesuffix(".manifest.json")
    assert newest.startswith("blog-postgresql-") and len([name for name in manifests if name.startswith(newest)]) == 2
    broken.check_output(f"rm -- /var/backups/opspack/blog/postgresql/{newest}.*")
    # Only the fill is measured: no disk history of earlier runs to forecast from.
    broken.check_output("rm -f /var/lib/opspack/health/disk.json && fallocate -l 56M /mnt/lab-data/filler")
    broken.check_output("nft add rule inet opspack_filter input tcp dport 9 accept")
    broken.check_output("echo '# edited by hand' >> /etc/nginx/conf.d/opspack-base.conf")

    code, failed, summaries, seconds, out = run_verify()
    print(f"verify, one host with six things broken: {seconds:.1f} s")
    assert code != 0 and summaries == {"vps1": "PASS", "vps2": "FAIL"}, out[-4000:]
    assert failed["vps1"] == {}, failed["vps1"]
    reasons = failed["vps2"]
    assert set(reasons) == {("schedule", ""), ("smoke", "blog"), ("backup_missing", "blog"), ("disk", ""),
                            ("firewall", ""), ("drift", "")}, reasons
    assert "timer_inactive" in reasons[("schedule", "")]
    assert "certificate" in reasons[("smoke", "blog")]
    assert "recorded_backup_missing" in reasons[("backup_missing", "blog")]
    assert "> 80" in reasons[("disk", "")]
    assert "ruleset_changed_by_hand" in reasons[("firewall", "")]
    # The check converge names what it would put back: the edited file (and the stopped timer,
    # the certificate it would issue again), never a value.
    assert "Nginx | Write the port 80 server" in reasons[("drift", "")], reasons[("drift", "")]
    latest = {}
    for entry in history():
        if entry.get("operation") == "verify":
            latest[(entry["host"], entry["site"])] = entry
    assert {key: entry["result"] for key, entry in latest.items()} == {
        ("vps1", "blog"): "pass", ("vps1", "shop"): "pass", ("vps2", "blog"): "fail", ("vps2", "shop"): "fail"}
    matrix = (EPHEMERAL / "records" / "loop-sites-matrix.md").read_text()
    assert "last verify" in matrix and matrix.count("| fail (vps2) ") == 2, matrix


def png_rows(path) -> tuple[int, int, set]:
    """Width, height and the distinct raw scanline bytes of a PNG (enough to tell a blank page)."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    width, height, idat, offset = 0, 0, b"", 8
    while offset < len(data):
        length, kind = struct.unpack(">I4s", data[offset:offset + 8])
        chunk = data[offset + 8:offset + 8 + length]
        if kind == b"IHDR":
            width, height = struct.unpack(">II", chunk[:8])
        elif kind == b"IDAT":
            idat += chunk
        offset += 12 + length
    return width, height, set(zlib.decompress(idat)[:200000])


def test_the_fleet_page_shows_the_matrix_the_verifications_the_trends_and_the_open_incidents(tmp_path):
    """After the verifications above: a daily check from the control node (its signals), then
    `opspack report --html`, opened in Debian's chromium, headless: a screenshot, no console
    message, and the page's text as the browser built it."""
    playbook("ops_daily", site=None)  # vps2 is still broken: the run fails, its reports are kept all the same
    assert (RECORDS / "daily.jsonl").exists() and (RECORDS / "reports" / "ops_daily" / "vps1.json").exists()
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    assert chromium, "the fleet page is tested in Debian's chromium: apt-get install chromium (.ci/run installs it)"
    pages = []
    for name in ("first", "second"):
        ran = subprocess.run([sys.executable, "-m", "opspack.cli", "report", "--html", str(tmp_path / name), "--records", str(RECORDS)],
                             capture_output=True, text=True, check=False, cwd=PROJECT, timeout=60)
        assert ran.returncode == 0, ran.stderr
        pages.append((tmp_path / name / "index.html").read_bytes())
    assert pages[0] == pages[1], "the same records give the same page"
    page = tmp_path / "first" / "index.html"
    text = page.read_text()
    assert "http://" not in text.replace("http://www.w3.org/2000/svg", "") and "https://" not in text and "<script" not in text
    for canary in CANARIES:
        assert canary not in text
    base = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--enable-logging=stderr", "--v=0",
            "--window-size=1280,2400", f"--user-data-dir={tmp_path / 'profile'}"]
    shot = tmp_path / "fleet.png"
    ran = subprocess.run(base + [f"--screenshot={shot}", page.as_uri()], capture_output=True, text=True, timeout=120, check=False)
    assert ran.returncode == 0 and shot.exists(), ran.stderr[-2000:]
    assert "CONSOLE" not in ran.stderr, [line for line in ran.stderr.splitlines() if "CONSOLE" in line]
    width, height, shades = png_rows(shot)
    assert (width, height) == (1280, 2400) and len(shades) > 8, "the screenshot is blank"
    dom = subprocess.run(base + ["--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120, check=False).stdout
    rows = re.findall(r"<tr><td>(blog|shop)</td><td>[^<]*</td><td>vps1, vps2</td>", dom)
    assert sorted(rows) == ["blog", "shop"], "the matrix's rows"
    assert re.search(r"<td>P\d</td><td>\w+</td><td>[^<]* verify blog \([^)]*, vps2\): fail</td>", dom), "the open incident"
    assert "<td>vps2</td><td class=\"fail\">fail</td>" in dom and "<td>vps1</td><td class=\"pass\">pass</td>" in dom
    assert dom.count("<polyline") >= 4, "the daily signals' trend charts"
    shutil.copy(shot, EPHEMERAL / "fleet.png")  # kept beside the records, for a person to look at
