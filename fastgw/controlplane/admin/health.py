"""Target health as the Admin API reports and sets it (Kong's endpoints and shapes).

``HealthSource`` is what the Admin API asks and tells: in a running gateway it is the
supervisor's ``fastgw.controlplane.prober.HealthService`` (one state per node, fed by active
probes, passive reports and these manual overrides, pushed to every worker at once).
``ManualHealth`` is the stand-alone fallback for an AdminAPI without a supervisor.

Manual overrides (``PUT|POST /upstreams/{u}/targets/{t}/healthy|unhealthy``) are node
state, not configuration (Kong keeps them in memory and broadcasts them): they are not
saved in config.json and take effect on every worker without a new config version.
"""

from __future__ import annotations

from typing import Any

from fastgw.controlplane.admin import entities as E
from fastgw.controlplane.admin.call import Call, HealthSource
from fastgw.controlplane.admin.http import Response, json_response
from fastgw.config.model import Target, Upstream, split_target
from fastgw.core.health import HEALTHCHECKS_OFF as OFF
from fastgw.core.health import HEALTHY, UNHEALTHY

__all__ = ["HealthSource", "ManualHealth", "get_health", "set_health"]


class ManualHealth:
    """Overrides only, keyed by (upstream id, target address); no checks, no workers."""

    def __init__(self) -> None:
        self.overrides: dict[tuple[str, str], str] = {}

    def target_health(self, upstream: Upstream, target: Target) -> str:
        if target.weight == 0:
            return OFF
        return self.overrides.get((upstream.id, target.target), OFF)

    def set_manual(self, upstream: Upstream, address: str, healthy: bool) -> None:
        self.overrides[(upstream.id, address)] = HEALTHY if healthy else UNHEALTHY


def _target_report(upstream: Upstream, target: Target, health: str) -> dict[str, Any]:
    host, port = split_target(target.target)
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


async def get_health(call: Call) -> Response:
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
        # Kong: healthy iff the available share is strictly above the threshold.
        healthy = total > 0 and available * 100 > threshold * total
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


async def set_health(call: Call, healthy: bool) -> Response:
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
    call.api.health.set_manual(upstream, target.target, healthy)
    return Response(204, content_type=None)
