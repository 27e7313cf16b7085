"""Certificates made on the fly for the TLS tests (trustme, and cryptography for the odd
ones trustme does not make: an expired CA)."""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from pathlib import Path

import trustme
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

__all__ = ["Pair", "ca_pem", "expired_ca_pem", "issue", "write_pair"]


@dataclass(frozen=True)
class Pair:
    """A certificate (its chain, leaf first) and its private key, PEM."""

    cert: str
    key: str

    def entity(self, *snis: str) -> dict[str, object]:
        """A Kong ``certificates`` body."""
        body: dict[str, object] = {"cert": self.cert, "key": self.key}
        if snis:
            body["snis"] = list(snis)
        return body


def issue(ca: trustme.CA, *names: str, rsa: bool = False, client: bool = False) -> Pair:
    """A leaf for ``names`` signed by ``ca`` (ECDSA unless ``rsa``)."""
    kind = trustme.KeyType.RSA if rsa else trustme.KeyType.ECDSA
    leaf = ca.issue_cert(*names, key_type=kind) if not client else \
        ca.issue_cert(*names, key_type=kind, common_name=names[0])
    return Pair("".join(b.bytes().decode() for b in leaf.cert_chain_pems),
                leaf.private_key_pem.bytes().decode())


def ca_pem(ca: trustme.CA) -> str:
    return ca.cert_pem.bytes().decode()


def expired_ca_pem() -> str:
    """A self-signed CA whose validity ended yesterday."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "expired test CA")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=30))
            .not_valid_after(now - datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def write_pair(pair: Pair, directory: Path, stem: str) -> tuple[Path, Path]:
    cert, key = directory / f"{stem}.crt", directory / f"{stem}.key"
    cert.write_text(pair.cert)
    key.write_text(pair.key)
    key.chmod(0o600)
    return cert, key
