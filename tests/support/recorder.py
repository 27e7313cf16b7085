"""A recording HTTP/1.1 backend: every byte a proxy sends it, kept and parsed.

Edge-security tests put it behind fastgw (or nginx) and then look at what arrived: the
requests as a strict HTTP/1.1 server (httptools' llhttp) parses them, the raw bytes of each
connection, and the bytes it could not parse at all. A request that arrives without the
proxy's own head (`proxy_head_problems`), or bytes it cannot parse, mean the proxy let
client bytes through that it did not frame itself: request smuggling.

>>> with RecordingBackend() as backend:
...     ...  # point a gateway at backend.address, send requests
...     mark = backend.mark()
...     ...
...     assert backend.since(mark).requests == []

It runs in a thread with its own event loop (the tests stay synchronous), listens on
127.0.0.1:0, and `stop()` closes everything and joins the thread within a bound.

How the stream is cut into requests: the parser is fed one line at a time while it reads a
head or a chunked body, and exactly the remaining Content-Length bytes while it reads a
sized body. Every message then ends at the end of a piece, so the raw head of each request
is known exactly even when requests are pipelined in one packet.

Upgrades: `websocket="accept"` answers a WebSocket handshake with 101 and records what
follows as tunnel bytes; `"refuse"` answers it like any request (200 by default: a backend
that does not do WebSocket) and `"reject"` answers 400; in both cases, as a plain HTTP
server would, it reads the declared body and parses what follows as the next request,
which is what makes a proxy's forwarding of unparsed bytes visible.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import hashlib
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal, Self

import httptools
import orjson

from fastgw import __version__

__all__ = [
    "FASTGW_VIA",
    "Activity",
    "Mark",
    "ParseError",
    "RecordedRequest",
    "RecordingBackend",
    "proxy_head_problems",
    "reply",
]

FASTGW_VIA = f"1.1 fastgw/{__version__}"
WebSocketMode = Literal["accept", "refuse", "reject"]
_WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
# Raw bytes kept per connection (counting goes on past it): a test that streams 256 MiB
# at a proxy must not make the recorder the thing that runs out of memory.
RAW_KEEP = 16 << 20
# RFC 9110 §5.6.2: a method is a token. llhttp parses only the methods it has names for.
_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")


@dataclass
class RecordedRequest:
    connection: int  # index of the connection (in accept order) it arrived on
    method: str
    target: str
    version: str  # "1.1", as llhttp reports it
    headers: list[tuple[str, str]]  # names as sent, in order (latin-1)
    raw_head: bytes  # request line, fields and the blank line, exactly as received
    body: bytes = b""
    complete: bool = False  # the whole body has arrived
    number: int = -1  # its place among all requests the backend received
    arrived: float = 0.0  # time.monotonic() at the end of the head
    finished: float = 0.0  # ... at the end of the body

    def all(self, name: str) -> list[str]:
        lname = name.lower()
        return [v for n, v in self.headers if n.lower() == lname]

    def header(self, name: str) -> str | None:
        values = self.all(name)
        return values[0] if values else None

    def __repr__(self) -> str:
        return (f"<RecordedRequest #{self.connection} {self.raw_head[:400]!r} "
                f"body={self.body[:120]!r}{'' if self.complete else ' (incomplete)'}>")


@dataclass
class ParseError:
    connection: int
    reason: str
    data: bytes  # from the start of the message that failed to what had arrived (capped)


@dataclass
class _Connection:
    index: int
    raw: bytearray = field(default_factory=bytearray)
    received: int = 0  # every byte, also those past RAW_KEEP
    tunnel: bytearray = field(default_factory=bytearray)  # after a 101
    open: bool = True


@dataclass(frozen=True)
class Mark:
    """A point in the recorder's history (see `RecordingBackend.since`)."""

    requests: int
    connections: int
    received: int
    errors: int


@dataclass
class Activity:
    """What reached the backend after a mark."""

    requests: list[RecordedRequest]
    connections: int  # connections accepted
    received: int  # bytes received, on any connection
    parse_errors: list[ParseError]

    def unframed(self, via: str = FASTGW_VIA) -> list[tuple[RecordedRequest, list[str]]]:
        """The requests that do not carry the proxy's own head, with what is wrong."""
        out = []
        for request in self.requests:
            problems = proxy_head_problems(request, via)
            if problems:
                out.append((request, problems))
        return out


def reply(status: int = 200, body: bytes = b"", headers: list[tuple[str, str]] | None = None,
          *, close: bool = False, head_only: bool = False) -> bytes:
    """A complete HTTP/1.1 response with a Content-Length."""
    lines = [f"HTTP/1.1 {status} {'OK' if status == 200 else 'Status'}"]
    lines += [f"{n}: {v}" for n, v in headers or []]
    lines.append(f"Content-Length: {len(body)}")
    if close:
        lines.append("Connection: close")
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    return head if head_only else head + body


def default_reply(request: RecordedRequest) -> bytes:
    """200, a small JSON body saying which request this was; keep-alive unless asked."""
    body = orjson.dumps({"request": request.number, "connection": request.connection,
                         "method": request.method, "target": request.target})
    return reply(200, body, [("Content-Type", "application/json")],
                 close=_wants_close(request), head_only=request.method == "HEAD")


def _wants_close(request: RecordedRequest) -> bool:
    tokens = {t.strip().lower() for v in request.all("connection") for t in v.split(",")}
    if request.version == "1.0":
        return "keep-alive" not in tokens
    return "close" in tokens


def proxy_head_problems(request: RecordedRequest, via: str = FASTGW_VIA) -> list[str]:
    """Why `request` is not a head the proxy wrote itself (empty: it is).

    The rules of issue 9's "gateway head": request line `METHOD SP target SP HTTP/1.1`;
    exactly one Host; X-Request-Id, X-Forwarded-For and `Via: <via>` present; at most one
    framing field (one Content-Length or `Transfer-Encoding: chunked`), no other
    Transfer-Encoding; no `_` in a field name; Connection absent, `keep-alive`, or
    `upgrade` on a WebSocket handshake.
    """
    problems = []
    line = request.raw_head.split(b"\r\n", 1)[0]
    parts = line.split(b" ")
    if len(parts) != 3 or not _TOKEN.fullmatch(parts[0]) or not parts[1] \
            or parts[2] != b"HTTP/1.1":
        problems.append(f"request line {line[:100]!r}")
    if b"\n" in request.raw_head.replace(b"\r\n", b""):
        problems.append("bare LF in the head")
    if len(request.all("host")) != 1:
        problems.append(f"{len(request.all('host'))} Host fields")
    for name in ("x-request-id", "x-forwarded-for"):
        if not request.all(name):
            problems.append(f"no {name}")
    if via not in [v.strip() for value in request.all("via") for v in value.split(",")]:
        problems.append(f"no Via {via!r}")
    lengths = request.all("content-length")
    codings = request.all("transfer-encoding")
    if len(lengths) + len(codings) > 1:
        problems.append(f"framing fields: Content-Length {lengths}, Transfer-Encoding {codings}")
    if any(c.strip().lower() != "chunked" for c in codings):
        problems.append(f"Transfer-Encoding {codings}")
    if lengths and not lengths[0].isdigit():
        problems.append(f"Content-Length {lengths[0]!r}")
    underscored = [n for n, _ in request.headers if "_" in n]
    if underscored:
        problems.append(f"underscores in {underscored}")
    connection = [v.strip().lower() for v in request.all("connection")]
    websocket = [v.strip().lower() for v in request.all("upgrade")] == ["websocket"]
    if connection not in ([], ["keep-alive"]) and not (connection == ["upgrade"] and websocket):
        problems.append(f"Connection {request.all('connection')}")
    return problems


Responder = Callable[[RecordedRequest], "bytes | None"]


class RecordingBackend:
    """A TCP server on 127.0.0.1:0 in a thread; see the module docstring.

    `respond(request)` returns the response bytes (None: never answer);
    `delay` (seconds, or a function of the request) holds each answer back; responses on
    one connection keep request order. All three may be changed while it runs.
    """

    def __init__(self, respond: Responder | None = None, *, websocket: WebSocketMode = "refuse",
                 delay: float | Callable[[RecordedRequest], float] = 0.0,
                 stop_timeout: float = 5.0) -> None:
        self.respond: Responder = respond or default_reply
        self.websocket: WebSocketMode = websocket
        self.delay = delay
        self.stop_timeout = stop_timeout
        self.port = 0
        self._cond = threading.Condition()
        self._connections: list[_Connection] = []
        self._requests: list[RecordedRequest] = []
        self._errors: list[ParseError] = []
        self._received = 0
        self._protocols: set[_RecorderProtocol] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.base_events.Server | None = None

    # -- life cycle ---------------------------------------------------------------------

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> RecordingBackend:
        started = threading.Event()
        failure: list[OSError] = []

        def run() -> None:
            loop = self._loop = asyncio.new_event_loop()
            try:
                self._server = loop.run_until_complete(
                    loop.create_server(lambda: _RecorderProtocol(self), "127.0.0.1", 0))
                self.port = self._server.sockets[0].getsockname()[1]
            except OSError as exc:  # reported to start()'s caller
                failure.append(exc)
                started.set()
                loop.close()
                return
            started.set()
            try:
                loop.run_forever()
            finally:
                loop.run_until_complete(loop.shutdown_asyncgens())
                loop.close()

        self._thread = threading.Thread(target=run, name="recording-backend", daemon=True)
        self._thread.start()
        if not started.wait(self.stop_timeout) or failure:
            raise RuntimeError(f"recording backend did not start: {failure}")
        return self

    def stop(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        self._loop = self._thread = None

        def shut() -> None:
            if self._server is not None:
                self._server.close()
            for protocol in list(self._protocols):
                protocol.transport.abort()
            loop.call_soon(loop.stop)

        loop.call_soon_threadsafe(shut)
        thread.join(self.stop_timeout)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def reset(self, timeout: float = 5.0) -> None:
        """Close every connection (a proxy's pooled ones too) and forget all records.

        A proxy may open a new connection meanwhile (a retry of a request whose
        connection was just closed): those are closed too, until none is left."""
        loop = self._loop
        if loop is not None:
            def close_all() -> None:
                for protocol in list(self._protocols):
                    protocol.transport.abort()  # close() would wait for a peer that does not read

            deadline = time.monotonic() + timeout
            while True:
                loop.call_soon_threadsafe(close_all)
                if self.wait_for(lambda: self.open_connections == 0, 0.2):
                    break
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{self.open_connections} connections still open")
        with self._cond:
            self._connections.clear()
            self._requests.clear()
            self._errors.clear()
            self._received = 0

    # -- what was recorded --------------------------------------------------------------

    @property
    def accepted(self) -> int:
        return len(self._connections)

    @property
    def open_connections(self) -> int:
        with self._cond:
            return sum(1 for c in self._connections if c.open)

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._cond:
            return list(self._requests)

    @property
    def parse_errors(self) -> list[ParseError]:
        with self._cond:
            return list(self._errors)

    @property
    def received(self) -> int:
        return self._received

    def raw(self, connection: int) -> bytes:
        """The bytes received on one connection (the first RAW_KEEP of them)."""
        with self._cond:
            return bytes(self._connections[connection].raw)

    def tunnel(self, connection: int) -> bytes:
        """The bytes received on one connection after its 101 (the first RAW_KEEP)."""
        with self._cond:
            return bytes(self._connections[connection].tunnel)

    def mark(self) -> Mark:
        with self._cond:
            return Mark(len(self._requests), len(self._connections), self._received,
                        len(self._errors))

    def since(self, mark: Mark) -> Activity:
        with self._cond:
            return Activity(list(self._requests[mark.requests:]),
                            len(self._connections) - mark.connections,
                            self._received - mark.received, list(self._errors[mark.errors:]))

    def wait_for(self, predicate: Callable[[], bool], timeout: float) -> bool:
        """Wait (bounded) until `predicate()` holds; re-checked on every recorded event."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not predicate():
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(min(left, 0.1))
            return True

    # -- called from the protocol (backend thread) -------------------------------------

    def _changed(self) -> None:
        self._cond.notify_all()

    def _answer_delay(self, request: RecordedRequest) -> float:
        delay = self.delay
        return delay(request) if callable(delay) else delay


@functools.lru_cache(maxsize=256)
def _llhttp_knows(method: bytes) -> bool:
    try:
        probe = method + b" / HTTP/1.1\r\nHost: x\r\n\r\n"  # PRI fails only after a field
        httptools.HttpRequestParser(_NoCallbacks()).feed_data(probe)
    except httptools.HttpParserUpgrade:
        return True  # CONNECT
    except httptools.HttpParserError:
        return False
    return True


class _NoCallbacks:
    pass


class _RecorderProtocol(asyncio.Protocol):
    """One backend connection: record, cut into requests, answer."""

    def __init__(self, backend: RecordingBackend) -> None:
        self.backend = backend
        self.transport: asyncio.Transport = None  # type: ignore[assignment]
        self.record: _Connection = None  # type: ignore[assignment]
        self.parser = httptools.HttpRequestParser(self)
        self.pending = b""
        self.message = bytearray()  # raw bytes of the message being parsed
        self.in_message = False  # llhttp has begun a message and not completed it
        self.method_sent = ""  # a method llhttp does not know, parsed as GET
        self.current: RecordedRequest | None = None
        self.url = b""
        self.headers: list[tuple[str, str]] = []
        self.sized_left = 0  # Content-Length body bytes still due (cut the feed there)
        self.upgrade_body_left = 0  # body of a refused upgrade, read past llhttp
        self.tunnel = False
        self.failed = False
        self.closing = False
        self.next_answer = 0.0  # loop time: answers on one connection keep their order

    # -- asyncio ------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        backend = self.backend
        with backend._cond:
            self.record = _Connection(len(backend._connections))
            backend._connections.append(self.record)
            backend._protocols.add(self)
            backend._changed()

    def connection_lost(self, exc: Exception | None) -> None:
        backend = self.backend
        with backend._cond:
            self.record.open = False
            backend._protocols.discard(self)
            backend._changed()
        self.parser = None  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        backend = self.backend
        with backend._cond:
            record = self.record
            record.received += len(data)
            backend._received += len(data)
            if len(record.raw) < RAW_KEEP:
                record.raw += data[: RAW_KEEP - len(record.raw)]
            if self.tunnel:
                if len(record.tunnel) < RAW_KEEP:
                    record.tunnel += data[: RAW_KEEP - len(record.tunnel)]
            elif not self.failed:
                self.pending += data
                self._parse()
            backend._changed()

    # -- cutting the stream (holding backend._cond) -------------------------------------

    def _parse(self) -> None:
        while self.pending and not self.failed and not self.tunnel:
            if self.upgrade_body_left:
                take = self.pending[: self.upgrade_body_left]
                self.pending = self.pending[len(take):]
                self.upgrade_body_left -= len(take)
                assert self.current is not None
                self.current.body += take
                if not self.upgrade_body_left:
                    self._complete(self.current)
                continue
            newline = -1
            if self.sized_left:
                size = min(self.sized_left, len(self.pending))
            else:
                newline = self.pending.find(b"\n")
                size = newline + 1 if newline != -1 else len(self.pending)
            fed = piece = self.pending[:size]
            if not self.in_message and piece[:1] not in (b"\r", b"\n"):
                space = piece.find(b" ")
                if space == -1 and newline == -1 and len(piece) < 64:
                    return  # the method is not all here yet
                method = piece[:space] if space != -1 else b""
                if method and _TOKEN.fullmatch(method) and not _llhttp_knows(method):
                    # A valid method llhttp has no name for: parse as GET, record as sent.
                    self.method_sent = method.decode("latin-1")
                    fed = b"GET" + piece[space:]
            self.pending = self.pending[size:]
            self.message += piece
            try:
                self.parser.feed_data(fed)
            except httptools.HttpParserUpgrade as exc:
                rest = piece[exc.args[0]:] + self.pending
                self.pending = b""
                self._on_upgrade(rest)
            except httptools.HttpParserError as exc:
                self._on_error(str(exc) or exc.__class__.__name__)

    def _on_upgrade(self, rest: bytes) -> None:
        request = self.current
        assert request is not None
        self.message = bytearray()
        self.sized_left = 0
        websocket = [v.strip().lower() for v in request.all("upgrade")] == ["websocket"]
        if websocket and self.backend.websocket == "accept":
            self.tunnel = True
            request.complete = True
            request.finished = time.monotonic()
            self.record.tunnel += rest[:RAW_KEEP]
            key = (request.header("sec-websocket-key") or "").strip().encode()
            accept = base64.b64encode(hashlib.sha1(key + _WS_GUID).digest())
            self.transport.write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                                 b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept
                                 + b"\r\n\r\n")
            return
        # Not switching: a plain HTTP server reads the declared body and goes on parsing.
        self.parser = httptools.HttpRequestParser(self)
        length = request.header("content-length")
        declared = int(length.strip()) if length is not None and length.strip().isdigit() else 0
        request.complete = False
        self.upgrade_body_left = declared
        self.pending = rest
        if not declared:
            self._complete(request)

    def _on_error(self, reason: str) -> None:
        self.failed = True
        data = bytes(self.message) + self.pending
        self.backend._errors.append(ParseError(self.record.index, reason, data[:65536]))
        self.pending = b""
        self._schedule(reply(400, b"recorder: unparsable request", close=True), True, 0.0)

    # -- httptools callbacks ------------------------------------------------------------

    def on_message_begin(self) -> None:
        self.in_message = True
        self.url = b""
        self.headers = []

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name.decode("latin-1"), value.decode("latin-1")))

    def on_headers_complete(self) -> None:
        parser = self.parser
        method, self.method_sent = self.method_sent or parser.get_method().decode("latin-1"), ""
        request = RecordedRequest(
            connection=self.record.index,
            method=method,
            target=self.url.decode("latin-1"),
            version=parser.get_http_version(),
            headers=self.headers,
            raw_head=bytes(self.message),
            arrived=time.monotonic(),
        )
        self.current = request
        request.number = len(self.backend._requests)
        self.backend._requests.append(request)
        if not request.all("transfer-encoding"):
            length = request.header("content-length")
            if length is not None and length.strip().isdigit():
                self.sized_left = int(length.strip())

    def on_body(self, body: bytes) -> None:
        request = self.current
        assert request is not None
        request.body += body
        if self.sized_left:
            self.sized_left = max(0, self.sized_left - len(body))

    def on_message_complete(self) -> None:
        request = self.current
        assert request is not None
        self.message = bytearray()
        self.sized_left = 0
        self.in_message = False
        if self.parser.should_upgrade():
            return  # _on_upgrade decides: tunnel, or an ordinary answer
        self._complete(request)

    # -- answering ----------------------------------------------------------------------

    def _complete(self, request: RecordedRequest) -> None:
        request.complete = True
        request.finished = time.monotonic()
        backend = self.backend
        close = _wants_close(request)
        if request.all("upgrade") and backend.websocket == "reject":
            response: bytes | None = reply(400, b"recorder: no upgrade", close=True)
            close = True
        else:
            response = backend.respond(request)
        if response is None:
            return  # this backend holds the request forever
        self._schedule(response, close, backend._answer_delay(request))

    def _schedule(self, response: bytes, close: bool, delay: float) -> None:
        loop = asyncio.get_running_loop()
        at = max(loop.time() + delay, self.next_answer)
        self.next_answer = at
        loop.call_at(at, self._send, response, close)

    def _send(self, response: bytes, close: bool) -> None:
        if self.transport.is_closing():
            return
        self.transport.write(response)
        if close:
            self.closing = True
            self.transport.close()
