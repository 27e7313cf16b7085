"""Header rules of the proxy: hop-by-hop removal, X-Forwarded-*, Via, error responses.

Pure functions and precomputed bytes, no I/O. The protocol classes call these on every
request, so everything that can be computed once is computed at import or per config.

References:
- hop-by-hop headers: RFC 9110 §7.6.1 (Connection and the fields it names), plus the
  legacy ones every proxy strips (Keep-Alive, Proxy-Connection, TE, Trailer,
  Transfer-Encoding, Upgrade, Proxy-Authenticate/-Authorization per RFC 2616 §13.5.1).
- Via: RFC 9110 §7.6.3.
- Error bodies: Kong's `kong.response.error` JSON shape (reference/kong.md §1).
"""

from __future__ import annotations

import os
import re
import time
from email.utils import formatdate
from http import HTTPStatus

import orjson

from fastgw import __version__

SERVER_TOKEN = f"fastgw/{__version__}".encode()
VIA_VALUE = b"1.1 " + SERVER_TOKEN

# Lower-case names never forwarded as they are. "connection" is also parsed for the
# extra names it lists. "upgrade" is kept on a WebSocket handshake (see caller).
HOP_BY_HOP = frozenset(
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

# Headers the gateway sets itself on the upstream request; incoming copies are dropped
# (and, from trusted peers only, folded into the new values).
FORWARDED = frozenset(
    {
        b"x-forwarded-for",
        b"x-forwarded-proto",
        b"x-forwarded-host",
        b"x-forwarded-port",
        b"x-forwarded-prefix",
        b"x-real-ip",
    }
)

IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS", "TRACE"})
# The common methods both ways, so the request path neither decodes nor encodes them.
METHOD_NAMES = {m.encode(): m for m in ("GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS")}
METHOD_BYTES = {name: raw for raw, name in METHOD_NAMES.items()}


def _reason(code: int) -> bytes:
    try:
        return HTTPStatus(code).phrase.encode()
    except ValueError:
        return b"Unknown"


# "HTTP/1.1 200 OK\r\n" for every code, computed once.
STATUS_LINES: dict[int, bytes] = {
    code: b"HTTP/1.1 %d %s\r\n" % (code, _reason(code)) for code in range(100, 1000)
}


def status_line(code: int) -> bytes:
    line = STATUS_LINES.get(code)
    return line if line is not None else b"HTTP/1.1 %d Unknown\r\n" % code


class DateHeader:
    """The `Date: ...\\r\\n` bytes, rebuilt at most once a second (RFC 9110 §6.6.1)."""

    __slots__ = ("_second", "value")

    def __init__(self) -> None:
        self._second = -1
        self.value = b""
        self.refresh()

    def refresh(self, now: float | None = None) -> bytes:
        second = int(time.time() if now is None else now)
        if second != self._second:
            self._second = second
            self.value = b"Date: " + formatdate(second, usegmt=True).encode() + b"\r\n"
        return self.value


DATE = DateHeader()

# Kong's messages for errors the proxy itself produces (reference/kong.md §1).
MESSAGES: dict[int, str] = {
    400: "Bad request",
    404: "no Route matched with those values",
    408: "Request timeout",
    413: "Request Entity Too Large",
    414: "Request-URI Too Large",
    431: "Request Header Fields Too Large",
    500: "An unexpected error occurred",
    502: "An invalid response was received from the upstream server",
    503: "failure to get a peer from the ring-balancer",
    504: "The upstream server is timing out",
}


def new_request_id() -> str:
    return os.urandom(16).hex()


def error_response(
    code: int,
    message: str | None = None,
    *,
    keep_alive: bool = True,
    head_only: bool = False,
    request_id: str | None = None,
) -> bytes:
    """A complete gateway-generated response: Kong 3.x JSON body `{message, request_id}`."""
    body = orjson.dumps(
        {
            "message": message if message is not None else MESSAGES.get(code, _reason(code).decode()),
            "request_id": request_id or new_request_id(),
        }
    )
    head = [
        status_line(code),
        DATE.value,
        b"Content-Type: application/json; charset=utf-8\r\n",
        b"Content-Length: %d\r\n" % len(body),
        b"Server: " + SERVER_TOKEN + b"\r\n",
    ]
    if request_id:
        head.append(b"X-Request-Id: " + request_id.encode("latin-1") + b"\r\n")
    if not keep_alive:
        head.append(b"Connection: close\r\n")
    head.append(b"\r\n")
    if not head_only:
        head.append(body)
    return b"".join(head)


CONTINUE_100 = b"HTTP/1.1 100 Continue\r\n\r\n"


def connection_tokens(value: bytes) -> set[bytes]:
    """Lower-case tokens of a Connection header value (RFC 9110 §7.6.1)."""
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
    """Host header for an upstream: the port is shown when it is not the scheme default."""
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    if port == default_port:
        return host.encode("idna") if not host.isascii() else host.encode()
    return f"{host}:{port}".encode()


_CONN_KEYWORDS = frozenset({b"close", b"keep-alive", b"upgrade"})
# The response fields the proxy must look at; the upstream parser's on_header collects
# them (a C callback per field is far cheaper than scanning the head again in Python).
# Usually that is only Content-Length (and Connection), so the head passes through as is.
# X-Request-Id is among them: the gateway sets exactly one on every response, so a
# backend's echo of it is dropped rather than duplicated.
RESPONSE_SPECIAL = frozenset(HOP_BY_HOP | {b"content-length", b"x-request-id"})


def clean_response_head(
    head: bytes, status: int, special: list[tuple[bytes, bytes, bytes]]
) -> tuple[bytes, bool, bool, bytes | None]:
    """Drop hop-by-hop fields (and a backend X-Request-Id) from a raw response head.

    `special` holds (lower name, name as sent, value) of the head's RESPONSE_SPECIAL
    fields, in order. Returns (head, has Content-Length, is chunked, kept Connection).
    The status line is rewritten to HTTP/1.1 when the backend spoke another version (we
    speak 1.1 to clients).

    A backend's plain `Connection: keep-alive` is the one exception to the cut: it says
    what the gateway says to a keep-alive client anyway (nginx sends it on every such
    response), so it is left in place and its name returned; the caller cuts it with
    `cut_field` only when the client connection is to close.
    """
    content_length = False
    chunked = False
    kept: bytes | None = None
    listed: set[bytes] | None = None
    for lname, name, value in special:
        if lname == b"content-length":
            content_length = True
            continue
        if lname == b"x-request-id":
            pass
        elif lname == b"transfer-encoding":
            chunked = value.rstrip().lower().endswith(b"chunked")
        elif lname == b"connection":
            if status == 101:
                continue  # the handshake keeps Connection and Upgrade
            plain = value.lower()
            if plain == b"keep-alive" and kept is None:
                kept = name
                continue
            if plain != b"close":
                tokens = connection_tokens(value) - _CONN_KEYWORDS
                if tokens:
                    listed = tokens if listed is None else listed | tokens
        elif lname == b"upgrade" and status == 101:
            continue
        cut = cut_field(head, name)
        if cut is None:
            listed = {lname} if listed is None else listed | {lname}  # cut below by regex
        else:
            head = cut
    if listed:
        # Fields named in Connection are hop-by-hop too (RFC 9110 §7.6.1).
        names = b"|".join(re.escape(n) for n in listed)
        head = re.sub(rb"\r\n(?:" + names + rb"):[^\r]*", b"", head, flags=re.I)
    if not head.startswith(b"HTTP/1.1 "):
        head = status_line(status) + head[head.find(b"\r\n") + 2 :]
    return head, content_length, chunked, kept


def cut_field(head: bytes, name: bytes) -> bytes | None:
    """`head` without its first "\r\nName: value" (up to that line's CRLF), or None.

    `name` is exactly as sent (llhttp's on_header), and llhttp allows no space before
    the colon, so the first match is the field itself (or an earlier duplicate).
    """
    begin = head.find(b"\r\n" + name + b":")
    if begin == -1:
        return None
    end = head.find(b"\r\n", begin + 2)
    return head[:begin] + head[end:]
