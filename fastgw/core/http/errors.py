"""Responses the gateway writes itself: status lines, the Date field, error bodies.

Pure and precomputed: every status line exists as bytes from import time, the Date field
is rebuilt at most once a second, and an error response is one `bytes` object built by
one function (Kong 3.x's JSON error shape, reference/kong.md §1).
"""

from __future__ import annotations

from typing import Final

import os
import time
from email.utils import formatdate
from http import HTTPStatus

import orjson

from fastgw.core.http.fields import SERVER_TOKEN
from fastgw.core.http.gateway_fields import GatewayFields

DEFAULT_FIELDS: Final = GatewayFields()

__all__ = [
    "CONTINUE_100",
    "DATE",
    "MESSAGES",
    "STATUS_LINES",
    "DateHeader",
    "error_response",
    "new_request_id",
    "reason_phrase",
    "status_line",
]


def reason_phrase(code: int) -> bytes:
    try:
        return HTTPStatus(code).phrase.encode()
    except ValueError:
        return b"Unknown"


# "HTTP/1.1 200 OK\r\n" for every code, computed once.
STATUS_LINES: Final[dict[int, bytes]] = {
    code: b"HTTP/1.1 %d %s\r\n" % (code, reason_phrase(code)) for code in range(100, 1000)
}

CONTINUE_100: Final = b"HTTP/1.1 100 Continue\r\n\r\n"


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


DATE: Final = DateHeader()

# Kong's messages for errors the proxy itself produces (reference/kong.md §1), and
# nginx's wording where Kong leaves it to nginx (405, 501, 505).
MESSAGES: Final[dict[int, str]] = {
    400: "Bad request",
    404: "no Route matched with those values",
    405: "Method not allowed",
    408: "Request timeout",
    413: "Request Entity Too Large",
    414: "Request-URI Too Large",
    431: "Request Header Fields Too Large",
    500: "An unexpected error occurred",
    501: "Not Implemented",
    502: "An invalid response was received from the upstream server",
    503: "failure to get a peer from the ring-balancer",
    504: "The upstream server is timing out",
    505: "HTTP Version Not Supported",
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
    fields: GatewayFields = DEFAULT_FIELDS,
    latency_ms: float = -1.0,
    extra: bytes = b"",
    empty: bool = False,
) -> bytes:
    """A complete gateway-generated response: Kong 3.x JSON body `{message, request_id}`,
    with the fields `fields` turns on (Server, the request id, X-Kong-Response-Latency).
    `extra`: more field lines (a redirect's Location...); `empty`: no body at all."""
    body = b"" if empty else orjson.dumps(
        {
            "message": message if message is not None
            else MESSAGES.get(code, reason_phrase(code).decode()),
            "request_id": request_id or new_request_id(),
        }
    )
    head = [
        status_line(code),
        DATE.value,
        b"Content-Length: %d\r\n" % len(body) if empty else
        b"Content-Type: application/json; charset=utf-8\r\nContent-Length: %d\r\n" % len(body),
    ]
    if fields.server:
        head.append(b"Server: " + SERVER_TOKEN + b"\r\n")
    if request_id:
        head.append(fields.response_id_lines(request_id.encode("latin-1")))
    if fields.response_latency and latency_ms >= 0:
        head.append(b"X-Kong-Response-Latency: %d\r\n" % latency_ms)
    if code == 405:
        head.append(b"Allow: GET, HEAD, POST, PUT, DELETE, PATCH, OPTIONS\r\n")
    if extra:
        head.append(extra)
    if not keep_alive:
        head.append(b"Connection: close\r\n")
    head.append(b"\r\n")
    if not head_only:
        head.append(body)
    return b"".join(head)
