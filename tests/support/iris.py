"""InterSystems IRIS Atelier REST API emulator: the backend of demos, e2e tests and benchmarks.

Run:  python -m tests.support.iris --port 52773 --id A [--user U --password P] [--latency-ms N] ...

Design notes (why it looks the way it does):
* It is the *backend* in load benchmarks on a small box, so it must cost far less CPU than
  the gateway under test: raw asyncio.Protocol + one httptools parser per connection, uvloop,
  and the hot `GET|HEAD /api/atelier/` answered from pre-built bytes (rebuilt once a second,
  together with the Date header).
* Responses leave strictly in request order even when some are delayed (latency injection,
  /_emulator/delay) or streamed (/_emulator/bytes): every connection has an ordered queue of
  slots, and only the head slot may write.
* Nothing is ever materialised at the size a client asks for: /_emulator/bytes streams a
  shared 64 KiB chunk under pause_writing/resume_writing back-pressure, /_emulator/sink only
  counts body bytes.
* Malformed input never raises out of the protocol: 400 (or 413/414/431) and close.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import fnmatch
import hashlib
import http
import os
import random
import signal
import ssl
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, unquote

import httptools
import orjson

from tests.support import wsframe

__all__ = ["IrisOptions", "IrisStats", "IrisServer", "start_iris", "main"]

DEFAULT_VERSION = (
    "IRIS for UNIX (Ubuntu Server LTS for x86-64 Containers) 2024.1 (Build 267U) "
    "Thu Apr 11 2024 14:10:00 EDT"
)
API_LEVEL = 8
NAMESPACES = ("%SYS", "USER")
_NS_DB = {"%SYS": "IRISSYS", "USER": "USER"}

CT_JSON = b"application/json; charset=utf-8"
CT_OCTET = b"application/octet-stream"
_CHUNK = bytes(range(256)) * 256  # 64 KiB; byte i of any /bytes body is i % 256
_CHUNK2 = _CHUNK + _CHUNK[:256]  # chunked bodies slice any 64 KiB window at offset i % 256
_MAX_URL = 8 * 1024
_MAX_HEADERS = 64 * 1024
_ECHO_KEEP = 64 * 1024
_STREAM_BUDGET = 64  # chunks written per loop iteration, so one fast reader can't starve others
_QUEUE_HIGH, _QUEUE_LOW = 32, 8  # pipelined responses queued before we stop reading
_STATUS_LINES = {
    s.value: b"HTTP/1.1 %d %s\r\n" % (s.value, s.phrase.encode()) for s in http.HTTPStatus
}
_RSV_NS = {ns.upper(): ns for ns in NAMESPACES}


def _status_line(status: int) -> bytes:
    return _STATUS_LINES.get(status) or b"HTTP/1.1 %d Unknown\r\n" % status


def _ts() -> str:
    now = time.time()
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(now)) + ".%03d" % (now % 1 * 1000)


def envelope(result: Any, *, console: list[str] | None = None,
             errors: list[dict[str, Any]] | None = None) -> bytes:
    summary = errors[0]["error"] if errors else ""
    return orjson.dumps({"status": {"errors": errors or [], "summary": summary},
                         "console": console or [], "result": result})


def atelier_error(code: int, text: str, ident: str = "", params: list[str] | None = None) -> bytes:
    err = {"error": f"ERROR #{code}: {text}", "code": code, "domain": "%ObjectErrors",
           "id": ident, "params": params or []}
    return envelope({}, errors=[err])


@dataclass(slots=True)
class IrisOptions:
    id: str = "A"
    version: str | None = None
    user: str | None = None
    password: str | None = None
    latency_ms: float = 0.0
    error_rate: float = 0.0
    fail_status: int = 500
    keepalive_timeout: float = 75.0
    max_body: int = 32 * 1024 * 1024
    # HTTPS: a certificate and key (PEM files); with tls_client_ca, a client certificate
    # signed by that CA is required (mutual TLS).
    tls_cert: str | None = None
    tls_key: str | None = None
    tls_client_ca: str | None = None

    def __post_init__(self) -> None:
        # The id ends up in a response header: refuse anything that could split it.
        if not self.id or any(ord(c) < 0x21 or ord(c) > 0x7E for c in self.id):
            raise ValueError("--id must be printable ASCII without spaces")
        if not 0.0 <= self.error_rate <= 1.0:
            raise ValueError("--error-rate must be within [0, 1]")
        if not 100 <= self.fail_status <= 599:
            raise ValueError("--fail-status must be an HTTP status")
        if (self.user is None) != (self.password is None):
            raise ValueError("--user and --password go together")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("--tls-cert and --tls-key go together")


@dataclass(slots=True)
class IrisStats:
    connections_accepted: int = 0
    active_connections: int = 0
    requests: int = 0
    cacheable: int = 0  # requests to /_emulator/cacheable (proxy-cache tests count them)

    def as_dict(self) -> dict[str, int]:
        return {"connections_accepted": self.connections_accepted,
                "active_connections": self.active_connections, "requests": self.requests,
                "cacheable": self.cacheable}


@dataclass(slots=True)
class _Doc:
    name: str
    db: str
    cat: str
    content: list[str]
    enc: bool = False
    ts: str = field(default_factory=_ts)
    etag: str = ""

    def __post_init__(self) -> None:
        self.refresh()

    def refresh(self) -> None:
        self.ts = _ts()
        digest = hashlib.sha1(orjson.dumps([self.enc, self.content])).hexdigest()[:20]
        self.etag = f'"{digest}"'

    def as_result(self, with_content: bool = True) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "db": self.db, "ts": self.ts, "upd": True,
                               "cat": self.cat, "status": "", "enc": self.enc, "flags": 0}
        out["content"] = self.content if with_content else []
        return out


def _doc_cat(name: str) -> str:
    ext = name.rsplit(".", 1)[-1].lower() if "." in name else ""
    if ext == "cls":
        return "CLS"
    if ext in ("mac", "int", "inc", "bas", "mvi", "mvb"):
        return "RTN"
    if "/" in name or ext in ("csp", "csr", "js", "css", "html", "htm"):
        return "CSP"
    return "OTH"


class _HttpError(Exception):
    """Raised from parser callbacks to abort parsing (httptools re-raises an HttpParserError)."""


class _Slot:
    """One response in a connection's ordered output queue."""

    __slots__ = ("data", "remaining", "close", "ready", "chunk", "pos")

    def __init__(self, data: bytes, remaining: int, close: bool, ready: bool,
                 chunk: int = 0) -> None:
        self.data = data
        self.remaining = remaining  # bytes of /_emulator/bytes body still to stream
        self.close = close
        self.ready = ready
        self.chunk = chunk  # > 0: send the body chunked (RFC 9112 §7.1) in pieces this big
        self.pos = 0  # body bytes sent so far (keeps byte i == i % 256 across chunks)


class IrisServer:
    """One emulated IRIS instance. Create with `await start_iris(...)`."""

    def __init__(self, options: IrisOptions) -> None:
        self.options = options
        self.id = options.id
        version = options.version or DEFAULT_VERSION
        # Each instance must be distinguishable from the GetServer body alone: "{id}" in a
        # custom version is replaced by the id, otherwise the id is appended.
        self.version = (version.replace("{id}", options.id) if "{id}" in version
                        else f"{version} [{options.id}]")
        self.stats = IrisStats()
        self.host = "127.0.0.1"
        self.port = 0
        self.now = 0.0  # coarse clock (1 s tick) for cheap idle bookkeeping
        self.latency = options.latency_ms / 1000.0
        self.error_rate = options.error_rate
        self.auth: bytes | None = None
        self._credentials: bytes | None = None
        if options.user is not None and options.password is not None:
            self._credentials = f"{options.user}:{options.password}".encode()
            self.auth = b"Basic " + base64.b64encode(self._credentials)
        self.conns: set[IrisProtocol] = set()
        self.docs: dict[tuple[str, str], _Doc] = {}
        self._seed_docs()
        self._common = b""
        self._cookie = b""
        self.hot_get = b""
        self.hot_head = b""
        self._server: asyncio.AbstractServer | None = None
        self._tick_handle: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"

    def _seed_docs(self) -> None:
        for doc in (
            _Doc("User.Person.cls", "USER", "CLS", [
                "Class User.Person Extends %Persistent", "{", "", "Property Name As %String;",
                "", "}"]),
            _Doc("xyz.mac", "USER", "RTN", ["ROUTINE xyz", "xyz ;", '   w "hello"']),
            _Doc("/csp/user/menu.csp", "USER", "CSP", ["<html><body>menu</body></html>"]),
            _Doc("%Api.DocDB.cls", "IRISLIB", "CLS",
                 ["Class %Api.DocDB Extends %CSP.REST", "{", "}"]),
        ):
            ns = "%SYS" if doc.name.startswith("%") else "USER"
            self.docs[(ns, doc.name)] = doc

    def _tls(self) -> ssl.SSLContext | None:
        o = self.options
        if o.tls_cert is None or o.tls_key is None:
            return None
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(o.tls_cert, o.tls_key)
        if o.tls_client_ca:
            ctx.load_verify_locations(o.tls_client_ca)
            ctx.verify_mode = ssl.CERT_REQUIRED

        def note_sni(conn: Any, name: str | None, _: ssl.SSLContext) -> None:
            conn.requested_sni = name  # echoed by /_emulator/echo

        ctx.sni_callback = note_sni
        return ctx

    @property
    def scheme(self) -> str:
        return "https" if self.options.tls_cert else "http"

    async def _start(self, host: str, port: int) -> None:
        loop = self._loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: IrisProtocol(self), host, port, backlog=4096, reuse_address=True,
            ssl=self._tls()
        )
        sock = self._server.sockets[0]
        self.host, self.port = sock.getsockname()[:2]
        token = hashlib.sha1(f"{self.id}:{self.port}:{os.getpid()}".encode()).hexdigest()[:10]
        self._cookie = (b"Set-Cookie: CSPSESSIONID-SP-%d-UP-api-atelier-=%s; path=/api/atelier/;"
                        b" HttpOnly\r\n" % (self.port, token.upper().encode()))
        self._tick()

    def _tick(self) -> None:
        """Once a second: refresh Date, rebuild the hot responses, reap idle keep-alives."""
        assert self._loop is not None
        self.now = self._loop.time()
        date = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime()).encode()
        self._common = b"X-Iris-Id: %s\r\nDate: %s\r\n" % (self.id.encode(), date)
        body = self.getserver_body()
        self.hot_get = self.build(200, body, extra=self._cookie)
        self.hot_head = self.build(200, body, head=True, extra=self._cookie)
        timeout = self.options.keepalive_timeout
        if timeout > 0:
            for conn in [c for c in self.conns if c.idle_since(self.now) > timeout]:
                conn.close_idle()
        self._tick_handle = self._loop.call_later(1.0, self._tick)

    def getserver_body(self) -> bytes:
        return envelope({"content": {
            "version": self.version, "id": self.id, "api": API_LEVEL,
            "features": [{"name": "DEEPSEE", "enabled": True},
                         {"name": "ENSEMBLE", "enabled": True},
                         {"name": "HEALTHSHARE", "enabled": False}],
            "namespaces": list(NAMESPACES)}})

    def build(self, status: int, body: bytes = b"", *, head: bool = False, keep: bool = True,
              extra: bytes = b"", ctype: bytes = CT_JSON) -> bytes:
        """Serialise a complete response (HEAD: same headers, no body)."""
        no_body = status in (204, 304) or status < 200
        parts = [_status_line(status)]
        if not no_body:
            parts.append(b"Content-Type: %s\r\nContent-Length: %d\r\n" % (ctype, len(body)))
        parts += (self._common, extra,
                  b"Connection: keep-alive\r\n\r\n" if keep else b"Connection: close\r\n\r\n")
        if not (head or no_body):
            parts.append(body)
        return b"".join(parts)

    def check_auth(self, value: bytes | None) -> bool:
        if self.auth is None or value == self.auth:
            return True
        if not value:
            return False
        scheme, _, token = value.strip().partition(b" ")
        if scheme.lower() != b"basic":
            return False
        try:
            return base64.b64decode(token.strip(), validate=True) == self._credentials
        except (binascii.Error, ValueError):
            return False

    async def close(self) -> None:
        if self._tick_handle is not None:
            self._tick_handle.cancel()
            self._tick_handle = None
        if self._server is not None:
            self._server.close()
            for conn in list(self.conns):
                conn.abort()
            await self._server.wait_closed()
            self._server = None


async def start_iris(host: str = "127.0.0.1", port: int = 0, **options: Any) -> IrisServer:
    """Start an emulator in the running loop. Options are IrisOptions fields (id, user, ...)."""
    server = IrisServer(IrisOptions(**options))
    await server._start(host, port)
    return server


class IrisProtocol(asyncio.Protocol):
    __slots__ = (
        "_srv", "_transport", "_parser", "_url", "_headers", "_hdr_size", "_body",
        "_body_len", "_body_mode", "_queue", "_out", "_in_feed", "_close_pending",
        "_closing", "_write_paused", "_read_paused", "_dead", "_last", "_in_message", "_ws",
        "_err",
    )

    def __init__(self, server: IrisServer) -> None:
        self._srv = server
        self._transport: asyncio.Transport | None = None
        self._parser = httptools.HttpRequestParser(self)
        self._url = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._hdr_size = 0
        self._body: bytearray | None = None
        self._body_len = 0
        self._body_mode = -1  # -1 undecided, 0 count only, 1 keep up to _ECHO_KEEP, 2 keep all
        self._queue: deque[_Slot] = deque()
        self._out: list[bytes] = []
        self._in_feed = False
        self._close_pending = False
        self._closing = False  # no further requests are accepted on this connection
        self._write_paused = False
        self._read_paused = False
        self._dead = False
        self._last = server.now
        self._in_message = False
        self._ws: wsframe.EchoSession | None = None
        self._err = 400  # status for the next parser error (callbacks raise 413/414/431)

    # -- connection lifecycle -------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, hence no isinstance check.
        self._transport = transport  # type: ignore[assignment]
        # Larger buffers than asyncio's 64 KiB default: fewer pause/resume round trips
        # when streaming multi-GiB bodies.
        transport.set_write_buffer_limits(  # type: ignore[attr-defined]
            high=1024 * 1024, low=256 * 1024)
        srv = self._srv
        srv.stats.connections_accepted += 1
        srv.stats.active_connections += 1
        srv.conns.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self._dead = True
        self._queue.clear()
        srv = self._srv
        srv.stats.active_connections -= 1
        srv.conns.discard(self)

    def pause_writing(self) -> None:
        self._write_paused = True
        self._update_reading()

    def resume_writing(self) -> None:
        self._write_paused = False
        self._pump()
        self._update_reading()

    def idle_since(self, now: float) -> float:
        if self._ws is not None or self._queue or self._in_message:
            return 0.0
        return now - self._last

    def close_idle(self) -> None:
        if self._transport is not None and not self._dead:
            self._transport.close()

    def abort(self) -> None:
        if self._transport is not None and not self._dead:
            self._transport.abort()

    def data_received(self, data: bytes) -> None:
        self._last = self._srv.now
        if self._closing and self._ws is None:
            return  # after `Connection: close` (or an error) further input is ignored
        self._in_feed = True
        try:
            if self._ws is not None:
                self._ws_data(data)
            else:
                self._parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            self._on_upgrade(data, exc.args[0])
        except httptools.HttpParserError as exc:
            # Already closing: llhttp rejects "Data after `Connection: close`", which
            # is expected pipelining input, not an error worth answering.
            if not self._closing:
                self._emit(self._srv.build(self._err, atelier_error(
                    5001, f"bad request: {exc}"), keep=False), close=True)
        finally:
            self._in_feed = False
            self._flush_out()
            if self._close_pending and self._transport is not None:
                self._transport.close()

    # -- httptools callbacks ------------------------------------------------------------
    def on_message_begin(self) -> None:
        self._in_message = True
        self._url = b""
        self._headers = []
        self._hdr_size = 0
        self._body = None
        self._body_len = 0
        self._body_mode = -1

    def on_url(self, url: bytes) -> None:
        self._url += url  # may arrive in fragments
        if len(self._url) > _MAX_URL:
            self._err = 414
            raise _HttpError(414)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name, value))
        self._hdr_size += len(name) + len(value)
        if self._hdr_size > _MAX_HEADERS:
            self._err = 431
            raise _HttpError(431)
        if (len(name) == 6 and name.lower() == b"expect" and value.lower() == b"100-continue"
                and not self._queue):
            # curl waits ~1 s for this before sending large bodies (e.g. to /_emulator/sink).
            # Only when nothing is queued, so the interim response cannot jump ahead.
            self._write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_body(self, chunk: bytes) -> None:
        mode = self._body_mode
        if mode < 0:
            # Decided lazily on the first chunk, so body-less requests pay nothing.
            url = self._url
            if url.startswith(b"/_emulator/echo"):
                mode = 1
            elif url.startswith(b"/api/atelier"):
                mode = 2
            else:
                mode = 0  # sink and everything else: count, never buffer
            self._body_mode = mode
            if mode:
                self._body = bytearray()
        self._body_len += len(chunk)
        if mode == 2:
            if self._body_len > self._srv.options.max_body:
                self._err = 413
                raise _HttpError(413)
            self._body += chunk  # type: ignore[operator]
        elif mode == 1:
            room = _ECHO_KEEP - len(self._body)  # type: ignore[arg-type]
            if room > 0:
                self._body += chunk[:room]  # type: ignore[operator]

    def on_message_complete(self) -> None:
        self._in_message = False
        srv = self._srv
        srv.stats.requests += 1
        if self._closing:
            return
        parser = self._parser
        method = parser.get_method()
        keep = parser.should_keep_alive() and not parser.should_upgrade()
        url = self._url
        # Hot path: the GetServer call used by health checks and load benchmarks.
        if (url == b"/api/atelier/" and keep and not srv.error_rate
                and (srv.auth is None or self._header(b"authorization") == srv.auth)):
            if method == b"GET":
                data = srv.hot_get
            elif method == b"HEAD":
                data = srv.hot_head
            else:
                data = b""
            if data:
                if srv.latency:
                    self._emit_later(data, False, srv.latency)
                else:
                    self._emit(data, False)
                return
        try:
            self._route(method, url, keep)
        except Exception as exc:  # a bug must cost one 500, not the connection or the server
            self._respond(500, atelier_error(5002, f"emulator error: {exc!r}"), method, keep)

    # -- helpers ----------------------------------------------------------------------------
    def _header(self, lname: bytes) -> bytes | None:
        for name, value in self._headers:
            if name.lower() == lname:
                return value
        return None

    def _respond(self, status: int, body: bytes, method: bytes, keep: bool, *,
                 extra: bytes = b"", ctype: bytes = CT_JSON, delay: float = 0.0) -> None:
        if not keep:
            self._closing = True
        data = self._srv.build(status, body, head=method == b"HEAD", keep=keep, extra=extra,
                               ctype=ctype)
        if delay > 0:
            self._emit_later(data, not keep, delay)
        else:
            self._emit(data, not keep)

    # -- ordered output --------------------------------------------------------------------
    def _write(self, data: bytes) -> None:
        if self._in_feed:
            self._out.append(data)  # coalesce pipelined responses into one write
        elif self._transport is not None:
            self._transport.write(data)

    def _flush_out(self) -> None:
        out = self._out
        if out and self._transport is not None and not self._dead:
            self._transport.write(out[0] if len(out) == 1 else b"".join(out))
        out.clear()

    def _emit(self, data: bytes, close: bool) -> None:
        if close:
            self._closing = True
        if self._queue:
            self._queue.append(_Slot(data, 0, close, True))
            self._update_reading()
            return
        self._write(data)
        if close:
            self._finish()

    def _emit_later(self, data: bytes, close: bool, delay: float) -> None:
        if close:
            self._closing = True
        slot = _Slot(b"", 0, close, False)
        self._queue.append(slot)
        self._update_reading()
        asyncio.get_running_loop().call_later(delay, self._fulfil, slot, data)

    def _emit_stream(self, head: bytes, n: int, close: bool, chunk: int = 0) -> None:
        if close:
            self._closing = True
        self._queue.append(_Slot(head, n, close, True, chunk))
        self._pump()

    def _fulfil(self, slot: _Slot, data: bytes) -> None:
        if self._dead:
            return
        slot.data = data
        slot.ready = True
        self._pump()

    def _finish(self) -> None:
        self._queue.clear()
        if self._in_feed:
            self._close_pending = True
        elif self._transport is not None:
            self._transport.close()  # flushes what is buffered, then closes

    def _pump(self) -> None:
        q = self._queue
        while q and not self._dead:
            slot = q[0]
            if not slot.ready:
                break
            if slot.data:
                self._write(slot.data)
                slot.data = b""
            if slot.remaining and not self._stream(slot):
                return
            q.popleft()
            if slot.close:
                self._finish()
                return
        self._update_reading()

    def _stream(self, slot: _Slot) -> bool:
        """Write /bytes body chunks until done (True), paused or out of budget (False)."""
        self._flush_out()
        t = self._transport
        if t is None:
            return False
        size = len(_CHUNK)
        budget = _STREAM_BUDGET
        while slot.remaining:
            if self._write_paused:
                return False  # resume_writing() pumps again
            if not budget:
                asyncio.get_running_loop().call_soon(self._pump)
                return False
            n = slot.remaining
            if slot.chunk:
                k = min(n, slot.chunk)
                off = slot.pos % 256
                last = b"\r\n0\r\n\r\n" if k == n else b"\r\n"
                t.writelines((b"%x\r\n" % k, _CHUNK2[off:off + k], last))
                slot.remaining = n - k
                slot.pos += k
            elif n >= size:
                t.write(_CHUNK)
                slot.remaining = n - size
            else:
                t.write(_CHUNK[:n])
                slot.remaining = 0
            budget -= 1
        return True

    def _update_reading(self) -> None:
        t = self._transport
        if t is None or self._dead:
            return
        qlen = len(self._queue)
        want_pause = self._write_paused or qlen > _QUEUE_HIGH
        if want_pause and not self._read_paused:
            self._read_paused = True
            t.pause_reading()
        elif self._read_paused and not self._write_paused and qlen <= _QUEUE_LOW:
            self._read_paused = False
            t.resume_reading()

    # -- routing -----------------------------------------------------------------------------
    def _route(self, method: bytes, url: bytes, keep: bool) -> None:
        raw = url.decode("latin-1")
        path, _, query = raw.partition("?")
        if path.startswith("/_emulator/"):
            self._emulator(method, path[11:], query, raw, keep)
            return
        srv = self._srv
        if srv.auth is not None and not srv.check_auth(self._header(b"authorization")):
            self._respond(401, atelier_error(822, "Access Denied", "AccessDenied"), method, keep,
                          extra=b'WWW-Authenticate: Basic realm="IRIS"\r\n')
            return
        if path != "/api/atelier" and not path.startswith("/api/atelier/"):
            self._respond(404, atelier_error(5923, f"{path}: Not Found", "NotFound"), method, keep)
            return
        delay = srv.latency
        if srv.error_rate and random.random() < srv.error_rate:
            self._respond(srv.options.fail_status,
                          atelier_error(5002, "ObjectScript error: <INJECTED>emulator", "Injected"),
                          method, keep, delay=delay)
            return
        status, body, extra = self._atelier(method, unquote(path[12:]), query)
        self._respond(status, body, method, keep, extra=extra, delay=delay)

    def _atelier(self, method: bytes, path: str, query: str) -> tuple[int, bytes, bytes]:
        """Atelier API proper; `path` is decoded and relative to /api/atelier."""
        srv = self._srv
        read = method in (b"GET", b"HEAD")
        if path in ("", "/"):
            if not read:
                return 405, atelier_error(5001, "Method Not Allowed"), b"Allow: GET, HEAD\r\n"
            return 200, srv.getserver_body(), srv._cookie
        parts = path.strip("/").split("/")
        ver = parts[0]
        if len(parts) < 2 or ver[:1] != "v" or not ver[1:].isdigit() or not (
                1 <= int(ver[1:]) <= API_LEVEL):
            return 404, atelier_error(5923, f"/api/atelier{path}: Not Found", "NotFound"), b""
        ns = _RSV_NS.get(parts[1].upper())
        if ns is None:
            return 404, atelier_error(8726, f"Namespace '{parts[1]}' does not exist",
                                      "NamespaceDoesNotExist", [parts[1]]), b""
        rest = parts[2:]
        params = parse_qs(query)
        if not rest:
            if not read:
                return 405, atelier_error(5001, "Method Not Allowed"), b"Allow: GET, HEAD\r\n"
            return 200, envelope({"content": {
                "name": ns, "db": [{"name": _NS_DB[ns], "crhash": "3A1A0E8B6C8", "default": True,
                                    "dbsys": ns == "%SYS"},
                                   {"name": "IRISLIB", "crhash": "A56AAA8D5418", "default": False,
                                    "dbsys": True}],
                "features": [{"name": "ENSEMBLE", "enabled": True}]}}), b""
        kind = rest[0]
        if kind == "docnames" and read and len(rest) <= 3:
            cat = rest[1].upper() if len(rest) > 1 else "*"
            typ = rest[2].lower() if len(rest) > 2 else "*"
            flt = params.get("filter", [""])[0].lower()
            docs = []
            for (dns, name), doc in sorted(srv.docs.items()):
                if dns != ns or (cat != "*" and doc.cat != cat):
                    continue
                if typ != "*" and not name.lower().endswith("." + typ):
                    continue
                low = name.lower()
                if flt and not (fnmatch.fnmatchcase(low, flt) if "*" in flt or "?" in flt
                                else flt in low):
                    continue
                docs.append({"name": name, "cat": doc.cat, "ts": doc.ts, "upd": True,
                             "db": doc.db, "gen": False})
            return 200, envelope({"content": docs}), b""
        if kind == "doc" and len(rest) > 1:
            return self._doc(method, ns, "/".join(rest[1:]))
        if kind == "jobs" and read and len(rest) == 1:
            jobs = [{"pid": 1000 + i, "namespace": n, "routine": r, "state": "RUNW",
                     "device": "/dev/null"}
                    for i, (n, r) in enumerate((("%SYS", "%SYS.TaskSuper"),
                                                ("%SYS", "ECPWork"), ("USER", "xyz")))]
            return 200, envelope({"content": jobs}), b""
        if kind == "action" and len(rest) == 2 and method == b"POST":
            try:
                req = orjson.loads(bytes(self._body or b"") or b"null")
            except orjson.JSONDecodeError:
                return 400, atelier_error(5001, "invalid JSON body", "BadJSON"), b""
            if rest[1] == "query" and isinstance(req, dict) and isinstance(req.get("query"), str):
                rows = [{"query": req["query"], "parameters": req.get("parameters") or []}]
                return 200, envelope({"content": rows}), b""
            if rest[1] == "compile" and isinstance(req, list):
                console = [f"Compiling {n}" for n in req] + [
                    "Compilation finished successfully in 0.001s."]
                res = [{"name": n, "status": "", "content": [], "db": _NS_DB[ns], "ts": _ts(),
                        "enc": False} for n in req if isinstance(n, str)]
                return 200, envelope({"content": res}, console=console), b""
            return 400, atelier_error(5001, "bad action request", "BadRequest"), b""
        return 404, atelier_error(5923, f"/api/atelier{path}: Not Found", "NotFound"), b""

    def _doc(self, method: bytes, ns: str, name: str) -> tuple[int, bytes, bytes]:
        docs = self._srv.docs
        key = (ns, name)
        doc = docs.get(key)
        if not name or name.startswith("."):
            return 400, atelier_error(16005, f"Document name '{name}' is invalid", "BadName"), b""
        missing = (404, atelier_error(16005, f"Document '{name}' does NOT exist", "DocNotExist",
                                      [name]), b"")
        if method in (b"GET", b"HEAD"):
            if doc is None:
                return missing
            etag_hdr = b"ETag: %s\r\n" % doc.etag.encode()
            inm = self._header(b"if-none-match")
            if inm is not None:
                tags = {t.strip().removeprefix("W/") for t in inm.decode("latin-1").split(",")}
                if "*" in tags or doc.etag in tags:
                    return 304, b"", etag_hdr
            return 200, envelope(doc.as_result()), etag_hdr
        if method == b"PUT":
            try:
                req = orjson.loads(bytes(self._body or b""))
            except orjson.JSONDecodeError:
                return 400, atelier_error(5001, "invalid JSON body", "BadJSON"), b""
            content = req.get("content") if isinstance(req, dict) else None
            if not isinstance(content, list) or not all(isinstance(x, str) for x in content):
                return 400, atelier_error(5001, "body needs content: [str]", "BadBody"), b""
            if_match = self._header(b"if-match")
            if doc is not None and if_match is not None and if_match.decode(
                    "latin-1").strip() not in (doc.etag, "*"):
                return 409, atelier_error(16009, f"Document '{name}' has been modified",
                                          "Conflict", [name]), b""
            created = doc is None
            if doc is None:
                doc = docs[key] = _Doc(name, _NS_DB[ns], _doc_cat(name), content,
                                       bool(req.get("enc")))
            else:
                doc.content, doc.enc = content, bool(req.get("enc"))
                doc.refresh()
            return (201 if created else 200, envelope(doc.as_result(with_content=False)),
                    b"ETag: %s\r\n" % doc.etag.encode())
        if method == b"DELETE":
            if doc is None:
                return missing
            del docs[key]
            return 200, envelope(doc.as_result(with_content=False)), b""
        return 405, atelier_error(5001, "Method Not Allowed"), b"Allow: GET, HEAD, PUT, DELETE\r\n"

    # -- /_emulator/ test helpers (no auth, no injected latency or errors) -----------------
    def _emulator(self, method: bytes, what: str, query: str, raw: str, keep: bool) -> None:
        srv = self._srv
        head = method == b"HEAD"
        if what == "bytes":
            try:
                n = int(parse_qs(query).get("n", ["0"])[0])
                if not 0 <= n <= 1 << 42:
                    raise ValueError
            except ValueError:
                self._respond(400, atelier_error(5001, "n must be an integer >= 0"), method, keep)
                return
            # build() with an empty body gives the headers; patch in the real length.
            hdr = srv.build(200, b"", head=True, keep=keep, ctype=CT_OCTET).replace(
                b"Content-Length: 0\r\n", b"Content-Length: %d\r\n" % n, 1)
            self._emit_stream(hdr, 0 if head else n, not keep)
        elif what in ("chunked", "eof"):
            # chunked?n=N&size=S: Transfer-Encoding: chunked, S-byte chunks (max 64 KiB).
            # eof?n=N: neither Content-Length nor chunked; the body ends when we close.
            qs = parse_qs(query)
            try:
                n = int(qs.get("n", ["0"])[0])
                size = int(qs.get("size", ["4096"])[0])
                if not 0 <= n <= 1 << 42 or not 1 <= size <= len(_CHUNK):
                    raise ValueError
            except ValueError:
                self._respond(400, atelier_error(5001, "n >= 0, 1 <= size <= 65536"), method,
                              keep)
                return
            chunked = what == "chunked"
            keep = keep and chunked
            hdr = b"".join((
                _status_line(200), b"Content-Type: %s\r\n" % CT_OCTET, srv._common,
                b"Transfer-Encoding: chunked\r\n" if chunked else b"",
                b"Connection: keep-alive\r\n\r\n" if keep else b"Connection: close\r\n\r\n"))
            if chunked and not head and n == 0:
                hdr += b"0\r\n\r\n"
            self._emit_stream(hdr, 0 if head else n, not keep, size if chunked else 0)
        elif what == "sink":
            self._respond(200, orjson.dumps({"received": self._body_len}), method, keep)
        elif what == "cacheable" or what.startswith("cacheable/"):
            # cacheable[/...]?cc=<Cache-Control>&ct=<Content-Type>&status=N&chunked=1: a
            # response numbered by how many this server answered (proxy-cache tests).
            qs = parse_qs(query)
            srv.stats.cacheable += 1
            body = orjson.dumps({"id": srv.id, "n": srv.stats.cacheable, "path": raw})
            ctype = qs.get("ct", ["application/json"])[0].encode("latin-1")
            extra = b"".join(b"Cache-Control: %s\r\n" % v.encode("latin-1")
                             for v in qs.get("cc", []))
            status = int(qs.get("status", ["200"])[0])
            if qs.get("chunked"):
                hdr = b"".join((_status_line(status), b"Content-Type: %s\r\n" % ctype,
                                srv._common, extra, b"Transfer-Encoding: chunked\r\n",
                                b"Connection: keep-alive\r\n\r\n"))
                half = len(body) // 2
                chunks = b"" if head else b"%x\r\n%s\r\n%x\r\n%s\r\n0\r\n\r\n" % (
                    half, body[:half], len(body) - half, body[half:])
                self._emit(hdr + chunks, not keep)
            else:
                self._respond(status, body, method, keep, extra=extra, ctype=ctype)
        elif what == "stats":
            body = orjson.dumps({"id": srv.id, **srv.stats.as_dict()})
            self._respond(200, body, method, keep)
        elif what == "echo" or what.startswith("echo/"):  # any path under echo/ echoes
            peer = self._transport.get_extra_info("peername") if self._transport else None
            out: dict[str, Any] = {
                "id": srv.id, "method": method.decode(), "path": raw,
                "http_version": self._parser.get_http_version(),
                "headers": [[n.decode("latin-1"), v.decode("latin-1")] for n, v in self._headers],
                "body_length": self._body_len, "peer": list(peer[:2]) if peer else None}
            if self._body is not None:
                out["body"] = self._body.decode("utf-8", "replace")
            tls = self._transport.get_extra_info("ssl_object") if self._transport else None
            if tls is not None:
                peer_cert = tls.getpeercert()
                subject = dict(x[0] for x in peer_cert["subject"]) if peer_cert else {}
                out["tls"] = {"version": tls.version(),
                              "sni": getattr(tls, "requested_sni", None),
                              "client_cert": subject.get("commonName") if peer_cert else None}
            self._respond(200, orjson.dumps(out), method, keep)
        elif what.startswith("status/") and what[7:].isdigit() and 200 <= int(what[7:]) <= 599:
            code = int(what[7:])
            self._respond(code, orjson.dumps({"id": srv.id, "status": code}), method, keep)
        elif what.startswith("delay/"):
            try:
                ms = float(what[6:])
                if not 0 <= ms <= 600_000:
                    raise ValueError
            except ValueError:
                self._respond(400, atelier_error(5001, "delay must be 0..600000 ms"), method, keep)
                return
            self._respond(200, orjson.dumps({"id": srv.id, "delay_ms": ms}), method, keep,
                          delay=ms / 1000.0)
        elif what == "ws":
            self._ws_handshake(method, keep)
        else:
            self._respond(404, atelier_error(5923, f"{raw}: Not Found", "NotFound"), method, keep)

    # -- WebSocket echo (framing lives in tests/support/wsframe.py) ------------------------------------
    def _ws_handshake(self, method: bytes, keep: bool) -> None:
        h = self._header
        status, value, reason = wsframe.check_handshake(
            method, h(b"connection"), h(b"upgrade"), h(b"sec-websocket-key"),
            h(b"sec-websocket-version"))
        if status != 101 or not self._parser.should_upgrade():
            self._respond(status if status != 101 else 426, atelier_error(5001, reason),
                          method, False, extra=value if status != 101 else b"")
            return
        self._emit(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                   b"Connection: Upgrade\r\nSec-WebSocket-Accept: %s\r\nX-Iris-Id: %s\r\n\r\n"
                   % (value, self._srv.id.encode()), False)
        self._ws = wsframe.EchoSession()

    def _on_upgrade(self, data: bytes, offset: int) -> None:
        if self._ws is not None:
            if offset < len(data):
                self._ws_data(data[offset:])
        elif not self._closing:
            # A non-WebSocket upgrade was answered as plain HTTP (with Connection: close);
            # the parser cannot resume after it, so make sure we close.
            self._emit(b"", True)

    def _ws_data(self, data: bytes) -> None:
        assert self._ws is not None
        frames, close = self._ws.feed(data)
        for i, frame in enumerate(frames):
            self._emit(frame, close and i == len(frames) - 1)


# -- CLI --------------------------------------------------------------------------------------
def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m tests.support.iris", description=__doc__.split("\n")[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=52773, help="0 = ephemeral (printed when ready)")
    p.add_argument("--id", default="A", help="instance id, reported by GetServer and X-Iris-Id")
    p.add_argument("--version", default=None,
                   help='GetServer version; "{id}" is replaced by the id, else it is appended')
    p.add_argument("--user")
    p.add_argument("--password")
    p.add_argument("--latency-ms", type=float, default=0.0)
    p.add_argument("--error-rate", type=float, default=0.0)
    p.add_argument("--fail-status", type=int, default=500)
    p.add_argument("--keepalive-timeout", type=float, default=75.0, help="0 disables")
    p.add_argument("--ready-file", help="write the bound port here once listening")
    p.add_argument("--tls-cert", help="serve HTTPS with this certificate (PEM file)")
    p.add_argument("--tls-key", help="its private key (PEM file)")
    p.add_argument("--tls-client-ca", help="require client certificates signed by this CA")
    return p.parse_args(argv)


async def _amain(args: argparse.Namespace) -> int:
    try:
        server = await start_iris(
            args.host, args.port, id=args.id, version=args.version, user=args.user,
            password=args.password, latency_ms=args.latency_ms, error_rate=args.error_rate,
            fail_status=args.fail_status, keepalive_timeout=args.keepalive_timeout,
            tls_cert=args.tls_cert, tls_key=args.tls_key, tls_client_ca=args.tls_client_ca)
    except (ValueError, OSError) as exc:
        print(f"iris {args.id}: {exc}", file=sys.stderr, flush=True)
        return 2
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if args.ready_file:
        tmp = f"{args.ready_file}.tmp{os.getpid()}"
        with open(tmp, "w") as fh:
            fh.write(f"{server.port}\n")
        os.replace(tmp, args.ready_file)  # atomic: readers never see a partial file
    print(f"iris {args.id} listening on {args.host}:{server.port}", flush=True)
    await stop.wait()
    await server.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    try:
        import uvloop
    except ImportError:  # still usable (slower) without uvloop
        return asyncio.run(_amain(args))
    return uvloop.run(_amain(args))


if __name__ == "__main__":
    sys.exit(main())
