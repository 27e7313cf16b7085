"""Latencies that mean what Kong's mean, measured end to end through the histograms.

Kong's log serializer (kong/pdk/log.lua) and its prometheus plugin define them:
- upstream (`latencies.proxy`, KONG_WAITING_TIME): from the request going upstream to the
  response head; when no head came (a read timeout), until the gateway gave up;
- gateway (`latencies.kong`): the time before proxying plus the time receiving the
  response body (KONG_RECEIVE_TIME), i.e. request - upstream;
- request: from the request's first byte to its end.
"""

from __future__ import annotations

import socket
import threading
import time

from tests.support.gateway import GatewayProcess, config_for_targets, free_port
from tests.support.metrics import eventually, scrape, value, wait_ready
from tests.support.procs import IrisProcess

ROUTE = {"service": "atelier", "route": "atelier", "workspace": "default"}


def _config(iris: IrisProcess, **service: int) -> dict:
    config = config_for_targets([f"127.0.0.1:{iris.port}"], service=service,
                                route={"paths": ["/"]})
    config["gateway"]["status_listen"] = f"127.0.0.1:{free_port()}"
    config["gateway"]["admin_listen"] = f"127.0.0.1:{free_port()}"
    return config


def _sums(gw: GatewayProcess) -> dict[str, float]:
    s = scrape(gw)
    out = {}
    for name in ("request", "upstream", "gateway"):
        total = value(s, f"fastgw_{name}_latency_ms_sum", **ROUTE)
        count = value(s, f"fastgw_{name}_latency_ms_count", **ROUTE)
        out[name] = (total or 0.0) / count if count else -1.0
    return out


def test_a_read_timeout_is_upstream_latency() -> None:
    """A 300 ms read timeout: the wait is upstream latency, not gateway latency."""
    with IrisProcess("A") as iris, \
            GatewayProcess(_config(iris, read_timeout=300, retries=0)) as gw:
        wait_ready(gw)
        with socket.create_connection(("127.0.0.1", gw.port), timeout=10) as sock:
            sock.sendall(b"GET /_emulator/delay/2000 HTTP/1.1\r\nHost: gw.test\r\n\r\n")
            answer = sock.recv(65536)
        assert answer.startswith(b"HTTP/1.1 504 ")
        means = eventually(lambda: (m := _sums(gw))["request"] > 0 and m)
        assert 250 <= means["upstream"] <= 700, means  # the wait, read to one sweeper tick
        assert means["gateway"] < 100, means
        assert abs(means["request"] - means["upstream"] - means["gateway"]) < 1


class SlowBodyBackend:
    """A backend that sends its response head at once and its body over `seconds`."""

    def __init__(self, seconds: float, chunks: int = 10) -> None:
        self.seconds = seconds
        self.chunks = chunks
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        self.sock.settimeout(30)
        try:
            conn, _ = self.sock.accept()
        except OSError:
            return
        with conn:
            conn.recv(65536)
            body = b"x" * 1000
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % (len(body) * self.chunks))
            for _ in range(self.chunks):
                time.sleep(self.seconds / self.chunks)
                conn.sendall(body)

    def close(self) -> None:
        self.sock.close()
        self.thread.join(5)


def test_a_slow_body_is_received_not_waited_for() -> None:
    """The head at once, the body over 0.6 s: time to the head is upstream latency; the
    body's transfer is Kong's receive time, counted in the gateway latency as Kong's
    serializer counts it (latencies.kong = access + receive; kong/pdk/log.lua)."""
    backend = SlowBodyBackend(0.6)
    config = config_for_targets([f"127.0.0.1:{backend.port}"], route={"paths": ["/"]})
    config["gateway"].update(status_listen=f"127.0.0.1:{free_port()}",
                             admin_listen=f"127.0.0.1:{free_port()}")
    try:
        with GatewayProcess(config) as gw:
            wait_ready(gw)
            with socket.create_connection(("127.0.0.1", gw.port), timeout=10) as sock:
                sock.sendall(b"GET /slow HTTP/1.1\r\nHost: gw.test\r\nConnection: close\r\n\r\n")
                got = b""
                while chunk := sock.recv(65536):
                    got += chunk
            assert got.startswith(b"HTTP/1.1 200 ") and got.endswith(b"x" * 1000)
            means = eventually(lambda: (m := _sums(gw))["request"] > 0 and m)
            assert means["upstream"] < 200, means  # the head came at once
            assert 500 <= means["gateway"] <= 2000, means  # receiving the body
            assert abs(means["request"] - means["upstream"] - means["gateway"]) < 1
    finally:
        backend.close()
