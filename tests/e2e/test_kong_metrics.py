"""Metrics that mean what Kong's mean (issue 13), over real processes: Kong's names with
`metrics_prefix: kong`, Kong's connection gauge and `le` labels, counts that survive a
SIGKILLed worker, Kong's `/status` memory block; and Kong's official Grafana dashboard
(7424) evaluated by a real Prometheus against fastgw."""

from __future__ import annotations

import json
import math
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import requests

from tests.conftest import require_tool
from tests.support.gateway import GatewayProcess
from tests.support.metrics import (eventually, get_request, metrics_config, prom_query,
                                   prometheus_server, raw_request, scrape, scrape_text, value,
                                   wait_ready)
from tests.support.procs import IrisProcess

INSTALL = "apt-get install -y prometheus"
DASHBOARD = Path(__file__).resolve().parents[1] / "fixtures" / "grafana" / "kong-official-7424.json"


def kong_gateway(gateway_factory: Any, iris: tuple[IrisProcess, IrisProcess],
                 **kw: Any) -> GatewayProcess:
    a, b = iris
    gw = gateway_factory(metrics_config([f"127.0.0.1:{a.port}", f"127.0.0.1:{b.port}"],
                                        metrics_prefix="kong"), **kw)
    wait_ready(gw)
    return gw


def test_kong_names_gauge_states_and_le_labels(iris_pair: tuple[IrisProcess, IrisProcess],
                                               gateway_factory: Any) -> None:
    gw = kong_gateway(gateway_factory, iris_pair)
    for _ in range(3):
        assert raw_request(gw.port, get_request("/api/atelier/")).startswith(b"HTTP/1.1 200 ")
    text = scrape_text(gw).text
    assert "\nkong_bandwidth_bytes{" in text and "kong_bandwidth_bytes_total" not in text
    assert "# TYPE kong_nginx_connections_total gauge" in text
    assert 'le="1"' in text and 'le="100"' in text and 'le="1.0"' not in text
    samples = scrape(gw)
    states = {dict(labels)["state"] for (name, labels) in samples
              if name == "kong_nginx_connections_total"}
    assert states == {"active", "reading", "writing", "waiting", "accepted", "handled", "total"}
    # "total" counts proxy requests, as nginx's stub_status does.
    assert value(samples, "kong_nginx_connections_total", state="total") == 3
    assert value(samples, "kong_bandwidth_bytes", route="atelier", direction="egress") > 0
    assert value(samples, "kong_request_latency_ms_bucket", route="atelier", le="+Inf") == 3


def test_sigkilled_worker_loses_at_most_a_second_of_counts(
        iris_pair: tuple[IrisProcess, IrisProcess], gateway_factory: Any) -> None:
    gw = kong_gateway(gateway_factory, iris_pair)
    for _ in range(20):
        assert raw_request(gw.port, get_request("/api/atelier/")).startswith(b"HTTP/1.1 200 ")
    time.sleep(1.5)  # one push interval and a margin; no scrape has asked for anything
    worker = requests.get(gw.admin_url + "/status", timeout=5).json()["pids"]["workers"][0]
    os.kill(worker, signal.SIGKILL)

    def respawned() -> None:
        pids = requests.get(gw.admin_url + "/status", timeout=5).json()["pids"]["workers"]
        assert pids and worker not in pids
    eventually(respawned, timeout=20)
    wait_ready(gw)
    samples = scrape(gw)
    assert value(samples, "kong_http_requests_total", route="atelier", code="200") == 20


def test_status_memory_block_and_its_options(iris_pair: tuple[IrisProcess, IrisProcess],
                                             gateway_factory: Any) -> None:
    gw = kong_gateway(gateway_factory, iris_pair, workers=2)
    for base in (gw.status_url, gw.admin_url):
        body = requests.get(base + "/status", timeout=5).json()
        vms = body["memory"]["workers_lua_vms"]
        assert sorted(v["pid"] for v in vms) == sorted(body["pids"]["workers"])
        assert all(v["http_allocated_gc"].endswith(" MiB") for v in vms)
        assert body["memory"]["lua_shared_dicts"] == {}
        raw = requests.get(base + "/status", params={"unit": "b"}, timeout=5).json()
        assert all(int(v["http_allocated_gc"]) > 1 << 20 for v in raw["memory"]["workers_lua_vms"])
        k = requests.get(base + "/status", params={"unit": "K", "scale": "0"}, timeout=5).json()
        assert all(v["http_allocated_gc"].endswith(" KiB") and "." not in v["http_allocated_gc"]
                   for v in k["memory"]["workers_lua_vms"])
        bad = requests.get(base + "/status", params={"unit": "x"}, timeout=5)
        assert bad.status_code == 400
        assert bad.json() == {"message": "invalid unit 'x' (expected 'k/K', 'm/M', or 'g/G')"}
        bad = requests.get(base + "/status", params={"scale": "-1"}, timeout=5)
        assert bad.status_code == 400
        assert bad.json() == {"message": "scale must be equal or greater than 0"}


# --------------------------------------------------------------------------- dashboard 7424

_query = prom_query


def _has_data(result: list[dict[str, Any]]) -> bool:
    return any(not math.isnan(float(s["value"][1])) for s in result)


def _fill(expr: str) -> str:
    for var in ("$instance", "$service", "$route", "$upstream"):
        expr = expr.replace(var, ".*")
    assert "$" not in expr, expr
    return expr


def test_kong_official_dashboard_finds_data(iris_pair: tuple[IrisProcess, IrisProcess],
                                            gateway_factory: Any, tmp_path: Path) -> None:
    binary = require_tool("prometheus", INSTALL)
    gw = kong_gateway(gateway_factory, iris_pair)
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [(p["title"], e) for p in dashboard["panels"] for e in p["exprs"]]
    lua = set(dashboard["lua_memory_panels"])
    assert len(exprs) == 44

    stop = threading.Event()

    def traffic() -> None:  # latency and rate panels need requests across scrapes
        deadline = time.monotonic() + 90
        while not stop.is_set() and time.monotonic() < deadline:
            raw_request(gw.port, get_request("/api/atelier/"))
            stop.wait(0.02)

    sender = threading.Thread(target=traffic, daemon=True)
    sender.start()
    missing: list[str] = []
    status = gw.config["gateway"]["status_listen"]
    try:
        with prometheus_server(binary, "kong", status, tmp_path) as base:
            deadline = time.monotonic() + 60
            while True:
                try:
                    missing = [f"{title}: {expr}" for title, expr in exprs
                               if title not in lua and not _has_data(_query(base, _fill(expr)))]
                except requests.RequestException:
                    missing = ["prometheus not answering"]
                if not missing or time.monotonic() > deadline:
                    break
                time.sleep(0.5)
            found = len(exprs) - len(missing) - sum(1 for t, _ in exprs if t in lua)
            print(f"dashboard 7424: {found} of {len(exprs)} expressions have data "
                  f"({len(exprs) - len(lua)} expected; Lua-memory panels excluded)")
            log = (tmp_path / "prometheus.log").read_text()[-2000:]
            assert not missing, "\n".join(missing) + log
            # The template variables' series carry the labels they list.
            for var, label in (("service", "service"), ("route", "route"),
                               ("instance", "instance"), ("upstream", "upstream")):
                selector = dashboard["variables"][var].split("(", 1)[1].rsplit(",", 1)[0]
                assert any(label in s["metric"] for s in _query(base, selector)), var
            # An SLO query written against Kong's bucket labels.
            assert _has_data(_query(base, 'kong_request_latency_ms_bucket{le="100"}'))
    finally:
        stop.set()
        sender.join(5)
