"""Field-level rules shared by requests and responses: hop-by-hop names, Via, methods.

Pure constants and small functions, no I/O.

References:
- hop-by-hop fields: RFC 9110 §7.6.1 (Connection and the fields it names), plus the
  legacy ones every proxy strips (Keep-Alive, Proxy-Connection, TE, Trailer,
  Transfer-Encoding, Upgrade, Proxy-Authenticate/-Authorization per RFC 2616 §13.5.1).
- Via: RFC 9110 §7.6.3.
"""

from __future__ import annotations

from typing import Final

from fastgw import __version__

__all__ = [
    "FORWARDED",
    "HOP_BY_HOP",
    "IDEMPOTENT_METHODS",
    "METHOD_BYTES",
    "METHOD_NAMES",
    "SERVER_TOKEN",
    "VIA_LINE",
    "VIA_VALUE",
    "connection_tokens",
    "host_header_value",
    "split_host_port",
]

SERVER_TOKEN: Final = f"fastgw/{__version__}".encode()
VIA_VALUE: Final = b"1.1 " + SERVER_TOKEN
VIA_LINE: Final = b"Via: " + VIA_VALUE + b"\r\n"

# Lower-case names never forwarded as they are. "connection" is also parsed for the
# extra names it lists; framing fields are always written by the gateway itself.
HOP_BY_HOP: Final = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"proxy-authenticate",
        b"proxy-authorization",
    }
)

# Fields the gateway sets itself on the upstream request; incoming copies are dropped
# (and, from trusted peers only, folded into the new values).
FORWARDED: Final = frozenset(
    {
        b"x-forwarded-for",
        b"x-forwarded-proto",
        b"x-forwarded-host",
        b"x-forwarded-port",
        b"x-forwarded-prefix",
        b"x-real-ip",
    }
)

IDEMPOTENT_METHODS: Final = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS", "TRACE"})
# The common methods both ways, so the request path neither decodes nor encodes them.
METHOD_NAMES: Final = {m.encode(): m for m in ("GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS")}
METHOD_BYTES: Final = {name: raw for raw, name in METHOD_NAMES.items()}


def connection_tokens(value: bytes) -> set[bytes]:
    """Lower-case tokens of a Connection field value (RFC 9110 §7.6.1)."""
    return {t.strip().lower() for t in value.split(b",") if t.strip()}


def split_host_port(host: bytes) -> tuple[bytes, bytes | None]:
    """`example.com:8000` -> (b"example.com", b"8000"); IPv6 literals keep their brackets."""
    if host.startswith(b"["):
        end = host.find(b"]")
        if end != -1:
            rest = host[end + 1 :]
            return host[: end + 1], rest[1:] if rest.startswith(b":") else None
        return host, None
    name, sep, port = host.rpartition(b":")
    if sep and port.isdigit():
        return name, port
    return host, None


def host_header_value(host: str, port: int, default_port: int = 80) -> bytes:
    """Host field for an upstream: the port is shown when it is not the scheme default."""
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    if port == default_port:
        return host.encode("idna") if not host.isascii() else host.encode()
    return f"{host}:{port}".encode()
