"""The data plane's view of one config: router, balancers and pools, built once per change.

A `Snapshot` is immutable in shape: a config change builds a new one and the server swaps
one reference. In-flight exchanges keep the `RoutePlan` they started with. Connection
pools live in a `PoolRegistry` outside snapshots, keyed by (host, port), so a target that
survives a change keeps its warm connections; pools no longer referenced are closed
(idle connections at once, busy ones when their exchange ends).
"""

from __future__ import annotations

import asyncio
import uuid
from typing import TYPE_CHECKING, Any, Sequence

from fastgw.core.balancer import balancer_key, hash_cookie_header, make_balancer
from fastgw.core.canary import CanaryBalancer, CanaryConfig
from fastgw.config.model import split_target
from fastgw.core.health import HealthPolicy
from fastgw.dataplane.stats import RouteStats, route_label, service_label
from fastgw.dataplane.passive import PassiveRecorder, failure_kind
from fastgw.core.http.headers import host_header_value
from fastgw.dataplane.sweeper import DeadlineSweeper
from fastgw.dataplane.upstream import PoolStats, UpstreamPool
from fastgw.core.router import Router

if TYPE_CHECKING:
    from fastgw.config.model import Config, Route, Service, Upstream
    from fastgw.dataplane.exchange import Exchange

DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443, "grpc": 80, "grpcs": 443}


class PoolRegistry:
    """Per-worker upstream pools, shared by successive snapshots."""

    __slots__ = ("loop", "sweeper", "pools", "max_idle", "max_requests", "idle_timeout", "pool_stats")

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        sweeper: DeadlineSweeper,
        *,
        max_idle: int,
        max_requests: int,
        idle_timeout: float,
    ) -> None:
        self.loop = loop
        self.sweeper = sweeper
        self.pools: dict[tuple[str, int], UpstreamPool] = {}
        # Counters by "host:port", outliving the pools: a pool closed by a config change
        # and opened again later keeps counting where it left off (metrics never reset).
        self.pool_stats: dict[str, PoolStats] = {}
        self.max_idle = max_idle
        self.max_requests = max_requests
        self.idle_timeout = idle_timeout

    def get(self, host: str, port: int) -> UpstreamPool:
        pool = self.pools.get((host, port))
        if pool is None:
            pool = UpstreamPool(
                self.loop,
                host,
                port,
                max_idle=self.max_idle,
                max_requests=self.max_requests,
                idle_timeout=self.idle_timeout,
                sweeper=self.sweeper,
            )
            pool.stats = self.pool_stats.setdefault(f"{host}:{port}", pool.stats)
            self.pools[(host, port)] = pool
        return pool

    def retain_only(self, keys: set[tuple[str, int]]) -> None:
        for key in [k for k in self.pools if k not in keys]:
            self.pools.pop(key).close()

    def close_all(self) -> None:
        self.retain_only(set())


class TargetRuntime:
    __slots__ = ("key", "host", "port", "weight", "index", "pool", "host_header", "owner",
                 "passive")

    def __init__(
        self, key: str, host: str, port: int, weight: int, index: int, pool: UpstreamPool,
        host_header: bytes, owner: Any,
    ) -> None:
        self.key = key
        self.host = host
        self.port = port
        self.weight = weight
        self.index = index
        self.pool = pool
        self.host_header = host_header
        self.owner = owner
        # Passive health recorder (fastgw.dataplane.passive), None when the upstream has no
        # passive checks: then a response costs one attribute test and nothing else.
        self.passive: PassiveRecorder | None = None

    def report_failure(self, reason: str) -> None:
        """A transport failure on this target (connect error, reset, timeout)."""
        passive = self.passive
        if passive is not None:
            passive.on_failure(failure_kind(reason))

    def __repr__(self) -> str:
        return f"<target {self.key}>"


class UpstreamRuntime:
    """An Upstream entity's targets and balancer, with per-target availability."""

    __slots__ = (
        "upstream", "targets", "balancer", "available", "needs_key", "cookie_name", "counts",
        "weights", "effective", "policy", "mode",
    )

    def __init__(self, upstream: Upstream, targets: list[TargetRuntime], weights: list[int]) -> None:
        self.upstream = upstream
        self.targets = targets
        for target in targets:
            target.owner = self
        self.weights = list(weights)  # as configured
        self.effective = list(weights)  # after slow start
        self.policy = HealthPolicy()  # set by WorkerHealth.bind
        self.mode = "normal"  # or "panic" / "unhealthy" (fastgw.core.health.availability)
        self.balancer = make_balancer(upstream, [t.key for t in targets], weights)
        # least-connections needs to know when an attempt starts and ends
        self.counts = hasattr(self.balancer, "acquire")
        self.available = bytearray([1] * len(targets))
        self.needs_key = bool(getattr(self.balancer, "needs_key", False))
        uses_cookie = "cookie" in (upstream.hash_on, upstream.hash_fallback)
        self.cookie_name = upstream.hash_on_cookie if uses_cookie else None

    def pick(self, exchange: Exchange, tried: Sequence[TargetRuntime]) -> TargetRuntime | None:
        exclude: Sequence[int] = [t.index for t in tried] if tried else ()
        key = self._key(exchange) if self.needs_key else None
        index = self.balancer.pick(self.available, exclude, key)
        if index is None:
            return None
        if self.counts:
            self.balancer.acquire(index)
        return self.targets[index]

    def release(self, target: TargetRuntime) -> None:
        if self.counts:
            self.balancer.release(target.index)

    def set_health(self, available: bytearray, effective: list[int], mode: str) -> None:
        """Node health from the supervisor: availability in place, weights if they moved."""
        if effective != self.effective:
            # Slow start: a new balancer with the ramped weights (a few times per window).
            balancer = make_balancer(self.upstream, [t.key for t in self.targets], effective)
            if self.counts:
                balancer.counts[:] = self.balancer.counts  # type: ignore[union-attr]
                for i in range(len(effective)):  # rescore from the carried-over counts
                    balancer.acquire(i)  # type: ignore[union-attr]
                    balancer.release(i)  # type: ignore[union-attr]
            self.balancer = balancer
            self.effective = effective
        self.available[:] = available
        self.mode = mode

    def _key(self, exchange: Exchange) -> str | None:
        url = exchange.url
        qpos = url.find(b"?")
        path = (url if qpos == -1 else url[:qpos]).decode("latin-1")
        query = "" if qpos == -1 else url[qpos + 1 :].decode("latin-1")
        match = exchange.match
        key = balancer_key(
            self.upstream,
            client_ip=exchange.down.client_ip,
            headers=exchange.headers_map(),
            path=path,
            query=query,
            captures=getattr(match, "captures", None),
            consumer_id=None,
        )
        if key is None and self.cookie_name and self.upstream.hash_on == "cookie":
            # Kong: no cookie yet, so make one up and set it on the response.
            key = str(uuid.uuid4())
            exchange.hash_cookie = key
        return key


class DirectRuntime:
    """A service whose host is not an Upstream: one address, resolved at connect time."""

    __slots__ = ("target",)
    counts = False  # no per-attempt accounting (see UpstreamRuntime.counts)

    def __init__(self, target: TargetRuntime) -> None:
        self.target = target

    def pick(self, exchange: Exchange, tried: Sequence[TargetRuntime]) -> TargetRuntime | None:
        return None if tried else self.target

    def release(self, target: TargetRuntime) -> None:
        pass


class RoutePlan:
    """Everything an exchange needs about its route and service, flattened for speed."""

    __slots__ = (
        "route",
        "service",
        "service_path",
        "preserve_host",
        "retries",
        "connect_timeout",
        "read_timeout",
        "write_timeout",
        "balancer",
        "pick",
        "hashes_cookie",
        "stats",
    )

    def __init__(
        self, route: Route, service: Service,
        balancer: UpstreamRuntime | DirectRuntime | CanaryBalancer,
    ) -> None:
        self.route = route
        self.service = service
        self.service_path = service.path
        self.preserve_host = route.preserve_host
        self.retries = service.retries
        self.connect_timeout = service.connect_timeout / 1000.0
        self.read_timeout = service.read_timeout / 1000.0
        self.write_timeout = service.write_timeout / 1000.0
        self.balancer = balancer
        # pick(exchange, tried) -> target: the balancer's own method, bound once here
        # (one call less per request than a forwarding method).
        self.pick = balancer.pick
        sides = (balancer.stable, balancer.canary) if isinstance(balancer, CanaryBalancer) \
            else (balancer,)
        self.hashes_cookie = any(
            isinstance(side, UpstreamRuntime) and side.cookie_name is not None for side in sides)
        # Replaced by the worker's long-lived object (WorkerStats.bind); never None.
        self.stats = RouteStats(route.id, service_label(service), route_label(route))

    def set_cookie(self, exchange: Exchange) -> bytes | None:
        if exchange.hash_cookie is None:
            return None
        owner = exchange.target.owner if exchange.target is not None else None
        if not isinstance(owner, UpstreamRuntime):
            return None
        return b"Set-Cookie: " + hash_cookie_header(owner.upstream, exchange.hash_cookie) + b"\r\n"


class Snapshot:
    __slots__ = ("config", "router", "route_plans", "upstreams", "version", "route_cache")

    def __init__(
        self, config: Config, router: Router, route_plans: dict[str, RoutePlan],
        upstreams: dict[str, UpstreamRuntime], version: int,
    ) -> None:
        self.config = config
        self.router = router
        self.route_plans = route_plans
        self.upstreams = upstreams
        self.version = version
        # (method, Host, raw path) -> (match, plan, upstream path); header-matching routes
        # make a request's route depend on more than that, so then there is no cache.
        self.route_cache: dict[tuple[Any, ...], Any] | None = None if router.uses_headers else {}


def build_snapshot(config: Config, registry: PoolRegistry, version: int) -> Snapshot:
    used: set[tuple[str, int]] = set()
    upstreams: dict[str, UpstreamRuntime] = {}
    targets_by_upstream: dict[str, list[Any]] = {}
    for target in config.targets:
        targets_by_upstream.setdefault(target.upstream, []).append(target)
    for upstream in config.upstreams:
        runtimes: list[TargetRuntime] = []
        weights: list[int] = []
        for index, target in enumerate(targets_by_upstream.get(upstream.id, [])):
            host, port = split_target(target.target)
            header = (
                upstream.host_header.encode()
                if upstream.host_header
                else host_header_value(host, port)
            )
            runtime = TargetRuntime(
                target.target, host, port, target.weight, index, registry.get(host, port),
                header, None,
            )
            used.add((host, port))
            runtimes.append(runtime)
            weights.append(target.weight)
        upstreams[upstream.name] = UpstreamRuntime(upstream, runtimes, weights)

    services = {s.id: s for s in config.services}
    balancers: dict[str, UpstreamRuntime | DirectRuntime] = {}
    for service in config.services:
        upstream_rt = upstreams.get(service.host)
        if upstream_rt is not None:
            balancers[service.id] = upstream_rt
        else:
            default = DEFAULT_PORTS.get(service.protocol, 80)
            direct = TargetRuntime(
                f"{service.host}:{service.port}", service.host, service.port, 100, 0,
                registry.get(service.host, service.port),
                host_header_value(service.host, service.port, default), None,
            )
            used.add((service.host, service.port))
            balancers[service.id] = DirectRuntime(direct)

    # Enabled canary plugins by route id, else service id (the route's own one wins).
    canaries: dict[str, CanaryConfig] = {}
    for plugin in config.plugins:
        if plugin.name == "canary" and plugin.enabled and plugin.consumer is None:
            scope = plugin.route or plugin.service
            if scope is not None and (plugin.route or scope not in canaries):
                canaries[scope] = CanaryConfig.from_plugin(plugin.config)
    plans: dict[str, RoutePlan] = {}
    live_routes = []
    for route in config.routes:
        service = services.get(route.service) if route.service else None
        if service is not None and not service.enabled:
            continue  # Kong: a disabled service's routes do not match
        live_routes.append(route)
        if service is not None:
            balancer: Any = balancers[service.id]
            canary = canaries.get(route.id) or canaries.get(service.id)
            if canary is not None:
                balancer = _canary_balancer(canary, service, balancer, upstreams, registry, used)
            plans[route.id] = RoutePlan(route, service, balancer)
    router = Router.compile(live_routes)
    registry.retain_only(used)
    return Snapshot(config, router, plans, upstreams, version)


def _canary_balancer(
    cfg: CanaryConfig, service: Service, stable: UpstreamRuntime | DirectRuntime,
    upstreams: dict[str, UpstreamRuntime], registry: PoolRegistry, used: set[tuple[str, int]],
) -> CanaryBalancer:
    """The canary side: an Upstream by name, a plain host, or the stable side (uri only)."""
    canary: UpstreamRuntime | DirectRuntime = stable
    host = cfg.upstream_host
    if host is not None:
        upstream_rt = upstreams.get(host)
        if upstream_rt is not None:
            canary = upstream_rt
        else:
            port = cfg.upstream_port or service.port
            default = DEFAULT_PORTS.get(service.protocol, 80)
            canary = DirectRuntime(TargetRuntime(
                f"{host}:{port}", host, port, 100, 0, registry.get(host, port),
                host_header_value(host, port, default), None))
            used.add((host, port))
    return CanaryBalancer(cfg, stable, canary)
