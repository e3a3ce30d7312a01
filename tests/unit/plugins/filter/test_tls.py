"""Unit tests for certificate_current with real certificates made by cryptography."""

from __future__ import annotations

import datetime
import ipaddress

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from ansible_collections.opspack.platform.plugins.filter.tls import certificate_current

NOW = datetime.datetime(2026, 11, 23, tzinfo=datetime.timezone.utc)
NAMES = ["DNS:blog.lab", "DNS:localhost", "IP:127.0.0.1"]


def make_ca(name="lab CA"):
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(NOW - datetime.timedelta(days=1)).not_valid_after(NOW + datetime.timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .sign(key, hashes.SHA256()))
    return key, cert


def issue(ca_key, ca_cert, days=825, dns=("blog.lab", "localhost")):
    key = ec.generate_private_key(ec.SECP256R1())
    sans = [x509.DNSName(name) for name in dns] + [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, dns[0])]))
            .issuer_name(ca_cert.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(NOW - datetime.timedelta(days=1)).not_valid_after(NOW + datetime.timedelta(days=days))
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .sign(ca_key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def pem(cert):
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def test_a_fresh_certificate_from_the_ca_is_current():
    ca_key, ca = make_ca()
    assert certificate_current(issue(ca_key, ca), pem(ca), NAMES, 30, now=NOW)
    assert certificate_current(issue(ca_key, ca), pem(ca), NAMES, 30, common_name="blog.lab", now=NOW)
    assert not certificate_current(issue(ca_key, ca), pem(ca), NAMES, 30, common_name="www.lab", now=NOW)


def test_near_expiry_other_names_or_other_ca_are_not_current():
    ca_key, ca = make_ca()
    other_key, other_ca = make_ca("another CA")
    assert not certificate_current(issue(ca_key, ca, days=10), pem(ca), NAMES, 30, now=NOW)
    assert not certificate_current(issue(ca_key, ca, dns=("www.lab", "localhost")), pem(ca), NAMES, 30, now=NOW)
    assert not certificate_current(issue(other_key, other_ca), pem(ca), NAMES, 30, now=NOW)


def test_garbage_is_not_current():
    _, ca = make_ca()
    assert not certificate_current("not a certificate", pem(ca), NAMES, 30, now=NOW)
