"""Target health as the Admin API reports it, and Kong's manual health overrides.

``HealthSource`` is the one question the Admin API asks ("what is this target's health?").
Until active/passive health checks exist, ``ManualHealth`` answers it: a target is
``HEALTHCHECKS_OFF`` unless an operator set it ``HEALTHY``/``UNHEALTHY`` through
``PUT|POST /upstreams/{u}/targets/{t}/healthy|unhealthy``. Those overrides are node
state, not configuration (Kong keeps them in memory and broadcasts them), so they are not
saved in config.json; the supervisor passes them to every worker with each snapshot.
The health checker will implement ``HealthSource`` itself and take overrides as input.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

from fastgw.admin import entities as E
from fastgw.admin.http import Response, json_response
from fastgw.config.model import Config, Target, Upstream

if TYPE_CHECKING:
    from fastgw.admin.crud import Call

__all__ = ["HealthSource", "ManualHealth", "get_health", "set_health"]

HEALTHY, UNHEALTHY, OFF = "HEALTHY", "UNHEALTHY", "HEALTHCHECKS_OFF"


class HealthSource(Protocol):
    def target_health(self, upstream: Upstream, target: Target) -> str:
        """HEALTHY, UNHEALTHY, HEALTHCHECKS_OFF or DNS_ERROR."""
        ...


class ManualHealth:
    """Operator overrides keyed by (upstream id, target id)."""

    def __init__(self) -> None:
        self.overrides: dict[tuple[str, str], str] = {}

    def target_health(self, upstream: Upstream, target: Target) -> str:
        return self.overrides.get((upstream.id, target.id), OFF)

    def set(self, upstream_id: str, target_id: str, healthy: bool) -> bool:
        """Record an override; True if it changed anything."""
        value = HEALTHY if healthy else UNHEALTHY
        changed = self.overrides.get((upstream_id, target_id)) != value
        self.overrides[(upstream_id, target_id)] = value
        return changed

    def prune(self, config: Config) -> None:
        """Forget overrides of targets that no longer exist (or were replaced)."""
        live = {(t.upstream, t.id) for t in config.targets}
        for key in [k for k in self.overrides if k not in live]:
            del self.overrides[key]

    def message(self) -> dict[str, Any]:
        """The ``health`` part of a worker snapshot message."""
        return {"overrides": [{"upstream": u, "target": t, "health": h}
                              for (u, t), h in self.overrides.items()]}


def _split(target: str) -> tuple[str, int]:
    if target.startswith("["):
        host, _, port = target[1:].partition("]:")
        return host, int(port)
    host, _, port = target.rpartition(":")
    return host, int(port)


def _target_report(upstream: Upstream, target: Target, health: str) -> dict[str, Any]:
    host, port = _split(target.target)
    up = health != UNHEALTHY
    available = target.weight if up else 0
    return {
        **E.to_dict(target),
        "health": health,
        "data": {
            "host": host, "port": port, "dns": "AAAA" if ":" in host else "A",
            "nodeWeight": target.weight,
            "weight": {"total": target.weight, "available": available,
                       "unavailable": target.weight - available},
            "addresses": [{"ip": host, "port": port, "weight": target.weight,
                           "health": health}],
        },
    }


async def get_health(call: "Call") -> Response:
    """``GET /upstreams/{u}/health[?balancer_health=1]`` (Kong's shapes, reference §1)."""
    cfg = call.config
    upstream = E.find(cfg, "upstreams", call.params["u"])
    if upstream is None:
        raise E.not_found()
    assert isinstance(upstream, Upstream)
    source = call.api.health
    targets = [t for t in cfg.targets if t.upstream == upstream.id]
    reports = [_target_report(upstream, t, source.target_health(upstream, t)) for t in targets]
    node_id = call.api.node_id
    if call.req.arg("balancer_health") in ("1", "true"):
        total = sum(r["data"]["weight"]["total"] for r in reports)
        available = sum(r["data"]["weight"]["available"] for r in reports)
        threshold = float(upstream.healthchecks.get("threshold") or 0)
        healthy = available > 0 and available * 100 >= threshold * total
        states = {r["health"] for r in reports}
        overall = OFF if states <= {OFF} else (HEALTHY if healthy else UNHEALTHY)
        return json_response(200, {"data": {
            "id": upstream.id, "health": overall,
            "balancer_health": HEALTHY if healthy else UNHEALTHY,
            "details": {"healthy": healthy,
                        "weight": {"total": total, "available": available,
                                   "unavailable": total - available},
                        "hosts": [{"host": r["data"]["host"], "port": r["data"]["port"],
                                   "dns": r["data"]["dns"], "nodeWeight": r["weight"],
                                   "weight": r["data"]["weight"],
                                   "addresses": r["data"]["addresses"]} for r in reports]},
        }, "next": None, "node_id": node_id})
    return json_response(200, {"data": reports, "next": None, "node_id": node_id})


async def set_health(call: "Call", healthy: bool) -> Response:
    """``PUT|POST /upstreams/{u}/targets/{t}[/{address}]/healthy|unhealthy`` -> 204."""
    cfg = call.config
    upstream = E.find(cfg, "upstreams", call.params["u"])
    if upstream is None:
        raise E.not_found()
    target = E.find(cfg, "targets", call.params["t"], scope=("upstream", upstream.id))
    if target is None:
        raise E.not_found()
    address = call.params.get("address")
    if address is not None and address not in (getattr(target, "target"),) and \
            E.find(cfg, "targets", address, scope=("upstream", upstream.id)) is not target:
        raise E.not_found()  # no DNS here: a target has exactly one address, itself
    if call.api.manual_health.set(upstream.id, target.id, healthy):
        await call.api.publish_health()
    return Response(204, content_type=None)
