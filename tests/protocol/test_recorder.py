"""The recording backend of the edge tests (tests/support/recorder.py), over real sockets.

If the recorder mis-cut a stream, the edge tests would see smuggling that is not there (or
miss it): these pin how it cuts pipelined, split and malformed input, and the head check.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from tests.support.edge_probes import chunked, websocket_head
from tests.support.rawclient import RawConnection, converse
from tests.support.recorder import (
    FASTGW_VIA,
    RecordedRequest,
    RecordingBackend,
    proxy_head_problems,
    reply,
)

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
def backend() -> Iterator[RecordingBackend]:
    with RecordingBackend() as b:
        yield b


def test_pipelined_split_requests_are_cut_exactly(backend: RecordingBackend) -> None:
    first = b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello"
    second = b"POST /b HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked(
        b"wor", b"ld\n!")
    third = b"GET /c?q=1 HTTP/1.1\r\nHost: x\r\nX-Dup: 1\r\nX-Dup: 2\r\n\r\n"
    stream = first + second + third
    cuts = [3, 40, 52, 53, 100, len(first) + len(second) + 2]
    segments = [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)])]
    outcome = converse(backend.port, segments, responses=3, pause=0.01)
    assert outcome.statuses == [200, 200, 200]
    a, b, c = backend.requests
    assert (a.method, a.target, a.body, a.raw_head) == ("POST", "/a", b"hello", first[:-5])
    assert (b.target, b.body) == ("/b", b"world\n!")
    assert b.raw_head == second[: second.index(b"\r\n\r\n") + 4]
    assert (c.target, c.all("x-dup"), c.raw_head) == ("/c?q=1", ["1", "2"], third)
    assert all(r.complete and r.connection == 0 for r in (a, b, c))
    assert backend.raw(0) == stream
    assert backend.parse_errors == []
    assert [r.json()["request"] for r in outcome.responses] == [0, 1, 2]


def test_unparsable_bytes_are_a_parse_error(backend: RecordingBackend) -> None:
    stream = b"GET / HTTP/1.1\r\nHost: x\r\n\r\nXYZ\x00 / HTTP/1.1\r\n\r\n"
    outcome = converse(backend.port, [stream], responses=None)
    assert outcome.statuses == [200, 400] and outcome.ending == "close"
    (error,) = backend.parse_errors
    assert error.connection == 0 and error.data.startswith(b"XYZ\x00")


def test_methods_llhttp_has_no_name_for_are_still_requests(backend: RecordingBackend) -> None:
    """`GE_T` and `get` are valid methods (tokens) that a proxy may forward; llhttp only
    parses methods it knows, so the recorder parses them as GET and records them as sent."""
    stream = (b"GE_T /a HTTP/1.1\r\nHost: x\r\n\r\n"
              b"get /b HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi"
              b"\r\nPURGE /c HTTP/1.1\r\nHost: x\r\n\r\n")
    outcome = converse(backend.port, [stream[:2], stream[2:40], stream[40:]], responses=3,
                       pause=0.01)
    assert outcome.statuses == [200, 200, 200]
    assert [(r.method, r.target, r.body) for r in backend.requests] == [
        ("GE_T", "/a", b""), ("get", "/b", b"hi"), ("PURGE", "/c", b"")]
    assert backend.requests[1].raw_head.startswith(b"get /b")
    assert backend.parse_errors == []


def test_connections_counted_open_and_closed(backend: RecordingBackend) -> None:
    with RawConnection(backend.port) as one, RawConnection(backend.port):
        assert backend.wait_for(lambda: backend.open_connections == 2, 5)
        one.send(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert one.read().ending == "close"
        assert backend.wait_for(lambda: backend.open_connections == 1, 5)
    assert backend.wait_for(lambda: backend.open_connections == 0, 5)
    assert backend.accepted == 2


def test_incomplete_body_is_recorded_as_incomplete(backend: RecordingBackend) -> None:
    with RawConnection(backend.port) as conn:
        conn.send(b"POST /slow HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n12345")
        assert backend.wait_for(lambda: len(backend.requests) == 1, 5)
        assert backend.wait_for(lambda: backend.requests[0].body == b"12345", 5)
        assert not backend.requests[0].complete
        conn.send(b"67890")
        assert conn.read(responses=1).statuses == [200]
    assert backend.requests[0].complete and backend.requests[0].body == b"1234567890"


def test_mark_since_and_reset(backend: RecordingBackend) -> None:
    get = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
    with RawConnection(backend.port) as conn:
        conn.send(get)
        conn.read(responses=1)
        mark = backend.mark()
        conn.send(get)
        conn.read(responses=2)
        activity = backend.since(mark)
        assert len(activity.requests) == 1 and activity.connections == 0
        assert activity.received == len(get)
        backend.reset()
        assert conn.closed_within(5) == "close"
    assert backend.requests == [] and backend.accepted == 0 and backend.received == 0


def test_websocket_refused_then_pipelined_request_is_parsed(backend: RecordingBackend) -> None:
    """A backend that does not switch reads the declared body, then the next request."""
    handshake = websocket_head(b"/ws", b"Content-Length: 3") + b"abc"
    outcome = converse(backend.port, [handshake + b"GET /next HTTP/1.1\r\nHost: x\r\n\r\n"],
                       responses=2)
    assert outcome.statuses == [200, 200]
    first, second = backend.requests
    assert first.body == b"abc" and first.complete
    assert second.target == "/next"


def test_websocket_rejected_with_400(backend: RecordingBackend) -> None:
    backend.websocket = "reject"
    outcome = converse(backend.port, [websocket_head(b"/ws")], responses=None)
    assert outcome.statuses == [400] and outcome.ending == "close"


def test_websocket_accepted_records_tunnel_bytes(backend: RecordingBackend) -> None:
    backend.websocket = "accept"
    with RawConnection(backend.port) as conn:
        conn.send(websocket_head(b"/ws") + b"\x81\x00")
        outcome = conn.read(responses=1)
        assert outcome.statuses == [101]
        assert outcome.first is not None
        assert outcome.first.header("sec-websocket-accept") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        conn.send(b"GET /not-a-request HTTP/1.1\r\n\r\n")
        assert backend.wait_for(lambda: backend.tunnel(0).endswith(b"HTTP/1.1\r\n\r\n"), 5)
    assert len(backend.requests) == 1 and backend.parse_errors == []


def test_delay_and_hold(backend: RecordingBackend) -> None:
    backend.delay = 0.3
    started = time.monotonic()
    assert converse(backend.port, [b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"]).statuses == [200]
    assert time.monotonic() - started >= 0.3
    backend.respond = lambda request: None if request.target == "/hold" else reply(204)
    backend.delay = 0.0
    held = converse(backend.port, [b"GET /hold HTTP/1.1\r\nHost: x\r\n\r\n"], timeout=0.5)
    assert held.describe() == "hang"
    assert converse(backend.port, [b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"]).statuses == [204]


def _head(raw: bytes) -> RecordedRequest:
    lines = raw.split(b"\r\n\r\n")[0].split(b"\r\n")
    method, target, _ = lines[0].split(b" ", 2)
    headers = [tuple(x.strip() for x in line.decode("latin-1").split(":", 1)) for line in lines[1:]]
    return RecordedRequest(0, method.decode(), target.decode(), "1.1", headers,  # type: ignore[arg-type]
                           raw_head=raw.split(b"\r\n\r\n")[0] + b"\r\n\r\n")


GOOD = (b"POST /p HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nX-Request-Id: 1\r\n"
        b"X-Forwarded-For: 1.2.3.4\r\nVia: " + FASTGW_VIA.encode() + b"\r\n\r\n")


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        (GOOD, None),
        (GOOD.replace(b"HTTP/1.1", b"HTTP/1.0"), "request line"),
        (GOOD.replace(b"Host: h\r\n", b""), "0 Host fields"),
        (GOOD.replace(b"Host: h\r\n", b"Host: h\r\nHost: i\r\n"), "2 Host fields"),
        (GOOD.replace(b"X-Request-Id: 1\r\n", b""), "no x-request-id"),
        (GOOD.replace(b"X-Forwarded-For", b"X-Other"), "no x-forwarded-for"),
        (GOOD.replace(b"Via: 1.1", b"Via: 1.0"), "no Via"),
        (GOOD.replace(b"Via: ", b"Via: 1.0 other, "), None),
        (GOOD.replace(b"Content-Length: 3", b"Transfer-Encoding: chunked"), None),
        (GOOD.replace(b"Content-Length: 3", b"Transfer-Encoding: gzip"), "Transfer-Encoding"),
        (GOOD.replace(b"Content-Length: 3", b"Content-Length: 3\r\nTransfer-Encoding: chunked"),
         "framing fields"),
        (GOOD.replace(b"Content-Length: 3", b"Content-Length: 3\r\nContent-Length: 3"),
         "framing fields"),
        (GOOD.replace(b"Content-Length: 3", b"Foo_Bar: 1"), "underscores"),
        (GOOD.replace(b"Content-Length: 3", b"Connection: close"), "Connection"),
        (GOOD.replace(b"Content-Length: 3", b"Connection: keep-alive"), None),
        (GOOD.replace(b"Content-Length: 3", b"Connection: upgrade"), "Connection"),
        (GOOD.replace(b"Content-Length: 3", b"Connection: upgrade\r\nUpgrade: websocket"), None),
    ],
)
def test_proxy_head_problems(raw: bytes, problem: str | None) -> None:
    problems = proxy_head_problems(_head(raw))
    if problem is None:
        assert problems == []
    else:
        assert any(p.startswith(problem) for p in problems), problems
