"""A small HTTP/1.1 server for the admin and status listeners.

Not the hot path: requests are parsed with httptools from asyncio streams, bodies are
buffered whole (bounded by ``max_body``), and handlers are coroutines that return a
``Response``. Keep-alive and pipelined requests are served in order on each connection.
Idle and header timeouts bound every connection. A handler's ``HTTPError`` becomes its
JSON body; any other exception becomes Kong's 500 body and is logged.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any, Awaitable, Callable
from urllib.parse import parse_qs, unquote

import httptools
import orjson

__all__ = ["Request", "Response", "HTTPError", "HTTPServer", "json_response", "Handler"]

log = logging.getLogger("fastgw.admin")


@dataclass(slots=True)
class Request:
    method: str
    target: str  # raw request target
    path: str  # percent-decoded per segment by the router; raw here
    query: dict[str, list[str]]
    headers: dict[str, str]  # lower-cased names; repeated headers joined with ", "
    body: bytes
    client: str = ""

    def arg(self, name: str) -> str | None:
        values = self.query.get(name)
        return values[-1] if values else None


@dataclass(slots=True)
class Response:
    status: int
    body: bytes = b""
    content_type: str | None = "application/json; charset=utf-8"
    headers: list[tuple[str, str]] = field(default_factory=list)


def json_response(status: int, data: Any, headers: list[tuple[str, str]] | None = None) -> Response:
    return Response(status, orjson.dumps(data), headers=headers or [])


class HTTPError(Exception):
    """An error response: ``HTTPError(404, {"message": "Not found"})``."""

    def __init__(self, status: int, body: dict[str, Any],
                 headers: list[tuple[str, str]] | None = None) -> None:
        super().__init__(body.get("message", ""))
        self.status = status
        self.body = body
        self.headers = headers or []

    def response(self) -> Response:
        return json_response(self.status, self.body, self.headers)


Handler = Callable[[Request], Awaitable[Response]]


class _Parser:
    """httptools callbacks -> complete Request objects."""

    def __init__(self, max_body: int) -> None:
        self.max_body = max_body
        self.done: list[Request] = []
        self.too_large = False
        self._url = b""
        self._headers: dict[str, str] = {}
        self._name = b""
        self._body: list[bytes] = []
        self._size = 0
        self.parser = httptools.HttpRequestParser(self)

    def on_message_begin(self) -> None:
        self._url, self._headers, self._body, self._size = b"", {}, [], 0

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        key = name.decode("latin-1").lower()
        val = value.decode("latin-1")
        self._headers[key] = f"{self._headers[key]}, {val}" if key in self._headers else val

    def on_body(self, body: bytes) -> None:
        self._size += len(body)
        if self._size > self.max_body:
            self.too_large = True
            raise httptools.HttpParserError("body too large")
        self._body.append(body)

    def on_message_complete(self) -> None:
        target = self._url.decode("latin-1")
        path, _, qs = target.partition("?")
        self.done.append(Request(
            method=self.parser.get_method().decode("latin-1"),
            target=target, path=path,
            query=parse_qs(qs, keep_blank_values=True),
            headers=self._headers, body=b"".join(self._body),
        ))


def _head(status: int, length: int, content_type: str | None, keep_alive: bool,
          extra: list[tuple[str, str]]) -> bytes:
    try:
        reason = HTTPStatus(status).phrase
    except ValueError:
        reason = "Unknown"
    lines = [f"HTTP/1.1 {status} {reason}", "Server: fastgw-admin"]
    if content_type and status not in (204, 304):
        lines.append(f"Content-Type: {content_type}")
    if status not in (204, 304):
        lines.append(f"Content-Length: {length}")
    lines += [f"{k}: {v}" for k, v in extra]
    lines.append("Connection: keep-alive" if keep_alive else "Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


class HTTPServer:
    """Serves ``handler`` on one listening socket."""

    def __init__(self, handler: Handler, *, max_body: int = 64 * 1024 * 1024,
                 idle_timeout: float = 60.0, name: str = "admin") -> None:
        self.handler = handler
        self.max_body = max_body
        self.idle_timeout = idle_timeout
        self.name = name
        self._server: asyncio.AbstractServer | None = None
        self._conns: set[asyncio.StreamWriter] = set()

    async def start(self, sock: socket.socket, tls: ssl.SSLContext | None = None) -> None:
        """Serve on `sock`; over TLS when `tls` is given (an ssl admin_listen entry)."""
        self._server = await asyncio.start_server(self._serve, sock=sock, limit=1 << 16,
                                                  ssl=tls,
                                                  ssl_handshake_timeout=10.0 if tls else None)

    @property
    def address(self) -> tuple[str, int]:
        assert self._server is not None
        return self._server.sockets[0].getsockname()[:2]

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for w in list(self._conns):
            w.close()
        if self._server is not None:
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._conns.add(writer)
        peer = writer.get_extra_info("peername")
        client = peer[0] if isinstance(peer, tuple) else ""
        state = _Parser(self.max_body)
        try:
            while True:
                try:
                    data = await asyncio.wait_for(reader.read(65536), self.idle_timeout)
                except (asyncio.TimeoutError, ConnectionError):
                    return
                if not data:
                    return
                try:
                    state.parser.feed_data(data)
                except httptools.HttpParserUpgrade:
                    pass  # no upgrades here; the request completes normally
                except httptools.HttpParserError:
                    status = 413 if state.too_large else 400
                    msg = "Request size limit exceeded" if state.too_large else "Bad request"
                    await self._write(writer, json_response(status, {"message": msg}), False)
                    return
                while state.done:
                    req = state.done.pop(0)
                    req.client = client
                    keep = state.parser.should_keep_alive()
                    resp = await self._call(req)
                    await self._write(writer, resp, keep)
                    if not keep:
                        return
        finally:
            self._conns.discard(writer)
            writer.close()

    async def _call(self, req: Request) -> Response:
        try:
            return await self.handler(req)
        except HTTPError as exc:
            return exc.response()
        except Exception:
            log.exception("%s: %s %s failed", self.name, req.method, req.target)
            return json_response(500, {"message": "An unexpected error occurred"})

    @staticmethod
    async def _write(writer: asyncio.StreamWriter, resp: Response, keep: bool) -> None:
        body = b"" if resp.status in (204, 304) else resp.body
        writer.write(_head(resp.status, len(body), resp.content_type, keep, resp.headers) + body)
        try:
            await writer.drain()
        except ConnectionError:
            pass


def split_path(path: str) -> list[str]:
    """``/services/a%20b/routes/`` -> ``["services", "a b", "routes"]``."""
    return [unquote(p) for p in path.split("/") if p]
