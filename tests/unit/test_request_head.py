"""Rows for every rule of core.http.request (F1-F6, H1-H3, V1, M1-M2, C1-C3, L1-L3):
raw bytes through llhttp and the RequestReader, as the proxy reads them."""

from __future__ import annotations

import httptools
import pytest

from fastgw.core.http.request import (
    CHUNKED,
    LENGTH,
    NO_BODY,
    RequestLimits,
    RequestRefused,
    valid_host,
)
from tests.support.heads import parse_heads


def refused(raw: bytes, limits: RequestLimits | None = None) -> int:
    """The status a request is refused with (0: accepted)."""
    try:
        parse_heads(raw, limits)
    except httptools.HttpParserCallbackError as exc:
        cause = exc.__context__
        assert isinstance(cause, RequestRefused), cause
        return cause.status
    except httptools.HttpParserError:
        return 400  # llhttp itself refused the bytes
    return 0


def req(head: str, body: bytes = b"") -> bytes:
    return head.replace("\n", "\r\n").encode("latin-1") + b"\r\n" + body


REFUSALS = [
    # F2: Transfer-Encoding other than exactly "chunked"
    ("F2", req("POST / HTTP/1.1\nHost: a\nTransfer-Encoding: gzip\n"), 501),
    ("F2", req("POST / HTTP/1.1\nHost: a\nTransfer-Encoding: identity\n"), 501),
    ("F2", req("POST / HTTP/1.1\nHost: a\nTransfer-Encoding: x\n"), 501),
    ("F2", req("POST / HTTP/1.1\nHost: a\nTransfer-Encoding: gzip, chunked\n", b"0\r\n\r\n"), 501),
    # (llhttp refuses a repeated "chunked" itself, before the head is complete)
    ("F2", req("POST / HTTP/1.1\nHost: a\nTransfer-Encoding: chunked, chunked\n", b"0\r\n\r\n"),
     400),
    ("F2", req("POST / HTTP/1.1\nHost: a\nTransfer-Encoding: chunked\nTransfer-Encoding: chunked\n",
               b"0\r\n\r\n"), 400),
    ("F2", req("POST / HTTP/1.1\nHost: a\nTransfer-Encoding: chunked\t\n", b"0\r\n\r\n"), 400),
    # F3
    ("F3", req("POST / HTTP/1.1\nHost: a\nContent-Length: 3\nTransfer-Encoding: chunked\n"), 400),
    # F4
    ("F4", req("POST / HTTP/1.0\nHost: a\nTransfer-Encoding: chunked\n", b"0\r\n\r\n"), 400),
    # F5
    ("F5", req("POST / HTTP/1.1\nHost: a\nContent-Length: 3\nContent-Length: 3\n", b"abc"), 400),
    ("F5", req("POST / HTTP/1.1\nHost: a\nContent-Length: +3\n", b"abc"), 400),
    ("F5", req("POST / HTTP/1.1\nHost: a\nContent-Length: 3x\n", b"abc"), 400),
    ("F5", req("POST / HTTP/1.1\nHost: a\nContent-Length: 11 \n"), 413),
    # H1
    ("H1", req("GET * HTTP/1.1\nHost: a\n"), 400),
    ("H1", req("GET ftp://a/b HTTP/1.1\nHost: a\n"), 400),
    ("H1", req("GET http://u@a/b HTTP/1.1\nHost: a\n"), 400),
    # H2, H3
    ("H2", req("GET / HTTP/1.1\n"), 400),
    ("H2", req("GET / HTTP/1.1\nHost: a\nHost: b\n"), 400),
    ("H3", req("GET / HTTP/1.1\nHost: \n"), 400),
    ("H3", req("GET / HTTP/1.1\nHost: a b\n"), 400),
    ("H3", req("GET / HTTP/1.1\nHost: evil.com@x\n"), 400),
    ("H3", req("GET / HTTP/1.1\nHost: x/y\n"), 400),
    ("H3", req("GET / HTTP/1.1\nHost: a:80x\n"), 400),
    ("H3", req("GET http://good.test/ HTTP/1.1\nHost: a b\n"), 400),
    # V1
    ("V1", req("GET / HTTP/2.0\nHost: a\n"), 505),
    ("V1", req("GET / HTTP/0.9\nHost: a\n"), 505),
    ("V1", req("GET / HTTP/1.2\nHost: a\n"), 400),  # llhttp refuses it itself
    # M1, M2
    ("M1", req("TRACE / HTTP/1.1\nHost: a\n"), 405),
    ("M2", req("CONNECT a:443 HTTP/1.1\nHost: a\n"), 405),
    # C3
    ("C3", req("GET / HTTP/1.1\nHost: a\nUpgrade: websocket\nConnection: Upgrade\n"
               "Content-Length: 5\n"), 400),
    ("C3", req("GET / HTTP/1.1\nHost: a\nUpgrade: h2c\nConnection: Upgrade\nContent-Length: 5 \n"),
     400),
    ("C3", req("GET / HTTP/1.1\nHost: a\nUpgrade: websocket\nConnection: Upgrade\n"
               "Transfer-Encoding: chunked\n"), 400),
]


@pytest.mark.parametrize("rule,raw,status", REFUSALS, ids=[f"{r[0]}-{i}" for i, r in
                                                        enumerate(REFUSALS)])
def test_refused(rule: str, raw: bytes, status: int) -> None:
    assert refused(raw, RequestLimits(max_body_size=10)) == status


def test_f2_trailing_whitespace_and_case_are_still_chunked() -> None:
    for value in ("chunked ", "CHUNKED", " Chunked"):
        (head,) = parse_heads(req(f"POST / HTTP/1.1\nHost: a\nTransfer-Encoding: {value}\n",
                                  b"0\r\n\r\n"))
        assert head.framing == CHUNKED and head.has_body


def test_f5_f6_framing() -> None:
    (head,) = parse_heads(req("POST / HTTP/1.1\nHost: a\nContent-Length: 3 \n", b"abc"))
    assert (head.framing, head.content_length, head.has_body) == (LENGTH, 3, True)
    (head,) = parse_heads(req("POST / HTTP/1.1\nHost: a\nContent-Length: 0\n"))
    assert (head.framing, head.content_length, head.has_body) == (LENGTH, 0, False)
    (head,) = parse_heads(req("GET / HTTP/1.1\nHost: a\n"))
    assert (head.framing, head.has_body) == (NO_BODY, False)


def test_h1_absolute_form_authority_replaces_host() -> None:
    (head,) = parse_heads(req("GET http://Good.test:8080/p/q?x=1 HTTP/1.1\nHost: evil.test\n"))
    assert (head.host, head.host_field, head.path, head.query) == (
        b"Good.test:8080", b"evil.test", b"/p/q", b"?x=1")
    (head,) = parse_heads(req("GET https://good.test HTTP/1.1\nHost: evil.test\n"))
    assert (head.host, head.path) == (b"good.test", b"/")


def test_h2_http10_may_omit_host() -> None:
    (head,) = parse_heads(req("GET / HTTP/1.0\n"))
    assert head.host is None and not head.http11 and not head.keep_alive


@pytest.mark.parametrize("host,ok", [
    (b"a", True), (b"example.com:8000", True), (b"[::1]:80", True), (b"10.0.0.1", True),
    (b"xn--bcher-kva.example", True), (b"a_b", True),
    (b"", False), (b"a b", False), (b"a@b", False), (b"a/b", False), (b"a\\b", False),
    (b"[::1", False), (b"a:b", False),
])
def test_h3_valid_host(host: bytes, ok: bool) -> None:
    assert valid_host(host) is ok


def test_m1_trace_when_allowed() -> None:
    (head,) = parse_heads(req("TRACE / HTTP/1.1\nHost: a\n"), RequestLimits(allow_trace=True))
    assert head.method == "TRACE"


def test_c1_c2_keep_alive_and_hop_names() -> None:
    (head,) = parse_heads(req("GET / HTTP/1.1\nHost: a\nConnection: close, X-Secret\n"))
    assert not head.keep_alive and head.hop_names == frozenset({b"x-secret"})
    (head,) = parse_heads(req("GET / HTTP/1.0\nHost: a\nConnection: keep-alive\n"))
    assert head.keep_alive and not head.http11 and head.hop_names is None


def _version_verdict(raw: bytes, *, opening: bool, split: int = 0) -> object:
    """What the reader decides about the first head's version: (http11, keep_alive, hop
    names) or the refusal status."""
    try:
        head = parse_heads(raw, opening=opening, split=split)[0]
    except httptools.HttpParserCallbackError as exc:
        assert isinstance(exc.__context__, RequestRefused)
        return exc.__context__.status
    except httptools.HttpParserError:
        return 400
    return head.http11, head.keep_alive, head.hop_names


@pytest.mark.parametrize("line", [
    "GET / HTTP/1.1", "GET / HTTP/1.0", "GET / HTTP/2.0", "GET / HTTP/0.9",
    "GET /a?b=1 HTTP/1.1", "POST /x HTTP/1.0", "OPTIONS * HTTP/1.1",
])
@pytest.mark.parametrize("connection", [
    None, "close", "keep-alive", "Close", "Keep-Alive", "close, X-Secret", "upgrade", "x-a",
])
@pytest.mark.parametrize("prefix", ["", "\r\n"])
def test_v1_version_from_the_opening_bytes_matches_llhttp(line: str, connection: str | None,
                                                           prefix: str) -> None:
    """The version read where the first request line starts (the client connection's first
    bytes) is the one llhttp reports, for every version and Connection combination; a
    leading CRLF or a request line split over two reads falls back to asking llhttp."""
    fields = "Host: a\n" + (f"Connection: {connection}\n" if connection else "")
    raw = prefix.encode() + req(f"{line}\n{fields}")
    expected = _version_verdict(raw, opening=False)
    assert _version_verdict(raw, opening=True) == expected
    for cut in (3, len(prefix) + len(line) - 2, len(prefix) + len(line) + 1):
        assert _version_verdict(raw, opening=True, split=cut) == expected


@pytest.mark.parametrize("first_fields", ["", "Connection: keep-alive\n"])
def test_v1_the_opening_bytes_serve_the_first_head_only(first_fields: str) -> None:
    """A pipelined second head (same method and target, another version) in the same first
    read is never read against the first request line."""
    heads = parse_heads(req(f"GET /a HTTP/1.1\nHost: a\n{first_fields}")
                        + req("GET /a HTTP/1.0\nHost: a\nConnection: keep-alive\n"))
    assert [h.http11 for h in heads] == [True, False]


def test_c3_websocket_only() -> None:
    (ws,) = parse_heads(req("GET / HTTP/1.1\nHost: a\nUpgrade: WebSocket\nConnection: Upgrade\n"))
    assert ws.websocket
    heads = parse_heads(req("GET / HTTP/1.1\nHost: a\nUpgrade: h2c\nConnection: Upgrade\n"))
    assert not heads[0].websocket
    # The Upgrade list is every field's tokens (found by the fuzz test: the decision read
    # the last field while the upstream head copied the first).
    for offered, websocket in [("Upgrade: h2c\nUpgrade: websocket", True),
                               ("Upgrade: websocket\nUpgrade: h2c", True),
                               ("Upgrade: h2c, WebSocket", True),
                               ("Upgrade: websocketx", False),
                               ("Upgrade: h2c\nUpgrade: x-websocket", False)]:
        (head,) = parse_heads(req(f"GET / HTTP/1.1\nHost: a\n{offered}\nConnection: Upgrade\n"))
        assert head.websocket is websocket, offered


def test_l1_limits() -> None:
    limits = RequestLimits(max_request_line=20, max_header_size=100, max_header_count=3)
    assert refused(req("GET /" + "a" * 20 + " HTTP/1.1\nHost: a\n"), limits) == 414
    assert refused(req("GET / HTTP/1.1\nHost: a\nX: " + "v" * 100 + "\n"), limits) == 431
    assert refused(req("GET / HTTP/1.1\nHost: a\nA: 1\nB: 2\nC: 3\n"), limits) == 431
    assert refused(req("GET / HTTP/1.1\nHost: a\nA: 1\nB: 2\n"), limits) == 0


def test_l2_underscores() -> None:
    raw = req("GET / HTTP/1.1\nHost: a\nX_Forwarded_For: 1.2.3.4\nTransfer_Encoding: chunked\n")
    (head,) = parse_heads(raw)
    assert [n for _, n, _ in head.headers] == [b"Host"] and head.framing == NO_BODY
    (head,) = parse_heads(raw, RequestLimits(underscores=True))
    assert [n for _, n, _ in head.headers] == [b"Host", b"X_Forwarded_For", b"Transfer_Encoding"]
    assert head.framing == NO_BODY  # an underscored name never frames anything


def test_l3_expect() -> None:
    (head,) = parse_heads(req("PUT / HTTP/1.1\nHost: a\nExpect: 100-Continue\nContent-Length: 1\n"))
    assert head.expect_continue


def test_pipelined_heads_and_size() -> None:
    raw = req("GET /a HTTP/1.1\nHost: a\n") + req("GET /b?c HTTP/1.1\nHost: a\n")
    a, b = parse_heads(raw)
    assert (a.path, b.path, b.query) == (b"/a", b"/b", b"?c")
    assert a.size + b.size == len(raw)  # Kong's $request_length: the head as received
