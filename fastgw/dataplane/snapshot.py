"""The data plane's view of one config: router, balancers and pools, built once per change.

A `Snapshot` is immutable in shape: a config change builds a new one and the server swaps
one reference. In-flight exchanges keep the `RoutePlan` they started with. Connection
pools live in a `PoolRegistry` outside snapshots, keyed by (host, port), so a target that
survives a change keeps its warm connections; pools no longer referenced are closed
(idle connections at once, busy ones when their exchange ends).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, Final, TYPE_CHECKING

from fastgw.config.model import split_target
from fastgw.core.canary import CanaryConfig
from fastgw.core.http.fields import host_header_value
from fastgw.core.http.request import RequestHead
from fastgw.core.http.upstream_head import prefix_line
from fastgw.core.https_redirect import https_only
from fastgw.core.router import PAUSE_MASK, Router
from fastgw.dataplane.balancing import CanaryBalancer, DirectRuntime, TargetRuntime, UpstreamRuntime
from fastgw.dataplane.plugins.phases import PluginChain
from fastgw.dataplane.plugins.registry import PluginRuntime, build_chains, counts_consumers
from fastgw.dataplane.pool import PoolStats, UpstreamPool
from fastgw.dataplane.stats import RouteStats, route_label, service_label
from fastgw.dataplane.sweeper import DeadlineSweeper
from fastgw.dataplane.upstream_tls import UpstreamTLS, plan_tls

if TYPE_CHECKING:
    from fastgw.config.model import Config, Route, Service

DEFAULT_PORTS: Final = {"http": 80, "https": 443, "ws": 80, "wss": 443, "grpc": 80, "grpcs": 443}


class PoolRegistry:
    """Per-worker upstream pools, shared by successive snapshots."""

    __slots__ = ("loop", "sweeper", "pools", "max_idle", "max_requests", "idle_timeout",
                 "pool_stats", "tls_contexts")

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
        # (host, port) for plain HTTP; (host, port, TLS profile key, server name) over TLS.
        self.pools: dict[tuple[Any, ...], UpstreamPool] = {}
        # TLS client contexts by profile key (dataplane.upstream_tls), kept while used.
        self.tls_contexts: dict[str, Any] = {}
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

    def get_tls(self, key: tuple[str, int, str, str | None], tls: Any,
                verify_depth: int) -> UpstreamPool:
        """The pool of `key` = (host, port, TLS profile key, server name)."""
        pool = self.pools.get(key)
        if pool is None:
            host, port, _, server_name = key
            pool = UpstreamPool(self.loop, host, port, max_idle=self.max_idle,
                                max_requests=self.max_requests, idle_timeout=self.idle_timeout,
                                sweeper=self.sweeper, tls=tls, server_name=server_name,
                                verify_depth=verify_depth)
            pool.stats = self.pool_stats.setdefault(f"{host}:{port}", pool.stats)
            self.pools[key] = pool
        return pool

    def retain_only(self, keys: set[tuple[Any, ...]]) -> None:
        for key in [k for k in self.pools if k not in keys]:
            self.pools.pop(key).close()

    def close_all(self) -> None:
        self.retain_only(set())


class RoutePlan:
    """Everything an exchange needs about its route and service, flattened for speed."""

    __slots__ = (
        "route",
        "service",
        "service_path",
        "preserve_host",
        "request_buffering",
        "response_buffering",
        "retries",
        "connect_timeout",
        "read_timeout",
        "write_timeout",
        "balancer",
        "pick",
        "needs_context",
        "stats",
        "plugins",
        "count_consumers",
        "https_only",
        "https_redirect",
        "tls",
    )

    def __init__(
        self, route: Route, service: Service,
        balancer: UpstreamRuntime | DirectRuntime | CanaryBalancer,
        plugins: PluginChain | None = None,
    ) -> None:
        self.route = route
        self.service = service
        self.service_path = service.path
        self.preserve_host = route.preserve_host
        # The route's plugins (dataplane.plugins); None costs the exchange one test.
        self.plugins = plugins
        # prometheus per_consumer: requests of identified consumers counted by consumer.
        self.count_consumers = False
        # A plugin that reads the body (key_in_body, body edits) needs it buffered.
        self.request_buffering = route.request_buffering or (
            plugins is not None and plugins.needs_body)
        self.response_buffering = route.response_buffering
        self.retries = service.retries
        self.connect_timeout = service.connect_timeout / 1000.0
        self.read_timeout = service.read_timeout / 1000.0
        self.write_timeout = service.write_timeout / 1000.0
        self.balancer = balancer
        # pick(ctx, tried) -> target: the balancer's own method, bound once here.
        self.pick = balancer.pick
        # A keyed (consistent-hashing) or canary pick reads the request: the exchange
        # then builds a BalanceContext; plain round-robin gets None and allocates nothing.
        sides = (balancer.stable, balancer.canary) if isinstance(balancer, CanaryBalancer) \
            else (balancer,)
        self.needs_context = isinstance(balancer, CanaryBalancer) or any(
            side.needs_key for side in sides)
        # A route for https only answers plain http itself (core.https_redirect).
        self.https_only = https_only(route.protocols)
        self.https_redirect = route.https_redirect_status_code
        # TLS to the backends (services with protocol https), set by build_snapshot.
        self.tls: UpstreamTLS | None = None
        # Replaced by the worker's long-lived object (WorkerStats.bind); never None.
        self.stats = RouteStats(route.id, service_label(service), route_label(route))


# Router results kept per snapshot (Kong keeps an LRU of 5000 for the same reason).
ROUTE_CACHE_SIZE: Final = 8192


class RouteHit:
    """A routing result: the match, its plan (None: route without a usable service), the
    upstream path (Kong's path joining, no query) and the X-Forwarded-Prefix line."""

    __slots__ = ("match", "plan", "upstream_path", "prefix_line")

    def __init__(self, match: Any, plan: RoutePlan | None, upstream_path: bytes,
                 prefix: bytes) -> None:
        self.match = match
        self.plan = plan
        self.upstream_path = upstream_path
        self.prefix_line = prefix


NO_ROUTE: Final = RouteHit(None, None, b"", b"")


class Snapshot:
    __slots__ = ("config", "router", "route_plans", "upstreams", "version", "route_cache",
                 "_by_method", "_by_host", "balancers", "pools_used", "new_plans")

    def __init__(
        self, config: Config, router: Router, route_plans: dict[str, RoutePlan],
        upstreams: dict[str, UpstreamRuntime], version: int,
    ) -> None:
        self.config = config
        self.router = router
        self.route_plans = route_plans
        self.upstreams = upstreams
        self.version = version
        # Kept for the next build, which may reuse this one's parts (build_snapshot).
        self.balancers: dict[str, UpstreamRuntime | DirectRuntime] = {}
        self.pools_used: frozenset[tuple[Any, ...]] = frozenset()
        # The plans this snapshot made (the rest it took over from the one before):
        # only these need binding to the worker's stats. None: all of them.
        self.new_plans: list[RoutePlan] | None = None
        # (method, Host, raw path) -> RouteHit; header-matching routes make a request's
        # route depend on more than that, so then there is no cache. Method and Host are
        # left out of the key when no route looks at them (fewer bytes hashed per request).
        self.route_cache: dict[Any, RouteHit] | None = None if router.uses_headers else {}
        self._by_method = router.uses_methods
        self._by_host = router.uses_hosts

    def route(self, head: RequestHead, port: int) -> RouteHit:
        """Route a request (cached per method, Host and path, like Kong)."""
        cache = self.route_cache
        if cache is None:
            return self._route(head, port)
        key: Any = head.path
        if self._by_host:
            key = (head.method, head.host, key) if self._by_method else (head.host, key)
        elif self._by_method:
            key = (head.method, key)
        hit = cache.get(key)
        if hit is None:
            hit = self._route(head, port)
            if len(cache) >= ROUTE_CACHE_SIZE:
                cache.clear()  # cheap bound; a working set that fits stays hot
            cache[key] = hit
        return hit

    def _route(self, head: RequestHead, port: int) -> RouteHit:
        router = self.router
        host = head.host.decode("latin-1") if head.host is not None else None
        match = router.match(head.method, host, head.path.decode("latin-1"),
                             head.field_map() if router.uses_headers else None, port)
        if match is None:
            return NO_ROUTE
        plan = self.route_plans.get(match.route.id)
        if plan is None:
            return RouteHit(match, None, b"", b"")
        return RouteHit(match, plan, match.upstream_path(plan.service_path).encode("latin-1"),
                        prefix_line(match.stripped_prefix))


# What a route's plan is made of besides the route itself: while a new config shares all
# of these (the very tuples) with the previous snapshot's, only its routes changed.
_PLAN_SOURCES: Final = ("services", "upstreams", "targets", "consumers", "plugins",
                        "certificates", "snis", "ca_certificates", "gateway")


def only_routes_changed(old: Config, new: Config) -> bool:
    return all(getattr(old, name) is getattr(new, name) for name in _PLAN_SOURCES)


def build_snapshot(config: Config, registry: PoolRegistry, version: int,
                   keep_pools: set[tuple[Any, ...]] | None = None,
                   pause: Callable[[], None] | None = None,
                   plugins: PluginRuntime | None = None,
                   previous: Snapshot | None = None) -> Snapshot:
    """``keep_pools``: collect the pools the snapshot uses there instead of closing the
    others (a build off the loop; the caller closes them on the loop). ``pause``: called
    every few hundred entities, so a build in a thread hands the GIL to the proxy loop
    (compiled code never gives it up on its own). ``plugins``: the worker's plugin state
    (its rate-limit counters, log writers); None: a new one (tests). ``previous``: the
    live snapshot; when only routes changed since it, its balancers and the plans of the
    routes that did not change are taken over (``_with_new_routes``)."""
    if previous is not None and only_routes_changed(previous.config, config):
        return _with_new_routes(previous, config, registry, version, keep_pools, pause,
                                plugins)
    used: set[tuple[Any, ...]] = set() if keep_pools is None else keep_pools
    upstreams: dict[str, UpstreamRuntime] = {}
    targets_by_upstream: dict[str, list[Any]] = {}
    for target in config.targets:
        targets_by_upstream.setdefault(target.upstream, []).append(target)
    for count, upstream in enumerate(config.upstreams):
        if pause is not None and count & PAUSE_MASK == PAUSE_MASK:
            pause()
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
    for count, service in enumerate(config.services):
        if pause is not None and count & PAUSE_MASK == PAUSE_MASK:
            pause()
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

    live_routes = _live_routes(config, services, pause)
    # Each route's plugins, resolved once (Kong's precedence and priorities); the canary
    # plugin is the route's balancer.
    chains, canaries = build_chains(config, live_routes, services,
                                    plugins if plugins is not None else PluginRuntime())
    plans: dict[str, RoutePlan] = {}
    per_consumer = counts_consumers(config)
    for route in live_routes:
        found = services.get(route.service) if route.service else None
        if found is not None:
            service = found
            balancer: Any = balancers[service.id]
            canary = canaries.get(route.id)
            if canary is not None:
                balancer = _canary_balancer(CanaryConfig.from_plugin(canary.config), service,
                                            balancer, upstreams, registry, used)
            plan = plans[route.id] = RoutePlan(route, service, balancer, chains.get(route.id))
            plan.count_consumers = per_consumer
            plan.tls = plan_tls(config, service, route, balancer, registry.get_tls,
                                registry.tls_contexts, used)
    router = Router.compile(live_routes, pause)
    if keep_pools is None:
        registry.retain_only(used)
    # TLS client contexts of profiles no plan uses any more go (pools key them at [2]).
    profiles = {key[2] for key in used if len(key) == 4}
    registry.tls_contexts = {k: v for k, v in registry.tls_contexts.items() if k in profiles}
    snapshot = Snapshot(config, router, plans, upstreams, version)
    snapshot.balancers = balancers
    snapshot.pools_used = frozenset(used)
    return snapshot


def _live_routes(config: Config, services: dict[str, Service],
                 pause: Callable[[], None] | None) -> list[Route]:
    """The routes that can match: Kong's disabled services' routes do not."""
    live = []
    for count, route in enumerate(config.routes):
        if pause is not None and count & PAUSE_MASK == PAUSE_MASK:
            pause()
        found = services.get(route.service) if route.service else None
        if found is not None and not found.enabled:
            continue
        live.append(route)
    return live


def _with_new_routes(previous: Snapshot, config: Config, registry: PoolRegistry, version: int,
                     keep_pools: set[tuple[Any, ...]] | None,
                     pause: Callable[[], None] | None,
                     plugins: PluginRuntime | None) -> Snapshot:
    """A snapshot of ``config``, which differs from ``previous.config`` in its routes only.

    Everything but the routes is the previous snapshot's: the same upstream runtimes
    (health, balancers, slow start carry on), the same service balancers, the same pools.
    A route object that is the very one of the previous config keeps its plan (and with
    it its bound stats); only new or changed routes get plans. The router is compiled
    again (route ranks are global). So adding a route to 10,000 makes one plan, not
    10,000, and the swap binds one. Pools only a removed route used (a TLS service with
    no route left) stay open until the next full build."""
    used: set[tuple[Any, ...]] = set() if keep_pools is None else keep_pools
    used.update(previous.pools_used)
    services = {s.id: s for s in config.services}
    old_plans = previous.route_plans
    live_routes = _live_routes(config, services, pause)
    fresh = []
    for route in live_routes:
        old = old_plans.get(route.id)
        if old is None or old.route is not route:
            fresh.append(route)
    chains, canaries = build_chains(config, fresh, services,
                                    plugins if plugins is not None else PluginRuntime())
    per_consumer = counts_consumers(config)
    new_plans: list[RoutePlan] = []
    plans: dict[str, RoutePlan] = {}
    for count, route in enumerate(live_routes):
        if pause is not None and count & PAUSE_MASK == PAUSE_MASK:
            pause()
        old = old_plans.get(route.id)
        if old is not None and old.route is route:
            plans[route.id] = old
            continue
        found = services.get(route.service) if route.service else None
        if found is None:
            continue
        balancer: Any = previous.balancers[found.id]
        canary = canaries.get(route.id)
        if canary is not None:
            balancer = _canary_balancer(CanaryConfig.from_plugin(canary.config), found,
                                        balancer, previous.upstreams, registry, used)
        plan = plans[route.id] = RoutePlan(route, found, balancer, chains.get(route.id))
        plan.count_consumers = per_consumer
        plan.tls = plan_tls(config, found, route, balancer, registry.get_tls,
                            registry.tls_contexts, used)
        new_plans.append(plan)
    router = Router.compile(live_routes, pause)
    if keep_pools is None:
        registry.retain_only(used)
    snapshot = Snapshot(config, router, plans, previous.upstreams, version)
    snapshot.balancers = previous.balancers
    snapshot.pools_used = frozenset(used)
    snapshot.new_plans = new_plans
    return snapshot


def _canary_balancer(
    cfg: CanaryConfig, service: Service, stable: UpstreamRuntime | DirectRuntime,
    upstreams: dict[str, UpstreamRuntime], registry: PoolRegistry, used: set[tuple[Any, ...]],
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
