"""The response head the gateway sends a client, from the head a backend sent.

Theory of operation
-------------------
The backend's head passes through as received (one bytes object, no re-serialisation),
minus the fields the rules below cut, plus the fields the gateway adds. The upstream
parser's `on_header` collects only the RESPONSE_SPECIAL fields (a C callback per field is
far cheaper than scanning the head again in Python), and `clean_response_head` works on
those. The body framing to the client is decided by `response_framing` from what llhttp
parsed; the exchange writes the framing fields it decided, never ones it copied.

Rules (RFC 9112 §6, RFC 9110 §7.6)
----------------------------------
  P1  No body for a HEAD request, 1xx, 204 and 304 (RFC 9112 §6.3 rule 1). llhttp cannot
      be told about HEAD (httptools#47): the upstream side frames it itself.
  P2  Transfer-Encoding: exactly "chunked" -> llhttp decodes it and the gateway chunks it
      again for HTTP/1.1 clients, or ends it by closing for HTTP/1.0 clients. Any other
      coding -> 502: its label would be lost on the way and the client would get bytes
      it cannot read.
  P3  Content-Length (llhttp refuses duplicates and Content-Length with
      Transfer-Encoding): the gateway sends `Content-Length: N` itself. A backend line
      already written exactly that way stays where it is (the same bytes); any other
      spelling is cut and the gateway's line added.
  P4  Neither: the body ends when the backend closes (§6.3 rule 8): chunked for HTTP/1.1
      clients, close-delimited for HTTP/1.0 ones.
  P5  Hop-by-hop fields are cut: Connection and the fields it names, Keep-Alive, TE,
      Trailer, Proxy-*, Upgrade (but a 101 keeps Connection and Upgrade). A plain
      `Connection: keep-alive` is left in place (it says what the gateway says to a
      keep-alive client anyway, as nginx's responses do); its name is returned so the
      caller cuts it when the client connection is to close.
  P6  The status line is HTTP/1.1 (the gateway speaks 1.1 to clients).
  P7  The gateway sets exactly one request id field of each name it uses (X-Request-Id,
      X-Kong-Request-Id; core.http.gateway_fields): a backend's copy of it is cut.
"""

from __future__ import annotations

from typing import Final

import re

from fastgw.core.http.errors import status_line
from fastgw.core.http.fields import HOP_BY_HOP, connection_tokens

__all__ = [
    "CLOSE_DELIMITED",
    "LENGTH",
    "NO_BODY",
    "RE_CHUNK",
    "RESPONSE_SPECIAL",
    "ResponseFields",
    "clean_response_head",
    "cut_field",
    "response_framing",
]

_CONN_KEYWORDS: Final = frozenset({b"close", b"keep-alive", b"upgrade"})
RESPONSE_SPECIAL: Final = frozenset(
    HOP_BY_HOP | {b"content-length", b"x-request-id", b"x-kong-request-id"})
_DEFAULT_CUT_IDS: Final = frozenset({b"x-request-id"})

# Response body framing towards the client (response_framing).
# Final, one per line: compiled code then reads each as a C constant, not a module lookup.
NO_BODY: Final = 0
LENGTH: Final = 1
RE_CHUNK: Final = 2
CLOSE_DELIMITED: Final = 3


class ResponseFields:
    """What clean_response_head found in a head (see its docstring)."""

    __slots__ = ("head", "content_length", "length_line", "chunked", "bad_coding", "kept")

    def __init__(self, head: bytes, content_length: int, length_line: bool, chunked: bool,
                 bad_coding: bool, kept: bytes | None) -> None:
        self.head = head
        self.content_length = content_length  # -1: no Content-Length field
        self.length_line = length_line  # the canonical Content-Length line is still in head
        self.chunked = chunked
        self.bad_coding = bad_coding  # P2: a transfer coding other than chunked
        self.kept = kept  # name of a kept `Connection: keep-alive` line (P5)


def clean_response_head(
    head: bytes, status: int, special: list[tuple[bytes, bytes, bytes]],
    cut_ids: frozenset[bytes] = _DEFAULT_CUT_IDS,
) -> ResponseFields:
    """Apply P2, P3 and P5-P7 to a raw head (status line and fields, CRLF-terminated,
    without the blank line). `special` holds (lower name, name as sent, value) of the
    head's RESPONSE_SPECIAL fields, in order; `cut_ids` the lower-case names of the request
    id fields the gateway sets itself (P7)."""
    content_length = -1
    length_line = False
    chunked = False
    bad_coding = False
    kept: bytes | None = None
    listed: set[bytes] | None = None
    for lname, name, value in special:
        if lname == b"content-length":
            if name == b"Content-Length" and value.isdigit():
                content_length = int(value)
                length_line = True  # exactly what we would write (P3)
                continue
            content_length = int(value.strip())  # llhttp checked the digits
        elif lname == b"x-request-id" or lname == b"x-kong-request-id":
            if lname not in cut_ids:
                continue  # the gateway does not set this one: it passes
        elif lname == b"transfer-encoding":
            if value.strip(b" \t").lower() == b"chunked":
                chunked = True
            else:
                bad_coding = True
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
        head = status_line(status) + head[head.find(b"\r\n") + 2 :]  # P6
    return ResponseFields(head, content_length, length_line, chunked, bad_coding, kept)


def response_framing(status: int, head_request: bool, fields: ResponseFields,
                     http11_client: bool) -> int:
    """P1-P4: how the body goes to the client."""
    if head_request or status < 200 or status == 204 or status == 304:
        return NO_BODY
    if fields.chunked:
        return RE_CHUNK if http11_client else CLOSE_DELIMITED
    if fields.content_length >= 0:
        return LENGTH
    return RE_CHUNK if http11_client else CLOSE_DELIMITED


def cut_field(head: bytes, name: bytes) -> bytes | None:
    """`head` without its first "\\r\\nName: value" (up to that line's CRLF), or None.

    `name` is exactly as sent (llhttp's on_header), and llhttp allows no space before
    the colon, so the first match is the field itself (or an earlier duplicate).
    """
    # partition() (one argument, no argument parsing) costs far less than find().
    before, found, rest = head.partition(b"\r\n" + name + b":")
    if not found:
        return None
    _, crlf, after = rest.partition(b"\r\n")
    return before + crlf + after if crlf else before + rest[-1:]  # (no CRLF: as find())
