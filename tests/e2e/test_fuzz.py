"""Fuzz test of the gateway's edge (issue 9): generated and mutated requests, split at
random points and pipelined, sent to a live gateway in front of the recording backend.

Each example is a batch: one or two client connections, each carrying one to three
requests drawn from a grammar of valid requests and the shapes attackers use (framing
fields with odd whitespace, case and duplicates, Content-Length with Transfer-Encoding,
bad chunk sizes, obs-fold, bare LF, NUL, upgrade fields, absolute-form and odd targets,
odd versions, long lines, underscores, hop-by-hop lists naming framing fields), then
mutated at the byte level. The bytes go out in random segments as separate packets; the
client half-closes and reads until the gateway closes.

Invariants, after every batch:
- no crash: the worker pid is unchanged and the gateway is alive;
- no hang: every connection gets its responses and a close within HANG seconds;
- nothing unframed: every request at the backend carries the gateway's own head
  (tests/support/recorder.py: proxy_head_problems), the backend parsed every byte it
  got, and no request for the unrouted /admin/* reached it;
- nothing captured: a normal request on a new connection (carrying a secret cookie) gets
  200 and arrives as its own request, never inside another request's body.

Time bound: FUZZ_SECONDS (90 s by default, about 2 minutes with startup in CI), as rounds
of ROUND examples until the budget is spent. A longer run on demand:

    FASTGW_FUZZ_SECONDS=1800 .venv/bin/python -m pytest tests/e2e/test_fuzz.py

FASTGW_FUZZ_SHRINK=1 lets hypothesis shrink a failing batch to a minimal one (slower: a
hang costs HANG seconds per shrink step); by default the first failing batch is reported
as generated.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from tests.support.edge import Edge, framing_problems, running_edge
from tests.support.edge_probes import BODY_LIMIT, CAPTURE, SMUGGLED, chunked
from tests.support.rawclient import RawConnection

FUZZ_SECONDS = float(os.environ.get("FASTGW_FUZZ_SECONDS", "90"))
SHRINK = os.environ.get("FASTGW_FUZZ_SHRINK") == "1"
ROUND = 100  # examples per hypothesis run; runs repeat until FUZZ_SECONDS are spent
HANG = 10.0  # a connection that gets neither its responses nor a close by then hangs
SECRET = b"fuzz-victim-secret"
SENTINEL = (b"GET /api/atelier/__sentinel HTTP/1.1\r\nHost: edge.test\r\n"
            b"Cookie: session=" + SECRET + b"\r\n\r\n")

pytestmark = pytest.mark.timeout(int(FUZZ_SECONDS) + 240)

# -- the grammar -------------------------------------------------------------------------
# A request is a valid one with zero to three faults injected (most often exactly one, so
# that the gateway's acceptance of each odd shape on its own gets exercised), then
# rendered; the "mutate" fault works on the rendered bytes.

METHODS = [b"GET", b"POST", b"PUT", b"DELETE", b"OPTIONS", b"PATCH", b"HEAD"]
ODD_METHODS = [b"TRACE", b"CONNECT", b"PRI", b"get", b"GE_T", b"PURGE", b"G\x00T"]
TARGETS = [b"/api/atelier/", b"/api/atelier/v?q=1", b"/api/stream/v"]
ODD_TARGETS = [b"/admin/secret", b"http://good.test/p", b"http://edge.test/api/atelier/abs",
               b"HTTP://EDGE.TEST/x", b"*", b"edge.test:443", b"/api/atelier/%2e%2e/admin",
               b"/api/atelier/a b", b"/api/atelier/\x00", b"/api/atelier/" + b"a" * 9000]
ODD_VERSIONS = [b"HTTP/1.0", b"HTTP/0.9", b"HTTP/2.0", b"HTTP/1.2", b"HTTP/11", b"http/1.1",
                b"HTTP/1.1 ", b""]
ODD_HOSTS: list[list[bytes]] = [
    [], [b"Host: "], [b"Host: a b"], [b"Host: evil.com@x"], [b"Host: x/y"], [b"host: edge.test"],
    [b"Host:edge.test"], [b"Host: edge.test:80"], [b"Host: good.test"], [b"Host: [::1]"],
    [b"Host: edge.test", b"Host: other.test"], [b"Host: edge.test", b"Host: edge.test"],
    [b"Host: edge.test\t"], [b"Host : edge.test"],
]
BODIES = [b"", b"hello", SMUGGLED, CAPTURE, b"0\r\n\r\n" + SMUGGLED, b"0\r\n\r\n" + SMUGGLED + b"m" * 20000,
          b"z" * (BODY_LIMIT + 10)]  # 20 KB: over client_body_buffer_size; the last: over the limit
TE_NAMES = [b"transfer-encoding", b"TRANSFER-ENCODING", b"Transfer_Encoding",
            b"Transfer-Encoding ", b" Transfer-Encoding"]
TE_VALUES = [b"chunked ", b"CHUNKED", b"Chunked", b"chunked\t", b" chunked", b"gzip, chunked",
             b"chunked, gzip", b"chunked, chunked", b"identity", b"gzip", b"xchunked",
             b"chunked;q=1", b"", b"chunked\x00"]
CL_NAMES = [b"content-length", b"Content_Length", b"Content-Length ", b"CONTENT-LENGTH"]
EXTRAS: list[list[bytes]] = [
    [b"Upgrade: websocket", b"Connection: Upgrade", b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
     b"Sec-WebSocket-Version: 13"],
    [b"Upgrade: h2c", b"Connection: Upgrade, HTTP2-Settings", b"HTTP2-Settings: AAMAAABkAAQ"],
    [b"Upgrade: websocket"], [b"Connection: close"], [b"Connection: keep-alive, Upgrade"],
    [b"Connection: Content-Length"], [b"Connection: Transfer-Encoding"], [b"Connection: Host"],
    [b"Connection: X-Request-Id, Via"], [b"Expect: 100-continue"], [b"Expect: nonsense"],
    [b"X_Forwarded_For: 6.6.6.6"], [b"Foo_Bar: 1"], [b"X-Fold: a\r\n b"], [b"X-Fold: a\r\n\tb"],
    [b"X-Forwarded-For: 1.1.1.1"], [b"Via: 1.0 evil"], [b"X-Request-Id: ../../x"],
    [b"X-Long: " + b"l" * 40000], [b"X-F%d: %d" % (i, i) for i in range(120)],
    [b"Proxy-Connection: keep-alive"], [b"Keep-Alive: timeout=5"], [b"TE: trailers"],
    [b"Trailer: X-T"], [b"Authorization: Basic eDp5"], [b"X-Empty:"], [b"X-Nul: a\x00b"],
    [b"X-Bare-CR: a\rb"], [b": no-name"], [b"No-Colon"], [b"X-Sp ace: 1"],
]
FAULTS = ["method", "target", "version", "host", "length", "te", "chunks", "extra", "extra",
          "mutate"]


@st.composite
def chunk_encoding(draw: st.DrawFn, body: bytes) -> bytes:
    """A chunked body that is not well formed (or oddly well formed)."""
    size = len(body)
    return draw(st.sampled_from([
        b"%X\r\n%s\r\n0\r\n\r\n" % (size, body),  # upper-case hex
        b"000%x\r\n%s\r\n0\r\n\r\n" % (size, body),  # leading zeros
        b"%x;ext=\"v\"\r\n%s\r\n0\r\n\r\n" % (size, body),  # extension
        b"%x \r\n%s\r\n0\r\n\r\n" % (size, body),  # space after the size
        b"0x%x\r\n%s\r\n0\r\n\r\n" % (size, body),
        b"-%x\r\n%s\r\n0\r\n\r\n" % (size, body),
        b"ffffffffffffffffff\r\n%s\r\n0\r\n\r\n" % body,
        b"%x\n%s\n0\n\n" % (size, body),  # bare LF
        b"%x\r\n%s\r\n0\r\n" % (size, body),  # no last CRLF
        b"%x\r\n%s\r\n0\r\nX-T: 1\r\n\r\n" % (size, body),  # trailers
        b"%x\r\n%s\r\n0\r\n\r\n" % (size + 5, body),  # the size lies
        b"%x\r\n%sXX0\r\n\r\n" % (size, body),  # no CRLF after the data
    ]))


@st.composite
def http_request(draw: st.DrawFn) -> bytes:
    """A valid request with 0-3 faults injected (one, most often)."""
    faults = [draw(st.sampled_from(FAULTS)) for _ in range(draw(st.sampled_from([0, 1, 1, 1, 2, 3])))]
    method = draw(st.sampled_from(METHODS))
    target = draw(st.sampled_from(TARGETS))
    version = b"HTTP/1.1"
    hosts = [b"Host: edge.test"]
    body = draw(st.sampled_from(BODIES))
    if method in (b"GET", b"HEAD", b"OPTIONS", b"DELETE") and draw(st.booleans()):
        body = b""
    framing: list[bytes] = []
    encoded = body
    if body or method in (b"POST", b"PUT", b"PATCH"):
        if draw(st.booleans()):
            framing = [b"Content-Length: %d" % len(body)]
        else:
            framing = [b"Transfer-Encoding: chunked"]
            encoded = chunked(body)
    fields = draw(st.lists(st.sampled_from([b"Connection: keep-alive", b"Cookie: a=b",
                                            b"X-Forwarded-For: 1.1.1.1", b"Accept: */*"]),
                           max_size=2, unique=True))
    for fault in faults:
        if fault == "method":
            method = draw(st.sampled_from(ODD_METHODS))
        elif fault == "target":
            target = draw(st.sampled_from(ODD_TARGETS))
        elif fault == "version":
            version = draw(st.sampled_from(ODD_VERSIONS))
        elif fault == "host":
            hosts = draw(st.sampled_from(ODD_HOSTS))
        elif fault == "length":
            name = draw(st.sampled_from([b"Content-Length", *CL_NAMES]))
            value = draw(st.sampled_from(
                [b"%d " % len(body), b" %d" % len(body), b"+%d" % len(body), b"0%d" % len(body),
                 b"%d\t" % len(body), b"%x" % len(body), b"-1", b"99999999999999999999",
                 b"%d, %d" % (len(body), len(body)), b"%d" % (len(body) + 3)]))
            framing = draw(st.sampled_from([[name + b": " + value],
                                            [*framing, name + b": " + value]]))
            encoded = body if not framing[0].lower().startswith(b"transfer") else encoded
        elif fault == "te":
            name = draw(st.sampled_from([b"Transfer-Encoding", *TE_NAMES]))
            value = draw(st.sampled_from([b"chunked", *TE_VALUES]))
            framing = draw(st.sampled_from([[name + b": " + value],
                                            [*framing, name + b": " + value]]))
            encoded = chunked(body)
        elif fault == "chunks":
            framing = [b"Transfer-Encoding: chunked"]
            encoded = draw(chunk_encoding(body))
        elif fault == "extra":
            fields += draw(st.sampled_from(EXTRAS))
    lines = draw(st.permutations([*hosts, *framing, *fields]))
    request_line = b" ".join(p for p in (method, target, version) if p)
    data = b"\r\n".join([request_line, *lines]) + b"\r\n\r\n" + encoded
    if "mutate" in faults:
        data = draw(mutated(data))
    return data


@st.composite
def mutated(draw: st.DrawFn, data: bytes) -> bytes:
    """One or two byte-level mutations of a rendered request."""
    for _ in range(draw(st.integers(1, 2))):
        at = draw(st.integers(0, max(0, len(data) - 1)))
        kind = draw(st.sampled_from(["bare-lf", "insert", "truncate", "duplicate-line",
                                     "flip-case", "garbage"]))
        if kind == "bare-lf":
            crlf = data.find(b"\r\n", at)
            if crlf != -1:
                data = data[:crlf] + data[crlf + 1:]
        elif kind == "insert":
            data = data[:at] + draw(st.sampled_from([b"\x00", b"\r", b"\n", b" ", b"\t", b"\x7f",
                                                     b"\xff", b"\r\n"])) + data[at:]
        elif kind == "truncate":
            data = data[:at]
        elif kind == "duplicate-line":
            start = data.rfind(b"\r\n", 0, at) + 2
            end = data.find(b"\r\n", at)
            if end != -1:
                data = data[:end] + b"\r\n" + data[start:end] + data[end:]
        elif kind == "flip-case":
            data = data[:at] + data[at:at + 8].swapcase() + data[at + 8:]
        else:
            data = data[:at] + draw(st.binary(min_size=1, max_size=16)) + data[at:]
    return data


@st.composite
def connection_bytes(draw: st.DrawFn) -> list[bytes]:
    """What one client connection sends: 1-3 pipelined requests, cut into segments."""
    stream = b"".join(draw(http_request()) for _ in range(draw(st.integers(1, 3))))
    cuts = set(draw(st.lists(st.integers(0, len(stream)), max_size=5)))
    # Cuts near a head's end too: a head with part of its body in one read, the rest later.
    head_end = stream.find(b"\r\n\r\n")
    if head_end != -1 and draw(st.booleans()):
        cuts.add(min(len(stream), head_end + 4 + draw(st.integers(0, 16384))))
    ordered = sorted(cuts)
    return [stream[a:b] for a, b in zip([0, *ordered], [*ordered, len(stream)]) if b > a]


# -- the test ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fuzz_edge() -> Iterator[Edge]:
    with running_edge() as edge:
        yield edge


def run_batch(edge: Edge, connections: list[list[bytes]], pause: float) -> None:
    backend = edge.backend
    if len(backend.requests) > 2000:
        backend.reset()  # bounded memory over a long run (closes the pooled connections)
    mark = backend.mark()
    problems = []
    for segments in connections:
        with RawConnection(edge.port, timeout=HANG) as conn:
            if conn.send_segments(segments, pause):
                conn.shutdown_write()
            outcome = conn.read(None, HANG)
        if outcome.ending == "open":
            problems.append(f"hang: no close within {HANG} s after {outcome.describe()}")
    activity = edge.after(mark, SENTINEL)  # no crash; a normal request still works
    problems += framing_problems(activity)
    captured = [r for r in activity.requests if SECRET in r.body]
    if captured:
        problems.append(f"a later request was captured: {captured}")
    assert not problems, "\n".join(problems)


def test_fuzz_edge(fuzz_edge: Edge) -> None:
    phases = [Phase.explicit, Phase.generate] + ([Phase.shrink] if SHRINK else [])

    @settings(max_examples=ROUND, deadline=None, database=None, phases=phases,
              suppress_health_check=list(HealthCheck), print_blob=True)
    @given(connections=st.lists(connection_bytes(), min_size=1, max_size=2),
           pause=st.sampled_from([0.0, 0.0, 0.001, 0.01]))
    def batch(connections: list[list[bytes]], pause: float) -> None:
        run_batch(fuzz_edge, connections, pause)

    deadline = time.monotonic() + FUZZ_SECONDS
    rounds = 0
    while rounds == 0 or time.monotonic() < deadline:
        batch()
        rounds += 1
    fuzz_edge.assert_serving(SENTINEL)
