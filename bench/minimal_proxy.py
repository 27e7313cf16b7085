"""A minimal reverse proxy on uvloop + httptools: what Python can physically reach.

    python -m bench.minimal_proxy --port 18080 --backend 127.0.0.1:52773 --backend 127.0.0.1:52774

The reference the speed targets are read against (reference/performance.md: 14-16 us of CPU
per request, about nginx's). It parses each request with httptools, picks a backend round
robin, takes an idle keep-alive connection from that backend's pool (or opens one), forwards
the request head as received (framing included) and the body bytes as they come, and passes
the response bytes through, returning the connection to the pool when httptools says the
response is complete and reusable. No other features: no routing, no header rules, no
timeouts, no retries, no back-pressure; one request at a time per client connection (what
wrk sends: no pipelining).

The one edit is `Connection`, when the client asked to close: its `Connection: close` is not
forwarded (the upstream connection is the proxy's to keep, as with nginx's
`proxy_set_header Connection ""`), the response says `Connection: close`, and the client
connection is closed after it. That edit assumes the response head arrives in one read (true for small heads).

The same source also runs compiled (`minimalc` in the speed set: bench/server_process.py
builds it with mypyc into a temporary directory), which is the floor a compiled fastgw is
read against. So the classes are plain (duck-typed asyncio protocols, as uvloop accepts),
not subclasses of `asyncio.Protocol`, which mypyc cannot compile as native classes.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import re
from collections.abc import Iterator, Sequence

import httptools
import uvloop

DESCRIPTION = "A minimal reverse proxy on uvloop + httptools (the module's docstring is gone when compiled)."
_CONNECTION = re.compile(rb"\r\nConnection:[^\r\n]*", re.IGNORECASE)
_BAD_GATEWAY = b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"


class Upstream:
    """One keep-alive connection to a backend; idle ones wait in `pool`."""

    def __init__(self, pool: list[Upstream]) -> None:
        self.pool = pool
        self.parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.client: Client | None = None
        self.head_next = False  # the next bytes start a response (its head)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        client = self.client
        if client is not None:
            if client.keep_alive or not self.head_next:
                client.transport.write(data)
            else:
                client.transport.write(_say_close(data))
            self.head_next = False
        try:
            self.parser.feed_data(data)  # on_message_complete hands the connection back
        except httptools.HttpParserError:
            self.transport.close()  # type: ignore[union-attr]

    def on_message_complete(self) -> None:
        client, self.client = self.client, None
        # Reusable only when the backend says so and got the whole request (an early
        # answer, e.g. to a body still coming, leaves the connection mid-request). No
        # client: it left after sending its whole request (else connection_lost closed us).
        if self.parser.should_keep_alive() and (client is None or client.request_complete):
            self.pool.append(self)
        else:
            self.transport.close()  # type: ignore[union-attr]
        if client is not None:
            client.response_done()

    def connection_lost(self, exc: Exception | None) -> None:
        if self in self.pool:
            self.pool.remove(self)
        if self.client is not None:  # died mid-response: the client cannot be answered
            self.client.transport.close()


def _say_close(head: bytes) -> bytes:
    """The response's first bytes with `Connection: close` instead of any Connection field."""
    end = head.find(b"\r\n\r\n")
    if end < 0:
        return head  # the head spans reads: left as is (see the module docstring)
    return _CONNECTION.sub(b"", head[:end]) + b"\r\nConnection: close" + head[end:]


class Client:
    """One client connection: buffer the head, then forward it and the body to one upstream."""

    def __init__(self, backends: Iterator[tuple[str, int, list[Upstream]]]) -> None:
        self.backends = backends
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport = None  # type: ignore[assignment]
        self.head = bytearray()
        self.head_done = self.request_complete = False
        self.keep_alive = True
        self.upstream: Upstream | None = None
        self.outbox: list[bytes] | None = None  # bytes for an upstream still connecting

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def on_headers_complete(self) -> None:
        self.head_done = True
        self.keep_alive = self.parser.should_keep_alive()

    def on_message_complete(self) -> None:
        self.request_complete = True

    def data_received(self, data: bytes) -> None:
        if self.upstream is not None or self.outbox is not None:  # body of the request
            self.send(data)
            self.feed(data)
            return
        self.head += data
        self.feed(data)
        if not self.head_done:
            return
        end = self.head.find(b"\r\n\r\n") + 4
        head, rest = bytes(self.head[:end]), bytes(self.head[end:])
        self.head.clear()
        self.head_done = False
        if not self.keep_alive:
            head = _CONNECTION.sub(b"", head)
        host, port, pool = next(self.backends)
        if pool:
            self.attach(pool.pop(), head + rest)
        else:
            self.outbox = [head + rest]
            asyncio.get_running_loop().create_task(self.connect(host, port, pool))

    def feed(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.transport.write(b"HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n")
            self.transport.close()

    def send(self, data: bytes) -> None:
        if self.upstream is not None:
            self.upstream.transport.write(data)  # type: ignore[union-attr]
        else:
            self.outbox.append(data)  # type: ignore[union-attr]

    def attach(self, upstream: Upstream, data: bytes) -> None:
        self.upstream, upstream.client, upstream.head_next = upstream, self, True
        upstream.transport.write(data)  # type: ignore[union-attr]

    async def connect(self, host: str, port: int, pool: list[Upstream]) -> None:
        loop = asyncio.get_running_loop()
        try:
            _, upstream = await loop.create_connection(  # type: ignore[type-var]
                lambda: Upstream(pool), host, port)
        except OSError:
            self.outbox = None
            self.transport.write(_BAD_GATEWAY)
            self.transport.close()
            return
        outbox, self.outbox = self.outbox or [], None
        if self.transport.is_closing():  # the client left while we connected
            pool.append(upstream)
            return
        self.attach(upstream, b"".join(outbox))

    def response_done(self) -> None:
        self.upstream = None
        if not (self.keep_alive and self.request_complete):
            self.transport.close()
        self.request_complete = False

    def connection_lost(self, exc: Exception | None) -> None:
        if self.upstream is not None:
            self.upstream.client = None  # the response still completes; pooled if it can be
            if not self.request_complete:
                self.upstream.transport.close()  # type: ignore[union-attr]


async def serve(host: str, port: int, backends: Sequence[str]) -> None:
    pools: list[tuple[str, int, list[Upstream]]] = [
        (h, int(p), []) for h, p in (b.rsplit(":", 1) for b in backends)]
    rotation: Iterator[tuple[str, int, list[Upstream]]] = itertools.cycle(pools)
    server = await asyncio.get_running_loop().create_server(
        lambda: Client(rotation), host, port,  # type: ignore[arg-type, return-value]
        backlog=4096, reuse_address=True)
    print(f"minimal proxy listening on {host}:{port}", flush=True)
    await server.serve_forever()


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.minimal_proxy", description=DESCRIPTION)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--backend", action="append", required=True, metavar="HOST:PORT")
    args = p.parse_args(argv)
    uvloop.run(serve(args.host, args.port, args.backend))


if __name__ == "__main__":
    main()
