"""Exchange/connection state transitions with fake transports (no sockets, no timing).

Races that a real socket test only hits now and then (which write crosses the client's
high-water mark) are forced here, so they fail every time they regress.
"""

from __future__ import annotations

import asyncio

import pytest
import uvloop

from bench.request_path import REQUEST, RESPONSE, FakeTransport, config
from fastgw.dataplane.downstream import DownstreamProtocol
from fastgw.dataplane.upstream import UpstreamConnection
from fastgw.dataplane.server import ProxyServer


class FillingTransport(FakeTransport):
    """A client transport whose next write crosses the high-water mark (when armed)."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 40000), ("127.0.0.1", 8000))
        self.protocol: DownstreamProtocol | None = None
        self.fill_on_write = False

    def _wrote(self) -> None:
        if self.fill_on_write and self.protocol is not None:
            self.fill_on_write = False
            self.protocol.pause_writing()

    def write(self, data: bytes) -> None:  # type: ignore[override]
        super().write(data)
        self._wrote()

    def writelines(self, parts) -> None:  # type: ignore[override]
        super().writelines(parts)
        self._wrote()


@pytest.fixture
def gateway():
    loop = uvloop.new_event_loop()
    asyncio.set_event_loop(loop)
    server = ProxyServer(config(), loop)
    client = FillingTransport()
    down = DownstreamProtocol(server, 8000)
    down.connection_made(client)
    client.protocol = down
    pooled = []
    for upstream in server.snapshot.upstreams.values():
        for target in upstream.targets:
            conn = UpstreamConnection(target.pool)
            conn.connection_made(FakeTransport((target.host, target.port), ("127.0.0.1", 50000)))
            target.pool.idle.append(conn)
            pooled.append(conn)
    yield down, client, pooled
    asyncio.set_event_loop(None)
    loop.close()


def test_last_write_filling_the_client_does_not_pause_a_pooled_connection(gateway) -> None:
    """The final body write of a response crosses the client's high-water mark: the
    backend connection has already gone back to the pool, so it must stay readable, and
    the client's next request on the same connection is answered."""
    down, client, pooled = gateway
    down.data_received(REQUEST)
    conn = down.active.conn
    client.fill_on_write = True
    conn.data_received(RESPONSE)
    assert down.active is None and down.write_paused
    assert all(not c.read_paused for c in pooled)
    down.resume_writing()
    down.data_received(REQUEST)
    conn2 = down.active.conn
    assert not conn2.read_paused
    before = client.written
    conn2.data_received(RESPONSE)
    assert down.active is None and client.written > before


def test_next_exchange_starts_paused_while_the_client_is_still_full(gateway) -> None:
    """A request that starts while the client's buffer is still over the mark holds its
    backend (no pause_writing will come), and resume_writing releases it."""
    down, client, _ = gateway
    down.data_received(REQUEST)
    client.fill_on_write = True
    down.active.conn.data_received(RESPONSE)
    assert down.write_paused
    down.data_received(REQUEST)
    conn = down.active.conn
    head_end = RESPONSE.index(b"\r\n\r\n") + 4
    conn.data_received(RESPONSE[:head_end])  # the head arrives while the client is full
    assert conn.read_paused
    down.resume_writing()
    assert not conn.read_paused
    conn.data_received(RESPONSE[head_end:])
    assert down.active is None
