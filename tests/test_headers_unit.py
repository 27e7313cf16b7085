"""Table-driven tests of the pure response-head rules (fastgw.proxy.headers)."""

from __future__ import annotations

import pytest

from fastgw.proxy.headers import clean_response_head

CASES = [
    # (raw head, status, expected head, content-length?, chunked?)
    (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n", 200,
     b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n", True, False),
    (b"HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\nKeep-Alive: timeout=5\r\n", 200,
     b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n", True, False),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-A: 1\r\n", 200,
     b"HTTP/1.1 200 OK\r\nX-A: 1\r\n", False, True),
    (b"HTTP/1.1 200 OK\r\nConnection: x-secret\r\nX-Secret: 1\r\nX-Kept: 2\r\n", 200,
     b"HTTP/1.1 200 OK\r\nX-Kept: 2\r\n", False, False),
    (b"HTTP/1.0 404 Not Found\r\nContent-Length: 0\r\n", 404,
     b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n", True, False),
    (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n", 101,
     b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n", False, False),
    # the gateway writes its own X-Request-Id: a backend's echo is not duplicated
    (b"HTTP/1.1 200 OK\r\nX-Request-Id: abc\r\nContent-Length: 0\r\n", 200,
     b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n", True, False),
]


@pytest.mark.parametrize("raw,status,head,content_length,chunked", CASES)
def test_clean_response_head(raw: bytes, status: int, head: bytes, content_length: bool, chunked: bool) -> None:
    assert clean_response_head(raw, status) == (head, content_length, chunked)
