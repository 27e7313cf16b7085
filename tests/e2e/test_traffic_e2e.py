"""Blue-green, weighted migration and canary end to end: real gateways (2 workers), real
emulator backends, load at concurrency 16, changes through the Admin API under load."""

from __future__ import annotations

import time
from collections import defaultdict
from typing import Any, Iterator

import pytest
import requests

from tests.support.gateway import GatewayProcess
from tests.support.procs import IrisProcess
from fastgw.core.canary import CanaryConfig, goes_to_canary
from tests.support.admin import admin_config, wait_ready
from tests.support.load import Load

pytestmark = pytest.mark.timeout(120)


def addr(p: IrisProcess) -> str:
    return f"127.0.0.1:{p.port}"


def blue_green(blue: IrisProcess, green: IrisProcess) -> dict[str, Any]:
    """Two upstreams, blue and green, and a service on blue (Kong's recipe (a))."""
    return admin_config({
        "_format_version": "3.0",
        "upstreams": [{"name": "blue", "targets": [{"target": addr(blue)}]},
                      {"name": "green", "targets": [{"target": addr(green)}]}],
        "services": [{"name": "atelier", "host": "blue", "routes": [
            {"name": "atelier", "paths": ["/api/atelier"], "strip_path": False}]}],
    })


@pytest.fixture
def blue_green_backends() -> Iterator[tuple[IrisProcess, IrisProcess]]:
    with IrisProcess("blue") as blue, IrisProcess("green") as green:
        yield blue, green


def switch_under_load(gw: GatewayProcess, change: Any) -> tuple[Load, float]:
    """Run load, apply ``change`` after 800 requests, return (load, time it was live)."""
    load = Load(gw.port, total=None, concurrency=16).start()
    try:
        load.wait_done(800)
        change()
        wait_ready(gw, 2)  # every worker runs the new version
        live = time.monotonic()
        load.wait_done(load.done + 1500)
    finally:
        load.stop()
        load.join(60)
    return load, live


def test_blue_green_switch_by_service_host(
        blue_green_backends: tuple[IrisProcess, IrisProcess]) -> None:
    blue, green = blue_green_backends
    with GatewayProcess(blue_green(blue, green), workers=2) as gw:
        wait_ready(gw, 2)

        def flip() -> None:
            requests.patch(gw.admin_url + "/services/atelier", json={"host": "green"},
                           timeout=5).raise_for_status()

        load, live = switch_under_load(gw, flip)
        assert load.done >= 2000 and load.failed == 0, (load.errors[:3], load.statuses)
        assert load.backends["blue"] >= 700
        assert load.since(live) == {"green": load.since(live)["green"]}  # 100% new side
        assert load.since(live)["green"] >= 1500


def test_blue_green_switch_by_target_weights() -> None:
    with IrisProcess("blue") as blue, IrisProcess("green") as green:
        base = admin_config({"_format_version": "3.0", "upstreams": [{"name": "app", "targets": [
            {"target": addr(blue), "weight": 100}, {"target": addr(green), "weight": 0}]}],
            "services": [{"name": "atelier", "host": "app", "routes": [
                {"name": "atelier", "paths": ["/api/atelier"], "strip_path": False}]}]})
        with GatewayProcess(base, workers=2) as gw:
            wait_ready(gw, 2)
            api = gw.admin_url

            def flip() -> None:
                for target, weight in ((green, 100), (blue, 0)):
                    requests.patch(api + f"/upstreams/app/targets/{addr(target)}",
                                   json={"weight": weight}, timeout=5).raise_for_status()

            load, live = switch_under_load(gw, flip)
            assert load.done >= 2000 and load.failed == 0, (load.errors[:3], load.statuses)
            assert load.backends["blue"] >= 700
            assert set(load.since(live)) == {"green"}


def test_weighted_split_for_gradual_migration() -> None:
    with IrisProcess("old") as old, IrisProcess("new") as new:
        base = admin_config({"_format_version": "3.0", "upstreams": [{"name": "app", "targets": [
            {"target": addr(old), "weight": 90}, {"target": addr(new), "weight": 10}]}],
            "services": [{"name": "atelier", "host": "app", "routes": [
                {"name": "atelier", "paths": ["/api/atelier"], "strip_path": False}]}]})
        with GatewayProcess(base, workers=2) as gw:
            wait_ready(gw, 2)
            load = Load(gw.port, total=2000, concurrency=16).start().join()
            assert load.failed == 0
            # Smooth WRR per worker: exact proportions over each 100-request cycle.
            assert 180 <= load.backends["new"] <= 220, load.backends
            requests.patch(gw.admin_url + f"/upstreams/app/targets/{addr(new)}",
                           json={"weight": 90}, timeout=5).raise_for_status()
            requests.patch(gw.admin_url + f"/upstreams/app/targets/{addr(old)}",
                           json={"weight": 10}, timeout=5).raise_for_status()
            wait_ready(gw, 2)
            load = Load(gw.port, total=2000, concurrency=16).start().join()
            assert 1780 <= load.backends["new"] <= 1820, load.backends


CANARY = {"percentage": 1, "hash": "header", "hash_header": "X-Client",
          "canary_by_header_name": "X-Canary", "upstream_host": "green",
          "upstream_fallback": True}


def test_canary_one_percent_sticky_with_override_and_fallback(
        blue_green_backends: tuple[IrisProcess, IrisProcess]) -> None:
    blue, green = blue_green_backends
    with GatewayProcess(blue_green(blue, green), workers=2) as gw:
        wait_ready(gw, 2)
        api = gw.admin_url
        r = requests.post(api + "/routes/atelier/plugins", json={"name": "canary",
                                                                 "config": CANARY}, timeout=5)
        assert r.status_code == 201, r.text
        assert r.json()["config"]["steps"] == 1000  # Kong's defaults filled in
        wait_ready(gw, 2)
        keys = 1000
        load = Load(gw.port, total=5 * keys, concurrency=16,
                    headers=lambda i: {"X-Client": f"client-{i % keys}"}).start().join()
        assert load.failed == 0, (load.errors[:3], load.statuses)
        sides: dict[int, set[str | None]] = defaultdict(set)
        for _, backend, _, i in load.log:
            sides[i % keys].add(backend)
        assert all(len(s) == 1 for s in sides.values())  # the same side all 5 times
        cfg = CanaryConfig.from_plugin(CANARY)
        on_canary = {k for k, s in sides.items() if s == {"green"}}
        assert on_canary == {k for k in range(keys) if goes_to_canary(cfg, f"client-{k}", 0)}
        assert 3 <= len(on_canary) <= 20  # 1% of 1000 keys (exactly what the pure function says)

        def who(headers: dict[str, str]) -> tuple[int, str | None]:
            r = requests.get(gw.url + "/api/atelier/", headers=headers, timeout=5)
            return r.status_code, r.headers.get("X-Iris-Id")

        stable = next(k for k in range(keys) if k not in on_canary)
        assert who({"X-Client": f"client-{stable}", "X-Canary": "always"}) == (200, "green")
        canary = min(on_canary)
        assert who({"X-Client": f"client-{canary}", "X-Canary": "never"}) == (200, "blue")
        # Fallback: the canary upstream has no healthy target -> the stable side answers.
        requests.put(api + f"/upstreams/green/targets/{addr(green)}/unhealthy",
                     timeout=5).raise_for_status()
        time.sleep(0.2)  # a health message, not a config version: no wait_ready
        assert who({"X-Canary": "always"}) == (200, "blue")
        plugin = r.json()["id"]
        requests.patch(api + f"/plugins/{plugin}", json={"config": {"upstream_fallback": False}},
                       timeout=5).raise_for_status()
        wait_ready(gw, 2)
        assert who({"X-Canary": "always"}) == (503, None)
        requests.put(api + f"/upstreams/green/targets/{addr(green)}/healthy",
                     timeout=5).raise_for_status()
        time.sleep(0.2)
        assert who({"X-Canary": "always"}) == (200, "green")
