"""One proxy process: listening socket, current snapshot, sweepers, reload and drain.

`ProxyServer` is what a worker runs. It is the per-worker state every connection shares
(dataplane.context.WorkerContext: the snapshot reference, the pools, the resolver, the
sweepers) plus the lifecycle: `start()`, `apply(config)` (atomic snapshot swap; in-flight exchanges finish
on the plan they started with), `drain()` (stop accepting, let in-flight responses
finish within a bound, close idle keep-alive connections).
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from typing import Any, cast

from fastgw.config import Config
from fastgw.config.settings import parse_listen
from fastgw.core.http.errors import DATE
from fastgw.dataplane.context import WorkerContext
from fastgw.dataplane.downstream import ClientConnection
from fastgw.dataplane.health import WorkerHealth
from fastgw.dataplane.plugins.registry import PluginRuntime
from fastgw.dataplane.snapshot import PoolRegistry, Snapshot, build_snapshot

log = logging.getLogger("fastgw")


def bind_socket(listen: str, *, reuse_port: bool = True, backlog: int = 2048) -> socket.socket:
    host, port = parse_listen(listen)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port and hasattr(socket, "SO_REUSEPORT"):
        # Each worker binds its own socket and the kernel spreads connections fairly
        # (reference/craft.md, item 12).
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(backlog)
    sock.setblocking(False)
    return sock


class ProxyServer(WorkerContext):
    """A worker's proxy: the shared state (WorkerContext) and its lifecycle."""

    def __init__(self, config: Config, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(loop, config.gateway)
        self.slow_sweeper.on_tick.append(DATE.refresh)
        settings = config.gateway
        self.registry = PoolRegistry(
            loop,
            self.io_sweeper,
            max_idle=settings.upstream_keepalive_pool_size,
            max_requests=settings.upstream_keepalive_max_requests,
            idle_timeout=float(settings.upstream_keepalive_idle_timeout),
        )
        self.version = 0
        # The node's rate-limit counters, log plugins' writers and queues.
        self.plugin_runtime = PluginRuntime(loop=loop)
        self.slow_sweeper.on_tick.append(self.plugin_runtime.flush)
        # Node health from the supervisor, and passive batches back to it (every 100 ms).
        self.health = WorkerHealth(loop)
        self.io_sweeper.on_tick.append(self.health.flush)
        self._servers: list[asyncio.Server] = []
        self.stats.pools = self.registry.pool_stats
        self.slow_sweeper.on_tick.append(self._flush_access_log)
        self.snapshot = self._build(config)

    def _flush_access_log(self, now: float | None = None) -> None:
        if self.access_log is not None:
            self.access_log.flush()

    def stats_snapshot(self) -> dict[str, Any]:
        """This worker's counters as a plain dict (sent to the supervisor on request)."""
        return {**self.stats.snapshot(self.connections), "config_version": self.version}

    def _build(self, config: Config) -> Snapshot:
        return self._bind(build_snapshot(config, self.registry, self.version + 1,
                                         plugins=self.plugin_runtime))

    def _bind(self, snapshot: Snapshot) -> Snapshot:
        self.version = snapshot.version
        self.stats.bind(snapshot.route_plans.values())
        self.health.bind(snapshot)  # before it goes live: no request sees stale health
        return snapshot

    # -- lifecycle --------------------------------------------------------------------

    async def start(self, sock: socket.socket | None = None) -> None:
        if sock is None:
            sock = bind_socket(self.settings.proxy_listen)
        # An accepted socket's local port is the listener's: no getsockname per connection.
        port = sock.getsockname()[1]
        server = await self.loop.create_server(
            lambda: cast(asyncio.Protocol, ClientConnection(self, port)), sock=sock,
            backlog=2048)
        self._servers.append(server)
        self.io_sweeper.start()
        self.slow_sweeper.start()

    @property
    def addresses(self) -> list[tuple[str, int]]:
        out = []
        for server in self._servers:
            # getattr: uvloop gives a list where typeshed says tuple, and compiled code
            # checks the declared type.
            sockets: Any = getattr(server, "sockets")
            for sock in sockets:
                out.append(sock.getsockname()[:2])
        return out

    def apply(self, config: Config, snapshot: Snapshot | None = None) -> None:
        """Swap in a new config. Listen addresses need a restart; limits apply to new requests.
        ``snapshot``: one already built from ``config`` off the loop, numbered
        ``self.version + 1`` (fastgw.dataplane.reconfigure); only bound and swapped here."""
        snapshot = self._build(config) if snapshot is None else self._bind(snapshot)
        self.apply_settings(config.gateway)
        self.registry.max_idle = config.gateway.upstream_keepalive_pool_size
        self.registry.max_requests = config.gateway.upstream_keepalive_max_requests
        self.registry.idle_timeout = float(config.gateway.upstream_keepalive_idle_timeout)
        self.snapshot = snapshot

    async def drain(self, timeout: float) -> None:
        """Stop accepting; finish in-flight requests (bounded); close everything."""
        self.draining = True
        for server in self._servers:
            server.close()
        for conn in list(self.connections):
            conn.close_if_idle()
        deadline = time.monotonic() + timeout
        while self.connections and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
            for conn in list(self.connections):
                conn.close_if_idle()
        for conn in list(self.connections):
            conn.transport.close()
        self.registry.close_all()
        self.io_sweeper.stop()
        self.slow_sweeper.stop()
        if self.access_log is not None:
            self.access_log.close()
        self.plugin_runtime.close()


def install_uvloop() -> None:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a hard dependency; stay usable anyway
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())

