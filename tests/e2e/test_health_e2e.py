"""High availability end to end: real gateways (2 workers), real emulator backends, load.

A backend killed mid-load loses no client request and is seen UNHEALTHY by active probes
within two intervals, then HEALTHY and serving again once restarted on its port, with no
manual call. A backend answering 500 is ejected by passive checks and comes back by
itself (timed ejection). All targets down: Kong's 503, or panic mode spreading traffic.
"""

from __future__ import annotations

import re
import time
from typing import Any

import pytest
import requests

from prometheus_client.parser import text_string_to_metric_families

from tests.support.gateway import GatewayProcess, config_for_targets
from tests.support.procs import IrisProcess
from tests.support.admin import admin_config, wait_ready, wait_until
from tests.support.load import Load

pytestmark = pytest.mark.timeout(120)

INTERVAL = 1.0  # active probe interval in these tests


def addr(p: IrisProcess) -> str:
    return f"127.0.0.1:{p.port}"


def health(gw: GatewayProcess, upstream: str = "iris") -> dict[str, str]:
    body = requests.get(gw.admin_url + f"/upstreams/{upstream}/health", timeout=5).json()
    return {t["target"]: t["health"] for t in body["data"]}


def wait_health(gw: GatewayProcess, target: str, state: str, timeout: float) -> float:
    """Seconds until ``target`` reports ``state`` (fails after ``timeout``)."""
    started = time.monotonic()
    wait_until(lambda: health(gw).get(target) == state, timeout=timeout, step=0.02)
    return time.monotonic() - started


def gateway(backends: list[IrisProcess], healthchecks: dict[str, Any], **up: Any) -> GatewayProcess:
    base = config_for_targets([addr(b) for b in backends],
                              upstream={"healthchecks": healthchecks, **up})
    return GatewayProcess(admin_config(base), workers=2)


ACTIVE = {
    "active": {"type": "http", "http_path": "/api/atelier/", "timeout": 0.5,
               "healthy": {"interval": INTERVAL, "successes": 1},
               "unhealthy": {"interval": INTERVAL, "tcp_failures": 1, "timeouts": 1,
                             "http_failures": 1}},
}


def test_backend_killed_mid_load_nothing_lost_and_back_by_itself() -> None:
    with IrisProcess("A") as a, IrisProcess("B") as b, IrisProcess("C") as c:
        port = b.port
        with gateway([a, b, c], ACTIVE) as gw:
            wait_ready(gw, 2)
            assert set(health(gw).values()) == {"HEALTHY"}
            load = Load(gw.port, total=None, concurrency=16).start()
            try:
                load.wait_done(600)
                assert b.proc is not None
                b.proc.kill()  # SIGKILL: no goodbye to open connections
                b.proc.wait(5)
                # Active probes alone: at most one interval to the next probe, plus a timeout.
                took = wait_health(gw, addr(b), "UNHEALTHY", timeout=2 * INTERVAL + 1)
                assert took <= 2 * INTERVAL
                load.wait_done(load.done + 500)
                b.stop()
                b2 = IrisProcess("B", port=port).start()  # same port, healthy again
                try:
                    took = wait_health(gw, addr(b2), "HEALTHY", timeout=2 * INTERVAL + 1)
                    back = time.monotonic()
                    assert took <= 2 * INTERVAL
                    wait_until(lambda: load.since(back)["B"] > 20, timeout=10)
                    load.wait_done(2000)
                finally:
                    load.stop()
                    load.join(60)
                    b2.stop()
            finally:
                load.stop()
                load.join(60)
            assert load.done >= 2000
            assert load.failed == 0, (load.errors[:5], load.statuses)
            assert set(load.backends) == {"A", "B", "C"}
            log = gw.log()
            assert log.count(f"target {addr(b)} is UNHEALTHY") == 1, log[-3000:]
            assert log.count(f"target {addr(b)} is HEALTHY: active check: 1 successes") == 1


def probe_counts(gw: GatewayProcess) -> dict[tuple[str, str, str], float]:
    """{(upstream, target, result): probes} from a scrape of the admin listener."""
    text = requests.get(gw.admin_url + "/metrics", timeout=5).text
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "fastgw_upstream_health_probes_total":
                labels = sample.labels
                out[(labels["upstream"], labels["target"], labels["result"])] = sample.value
    return out


def test_active_probe_results_counted_once_per_node() -> None:
    """Every active probe is counted by result, once per node (2 workers, 1 prober), and
    a dead target's failures show up next to the live one's successes."""
    with IrisProcess("A") as a, IrisProcess("B") as b:
        with gateway([a, b], ACTIVE) as gw:
            started = time.monotonic()  # probing starts no earlier than this
            wait_ready(gw, 2)
            wait_until(lambda: all(probe_counts(gw).get(("iris", addr(p), "success"), 0) >= 2
                                   for p in (a, b)), timeout=4 * INTERVAL)
            b.stop()
            wait_until(lambda: probe_counts(gw).get(("iris", addr(b), "tcp_failure"), 0) >= 2,
                       timeout=4 * INTERVAL)
            before = probe_counts(gw)
            time.sleep(1.5 * INTERVAL)  # at least one more probe of each target
            after = probe_counts(gw)
            assert {result for (_, _, result) in after} == {"success", "tcp_failure"}
            assert all(after[key] >= n for key, n in before.items())  # counters only grow
            assert after[("iris", addr(a), "success")] > before[("iris", addr(a), "success")]
            # one prober per node: about one probe per interval per target, not one per worker
            elapsed_probes = after[("iris", addr(a), "success")]
            assert elapsed_probes <= 2 + (time.monotonic() - started) / INTERVAL


def test_500_backend_ejected_by_passive_checks_and_readmitted() -> None:
    passive = {"passive": {"unhealthy": {"http_failures": 3}, "base_ejection_time": 1,
                           "max_ejection_time": 2}}
    with IrisProcess("A") as a, IrisProcess("B", error_rate=1.0) as b:
        port = b.port
        with gateway([a, b], passive) as gw:
            wait_ready(gw, 2)
            load = Load(gw.port, total=None, concurrency=16).start()
            try:
                wait_health(gw, addr(b), "UNHEALTHY", timeout=10)
                ejected = time.monotonic()
                time.sleep(0.3)  # in-flight answers of the ejected target land
                quiet = time.monotonic()
                wait_until(lambda: load.since(quiet)["A"] > 200, timeout=10)
                assert load.since(quiet)["B"] == 0 or health(gw)[addr(b)] == "HEALTHY"
                # Timed ejection: back by itself after 1 s (and out again at once, since it
                # still fails: that window is too short to poll, the log tells).
                back = f"target {addr(b)} is HEALTHY: ejection time elapsed"
                wait_until(lambda: back in gw.log(), timeout=5)
                assert 0.8 <= time.monotonic() - ejected <= 3.0
                # Failing again: out for twice as long (base x ejections, capped at 2 s).
                wait_until(lambda: "http failures, ejected for 2s" in gw.log(), timeout=5)
                b.stop()
                b2 = IrisProcess("B", port=port).start()  # recovered
                try:
                    wait_health(gw, addr(b2), "HEALTHY", timeout=5)
                    healthy_at = time.monotonic()
                    wait_until(lambda: load.since(healthy_at)["B"] > 50, timeout=10)
                    assert health(gw)[addr(b2)] == "HEALTHY"
                    late = [s for t, who, s, _ in load.log if t > healthy_at and who == "B"]
                    assert set(late) == {200}
                finally:
                    load.stop()
                    load.join(60)
                    b2.stop()
            finally:
                load.stop()
                load.join(60)
            # Logged once per transition, with the reason (two workers may have reported
            # the failures in one batch: 3 or a few more).
            first = re.findall(rf"target {addr(b)} is UNHEALTHY: passive check: (\d+) http "
                               r"failures, ejected for 1s", gw.log())
            assert len(first) == 1 and 3 <= int(first[0]) <= 32
            assert load.errors == []


def test_all_targets_down_503_or_panic_and_state_survives_changes() -> None:
    with IrisProcess("A") as a, IrisProcess("B") as b, IrisProcess("C") as c:
        with gateway([a, b], {}) as gw:
            wait_ready(gw, 2)
            api = gw.admin_url
            for p in (a, b):
                assert requests.put(api + f"/upstreams/iris/targets/{addr(p)}/unhealthy",
                                    timeout=5).status_code == 204
            assert health(gw) == {addr(a): "UNHEALTHY", addr(b): "UNHEALTHY"}
            r = requests.get(gw.url + "/api/atelier/", timeout=5)
            assert r.status_code == 503
            assert r.json()["message"] == "failure to get a peer from the ring-balancer"
            # Adding, re-weighting and removing other targets keeps both ejected.
            requests.post(api + "/upstreams/iris/targets", json={"target": addr(c)},
                          timeout=5).raise_for_status()
            requests.patch(api + f"/upstreams/iris/targets/{addr(b)}", json={"weight": 50},
                           timeout=5).raise_for_status()
            wait_ready(gw, 2)
            assert health(gw) == {addr(a): "UNHEALTHY", addr(b): "UNHEALTHY",
                                  addr(c): "HEALTHCHECKS_OFF"}
            seen = Load(gw.port, total=300, concurrency=4).start().join()
            assert seen.backends == {"C": 300}
            requests.delete(api + f"/upstreams/iris/targets/{addr(c)}",
                            timeout=5).raise_for_status()
            wait_ready(gw, 2)
            assert Load(gw.port, total=50, concurrency=4).start().join().statuses == {503: 50}
            # Panic mode: below 50% healthy, spread over every target instead of failing.
            requests.patch(api + "/upstreams/iris", json={"healthchecks": {"panic_threshold": 50}},
                           timeout=5).raise_for_status()
            wait_ready(gw, 2)
            assert health(gw) == {addr(a): "UNHEALTHY", addr(b): "UNHEALTHY"}
            spread = Load(gw.port, total=600, concurrency=8).start().join()
            assert spread.statuses == {200: 600}
            assert spread.backends["A"] > 150 and spread.backends["B"] > 100
