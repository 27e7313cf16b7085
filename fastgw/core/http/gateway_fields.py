"""The fields the gateway adds to its responses and upstream requests (Kong's `headers`
and `headers_upstream` settings).

Kong 3.x announces itself with `Via` (proxied responses) and `Server` (its own
responses), latencies (`X-Kong-Proxy-Latency`, `X-Kong-Upstream-Latency` on proxied
responses, `X-Kong-Response-Latency` on its own), `X-Kong-Upstream-Status`, and a request
id `X-Kong-Request-Id` both ways. fastgw keeps its own names by default (`Via`, `Server`,
`X-Request-Id` both ways); one setting gives a Kong user's tooling Kong's names:

    "headers": "server_tokens, latency_tokens, X-Kong-Request-Id",
    "headers_upstream": "X-Kong-Request-Id"

Tokens (case-insensitive, comma-separated, or a list): `server_tokens` (= Via + Server),
`latency_tokens` (= the three latency fields), each field name alone, fastgw's
`X-Request-Id`, and `off` (none). `GatewayFields` is the parsed form, made once per
config; the response and upstream heads read its precomputed bytes.
"""

from __future__ import annotations

from typing import Final, Iterable

__all__ = ["DEFAULT_HEADERS", "DEFAULT_HEADERS_UPSTREAM", "GatewayFields", "parse_tokens"]

DEFAULT_HEADERS: Final = ("server_tokens", "X-Request-Id")
DEFAULT_HEADERS_UPSTREAM: Final = ("X-Request-Id",)

# token (lower case) -> the fields it turns on
_RESPONSE_TOKENS: Final[dict[str, tuple[str, ...]]] = {
    "server_tokens": ("via", "server"),
    "latency_tokens": ("x-kong-proxy-latency", "x-kong-upstream-latency",
                       "x-kong-response-latency"),
    "via": ("via",),
    "server": ("server",),
    "x-kong-proxy-latency": ("x-kong-proxy-latency",),
    "x-kong-upstream-latency": ("x-kong-upstream-latency",),
    "x-kong-response-latency": ("x-kong-response-latency",),
    "x-kong-upstream-status": ("x-kong-upstream-status",),
    "x-kong-request-id": ("x-kong-request-id",),
    "x-request-id": ("x-request-id",),
    "off": (),
}
_UPSTREAM_TOKENS: Final[dict[str, tuple[str, ...]]] = {
    "x-kong-request-id": ("x-kong-request-id",),
    "x-request-id": ("x-request-id",),
    "off": (),
}
_ID_NAMES: Final = {"x-request-id": b"X-Request-Id", "x-kong-request-id": b"X-Kong-Request-Id"}


def parse_tokens(value: str | Iterable[str], upstream: bool = False) -> tuple[str, ...]:
    """The tokens of a `headers` / `headers_upstream` value; raises ValueError naming an
    unknown one."""
    items = value.split(",") if isinstance(value, str) else list(value)
    known = _UPSTREAM_TOKENS if upstream else _RESPONSE_TOKENS
    out = []
    for item in items:
        token = str(item).strip()
        if not token:
            continue
        if token.lower() not in known:
            raise ValueError(f"unknown token '{token}' (expected one of: "
                             f"{', '.join(sorted(known))})")
        out.append(token)
    return tuple(out)


class GatewayFields:
    """What the gateway adds, parsed from the two settings (see the module docstring)."""

    __slots__ = ("via", "server", "proxy_latency", "upstream_latency", "response_latency",
                 "upstream_status", "response_ids", "upstream_ids")

    def __init__(self, headers: Iterable[str] = DEFAULT_HEADERS,
                 headers_upstream: Iterable[str] = DEFAULT_HEADERS_UPSTREAM) -> None:
        on: set[str] = set()
        for token in headers:
            on.update(_RESPONSE_TOKENS[token.lower()])
        up: set[str] = set()
        for token in headers_upstream:
            up.update(_UPSTREAM_TOKENS[token.lower()])
        self.via = "via" in on
        self.server = "server" in on
        self.proxy_latency = "x-kong-proxy-latency" in on
        self.upstream_latency = "x-kong-upstream-latency" in on
        self.response_latency = "x-kong-response-latency" in on
        self.upstream_status = "x-kong-upstream-status" in on
        # Names under which the request id goes to the client and to the backend.
        self.response_ids: tuple[bytes, ...] = tuple(
            _ID_NAMES[n] for n in ("x-request-id", "x-kong-request-id") if n in on)
        self.upstream_ids: tuple[bytes, ...] = tuple(
            _ID_NAMES[n] for n in ("x-request-id", "x-kong-request-id") if n in up)

    def response_id_lines(self, request_id: bytes) -> bytes:
        """`X-Request-Id: ...` (and/or Kong's) lines for a response."""
        return b"".join(name + b": " + request_id + b"\r\n" for name in self.response_ids)

    def latency_lines(self, proxy_ms: float, upstream_ms: float) -> bytes:
        """The latency fields of a proxied response (integer milliseconds, as Kong)."""
        out = b""
        if self.upstream_latency:
            out += b"X-Kong-Upstream-Latency: %d\r\n" % upstream_ms
        if self.proxy_latency:
            out += b"X-Kong-Proxy-Latency: %d\r\n" % proxy_ms
        return out
