"""Transports that record the exact bytes a protocol writes, for protocol tests (no sockets).

`RecordingTransport` keeps every write in order (`data`), tracks pause/resume of reading,
half-close and close, and can be told to cross the high-water mark on a write (it then
calls the protocol's `pause_writing`, as a real transport does). `ProtocolHarness` wires a
`ProxyServer` with fake client and backend connections so a test can feed bytes in and
read the exact bytes out on both sides.
"""

from __future__ import annotations

import asyncio
from typing import Any


class RecordingTransport(asyncio.Transport):
    def __init__(self, peer: tuple[str, int] = ("127.0.0.1", 40000),
                 sock: tuple[str, int] = ("127.0.0.1", 8000), keep: bool = True) -> None:
        super().__init__()
        self.peer = peer
        self.sock = sock
        self.keep = keep  # False: count bytes only (benchmarks)
        self.data = bytearray()
        self.written = 0
        self.writes = 0  # write()/writelines() calls (syscalls on a real transport)
        self.closed = False
        self.eof_written = False
        self.reading = True
        self.protocol: Any = None
        self.fill_on_write = False  # cross the high-water mark on the next write

    def get_extra_info(self, name: str, default: object = None) -> object:
        return {"peername": self.peer, "sockname": self.sock}.get(name, default)

    def write(self, data: bytes) -> None:  # type: ignore[override]
        self.writes += 1
        self.written += len(data)
        if self.keep:
            self.data += data
        self._wrote()

    def writelines(self, parts: Any) -> None:  # type: ignore[override]
        self.writes += 1
        for part in parts:
            self.written += len(part)
            if self.keep:
                self.data += part
        self._wrote()

    def _wrote(self) -> None:
        if self.fill_on_write and self.protocol is not None:
            self.fill_on_write = False
            self.protocol.pause_writing()

    def take(self) -> bytes:
        """The bytes written since the last take()."""
        out = bytes(self.data)
        self.data.clear()
        return out

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def is_reading(self) -> bool:
        return self.reading

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        self.eof_written = True

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed


class HarnessLoop:
    """The real (never run) uvloop loop, except that new connections are the harness's."""

    def __init__(self, loop: asyncio.AbstractEventLoop, harness: ProtocolHarness) -> None:
        self._loop = loop
        self._harness = harness

    def __getattr__(self, name: str) -> Any:
        return getattr(self._loop, name)

    async def create_connection(self, factory: Any, host: str, port: int) -> tuple[Any, Any]:
        return await self._harness.connect(factory, host, port)


class ProtocolHarness:
    """A worker's ProxyServer on a uvloop loop that is never run: one client connection
    and fake backend connections, all on RecordingTransports.

    Backends: every pool gets `pooled` idle connections up front; a connection the
    exchange opens itself comes from `connect_hook` (default: a new fake connection),
    which runs when the test calls `run()` (one turn of the loop).
    """

    def __init__(self, document: dict[str, Any], pooled: int = 1, https: bool = False) -> None:
        """`https`: the client connection is one accepted on an ssl listener."""
        import uvloop

        from fastgw.config import load_declarative
        from fastgw.dataplane.downstream import ClientConnection
        from fastgw.dataplane.server import ProxyServer

        self.real_loop = uvloop.new_event_loop()
        asyncio.set_event_loop(self.real_loop)
        self.loop = HarnessLoop(self.real_loop, self)
        self.server = ProxyServer(load_declarative(document), self.loop)  # type: ignore[arg-type]
        self.backends: list[Any] = []  # every fake upstream connection, in creation order
        self.connect_hook = self._fake_connect
        for upstream in self.server.snapshot.upstreams.values():
            for target in upstream.targets:
                pool = target.pool
                for _ in range(pooled):
                    pool.idle.append(self.new_backend(pool))
        self.client_transport = RecordingTransport()
        self.client = ClientConnection(self.server, 8443 if https else 8000, https)
        self.client.connection_made(self.client_transport)
        self.client_transport.protocol = self.client

    def new_backend(self, pool: Any) -> Any:
        from fastgw.dataplane.upstream import UpstreamConnection

        conn = UpstreamConnection(pool)
        transport = RecordingTransport((pool.host, pool.port), ("127.0.0.1", 50000))
        conn.connection_made(transport)
        transport.protocol = conn
        pool.sweeper.add(conn)
        self.backends.append(conn)
        return conn

    async def _fake_connect(self, pool: Any) -> Any:
        return self.new_backend(pool)

    # -- driving ----------------------------------------------------------------------

    async def connect(self, factory: Any, host: str, port: int) -> tuple[Any, Any]:
        """The loop's create_connection: a fake backend connection for that address."""
        pool = next(t.pool for u in self.server.snapshot.upstreams.values() for t in u.targets
                    if (t.pool.host, t.pool.port) == (host, port))
        conn = await self.connect_hook(pool)
        return conn.transport, conn

    def send(self, data: bytes) -> None:
        self.client.data_received(data)

    def run(self, turns: int = 3) -> None:
        """Let tasks (new upstream connections) run."""
        for _ in range(turns):
            self.real_loop.run_until_complete(asyncio.sleep(0))

    def reply(self, data: bytes, backend: Any = None) -> None:
        """Bytes from a backend: the one carrying the active exchange by default."""
        conn = backend if backend is not None else self.busy_backend()
        conn.data_received(data)

    def busy_backend(self) -> Any:
        busy = [c for c in self.backends if c.exchange is not None]
        assert len(busy) == 1, f"{len(busy)} busy backends"
        return busy[0]

    def upstream_bytes(self) -> bytes:
        """Everything written to any backend since the last call, in creation order."""
        return b"".join(c.transport.take() for c in self.backends)

    def client_bytes(self) -> bytes:
        return self.client_transport.take()

    def close(self) -> None:
        loop = self.real_loop
        tasks = asyncio.all_tasks(loop)
        for task in tasks:
            task.cancel()
        if tasks:
            loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
        asyncio.set_event_loop(None)
        loop.close()


def atelier_config(**gateway: Any) -> dict[str, Any]:
    """The README's setup: upstream `iris` (two targets), route /api/atelier."""
    route: dict[str, Any] = {"paths": ["/api/atelier"], "strip_path": False}
    route.update(gateway.pop("route", {}))
    return {
        "_format_version": "3.0",
        "gateway": gateway,
        "upstreams": [{"name": "iris", "targets": [{"target": "127.0.0.1:52773"},
                                                   {"target": "127.0.0.1:52774"}]}],
        "services": [{"name": "atelier", "host": "iris", "routes": [route]}],
    }
