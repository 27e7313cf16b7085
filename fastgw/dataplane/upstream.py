"""The upstream side: one protocol object per backend connection, and per-target pools.

Theory of operation
-------------------
An `UpstreamConnection` carries one exchange at a time (HTTP/1.1, no pipelining to
backends: a failed pipeline cannot be retried safely). While busy it forwards parser
events to its `Exchange`; when the response completes it goes back to its target's
`UpstreamPool` if the framing allowed reuse (nginx's rule: no error, response fully read,
request fully sent, `Connection` not `close`, fewer than `max_requests` requests).

Idle connections sit in a LIFO stack (the most recently used one is the warmest, and the
least recently used ones age out through the idle timeout). A backend that closes an idle
connection is noticed at once: `connection_lost` removes it from the pool, so a stale
socket is never handed out (the idle-close race in reference/craft.md). Unexpected bytes
on an idle connection also close it.

HEAD responses: llhttp cannot be told a response answers HEAD (httptools#47), so for HEAD
the exchange ends at `on_headers_complete` and the connection gets a fresh parser.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections import deque
from typing import TYPE_CHECKING

import httptools

from fastgw.core.http.headers import RESPONSE_SPECIAL
from fastgw.dataplane.sweeper import DeadlineSweeper

if TYPE_CHECKING:
    from fastgw.dataplane.exchange import Exchange


class PoolStats:
    """Counters of one pool; rendered by the metrics layer at scrape time."""

    __slots__ = ("reused", "created", "connect_errors")

    def __init__(self) -> None:
        self.reused = 0
        self.created = 0
        self.connect_errors = 0


class UpstreamConnection(asyncio.Protocol):
    __slots__ = (
        "pool",
        "transport",
        "parser",
        "exchange",
        "requests",
        "deadline",
        "closed",
        "status",
        "head_buf",
        "special",
        "awaiting_head",
        "head_only",
        "tunnel",
        "read_paused",
    )

    def __init__(self, pool: UpstreamPool) -> None:
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.exchange: Exchange | None = None
        self.requests = 0
        self.deadline = 0.0
        self.closed = False
        self.status = 0
        # Bytes of the response head seen so far: the head is passed on raw, minus the
        # fields in `special` (see headers.clean_response_head).
        self.head_buf = b""
        self.special: list[tuple[bytes, bytes, bytes]] = []
        self.awaiting_head = False
        self.head_only = False
        self.tunnel: asyncio.Transport | None = None
        self.read_paused = False

    # -- asyncio protocol interface ---------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self.tunnel is not None:
            self.tunnel.write(data)
            return
        exchange = self.exchange
        if exchange is None:
            # Bytes on an idle connection: the backend is confused or closing. Drop it.
            self.close()
            return
        if self.awaiting_head:
            self.head_buf = self.head_buf + data if self.head_buf else data
        try:
            self.parser.feed_data(data)
            if exchange.pending is not None:
                exchange.flush_pending()
        except httptools.HttpParserUpgrade as exc:
            if self.exchange is not None:
                self.exchange.on_upstream_upgrade(self, data[exc.args[0] :])
        except httptools.HttpParserError:
            if self.exchange is not None:
                self.exchange.on_upstream_failed(self, "invalid response", response_bytes=True)
            self.close()

    def eof_received(self) -> bool:
        return False  # close our side too; a half-closed backend connection is useless

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.parser = None  # type: ignore[assignment]  # breaks the parser <-> self cycle
        self.pool.forget(self)
        if self.tunnel is not None:
            self.tunnel.close()
            self.tunnel = None
        exchange = self.exchange
        if exchange is not None:
            self.exchange = None
            exchange.on_upstream_lost(self)

    def pause_writing(self) -> None:
        """The backend is not reading the request body fast enough: stop reading the client."""
        if self.exchange is not None:
            self.exchange.upstream_write_paused(True)
        elif self.tunnel is not None:
            self.tunnel.pause_reading()

    def resume_writing(self) -> None:
        if self.exchange is not None:
            self.exchange.upstream_write_paused(False)
        elif self.tunnel is not None:
            self.tunnel.resume_reading()

    # -- parser callbacks -------------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        lname = name.lower()
        if lname in RESPONSE_SPECIAL and self.awaiting_head:  # not trailer fields
            self.special.append((lname, name, value))

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        self.status = status
        raw = self.head_buf
        end = raw.find(b"\r\n\r\n")  # llhttp insists on CRLF line ends, so this is found
        if status < 200 and status != 101:
            # Interim response (100 Continue, 103): not forwarded; the final head follows.
            self.head_buf = raw[end + 4 :]
            self.special = []
            return
        self.awaiting_head = False
        self.head_buf = b""
        exchange = self.exchange
        if exchange is not None:
            exchange.on_response_head(self, status, raw[: end + 2], self.special)
            if self.head_only and self.exchange is exchange:
                # HEAD: there is no body whatever Content-Length says (RFC 9110 §9.3.2).
                keep_alive = self.parser.should_keep_alive()
                self.parser = httptools.HttpResponseParser(self)
                self._finish(keep_alive)

    def on_body(self, body: bytes) -> None:
        exchange = self.exchange
        if exchange is not None:
            exchange.on_response_body(body)
        else:
            self.close()

    def on_message_complete(self) -> None:
        if self.status < 200 or self.exchange is None:
            return
        self._finish(self.parser.should_keep_alive())

    # -- exchange interface -----------------------------------------------------------

    def begin(self, exchange: Exchange, head_only: bool) -> None:
        self.exchange = exchange
        self.head_only = head_only
        self.requests += 1
        self.status = 0
        self.awaiting_head = True
        self.head_buf = b""
        self.special = []

    def _finish(self, keep_alive: bool) -> None:
        exchange = self.exchange
        self.exchange = None
        if exchange is None:
            return
        # Back to the pool before the exchange completes: completing may start the client's
        # next pipelined request, which should find this connection idle, not open another.
        if keep_alive and exchange.request_fully_sent() and not self.closed:
            self.pool.release(self)
        else:
            self.close()
        exchange.on_response_complete(self)

    def detach(self) -> None:
        """The exchange gives this connection up (client gone, timeout): it is not reusable."""
        self.exchange = None
        self.close()

    def start_tunnel(self, peer: asyncio.Transport) -> None:
        self.exchange = None
        self.tunnel = peer
        self.pool.forget(self)

    def pause_reading(self) -> None:
        if not self.read_paused and self.transport is not None:
            self.read_paused = True
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.read_paused and self.transport is not None:
            self.read_paused = False
            self.transport.resume_reading()

    def on_deadline(self) -> None:
        exchange = self.exchange
        if exchange is not None:
            exchange.on_upstream_timeout(self)
        else:
            self.close()  # idle timeout

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.pool.forget(self)
            if self.transport is not None:
                self.transport.close()


class Resolver:
    """Non-blocking name resolution with a small TTL cache (getaddrinfo in libuv's pool)."""

    __slots__ = ("_cache", "ttl")

    def __init__(self, ttl: float = 30.0) -> None:
        self._cache: dict[tuple[str, int], tuple[float, str]] = {}
        self.ttl = ttl

    async def resolve(self, loop: asyncio.AbstractEventLoop, host: str, port: int) -> str:
        if _is_ip(host):
            return host
        now = time.monotonic()
        hit = self._cache.get((host, port))
        if hit is not None and hit[0] > now:
            return hit[1]
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        if not infos:
            raise OSError(f"name resolution failed for {host}")
        address = infos[0][4][0]
        self._cache[(host, port)] = (now + self.ttl, address)
        return address


def _is_ip(host: str) -> bool:
    try:
        socket.inet_pton(socket.AF_INET6 if ":" in host else socket.AF_INET, host)
        return True
    except OSError:
        return False


class UpstreamPool:
    """Keep-alive connections to one backend address (host, port), for one worker."""

    __slots__ = (
        "host",
        "port",
        "idle",
        "max_idle",
        "max_requests",
        "idle_timeout",
        "sweeper",
        "closed",
        "stats",
        "loop",
    )

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        host: str,
        port: int,
        *,
        max_idle: int,
        max_requests: int,
        idle_timeout: float,
        sweeper: DeadlineSweeper,
    ) -> None:
        self.loop = loop
        self.host = host
        self.port = port
        self.idle: deque[UpstreamConnection] = deque()
        self.max_idle = max_idle
        self.max_requests = max_requests
        self.idle_timeout = idle_timeout
        # Every open connection stays in the sweeper from connect to close; its deadline
        # says what it waits for (idle timeout, or the exchange's read/write timeout), so
        # handing a connection out and back costs no set operations.
        self.sweeper = sweeper
        self.closed = False
        self.stats = PoolStats()

    def acquire(self) -> UpstreamConnection | None:
        idle = self.idle
        while idle:
            conn = idle.pop()
            if not conn.closed:
                conn.deadline = 0.0
                self.stats.reused += 1
                return conn
        return None

    async def connect(self, resolver: Resolver, timeout: float) -> UpstreamConnection:
        loop = self.loop
        address = await resolver.resolve(loop, self.host, self.port)
        try:
            _, conn = await asyncio.wait_for(
                loop.create_connection(lambda: UpstreamConnection(self), address, self.port),
                timeout,
            )
        except BaseException:
            self.stats.connect_errors += 1
            raise
        self.stats.created += 1
        if conn.closed:  # lost between connect and now (already forgotten)
            return conn
        self.sweeper.add(conn)
        return conn

    def release(self, conn: UpstreamConnection) -> None:
        if (
            self.closed
            or conn.requests >= self.max_requests
            or len(self.idle) >= self.max_idle
            or self.idle_timeout <= 0
        ):
            conn.close()
            return
        if conn.read_paused:  # an idle socket must be read to notice the backend closing it
            conn.resume_reading()
        conn.deadline = self.loop.time() + self.idle_timeout
        self.idle.append(conn)

    def forget(self, conn: UpstreamConnection) -> None:
        """Drop a closed connection from the sweeper and the idle list."""
        self.sweeper.discard(conn)
        try:
            self.idle.remove(conn)
        except ValueError:
            pass

    def close(self) -> None:
        """Stop pooling: idle connections close now, busy ones when their exchange ends."""
        self.closed = True
        while self.idle:
            self.idle.pop().close()

