"""The pure parts of metrics and access logging: bucket boundaries, snapshots, aggregation
across workers (dead ones keep their counters), stats surviving a reload, request ids and
the access log writer."""

from __future__ import annotations

import re

import asyncio
import time
from pathlib import Path
from types import SimpleNamespace

import orjson
import pytest

from fastgw.core.http.request_id import ID_BATCH, RequestIds, valid_request_id
from fastgw.dataplane.accesslog import AccessLog
from fastgw.dataplane.logrecord import LogRecord
from fastgw.config import load_declarative
from fastgw.dataplane.stats import GATEWAY_BUCKETS, UPSTREAM_BUCKETS, RouteStats, WorkerStats, aggregate
from fastgw.dataplane.server import ProxyServer


@pytest.mark.parametrize(
    ("request_ms", "upstream_ms", "request_bucket", "upstream_bucket", "gateway_bucket"),
    [
        (0.2, 0.1, 0, 0, 0),  # everything in the first bucket
        (25.0, 24.0, 0, 0, 0),  # le is inclusive: 25 lands in le="25"
        (25.5, 20.0, 1, 0, 3),  # gateway 5.5 ms -> le="7"
        (70000.0, 61000.0, 13, 13, 17),  # beyond the last bound: +Inf; gateway 9000 -> +Inf
        (70000.0, 69000.0, 13, 13, 14),  # gateway 1000 ms -> le="1000"
        (3.0, -1.0, 0, None, 2),  # no upstream answer: gateway = request
    ],
)
def test_record_buckets(request_ms: float, upstream_ms: float, request_bucket: int,
                        upstream_bucket: int | None, gateway_bucket: int) -> None:
    stats = RouteStats("r1", "svc", "route")
    stats.record(200, request_ms, upstream_ms, upstream_ms >= 0, 10, 20, 1)
    assert stats.request_hist[request_bucket] == 1 and sum(stats.request_hist) == 1
    if upstream_bucket is None:
        assert sum(stats.upstream_hist) == 0 and stats.kong_codes == {200: 1}
    else:
        assert stats.upstream_hist[upstream_bucket] == 1 and stats.service_codes == {200: 1}
    assert stats.gateway_hist[gateway_bucket] == 1
    assert len(stats.request_hist) == len(UPSTREAM_BUCKETS) + 1
    assert len(stats.gateway_hist) == len(GATEWAY_BUCKETS) + 1


def test_snapshot_and_aggregate_sum_workers_and_keep_dead_counters() -> None:
    def worker(n_ok: int, n_err: int, active: int) -> dict:
        ws = WorkerStats()
        stats = ws.routes[("r1", "svc", "route")] = RouteStats("r1", "svc", "route")
        for _ in range(n_ok):
            stats.record(200, 2.0, 1.5, True, 100, 200, 1)
        for _ in range(n_err):
            stats.record(502, 1.0, -1.0, False, 100, 50, 3)
        ws.count_unmatched(404)
        ws.accepted = 7
        conns = [SimpleNamespace(active=object(), tunnel=None, parsing=None, requests=1)] * active
        snap = ws.snapshot(conns)  # type: ignore[arg-type]
        return orjson.loads(orjson.dumps(snap))  # what crosses the IPC socket

    a, b, dead = worker(3, 1, 2), worker(5, 0, 1), worker(2, 2, 4)
    total = aggregate([a, b], counters_only=[dead])
    (route,) = total["routes"]
    assert route["service_codes"] == {"200": 10}
    assert route["kong_codes"] == {"502": 3}
    assert sum(route["request_hist"]) == 13 and sum(route["upstream_hist"]) == 10
    assert route["retries"] == 3 * 2  # three requests that took three attempts each
    assert route["ingress"] == 1300 and route["egress"] == 10 * 200 + 3 * 50
    assert route["request_sum"] == pytest.approx(10 * 2.0 + 3 * 1.0)
    assert route["gateway_sum"] == pytest.approx(10 * 0.5 + 3 * 1.0)
    assert total["requests"] == 13 + 3  # plus one unmatched per worker
    assert total["unmatched"] == {"404": 3}
    assert total["connections"]["accepted"] == 21
    # Gauges only from live workers.
    assert total["connections"]["active"] == 3 and total["connections"]["writing"] == 3


def test_stats_survive_a_reload_and_rename_starts_a_series() -> None:
    doc = {"_format_version": "3.0", "services": [
        {"name": "s", "host": "127.0.0.1", "port": 9, "routes": [{"name": "r", "paths": ["/a"]}]}]}
    loop = asyncio.new_event_loop()
    try:
        server = ProxyServer(load_declarative(doc), loop)
        (plan,) = server.snapshot.route_plans.values()
        plan.stats.record(200, 1.0, 0.5, True, 1, 1, 1)
        server.apply(load_declarative(doc))
        (again,) = server.snapshot.route_plans.values()
        assert again is not plan and again.stats is plan.stats
        doc["services"][0]["routes"][0]["name"] = "renamed"
        server.apply(load_declarative(doc))
        (renamed,) = server.snapshot.route_plans.values()
        assert renamed.stats is not plan.stats and renamed.stats.route == "renamed"
        # A route's series appear with its first request (as Kong's): none for idle ones.
        assert [r["route"] for r in server.stats_snapshot()["routes"]] == ["r"]
        renamed.stats.record(404, 1.0, -1.0, False, 1, 1, 1)
        names = sorted(r["route"] for r in server.stats_snapshot()["routes"])
        assert names == ["r", "renamed"]
    finally:
        loop.close()


def test_request_ids() -> None:
    ids = RequestIds()
    made = [ids.new() for _ in range(ID_BATCH * 2 + 5)]
    assert len(set(made)) == len(made)
    # Kong's shape: 32 hex digits, a per-worker random prefix, then a counter.
    assert all(re.fullmatch(rb"[0-9a-f]{32}", i) for i in made)
    assert {i[:24] for i in made} == {ids.prefix}
    assert [int(i[24:], 16) for i in made] == list(range(1, len(made) + 1))
    assert valid_request_id(b"abc-123_x.y:z@w+/=")
    for bad in (b"", b"a b", b"a\r\nb", b"x" * 129, "é".encode()):
        assert not valid_request_id(bad)


def test_access_log_batches_lines_to_a_file(tmp_path: Path) -> None:
    path = tmp_path / "access.log"
    log = AccessLog(str(path))
    def record(status: int, rid: bytes) -> LogRecord:
        r = LogRecord()
        r.client_ip, r.method, r.target, r.status = "10.0.0.1", "GET", b"/x?y=1", status
        r.request_ms, r.upstream_ms, r.request_size, r.response_size = 1.5, -1.0, 30, 120
        r.request_id = rid
        return r

    for status in (404, 400):
        log.add(record(status, b"id-1"))
    assert not path.exists() or path.read_text() == ""  # nothing written on the loop
    log.flush()
    deadline = time.monotonic() + 5
    while (not path.exists() or path.read_text().count("\n") < 2) and time.monotonic() < deadline:
        time.sleep(0.01)
    first, second = [orjson.loads(line) for line in path.read_text().splitlines()]
    assert first["status"] == 404 and second["status"] == 400
    assert first["path"] == "/x?y=1" and first["route"] is None
    assert first["latency_ms"] == {"request": 1.5, "upstream": None, "gateway": 1.5}
    # logrotate: the file is moved away; the next batch goes to a new file at the path.
    path.rename(tmp_path / "access.log.1")
    log.add(record(200, b"id-2"))
    log.close()
    assert orjson.loads(path.read_text())["request_id"] == "id-2"


def test_hub_keeps_dead_workers_counters_once() -> None:
    """A worker that died stays in the totals; its late final message replaces, never adds."""
    from fastgw.controlplane.exporter import MetricsHub

    def snap(n: int) -> dict:
        ws = WorkerStats()
        stats = ws.routes[("r1", "svc", "route")] = RouteStats("r1", "svc", "route")
        for _ in range(n):
            stats.record(200, 1.0, 0.5, True, 1, 1, 1)
        return {"type": "stats", "seq": None, **orjson.loads(orjson.dumps(ws.snapshot([])))}

    store = SimpleNamespace(subscribe=lambda listener: None)
    from fastgw.config.settings import GatewaySettings

    a, b = (SimpleNamespace(pid=pid, ready=True, unresponsive=False, last_seen=time.monotonic())
            for pid in (101, 102))
    supervisor = SimpleNamespace(store=store, workers={0: a, 1: b}, settings=GatewaySettings())
    hub = MetricsHub(supervisor)  # type: ignore[arg-type]

    def total() -> int:
        loop = asyncio.new_event_loop()
        try:
            supervisor.workers = {k: w for k, w in supervisor.workers.items() if w.ready}
            agg = loop.run_until_complete(hub.refresh(timeout=0.01))
        finally:
            loop.close()
        return agg["requests"]

    hub.on_stats(a, snap(3))  # type: ignore[arg-type]
    hub.on_stats(b, snap(4))  # type: ignore[arg-type]
    for w in (a, b):
        w.channel = SimpleNamespace(send=lambda message: None)
    assert total() == 7
    a.ready = False  # worker 101 died (its last answer counted 3)
    assert total() == 7
    hub.on_stats(a, snap(5))  # type: ignore[arg-type]  # its final message, after the death
    assert total() == 9
    assert total() == 9
