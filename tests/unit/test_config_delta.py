"""Config deltas (fastgw.config.delta): what the supervisor sends a worker for a change."""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Callable

import orjson
import pytest
import trustme

from fastgw.config import ConfigError, Config, load_declarative
from fastgw.config.declarative import grouped_by_parent
from fastgw.config.delta import apply_delta, config_delta, delta_size
from fastgw.controlplane.admin import entities as E
from tests.support.certs import issue

BASE = {
    "_format_version": "3.0",
    "upstreams": [{"name": "u", "targets": [{"target": "10.0.0.1:80"}, {"target": "10.0.0.2:80"},
                                            {"target": "10.0.0.3:80", "weight": 5}]},
                  {"name": "v", "targets": [{"target": "10.0.1.1:80"}]}],
    "services": [{"name": f"s{i}", "host": "u", "routes": [{"name": f"r{i}", "paths": [f"/s{i}"]}]}
                 for i in range(5)],
    "consumers": [{"username": "ann"}],
    "plugins": [{"name": "canary", "service": "s1", "config": {"percentage": 10,
                                                                "upstream_host": "v"}}],
}


def _base() -> Config:
    return load_declarative(BASE, now=1_700_000_000.0)


def _canonical(cfg: Config) -> Config:
    return replace(cfg, routes=grouped_by_parent(cfg.routes, cfg.services, "service"),
                   targets=grouped_by_parent(cfg.targets, cfg.upstreams, "upstream"))


def _target(cfg: Config, address: str) -> Any:
    return next(t for t in cfg.targets if t.target == address)


def _reweight(cfg: Config) -> Config:
    return E.update(cfg, "targets", _target(cfg, "10.0.0.2:80"), {"weight": 7})[0]


def _add_route_mid(cfg: Config) -> Config:  # the store keeps routes grouped by service
    new, _ = E.create(cfg, "routes", {"paths": ["/new"]}, ("service", cfg.services[1].id))
    return _canonical(new)


def _add_target(cfg: Config) -> Config:
    upstream = cfg.upstream("u")
    assert upstream is not None
    new, _ = E.create(cfg, "targets", {"target": "10.0.0.9:80"}, ("upstream", upstream.id))
    return _canonical(new)


def _delete_service_routes(cfg: Config) -> Config:
    route = cfg.route("r3")
    assert route is not None
    cfg = E.delete(cfg, "routes", route)
    service = cfg.service("s3")
    assert service is not None
    return E.delete(cfg, "services", service)


def _move_route(cfg: Config) -> Config:  # to another service: existing entities reorder
    route = cfg.route("r0")
    assert route is not None
    return _canonical(E.update(cfg, "routes", route, {"service": {"id": cfg.services[4].id}})[0])


def _reverse_targets(cfg: Config) -> Config:
    return replace(cfg, targets=tuple(reversed(cfg.targets)))


def _reload(cfg: Config) -> Config:  # every object new, nothing changed
    return load_declarative(BASE, now=1_700_000_000.0)


def _first_service(cfg: Config) -> Config:  # in front of the others
    new = E.create(cfg, "services", {"name": "first", "host": "u"})[0]
    return replace(new, services=new.services[-1:] + new.services[:-1])


CA = trustme.CA()
EDGE, RENEWED = issue(CA, "a.example"), issue(CA, "a.example")


def _add_certificate(cfg: Config) -> Config:  # a certificate and its SNIs (Admin API)
    new, cert = E.create(cfg, "certificates", EDGE.entity())
    return E.certificate_snis(new, cert.id, ["a.example", "*.a.example"])


def _two_changes(cfg: Config) -> Config:
    return _add_target(_add_route_mid(_reweight(cfg)))


@pytest.mark.parametrize(("change", "kinds", "keys"), [
    (_reweight, {"targets"}, {"put"}),
    (_add_route_mid, {"routes"}, {"put", "insert"}),
    (_add_target, {"targets"}, {"put", "insert"}),
    (_delete_service_routes, {"services", "routes"}, {"delete"}),
    (_move_route, {"routes"}, {"put", "order"}),
    (_reverse_targets, {"targets"}, {"order"}),
    (_reload, set(), set()),
    (_two_changes, {"routes", "targets"}, {"put", "insert"}),
    (_first_service, {"services"}, {"put", "insert"}),
    (_add_certificate, {"certificates", "snis"}, {"put", "insert"}),
])
def test_delta_rebuilds_the_same_config(change: Callable[[Config], Config], kinds: set[str],
                                        keys: set[str]) -> None:
    old = _base()
    new = change(old)
    delta = config_delta(old, new)
    assert delta is not None and set(delta) == kinds
    assert set().union(*(set(c) for c in delta.values())) == keys
    wire = orjson.loads(orjson.dumps(delta))  # what crosses the IPC socket
    rebuilt = apply_delta(old, wire)
    assert rebuilt == new
    for kind in ("services", "routes", "upstreams", "targets", "consumers", "plugins",
                 "certificates", "snis"):
        assert [e.id for e in getattr(rebuilt, kind)] == [e.id for e in getattr(new, kind)]
        if kind not in kinds:  # untouched collections keep their identity (cheap checks)
            assert getattr(rebuilt, kind) is getattr(old, kind)


def test_renewed_certificate_is_one_put() -> None:
    """The hot certificate change workers get: the entity, nothing else."""
    old = _add_certificate(_base())
    new = E.update(old, "certificates", old.certificates[0],
                   {"cert": RENEWED.cert, "key": RENEWED.key})[0]
    delta = config_delta(old, new)
    assert delta is not None and set(delta) == {"certificates"}
    assert set(delta["certificates"]) == {"put"}
    assert apply_delta(old, orjson.loads(orjson.dumps(delta))) == new


def test_first_entity_of_a_kind() -> None:
    old = replace(_base(), consumers=())
    new = E.create(old, "consumers", {"username": "bob"})[0]
    delta = config_delta(old, new)
    assert delta == {"consumers": {"put": [delta["consumers"]["put"][0]],  # type: ignore[index]
                                   "insert": [[new.consumers[0].id, None]]}}
    assert apply_delta(old, orjson.loads(orjson.dumps(delta))) == new


def test_small_change_is_small_whatever_the_config_size() -> None:
    doc = dict(BASE, services=[{"name": f"s{i}", "host": "u",
                                "routes": [{"name": f"r{i}", "paths": [f"/s{i}"]}]}
                               for i in range(2000)])
    old = load_declarative(doc)
    for change in (_reweight, _add_route_mid):
        delta = config_delta(old, change(old))
        assert delta is not None and delta_size(delta) <= 2
        assert len(orjson.dumps(delta)) < 2000


def test_node_settings_change_is_not_a_delta() -> None:
    old = _base()
    new = replace(old, gateway=replace(old.gateway, drain_timeout=3))
    assert config_delta(old, new) is None


@pytest.mark.parametrize("delta", [
    [],
    {"nodes": {}},
    {"routes": {"put": ["not an object"]}},
    {"routes": {"put": [{"paths": ["no-slash"], "id": "6f1e0b3e-6a0c-4f53-9a43-2f1e0c6a7b11"}]}},
    {"routes": {"order": ["a", "b"]}},
    {"routes": {"insert": [["6f1e0b3e-6a0c-4f53-9a43-2f1e0c6a7b11", "nowhere"]]}},
])
def test_malformed_delta_is_refused(delta: Any) -> None:
    with pytest.raises(ConfigError):
        apply_delta(_base(), delta)
