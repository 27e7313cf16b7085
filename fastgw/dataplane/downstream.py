"""The client side: one protocol object per client connection.

Theory of operation
-------------------
One httptools parser per connection, reused across keep-alive requests. Header callbacks
append `(lower name, name, value)` to one list; the head becomes an `Exchange` at
`on_headers_complete`. Exactly one exchange is *active* (being proxied); pipelined
requests parsed meanwhile wait in a queue with their bodies buffered, and responses go
out in request order (RFC 9112 §9.3.2). Reading pauses when the queue or a buffered
body grows, so a client cannot make us buffer without bound.

Reading the client is paused for several independent reasons (a body waiting for its
upstream connection, a backend that does not keep up, a full pipeline queue, a pending
error); a bit mask tracks them so one reason ending does not resume reading while
another still holds.

Malformed input: a parser error answers 400 (414 and 431 for the configured limits) and
closes this connection only; the worker keeps serving every other one.

Timeouts (client_header_timeout, client_body_timeout, client_keepalive_timeout) go
through the worker's slow `DeadlineSweeper`; nothing here arms a timer per request.
client_body_timeout is nginx's: the longest pause between two reads of a request body
(408 and close), suspended while we ourselves have stopped reading (back-pressure).
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import TYPE_CHECKING

import httptools

from fastgw.dataplane.exchange import DONE, VIA_LINE, Exchange
from fastgw.core.http.headers import METHOD_NAMES, error_response, split_host_port

if TYPE_CHECKING:
    from fastgw.dataplane.upstream import UpstreamConnection
    from fastgw.dataplane.server import ProxyServer

PAUSE_BODY = 1  # a queued/connecting exchange buffered REPLAY_LIMIT body bytes
PAUSE_UPSTREAM = 2  # the backend's socket buffer is full
PAUSE_PIPELINE = 4  # too many pipelined requests waiting
PAUSE_ERROR = 8  # a parse error waits for the active exchange to finish

PIPELINE_LIMIT = 16
_CRLF = b"\r\n"
# Request fields the parser callbacks act on (all others are only collected).
_REQUEST_SPECIAL = frozenset(
    {b"host", b"content-length", b"transfer-encoding", b"expect", b"connection", b"upgrade"}
)


class _LimitExceeded(Exception):
    """Raised from a parser callback to stop parsing; the status is in `error_status`."""


class DownstreamProtocol(asyncio.Protocol):
    __slots__ = (
        "server",
        "loop",
        "transport",
        "parser",
        "client_ip",
        "server_port",
        "server_port_int",
        "trusted",
        "forwarded_fragment",
        "active",
        "queue",
        "parsing",
        "last",
        "url",
        "headers",
        "header_bytes",
        "host",
        "chunked",
        "expect",
        "content_length",
        "connection_field",
        "upgrade_field",
        "pause_reasons",
        "write_paused",
        "closed",
        "deadline",
        "error_status",
        "pending_error",
        "upgrading",
        "tunnel",
        "tunnel_conn",
        "requests",
        "client_eof",
        "started",
        "_tail_host",
        "_tail_prefix",
        "_tail",
    )

    def __init__(self, server: ProxyServer, port: int) -> None:
        """`port`: the listening port this connection was accepted on."""
        self.server = server
        self.loop = server.loop
        self.transport: asyncio.Transport = None  # type: ignore[assignment]
        self.parser = httptools.HttpRequestParser(self)
        self.client_ip = ""
        self.server_port = str(port).encode()
        self.server_port_int = port
        self.trusted = False
        self.forwarded_fragment = b""
        self.active: Exchange | None = None
        self.queue: deque[Exchange] = deque()
        self.parsing: Exchange | None = None
        self.last: Exchange | None = None
        self.url = b""
        self.headers: list[tuple[bytes, bytes, bytes]] = []
        self.header_bytes = 0
        self.host: bytes | None = None
        self.chunked = False
        self.expect = False
        self.content_length = -1
        self.connection_field = False  # the current head has a Connection field
        self.upgrade_field = False  # ... an Upgrade field
        self.pause_reasons = 0
        self.write_paused = False
        self.closed = False
        self.deadline = 0.0
        self.error_status = 0
        self.pending_error = 0
        self.upgrading: Exchange | None = None
        self.tunnel: asyncio.Transport | None = None
        self.tunnel_conn: UpstreamConnection | None = None
        self.requests = 0
        self._tail_host: bytes | None = None
        self._tail_prefix = b""
        self._tail = b""
        self.client_eof = False
        self.started = 0.0  # loop time at the current request's first byte (metrics, logs)

    # -- asyncio protocol interface ---------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        server = self.server
        peer = transport.get_extra_info("peername")
        self.client_ip = peer[0] if isinstance(peer, tuple) else "127.0.0.1"
        self.trusted = server.is_trusted(self.client_ip)
        ip = self.client_ip.encode()
        self.forwarded_fragment = b"".join(
            (
                b"X-Forwarded-For: ", ip, _CRLF,
                b"X-Forwarded-Proto: http\r\n",
                b"X-Forwarded-Port: ", self.server_port, _CRLF,
                b"X-Real-IP: ", ip, _CRLF,
            )
        )
        server.connections.add(self)
        server.stats.accepted += 1
        self.deadline = self.loop.time() + server.client_header_timeout
        server.slow_sweeper.add(self)
        if server.draining:
            transport.close()

    def data_received(self, data: bytes) -> None:
        tunnel = self.tunnel
        if tunnel is not None:
            tunnel.write(data)
            return
        upgrading = self.upgrading
        if upgrading is not None:
            if upgrading.upgrade_buf is None:
                upgrading.upgrade_buf = []
            upgrading.upgrade_buf.append(data)
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            self._on_upgrade(data[exc.args[0] :])
        except httptools.HttpParserError:
            self._on_parse_error()

    def eof_received(self) -> bool | None:
        # A client that half-closes after its request still gets its response(s), then
        # we close (exchange_done). A request cut short (head or body) cannot complete.
        if self.active is None and not self.queue or self.parsing is not None:
            return False
        self.client_eof = True
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        server = self.server
        server.connections.discard(self)
        server.slow_sweeper.discard(self)
        if self.tunnel_conn is not None:
            self.tunnel_conn.close()
            self.tunnel_conn = None
        active = self.active
        if active is not None:
            self.active = None
            active.client_gone()
        while self.queue:
            self.queue.popleft().client_gone()
        # The parser holds our bound callbacks: drop it so reference counting frees this
        # connection now instead of leaving a cycle for the garbage collector.
        self.parser = None  # type: ignore[assignment]
        self.last = self.parsing = None

    def pause_writing(self) -> None:
        """Called by the transport when its buffer exceeds the high-water mark."""
        self.write_paused = True
        conn = self.tunnel_conn
        if conn is None and self.active is not None:
            conn = self.active.conn
            if conn is not None:
                conn.deadline = 0.0  # a slow client is not a slow backend
        if conn is not None:
            conn.pause_reading()

    def resume_writing(self) -> None:
        self.write_paused = False
        conn = self.tunnel_conn
        active = self.active
        if conn is None and active is not None:
            conn = active.conn
            if conn is not None and active.plan is not None:
                conn.deadline = self.loop.time() + active.plan.read_timeout
        if conn is not None:
            conn.resume_reading()

    # -- parser callbacks -------------------------------------------------------------

    def on_message_begin(self) -> None:
        self.url = b""
        self.headers = []
        self.header_bytes = 0
        self.host = None
        self.chunked = False
        self.expect = False
        self.content_length = -1
        self.connection_field = False
        self.upgrade_field = False
        now = self.started = self.loop.time()
        if self.active is None:
            self.deadline = now + self.server.client_header_timeout

    def on_url(self, url: bytes) -> None:
        self.url += url
        if len(self.url) > self.server.max_request_line_size:
            self.error_status = 414
            raise _LimitExceeded

    def on_header(self, name: bytes, value: bytes) -> None:
        self.header_bytes += len(name) + len(value) + 4
        if self.header_bytes > self.server.max_header_size:
            self.error_status = 431
            raise _LimitExceeded
        lname = name.lower()
        self.headers.append((lname, name, value))
        if lname not in _REQUEST_SPECIAL:
            return  # most fields: one set lookup
        if lname == b"host":
            if self.host is not None:
                # Two Hosts could route on one and reach the backend with the other
                # (RFC 9112 §3.2: 400); nginx refuses them too.
                self.error_status = 400
                raise _LimitExceeded
            self.host = value
        elif lname == b"content-length":
            self.content_length = int(value) if value.isdigit() else -1
        elif lname == b"transfer-encoding":
            self.chunked = value.lower().endswith(b"chunked")
        elif lname == b"expect":
            self.expect = value.lower() == b"100-continue"
        elif lname == b"connection":
            self.connection_field = True
        else:
            self.upgrade_field = True

    def on_headers_complete(self) -> None:
        if self.closed or self.error_status:
            return
        parser = self.parser
        raw_method = parser.get_method()
        method = METHOD_NAMES.get(raw_method) or raw_method.decode("latin-1")
        keep_alive = parser.should_keep_alive()
        # Keep-alive without a Connection field is HTTP/1.1 by definition (1.0 needs
        # "Connection: keep-alive"): only the other cases pay for the version string.
        http11 = (keep_alive and not self.connection_field) or parser.get_http_version() == "1.1"
        # llhttp flags an upgrade for an Upgrade field or CONNECT only.
        upgrade = (self.upgrade_field or method == "CONNECT") and parser.should_upgrade()
        if upgrade:
            # Only WebSocket upgrades are relayed (as Kong does); any other Upgrade header
            # is dropped and the request proxied as plain HTTP/1.1 (see _on_upgrade).
            upgrade = self._websocket_upgrade()
            if not upgrade and (self.content_length > 0 or self.chunked):
                # llhttp does not parse the body of an upgrade request: refuse it.
                self.error_status = 400
                return
        exchange = Exchange(
            self,
            method,
            self.url,
            self.headers,
            http11,
            keep_alive,
            upgrade,
            self.host,
            self.chunked,
            self.expect,
        )
        exchange.head_size = self.header_bytes  # for the ingress byte count
        self.parsing = exchange
        self.last = exchange
        limit = self.server.max_body_size
        if limit and self.content_length > limit:
            exchange.body_size = -1  # marks "declared too large" for begin()
        if self.active is None:
            self.active = exchange
            # client_body_timeout (nginx's: between two reads) runs while a body is due.
            self.deadline = (
                self.loop.time() + self.server.client_body_timeout
                if self.content_length > 0 or self.chunked
                else 0.0
            )
            exchange.begin()
        else:
            self.queue.append(exchange)
            if len(self.queue) >= PIPELINE_LIMIT:
                self._pause(PAUSE_PIPELINE)

    def on_body(self, body: bytes) -> None:
        exchange = self.parsing
        if exchange is not None:
            if exchange is self.active and self.deadline:
                self.deadline = self.loop.time() + self.server.client_body_timeout
            exchange.feed_body(body)

    def on_message_complete(self) -> None:
        exchange = self.parsing
        if exchange is not None:
            self.parsing = None
            if exchange is self.active:
                self.deadline = 0.0  # the body is in; the backend's timeouts apply now
            exchange.request_done()

    # -- exchange interface -----------------------------------------------------------

    @property
    def draining(self) -> bool:
        return self.server.draining

    def exchange_done(self, exchange: Exchange) -> None:
        """The response of the active exchange is complete (or it failed)."""
        if exchange is not self.active:
            return
        self.active = None
        self.requests += 1
        if self.closed:
            return
        if not exchange.keep_alive:
            self._close()
            return
        if self.pause_reasons & (PAUSE_BODY | PAUSE_UPSTREAM):
            # Back-pressure of the exchange that just ended (e.g. a 504 while its backend
            # had stopped reading the body): the rest of that body is read and dropped.
            self._resume(PAUSE_BODY | PAUSE_UPSTREAM)
        if self.pending_error:
            self.transport.write(error_response(self.pending_error, keep_alive=False))
            self._close()
            return
        if self.queue:
            nxt = self.queue.popleft()
            if len(self.queue) < PIPELINE_LIMIT:
                self._resume(PAUSE_PIPELINE)
            self.active = nxt
            nxt.begin()
            return
        if self.server.draining or self.client_eof:
            self._close()
            return
        timeout = (
            self.server.client_keepalive_timeout
            if self.parsing is None
            else self.server.client_header_timeout
        )
        self.deadline = self.loop.time() + timeout

    def pause_reading_for_body(self) -> None:
        self._pause(PAUSE_BODY)

    def resume_reading_for_body(self) -> None:
        self._resume(PAUSE_BODY)

    def pause_reading_for_upstream(self) -> None:
        self._pause(PAUSE_UPSTREAM)

    def resume_reading_for_upstream(self) -> None:
        self._resume(PAUSE_UPSTREAM)

    def forwarded_headers(self, incoming: dict[bytes, bytes], host: bytes | None, prefix: str | None) -> bytes:
        """X-Forwarded-* for a trusted client that sent its own (they are kept/extended)."""
        ip = self.client_ip.encode()
        xff = incoming.get(b"x-forwarded-for")
        parts = [
            b"X-Forwarded-For: ", xff + b", " + ip if xff else ip, _CRLF,
            b"X-Forwarded-Proto: ", incoming.get(b"x-forwarded-proto", b"http"), _CRLF,
            b"X-Forwarded-Port: ", incoming.get(b"x-forwarded-port", self.server_port), _CRLF,
            b"X-Real-IP: ", incoming.get(b"x-real-ip", ip), _CRLF,
        ]
        fhost = incoming.get(b"x-forwarded-host")
        if fhost is None and host is not None:
            fhost = split_host_port(host)[0]
        if fhost is not None:
            parts += (b"X-Forwarded-Host: ", fhost, _CRLF)
        fprefix = incoming.get(b"x-forwarded-prefix")
        if fprefix is None and prefix:
            fprefix = prefix.encode("latin-1")
        if fprefix is not None:
            parts += (b"X-Forwarded-Prefix: ", fprefix, _CRLF)
        return b"".join(parts)

    def forwarded_tail(self, host: bytes | None, prefix_line: bytes) -> bytes:
        """End of an upstream request head for an untrusted client: Via, X-Forwarded-*,
        X-Real-IP and the blank line. Host rarely changes on a connection, so it is cached."""
        if host == self._tail_host and prefix_line is self._tail_prefix and self._tail:
            return self._tail
        parts = [VIA_LINE, self.forwarded_fragment]
        if host is not None:
            parts += (b"X-Forwarded-Host: ", split_host_port(host)[0], _CRLF)
        parts += (prefix_line, _CRLF)
        self._tail_host = host
        self._tail_prefix = prefix_line
        self._tail = b"".join(parts)
        return self._tail

    def start_tunnel(self, conn: UpstreamConnection) -> None:
        """After 101 Switching Protocols: relay raw bytes both ways."""
        self.tunnel_conn = conn
        self.tunnel = conn.transport
        self.server.slow_sweeper.discard(self)
        upgrading = self.upgrading
        self.upgrading = None
        self.active = None
        if upgrading is not None and upgrading.upgrade_buf and self.tunnel is not None:
            self.tunnel.write(b"".join(upgrading.upgrade_buf))
        self._resume(PAUSE_BODY | PAUSE_UPSTREAM | PAUSE_PIPELINE)

    def abort(self) -> None:
        self.active = None
        self._close()

    def close_if_idle(self) -> None:
        """Draining: an idle keep-alive connection closes now, a busy one after its response."""
        if self.active is None and self.parsing is None and self.tunnel is None:
            self._close()

    def on_deadline(self) -> None:
        active = self.active
        if active is None:
            self._close()  # keep-alive idle or header timeout: close quietly, as nginx does
        elif not active.request_complete and active.state != DONE:
            if self.pause_reasons:
                # We stopped reading (back-pressure), not the client: not its timeout.
                self.deadline = self.loop.time() + self.server.client_body_timeout
            else:
                active.respond_error(408, close=True)  # client_body_timeout

    # -- internals --------------------------------------------------------------------

    def _websocket_upgrade(self) -> bool:
        for lname, _, value in self.headers:
            if lname == b"upgrade":
                return b"websocket" in value.lower()
        return False

    def _on_upgrade(self, rest: bytes) -> None:
        exchange = self.last
        if self.error_status or exchange is None:
            self._on_parse_error()
            return
        if not exchange.upgrade:
            # A non-WebSocket upgrade (h2c...) proxied as plain HTTP: llhttp stopped right
            # after its (body-less) message, so go on with a fresh parser.
            self.parser = httptools.HttpRequestParser(self)
            if rest:
                self.data_received(rest)
            return
        self.upgrading = exchange
        if rest:
            exchange.upgrade_buf = [rest]

    def _on_parse_error(self) -> None:
        status = self.error_status or 400
        exchange = self.parsing
        if exchange is not None and exchange is self.active:
            exchange.respond_error(status, close=True)
            return
        if self.active is None:
            self.transport.write(error_response(status, keep_alive=False))
            self._close()
            return
        # Answer in order: after the active exchange (and drop the broken queued one).
        if exchange is not None and exchange in self.queue:
            while self.queue and self.queue[-1] is not exchange:
                self.queue.pop()
            self.queue.pop()
        self.pending_error = status
        self._pause(PAUSE_ERROR)

    def _pause(self, reason: int) -> None:
        if not self.pause_reasons and not self.closed:
            self.transport.pause_reading()
        self.pause_reasons |= reason

    def _resume(self, reason: int) -> None:
        if self.pause_reasons & reason:
            self.pause_reasons &= ~reason
            if not self.pause_reasons and not self.closed:
                self.transport.resume_reading()

    def _close(self) -> None:
        if not self.closed:
            self.closed = True
            self.server.slow_sweeper.discard(self)
            self.transport.close()

