# Copyright: opspack developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""certificate_current: is an issued certificate still good enough to keep?

Lets the nginx role skip the key, signing request, signing and copy steps (six module runs per
site) when the certificate it issued earlier still matches: same CA, same names, far from expiry.
"""

from __future__ import annotations

import datetime

from ansible.errors import AnsibleFilterError

try:
    from cryptography import x509
    HAS_CRYPTOGRAPHY = True
except ImportError:  # pragma: no cover - community.crypto needs it on the controller anyway
    HAS_CRYPTOGRAPHY = False


def _names(cert):
    try:
        extension = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return set()
    return ({f"DNS:{name}" for name in extension.get_values_for_type(x509.DNSName)}
            | {f"IP:{address}" for address in extension.get_values_for_type(x509.IPAddress)})


def certificate_current(cert_pem, ca_pem, subject_alt_names, min_days_left=30, common_name=None, now=None):
    """True when cert_pem is signed by ca_pem, names exactly subject_alt_names (and common_name,
    if given) and has more than min_days_left days to run. Anything unreadable is not current."""
    if not HAS_CRYPTOGRAPHY:
        raise AnsibleFilterError("certificate_current needs the Python cryptography library on the controller")
    try:
        cert = x509.load_pem_x509_certificate(str(cert_pem).encode())
        ca = x509.load_pem_x509_certificate(str(ca_pem).encode())
        cert.verify_directly_issued_by(ca)
        not_after = cert.not_valid_after_utc
        names = [attribute.value for attribute in cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)]
    except Exception:  # pylint: disable=broad-exception-caught  # any defect (or an old cryptography) means: issue a new one
        return False
    now = now or datetime.datetime.now(datetime.timezone.utc)
    return (_names(cert) == set(subject_alt_names)
            and (common_name is None or names == [common_name])
            and not_after - now > datetime.timedelta(days=int(min_days_left)))


class FilterModule:
    """TLS certificate checks."""

    def filters(self):
        return {"certificate_current": certificate_current}
