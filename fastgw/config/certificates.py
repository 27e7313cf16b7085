"""PEM certificates and keys: parsing, and Kong's checks of the certificate entities.

Pure: bytes in, facts or Kong-worded error messages out (``cryptography`` does the
parsing). No message ever quotes the PEM it was given: a private key must not end up in
an error body or a log line.

Kong's checks (kong/db/schema/entities/certificates.lua, ca_certificates.lua, typedefs):
  certificates     cert and key parse ("invalid certificate: ...", "invalid key: ...");
                   the key is the certificate's ("certificate does not match key");
                   cert_alt/key_alt come together, match, and are of another key type
                   than cert/key (RSA and ECDSA)
  ca_certificates  one certificate, with the CA basic constraint, not expired;
                   cert_digest is the hex SHA-256 of its DER form
Values that are vault references (``{vault://...}``) are not PEM and are not checked:
fastgw keeps them (the file stays Kong's) and does not serve such a certificate.
"""

from __future__ import annotations

import datetime
import hashlib
import re
from collections.abc import Callable

from cryptography import x509
from cryptography.hazmat.primitives import serialization

__all__ = [
    "EXPIRED",
    "NOT_A_CA",
    "ONE_AT_A_TIME",
    "ca_certificate_error",
    "ca_expired",
    "cert_digest",
    "certificate_error",
    "is_reference",
    "key_error",
    "key_type",
    "pair_error",
]

NOT_A_CA = ('certificate does not appear to be a CA because it is missing the "CA" '
            "basic constraint")
ONE_AT_A_TIME = "please submit only one certificate at a time"
EXPIRED = 'certificate expired, "Not After" time is in the past'
_BEGIN_CERT = "-----BEGIN CERTIFICATE-----"


def is_reference(value: object) -> bool:
    """A Kong vault reference (``{vault://env/cert}``) instead of a PEM value."""
    return isinstance(value, str) and value.startswith("{vault://")


def _certificates(pem: str) -> list[x509.Certificate]:
    certs = x509.load_pem_x509_certificates(pem.encode())
    if not certs:
        raise ValueError("no certificate found")
    return certs


def _reason(exc: Exception) -> str:
    # cryptography's messages name what is wrong, never the data itself; its FAQ link
    # is left out.
    text = " ".join(str(exc).split()) or type(exc).__name__
    return re.sub(r" See https?://\S+ for more details\.", "", text)


def _private_key(pem: str) -> object:
    return serialization.load_pem_private_key(pem.encode(), password=None)


def _parse_error(parse: Callable[[str], object], pem: str, what: str) -> str | None:
    """Kong's typedefs message when `parse` refuses `pem`: "invalid certificate: ..."."""
    try:
        parse(pem)
    except (ValueError, TypeError) as exc:
        return f"invalid {what}: {_reason(exc)}"
    return None


def certificate_error(pem: str) -> str | None:
    return _parse_error(_certificates, pem, "certificate")


def key_error(pem: str) -> str | None:
    return _parse_error(_private_key, pem, "key")


def _public_der(public_key: object) -> bytes:
    return public_key.public_bytes(  # type: ignore[attr-defined]
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def pair_error(cert_pem: str, key_pem: str) -> bool:
    """Whether the key is not the certificate's (both must parse)."""
    cert = _certificates(cert_pem)[0]
    key = _private_key(key_pem)
    public = key.public_key()  # type: ignore[attr-defined]
    return _public_der(cert.public_key()) != _public_der(public)


def key_type(cert_pem: str) -> str:
    """The certificate's key algorithm (``RSAPublicKey``, ``EllipticCurvePublicKey``...)."""
    return type(_certificates(cert_pem)[0].public_key()).__name__.lstrip("_")


def cert_digest(pem: str) -> str:
    cert = _certificates(pem)[0]
    return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()


def ca_certificate_error(pem: str) -> str | None:
    """Kong's checks of a ``ca_certificates`` entity, expiry aside (``ca_expired``)."""
    if pem.count(_BEGIN_CERT) > 1:
        return ONE_AT_A_TIME
    why = certificate_error(pem)
    if why:
        return why
    cert = _certificates(pem)[0]
    try:
        constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        return NOT_A_CA
    return None if constraints.ca else NOT_A_CA


def ca_expired(pem: str, now: float) -> bool:
    cert = _certificates(pem)[0]
    return cert.not_valid_after_utc < datetime.datetime.fromtimestamp(now, datetime.UTC)
