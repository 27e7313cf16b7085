"""TLS to backends in the snapshot: profiles from Kong's service fields and node settings,
and pools keyed so that TLS and plain, or differently verified, connections never mix."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
import trustme

from fastgw.config import load_declarative
from fastgw.core.http.request import HeadCollector, RequestLimits, RequestReader
from fastgw.dataplane.snapshot import PoolRegistry, build_snapshot
from fastgw.dataplane.sweeper import DeadlineSweeper
from fastgw.dataplane.upstream_tls import client_profile, server_name
from tests.support.certs import ca_pem, issue

CA = trustme.CA()
CLIENT = issue(CA, "client")
CA_ID = "5b5b2c1e-0000-4000-8000-000000000001"
CERT_ID = "5b5b2c1e-0000-4000-8000-000000000002"


@pytest.fixture
def registry() -> Iterator[PoolRegistry]:
    loop = asyncio.new_event_loop()
    yield PoolRegistry(loop, DeadlineSweeper(loop, 0.1), max_idle=8, max_requests=100,
                       idle_timeout=60.0)
    loop.close()


def config(*services: dict[str, Any], **gateway: Any) -> Any:
    return load_declarative({
        "_format_version": "3.0", "gateway": gateway,
        "ca_certificates": [{"id": CA_ID, "cert": ca_pem(CA)}],
        "certificates": [{"id": CERT_ID, "cert": CLIENT.cert, "key": CLIENT.key}],
        "upstreams": [{"name": "iris", "targets": [{"target": "10.0.0.1:443"},
                                                   {"target": "backend.test:8443"}]}],
        "services": [{"host": "iris", "routes": [{"name": s["name"], "paths": ["/" + s["name"]],
                                                  "preserve_host": s.pop("preserve_host", False)}],
                      **s} for s in services]})


def plan(snapshot: Any, name: str) -> Any:
    return next(p for p in snapshot.route_plans.values() if p.route.name == name)


def head(host: bytes) -> Any:
    import httptools

    sink = HeadCollector()
    reader = RequestReader(RequestLimits(), sink, lambda b: None, lambda: None)
    parser = httptools.HttpRequestParser(reader)
    reader.parser = parser
    parser.feed_data(b"GET / HTTP/1.1\r\nHost: " + host + b"\r\n\r\n")
    return sink.heads[0]


def test_tls_and_plain_pools_never_mix(registry: PoolRegistry) -> None:
    snap = build_snapshot(config({"name": "plain", "protocol": "http"},
                                 {"name": "tls", "protocol": "https"},
                                 {"name": "tls2", "protocol": "https"},
                                 {"name": "verified", "protocol": "https", "tls_verify": True,
                                  "ca_certificates": [CA_ID]},
                                 {"name": "mtls", "protocol": "https",
                                  "client_certificate": {"id": CERT_ID}}), registry, 1)
    plain, tls, tls2, verified, mtls = (plan(snap, n) for n in
                                        ("plain", "tls", "tls2", "verified", "mtls"))
    assert plain.tls is None
    for target in plain.balancer.targets:
        pools = [p.tls.pools[target] for p in (tls, verified, mtls)]
        assert len({id(target.pool), *map(id, pools)}) == 4  # four ways to talk: four pools
        assert target.pool.tls is None and all(p.tls is not None for p in pools)
        assert tls2.tls.pools[target] is tls.tls.pools[target]  # same profile: shared
    by_target = {t.key: tls.tls.pools[t] for t in tls.balancer.targets}
    assert by_target["10.0.0.1:443"].server_name == "10.0.0.1"
    assert by_target["backend.test:8443"].server_name == "backend.test"
    assert verified.tls.pools[verified.balancer.targets[0]].verify_depth == 1
    assert tls.tls.pools[tls.balancer.targets[0]].verify_depth == -1  # not verified


def test_pools_survive_an_unchanged_profile(registry: PoolRegistry) -> None:
    first = plan(build_snapshot(config({"name": "tls", "protocol": "https"}), registry, 1), "tls")
    pools = dict(first.tls.pools)
    again = plan(build_snapshot(config({"name": "tls", "protocol": "https"}), registry, 2), "tls")
    assert [again.tls.pools[t] for t in again.balancer.targets] == \
           [pools[t] for t in first.balancer.targets]
    changed = plan(build_snapshot(config({"name": "tls", "protocol": "https",
                                          "tls_verify": True}), registry, 3), "tls")
    assert all(p.closed for p in pools.values())  # the old profile's pools are gone
    assert not any(p.closed for p in changed.tls.pools.values())


def test_preserve_host_sends_the_client_host_as_sni(registry: PoolRegistry) -> None:
    p = plan(build_snapshot(config({"name": "tls", "protocol": "https", "preserve_host": True}),
                            registry, 1), "tls")
    target = p.balancer.targets[0]
    pool = p.tls.pool_for(target, head(b"API.Example.com:8443"))
    assert pool.server_name == "API.Example.com" and pool.tls is p.tls.pools[target].tls
    assert p.tls.pool_for(target, head(b"API.Example.com")) is pool
    p.tls.pools[target].close()
    assert pool.closed


@pytest.mark.parametrize("service,gateway,expected", [
    ({}, {}, (False, 1, 0, False)),  # Kong's defaults: not verified
    ({}, {"upstream_tls_verify": True, "upstream_tls_verify_depth": 3}, (True, 3, 0, False)),
    ({"tls_verify": False}, {"upstream_tls_verify": True}, (False, 1, 0, False)),
    ({"tls_verify": True, "tls_verify_depth": 0, "ca_certificates": [CA_ID]}, {},
     (True, 0, 1, False)),
    ({"client_certificate": {"id": CERT_ID}}, {}, (False, 1, 0, True)),
])
def test_profile_from_service_and_node(service: dict[str, Any], gateway: dict[str, Any],
                                       expected: tuple[bool, int, int, bool]) -> None:
    cfg = config({"name": "s", "protocol": "https", **service}, **gateway)
    profile = client_profile(cfg, cfg.services[0])
    assert (profile.verify, profile.depth, len(profile.cas), profile.client is not None) == \
        expected


@pytest.mark.parametrize("host,name", [(b"a.example:8443", "a.example"), (b"[::1]:443", "::1"),
                                       (b"10.0.0.1", "10.0.0.1")])
def test_server_name(host: bytes, name: str) -> None:
    assert server_name(host) == name
