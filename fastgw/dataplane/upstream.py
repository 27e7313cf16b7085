"""The backend side: one protocol object per upstream connection.

Theory of operation
-------------------
An `UpstreamConnection` carries one exchange at a time (HTTP/1.1 without pipelining to
backends: a failed pipeline cannot be retried safely). While busy it turns llhttp's
events on the response into calls on its exchange (`ResponseSink`); when the response is
complete it goes back to its pool if the framing allowed reuse, else it closes. It knows
nothing of clients, routes or the exchange's states: it carries bytes and reports.

The response head is passed on raw: the bytes of the head are kept as they arrive
(`head_buf`), and `on_header` collects only the fields the gateway acts on
(core.http.response.RESPONSE_SPECIAL). HEAD responses: llhttp cannot be told a response
answers HEAD (httptools#47), so for HEAD the response ends at `on_headers_complete` and
the connection gets a fresh parser.

After a 101, the connection is a tunnel end: `start_tunnel(peer)` makes it relay raw
bytes to the client transport, with back-pressure both ways (see dataplane.tunnel).
"""

from __future__ import annotations

import asyncio
from typing import Final

import httptools

from fastgw.core.http.response import RESPONSE_SPECIAL

__all__ = ["ConnectionOwner", "ResponseSink", "TunnelEnd", "UpstreamConnection"]

# Response field names as sent -> their lower-case name when the proxy acts on them
# (RESPONSE_SPECIAL), else b"". Backends repeat the same spellings: one dict lookup per
# field instead of a lower() and a set lookup. Bounded (junk names just miss).
_SPECIAL_BY_NAME: Final[dict[bytes, bytes]] = {}


class ConnectionOwner:
    """The pool a connection belongs to (dataplane.pool.UpstreamPool)."""

    __slots__ = ()

    def release(self, conn: UpstreamConnection, now: float) -> None:
        raise NotImplementedError

    def forget(self, conn: UpstreamConnection) -> None:
        raise NotImplementedError


class ResponseSink:
    """What a connection tells the exchange it carries (dataplane.exchange.Exchange).

    A base class rather than a typing.Protocol: compiled, the calls are direct.
    """

    __slots__ = ()

    def on_response_head(self, conn: UpstreamConnection, status: int, raw_head: bytes,
                         special: list[tuple[bytes, bytes, bytes]]) -> None:
        raise NotImplementedError

    def on_response_body(self, data: bytes) -> None:
        raise NotImplementedError

    def on_response_complete(self, conn: UpstreamConnection, reusable: bool) -> None:
        raise NotImplementedError

    def flush(self) -> None:
        raise NotImplementedError

    def on_upgraded(self, conn: UpstreamConnection, rest: bytes) -> None:
        raise NotImplementedError

    def on_upstream_lost(self, conn: UpstreamConnection) -> None:
        raise NotImplementedError

    def on_upstream_error(self, conn: UpstreamConnection, reason: str) -> None:
        raise NotImplementedError

    def on_upstream_timeout(self, conn: UpstreamConnection, kind: int) -> None:
        raise NotImplementedError

    def upstream_write_paused(self, paused: bool) -> None:
        raise NotImplementedError


class TunnelEnd:
    """The relay a connection feeds after a 101 (dataplane.tunnel.Tunnel)."""

    __slots__ = ()

    def from_backend(self, data: bytes) -> None:
        raise NotImplementedError

    def backend_paused(self, paused: bool) -> None:
        raise NotImplementedError

    def backend_closed(self) -> None:
        raise NotImplementedError


class UpstreamConnection:
    """An asyncio protocol (duck-typed: the loop calls the methods below)."""

    __slots__ = ("pool", "transport", "parser", "exchange", "requests", "deadline",
                 "deadline_kind", "closed", "status", "head_buf", "special", "awaiting_head",
                 "head_only", "tunnel", "read_paused")

    def __init__(self, pool: ConnectionOwner) -> None:
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.parser: httptools.HttpResponseParser | None = httptools.HttpResponseParser(self)
        self.exchange: ResponseSink | None = None
        self.requests = 0
        self.deadline = 0.0
        self.deadline_kind = 0
        self.closed = False
        self.status = 0
        # Bytes of the response head seen so far, and its RESPONSE_SPECIAL fields.
        self.head_buf = b""
        self.special: list[tuple[bytes, bytes, bytes]] = []
        self.awaiting_head = False
        self.head_only = False
        self.tunnel: TunnelEnd | None = None
        self.read_paused = False

    # -- asyncio protocol interface ---------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self.tunnel is not None:
            self.tunnel.from_backend(data)
            return
        exchange = self.exchange
        if exchange is None:
            # Bytes on an idle connection: the backend is confused or closing. Drop it.
            self.close()
            return
        if self.awaiting_head:
            self.head_buf = self.head_buf + data if self.head_buf else data
        try:
            self.parser.feed_data(data)  # type: ignore[union-attr]
        except httptools.HttpParserUpgrade as exc:
            if self.exchange is exchange:
                exchange.on_upgraded(self, data[exc.args[0]:])
            return
        except httptools.HttpParserError:
            if self.exchange is exchange:
                self.exchange = None
                self.close()
                exchange.on_upstream_error(self, "invalid response")
            return
        exchange.flush()

    def eof_received(self) -> bool:
        return False  # close our side too; a half-closed backend connection is useless

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.parser = None  # breaks the parser <-> self cycle
        self.pool.forget(self)
        tunnel = self.tunnel
        if tunnel is not None:
            self.tunnel = None
            tunnel.backend_closed()
        exchange = self.exchange
        if exchange is not None:
            self.exchange = None
            exchange.on_upstream_lost(self)

    def pause_writing(self) -> None:
        """The backend takes the request more slowly than it comes."""
        if self.exchange is not None:
            self.exchange.upstream_write_paused(True)
        elif self.tunnel is not None:
            self.tunnel.backend_paused(True)

    def resume_writing(self) -> None:
        if self.exchange is not None:
            self.exchange.upstream_write_paused(False)
        elif self.tunnel is not None:
            self.tunnel.backend_paused(False)

    # -- llhttp callbacks -------------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        if not self.awaiting_head:
            return  # trailer fields
        lname = _SPECIAL_BY_NAME.get(name)  # the exact spelling, seen before: no lower()
        if lname is None:
            lname = name.lower()
            if lname not in RESPONSE_SPECIAL:
                lname = b""
            if len(_SPECIAL_BY_NAME) < 4096:
                _SPECIAL_BY_NAME[name] = lname
        if lname:
            self.special.append((lname, name, value))

    def on_headers_complete(self) -> None:
        parser = self.parser
        assert parser is not None
        status = parser.get_status_code()
        self.status = status
        raw = self.head_buf
        end = raw.find(b"\r\n\r\n")  # llhttp insists on CRLF line ends, so this is found
        if status < 200 and status != 101:
            # Interim response (100 Continue, 103): not forwarded; the final head follows.
            self.head_buf = raw[end + 4:]
            self.special = []
            return
        self.awaiting_head = False
        self.head_buf = b""
        exchange = self.exchange
        if exchange is not None:
            exchange.on_response_head(self, status, raw[: end + 2], self.special)
            if self.head_only and self.exchange is exchange:
                # HEAD: there is no body whatever Content-Length says (RFC 9110 §9.3.2).
                keep_alive = parser.should_keep_alive()
                self.parser = httptools.HttpResponseParser(self)
                self._complete(keep_alive)

    def on_body(self, body: bytes) -> None:
        exchange = self.exchange
        if exchange is not None:
            exchange.on_response_body(body)
        else:
            self.close()

    def on_message_complete(self) -> None:
        if self.status < 200 or self.exchange is None:
            return
        self._complete(self.parser.should_keep_alive())  # type: ignore[union-attr]

    # -- the exchange's interface -----------------------------------------------------

    def begin(self, exchange: ResponseSink, head_only: bool) -> None:
        """Carry `exchange` (its request head is about to be written)."""
        self.exchange = exchange
        self.head_only = head_only
        self.requests += 1
        self.status = 0
        self.awaiting_head = True
        self.head_buf = b""
        self.special = []

    def _complete(self, keep_alive: bool) -> None:
        exchange = self.exchange
        self.exchange = None
        if exchange is not None:
            exchange.on_response_complete(self, keep_alive and not self.closed)

    def write(self, data: bytes) -> None:
        self.transport.write(data)  # type: ignore[union-attr]

    def writelines(self, parts: list[bytes]) -> None:
        self.transport.writelines(parts)  # type: ignore[union-attr]

    def detach(self) -> None:
        """The exchange gives this connection up (client gone, timeout): not reusable."""
        self.exchange = None
        self.close()

    def start_tunnel(self, tunnel: TunnelEnd) -> None:
        self.exchange = None
        self.deadline = 0.0
        self.tunnel = tunnel
        self.pool.forget(self)

    def pause_reading(self) -> None:
        if not self.read_paused and self.transport is not None and not self.closed:
            self.read_paused = True
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.read_paused and self.transport is not None and not self.closed:
            self.read_paused = False
            self.transport.resume_reading()

    def on_deadline(self, kind: int) -> None:
        exchange = self.exchange
        if exchange is not None:
            exchange.on_upstream_timeout(self, kind)
        else:
            self.close()  # idle timeout

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.pool.forget(self)
            if self.transport is not None:
                self.transport.close()
