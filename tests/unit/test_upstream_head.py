"""Rules U1-U8 of core.http.upstream_head: the exact head the gateway writes upstream."""

from __future__ import annotations

import pytest

from fastgw.core.http.upstream_head import (
    ForwardedFields,
    build_upstream_head,
    client_request_id,
    prefix_line,
)
from fastgw.core.http.trace import TraceIds, parse_traceparent
from tests.support.heads import parse_heads

TAIL = (b"Via: 1.1 fastgw/0.1.0\r\nX-Forwarded-For: 10.0.0.9\r\nX-Forwarded-Proto: http\r\n"
        b"X-Forwarded-Port: 8000\r\nX-Real-IP: 10.0.0.9\r\n")


def build(raw: str, *, framing: bytes = b"", trusted: bool = False, prefix: str | None = None,
          target: bytes = b"/up", host: bytes = b"backend:8080",
          id_names: tuple[bytes, ...] = (b"X-Request-Id",),
          trace: TraceIds | None = None) -> tuple[bytes, bytes]:
    (head,) = parse_heads(raw.replace("\n", "\r\n").encode() + b"\r\n")
    fwd = ForwardedFields("10.0.0.9", b"8000", b"http", trusted)
    out, rid, _ = build_upstream_head(head, target, host, framing, fwd, prefix_line(prefix),
                                      lambda: b"new-id", id_names, trace)
    return out, rid


def test_u1_u2_u3_u8_a_plain_get() -> None:
    out, rid = build("GET /p?q=1 HTTP/1.1\nHost: gw.test\nAccept: */*\nUser-Agent: t\n",
                     target=b"/up?q=1")
    assert rid == b"new-id"
    assert out == (b"GET /up?q=1 HTTP/1.1\r\nHost: backend:8080\r\nAccept: */*\r\n"
                   b"User-Agent: t\r\nX-Request-Id: new-id\r\n" + TAIL
                   + b"X-Forwarded-Host: gw.test\r\n\r\n")


def test_u3_hop_by_hop_framing_and_named_fields_are_not_copied() -> None:
    out, _ = build("POST / HTTP/1.1\nHost: gw.test\nConnection: keep-alive, X-Secret\n"
                   "X-Secret: s\nKeep-Alive: 5\nTE: trailers\nProxy-Authorization: p\n"
                   "Expect: 100-continue\nContent-Length: 4\nX-Kept: k\n",
                   framing=b"Content-Length: 4\r\n")
    head = out.split(b"X-Request-Id")[0]
    assert head == (b"POST /up HTTP/1.1\r\nHost: backend:8080\r\nX-Kept: k\r\n"
                    b"Content-Length: 4\r\n")


def test_u4_framing_is_the_gateways() -> None:
    out, _ = build("POST / HTTP/1.1\nHost: gw.test\nTransfer-Encoding: chunked \n",
                   framing=b"Content-Length: 11\r\n")
    assert b"Transfer-Encoding" not in out and out.count(b"Content-Length: 11\r\n") == 1


def test_u5_websocket_upgrade() -> None:
    out, _ = build("GET /ws HTTP/1.1\nHost: gw.test\nUpgrade: websocket\nConnection: Upgrade\n"
                   "Sec-WebSocket-Key: k\n")
    assert b"Sec-WebSocket-Key: k\r\nUpgrade: websocket\r\nConnection: upgrade\r\n" in out
    out, _ = build("GET / HTTP/1.1\nHost: gw.test\nUpgrade: h2c\nConnection: Upgrade\n")
    assert b"Upgrade" not in out and b"Connection" not in out  # only websocket is relayed
    # Offered alongside another protocol, websocket is the only one the backend sees.
    out, _ = build("GET /ws HTTP/1.1\nHost: gw.test\nUpgrade: h2c\nUpgrade: websocket\n"
                   "Connection: Upgrade\n")
    assert b"h2c" not in out and out.count(b"Upgrade") == 1
    assert b"\r\nUpgrade: websocket\r\nConnection: upgrade\r\n" in out


def test_u6_via_is_extended() -> None:
    out, _ = build("GET / HTTP/1.1\nHost: gw.test\nVia: 1.1 edge\n")
    assert b"Via: 1.1 edge\r\n" in out and out.index(b"Via: 1.1 edge") < out.index(b"Via: 1.1 fastgw")


def test_u7_untrusted_forwarding_fields_are_replaced() -> None:
    out, _ = build("GET / HTTP/1.1\nHost: gw.test\nX-Forwarded-For: 6.6.6.6\nX-Real-IP: 6.6.6.6\n"
                   "X-Forwarded-Host: evil\n", prefix="/api")
    assert b"6.6.6.6" not in out and b"evil" not in out
    assert out.endswith(b"X-Forwarded-Host: gw.test\r\nX-Forwarded-Prefix: /api\r\n\r\n")


def test_u7_trusted_forwarding_fields_are_extended() -> None:
    out, _ = build("GET / HTTP/1.1\nHost: gw.test\nX-Forwarded-For: 1.1.1.1\n"
                   "X-Forwarded-Proto: https\nX-Forwarded-Host: public.example\n", trusted=True)
    assert b"X-Forwarded-For: 1.1.1.1, 10.0.0.9\r\n" in out
    assert b"X-Forwarded-Proto: https\r\n" in out
    assert b"X-Forwarded-Host: public.example\r\n" in out


def test_u8_the_clients_request_id_when_it_is_a_token() -> None:
    out, rid = build("GET / HTTP/1.1\nHost: gw.test\nX-Request-Id: abc-123\n")
    assert rid == b"abc-123" and out.count(b"X-Request-Id") == 1
    out, rid = build("GET / HTTP/1.1\nHost: gw.test\nX-Request-Id: a b\n")
    assert rid == b"new-id" and b"a b" not in out
    (head,) = parse_heads(b"GET / HTTP/1.1\r\nHost: a\r\nX-Request-Id: r1\r\n\r\n")
    assert client_request_id(head) == b"r1"


def test_the_tail_cache_follows_the_host() -> None:
    fwd = ForwardedFields("10.0.0.9", b"8000", b"http", False)
    assert fwd.tail(b"a", b"") is fwd.tail(b"a", b"")
    assert b"X-Forwarded-Host: b\r\n" in fwd.tail(b"b:81", b"")


def test_u8_kongs_request_id_upstream() -> None:
    """headers_upstream X-Kong-Request-Id: that name carries the id; a client's copy of it
    is never forwarded (the gateway sets it)."""
    out, rid = build("GET / HTTP/1.1\nHost: gw.test\nX-Kong-Request-Id: forged\n",
                     id_names=(b"X-Kong-Request-Id",))
    assert b"X-Kong-Request-Id: new-id\r\n" in out and b"forged" not in out
    assert b"X-Request-Id" not in out
    out, _ = build("GET / HTTP/1.1\nHost: gw.test\n", id_names=())
    assert b"Request-Id" not in out  # headers_upstream off


def test_u9_traceparent_continued_or_started() -> None:
    trace = TraceIds()
    incoming = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    out, _ = build(f"GET / HTTP/1.1\nHost: gw.test\ntraceparent: {incoming}\n", trace=trace)
    (line,) = [x for x in out.split(b"\r\n") if x.startswith(b"traceparent: ")]
    value = line[len(b"traceparent: "):]
    assert value.startswith(b"00-4bf92f3577b34da6a3ce929d0e0e4736-")  # the same trace
    assert value.endswith(b"-01") and b"00f067aa0ba902b7" not in value  # a new span
    assert parse_traceparent(value) is not None
    out, _ = build("GET / HTTP/1.1\nHost: gw.test\ntraceparent: garbage\n", trace=trace)
    (line,) = [x for x in out.split(b"\r\n") if x.startswith(b"traceparent: ")]
    assert parse_traceparent(line[13:]) is not None and b"garbage" not in out  # restarted
    out, _ = build(f"GET / HTTP/1.1\nHost: gw.test\ntraceparent: {incoming}\n")
    assert f"traceparent: {incoming}\r\n".encode() in out  # tracing off: passes as is


@pytest.mark.parametrize("value,ok", [
    (b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", True),
    (b"00-00000000000000000000000000000000-00f067aa0ba902b7-01", False),  # zero trace id
    (b"00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01", False),  # zero parent id
    (b"01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", False),  # unknown version
    (b"00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01", False),  # upper case
])
def test_traceparent_validation(value: bytes, ok: bool) -> None:
    assert (parse_traceparent(value) is not None) is ok
