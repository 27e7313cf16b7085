"""Canary releases, pure and in the data plane's balancer (no sockets): the share over
10,000 clients, stickiness, the header override, time-based rollout, fallback, and Kong
Enterprise's canary plugin config accepted as is."""

from __future__ import annotations

import asyncio
from typing import Any, Iterator

import pytest

from fastgw.core.canary import CanaryConfig, bucket, canary_buckets, goes_to_canary
from fastgw.config import ConfigError, load_declarative
from fastgw.dataplane.sweeper import DeadlineSweeper
from fastgw.dataplane.balancing import BalanceContext, CanaryBalancer
from fastgw.dataplane.snapshot import PoolRegistry, RoutePlan, build_snapshot
from tests.support.heads import make_head

KEYS = [f"client-{i}" for i in range(10_000)]


def share(cfg: CanaryConfig, keys: list[str], now: float = 0.0) -> float:
    return sum(goes_to_canary(cfg, k, now) for k in keys) / len(keys)


@pytest.mark.parametrize("pct", [1.0, 0.1, 10.0, 50.0, 99.0])
def test_share_over_10000_clients(pct: float) -> None:
    got = share(CanaryConfig(percentage=pct), KEYS) * 100
    tolerance = 0.3 if pct <= 1 else pct * 0.15
    assert abs(got - pct) <= tolerance, got


def test_one_percent_also_over_ip_like_keys() -> None:
    ips = [f"10.{i // 65536}.{i // 256 % 256}.{i % 256}" for i in range(10_000)]
    assert abs(share(CanaryConfig(percentage=1), ips) - 0.01) <= 0.003


def test_each_key_always_on_the_same_side() -> None:
    cfg = CanaryConfig(percentage=1)
    first = [goes_to_canary(cfg, k, 0.0) for k in KEYS]
    for repeat in range(5):
        assert [goes_to_canary(cfg, k, float(repeat)) for k in KEYS] == first
    # Growing the share only adds clients: nobody leaves the canary.
    wider = [goes_to_canary(CanaryConfig(percentage=5), k, 0.0) for k in KEYS]
    assert all(w for f, w in zip(first, wider) if f)


def test_bucket_is_stable_across_processes() -> None:
    assert bucket("client-1", 1000) == bucket("client-1", 1000)  # not Python's salted hash()
    assert [bucket(k, 1000) for k in ("a", "b", "client-42")] == [
        int.from_bytes(__import__("hashlib").blake2b(k.encode(), digest_size=8).digest(),
                       "big") % 1000 for k in ("a", "b", "client-42")]


@pytest.mark.parametrize("value,stable_key,expected", [
    ("always", True, True), ("ALWAYS", True, True), ("never", False, False),
    ("maybe", None, None),
])
def test_override_header(value: str, stable_key: bool | None, expected: bool | None) -> None:
    cfg = CanaryConfig(percentage=50)
    key = next(k for k in KEYS if not goes_to_canary(cfg, k, 0))
    if stable_key is False:
        key = next(k for k in KEYS if goes_to_canary(cfg, k, 0))
    got = goes_to_canary(cfg, key, 0.0, override=value)
    assert got == (goes_to_canary(cfg, key, 0.0) if expected is None else expected)


# (now - start, expected canary buckets of 1000) over duration 100 s, steps 10
TIME_CASES = [(-5, 0), (0, 0), (9.9, 0), (10, 100), (55, 500), (99.9, 900), (100, 1000),
              (500, 1000)]


@pytest.mark.parametrize("elapsed,buckets", TIME_CASES)
def test_time_based_rollout_moves_in_steps(elapsed: float, buckets: int) -> None:
    cfg = CanaryConfig(start=1000.0, duration=100, steps=10)
    assert canary_buckets(cfg, 1000.0 + elapsed) * 100 == buckets
    assert abs(share(cfg, KEYS[:4000], 1000.0 + elapsed) - buckets / 1000) <= 0.03


def test_percentage_overrides_time_mode_and_allow_deny() -> None:
    assert canary_buckets(CanaryConfig(percentage=0.1, start=0, duration=1), 10**9) == 1
    assert not any(goes_to_canary(CanaryConfig(percentage=100, hash="allow"), k, 0)
                   for k in KEYS[:50])
    assert all(goes_to_canary(CanaryConfig(percentage=0, hash="deny"), k, 0) for k in KEYS[:50])
    assert share(CanaryConfig(percentage=0), KEYS) == 0
    assert share(CanaryConfig(percentage=100), KEYS) == 1


# -- the Kong config, validated and kept ---------------------------------------------------

def doc(plugin_config: dict[str, Any], *, fallback_target: bool = True, **where: Any
        ) -> dict[str, Any]:
    return {
        "_format_version": "3.0",
        "upstreams": [
            {"name": "blue", "targets": [{"target": "127.0.0.1:1001"}]},
            {"name": "green", "targets": [{"target": "127.0.0.1:2001"}] if fallback_target else []},
        ],
        "services": [{"name": "s", "host": "blue", "routes": [
            {"name": "r", "paths": ["/a"]}, {"name": "plain", "paths": ["/b"]}]}],
        "plugins": [{"name": "canary", "config": plugin_config, **where}],
    }


KONG_EE_CONFIG = {"percentage": 10, "steps": 100, "hash": "header", "hash_header": "X-User",
                  "canary_by_header_name": "X-Canary", "upstream_host": "green",
                  "upstream_fallback": True}


def test_kong_enterprise_config_accepted_as_is_with_defaults() -> None:
    cfg = load_declarative(doc(KONG_EE_CONFIG, route="r"))
    assert cfg.warnings == ()  # executed, not "kept but not executed"
    conf = cfg.plugins[0].config
    assert conf["duration"] == 3600 and conf["upstream_uri"] is None
    assert {k: conf[k] for k in KONG_EE_CONFIG} == KONG_EE_CONFIG
    timed = load_declarative(doc({"duration": 600, "upstream_uri": "/v2"}, service="s"))
    assert isinstance(timed.plugins[0].config["start"], int)  # Kong: now, kept once set


@pytest.mark.parametrize("config,message", [
    ({"percentage": 10}, "at least one of these fields must be non-empty"),
    ({"percentage": 101, "upstream_host": "green"}, "value should be between 0 and 100"),
    ({"hash": "header", "upstream_host": "green"}, "config.hash_header: required field missing"),
    ({"hash": "weird", "upstream_host": "green"}, "expected one of"),
    ({"upstream_uri": "v2"}, "should start with: /"),
    ({"steps": 0, "upstream_host": "green"}, "value should be between"),
    ({"upstream_host": "green", "nope": 1}, "config.nope: unknown field"),
])
def test_invalid_canary_configs(config: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_declarative(doc(config, route="r"))
    assert message in str(err.value)


# -- the data plane's balancer --------------------------------------------------------------

@pytest.fixture
def registry() -> Iterator[PoolRegistry]:
    loop = asyncio.new_event_loop()
    yield PoolRegistry(loop, DeadlineSweeper(loop, 1), max_idle=1, max_requests=1,
                       idle_timeout=1)
    loop.close()


def plans(registry: PoolRegistry, document: dict[str, Any]) -> dict[str, RoutePlan]:
    snap = build_snapshot(load_declarative(document), registry, 1)
    return {p.route.name: p for p in snap.route_plans.values()}  # type: ignore[misc]


def exchange(headers: dict[str, str], url: str = "/a?x=1", ip: str = "10.0.0.9") -> Any:
    return BalanceContext(make_head(url, headers), ip, None)


def test_routes_without_the_plugin_are_untouched(registry: PoolRegistry) -> None:
    p = plans(registry, doc(KONG_EE_CONFIG, route="r"))
    assert isinstance(p["r"].balancer, CanaryBalancer)
    assert not isinstance(p["plain"].balancer, CanaryBalancer)  # zero cost without it
    p = plans(registry, doc(KONG_EE_CONFIG, service="s"))
    assert all(isinstance(x.balancer, CanaryBalancer) for x in p.values())


def test_split_override_fallback_and_uri(registry: PoolRegistry) -> None:
    plan = plans(registry, doc(KONG_EE_CONFIG, route="r"))["r"]
    cfg = CanaryConfig.from_plugin(KONG_EE_CONFIG)
    for key in KEYS[:300]:
        port = plan.pick(exchange({"X-User": key}), []).port  # type: ignore[union-attr]
        assert port == (2001 if goes_to_canary(cfg, key, 0) else 1001)
    stable_key = next(k for k in KEYS if not goes_to_canary(cfg, k, 0))
    assert plan.pick(exchange({"X-User": stable_key, "X-Canary": "always"}), []).port == 2001  # type: ignore[union-attr]
    balancer = plan.balancer
    assert isinstance(balancer, CanaryBalancer)
    balancer.canary.available[:] = b"\x00"  # type: ignore[union-attr]
    assert plan.pick(exchange({"X-Canary": "always"}), []).port == 1001  # type: ignore[union-attr]
    strict = plans(registry, doc({**KONG_EE_CONFIG, "upstream_fallback": False}, route="r"))["r"]
    strict.balancer.canary.available[:] = b"\x00"  # type: ignore[union-attr]
    assert strict.pick(exchange({"X-Canary": "always"}), []) is None  # -> 503
    empty = plans(registry, doc(KONG_EE_CONFIG, route="r", fallback_target=False))["r"]
    assert empty.pick(exchange({"X-Canary": "always"}), []).port == 1001  # type: ignore[union-attr]
    # upstream_uri only: same targets, another path (the query string is kept).
    uri = plans(registry, doc({"percentage": 100, "upstream_uri": "/v2/api"}, route="r"))["r"]
    ex = exchange({})
    assert uri.pick(ex, []).port == 1001 and ex.upstream_uri == b"/v2/api"  # type: ignore[union-attr]


def test_direct_host_canary_and_retry_stays_on_its_side(registry: PoolRegistry) -> None:
    conf = {"percentage": 100, "upstream_host": "canary.internal", "upstream_port": 9000}
    plan = plans(registry, doc(conf, route="r"))["r"]
    first = plan.pick(exchange({}), [])
    assert first is not None and (first.host, first.port) == ("canary.internal", 9000)
    assert plan.pick(exchange({}), [first]) is None  # its only target was tried: no hop to A
