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
from fastgw.config.listeners import ListenAddress, parse_listen
from fastgw.core.http.errors import DATE
from fastgw.dataplane.context import WorkerContext
from fastgw.dataplane.downstream import ClientConnection
from fastgw.dataplane.health import WorkerHealth
from fastgw.dataplane.plugins.registry import PluginRuntime
from fastgw.dataplane.snapshot import PoolRegistry, Snapshot, build_snapshot
from fastgw.dataplane.tls import CertPair, ServerTLS

log = logging.getLogger("fastgw")


def bind_socket(listen: str | ListenAddress, *, reuse_port: bool = True,
                backlog: int | None = None) -> socket.socket:
    if isinstance(listen, str):
        host, port = parse_listen(listen)
    else:
        host, port = listen.host, listen.port
        backlog = backlog or listen.backlog
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port and hasattr(socket, "SO_REUSEPORT"):
        # Each worker binds its own socket and the kernel spreads connections fairly
        # (reference/craft.md, item 12).
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(backlog or 2048)
    sock.setblocking(False)
    return sock


class ProxyServer(WorkerContext):
    """A worker's proxy: the shared state (WorkerContext) and its lifecycle."""

    def __init__(self, config: Config, loop: asyncio.AbstractEventLoop,
                 default_cert: CertPair | None = None, ticket_keys: bytes | None = None) -> None:
        """`default_cert`: the certificate of ssl listeners when no SNI matches (the
        supervisor's ssl_cert, or the one it made at first start); `ticket_keys`: the
        node's session ticket keys."""
        super().__init__(loop, config.gateway)
        # TLS of the ssl listeners (dataplane.tls); the certificates follow the config.
        self.tls = ServerTLS(config.gateway, default_cert, ticket_keys) \
            if default_cert is not None else None
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
        self.listening: list[tuple[str, int, bool]] = []  # (host, port, ssl) per listener
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
        if self.tls is not None:  # certificates: contexts kept while their PEM is unchanged
            self.tls.update(snapshot.config)
        plans = snapshot.new_plans  # the others are the live snapshot's, bound already
        self.stats.bind(snapshot.route_plans.values() if plans is None else plans)
        self.health.bind(snapshot)  # before it goes live: no request sees stale health
        return snapshot

    # -- lifecycle --------------------------------------------------------------------

    async def start(self, sock: socket.socket | None = None) -> None:
        """Listen on every proxy_listen entry (or on `sock`, plain HTTP: tests)."""
        if sock is not None:
            await self._listen(sock, False)
        else:
            for address in self.settings.listeners("proxy"):
                if address.ssl and self.tls is None:
                    raise OSError(f"{address}: an ssl listener needs a certificate")
                await self._listen(bind_socket(address), address.ssl)
        self.io_sweeper.start()
        self.slow_sweeper.start()

    async def _listen(self, sock: socket.socket, https: bool) -> None:
        # An accepted socket's local port is the listener's: no getsockname per connection.
        port = sock.getsockname()[1]
        tls = self.tls.context if https and self.tls is not None else None
        server = await self.loop.create_server(
            lambda: cast(asyncio.Protocol, ClientConnection(self, port, https)), sock=sock,
            backlog=2048, ssl=tls,
            ssl_handshake_timeout=self.client_header_timeout if tls is not None else None)
        self._servers.append(server)
        address: Any = sock.getsockname()
        self.listening.append((str(address[0]), int(address[1]), https))

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

