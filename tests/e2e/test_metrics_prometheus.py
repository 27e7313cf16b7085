"""Real Prometheus tooling against a real fastgw: `promtool check metrics` on a scrape, and
a Prometheus server scraping fastgw, queried through its HTTP API.

Both need Debian's `prometheus` package: skipped locally when it is missing (with the
install command), failed under CI=true (.ci/run installs it).
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from pathlib import Path

import requests

from tests.support.gateway import GatewayProcess, free_port
from tests.support.procs import IrisProcess
from tests.conftest import require_tool
from tests.support.metrics import (get_request, metrics_config, prom_query, prometheus_server,
                                   raw_request, scrape_text, wait_ready)

INSTALL = "apt-get install -y prometheus"
DOCS = Path(__file__).resolve().parents[2] / "docs"

# The findings Kong's metric names carry by design (reference/kong.md §5): latencies in
# `_ms`, and Kong's counters without `_total` (prometheus-client adds the suffix for us,
# so this one is allowed but not expected).
ALLOWED_LINT = ("metric names should not contain abbreviated units",
                'counter metrics should have "_total" suffix',
                'non-counter metrics should not have "_total" suffix')  # Kong's gauge name


def _traffic(gw: GatewayProcess, ok: int, missing: int = 0) -> None:
    for _ in range(ok):
        assert raw_request(gw.port, get_request("/api/atelier/")).startswith(b"HTTP/1.1 200 ")
    for _ in range(missing):
        assert raw_request(gw.port, get_request("/nowhere")).startswith(b"HTTP/1.1 404 ")


def test_promtool_check_metrics(iris_pair: tuple[IrisProcess, IrisProcess], gateway_factory) -> None:
    promtool = require_tool("promtool", INSTALL)
    a, b = iris_pair
    config = metrics_config([f"127.0.0.1:{a.port}", f"127.0.0.1:{b.port}"], dead_port=free_port())
    gw = gateway_factory(config)
    wait_ready(gw)
    _traffic(gw, 3, 2)
    raw_request(gw.port, get_request("/dead/"))
    # promtool reads the Prometheus text format (OpenMetrics is what the Prometheus server
    # test below negotiates and ingests).
    body = scrape_text(gw).content
    done = subprocess.run([promtool, "check", "metrics"], input=body, capture_output=True,
                          timeout=30, check=False)
    output = (done.stdout + done.stderr).decode()
    problems = [line for line in output.splitlines()
                if line.strip() and not any(allowed in line for allowed in ALLOWED_LINT)]
    assert not problems, output
    # The known findings are exactly the three `_ms` histograms' names.
    assert output.count("abbreviated units") == 3, output


_query = prom_query


def test_prometheus_scrapes_fastgw(iris_pair: tuple[IrisProcess, IrisProcess], gateway_factory,
                                   tmp_path: Path) -> None:
    binary = require_tool("prometheus", INSTALL)
    a, b = iris_pair
    gw = gateway_factory(metrics_config([f"127.0.0.1:{a.port}", f"127.0.0.1:{b.port}"]),
                         workers=2)
    wait_ready(gw)
    _traffic(gw, 7, 3)

    status = gw.config["gateway"]["status_listen"]
    with prometheus_server(binary, "fastgw", status, tmp_path) as base:
        deadline = time.monotonic() + 60
        requests_ok = node_total = None
        while time.monotonic() < deadline:
            try:
                up = _query(base, 'up{job="fastgw"}')
                requests_ok = _query(base, 'fastgw_http_requests_total{route="atelier",code="200",'
                                           'source="service",workspace="default"}')
                node_total = _query(base, "fastgw_nginx_requests_total")
            except requests.RequestException:
                time.sleep(0.2)
                continue
            if up and up[0]["value"][1] == "1" and requests_ok and node_total:
                break
            time.sleep(0.2)
        assert requests_ok, (tmp_path / "prometheus.log").read_text()[-3000:]
        assert requests_ok[0]["value"][1] == "7"
        assert requests_ok[0]["metric"]["service"] == "atelier"
        assert node_total and node_total[0]["value"][1] == "10"
        count = _query(base, 'fastgw_request_latency_ms_count{route="atelier"}')
        assert count and count[0]["value"][1] == "7"
        health = _query(base, 'fastgw_upstream_target_health{upstream="iris",state="healthchecks_off"}')
        assert sorted(h["value"][1] for h in health) == ["1", "1"]
        # Every query of the shipped dashboard parses and evaluates on real data.
        for expr in dashboard_queries():
            _query(base, expr)


def dashboard_queries() -> list[str]:
    """The PromQL of docs/grafana-dashboard.json, with its template variables filled in."""
    doc = json.loads((DOCS / "grafana-dashboard.json").read_text())
    exprs = [t["expr"] for p in doc["panels"] for t in p.get("targets", [])]
    fill = {"$__rate_interval": "1m", "$instance": ".*", "$service": ".*", "$route": ".*"}
    out = []
    for expr in exprs:
        for var, val in fill.items():
            expr = expr.replace(var, val)
        assert "$" not in expr, expr
        out.append(expr)
    return out


def test_docs_name_only_real_metrics(iris_pair: tuple[IrisProcess, IrisProcess], gateway_factory) -> None:
    """The dashboard and the scrape example use metric names a real scrape has."""
    a, _ = iris_pair
    gw = gateway_factory(metrics_config([f"127.0.0.1:{a.port}"], dead_port=free_port()))
    wait_ready(gw)
    _traffic(gw, 2, 1)
    raw_request(gw.port, get_request("/dead/"))
    names = set(re.findall(r"^([a-z_]+)[{ ]", scrape_text(gw).text, re.MULTILINE))
    names |= set(re.findall(r"^# TYPE ([a-z_]+)", scrape_text(gw).text, re.MULTILINE))
    text = (DOCS / "grafana-dashboard.json").read_text() + (DOCS / "prometheus.yml").read_text()
    used = set(re.findall(r"fastgw_[a-z_]+", text))
    assert used and used <= names, sorted(used - names)
