"""TLS for the worker: the listeners' server contexts, SNI selection, backend contexts.

Server side. Every ``ssl`` listener shares one base context holding the default
certificate; its ``sni_callback`` looks the client's server name up in an index of
certificate contexts (Kong's order: fastgw.core.sni) and switches the connection to the
one found. Contexts are built once per certificate and config snapshot, and kept across
snapshots while the certificate's PEM is unchanged; a new snapshot swaps the index, so a
certificate added, changed or deleted through the Admin API is served by the next
handshake, and connections already established keep theirs.

Every context follows the node settings: ``ssl_protocols`` (TLS 1.2 and 1.3 by default),
``ssl_cipher_suite`` (Mozilla's "intermediate" list for TLS 1.2; TLS 1.3 suites are
OpenSSL's, which are Mozilla's), ALPN ``http/1.1``, no compression, no renegotiation,
session tickets unless ``ssl_session_tickets`` is off. Python's ``ssl`` loads keys from
files only, so a PEM from the config goes through an anonymous in-memory file
(memfd_create): private keys never touch the disk.

Client side (services with protocol https): one context per TLS profile (verification
on or off, depth, the CAs trusted, the client certificate); see ``ClientProfile``.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import ssl
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from fastgw.config.certificates import is_reference
from fastgw.config.model import Config
from fastgw.config.settings import CIPHER_SUITES, GatewaySettings
from fastgw.core.sni import SniIndex
from fastgw.dataplane import tls_native

__all__ = ["CertPair", "ClientProfile", "ServerTLS", "client_context", "load_pair",
           "server_context"]

log = logging.getLogger("fastgw.tls")

ALPN: list[str] = ["http/1.1"]
_VERSIONS = {"TLSv1.2": ssl.TLSVersion.TLSv1_2, "TLSv1.3": ssl.TLSVersion.TLSv1_3}


@dataclass(frozen=True, slots=True)
class CertPair:
    """A certificate chain and its key, PEM (and an optional pair of another key type)."""

    cert: str
    key: str
    cert_alt: str | None = None
    key_alt: str | None = None

    @property
    def digest(self) -> str:
        h = hashlib.sha256()
        for part in (self.cert, self.key, self.cert_alt or "", self.key_alt or ""):
            h.update(part.encode())
            h.update(b"\0")
        return h.hexdigest()


@contextlib.contextmanager
def _pem_path(pem: str) -> Iterator[str]:
    """A path holding ``pem`` while the block runs: an anonymous memory file on Linux."""
    if hasattr(os, "memfd_create"):
        fd = os.memfd_create("fastgw-pem", os.MFD_CLOEXEC)
        try:
            os.write(fd, pem.encode())
            yield f"/proc/self/fd/{fd}"
        finally:
            os.close(fd)
        return
    with tempfile.NamedTemporaryFile("w", suffix=".pem") as f:  # mode 0600
        f.write(pem)
        f.flush()
        yield f.name


def load_pair(ctx: ssl.SSLContext, pair: CertPair) -> None:
    """Load a certificate chain and key (and the alternate pair) into ``ctx``."""
    for cert, key in ((pair.cert, pair.key), (pair.cert_alt, pair.key_alt)):
        if cert is None or key is None:
            continue
        with _pem_path(cert) as cert_path, _pem_path(key) as key_path:
            ctx.load_cert_chain(cert_path, key_path)


def _versions(ctx: ssl.SSLContext, versions: tuple[str, ...]) -> None:
    ctx.minimum_version = _VERSIONS[versions[0]]
    ctx.maximum_version = _VERSIONS[versions[-1]]


def server_context(settings: GatewaySettings, pair: CertPair | None = None) -> ssl.SSLContext:
    """A server context following the node's TLS settings (see module doc)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    _versions(ctx, settings.tls_versions)
    suite = settings.ssl_cipher_suite
    ciphers = settings.ssl_ciphers if suite == "custom" else CIPHER_SUITES[suite]
    if ciphers and ctx.minimum_version <= ssl.TLSVersion.TLSv1_2:
        ctx.set_ciphers(ciphers)
    ctx.set_alpn_protocols(ALPN)
    ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION
    if not settings.ssl_session_tickets:
        ctx.options |= ssl.OP_NO_TICKET
        ctx.num_tickets = 0
    if pair is not None:
        load_pair(ctx, pair)
    return ctx


class ServerTLS:
    """The proxy listeners' TLS: one base context (default certificate) and the SNI index."""

    def __init__(self, settings: GatewaySettings, default: CertPair,
                 ticket_keys: bytes | None = None) -> None:
        """`ticket_keys`: the node's session ticket keys (the supervisor's), so that a
        session resumes on any worker (dataplane.tls_native)."""
        self.settings = settings
        self.ticket_keys = ticket_keys if settings.ssl_session_tickets else None
        self.context = self._context(default)
        if not tls_native.set_session_timeout(self.context, int(settings.ssl_session_timeout)):
            log.warning("ssl_session_timeout cannot be set here: OpenSSL's default (300 s) "
                        "applies")
        self.context.sni_callback = self._select
        self.index: SniIndex[ssl.SSLContext | None] = SniIndex({}, None)
        self._by_digest: dict[str, ssl.SSLContext] = {}

    def update(self, config: Config) -> None:
        """A new config snapshot: certificates built (or kept), the index swapped."""
        by_digest: dict[str, ssl.SSLContext] = {}
        by_id: dict[str, ssl.SSLContext] = {}
        for cert in config.certificates:
            if is_reference(cert.cert) or is_reference(cert.key):
                continue  # a vault reference: kept in the config, not served (warned)
            pair = CertPair(cert.cert, cert.key, cert.cert_alt, cert.key_alt)
            digest = pair.digest
            ctx = by_digest.get(digest) or self._by_digest.get(digest)
            if ctx is None:
                try:
                    ctx = self._context(pair)
                except (ssl.SSLError, OSError) as exc:
                    log.error("certificate %s cannot be served: %s", cert.id, exc)
                    continue
                ctx.sni_callback = None
            by_digest[digest] = ctx
            by_id[cert.id] = ctx
        names = {sni.name: by_id[sni.certificate] for sni in config.snis
                 if sni.certificate in by_id}
        self._by_digest = by_digest
        self.index = SniIndex(names, None)

    def _context(self, pair: CertPair) -> ssl.SSLContext:
        ctx = server_context(self.settings, pair)
        # Tickets are sealed with the first context's keys (OpenSSL's session_ctx); the
        # certificates' contexts get them too, in case a TLS library thinks otherwise.
        if self.ticket_keys is not None and not tls_native.set_ticket_keys(ctx,
                                                                         self.ticket_keys):
            log.warning("session ticket keys cannot be shared here: each worker uses its "
                        "own, and a session resumes only on the worker that made it")
            self.ticket_keys = None
        return ctx

    def _select(self, conn: Any, server_name: str | None, base: ssl.SSLContext) -> None:
        """OpenSSL's servername callback: switch to the certificate for ``server_name``."""
        ctx = self.index.lookup(server_name)
        if ctx is not None:
            conn.context = ctx


@dataclass(frozen=True, slots=True)
class ClientProfile:
    """How the gateway talks TLS to a backend; equal profiles share a context and pools.

    ``verify``: check the certificate chain and the name (the SNI); ``depth``: the most
    intermediate certificates the chain may have (nginx's proxy_ssl_verify_depth);
    ``cas``: PEMs of the trusted CAs (the service's ca_certificates), or () for
    ``trusted`` (the node's upstream_tls_trusted_certificate: "system" or a PEM file);
    ``client``: the certificate presented for mutual TLS.
    """

    verify: bool
    depth: int
    cas: tuple[str, ...] = ()
    trusted: str = "system"
    client: CertPair | None = None

    @property
    def key(self) -> str:
        """A stable identity (for pool keys): equal across snapshots when nothing changed."""
        h = hashlib.sha256(f"{self.verify}|{self.depth}|{self.trusted}|".encode())
        for ca in self.cas:
            h.update(ca.encode())
        if self.client is not None:
            h.update(self.client.digest.encode())
        return h.hexdigest()[:16]


def client_context(profile: ClientProfile) -> ssl.SSLContext:
    """The context for backends of ``profile`` (TLS 1.2+, ALPN http/1.1)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_alpn_protocols(ALPN)
    ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION
    if profile.verify:
        ctx.check_hostname = True
        ctx.verify_mode = ssl.CERT_REQUIRED
        if profile.cas:
            ctx.load_verify_locations(cadata="\n".join(profile.cas))
        elif profile.trusted == "system":
            ctx.load_default_certs(ssl.Purpose.SERVER_AUTH)
        else:
            ctx.load_verify_locations(cafile=profile.trusted)
    else:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if profile.client is not None:
        load_pair(ctx, profile.client)
    return ctx
