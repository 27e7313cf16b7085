"""Micro-benchmarks of the per-request proxy path: request head parsing, upstream head building.

Run: .venv/bin/python -m pytest bench/bench_proxy.py --benchmark-enable -o testpaths=bench \
         -p no:cacheprovider
Each benchmark times a loop of LOOP operations; ``ns/op`` in extra_info is the per-request
cost. These sit under the load benchmark's "CPU us per request": at ~15 us per request for
the whole proxy, a 1 us step here is 7% of the budget.

Parsing mirrors fastgw.dataplane.downstream's callbacks (one parser reused across requests,
headers appended as (lower name, name, value)) rather than driving DownstreamProtocol
itself: that would start routing and upstream I/O from on_headers_complete. The head
building benchmark calls the real `Exchange._upstream_head` with a real DownstreamProtocol
(after connection_made on a stand-in server) and stand-ins for the target, plan and match.
"""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import httptools
import pytest

from tests.support.gateway import config_for_targets
from fastgw.core.http.request_id import RequestIds
from fastgw.config.declarative import load_declarative
from fastgw.dataplane.stats import WorkerStats
from fastgw.dataplane.downstream import DownstreamProtocol
from fastgw.dataplane.exchange import Exchange
from fastgw.core.router import Router

LOOP = 1000

# What wrk sends, and what a VS Code / IRIS Studio client sends (auth, user agent, cookies).
WRK_REQUEST = b"GET /api/atelier/ HTTP/1.1\r\nHost: 127.0.0.1:8000\r\n\r\n"
CLIENT_REQUEST = (
    b"GET /api/atelier/v1/USER/doc/MyApp.Utils.cls?format=udl HTTP/1.1\r\n"
    b"Host: iris.example.com:8000\r\n"
    b"User-Agent: vscode-objectscript/2.12.0\r\n"
    b"Accept: application/json\r\n"
    b"Accept-Encoding: gzip, deflate, br\r\n"
    b"Authorization: Basic X1NZU1RFTTpTWVM=\r\n"
    b"Cookie: IRISSessionToken=0123456789abcdef; CSPSESSIONID-SP-8000-UP-api-atelier-=0000\r\n"
    b"Connection: keep-alive\r\n"
    b"\r\n"
)


class _HeadCollector:
    """The same callback work as DownstreamProtocol does per request head."""

    __slots__ = ("parser", "url", "headers", "host", "heads")

    def __init__(self) -> None:
        self.parser = httptools.HttpRequestParser(self)
        self.url = b""
        self.headers: list[tuple[bytes, bytes, bytes]] = []
        self.host: bytes | None = None
        self.heads = 0

    def on_message_begin(self) -> None:
        self.url = b""
        self.headers = []
        self.host = None

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        lname = name.lower()
        self.headers.append((lname, name, value))
        if lname == b"host":
            self.host = value

    def on_headers_complete(self) -> None:
        parser = self.parser
        # The values Exchange(...) is constructed from.
        parser.get_method().decode("latin-1")
        parser.get_http_version()
        parser.should_keep_alive()
        self.heads += 1


@pytest.mark.parametrize("request_bytes", [WRK_REQUEST, CLIENT_REQUEST], ids=["wrk", "client"])
def test_parse_request_head(benchmark, request_bytes: bytes) -> None:
    collector = _HeadCollector()
    feed = collector.parser.feed_data

    def loop() -> None:
        for _ in range(LOOP):
            feed(request_bytes)

    loop()
    assert collector.heads == LOOP and collector.host is not None
    benchmark(loop)
    benchmark.extra_info["ns/op"] = round(benchmark.stats.stats.mean / LOOP * 1e9, 1)


def _headers(raw: bytes) -> tuple[str, bytes, list[tuple[bytes, bytes, bytes]], bytes | None]:
    collector = _HeadCollector()
    collector.parser.feed_data(raw)
    return "GET", collector.url, collector.headers, collector.host


class _FakeTransport:
    def get_extra_info(self, name: str, default: object = None) -> object:
        extra = {"peername": ("127.0.0.1", 50000), "sockname": ("127.0.0.1", 8000)}
        return extra.get(name, default)

    def close(self) -> None:
        pass


def _downstream() -> DownstreamProtocol:
    """A real DownstreamProtocol after connection_made, on a stand-in server.

    Real rather than faked: the per-connection state _upstream_head reads (trusted flag,
    cached X-Forwarded-* fragments) is built by connection_made, and fastgw changes what
    that state is; a real object keeps this benchmark working through such changes.
    """
    server = SimpleNamespace(
        loop=asyncio.new_event_loop(),
        is_trusted=lambda ip: False,
        connections=set(),
        slow_sweeper=SimpleNamespace(add=lambda conn: None, discard=lambda conn: None),
        client_header_timeout=60.0,
        draining=False,
        stats=WorkerStats(),
        request_ids=RequestIds(),
    )
    down = DownstreamProtocol(server, 8000)  # type: ignore[arg-type]
    down.connection_made(_FakeTransport())  # type: ignore[arg-type]
    server.loop.close()  # only loop.time() was needed
    return down


def _exchange(raw: bytes) -> Exchange:
    method, url, headers, host = _headers(raw)
    ex = Exchange(_downstream(), method, url, headers, True, True, False, host, False, False)
    # Only what _upstream_head reads of the balancer's target, the route plan and the match.
    ex.target = SimpleNamespace(host_header=b"127.0.0.1:52773")  # type: ignore[assignment]
    ex.plan = SimpleNamespace(preserve_host=False)  # type: ignore[assignment]
    ex.match = SimpleNamespace(stripped_prefix=None)
    ex.upstream_target = url
    return ex


@pytest.mark.parametrize("request_bytes", [WRK_REQUEST, CLIENT_REQUEST], ids=["wrk", "client"])
def test_upstream_head(benchmark, request_bytes: bytes) -> None:
    ex = _exchange(request_bytes)
    build = ex._upstream_head
    head = build()
    assert head.startswith(b"GET ") and b"\r\nHost: 127.0.0.1:52773\r\n" in head
    assert head.endswith(b"\r\n\r\n") and b"X-Forwarded-For: 127.0.0.1" in head

    def loop() -> None:
        for _ in range(LOOP):
            build()

    benchmark(loop)
    benchmark.extra_info["ns/op"] = round(benchmark.stats.stats.mean / LOOP * 1e9, 1)


def test_route_and_upstream_head(benchmark) -> None:
    """Router match + Kong path joining + head building: Exchange.begin's CPU without I/O."""
    config = load_declarative(config_for_targets(["127.0.0.1:52773", "127.0.0.1:52774"]))
    router = Router.compile(list(config.routes))
    service_path = config.services[0].path
    ex = _exchange(CLIENT_REQUEST)
    url = ex.url
    qpos = url.find(b"?")
    raw_path, query = url[:qpos], url[qpos:]
    host = ex.host.decode("latin-1") if ex.host else None
    build = ex._upstream_head
    match_route = router.match

    def loop() -> None:
        for _ in range(LOOP):
            match = match_route("GET", host, raw_path.decode("latin-1"), None)
            ex.match = match
            ex.upstream_target = match.upstream_path(service_path).encode("latin-1") + query
            build()

    loop()
    assert ex.upstream_target.startswith(b"/api/atelier/v1/USER/doc/")
    benchmark(loop)
    benchmark.extra_info["ns/op"] = round(benchmark.stats.stats.mean / LOOP * 1e9, 1)
