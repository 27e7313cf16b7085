"""One test per row of the exchange's transition table (dataplane.exchange.TRANSITIONS).

Each row is reached by a short scenario driven through recording transports; the test
checks that the scenario took that row and what the client got. A last test checks
that the table has no row without a scenario, and that an event a state has no row for
raises instead of being ignored.
"""

from __future__ import annotations

from typing import Any, Callable

import pytest

from fastgw.dataplane import exchange as ex_module
from fastgw.dataplane.exchange import (
    EVENT_NAMES,
    STATE_NAMES,
    TRANSITIONS,
    IllegalTransition,
)
from fastgw.dataplane.sweeper import READ, WRITE
from tests.support.transport import ProtocolHarness, atelier_config

GET = b"GET /api/atelier/ HTTP/1.1\r\nHost: gw.test\r\n\r\n"
PUT_HEAD = b"PUT /api/atelier/ HTTP/1.1\r\nHost: gw.test\r\nContent-Length: 4\r\n\r\n"
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


def harness(pooled: int = 1, **gateway: Any) -> ProtocolHarness:
    """A harness whose worker records every exchange transition (WorkerContext.trace)."""
    plugins = gateway.pop("plugins", None)
    document = atelier_config(**gateway)
    if plugins is not None:
        document["plugins"] = plugins
    h = ProtocolHarness(document, pooled=pooled)
    h.server.trace = []
    return h


def rows(h: ProtocolHarness) -> list[tuple[str, str]]:
    return [(STATE_NAMES[s], EVENT_NAMES[e]) for s, e in h.server.trace or ()]


def failing_connect(h: ProtocolHarness, times: int) -> None:
    """The next `times` new connections fail (connection refused)."""
    real = h.connect_hook
    left = [times]

    async def connect(pool: Any) -> Any:
        if left[0] > 0:
            left[0] -= 1
            raise ConnectionRefusedError("refused")
        return await real(pool)

    h.connect_hook = connect


def no_retries(h: ProtocolHarness) -> None:
    for plan in h.server.snapshot.route_plans.values():
        plan.retries = 0


def drop_idle(h: ProtocolHarness) -> None:
    for conn in h.backends:
        conn.pool.idle.clear()


# -- scenarios: each returns what the client got ------------------------------------------

def plain_get(h: ProtocolHarness) -> bytes:
    h.send(GET)
    h.reply(OK)
    return h.client_bytes()


def buffered_put(h: ProtocolHarness) -> bytes:
    h.send(PUT_HEAD)
    h.send(b"data")
    h.reply(OK)
    return h.client_bytes()


def new_connection(h: ProtocolHarness) -> bytes:
    drop_idle(h)
    h.send(GET)
    h.run()
    h.reply(OK)
    return h.client_bytes()


def buffered_new_connection(h: ProtocolHarness) -> bytes:
    drop_idle(h)
    h.send(PUT_HEAD)
    h.send(b"data")
    h.run()
    h.reply(OK)
    return h.client_bytes()


def connect_fails_then_retry(h: ProtocolHarness) -> bytes:
    drop_idle(h)
    failing_connect(h, 1)
    h.send(GET)
    h.run(6)
    h.reply(OK)
    return h.client_bytes()


def connect_fails_no_retry(h: ProtocolHarness) -> bytes:
    no_retries(h)
    drop_idle(h)
    failing_connect(h, 5)
    h.send(GET)
    h.run(6)
    return h.client_bytes()


def _streaming_put(h: ProtocolHarness) -> Any:
    h.send(PUT_HEAD + b"da")  # the rest of the body comes later
    return h.busy_backend()


def reset_while_sending_retry_pooled(h: ProtocolHarness) -> bytes:
    first = _streaming_put(h)
    first.connection_lost(None)  # reset before any response byte: retried (PUT, replayable)
    h.send(b"ta")
    h.reply(OK)
    return h.client_bytes()


def reset_while_sending_retry_new(h: ProtocolHarness) -> bytes:
    first = _streaming_put(h)
    drop_idle(h)
    first.connection_lost(None)
    h.run()
    h.send(b"ta")
    h.reply(OK)
    return h.client_bytes()


def reset_while_waiting_retry_pooled(h: ProtocolHarness) -> bytes:
    h.send(GET)
    h.busy_backend().connection_lost(None)
    h.reply(OK)
    return h.client_bytes()


def reset_while_waiting_retry_new(h: ProtocolHarness) -> bytes:
    h.send(GET)
    first = h.busy_backend()
    drop_idle(h)
    first.connection_lost(None)
    h.run()
    h.reply(OK)
    return h.client_bytes()


def early_response(h: ProtocolHarness) -> bytes:
    _streaming_put(h)
    h.reply(OK)  # the backend answers before the body is in
    return h.client_bytes()


def upgrade(h: ProtocolHarness) -> bytes:
    h.send(b"GET /api/atelier/ws HTTP/1.1\r\nHost: gw.test\r\nUpgrade: websocket\r\n"
           b"Connection: upgrade\r\n\r\n")
    h.reply(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n")
    return h.client_bytes()


def no_route(h: ProtocolHarness) -> bytes:
    h.send(b"GET /nowhere HTTP/1.1\r\nHost: gw.test\r\n\r\n")
    return h.client_bytes()


def too_large_while_buffering(h: ProtocolHarness) -> bytes:
    h.server.limits.max_body_size = 3
    h.send(b"PUT /api/atelier/ HTTP/1.1\r\nHost: gw.test\r\nTransfer-Encoding: chunked\r\n\r\n")
    h.send(b"4\r\ndata\r\n")
    return h.client_bytes()


def write_timeout(h: ProtocolHarness) -> bytes:
    no_retries(h)
    conn = _streaming_put(h)
    conn.pause_writing()  # the backend stops taking the body
    conn.on_deadline(WRITE)
    return h.client_bytes()


def read_timeout(h: ProtocolHarness) -> bytes:
    no_retries(h)
    h.send(GET)
    h.busy_backend().on_deadline(READ)
    return h.client_bytes()


def reset_mid_body(h: ProtocolHarness) -> bytes:
    h.send(GET)
    conn = h.busy_backend()
    conn.data_received(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
    conn.connection_lost(None)
    return h.client_bytes()


def _gone(h: ProtocolHarness) -> bytes:
    out = h.client_bytes()
    h.client.connection_lost(None)
    return out


def gone_idle(h: ProtocolHarness) -> bytes:
    h.send(GET + GET)  # the second waits behind the first
    return _gone(h)


def gone_buffering(h: ProtocolHarness) -> bytes:
    h.send(PUT_HEAD + b"da")
    return _gone(h)


def gone_connecting(h: ProtocolHarness) -> bytes:
    drop_idle(h)
    h.send(GET)
    return _gone(h)


def gone_sending(h: ProtocolHarness) -> bytes:
    _streaming_put(h)
    return _gone(h)


def gone_waiting(h: ProtocolHarness) -> bytes:
    h.send(GET)
    return _gone(h)


def gone_relaying(h: ProtocolHarness) -> bytes:
    h.send(GET)
    h.busy_backend().data_received(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
    return _gone(h)


JSON_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 9\r\n\r\n"


def json_rewritten(h: ProtocolHarness) -> bytes:
    h.send(GET)
    h.reply(JSON_HEAD + b'{"a":"b"}')
    return h.client_bytes()


def json_over_limit(h: ProtocolHarness) -> bytes:
    size = ex_module.REWRITE_LIMIT + 1
    h.send(GET)
    conn = h.busy_backend()
    conn.data_received(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                       b"Content-Length: %d\r\n\r\n" % size)
    conn.data_received(b" " * (size - 1))
    conn.data_received(b" ")
    return h.client_bytes()


def _collecting(h: ProtocolHarness) -> Any:
    """A JSON response held back with part of its body in: its backend connection."""
    h.send(GET)
    conn = h.busy_backend()
    conn.data_received(JSON_HEAD + b'{"a"')
    return conn


def json_reset_while_collecting(h: ProtocolHarness) -> bytes:
    _collecting(h).connection_lost(None)
    return h.client_bytes()


def gone_collecting(h: ProtocolHarness) -> bytes:
    _collecting(h)
    return _gone(h)


STREAMING = {"route": {"request_buffering": False}}
JSON_EDITS = {"plugins": [{"name": "response-transformer",
                           "config": {"add": {"json": ["gw:fastgw"]}}}]}

# row -> (scenario, harness options, what the client must get)
ROWS: dict[tuple[str, str], tuple[Callable[[ProtocolHarness], bytes], dict[str, Any], bytes]] = {
    ("IDLE", "BUFFER"): (buffered_put, {}, b"HTTP/1.1 200"),
    ("IDLE", "CONNECT"): (new_connection, {}, b"HTTP/1.1 200"),
    ("BUFFERING", "CONNECT"): (buffered_new_connection, {}, b"HTTP/1.1 200"),
    ("CONNECTING", "CONNECT"): (connect_fails_then_retry, {}, b"HTTP/1.1 200"),
    ("SENDING", "CONNECT"): (reset_while_sending_retry_new, STREAMING, b"HTTP/1.1 200"),
    ("WAITING", "CONNECT"): (reset_while_waiting_retry_new, {}, b"HTTP/1.1 200"),
    ("IDLE", "ATTACH"): (plain_get, {}, b"HTTP/1.1 200"),
    ("BUFFERING", "ATTACH"): (buffered_put, {}, b"HTTP/1.1 200"),
    ("CONNECTING", "ATTACH"): (new_connection, {}, b"HTTP/1.1 200"),
    ("SENDING", "ATTACH"): (reset_while_sending_retry_pooled, STREAMING, b"HTTP/1.1 200"),
    ("WAITING", "ATTACH"): (reset_while_waiting_retry_pooled, {}, b"HTTP/1.1 200"),
    ("SENDING", "SENT"): (plain_get, {}, b"HTTP/1.1 200"),
    ("SENDING", "HEAD"): (early_response, STREAMING, b"HTTP/1.1 200"),
    ("WAITING", "HEAD"): (plain_get, {}, b"HTTP/1.1 200"),
    ("RELAYING", "END"): (plain_get, {}, b"HTTP/1.1 200"),
    ("RELAYING", "UPGRADE"): (upgrade, {}, b"HTTP/1.1 101"),
    ("IDLE", "REPLY"): (no_route, {}, b"HTTP/1.1 404"),
    ("BUFFERING", "REPLY"): (too_large_while_buffering, {}, b"HTTP/1.1 413"),
    ("CONNECTING", "REPLY"): (connect_fails_no_retry, {}, b"HTTP/1.1 502"),
    ("SENDING", "REPLY"): (write_timeout, STREAMING, b"HTTP/1.1 504"),
    ("WAITING", "REPLY"): (read_timeout, {}, b"HTTP/1.1 504"),
    ("RELAYING", "ABORT"): (reset_mid_body, {}, b"HTTP/1.1 200"),
    ("IDLE", "GONE"): (gone_idle, {}, b""),
    ("BUFFERING", "GONE"): (gone_buffering, {}, b""),
    ("CONNECTING", "GONE"): (gone_connecting, {}, b""),
    ("SENDING", "GONE"): (gone_sending, STREAMING, b""),
    ("WAITING", "GONE"): (gone_waiting, {}, b""),
    ("RELAYING", "GONE"): (gone_relaying, {}, b"HTTP/1.1 200"),
    ("RELAYING", "HOLD"): (json_rewritten, JSON_EDITS, b"HTTP/1.1 200"),
    ("COLLECTING", "RELEASE"): (json_over_limit, JSON_EDITS, b"HTTP/1.1 200"),
    ("COLLECTING", "REPLY"): (json_reset_while_collecting, JSON_EDITS, b"HTTP/1.1 502"),
    ("COLLECTING", "GONE"): (gone_collecting, JSON_EDITS, b""),
}


@pytest.mark.parametrize("row", list(ROWS), ids=[f"{s}-{e}" for s, e in ROWS])
def test_row(row: tuple[str, str]) -> None:
    scenario, options, expected = ROWS[row]
    h = harness(**options)
    try:
        out = scenario(h)
        taken = rows(h)
    finally:
        h.close()
    assert row in taken, taken
    assert out.startswith(expected), out[:200]


def test_every_row_has_a_scenario() -> None:
    table = {(STATE_NAMES[s], EVENT_NAMES[e]) for s, e in TRANSITIONS}
    assert table == set(ROWS)


def test_read_timeout_while_collecting_answers_504() -> None:
    h = harness(**JSON_EDITS)
    try:
        _collecting(h).on_deadline(READ)
        out = h.client_bytes()
    finally:
        h.close()
    assert ("COLLECTING", "REPLY") in rows(h) and out.startswith(b"HTTP/1.1 504")


def test_an_event_without_a_row_raises() -> None:
    h = harness()
    try:
        h.send(GET)
        active = h.client.active
        assert active is not None and STATE_NAMES[active.state] == "WAITING"
        with pytest.raises(IllegalTransition):
            active._go(ex_module.END)
    finally:
        h.close()
