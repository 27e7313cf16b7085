"""Per-worker traffic counters (hot path) and their plain-dict snapshots (IPC side).

Theory of operation
-------------------
Every request ends with one call, `RouteStats.record`, on the stats object of the route
plan it ran on: plain int/float attributes and bucket-count lists, no prometheus-client
object and no label lookup (DESIGN.md, hot-path rules). Histograms keep one count per
bucket (non-cumulative, the last slot is +Inf), found with `bisect` on bounds computed
once; the collector makes them cumulative at scrape time.

`RouteStats` objects live in a `WorkerStats` registry keyed by (route id, service label,
route label), not in the snapshot: a config reload builds new plans but hands them the
same stats objects, so counters never reset while the worker lives (Prometheus counters
must only grow). A renamed route gets a new key, hence a new series, as it should.

`WorkerStats.snapshot()` turns everything into a JSON-able dict sent to the supervisor
over IPC (`fastgw.dataplane.ipc`); `aggregate()` sums such dicts from all workers, so a scrape shows
the node's totals. Requests without a matched route are not in the per-route counters
(Kong does not count them either) but are in the nginx-style request total.

Latencies follow Kong's definitions, in milliseconds:
- request: from the request head being parsed to the response's last byte handed to
  the socket;
- upstream: from routing to the backend's response head (Kong's "waiting time"; retried
  attempts are included);
- gateway (Kong's `kong_latency`): request minus upstream.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable
from typing import Any, Final, Protocol

from fastgw.dataplane.pool import PoolStats


class _Connection(Protocol):
    """What a client connection shows the counters (dataplane.downstream)."""

    @property
    def active(self) -> object | None: ...
    @property
    def tunnel(self) -> object | None: ...
    @property
    def parsing(self) -> object | None: ...
    @property
    def requests(self) -> int: ...

__all__ = [
    "GATEWAY_BUCKETS",
    "UPSTREAM_BUCKETS",
    "RouteStats",
    "WorkerStats",
    "aggregate",
    "empty_snapshot",
    "service_label",
    "route_label",
]

# Kong 3.x buckets (reference/kong.md §5): kong_latency_ms, and upstream/request latency.
GATEWAY_BUCKETS: Final[tuple[float, ...]] = (1, 2, 5, 7, 10, 15, 20, 30, 50, 75, 100, 200, 500, 750, 1000, 3000, 6000)
UPSTREAM_BUCKETS: Final[tuple[float, ...]] = (25, 50, 80, 100, 250, 400, 700, 1000, 2000, 5000, 10000, 30000, 60000)

_GW: Final = GATEWAY_BUCKETS
_UP: Final = UPSTREAM_BUCKETS
_GW0: Final = float(_GW[0])
_UP0: Final = float(_UP[0])


def service_label(service: Any) -> str:
    """Kong's service label: its name, else its host (configured values only)."""
    return service.name or service.host


def route_label(route: Any) -> str:
    """Kong's route label: its name, else its id."""
    return route.name or route.id


class RouteStats:
    """Counters of one (route, service) pair in one worker. Mutated on the hot path only."""

    __slots__ = (
        "route_id",
        "service",
        "route",
        "service_codes",
        "kong_codes",
        "request_hist",
        "request_sum",
        "upstream_hist",
        "upstream_sum",
        "gateway_hist",
        "ingress",
        "egress",
        "retries",
        "consumer_codes",
    )

    def __init__(self, route_id: str, service: str, route: str) -> None:
        self.route_id = route_id
        self.service = service
        self.route = route
        # status code -> count, split by who produced the response (Kong's `source`)
        self.service_codes: dict[int, int] = {}
        self.kong_codes: dict[int, int] = {}
        self.request_hist = [0] * (len(_UP) + 1)
        self.request_sum = 0.0
        self.upstream_hist = [0] * (len(_UP) + 1)
        self.upstream_sum = 0.0
        self.gateway_hist = [0] * (len(_GW) + 1)
        self.ingress = 0
        self.egress = 0
        self.retries = 0
        # "consumer|source|code" -> count: requests of identified consumers, also in the
        # code counts above (prometheus per_consumer; only counted when asked for).
        self.consumer_codes: dict[str, int] = {}

    def count_consumer(self, consumer: str, from_service: bool, status: int) -> None:
        key = f"{consumer}|{'service' if from_service else 'kong'}|{status}"
        codes = self.consumer_codes
        codes[key] = codes.get(key, 0) + 1

    def record(
        self,
        status: int,
        request_ms: float,
        upstream_ms: float,
        from_service: bool,
        size_in: int,
        size_out: int,
        attempts: int,
    ) -> None:
        """One finished request (called exactly once per request, see Exchange._finish).

        `upstream_ms` is Kong's waiting time (`latencies.proxy`): from the request going
        upstream to the response head, or to the failure when none came (a timeout
        waits that long); < 0 when nothing went upstream. `from_service`: the response
        came from the backend (Kong's source "service"), else the gateway made it
        ("kong"). Hot path: a bucket index is found by one comparison for the first
        bucket (where most requests land) and by bisect otherwise; a code costs one dict
        get and one set. The gateway latency (Kong's `latencies.kong`: before proxying
        plus receiving the response) is request - upstream; its sum is
        request_sum - upstream_sum.
        """
        # Counts are written `x[i] = x[i] + 1`: compiled, that is a native int addition,
        # where `x[i] += 1` is a generic in-place add on the boxed item.
        codes = self.service_codes if from_service else self.kong_codes
        if upstream_ms >= 0.0:
            hist = self.upstream_hist
            i = 0 if upstream_ms <= _UP0 else bisect_left(_UP, upstream_ms)
            hist[i] = hist[i] + 1
            self.upstream_sum += upstream_ms
            gateway_ms = request_ms - upstream_ms
        else:
            gateway_ms = request_ms
        codes[status] = codes.get(status, 0) + 1
        hist = self.request_hist
        i = 0 if request_ms <= _UP0 else bisect_left(_UP, request_ms)
        hist[i] = hist[i] + 1
        self.request_sum += request_ms
        hist = self.gateway_hist
        i = 0 if gateway_ms <= _GW0 else bisect_left(_GW, gateway_ms)
        hist[i] = hist[i] + 1
        self.ingress += size_in
        self.egress += size_out
        if attempts > 1:
            self.retries += attempts - 1

    def snapshot(self) -> dict[str, Any]:
        return {
            "route_id": self.route_id,
            "service": self.service,
            "route": self.route,
            # JSON object keys are strings; orjson refuses int keys without an option
            "service_codes": {str(k): v for k, v in self.service_codes.items()},
            "kong_codes": {str(k): v for k, v in self.kong_codes.items()},
            "request_hist": list(self.request_hist),
            "request_sum": self.request_sum,
            "upstream_hist": list(self.upstream_hist),
            "upstream_sum": self.upstream_sum,
            "gateway_hist": list(self.gateway_hist),
            "gateway_sum": self.request_sum - self.upstream_sum,
            "ingress": self.ingress,
            "egress": self.egress,
            "retries": self.retries,
            "consumer_codes": dict(self.consumer_codes),
        }


class WorkerStats:
    """Everything one worker counts; `ProxyServer.stats`."""

    __slots__ = ("routes", "unmatched", "accepted", "pools")

    def __init__(self) -> None:
        self.routes: dict[tuple[str, str, str], RouteStats] = {}
        # Requests that matched no route (or a route without service): status -> count.
        self.unmatched: dict[int, int] = {}
        self.accepted = 0  # client connections accepted
        # Pool counters by "host:port", shared by successive pools of one address.
        self.pools: dict[str, PoolStats] = {}

    def count_unmatched(self, status: int) -> None:
        self.unmatched[status] = self.unmatched.get(status, 0) + 1

    def bind(self, plans: Iterable[Any]) -> None:
        """Give each route plan of a new snapshot its (long-lived) stats object."""
        routes = self.routes
        for plan in plans:
            key = (plan.route.id, service_label(plan.service), route_label(plan.route))
            stats = routes.get(key)
            if stats is None:
                stats = routes[key] = RouteStats(*key)
            plan.stats = stats

    def snapshot(self, connections: Iterable[_Connection]) -> dict[str, Any]:
        reading = writing = waiting = active = 0
        for conn in connections:
            active += 1
            if conn.active is not None or conn.tunnel is not None:
                writing += 1  # a request is being proxied (nginx: "writing")
            elif conn.parsing is not None or conn.requests == 0:
                reading += 1  # a request head or body is being read
            else:
                waiting += 1  # idle keep-alive
        # Only routes that served a request: a route's series appear with its first request
        # (as Kong's), and with 10,000 idle routes the snapshot sent every second stays
        # small (it was 3 MB, ~30 ms of the proxy loop, ~70 ms to decode in the supervisor).
        routes = [s.snapshot() for s in self.routes.values() if s.service_codes or s.kong_codes]
        requests = sum(self.unmatched.values())
        for r in routes:
            requests += sum(r["service_codes"].values()) + sum(r["kong_codes"].values())
        return {
            "connections": {
                "accepted": self.accepted,
                "active": active,
                "reading": reading,
                "writing": writing,
                "waiting": waiting,
            },
            "requests": requests,
            "unmatched": {str(k): v for k, v in self.unmatched.items()},
            "routes": routes,
            "pools": {
                address: {"reused": p.reused, "created": p.created, "connect_errors": p.connect_errors}
                for address, p in self.pools.items()
            },
        }


# -- aggregation (supervisor side) ---------------------------------------------------------

def empty_snapshot() -> dict[str, Any]:
    return {
        "connections": {"accepted": 0, "active": 0, "reading": 0, "writing": 0, "waiting": 0},
        "requests": 0,
        "unmatched": {},
        "routes": [],
        "pools": {},
    }


def _add_counts(into: dict[str, int], more: dict[str, int]) -> None:
    for key, value in more.items():
        into[key] = into.get(key, 0) + value


def _add_lists(into: list[int], more: list[int]) -> None:
    for i, value in enumerate(more):
        into[i] += value


def aggregate(snapshots: Iterable[dict[str, Any]], *, counters_only: Iterable[dict[str, Any]] = ()) -> dict[str, Any]:
    """Sum worker snapshots into node totals.

    `counters_only`: snapshots of workers that are gone; their counters stay in the totals
    (a counter must not drop when a worker is replaced), their gauges do not.
    """
    out = empty_snapshot()
    routes: dict[tuple[str, str, str], dict[str, Any]] = {}
    conns = out["connections"]

    def add(snap: dict[str, Any], gauges: bool) -> None:
        c = snap.get("connections") or {}
        conns["accepted"] += c.get("accepted", 0)
        if gauges:
            for state in ("active", "reading", "writing", "waiting"):
                conns[state] += c.get(state, 0)
        out["requests"] += snap.get("requests", 0)
        _add_counts(out["unmatched"], snap.get("unmatched") or {})
        for r in snap.get("routes") or ():
            key = (r["route_id"], r["service"], r["route"])
            have = routes.get(key)
            if have is None:
                routes[key] = {
                    **r,
                    "service_codes": dict(r["service_codes"]),
                    "kong_codes": dict(r["kong_codes"]),
                    "request_hist": list(r["request_hist"]),
                    "upstream_hist": list(r["upstream_hist"]),
                    "gateway_hist": list(r["gateway_hist"]),
                    "consumer_codes": dict(r.get("consumer_codes") or {}),
                }
                continue
            _add_counts(have["service_codes"], r["service_codes"])
            _add_counts(have["kong_codes"], r["kong_codes"])
            _add_counts(have["consumer_codes"], r.get("consumer_codes") or {})
            for name in ("request", "upstream", "gateway"):
                _add_lists(have[name + "_hist"], r[name + "_hist"])
                have[name + "_sum"] += r[name + "_sum"]
            for name in ("ingress", "egress", "retries"):
                have[name] += r[name]
        for address, p in (snap.get("pools") or {}).items():
            have_pool = out["pools"].setdefault(address, {"reused": 0, "created": 0, "connect_errors": 0})
            _add_counts(have_pool, p)

    for snap in snapshots:
        add(snap, True)
    for snap in counters_only:
        add(snap, False)
    out["routes"] = list(routes.values())
    return out
