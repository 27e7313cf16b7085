"""The node's default certificate: ``ssl_cert``/``ssl_cert_key``, or one made at first start.

Kong serves its default certificate when no SNI matches; without ``ssl_cert`` it makes a
self-signed one at first start (``kong prepare``) and keeps it in its prefix. fastgw does
the same beside the config file: ``fastgw-default.crt`` and ``fastgw-default.key`` (mode
0600), made once, read at every start after that. It is an ECDSA P-256 certificate for
``localhost``, ``127.0.0.1``, ``::1`` and the host's name, valid ten years, and marked as
a CA so that clients can trust it as it is (``curl --cacert fastgw-default.crt``).

The supervisor reads the files; workers get the PEMs over IPC (they never read files).
"""

from __future__ import annotations

import datetime
import ipaddress
import logging
import os
import socket
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from fastgw.config.certificates import certificate_error, key_error, pair_error
from fastgw.config.settings import GatewaySettings
from fastgw.controlplane.store import atomic_write
from fastgw.dataplane.tls import CertPair

__all__ = ["DEFAULT_CERT_NAME", "default_certificate", "listener_certificate",
           "make_self_signed"]

log = logging.getLogger("fastgw.tls")

DEFAULT_CERT_NAME = "fastgw-default"


class CertificateFileError(Exception):
    """A configured certificate file is missing, unreadable or not a valid pair."""


def make_self_signed(names: list[str], days: int = 3650) -> CertPair:
    """A self-signed ECDSA certificate for ``names`` (DNS names or IP addresses)."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "fastgw"),
                         x509.NameAttribute(NameOID.COMMON_NAME, names[0])])
    alt: list[x509.GeneralName] = []
    for name in names:
        try:
            alt.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            alt.append(x509.DNSName(name))
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=days))
            .add_extension(x509.SubjectAlternativeName(alt), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True,
                                         content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False,
                                         crl_sign=False, encipher_only=False,
                                         decipher_only=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
                           critical=False)
            .sign(key, hashes.SHA256()))
    return CertPair(
        cert.public_bytes(serialization.Encoding.PEM).decode(),
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                          serialization.NoEncryption()).decode())


def _read_pair(cert_path: str, key_path: str) -> CertPair:
    try:
        pair = CertPair(Path(cert_path).read_text(), Path(key_path).read_text())
    except (OSError, UnicodeDecodeError) as exc:
        where = getattr(exc, "filename", None) or cert_path
        raise CertificateFileError(f"cannot read {where}: "
                                   f"{getattr(exc, 'strerror', None) or exc}") from None
    why = certificate_error(pair.cert) or key_error(pair.key)
    if why is None and pair_error(pair.cert, pair.key):
        why = "certificate does not match key"
    if why:
        raise CertificateFileError(f"{cert_path}, {key_path}: {why}")
    return pair


def default_certificate(settings: GatewaySettings, config_path: str) -> CertPair:
    """``ssl_cert``/``ssl_cert_key``, or the self-signed one beside the config file (made
    now if it is not there yet). Raises CertificateFileError."""
    if settings.ssl_cert and settings.ssl_cert_key:
        return _read_pair(settings.ssl_cert, settings.ssl_cert_key)
    directory = os.path.dirname(os.path.abspath(config_path))
    cert_path = os.path.join(directory, DEFAULT_CERT_NAME + ".crt")
    key_path = os.path.join(directory, DEFAULT_CERT_NAME + ".key")
    if os.path.exists(cert_path) and os.path.exists(key_path):
        return _read_pair(cert_path, key_path)
    names = ["localhost", "127.0.0.1", "::1"]
    host = socket.gethostname()
    if host and host not in names:
        names.append(host)
    pair = make_self_signed(names)
    try:
        atomic_write(key_path, pair.key.encode(), private=True)
        atomic_write(cert_path, pair.cert.encode())
        os.chmod(cert_path, 0o644)  # public: clients may read it to trust it
    except OSError as exc:
        raise CertificateFileError(f"cannot save the default certificate in {directory}: "
                                   f"{exc.strerror or exc}") from None
    log.info("made a self-signed default certificate %s (for %s)", cert_path, ", ".join(names))
    return pair


def listener_certificate(settings: GatewaySettings, name: str, default: CertPair) -> CertPair:
    """The certificate of the admin or status listener: ``<name>_ssl_cert``, else the default."""
    cert, key = getattr(settings, f"{name}_ssl_cert"), getattr(settings, f"{name}_ssl_cert_key")
    return _read_pair(cert, key) if cert and key else default
