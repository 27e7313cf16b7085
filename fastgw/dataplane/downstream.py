"""The client side: one protocol object per client connection.

Theory of operation
-------------------
Bytes from the client go to one httptools parser per connection (reused across
keep-alive requests) whose callback object is a `core.http.request.RequestReader`: it
validates every request head and hands over a `RequestHead`, or refuses the request
with a status. Each accepted head becomes an `Exchange`. Exactly one exchange is
*active* (being proxied); pipelined ones wait in a queue and their responses go out in
request order (RFC 9112 §9.3.2).

A request is sent upstream only after llhttp has accepted its head in full: an exchange
that becomes active during `feed_data` is started only once `feed_data` has returned
(`ready`), so a parse error later in the same bytes (a Transfer-Encoding llhttp refuses
after the head, a bad chunk size) reaches no backend.

Reading the client is paused for several independent reasons (a body waiting for its
backend, a backend that does not keep up, a full pipeline queue, an answer that must
wait its turn, an upgrade waiting for its 101); a bit mask tracks them so one reason
ending does not resume reading while another still holds.

Upgrades: llhttp stops at the end of an upgrade request's head. The bytes after it are
held (one read at most; reading pauses) until the backend answers 101, and only then go
to the backend (dataplane.tunnel); any other answer closes the connection, so those
bytes are never forwarded unparsed. A non-websocket upgrade (h2c) is proxied as a plain
request and parsing goes on with a fresh parser.

Endings: a response that closes the connection while the client may still be sending
(an error, a refused or unfinished request) ends with a lingering close, as nginx's:
the gateway shuts its side down after the response and reads and drops what still
comes, up to `lingering_time` (at most `lingering_timeout` between reads), so the client
reads the answer instead of a connection reset.

Timeouts go through the worker's slow `DeadlineSweeper` with their kind: CLIENT_HEADER
(a request head), CLIENT_BODY (nginx's client_body_timeout: between two reads of a body,
suspended while we ourselves have stopped reading), KEEPALIVE, LINGER.

Malformed input answers 400 (or the status the reader chose) and closes this
connection only; the worker keeps serving every other one.
"""

from __future__ import annotations

import asyncio
from typing import Final

import httptools

from fastgw.core.http.errors import error_response
from fastgw.core.http.request import RequestHead, RequestReader
from fastgw.dataplane.context import WorkerContext
from fastgw.dataplane.exchange import DONE, PAUSE_BODY, PAUSE_UPSTREAM, ClientSide, Exchange
from fastgw.dataplane.sweeper import CLIENT_BODY, CLIENT_HEADER, KEEPALIVE, LINGER
from fastgw.dataplane.tunnel import Tunnel
from fastgw.dataplane.upstream import UpstreamConnection

__all__ = ["ClientConnection"]

# Pause reasons (bits); PAUSE_BODY and PAUSE_UPSTREAM come from the exchange and
# PAUSE_TUNNEL (1 << 6) from the tunnel.
PAUSE_PIPELINE: Final = 4  # too many pipelined requests waiting
PAUSE_ERROR: Final = 8  # an error answer waits for the active exchange to finish
PAUSE_UPGRADE: Final = 16  # bytes after an upgrade request wait for the backend's 101

PIPELINE_LIMIT: Final = 16

# What llhttp refuses on its own, before the reader sees a whole head, answered with the
# status core.http.request's rules give the same fault (F2, V1); anything else is 400.
_LLHTTP_STATUS: Final = {
    "Invalid `Transfer-Encoding` header value": 501,
    "Request has invalid `Transfer-Encoding`": 501,
    "Invalid HTTP version": 505,
}


class ClientConnection(ClientSide):
    """An asyncio protocol (duck-typed: the loop calls the methods below)."""

    __slots__ = (
        "loop", "transport", "parser", "reader",
        "active", "queue", "parsing", "last", "ready", "feeding", "heads", "no_more", "broken",
        "pause_reasons", "closed", "deadline", "deadline_kind",
        "pending_error", "upgrading", "held", "tunnel", "requests", "client_eof",
        "lingering", "linger_until",
    )

    transport: asyncio.Transport  # set by connection_made

    def __init__(self, server: WorkerContext, port: int, https: bool = False) -> None:
        """`port`: the listening port this connection was accepted on; `https`: on an
        ssl listener (the connection is made once the TLS handshake is done)."""
        super().__init__(server, port, https)
        self.reader = RequestReader(server.limits, self, self.on_body, self.on_message_complete)
        self.parser: httptools.HttpRequestParser | None = None
        self.active: Exchange | None = None
        # Pipelined exchanges waiting their turn (at most PIPELINE_LIMIT): a list, because
        # an idle connection's empty deque would cost 600 bytes.
        self.queue: list[Exchange] = []
        self.parsing: Exchange | None = None  # the exchange whose body is being read
        self.last: Exchange | None = None  # the newest accepted head's exchange
        self.ready: Exchange | None = None  # active, to start once feed_data returns
        self.feeding = False
        self.heads = 0  # request heads accepted on this connection (keepalive_requests)
        self.no_more = False  # accept no further request (the connection is ending)
        self.broken = False  # parse no further bytes (the parser failed, or an upgrade)
        self.pause_reasons = 0
        self.closed = False
        self.deadline = 0.0
        self.deadline_kind = 0
        self.pending_error = 0
        self.upgrading: Exchange | None = None
        self.held = b""  # bytes after an upgrade request, until the 101
        self.tunnel: Tunnel | None = None
        self.requests = 0  # responses completed (metrics: reading vs waiting)
        self.client_eof = False
        self.lingering = False
        self.linger_until = 0.0

    # -- asyncio protocol interface ---------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        server = self.server
        peer = transport.get_extra_info("peername")
        self.client_ip = ip = peer[0] if isinstance(peer, tuple) else "127.0.0.1"
        self.fwd = server.forwarded_fields(ip, self.port, b"https" if self.https else b"http")
        server.connections.add(self)
        server.stats.accepted += 1
        self.deadline = server.clock() + server.client_header_timeout
        self.deadline_kind = CLIENT_HEADER
        server.slow_sweeper.add(self)
        if server.draining:
            transport.close()

    def data_received(self, data: bytes) -> None:
        tunnel = self.tunnel
        if tunnel is not None:
            tunnel.from_client(data)
            return
        if self.lingering:
            self._linger_more()
            return
        if self.upgrading is not None or self.broken:
            return  # never parsed: reading is paused or the connection is ending
        self._feed(data)

    def _feed(self, data: bytes) -> None:
        parser = self.parser
        if parser is None:
            # The connection's first bytes (the parser is made for a client that sends
            # something): the reader reads the first request line's version in them.
            parser = self.parser = httptools.HttpRequestParser(self.reader)
            self.reader.parser = parser
            self.reader.opening = data
        self.feeding = True
        try:
            parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            self._on_upgrade(data[exc.args[0]:])
        except httptools.HttpParserError as exc:
            self._on_parse_error(_LLHTTP_STATUS.get(str(exc), 400))
        finally:
            self.feeding = False
        ready = self.ready
        if ready is not None:
            self.ready = None
            ready.start()

    def eof_received(self) -> bool | None:
        # A client that half-closes after its request still gets its response(s), then
        # we close (exchange_done). A request cut short (head or body) cannot complete.
        if self.lingering:
            self._close()
            return False
        if self.active is None and not self.queue or self.parsing is not None:
            return False
        self.client_eof = True
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        server = self.server
        if not self.closed:  # else _close() has left the sweeper already
            self.closed = True
            server.slow_sweeper.discard(self)
        server.connections.discard(self)
        tunnel = self.tunnel
        if tunnel is not None:
            self.tunnel = None
            tunnel.client_closed()
        self.upgrading = None
        self.ready = None
        active = self.active
        if active is not None:
            self.active = None
            active.client_gone()
        while self.queue:
            self.queue.pop(0).client_gone()
        # The parser holds the reader, which holds us and our bound callbacks: drop both
        # so reference counting frees this connection now (no cycle for the collector).
        self.parser = None
        self.reader.detach()
        self.last = self.parsing = None

    def pause_writing(self) -> None:
        """The client's socket buffer is over the high-water mark."""
        self.write_paused = True
        if self.tunnel is not None:
            self.tunnel.client_paused(True)
        elif self.active is not None:
            self.active.client_write_paused(True)

    def resume_writing(self) -> None:
        self.write_paused = False
        if self.tunnel is not None:
            self.tunnel.client_paused(False)
        elif self.active is not None:
            self.active.client_write_paused(False)

    # -- reader callbacks -------------------------------------------------------------

    def on_begin(self) -> None:
        now = self.started = self.server.clock()
        if self.active is None:
            self.deadline = now + self.server.client_header_timeout
            self.deadline_kind = CLIENT_HEADER

    def on_head(self, head: RequestHead) -> None:
        if self.no_more:
            self.parsing = None
            return
        server = self.server
        self.heads += 1
        # Bytes after an upgrade request are never parsed unless it becomes a tunnel.
        keep_alive = head.keep_alive and not head.websocket
        if self.heads >= server.keepalive_requests:
            keep_alive = False  # keepalive_requests: this is the connection's last request
            self.no_more = True
        exchange = Exchange(self, head, keep_alive)
        self.parsing = exchange
        self.last = exchange
        if self.active is None:
            self.active = exchange
            self.ready = exchange
            if head.has_body:  # nginx's client_body_timeout: between two reads of a body
                self.deadline = server.clock() + server.client_body_timeout
                self.deadline_kind = CLIENT_BODY
            else:
                self.deadline = 0.0
        else:
            self.queue.append(exchange)
            if len(self.queue) >= PIPELINE_LIMIT:
                self.pause_reading_for(PAUSE_PIPELINE)

    def on_body(self, body: bytes) -> None:
        exchange = self.parsing
        if exchange is not None:
            if self.deadline_kind == CLIENT_BODY and self.deadline:
                self.deadline = self.server.clock() + self.server.client_body_timeout
            exchange.feed_body(body)

    def on_message_complete(self) -> None:
        exchange = self.parsing
        if exchange is not None:
            self.parsing = None
            if self.deadline_kind == CLIENT_BODY:
                self.deadline = 0.0  # the body is in; the backend's timeouts apply now
            exchange.body_complete()

    # -- the exchange's interface -----------------------------------------------------

    def write(self, data: bytes) -> None:
        self.transport.write(data)

    def writelines(self, parts: list[bytes]) -> None:
        self.transport.writelines(parts)

    @property
    def draining(self) -> bool:
        return self.server.draining

    def exchange_done(self, exchange: Exchange) -> None:
        """The response of the active exchange is complete (or it failed)."""
        if exchange is not self.active:
            return
        self.active = None
        if self.last is exchange:
            self.last = None  # an idle connection keeps nothing of its last request
        self.requests += 1
        if self.closed:
            return
        if not exchange.keep_alive:
            # The client may still be sending (a refused or unfinished request, an error,
            # bytes after an upgrade): let it finish and read the answer (lingering close).
            self._end(linger=not exchange.request_complete or exchange.status >= 400
                      or exchange.head.websocket or self.pending_error != 0)
            return
        if self.pause_reasons & (PAUSE_BODY | PAUSE_UPSTREAM):
            # Back-pressure of the exchange that just ended (e.g. a 504 while its backend
            # had stopped reading the body): the rest of that body is read and dropped.
            self.resume_reading_for(PAUSE_BODY | PAUSE_UPSTREAM)
        if self.pending_error:
            self._refuse_now(self.pending_error)
            return
        if self.queue:
            nxt = self.queue.pop(0)
            if len(self.queue) < PIPELINE_LIMIT:
                self.resume_reading_for(PAUSE_PIPELINE)
            self.active = nxt
            if self.feeding:
                self.ready = nxt  # started once llhttp has accepted what it is parsing
            else:
                nxt.start()
            return
        if self.server.draining or self.client_eof or self.no_more:
            self._end(linger=False)
            return
        server = self.server
        now = exchange.t_end or self.server.clock()
        if self.parsing is None:
            self.deadline = now + server.client_keepalive_timeout
            self.deadline_kind = KEEPALIVE
        else:
            self.deadline = now + server.client_header_timeout
            self.deadline_kind = CLIENT_HEADER

    def body_too_large(self, exchange: Exchange) -> None:
        """A body went over max_body_size while it was read: 413, then close."""
        if exchange is self.active:
            exchange.reply(413, close=True)
        else:
            self._defer_error(413, exchange)

    def pause_reading_for(self, reason: int) -> None:
        if not self.pause_reasons and not self.closed:
            self.transport.pause_reading()
        self.pause_reasons |= reason

    def resume_reading_for(self, reason: int) -> None:
        if self.pause_reasons & reason:
            self.pause_reasons &= ~reason
            if not self.pause_reasons and not self.closed:
                self.transport.resume_reading()

    def start_tunnel(self, conn: UpstreamConnection) -> None:
        """After 101 Switching Protocols: relay raw bytes both ways."""
        tunnel = self.tunnel = Tunnel(self, conn)
        self.server.slow_sweeper.discard(self)
        self.upgrading = None
        self.active = None
        held = self.held
        self.held = b""
        if held:
            tunnel.from_client(held)
        if self.write_paused:
            tunnel.client_paused(True)
        self.resume_reading_for(PAUSE_BODY | PAUSE_UPSTREAM | PAUSE_PIPELINE | PAUSE_UPGRADE)

    def abort(self, exchange: Exchange) -> None:
        if exchange is self.active:
            self.active = None
        self._close()

    def close(self) -> None:
        self._close()

    def close_if_idle(self) -> None:
        """Draining: an idle keep-alive connection closes now, a busy one after its response."""
        if self.active is None and self.parsing is None and self.tunnel is None:
            self._close()

    def on_deadline(self, kind: int) -> None:
        if kind == CLIENT_BODY:
            active = self.active
            if self.pause_reasons:
                # We stopped reading (back-pressure), not the client: not its timeout.
                self.deadline = self.server.clock() + self.server.client_body_timeout
                self.deadline_kind = CLIENT_BODY
            elif active is not None and active is self.parsing and active.state != DONE:
                active.reply(408, close=True)
            else:
                self._close()
        else:
            # Header or keep-alive timeout: close quietly, as nginx does; LINGER: done.
            self._close()

    # -- internals --------------------------------------------------------------------

    def _on_upgrade(self, rest: bytes) -> None:
        exchange = self.last
        if exchange is None:
            self._on_parse_error()
            return
        if not exchange.head.websocket:
            # A non-websocket upgrade (h2c...) is proxied as plain HTTP: llhttp stopped
            # right after its body-less message, so parsing goes on with a fresh parser.
            parser = self.parser = httptools.HttpRequestParser(self.reader)
            self.reader.parser = parser
            if rest:
                try:
                    parser.feed_data(rest)
                except httptools.HttpParserUpgrade as exc:
                    self._on_upgrade(rest[exc.args[0]:])
                except httptools.HttpParserError as exc:
                    self._on_parse_error(_LLHTTP_STATUS.get(str(exc), 400))
            return
        # Nothing after a websocket handshake is parsed or forwarded before its 101.
        self.no_more = self.broken = True
        self.upgrading = exchange
        self.held = rest
        self.pause_reading_for(PAUSE_UPGRADE)

    def _on_parse_error(self, llhttp_status: int = 400) -> None:
        status = self.reader.refused or llhttp_status
        self.reader.refused = 0
        exchange = self.parsing
        self.parsing = None
        self.no_more = self.broken = True
        if exchange is not None and exchange.state == DONE:
            # Its answer is given (a 404 while the body was being dropped): just end.
            if self.active is None:
                self._end(linger=True)
            return
        if exchange is not None:
            if exchange is self.active:
                if self.ready is exchange:
                    self.ready = None  # never started: nothing reached a backend
                exchange.reply(status, close=True)
                return
            self._defer_error(status, exchange)
            return
        if self.active is None:
            self._refuse_now(status)
        else:
            self._defer_error(status, None)

    def _defer_error(self, status: int, exchange: Exchange | None) -> None:
        """Answer `status` after the active exchange (drop `exchange` and what follows)."""
        self.no_more = self.broken = True
        if exchange is not None and exchange in self.queue:
            while self.queue and self.queue[-1] is not exchange:
                self.queue.pop().client_gone()
            self.queue.pop().client_gone()
        while self.queue:  # requests after an error are never answered
            self.queue.pop().client_gone()
        self.pending_error = status
        self.pause_reading_for(PAUSE_ERROR)

    def _refuse_now(self, status: int) -> None:
        self.transport.write(error_response(status, keep_alive=False, fields=self.server.fields))
        self._end(linger=True)

    def _end(self, linger: bool) -> None:
        """Close after the last response: lingering when the client may still send."""
        if self.closed:
            return
        transport = self.transport
        if not linger or not transport.can_write_eof():
            self._close()
            return
        server = self.server
        self.lingering = True
        self.no_more = self.broken = True
        now = self.server.clock()
        self.linger_until = now + server.lingering_time
        self.deadline = now + server.lingering_timeout
        self.deadline_kind = LINGER
        transport.write_eof()
        if self.pause_reasons:
            self.pause_reasons = 0
            transport.resume_reading()

    def _linger_more(self) -> None:
        """Bytes while lingering: dropped; the wait restarts, within lingering_time."""
        now = self.server.clock()
        if now >= self.linger_until:
            self._close()
            return
        self.deadline = min(now + self.server.lingering_timeout, self.linger_until)
        self.deadline_kind = LINGER

    def _close(self) -> None:
        if not self.closed:
            self.closed = True
            self.server.slow_sweeper.discard(self)
            self.transport.close()
