"""The exact bytes of exchanges, through recording transports (no sockets, no timing).

Each test feeds client bytes (whole, fragmented or pipelined) and backend bytes into a
worker's protocols and checks, byte for byte, what reached the backend and the client.
Races that a socket test only hits now and then (which write crosses the client's
high-water mark) are forced here, so they fail every time they regress.
"""

from __future__ import annotations

import re
from typing import Iterator

import pytest

from fastgw.dataplane.exchange import DONE, SENDING
from tests.support.transport import ProtocolHarness, atelier_config

GET = b"GET /api/atelier/ HTTP/1.1\r\nHost: gw.test\r\nUser-Agent: t\r\n\r\n"
BODY = b'{"id":"A"}'
RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nX-Iris-Id: A\r\n\r\n%s" % (len(BODY), BODY)
RID = re.compile(rb"X-Request-Id: ([0-9a-f]{32})\r\n")
TRACE = re.compile(rb"traceparent: (00-[0-9a-f]{32}-[0-9a-f]{16}-01)\r\n")


def upstream_head(path: bytes = b"/api/atelier/", host: bytes = b"127.0.0.1:52773",
                  fields: bytes = b"User-Agent: t\r\n", method: bytes = b"GET",
                  framing: bytes = b"", rid: bytes = b"", trace: bytes = b"") -> bytes:
    """The head the gateway must write for a client on 127.0.0.1:40000 (U1-U9)."""
    return (method + b" " + path + b" HTTP/1.1\r\nHost: " + host + b"\r\n" + fields + framing
            + b"X-Request-Id: " + rid + b"\r\n" + b"traceparent: " + trace + b"\r\n"
            b"Via: 1.1 fastgw/0.1.0\r\n"
            b"X-Forwarded-For: 127.0.0.1\r\nX-Forwarded-Proto: http\r\n"
            b"X-Forwarded-Port: 8000\r\nX-Real-IP: 127.0.0.1\r\n"
            b"X-Forwarded-Host: gw.test\r\n\r\n")


def request_id(data: bytes) -> bytes:
    m = RID.search(data)
    assert m is not None, data
    return m.group(1)


def traceparent(data: bytes) -> bytes:
    m = TRACE.search(data)
    assert m is not None, data
    return m.group(1)


@pytest.fixture
def h() -> Iterator[ProtocolHarness]:
    harness = ProtocolHarness(atelier_config())
    yield harness
    harness.close()


@pytest.fixture
def h_streaming() -> Iterator[ProtocolHarness]:
    harness = ProtocolHarness(atelier_config(route={"request_buffering": False}))
    yield harness
    harness.close()


def test_get_exact_bytes_both_ways(h: ProtocolHarness) -> None:
    h.send(GET)
    up = h.upstream_bytes()
    assert up == upstream_head(rid=request_id(up), trace=traceparent(up))
    h.reply(RESPONSE)
    assert h.client_bytes() == (
        b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\nX-Iris-Id: A\r\nVia: 1.1 fastgw/0.1.0\r\n"
        b"X-Request-Id: " + request_id(up) + b"\r\n\r\n" + BODY)
    assert h.client_transport.writes == 1  # head and body in one write


def test_fragmented_head_is_sent_once_whole(h: ProtocolHarness) -> None:
    for i in range(len(GET)):
        assert h.upstream_bytes() == b""  # nothing before the head is complete
        h.send(GET[i:i + 1])
    up = h.upstream_bytes()
    assert up == upstream_head(rid=request_id(up), trace=traceparent(up))


def test_pipelined_requests_answered_in_order(h: ProtocolHarness) -> None:
    second = GET.replace(b"/api/atelier/", b"/api/atelier/2")
    h.send(GET + second)
    first_up = h.upstream_bytes()
    assert first_up.startswith(b"GET /api/atelier/ ") and b"/api/atelier/2" not in first_up
    h.reply(RESPONSE)
    second_up = h.upstream_bytes()
    assert second_up.startswith(b"GET /api/atelier/2 HTTP/1.1\r\n")
    h.reply(RESPONSE)
    out = h.client_bytes()
    assert out.count(b"HTTP/1.1 200 OK") == 2
    assert out.index(request_id(first_up)) < out.index(request_id(second_up))


def test_buffered_chunked_body_goes_up_with_content_length(h: ProtocolHarness) -> None:
    """F1/U4: the client's chunked framing is decoded; the backend gets our framing."""
    h.send(b"POST /api/atelier/x HTTP/1.1\r\nHost: gw.test\r\nTransfer-Encoding: chunked \r\n\r\n")
    h.send(b"5\r\nhello\r\n")
    assert h.upstream_bytes() == b""  # request buffering: nothing until the body is in
    h.send(b"6\r\n world\r\n0\r\n\r\n")
    up = h.upstream_bytes()
    assert up == upstream_head(b"/api/atelier/x", method=b"POST", fields=b"",
                               framing=b"Content-Length: 11\r\n", rid=request_id(up), trace=traceparent(up)) \
        + b"hello world"


def test_smuggled_request_in_a_chunked_body_stays_body(h: ProtocolHarness) -> None:
    """Finding 1 of the edge-security issue, at the byte level."""
    smuggled = b"GET /admin/secret HTTP/1.1\r\nHost: gw.test\r\n\r\n"
    h.send(b"POST /api/atelier/ HTTP/1.1\r\nHost: gw.test\r\nTransfer-Encoding: chunked \r\n\r\n"
           + b"%x\r\n" % len(smuggled) + smuggled + b"\r\n0\r\n\r\n")
    up = h.upstream_bytes()
    head, _, body = up.partition(b"\r\n\r\n")
    assert body == smuggled
    assert b"Content-Length: %d\r\n" % len(smuggled) in head + b"\r\n"
    assert b"Transfer-Encoding" not in head


def test_streamed_chunked_body(h_streaming: ProtocolHarness) -> None:
    """request_buffering off: the head goes at once, the body re-chunked as it comes."""
    h = h_streaming
    h.send(b"POST /api/atelier/ HTTP/1.1\r\nHost: gw.test\r\nTransfer-Encoding: chunked\r\n\r\n")
    up = h.upstream_bytes()
    assert up == upstream_head(method=b"POST", fields=b"",
                               framing=b"Transfer-Encoding: chunked\r\n", rid=request_id(up), trace=traceparent(up))
    h.send(b"5\r\nhello\r\n")
    assert h.upstream_bytes() == b"5\r\nhello\r\n"
    h.send(b"0\r\n\r\n")
    assert h.upstream_bytes() == b"0\r\n\r\n"
    h.reply(RESPONSE)
    assert h.client_bytes().startswith(b"HTTP/1.1 200 OK\r\n")


@pytest.mark.parametrize("raw,status", [
    (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n", 501),
    (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", 501),
    (b"POST /api/atelier/ HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\t\r\n\r\n0\r\n\r\n",
     501),  # llhttp refuses the coding; answered as rule F2 answers other codings
    (b"GET /api/atelier/ HTTP/1.1\r\n\r\n", 400),
    (b"GET /api/atelier/ HTTP/2.0\r\nHost: a\r\n\r\n", 505),
    (b"TRACE /api/atelier/ HTTP/1.1\r\nHost: a\r\n\r\n", 405),
    (b"POST /api/atelier/ HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
     b"5\r\nhello\r\nzz\r\n", 400),  # a bad chunk size after a good chunk
])
def test_refused_requests_reach_no_backend(h: ProtocolHarness, raw: bytes, status: int) -> None:
    h.send(raw)
    out = h.client_bytes()
    assert out.startswith(b"HTTP/1.1 %d " % status), out
    assert b"Connection: close\r\n" in out
    assert h.upstream_bytes() == b""
    assert h.client_transport.eof_written  # lingering close: our side shut, theirs read


def test_error_after_pipelined_good_request_waits_its_turn(h: ProtocolHarness) -> None:
    h.send(GET + b"GET /api/atelier/ HTTP/1.1\r\nHost: a b\r\n\r\n")
    assert h.client_bytes() == b""
    assert h.upstream_bytes().startswith(b"GET /api/atelier/ HTTP/1.1\r\n")
    h.reply(RESPONSE)
    out = h.client_bytes()
    assert out.startswith(b"HTTP/1.1 200 OK") and b"HTTP/1.1 400 Bad Request" in out
    assert h.upstream_bytes() == b""  # only the first request went up


def test_websocket_bytes_wait_for_the_101(h: ProtocolHarness) -> None:
    """Finding 2: bytes after an upgrade request are held, and dropped unless 101."""
    upgrade = (b"GET /api/atelier/ws HTTP/1.1\r\nHost: gw.test\r\nUpgrade: websocket\r\n"
               b"Connection: Upgrade\r\nSec-WebSocket-Key: k\r\nSec-WebSocket-Version: 13\r\n\r\n")
    h.send(upgrade + b"GET /admin/secret HTTP/1.1\r\nHost: gw.test\r\n\r\n")
    up = h.upstream_bytes()
    assert up.endswith(b"\r\n\r\n") and b"/admin/secret" not in up
    assert b"Upgrade: websocket\r\nConnection: upgrade\r\n" in up
    assert not h.client_transport.reading  # held, reading paused
    h.reply(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
    out = h.client_bytes()
    assert out.startswith(b"HTTP/1.1 200 OK") and b"Connection: close\r\n" in out
    assert h.upstream_bytes() == b""  # the held bytes never went anywhere


def test_websocket_101_then_tunnel(h: ProtocolHarness) -> None:
    upgrade = (b"GET /api/atelier/ws HTTP/1.1\r\nHost: gw.test\r\nUpgrade: websocket\r\n"
               b"Connection: Upgrade\r\n\r\n")
    h.send(upgrade + b"early-frame")
    h.upstream_bytes()
    backend = h.busy_backend()
    h.reply(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
            backend)
    assert backend.transport.take() == b"early-frame"  # the held bytes, after the 101
    assert h.client_bytes().startswith(b"HTTP/1.1 101 Switching Protocols\r\n")
    h.send(b"client-frame")
    backend.data_received(b"server-frame")
    assert backend.transport.take() == b"client-frame"
    assert h.client_bytes() == b"server-frame"


def test_413_lingers_instead_of_resetting(h: ProtocolHarness) -> None:
    harness = ProtocolHarness(atelier_config(max_body_size=10))
    try:
        harness.send(b"POST /api/atelier/ HTTP/1.1\r\nHost: a\r\nContent-Length: 11 \r\n\r\n")
        out = harness.client_bytes()
        assert out.startswith(b"HTTP/1.1 413 ")
        assert harness.client_transport.eof_written and not harness.client_transport.closed
        harness.send(b"x" * 11)  # the client goes on uploading: read and dropped
        assert not harness.client_transport.closed
        assert harness.upstream_bytes() == b""
    finally:
        harness.close()


def test_keepalive_requests_limit(h: ProtocolHarness) -> None:
    harness = ProtocolHarness(atelier_config(keepalive_requests=2))
    try:
        harness.send(GET)
        harness.reply(RESPONSE)
        assert b"Connection: close" not in harness.client_bytes()
        harness.send(GET + GET)  # the second is the last; the third is never read
        harness.reply(RESPONSE)
        out = harness.client_bytes()
        assert out.count(b"HTTP/1.1 200") == 1 and b"Connection: close\r\n" in out
        assert harness.client_transport.closed
        assert sum(c.requests for c in harness.backends) == 2
    finally:
        harness.close()


def test_underscored_fields_are_dropped(h: ProtocolHarness) -> None:
    h.send(b"GET /api/atelier/ HTTP/1.1\r\nHost: gw.test\r\nX_Forwarded_For: 6.6.6.6\r\n"
           b"Transfer_Encoding: chunked\r\nUser-Agent: t\r\n\r\n")
    up = h.upstream_bytes()
    assert up == upstream_head(rid=request_id(up), trace=traceparent(up))


def test_last_write_filling_the_client_does_not_pause_a_pooled_connection(
        h: ProtocolHarness) -> None:
    """The final write of a response crosses the client's high-water mark: the backend
    connection has already gone back to the pool, so it must stay readable, and the
    client's next request on the same connection is answered."""
    h.send(GET)
    h.client_transport.fill_on_write = True
    h.reply(RESPONSE)
    assert h.client.active is None and h.client.write_paused
    assert all(not c.read_paused for c in h.backends)
    h.client.resume_writing()
    h.send(GET)
    conn = h.busy_backend()
    assert not conn.read_paused
    before = h.client_transport.written
    h.reply(RESPONSE)
    assert h.client.active is None and h.client_transport.written > before


def test_next_exchange_starts_while_the_client_is_still_full() -> None:
    """A response that starts while the client's buffer is still over the mark: with
    response buffering off the backend is held (no pause_writing will come) and
    resume_writing releases it; with it on (Kong's default) the backend is read into
    the spool and the connection is free before the client has taken a byte."""
    harness = ProtocolHarness(atelier_config(route={"response_buffering": False}))
    try:
        harness.send(GET)
        harness.client_transport.fill_on_write = True
        harness.reply(RESPONSE)
        assert harness.client.write_paused
        harness.send(GET)
        conn = harness.busy_backend()
        head_end = RESPONSE.index(b"\r\n\r\n") + 4
        conn.data_received(RESPONSE[:head_end])  # the head arrives while the client is full
        assert conn.read_paused
        harness.client.resume_writing()
        assert not conn.read_paused
        conn.data_received(RESPONSE[head_end:])
        assert harness.client.active is None
    finally:
        harness.close()


def test_response_buffering_frees_the_backend_from_a_slow_reader(h: ProtocolHarness) -> None:
    h.send(GET)
    conn = h.busy_backend()
    h.client_transport.take()
    big = b"x" * 300_000
    conn.data_received(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(big))
    h.client.pause_writing()  # the client stops reading
    conn.data_received(big)
    assert conn.exchange is None and not conn.read_paused  # back in the pool already
    assert h.client.active is not None  # but the client has not got it all yet
    h.client.resume_writing()
    assert h.client.active is None
    assert h.client_bytes().endswith(big)


def test_new_connection_closed_before_use_is_a_connect_error(h: ProtocolHarness) -> None:
    """The issue's probable hang: a connection the backend closed between connect and
    use used to be attached anyway (no deadline on it, none on the client): the request
    hung forever. Now it is a failed attempt, retried on the other target."""
    harness = ProtocolHarness(atelier_config(), pooled=0)
    try:
        async def closed_connect(pool):  # type: ignore[no-untyped-def]
            conn = harness.new_backend(pool)
            conn.connection_lost(None)
            return conn
        real = harness.connect_hook
        harness.connect_hook = closed_connect
        harness.send(GET)
        harness.connect_hook = real
        harness.run()
        assert harness.busy_backend() is not None  # retried on a fresh connection
        harness.reply(RESPONSE)
        assert harness.client_bytes().startswith(b"HTTP/1.1 200 OK")
    finally:
        harness.close()


def test_streaming_body_waits_for_its_connection(h_streaming: ProtocolHarness) -> None:
    """request_buffering off, no idle connection: the body waits (bounded) and goes up
    with the head once connected."""
    h = h_streaming
    for conn in h.backends:
        conn.pool.idle.clear()
    h.send(b"POST /api/atelier/ HTTP/1.1\r\nHost: gw.test\r\nContent-Length: 5\r\n\r\nhel")
    assert h.client.active is not None and h.client.active.state != SENDING
    h.run()
    up = h.upstream_bytes()
    assert up.endswith(b"\r\n\r\nhel") and b"Content-Length: 5\r\n" in up
    h.send(b"lo")
    assert h.upstream_bytes() == b"lo"
    h.reply(RESPONSE)
    assert h.client.active is None or h.client.active.state == DONE


def test_streamed_body_spilled_before_its_connection_keeps_its_framing() -> None:
    """request_buffering off, and more than client_body_buffer_size of the body arrives
    with the head, before a connection is ready (it goes to a temp file): it still goes
    upstream chunked, whole, and the rest streams after it. A body that looks like a
    chunk terminator plus a request stays body (the edge-security fuzz found this)."""
    h = ProtocolHarness(atelier_config(client_body_buffer_size=16,
                                       route={"request_buffering": False}), pooled=0)
    try:
        smuggle = b"0\r\n\r\nGET /admin/secret HTTP/1.1\r\nHost: x\r\n\r\n"
        h.send(b"POST /api/atelier/ HTTP/1.1\r\nHost: gw.test\r\nTransfer-Encoding: chunked\r\n"
               b"\r\n%x\r\n%s\r\n" % (len(smuggle), smuggle))
        h.run()
        up = h.upstream_bytes()
        head, _, body = up.partition(b"\r\n\r\n")
        assert b"Transfer-Encoding: chunked\r\n" in head + b"\r\n"
        assert body == b"%x\r\n%s\r\n" % (len(smuggle), smuggle)  # one chunk, re-framed
        h.send(b"3\r\nend\r\n0\r\n\r\n")
        assert h.upstream_bytes() == b"3\r\nend\r\n0\r\n\r\n"
        h.reply(RESPONSE)
        assert h.client_bytes().startswith(b"HTTP/1.1 200 OK")
    finally:
        h.close()
