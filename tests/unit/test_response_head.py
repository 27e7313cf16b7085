"""Table-driven tests of the response-head rules P1-P7 (fastgw.core.http.response)."""

from __future__ import annotations

import httptools
import pytest

from fastgw.core.http.response import (
    CLOSE_DELIMITED,
    LENGTH,
    NO_BODY,
    RE_CHUNK,
    RESPONSE_SPECIAL,
    clean_response_head,
    cut_field,
    response_framing,
)


def parse_special(raw: bytes) -> list[tuple[bytes, bytes, bytes]]:
    """The special fields as the upstream connection collects them: from llhttp's
    on_header callbacks, names exactly as sent."""
    special: list[tuple[bytes, bytes, bytes]] = []

    class Collector:
        def on_header(self, name: bytes, value: bytes) -> None:
            if name.lower() in RESPONSE_SPECIAL:
                special.append((name.lower(), name, value))

    parser = httptools.HttpResponseParser(Collector())
    try:
        parser.feed_data(raw + b"\r\n")
    except httptools.HttpParserUpgrade:
        pass  # 101: the parser stops at the end of the head
    return special

CASES = [
    # (raw head, status, expected head, content-length?, chunked?, kept Connection name)
    # P3: a Content-Length line written otherwise than the gateway would is cut (the
    # gateway writes its own)
    (b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nX-A: 1\r\n", 200,
     b"HTTP/1.1 200 OK\r\nX-A: 1\r\n", True, False, None),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 2 \r\n", 200, b"HTTP/1.1 200 OK\r\n", True, False,
     None),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n", 200,
     b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n", True, False, None),
    # a plain keep-alive Connection stays (the caller cuts it if the client closes)
    (b"HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\nKeep-Alive: timeout=5\r\n", 200,
     b"HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n", True, False, b"Connection"),
    (b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n", 200,
     b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n", True, False, None),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-A: 1\r\n", 200,
     b"HTTP/1.1 200 OK\r\nX-A: 1\r\n", False, True, None),
    (b"HTTP/1.1 200 OK\r\nConnection: x-secret\r\nX-Secret: 1\r\nX-Kept: 2\r\n", 200,
     b"HTTP/1.1 200 OK\r\nX-Kept: 2\r\n", False, False, None),
    (b"HTTP/1.0 404 Not Found\r\nContent-Length: 0\r\n", 404,
     b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n", True, False, None),
    (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n", 101,
     b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n",
     False, False, None),
    # duplicates and any casing: one keep-alive stays, the rest is cut; other fields
    # stay byte for byte
    (b"HTTP/1.1 200 OK\r\nconnection: keep-alive\r\nX-A:  1 \r\nCONNECTION: keep-alive\r\n"
     b"Content-Length: 0\r\n", 200,
     b"HTTP/1.1 200 OK\r\nconnection: keep-alive\r\nX-A:  1 \r\nContent-Length: 0\r\n",
     True, False, b"connection"),
    (b"HTTP/1.1 200 OK\r\nConnection: close, X-Gone\r\nx-gone: 1\r\nTE: trailers\r\n"
     b"Trailer: X-T\r\nProxy-Authenticate: Basic\r\nX-Kept: 2\r\n", 200,
     b"HTTP/1.1 200 OK\r\nX-Kept: 2\r\n", False, False, None),
    # the gateway writes its own X-Request-Id: a backend's echo is not duplicated
    (b"HTTP/1.1 200 OK\r\nX-Request-Id: abc\r\nContent-Length: 0\r\n", 200,
     b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n", True, False, None),
]


@pytest.mark.parametrize("raw,status,head,content_length,chunked,kept", CASES)
def test_clean_response_head(
    raw: bytes, status: int, head: bytes, content_length: bool, chunked: bool, kept: bytes | None
) -> None:
    fields = clean_response_head(raw, status, parse_special(raw))
    assert (fields.head, fields.content_length >= 0, fields.chunked, fields.kept) == \
        (head, content_length, chunked, kept)
    assert not fields.bad_coding
    # P3: the Content-Length line left in place is exactly the gateway's own spelling
    assert fields.length_line == (b"\r\nContent-Length: " in fields.head)


@pytest.mark.parametrize("value", [b"gzip", b"gzip, chunked", b"identity", b"chunked, gzip"])
def test_other_transfer_codings_are_flagged(value: bytes) -> None:
    """P2: a coding the gateway cannot pass on (its label would be lost) -> 502."""
    raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: " + value + b"\r\n"
    special = [(b"transfer-encoding", b"Transfer-Encoding", value)]
    assert clean_response_head(raw, 200, special).bad_coding


FRAMING = [
    # (status, HEAD request?, content-length or -1, chunked?, HTTP/1.1 client?, framing)
    (200, False, 10, False, True, LENGTH),
    (200, False, -1, True, True, RE_CHUNK),
    (200, False, -1, True, False, CLOSE_DELIMITED),
    (200, False, -1, False, True, RE_CHUNK),  # P4: close-delimited from the backend
    (200, False, -1, False, False, CLOSE_DELIMITED),
    (200, True, 10, False, True, NO_BODY),  # P1
    (204, False, -1, False, True, NO_BODY),
    (304, False, 10, False, True, NO_BODY),
    (101, False, -1, False, True, NO_BODY),
    (404, False, 0, False, True, LENGTH),
]


@pytest.mark.parametrize("status,head_request,length,chunked,http11,expected", FRAMING)
def test_response_framing(status: int, head_request: bool, length: int, chunked: bool,
                          http11: bool, expected: int) -> None:
    special = []
    raw = b"HTTP/1.1 %d X\r\n" % status
    if length >= 0:
        special.append((b"content-length", b"Content-Length", b"%d" % length))
        raw += b"Content-Length: %d\r\n" % length
    if chunked:
        special.append((b"transfer-encoding", b"Transfer-Encoding", b"chunked"))
        raw += b"Transfer-Encoding: chunked\r\n"
    fields = clean_response_head(raw, status, special)
    assert response_framing(status, head_request, fields, http11) == expected


@pytest.mark.parametrize(
    "head,name,expected",
    [
        (b"HTTP/1.1 200 OK\r\nA: 1\r\nConnection: keep-alive\r\nB: 2\r\n", b"Connection",
         b"HTTP/1.1 200 OK\r\nA: 1\r\nB: 2\r\n"),
        (b"HTTP/1.1 200 OK\r\nConnection: keep-alive\r\n", b"Connection", b"HTTP/1.1 200 OK\r\n"),
        (b"HTTP/1.1 200 OK\r\nX-Connection: 1\r\n", b"Connection", None),
    ],
)
def test_cut_field(head: bytes, name: bytes, expected: bytes | None) -> None:
    assert cut_field(head, name) == expected
