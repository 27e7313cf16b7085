"""Pure-Python cost of one proxied request, with fake transports (no syscalls).

    python -m bench.request_path [-n 200000] [--metrics-off | --compare-metrics]
                                 [--plugins none|key-auth|rate-limit|auth+rl|five]

Feeds a keep-alive `GET /api/atelier/` into a `DownstreamProtocol`, answers it through a
pooled `UpstreamConnection`, and reports nanoseconds per request. This isolates the
gateway's own Python work from the kernel's: the number every hot-path change must not
grow (compare before/after in one run; see DESIGN.md).

`--compare-metrics` alternates runs with the per-route counters on and off (off:
`RouteStats.record` replaced by a no-op) in one process and reports both minima: the
cost of counting a request for Prometheus.

`--plugins` puts one of bench/plugins.py's plugin sets on the route (the request carries
the consumer's `apikey`): what the plugins' Python costs per request.
"""

from __future__ import annotations

import argparse
import asyncio
import time

from fastgw.config import load_declarative
from fastgw.dataplane.downstream import ClientConnection
from fastgw.dataplane.server import ProxyServer
from fastgw.dataplane.upstream import UpstreamConnection
from collections import deque

from tests.support.transport import RecordingTransport


class NullTransport(RecordingTransport):
    """A transport whose writes cost what a C call costs and keep nothing: the bench
    measures fastgw's Python, not a fake transport's."""

    def __init__(self, peer: tuple[str, int], sock: tuple[str, int]) -> None:
        super().__init__(peer, sock, keep=False)
        sink: deque[bytes] = deque(maxlen=0)
        self.write = sink.append  # type: ignore[method-assign]
        self.writelines = sink.extend  # type: ignore[method-assign]

REQUEST = b"GET /api/atelier/ HTTP/1.1\r\nHost: 127.0.0.1:8000\r\nUser-Agent: bench\r\nAccept: */*\r\n\r\n"
REQUEST_WITH_KEY = REQUEST[:-2] + b"apikey: bench-key\r\n\r\n"
BODY = b'{"status":{"errors":[],"summary":""},"console":[],"result":{"content":{"id":"A"}}}'
RESPONSE = (
    b"HTTP/1.1 200 OK\r\nContent-Type: application/json; charset=utf-8\r\n"
    b"Content-Length: %d\r\nX-Iris-Id: A\r\nDate: Thu, 26 Nov 2026 14:00:06 GMT\r\n"
    b"Connection: keep-alive\r\n\r\n%s" % (len(BODY), BODY)
)


def config(plugins: str = "none"):
    from bench.plugins import VARIANTS

    return load_declarative(
        {
            "_format_version": "3.0",
            "gateway": {"keepalive_requests": 1 << 30},
            "upstreams": [{"name": "iris", "targets": [{"target": "127.0.0.1:52773"}, {"target": "127.0.0.1:52774"}]}],
            "services": [{"name": "atelier", "host": "iris", "routes": [
                {"paths": ["/api/atelier"], "strip_path": False, "plugins": VARIANTS[plugins]}]}],
            "consumers": [{"username": "bench", "keyauth_credentials": [{"key": "bench-key"}],
                           "acls": [{"group": "bench"}]}],
        }
    )


def set_metrics(enabled: bool) -> None:
    """Metrics off = the per-request RouteStats.record call does nothing (bench only)."""
    from fastgw.dataplane.stats import RouteStats

    if not hasattr(RouteStats, "_bench_record"):
        RouteStats._bench_record = RouteStats.record  # type: ignore[attr-defined]
    RouteStats.record = (  # type: ignore[method-assign]
        RouteStats._bench_record if enabled else (lambda self, *args: None)  # type: ignore[attr-defined]
    )


def measure(n: int, plugins: str = "none") -> float:
    import uvloop

    loop = uvloop.new_event_loop()  # the loop fastgw runs on (its time() is C, unlike asyncio's)
    asyncio.set_event_loop(loop)
    server = ProxyServer(config(plugins), loop)
    request = REQUEST if plugins == "none" else REQUEST_WITH_KEY
    down = ClientConnection(server, 8000)
    down.connection_made(NullTransport(("127.0.0.1", 40000), ("127.0.0.1", 8000)))
    # Warm one pooled connection per target so every request takes the keep-alive path.
    for upstream in server.snapshot.upstreams.values():
        for target in upstream.targets:
            conn = UpstreamConnection(target.pool)
            conn.connection_made(NullTransport((target.host, target.port), ("127.0.0.1", 50000)))
            target.pool.idle.append(conn)
            target.pool.max_requests = 1 << 62  # never retire the fake connections

    def one() -> None:
        down.data_received(request)
        conn = down.active.conn  # type: ignore[union-attr]
        conn.data_received(RESPONSE)

    for _ in range(200):
        one()
    start = time.perf_counter_ns()
    for _ in range(n):
        one()
    elapsed = time.perf_counter_ns() - start
    loop.close()
    return elapsed / n


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("-n", type=int, default=200_000)
    parser.add_argument("--once", action="store_true", help="one run (for instruction counting)")
    parser.add_argument("--metrics-off", action="store_true", help="RouteStats.record as a no-op")
    parser.add_argument("--plugins", default="none",
                        help="a plugin set of bench/plugins.py on the route")
    parser.add_argument("--compare-metrics", action="store_true",
                        help="alternate metrics on/off runs, report both")
    args = parser.parse_args()
    if args.compare_metrics:
        runs: dict[bool, list[float]] = {True: [], False: []}
        for _ in range(5):
            for enabled in (False, True):
                set_metrics(enabled)
                runs[enabled].append(measure(args.n))
        off, on = min(runs[False]), min(runs[True])
        print(f"request path, metrics off: min {off:.0f} ns/request; on: min {on:.0f} ns/request "
              f"({(on - off) / off * 100:+.1f}%)")
        return
    set_metrics(not args.metrics_off)
    if args.once:
        print(f"request path: {measure(args.n, args.plugins):.0f} ns/request")
        return
    results = sorted(measure(args.n, args.plugins) for _ in range(5))
    print(f"request path: median {results[2]:.0f} ns/request (min {results[0]:.0f})")


if __name__ == "__main__":
    main()
