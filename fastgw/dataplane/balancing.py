"""Choosing a target for one request: the data plane's side of load balancing.

The algorithms are pure (core.balancer); this module binds them to live targets (each
with its connection pool and passive health recorder) and to the node's health.

A route plan's balancer is one of:
- `UpstreamRuntime`: an Upstream entity's targets and algorithm;
- `DirectRuntime`: a service whose host is not an Upstream (one address);
- `CanaryBalancer`: Kong Enterprise's canary plugin, a split between two of the above.

`pick(ctx, tried)` returns a target, or None when none is available. `ctx` is a
`BalanceContext` (the request's values a key or a canary decision needs, and the two
things a pick may decide besides the target: a hash cookie to set, an upstream path to
use) built by the exchange only for plans whose `needs_context` is true; the common
round-robin pick takes None and allocates nothing. Lower layers never see the exchange.
"""

from __future__ import annotations

import time
import uuid
from typing import Any, Sequence

from fastgw.core.balancer import (
    LeastConnections,
    balancer_key,
    hash_cookie_header,
    make_balancer,
)
from fastgw.core.canary import CanaryConfig, client_key, goes_to_canary, override_value
from fastgw.core.health import HealthPolicy
from fastgw.core.http.request import RequestHead
from fastgw.dataplane.passive import PassiveRecorder, failure_kind
from fastgw.dataplane.pool import UpstreamPool

__all__ = ["BalanceContext", "CanaryBalancer", "DirectRuntime", "TargetRuntime",
           "UpstreamRuntime"]


class BalanceContext:
    """One request's inputs to a keyed or canary pick, and what the pick decided."""

    __slots__ = ("head", "client_ip", "captures", "hash_cookie", "upstream_uri", "consumer_id",
                 "groups")

    def __init__(self, head: RequestHead, client_ip: str, captures: Any) -> None:
        self.head = head
        self.client_ip = client_ip
        self.captures = captures
        self.hash_cookie: bytes | None = None  # a Set-Cookie line to add to the response
        self.upstream_uri: bytes | None = None  # replaces the upstream path (canary)
        self.consumer_id: str | None = None  # identified by an auth plugin
        self.groups: list[str] | None = None  # the consumer's ACL groups

    def identify(self, consumer: Any, groups: list[str] | None) -> None:
        """The consumer an auth plugin identified (hash_on consumer, canary's hash)."""
        if consumer is not None:
            self.consumer_id = consumer.id
            self.groups = groups if groups is not None else [a.group for a in consumer.acls]


class TargetPicker:
    """A route plan's balancer: picks a target for an attempt, and is told when it ends."""

    __slots__ = ()
    counts = False  # least-connections: pick() counted the attempt; release() uncounts it
    needs_key = False  # pick() reads the request (a BalanceContext is built for it)

    def pick(self, ctx: BalanceContext | None,
             tried: Sequence[TargetRuntime]) -> TargetRuntime | None:
        raise NotImplementedError

    def release(self, target: TargetRuntime) -> None:
        """An attempt on `target` ended (only least-connections keeps count)."""


class TargetRuntime:
    __slots__ = ("key", "host", "port", "weight", "index", "pool", "host_header", "owner",
                 "passive")

    def __init__(self, key: str, host: str, port: int, weight: int, index: int,
                 pool: UpstreamPool, host_header: bytes, owner: TargetPicker | None) -> None:
        self.key = key
        self.host = host
        self.port = port
        self.weight = weight
        self.index = index
        self.pool = pool
        self.host_header = host_header
        self.owner = owner
        # Passive health recorder (dataplane.passive), None when the upstream has no
        # passive checks: then a response costs one attribute test and nothing else.
        self.passive: PassiveRecorder | None = None

    def report_failure(self, reason: str) -> None:
        """A transport failure on this target (connect error, reset, timeout)."""
        passive = self.passive
        if passive is not None:
            passive.on_failure(failure_kind(reason))

    def __repr__(self) -> str:
        return f"<target {self.key}>"


class UpstreamRuntime(TargetPicker):
    """An Upstream entity's targets and balancer, with per-target availability."""

    __slots__ = ("upstream", "targets", "balancer", "available", "needs_key", "cookie_name",
                 "counts", "weights", "effective", "policy", "mode")

    def __init__(self, upstream: Any, targets: list[TargetRuntime], weights: list[int]) -> None:
        self.upstream = upstream
        self.targets = targets
        for target in targets:
            target.owner = self
        self.weights = list(weights)  # as configured
        self.effective = list(weights)  # after slow start
        self.policy = HealthPolicy()  # set by WorkerHealth.bind
        self.mode = "normal"  # or "panic" / "unhealthy" (core.health.availability)
        self.balancer = make_balancer(upstream, [t.key for t in targets], weights)
        # least-connections needs to know when an attempt starts and ends
        self.counts = isinstance(self.balancer, LeastConnections)
        self.available = bytearray([1] * len(targets))
        self.needs_key = bool(getattr(self.balancer, "needs_key", False))
        uses_cookie = "cookie" in (upstream.hash_on, upstream.hash_fallback)
        self.cookie_name = upstream.hash_on_cookie if uses_cookie else None

    def pick(self, ctx: BalanceContext | None,
             tried: Sequence[TargetRuntime]) -> TargetRuntime | None:
        exclude: Sequence[int] = [t.index for t in tried] if tried else ()
        key = self._key(ctx) if self.needs_key and ctx is not None else None
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
            old = self.balancer
            if isinstance(balancer, LeastConnections) and isinstance(old, LeastConnections):
                balancer.counts[:] = old.counts
                for i in range(len(effective)):  # rescore from the carried-over counts
                    balancer.acquire(i)
                    balancer.release(i)
            self.balancer = balancer
            self.effective = effective
        self.available[:] = available
        self.mode = mode

    def _key(self, ctx: BalanceContext) -> str | None:
        head = ctx.head
        key = balancer_key(
            self.upstream,
            client_ip=ctx.client_ip,
            headers=head.field_map(),
            path=head.path.decode("latin-1"),
            query=head.query[1:].decode("latin-1"),
            captures=ctx.captures,
            consumer_id=ctx.consumer_id,
        )
        if key is None and self.cookie_name and self.upstream.hash_on == "cookie":
            # Kong: no cookie yet, so make one up and set it on the response.
            key = str(uuid.uuid4())
            ctx.hash_cookie = (b"Set-Cookie: " + hash_cookie_header(self.upstream, key)
                               + b"\r\n")
        return key


class DirectRuntime(TargetPicker):
    """A service whose host is not an Upstream: one address, resolved at connect time."""

    __slots__ = ("target",)

    def __init__(self, target: TargetRuntime) -> None:
        self.target = target

    def pick(self, ctx: BalanceContext | None,
             tried: Sequence[TargetRuntime]) -> TargetRuntime | None:
        return None if tried else self.target


Side = UpstreamRuntime | DirectRuntime


class CanaryBalancer(TargetPicker):
    """A route plan's balancer that splits between a stable and a canary side
    (core.canary has the rules; retries stay on the side of the first try)."""

    __slots__ = ("cfg", "stable", "canary", "uri")

    def __init__(self, cfg: CanaryConfig, stable: Side, canary: Side) -> None:
        self.cfg = cfg
        self.stable = stable
        self.canary = canary
        self.uri = cfg.upstream_uri.encode("latin-1") if cfg.upstream_uri else None

    def decide(self, ctx: BalanceContext) -> bool:
        headers = ctx.head.headers
        return goes_to_canary(self.cfg, client_key(self.cfg, headers, ctx.client_ip,
                                                   ctx.consumer_id),
                              time.time(), override_value(self.cfg, headers), ctx.groups)

    def pick(self, ctx: BalanceContext | None,
             tried: Sequence[TargetRuntime]) -> TargetRuntime | None:
        assert ctx is not None
        if tried:  # a retry stays on the side of the first try
            side = self.canary if self._owns(self.canary, tried[0]) else self.stable
            return side.pick(ctx, tried)
        if self.decide(ctx):
            target = self.canary.pick(ctx, tried)
            if target is not None:
                if self.uri is not None:
                    ctx.upstream_uri = self.uri
                return target
            if not self.cfg.upstream_fallback:
                return None
        return self.stable.pick(ctx, tried)

    @staticmethod
    def _owns(side: Side, target: TargetRuntime) -> bool:
        owner = target.owner
        return owner is side if owner is not None else getattr(side, "target", None) is target

    def release(self, target: TargetRuntime) -> None:
        owner = target.owner
        if owner is not None:
            owner.release(target)
