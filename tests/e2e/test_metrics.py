"""End to end: Prometheus metrics, /status and /status/ready of real fastgw processes.

Known traffic over raw sockets (so request and response bytes are known exactly) against
a gateway in front of IRIS emulators, then a scrape of the status listener: exact request
counts by route, code and source, histogram counts, bandwidth bytes, node totals summed
across workers (and kept when a worker is replaced), target health gauges following the
Admin API's manual overrides.
"""

from __future__ import annotations

import signal
import socket
import struct
import threading
import time

import pytest
import requests

from tests.support.gateway import GatewayProcess, free_port
from tests.support.procs import IrisProcess
from tests.support.metrics import (
    eventually,
    get_request,
    metrics_config,
    raw_request,
    scrape,
    scrape_text,
    value,
    wait_ready,
)

ATELIER = {"service": "atelier", "route": "atelier", "workspace": "default"}
DEAD = {"service": "dead", "route": "dead", "workspace": "default"}


def test_counts_labels_histograms_and_bytes(iris_pair: tuple[IrisProcess, IrisProcess]) -> None:
    a, b = iris_pair
    config = metrics_config([f"127.0.0.1:{a.port}", f"127.0.0.1:{b.port}"], dead_port=free_port())
    with GatewayProcess(config) as gw:
        wait_ready(gw)
        accepted0 = value(scrape(gw), "fastgw_nginx_connections_total", state="accepted")
        sent = received = 0
        for _ in range(5):
            head = get_request("/api/atelier/")
            answer = raw_request(gw.port, head)
            assert answer.startswith(b"HTTP/1.1 200 ")
            sent += len(head)
            received += len(answer)
        for _ in range(3):
            assert raw_request(gw.port, get_request("/nowhere")).startswith(b"HTTP/1.1 404 ")
        dead_in = dead_out = 0
        for _ in range(2):
            head = get_request("/dead/x")
            answer = raw_request(gw.port, head)
            assert answer.startswith(b"HTTP/1.1 502 ")
            dead_in += len(head)
            dead_out += len(answer)

        s = scrape(gw)
        requests_total = "fastgw_http_requests_total"
        assert value(s, requests_total, **ATELIER, code="200", source="service", consumer="") == 5
        assert value(s, requests_total, **DEAD, code="502", source="kong", consumer="") == 2
        # Unmatched requests are not in http_requests_total (Kong), but in the node total.
        assert not [k for k in s if k[0] == requests_total and ("code", "404") in k[1]]
        assert sum(v for (n, _), v in s.items() if n == requests_total) == 7
        assert value(s, "fastgw_nginx_requests_total", subsystem="http") == 10

        for name in ("request", "upstream", "gateway"):
            assert value(s, f"fastgw_{name}_latency_ms_count", **ATELIER) == 5
            assert value(s, f"fastgw_{name}_latency_ms_bucket", **ATELIER, le="+Inf") == 5
        assert value(s, "fastgw_request_latency_ms_count", **DEAD) == 2
        assert value(s, "fastgw_gateway_latency_ms_count", **DEAD) == 2
        # No upstream answered on the dead route: no upstream latency observed there.
        assert value(s, "fastgw_upstream_latency_ms_count", **DEAD) is None
        # Kong's buckets, cumulative.
        les = [ls for (n, ls), _ in s.items() if n == "fastgw_upstream_latency_ms_bucket" and
               ("route", "atelier") in ls]
        assert sorted(float(dict(ls)["le"]) for ls in les) == [
            25, 50, 80, 100, 250, 400, 700, 1000, 2000, 5000, 10000, 30000, 60000, float("inf")]
        gw_les = {float(dict(ls)["le"]) for (n, ls), _ in s.items()
                  if n == "fastgw_gateway_latency_ms_bucket" and ("route", "atelier") in ls}
        assert gw_les == {1, 2, 5, 7, 10, 15, 20, 30, 50, 75, 100, 200, 500, 750, 1000, 3000,
                          6000, float("inf")}
        # Latencies have the loop clock's millisecond resolution (as Kong's ngx.now()), so
        # five fast local requests may sum to 0; the sums must still add up.
        request_sum = value(s, "fastgw_request_latency_ms_sum", **ATELIER)
        upstream_sum = value(s, "fastgw_upstream_latency_ms_sum", **ATELIER)
        gateway_sum = value(s, "fastgw_gateway_latency_ms_sum", **ATELIER)
        assert request_sum >= upstream_sum >= 0
        assert gateway_sum == pytest.approx(request_sum - upstream_sum)

        # Bandwidth: exactly the bytes each client sent and received.
        bw = "fastgw_bandwidth_bytes_total"
        assert value(s, bw, **ATELIER, direction="ingress", consumer="") == sent
        assert value(s, bw, **ATELIER, direction="egress", consumer="") == received
        assert value(s, bw, **DEAD, direction="ingress") == dead_in
        assert value(s, bw, **DEAD, direction="egress") == dead_out

        # Pool counters: 5 upstream requests on 2 targets, each a new or a reused connection.
        reused = sum(v for (n, _), v in s.items() if n == "fastgw_upstream_connections_reused_total")
        created = sum(v for (n, _), v in s.items() if n == "fastgw_upstream_connections_created_total")
        assert reused + created == 5 and 1 <= created <= 2
        dead_address = f"127.0.0.1:{config['services'][1]['port']}"
        assert value(s, "fastgw_upstream_connect_errors_total", address=dead_address) == 2
        assert value(s, "fastgw_upstream_retries_total", **ATELIER) == 0
        assert value(s, "fastgw_nginx_connections_total", state="accepted") == accepted0 + 10
        assert value(s, "fastgw_node_info", version=__import__("fastgw").__version__) == 1
        assert value(s, "fastgw_config_last_reload_success") == 1
        assert value(s, "fastgw_config_version") >= 1
        assert value(s, "fastgw_workers", state="ready") == 1


def test_totals_summed_across_workers_and_kept_on_respawn(iris_pair: tuple[IrisProcess, IrisProcess]) -> None:
    a, b = iris_pair
    config = metrics_config([f"127.0.0.1:{a.port}", f"127.0.0.1:{b.port}"])
    with GatewayProcess(config, workers=2) as gw:
        wait_ready(gw)
        accepted0 = value(scrape(gw), "fastgw_nginx_connections_total", state="accepted")
        for _ in range(40):  # new connections: SO_REUSEPORT spreads them over both workers
            assert raw_request(gw.port, get_request("/api/atelier/")).startswith(b"HTTP/1.1 200 ")
        s = scrape(gw)
        assert value(s, "fastgw_http_requests_total", **ATELIER, code="200") == 40
        assert value(s, "fastgw_request_latency_ms_count", **ATELIER) == 40
        assert value(s, "fastgw_nginx_connections_total", state="accepted") == accepted0 + 40
        assert value(s, "fastgw_workers", state="ready") == 2

        # Replace one worker: what it served stays in the node's totals.
        status = requests.get(gw.status_url + "/status", timeout=5).json()
        victim = status["workers"][0]["pid"]
        import os

        os.kill(victim, signal.SIGTERM)

        def respawned() -> None:
            pids = [w["pid"] for w in requests.get(gw.status_url + "/status", timeout=5).json()["workers"]]
            assert victim not in pids and len(pids) == 2

        eventually(respawned, timeout=20)
        wait_ready(gw)
        for _ in range(10):
            assert raw_request(gw.port, get_request("/api/atelier/")).startswith(b"HTTP/1.1 200 ")
        s = scrape(gw)
        assert value(s, "fastgw_http_requests_total", **ATELIER, code="200") == 50
        assert value(s, "fastgw_request_latency_ms_count", **ATELIER) == 50
        assert value(s, "fastgw_nginx_requests_total") == 50


def test_client_gone_counted_once(gateway_factory) -> None:
    with IrisProcess("A", latency_ms=400) as slow:
        gw = gateway_factory(metrics_config([f"127.0.0.1:{slow.port}"]))
        wait_ready(gw)
        sock = socket.create_connection(("127.0.0.1", gw.port), timeout=5)
        sock.sendall(get_request("/api/atelier/"))
        time.sleep(0.1)
        # Reset (SO_LINGER 0) before the backend answers: nginx's 499. A plain close would
        # be a half-close, which still gets its response.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()

        def counted() -> None:
            s = scrape(gw)
            assert value(s, "fastgw_http_requests_total", **ATELIER, code="499", source="kong") == 1

        eventually(counted)
        time.sleep(0.5)  # the backend's late answer must not count the request again
        s = scrape(gw)
        assert sum(v for (n, _), v in s.items() if n == "fastgw_http_requests_total") == 1
        assert value(s, "fastgw_request_latency_ms_count", **ATELIER) == 1
        # The request lasted from its head to the reset, sent 100 ms later.
        assert value(s, "fastgw_request_latency_ms_sum", **ATELIER) >= 90


def test_target_health_gauges_follow_overrides(gateway_factory, iris_pair) -> None:
    a, b = iris_pair
    ta, tb = f"127.0.0.1:{a.port}", f"127.0.0.1:{b.port}"
    gw = gateway_factory(metrics_config([ta, tb]))
    wait_ready(gw)

    def states(target: str) -> dict[str, float]:
        s = scrape(gw)
        return {dict(ls)["state"]: v for (n, ls), v in s.items()
                if n == "fastgw_upstream_target_health" and ("target", target) in ls
                and ("upstream", "iris") in ls and ("address", target) in ls}

    off = {"healthchecks_off": 1, "healthy": 0, "unhealthy": 0, "dns_error": 0}
    assert states(ta) == off and states(tb) == off
    r = requests.put(f"{gw.admin_url}/upstreams/iris/targets/{ta}/unhealthy", timeout=5)
    assert r.status_code == 204, r.text
    assert states(ta) == {"healthchecks_off": 0, "healthy": 0, "unhealthy": 1, "dns_error": 0}
    assert states(tb) == off
    r = requests.put(f"{gw.admin_url}/upstreams/iris/targets/{ta}/healthy", timeout=5)
    assert r.status_code == 204, r.text
    assert states(ta) == {"healthchecks_off": 0, "healthy": 1, "unhealthy": 0, "dns_error": 0}
    # Probe results are defined (HELP/TYPE) with no samples until active checks exist.
    assert "# TYPE fastgw_upstream_health_probes_total counter" in scrape_text(gw).text


def test_exposition_formats_and_listeners(gateway_factory, iris_pair) -> None:
    a, _ = iris_pair
    gw = gateway_factory(metrics_config([f"127.0.0.1:{a.port}"]))
    wait_ready(gw)
    raw_request(gw.port, get_request("/api/atelier/"))
    text = scrape_text(gw)
    assert text.headers["content-type"].startswith("text/plain; version=0.0.4")
    om = scrape_text(gw, "application/openmetrics-text; version=1.0.0; charset=utf-8")
    assert om.headers["content-type"].startswith("application/openmetrics-text")
    assert om.text.endswith("# EOF\n")
    assert 'fastgw_http_requests_total{' in om.text
    # The admin listener serves the same metrics.
    admin = scrape_text(gw, admin=True)
    assert "fastgw_http_requests_total{" in admin.text


def test_kong_prefix(gateway_factory, iris_pair) -> None:
    a, _ = iris_pair
    gw = gateway_factory(metrics_config([f"127.0.0.1:{a.port}"], metrics_prefix="kong"))
    wait_ready(gw)
    raw_request(gw.port, get_request("/api/atelier/"))
    s = scrape(gw)
    assert value(s, "kong_http_requests_total", **ATELIER, code="200") == 1
    # Kong's own name for the gateway latency.
    assert value(s, "kong_kong_latency_ms_count", **ATELIER) == 1
    assert not [k for k in s if k[0].startswith("fastgw_")]


def test_status_shape_and_readiness(gateway_factory) -> None:
    with IrisProcess("A", latency_ms=1500) as slow:
        gw = gateway_factory(metrics_config([f"127.0.0.1:{slow.port}"], drain_timeout=10))
        wait_ready(gw)
        before = requests.get(gw.status_url + "/status", timeout=5).json()["server"]
        for _ in range(2):
            assert raw_request(gw.port, get_request("/nowhere")).startswith(b"HTTP/1.1 404 ")
        status = requests.get(gw.status_url + "/status", timeout=5).json()
        server = status["server"]
        assert set(server) == {"connections_accepted", "connections_active", "connections_handled",
                               "connections_reading", "connections_writing",
                               "connections_waiting", "total_requests"}
        assert server["total_requests"] == 2
        assert server["connections_accepted"] == before["connections_accepted"] + 2
        assert server["connections_handled"] == server["connections_accepted"]
        assert isinstance(status["configuration_hash"], str) and status["configuration_hash"]
        ready = requests.get(gw.status_url + "/status/ready", timeout=5)
        assert ready.status_code == 200 and ready.json() == {"message": "ready"}

        # While draining (an in-flight request holds the worker), ready is 503 "draining".
        slow_answer: list[bytes] = []
        client = threading.Thread(
            target=lambda: slow_answer.append(raw_request(gw.port, get_request("/api/atelier/"))))
        client.start()
        time.sleep(0.3)
        gw.signal(signal.SIGTERM)

        def draining() -> None:
            r = requests.get(gw.status_url + "/status/ready", timeout=5)
            assert r.status_code == 503 and r.json() == {"message": "draining"}

        eventually(draining, timeout=5)
        client.join(15)
        assert slow_answer and slow_answer[0].startswith(b"HTTP/1.1 200 ")


def test_status_ready_503_while_workers_start(tmp_path) -> None:
    """Right after start, before the workers ack their config, ready is 503 with the reason."""
    import subprocess
    import sys

    import orjson

    from tests.support.procs import REPO_ROOT

    status_port = free_port()
    config = metrics_config(["127.0.0.1:9"])
    config["gateway"].update({"proxy_listen": f"127.0.0.1:{free_port()}",
                              "status_listen": f"127.0.0.1:{status_port}", "workers": 2})
    path = tmp_path / "config.json"
    path.write_bytes(orjson.dumps(config))
    proc = subprocess.Popen([sys.executable, "-m", "fastgw", "run", "-c", str(path)],
                            cwd=str(REPO_ROOT), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        seen: set[int] = set()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                r = requests.get(f"http://127.0.0.1:{status_port}/status/ready", timeout=2)
            except requests.RequestException:
                time.sleep(0.01)
                continue
            seen.add(r.status_code)
            if r.status_code == 503:
                assert r.json()["message"] != "ready"
            if r.status_code == 200:
                assert r.json() == {"message": "ready"}
                break
            time.sleep(0.005)
        assert 200 in seen
        if 503 not in seen:
            pytest.skip("the workers were ready before the first probe (fast machine)")
    finally:
        proc.terminate()
        proc.wait(15)


def test_metrics_off_counts_nothing_and_still_serves(
    iris_pair: tuple[IrisProcess, IrisProcess],
) -> None:
    """`gateway.metrics: false` (the benchmark's metrics-off side) skips per-request counting."""
    a, b = iris_pair
    config = metrics_config([f"127.0.0.1:{a.port}", f"127.0.0.1:{b.port}"], metrics=False)
    with GatewayProcess(config) as gw:
        wait_ready(gw)
        for _ in range(3):
            assert raw_request(gw.port, get_request("/api/atelier/")).startswith(b"HTTP/1.1 200 ")
        s = scrape(gw)
        assert value(s, "fastgw_http_requests_total", **ATELIER, code="200", source="service",
                     consumer="") is None
        assert value(s, "fastgw_request_latency_ms_count", **ATELIER) in (None, 0)
