"""Edge security (issue 9): nothing reaches a backend that the gateway did not parse and
frame itself. Raw-socket regression tests against a real fastgw process in front of the
recording backend (tests/support/recorder.py), which keeps every byte it receives.

Every finding of issue 9 and every rule of the edge spec has a test here. The attacker's
bytes are shared with `python -m bench.edge_probe` (tests/support/edge_probes.py), which
sends the same probes to nginx.

"Nothing reaches a backend" is checked with a sentinel request (tests/support/edge.py).
The module's gateway starts every test with a warm upstream pool (a head written at once
only reaches a backend through an idle pooled connection); the tests that need the pool
cold (bytes pipelined after an upgrade) or other settings start their own gateway.

New node settings are set through their `FASTGW_<NAME>` variables, so that a gateway that
does not know them yet still starts and the test fails for what it tests.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

from tests.support.edge import (
    Edge,
    T,
    assert_kong_error,
    assert_nothing_upstream,
    assert_only_framed,
    error_problems,
    running_edge,
    upstream_problems,
)
from tests.support.edge_probes import (
    CAPTURE,
    REJECTED,
    SIZED_PAYLOAD,
    SMUGGLED,
    SPILLED_PAYLOAD,
    VICTIM,
    Probe,
    chunked,
    probe_named,
    request,
    websocket_head,
)
from tests.support.rawclient import Outcome, RawConnection, converse
from tests.support.recorder import default_reply, reply

pytestmark = pytest.mark.timeout(90)

@pytest.fixture(scope="module")
def module_edge() -> Iterator[Edge]:
    with running_edge() as edge:
        yield edge


@pytest.fixture
def edge(module_edge: Edge) -> Edge:
    """The module's gateway, its backend reset (connections closed, records dropped), then
    one request: the gateway has dropped its stale pooled connections and holds one idle
    connection, so that a head the gateway would write at once reaches the backend."""
    backend = module_edge.backend
    backend.websocket = "refuse"
    backend.delay = 0.0
    backend.respond = default_reply
    backend.reset()
    module_edge.warm()
    return module_edge


@pytest.fixture
def own_edge() -> Iterator[Any]:
    """A factory of fresh gateways (own recorder, cold pool, own settings)."""
    with ExitStack() as stack:
        yield lambda **kwargs: stack.enter_context(running_edge(**kwargs))


# -- every error: Kong's JSON, Connection: close, closed, nothing upstream (findings 4-7) ---


@pytest.mark.parametrize("probe", REJECTED, ids=lambda p: f"{p.name}(finding-{p.finding})")
def test_rejected_with_an_error_and_nothing_upstream(edge: Edge, probe: Probe) -> None:
    mark = edge.backend.mark()
    problems = []
    with RawConnection(edge.port, timeout=T) as conn:
        conn.send_segments(probe.connections[0])
        outcome = conn.read(responses=1)
        if not outcome.responses:
            problems.append(f"no answer within {T} s: {outcome.describe()}")
        else:
            problems += error_problems(outcome.responses[0], probe.statuses)
            if outcome.responses[0].closes() and conn.closed_within(2 * T) == "open":
                problems.append("the connection stayed open after Connection: close")
    problems += upstream_problems(edge.after(mark))
    assert not problems, "\n".join(problems)


# -- finding 1: Transfer-Encoding: "chunked " smuggles a request -----------------------------


def test_te_chunked_trailing_space_is_one_framed_request(edge: Edge) -> None:
    """llhttp decodes `chunked ` as chunked; so must the gateway: one request upstream, the
    decoded body sent with the Content-Length of a buffered body, never a second request."""
    mark = edge.backend.mark()
    outcome = converse(edge.port, [request(b"POST", b"/api/atelier/smuggle",
                                           [b"Transfer-Encoding: chunked "], chunked(SMUGGLED))])
    assert outcome.statuses == [200], outcome.describe()
    activity = edge.after(mark)
    assert_only_framed(activity)
    (upstream,) = activity.requests
    assert upstream.target == "/api/atelier/smuggle" and upstream.body == SMUGGLED
    assert upstream.all("content-length") == [str(len(SMUGGLED))]
    assert upstream.all("transfer-encoding") == []


def test_te_uppercase_chunked_is_a_valid_chunked_request(edge: Edge) -> None:
    mark = edge.backend.mark()
    body = chunked(b"hello ", b"world")
    outcome = converse(edge.port, [request(b"POST", b"/api/atelier/upper",
                                           [b"Transfer-Encoding: CHUNKED"], body)])
    assert outcome.statuses == [200], outcome.describe()
    activity = edge.after(mark)
    assert_only_framed(activity)
    (upstream,) = activity.requests
    assert upstream.body == b"hello world" and upstream.all("content-length") == ["11"]


def test_content_length_with_trailing_space_is_reframed(edge: Edge) -> None:
    """`Content-Length: 5 ` is a valid length (OWS is trimmed); upstream, the gateway
    writes its own `Content-Length: 5`, never the client's spelling."""
    mark = edge.backend.mark()
    outcome = converse(edge.port, [request(b"POST", b"/api/atelier/ows",
                                           [b"Content-Length: 5 "], b"hello")])
    assert outcome.statuses == [200], outcome.describe()
    activity = edge.after(mark)
    assert_only_framed(activity)
    (upstream,) = activity.requests
    assert upstream.body == b"hello" and upstream.all("content-length") == ["5"]


def test_smuggled_request_cannot_capture_the_next_clients_request(edge: Edge) -> None:
    """The attacker's body holds an incomplete `POST /capture` (Content-Length: 300): if
    it reached the backend as a request, it would wait on the pooled connection and take
    the next user's request, credentials included, as its body."""
    mark = edge.backend.mark()
    attacker = converse(edge.port, [request(b"POST", b"/api/atelier/smuggle",
                                            [b"Transfer-Encoding: chunked "], chunked(CAPTURE))])
    assert attacker.statuses == [200], attacker.describe()
    victim = converse(edge.port, [VICTIM], timeout=T)
    activity = edge.after(mark)
    captured = [r for r in activity.requests if b"victim-secret" in r.body]
    assert captured == [], f"the victim's request was captured: {captured}"
    assert victim.statuses == [200], f"the victim's request: {victim.describe()}"
    victim_body = victim.first.json() if victim.first is not None else {}
    assert victim_body.get("target") == "/api/atelier/victim", (
        f"the victim got the answer to another request: {victim_body}")
    assert_only_framed(activity)
    (arrived,) = [r for r in activity.requests if r.target == "/api/atelier/victim"]
    assert arrived.header("cookie") == "session=victim-secret" and arrived.complete


def test_connection_field_cannot_remove_the_framing(edge: Edge) -> None:
    """`Connection: Content-Length` names a hop-by-hop field; the gateway drops such fields,
    but the framing it writes is its own, so the body still arrives as this request's."""
    mark = edge.backend.mark()
    outcome = converse(edge.port, [request(
        b"POST", b"/api/atelier/hop",
        [b"Connection: Content-Length", b"Content-Length: %d" % len(SMUGGLED)], SMUGGLED)])
    assert outcome.statuses == [200], outcome.describe()
    activity = edge.after(mark)
    assert_only_framed(activity)
    (upstream,) = activity.requests
    assert upstream.body == SMUGGLED and upstream.all("content-length") == [str(len(SMUGGLED))]


# -- finding 2: bytes after a refused upgrade are never forwarded raw ------------------------


@pytest.mark.parametrize("pool", ["cold", "warm"])
@pytest.mark.parametrize("second", ["unrouted", "routable"])
def test_refused_websocket_upgrade_never_forwards_the_next_request(
        own_edge: Any, edge: Edge, pool: str, second: str) -> None:
    """The backend answers the handshake with 200. The client gets that 200; the request
    pipelined behind the handshake is then either parsed by the gateway (and, if routed,
    reaches the backend framed by it) or the connection closes; `/admin/secret` (routed
    nowhere) never reaches the backend."""
    target = edge if pool == "warm" else own_edge()  # cold: a fresh gateway, empty pool
    mark = target.backend.mark()
    pipelined = SMUGGLED if second == "unrouted" else (
        b"GET /api/atelier/second HTTP/1.1\r\nHost: edge.test\r\n\r\n")
    with RawConnection(target.port, timeout=T) as conn:
        conn.send(websocket_head(b"/api/atelier/ws") + pipelined)
        outcome = conn.read(responses=2)
        if len(outcome.responses) < 2:
            conn.closed_within(T)
    assert outcome.statuses[:1] == [200], outcome.describe()
    assert len(outcome.responses) == 2 or outcome.ending != "open", (
        f"neither answered nor closed: {outcome.describe()}")
    activity = target.after(mark)
    assert_only_framed(activity)
    if second == "routable" and len(outcome.responses) == 2:
        assert [r.target for r in activity.requests][-1:] == ["/api/atelier/second"]


def test_upgrade_offering_websocket_and_another_protocol_relays_websocket_only(
        edge: Edge) -> None:
    """Found by the fuzz test: `Upgrade: h2c` then `Upgrade: websocket` was decided on the
    last field (a websocket handshake) but relayed with the first (`Upgrade: h2c`), so the
    backend was offered a protocol the gateway would not recognise. It is now offered
    websocket alone."""
    mark = edge.backend.mark()
    outcome = converse(edge.port, [
        b"GET /api/atelier/v?q=1 HTTP/1.1\r\nHost: edge.test\r\nHTTP2-Settings: AAMAAABkAAQ\r\n"
        b"Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nUpgrade: websocket\r\n\r\n"])
    assert outcome.statuses[:1] == [200], outcome.describe()
    activity = edge.after(mark)
    assert_only_framed(activity)
    (upstream,) = activity.requests
    assert upstream.all("upgrade") == ["websocket"] and upstream.all("connection") == ["upgrade"]


# -- finding 3: bytes after an upgrade request are bounded -----------------------------------

STREAM_MIB = 256
FRAME = b"\x82\xff" + (1 << 62).to_bytes(8, "big") + b"\x00\x00\x00\x00"  # one huge frame


@pytest.mark.parametrize("case", ["unrouted", "content-length-1"])
def test_bytes_after_an_upgrade_request_are_bounded(own_edge: Any, case: str) -> None:
    """Streaming 256 MiB after an upgrade request grows the worker by less than ~20 MiB,
    and the connection ends (the bytes wait, reading paused, for a 101 that never comes:
    the backend holds the handshake unanswered)."""
    target = own_edge()
    target.backend.respond = lambda request: None if "ws" in request.target else reply(200)
    head = (websocket_head(b"/admin/ws") if case == "unrouted"
            else websocket_head(b"/api/atelier/ws", b"Content-Length: 1"))
    target.assert_serving()
    rss_before, hwm_before = target.rss_kb()
    block = FRAME + bytes((1 << 20) - len(FRAME))
    sent = 0
    with RawConnection(target.port, timeout=T) as conn:
        if conn.send(head):
            for _ in range(STREAM_MIB):
                if not conn.send(block, timeout=T):
                    break  # blocked (reading paused), or the gateway closed
                sent += 1
        rss_after, hwm_after = target.rss_kb()
        ending = conn.outcome.ending if conn.outcome.ending != "open" else conn.closed_within(2 * T)
    growth_mib = max(rss_after - rss_before, hwm_after - hwm_before) / 1024
    assert growth_mib < 20, f"worker grew by {growth_mib:.0f} MiB after {sent} MiB were sent"
    assert ending in ("close", "reset"), f"connection still open after {sent} MiB"
    target.assert_serving()


# -- finding 5: an upgrade with a body is refused at once (REJECTED: upgrade-*) --------------
# -- finding 6: slow clients, limits, lingering close ----------------------------------------

SLOW_CLIENTS = 100


def test_slow_uploads_hold_no_backend_connection(edge: Edge) -> None:
    """100 clients each send a POST head, then their body at a trickle: with request
    buffering on (the default) not one backend connection is opened, not one byte sent,
    until a body is complete; then each arrives whole, with its Content-Length."""
    mark = edge.backend.mark()
    size, step = 48, 12
    bodies = [b"%048d" % i for i in range(SLOW_CLIENTS)]
    conns = [RawConnection(edge.port, timeout=T) for _ in range(SLOW_CLIENTS)]
    try:
        for conn in conns:
            conn.send(b"POST /api/atelier/slow HTTP/1.1\r\nHost: edge.test\r\n"
                      b"Content-Length: %d\r\n\r\n" % size)
        for offset in range(0, size - step, step):
            for conn, body in zip(conns, bodies):
                conn.send(body[offset:offset + step])
            time.sleep(0.3)  # a trickle: the gateway has time to (wrongly) connect
            held = edge.backend.since(mark)
            assert held.connections == 0 and held.requests == [] and held.received == 0, (
                f"{held.connections} backend connections, {len(held.requests)} requests "
                f"while {SLOW_CLIENTS} bodies were incomplete")
        for conn, body in zip(conns, bodies):
            conn.send(body[size - step:])
        outcomes = [conn.read(responses=1) for conn in conns]
    finally:
        for conn in conns:
            conn.close()
    assert [o.statuses for o in outcomes] == [[200]] * SLOW_CLIENTS
    activity = edge.after(mark)
    assert_only_framed(activity)
    assert sorted(r.body for r in activity.requests) == bodies
    assert all(r.all("content-length") == [str(size)] for r in activity.requests)


def test_streamed_chunked_body_is_chunked_upstream_also_when_spilled(edge: Edge) -> None:
    """`request_buffering: false` with a chunked body: the gateway streams it chunked. More
    than client_body_buffer_size of it arriving with the head (kept in a temp file until
    the connection is ready) must go out chunked as well: written as is, the decoded body
    would be the framing, and a body starting with `0\r\n\r\n` would end the request
    there and make the rest a request of the attacker's (found by test_fuzz)."""
    mark = edge.backend.mark()
    outcome = converse(edge.port, probe_named("stream-spilled-chunked").connections[0], pause=0.05)
    assert outcome.statuses == [200], outcome.describe()
    activity = edge.after(mark)
    assert_only_framed(activity)
    (upstream,) = activity.requests
    assert upstream.target == "/api/stream/spill" and upstream.body == SPILLED_PAYLOAD


def test_streamed_sized_body_arrives_whole_also_when_spilled(edge: Edge) -> None:
    """The same with a Content-Length body: the part kept in a temp file before the
    connection was ready goes first, then the rest as it comes, and the client gets its
    answer (not a wait for the backend's read timeout)."""
    mark = edge.backend.mark()
    outcome = converse(edge.port, probe_named("stream-spilled-length").connections[0], pause=0.05,
                       timeout=T)
    assert outcome.statuses == [200], outcome.describe()
    activity = edge.after(mark)
    assert_only_framed(activity)
    (upstream,) = activity.requests
    assert upstream.body == SIZED_PAYLOAD and upstream.complete


def test_413_lingers_so_an_uploading_client_reads_it(edge: Edge) -> None:
    """A client that keeps uploading after its over-limit Content-Length reads the 413
    (the gateway reads and discards the rest: lingering close), not a connection reset."""
    mark = edge.backend.mark()
    upload = 4 << 20
    with RawConnection(edge.port, timeout=T) as conn:
        conn.send(b"POST /api/atelier/upload HTTP/1.1\r\nHost: edge.test\r\n"
                  b"Content-Length: %d\r\n\r\n" % upload)
        block = b"u" * 65536
        for _ in range(upload // len(block)):
            if not conn.send(block):
                break
        outcome = conn.read(responses=1)
    assert outcome.send_error is None, f"the upload was cut: {outcome.send_error}"
    assert outcome.responses, f"no 413 for the uploading client: {outcome.describe()}"
    assert_kong_error(outcome.responses[0], {413})
    assert_nothing_upstream(edge.after(mark))


def test_body_over_buffer_size_spills_to_a_temp_file(own_edge: Any, tmp_path: Path) -> None:
    """A body bigger than client_body_buffer_size waits in a file under
    client_body_temp_path while it arrives (no backend connection meanwhile), reaches the
    backend intact with a Content-Length, and the file is removed."""
    temp = tmp_path / "bodies"
    temp.mkdir()
    target = own_edge(env={"FASTGW_CLIENT_BODY_BUFFER_SIZE": "1024",
                           "FASTGW_CLIENT_BODY_TEMP_PATH": str(temp)})
    mark = target.backend.mark()
    body = bytes(range(256)) * 200  # 51200 bytes, under max_body_size
    half = len(body) // 2
    with RawConnection(target.port, timeout=T) as conn:
        conn.send(b"POST /api/atelier/spill HTTP/1.1\r\nHost: edge.test\r\n"
                  b"Content-Length: %d\r\n\r\n" % len(body) + body[:half])
        deadline = time.monotonic() + T
        spilled: list[Path] = []
        while not spilled and time.monotonic() < deadline:
            spilled = [p for p in temp.rglob("*") if p.is_file() and p.stat().st_size > 1024]
            time.sleep(0.05)
        assert spilled, f"no body file over 1024 bytes in {temp} during the upload"
        assert target.backend.since(mark).connections == 0
        conn.send(body[half:])
        outcome = conn.read(responses=1)
    assert outcome.statuses == [200], outcome.describe()
    activity = target.after(mark)
    assert_only_framed(activity)
    (upstream,) = activity.requests
    assert upstream.body == body and upstream.all("content-length") == [str(len(body))]
    deadline = time.monotonic() + T
    while any(p.is_file() for p in temp.rglob("*")) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not [p for p in temp.rglob("*") if p.is_file()], "body file left behind"


def test_request_buffering_off_streams_the_body(edge: Edge) -> None:
    """`request_buffering: false` on the route: the backend gets the head before the
    body is complete (today's streaming, kept for routes that need it)."""
    mark = edge.backend.mark()
    with RawConnection(edge.port, timeout=T) as conn:
        conn.send(b"POST /api/stream/up HTTP/1.1\r\nHost: edge.test\r\nContent-Length: 20\r\n"
                  b"\r\n0123456789")
        assert edge.backend.wait_for(lambda: len(edge.backend.since(mark).requests) == 1, T), (
            "the head did not reach the backend before the body was complete")
        assert not edge.backend.since(mark).requests[0].complete
        conn.send(b"abcdefghij")
        assert conn.read(responses=1).statuses == [200]
    activity = edge.after(mark)
    assert_only_framed(activity)
    assert activity.requests[0].body == b"0123456789abcdefghij"


# -- finding 7: lax parsing (the rest is in REJECTED) ----------------------------------------

UNDERSCORED = request(b"POST", b"/api/atelier/underscore",
                      [b"Content-Length: 3", b"Transfer_Encoding: chunked",
                       b"X_Forwarded_For: 6.6.6.6", b"Foo_Bar: 1"], b"abc")


def test_underscored_fields_are_dropped_by_default(edge: Edge) -> None:
    mark = edge.backend.mark()
    assert converse(edge.port, [UNDERSCORED]).statuses == [200]
    activity = edge.after(mark)
    assert_only_framed(activity)  # includes: no field name with "_"
    (upstream,) = activity.requests
    assert upstream.body == b"abc"
    assert "6.6.6.6" not in (upstream.header("x-forwarded-for") or "")


def test_underscored_fields_pass_when_allowed(own_edge: Any) -> None:
    target = own_edge(env={"FASTGW_UNDERSCORES_IN_HEADERS": "true"})
    mark = target.backend.mark()
    outcome = converse(target.port, [request(b"GET", b"/api/atelier/u", [b"Foo_Bar: 1"])])
    assert outcome.statuses == [200]
    (upstream,) = target.after(mark).requests
    assert upstream.all("Foo_Bar") == ["1"]


def test_absolute_form_authority_replaces_host(edge: Edge) -> None:
    """RFC 9112 §3.2.2: the target's authority wins over Host, for routing and upstream
    (the route has preserve_host, so the backend sees the client's authority)."""
    mark = edge.backend.mark()
    outcome = converse(edge.port, [b"GET http://good.test/p HTTP/1.1\r\nHost: evil.test\r\n\r\n"])
    assert outcome.statuses == [200], outcome.describe()
    activity = edge.after(mark)
    assert_only_framed(activity)
    (upstream,) = activity.requests
    assert upstream.target == "/p" and upstream.all("host") == ["good.test"]
    assert b"evil.test" not in upstream.raw_head


def test_trace_is_proxied_when_allowed(own_edge: Any) -> None:
    target = own_edge(env={"FASTGW_ALLOW_TRACE": "true"})
    mark = target.backend.mark()
    outcome = converse(target.port, [b"TRACE /api/atelier/t HTTP/1.1\r\nHost: edge.test\r\n\r\n"])
    assert outcome.statuses == [200], outcome.describe()
    (upstream,) = target.after(mark).requests
    assert upstream.method == "TRACE"


def test_keepalive_requests_closes_the_nth_response(own_edge: Any) -> None:
    target = own_edge(env={"FASTGW_KEEPALIVE_REQUESTS": "3"})
    with RawConnection(target.port, timeout=T) as conn:
        for n in (1, 2, 3):
            conn.send(b"GET /api/atelier/k HTTP/1.1\r\nHost: edge.test\r\n\r\n")
            outcome: Outcome = conn.read(responses=n)
            assert outcome.statuses == [200] * n, outcome.describe()
            assert outcome.responses[-1].closes() == (n == 3), outcome.responses[-1]
        assert conn.closed_within(T) == "close"
    target.assert_serving()


def test_worker_pid_checks_see_a_respawn(own_edge: Any) -> None:
    """The harness itself: the sentinel check notices a replaced worker."""
    target = own_edge()
    target.assert_serving()
    os.kill(target.worker, 9)
    deadline = time.monotonic() + 10
    while len(target.gw.worker_pids()) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    with pytest.raises(AssertionError, match="worker was replaced"):
        target.assert_serving()
