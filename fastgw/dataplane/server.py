"""One proxy process: listening socket, current snapshot, sweepers, reload and drain.

`ProxyServer` is what a worker runs. It owns the per-worker state every connection
shares (the snapshot reference, the pools, the resolver, the sweepers) and the
lifecycle: `start()`, `apply(config)` (atomic snapshot swap; in-flight exchanges finish
on the plan they started with), `drain()` (stop accepting, let in-flight responses
finish within a bound, close idle keep-alive connections).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import tempfile
import time
from typing import Any, Callable

from fastgw.config import Config
from fastgw.config.settings import parse_listen
from fastgw.core.http.errors import DATE
from fastgw.core.http.request import RequestLimits
from fastgw.core.http.request_id import RequestIds
from fastgw.dataplane.accesslog import AccessLog
from fastgw.dataplane.body import TempDir, remove_stale_files
from fastgw.dataplane.downstream import ClientConnection
from fastgw.dataplane.health import WorkerHealth
from fastgw.dataplane.pool import Resolver
from fastgw.dataplane.snapshot import PoolRegistry, Snapshot, build_snapshot
from fastgw.dataplane.stats import WorkerStats
from fastgw.dataplane.sweeper import DeadlineSweeper

log = logging.getLogger("fastgw")

# Response buffering: bytes kept in memory for a full client socket, then in a temp
# file up to SPOOL_LIMIT (nginx: proxy_buffers, then proxy_max_temp_file_size 1024m).
SPOOL_MEMORY = 65536
SPOOL_LIMIT = 1 << 30


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


def cached_trust(settings_is_trusted: Callable[[str], bool]) -> Callable[[str], bool]:
    """`trusted_ips` check memoised per client address (asked once per connection)."""
    cache: dict[str, bool] = {}

    def is_trusted(ip: str) -> bool:
        hit = cache.get(ip)
        if hit is None:
            hit = settings_is_trusted(ip)
            if len(cache) < 65536:
                cache[ip] = hit
        return hit

    return is_trusted


class ProxyServer:
    def __init__(self, config: Config, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.io_sweeper = DeadlineSweeper(loop, 0.1)
        self.slow_sweeper = DeadlineSweeper(loop, 1.0)
        self.slow_sweeper.on_tick.append(DATE.refresh)
        self.resolver = Resolver()
        settings = config.gateway
        self.registry = PoolRegistry(
            loop,
            self.io_sweeper,
            max_idle=settings.upstream_keepalive_pool_size,
            max_requests=settings.upstream_keepalive_max_requests,
            idle_timeout=float(settings.upstream_keepalive_idle_timeout),
        )
        self.connections: set[ClientConnection] = set()
        self._port_bytes: dict[int, bytes] = {}
        self.draining = False
        self.version = 0
        # Node health from the supervisor, and passive batches back to it (every 100 ms).
        self.health = WorkerHealth(loop)
        self.io_sweeper.on_tick.append(self.health.flush)
        self._servers: list[asyncio.AbstractServer] = []
        self.stats = WorkerStats()
        self.stats.pools = self.registry.pool_stats
        self.request_ids = RequestIds()
        self.access_log: AccessLog | None = None
        self.temp_dir: TempDir | None = None
        self.slow_sweeper.on_tick.append(self._flush_access_log)
        self._apply_settings(config)
        self.snapshot: Snapshot = self._build(config)

    def _apply_settings(self, config: Config) -> None:
        s = config.gateway
        self.settings = s
        self.limits = RequestLimits.from_settings(s)
        self.max_body_size = s.max_body_size
        self.keepalive_requests = s.keepalive_requests
        self.client_header_timeout = float(s.client_header_timeout)
        self.client_body_timeout = float(s.client_body_timeout)
        self.client_keepalive_timeout = float(s.client_keepalive_timeout)
        self.lingering_time = float(s.lingering_time)
        self.lingering_timeout = float(s.lingering_timeout)
        # Request bodies (request_buffering) and spooled responses (response_buffering).
        self.body_buffer_size = s.client_body_buffer_size
        self.spool_memory = SPOOL_MEMORY
        self.spool_limit = SPOOL_LIMIT
        path = s.client_body_temp_path or os.path.join(tempfile.gettempdir(),
                                                       "fastgw-client-body")
        if self.temp_dir is None or self.temp_dir.path != path:
            self.temp_dir = TempDir(path)
            remove_stale_files(path)
        self.count_requests = s.metrics
        self.is_trusted = cached_trust(s.is_trusted)
        target = s.access_log
        if (self.access_log.target if self.access_log is not None else None) != target:
            if self.access_log is not None:
                self.access_log.close()
            self.access_log = AccessLog(target) if target else None

    def port_bytes(self, port: int) -> bytes:
        """A listening port as bytes (X-Forwarded-Port), made once per port."""
        value = self._port_bytes.get(port)
        if value is None:
            value = self._port_bytes[port] = str(port).encode()
        return value

    def _flush_access_log(self, now: float | None = None) -> None:
        if self.access_log is not None:
            self.access_log.flush()

    def stats_snapshot(self) -> dict[str, Any]:
        """This worker's counters as a plain dict (sent to the supervisor on request)."""
        return {**self.stats.snapshot(self.connections), "config_version": self.version}

    def _build(self, config: Config) -> Snapshot:
        return self._bind(build_snapshot(config, self.registry, self.version + 1))

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
            lambda: ClientConnection(self, port), sock=sock, backlog=2048
        )
        self._servers.append(server)
        self.io_sweeper.start()
        self.slow_sweeper.start()

    @property
    def addresses(self) -> list[tuple[str, int]]:
        out = []
        for server in self._servers:
            for sock in server.sockets:
                out.append(sock.getsockname()[:2])
        return out

    def apply(self, config: Config, snapshot: Snapshot | None = None) -> None:
        """Swap in a new config. Listen addresses need a restart; limits apply to new requests.
        ``snapshot``: one already built from ``config`` off the loop, numbered
        ``self.version + 1`` (fastgw.dataplane.reconfigure); only bound and swapped here."""
        snapshot = self._build(config) if snapshot is None else self._bind(snapshot)
        self._apply_settings(config)
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


def install_uvloop() -> None:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a hard dependency; stay usable anyway
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())

