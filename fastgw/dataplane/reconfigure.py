"""Bringing a running worker to a new config without stalling its proxy loop.

Where the time goes for 10,000 services and routes (one core of the 2-core CI box):
decoding the whole config (``load_declarative``) ~670 ms, ``orjson.loads`` of it ~40 ms,
building the snapshot ~150 ms (the router ~50 ms of it), binding stats and health to it
~3 ms. Done on the proxy loop, as before, every request waited for all of it, for every
version in turn. Now:

- The supervisor sends what changed (``fastgw.config.delta``) rather than the whole
  config, so decoding a write costs what decoding its few entities costs.
- A change that only re-weights existing targets (blue-green and canary steps, the most
  frequent write) is applied in place: the upstream's configured weights change and node
  health re-applies them, which rebuilds that upstream's balancer only, as slow start
  does. No snapshot is built; it costs microseconds.
- Anything else is decoded and built in a thread, and only the swap (and binding the
  worker's stats and health to the new snapshot) runs on the loop. A change to routes
  only (the next most frequent write) takes over the live snapshot's balancers and the
  plans of every unchanged route (``build_snapshot(previous=)``): adding a route to
  10,000 makes one plan and binds one on the loop; only the router is compiled again.
  The build holds the GIL, so while it runs the interpreter switches threads every
  ``BUILD_SWITCH_INTERVAL`` instead of every 5 ms: a request that arrives mid-build
  waits at most about that long for the GIL. Compiled (mypyc) code never checks for a
  switch, so the compiled builders take a ``pause``, called every 256 entities of every
  step (the router's sort and the teardown of a replaced router included), which hands
  the GIL over once per switch interval (``_Handover``). Pools the build needs are made
  on a staged copy of the registry (``StagedPools``) and registered, and unused ones
  closed, on the loop (``build_snapshot(keep_pools=)`` leaves the closing to the caller).
- Versions that arrive while a build runs are queued; the next build starts from the
  newest one, and intermediate versions are never built. The worker acks the version it
  made live (an ack covers every older version).
- The cyclic garbage collector is kept off snapshots, because a collection cannot be
  interrupted: one over a 10,000-route snapshot holds the GIL for 15-70 ms, which the
  proxy loop waits out. While a snapshot is built, only young collections run (small);
  once it is live it is frozen (``gc.freeze``) with the rest of the worker's long-lived
  heap, so no collection ever scans it. A replaced snapshot is then freed by reference
  counting alone: its plans and router in the builder thread, a few at a time
  (``_teardown``); its upstreams, the one reference cycle in a snapshot (a balancer and
  its targets point at each other), are cut by ``RetiredUpstreams`` once nothing but
  their own targets refers to them (no request can pick from them any more).

In-flight requests finish on the snapshot they started with, as with any swap; an in-place
re-weight changes the balancer their retries would use, which is what a weight change
means. A delta that does not apply to the version this worker has (it refused one) is
answered with ``resync``; the supervisor then sends the whole config.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from fastgw.config import ConfigError, load_declarative
from fastgw.config.delta import apply_delta
from fastgw.config.model import Config, Target
from fastgw.config.workspaces import merge_configs
from fastgw.dataplane.snapshot import PoolRegistry, Snapshot, build_snapshot

if TYPE_CHECKING:
    from fastgw.dataplane.server import ProxyServer

__all__ = [
    "BUILD_SWITCH_INTERVAL",
    "Reconfigurer",
    "RetiredUpstreams",
    "StagedPools",
    "config_from_snapshot",
    "reweight_in_place",
    "reweighted_targets",
]

log = logging.getLogger("fastgw.worker")

BUILD_SWITCH_INTERVAL = 0.0005  # seconds: the longest a request waits for the GIL mid-build


class _Handover:
    """The builders' ``pause``: hands the GIL to the proxy loop at most once per
    ``BUILD_SWITCH_INTERVAL`` of build time, however often it is called.

    A short release (any call that lets go of the GIL for a microsecond) does not do it:
    the waiting thread is woken, finds the GIL taken again, and starts its wait over, so
    it never gets it. ``time.sleep(0)`` keeps the GIL released long enough (~80 us) for
    the loop to take it, but costs ~25 us of CPU; called every 256 entities of every step
    (sorting and freeing included), that added ~20 ms of CPU per 10,000-route build."""

    def __init__(self) -> None:
        self.last = time.perf_counter()

    def __call__(self) -> None:
        now = time.perf_counter()
        if now - self.last >= BUILD_SWITCH_INTERVAL:
            time.sleep(0)
            self.last = time.perf_counter()


_give_up_the_gil = _Handover()

Send = Callable[[dict[str, Any]], None]


def config_from_snapshot(message: dict[str, Any]) -> Config:
    """The merged data-plane Config of a whole ``config`` message. Raises ConfigError.

    The supervisor already validated it; loading again here is what turns the JSON back
    into entities (and keeps the worker from trusting a malformed frame blindly). No env
    and no overrides: the ``gateway`` dicts carry the effective settings already.
    """
    workspaces = message.get("workspaces")
    if not isinstance(workspaces, dict) or not workspaces:
        raise ConfigError([("", "snapshot without workspaces")])
    return merge_configs(load_declarative(doc, env=None) for doc in workspaces.values())


def reweighted_targets(live: Config, new: Config) -> list[Target] | None:
    """The targets of ``new`` whose weight changed, when that is all that changed between
    the two (``[]``: nothing changed); None when anything else did."""
    for kind in ("services", "routes", "upstreams", "consumers", "plugins"):
        if getattr(live, kind) is not getattr(new, kind):
            return None  # apply_delta keeps every collection the delta did not touch
    if live.gateway != new.gateway or len(live.targets) != len(new.targets):
        return None
    changed = []
    for old, cur in zip(live.targets, new.targets):
        if old is cur:
            continue
        if replace(old, weight=cur.weight, tags=cur.tags, updated_at=cur.updated_at) != cur:
            return None
        if old.weight != cur.weight:
            changed.append(cur)
    return changed


def reweight_in_place(server: ProxyServer, config: Config, targets: list[Target]) -> None:
    """Give the live snapshot's balancers the new configured weights of ``targets``."""
    snapshot = server.snapshot
    runtimes = {rt.upstream.id: rt for rt in snapshot.upstreams.values()}
    touched = {}
    for target in targets:
        rt = runtimes[target.upstream]
        for tr in rt.targets:
            if tr.key == target.target:
                tr.weight = target.weight
                rt.weights[tr.index] = target.weight
        touched[target.upstream] = rt
    for rt in touched.values():
        server.health.reapply(rt)  # effective weights (slow start) and a new balancer
    snapshot.config = config


class StagedPools:
    """The worker's pool registry as a builder thread sees it: a registry of its own that
    starts with the live pools (shared), makes new ones, and closes none; ``commit`` (on
    the loop) registers the new pools and closes those the new snapshot no longer uses.
    The loop never sees a dict change under it, and no transport is touched off the loop."""

    def __init__(self, live: PoolRegistry) -> None:
        self.registry = PoolRegistry(live.loop, live.sweeper, max_idle=live.max_idle,
                                     max_requests=live.max_requests,
                                     idle_timeout=live.idle_timeout)
        self.registry.pools = dict(live.pools)
        self.registry.pool_stats = dict(live.pool_stats)
        self.registry.tls_contexts = dict(live.tls_contexts)  # made once per TLS profile
        self.used: set[tuple[Any, ...]] = set()  # filled by build_snapshot(keep_pools=)

    def commit(self, live: PoolRegistry) -> None:
        for key, pool in self.registry.pools.items():
            live.pools.setdefault(key, pool)
        for address, stats in self.registry.pool_stats.items():
            live.pool_stats.setdefault(address, stats)
        live.tls_contexts = self.registry.tls_contexts
        live.retain_only(self.used)


class RetiredUpstreams:
    """Upstream runtimes of replaced snapshots, until their cycle can be cut safely.

    An ``UpstreamRuntime`` and its targets refer to each other (``targets`` / ``owner``),
    so reference counting alone never frees them. Once the only references left to one
    are its targets' ``owner`` fields, no plan and no snapshot can reach it: nothing will
    ``pick`` from it again, and a request still holding one of its targets only calls
    ``owner.release(target)``, which needs the balancer, not the target list. Dropping the
    target list then frees all of it by reference counting, when the last such request
    ends."""

    def __init__(self) -> None:
        self.runtimes: list[Any] = []

    def add(self, runtimes: Any) -> None:
        self.runtimes.extend(runtimes)

    def sweep(self) -> int:
        """Cut the cycles nobody else can reach; returns how many are still waiting."""
        waiting = []
        for rt in self.runtimes:
            # references: each target's owner, this list, `rt` here, getrefcount's argument
            if sys.getrefcount(rt) <= len(rt.targets) + 3:
                rt.targets = []
            else:
                waiting.append(rt)
        self.runtimes = waiting
        return len(waiting)


def _teardown(holder: list[Snapshot]) -> None:
    """Free a replaced snapshot, in the builder thread: its plans a few at a time (each
    release is short, so the proxy loop gets the GIL in between), its router's trie a
    slice at a time, then the rest."""
    snapshot = holder.pop()
    plans = snapshot.route_plans
    while plans:
        for _ in range(min(256, len(plans))):
            plans.popitem()
    snapshot.router.dismantle(_give_up_the_gil)
    del snapshot, plans


class Reconfigurer:
    """Applies ``config`` messages to a ProxyServer (see module doc). Create it once the
    server runs the first config; feed it every later ``config`` message with ``submit``."""

    def __init__(self, server: ProxyServer, config: Config, version: int, send: Send) -> None:
        self.server = server
        self.send = send
        self.live_config = config  # what the server's snapshot was built from (or patched to)
        self.version = version  # the version the server runs
        self.queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.builds = 0  # snapshots built off the loop (for tests and logs)
        self.in_place = 0  # changes applied in place
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="config-build")
        self.retired = RetiredUpstreams()
        self._sweep: asyncio.TimerHandle | None = None
        self._task = asyncio.ensure_future(self._run())

    def submit(self, message: dict[str, Any]) -> None:
        self.queue.put_nowait(message)

    async def close(self) -> None:
        """Stop taking changes; a build in progress finishes (it is not interruptible)."""
        self._task.cancel()
        try:
            await self._task
        except asyncio.CancelledError:
            pass
        if self._sweep is not None:
            self._sweep.cancel()
        self._executor.shutdown(wait=True)

    # -- the one task that changes the server's config -------------------------------------
    async def _run(self) -> None:
        while True:
            batch = [await self.queue.get()]
            while not self.queue.empty():
                batch.append(self.queue.get_nowait())
            try:
                await self._apply_batch(batch)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a bug must not stop the worker from serving
                log.exception("worker %d: applying config failed", os.getpid())
                self._ack(int(batch[-1].get("version") or 0), error=repr(exc))

    async def _apply_batch(self, batch: list[dict[str, Any]]) -> None:
        started = time.perf_counter()
        config, version = self.live_config, self.version
        whole: dict[str, Any] | None = None  # the last whole config of the batch, undecoded
        deltas: list[dict[str, Any]] = []
        for message in batch:
            v = int(message.get("version") or 0)
            if v <= version:
                continue  # stale or duplicate
            if "changes" not in message:
                whole, deltas, version = message, [], v
            elif int(message.get("base") or 0) != version:
                log.warning("worker %d: config %d is a change to %s, this worker has %d; "
                            "asking for the whole config", os.getpid(), v, message.get("base"),
                            version)
                self._ack(v, error="base version mismatch", resync=True)
                return
            else:
                deltas.append(message)
                version = v
        if version == self.version:
            return
        try:
            if whole is None and all(set(m["changes"]) <= {"targets"} for m in deltas):
                # Only targets changed: patch them in here (a config's targets are few),
                # then see whether it is a weight change that needs no new snapshot.
                for message in deltas:
                    config = apply_delta(config, message["changes"])
                deltas = []
                targets = reweighted_targets(self.live_config, config)
                if targets is not None:
                    reweight_in_place(self.server, config, targets)
                    self.in_place += 1
                    self._live(config, version, started, in_place=True)
                    return
            config, snapshot = await self._build_off_loop(whole, deltas, config)
        except ConfigError as exc:
            log.error("worker %d: config %d refused: %s", os.getpid(), version, exc)
            self._ack(version, error=str(exc))
            return
        old = [self.server.snapshot]
        self.server.apply(config, snapshot)
        self.builds += 1
        if whole is not None:
            self._set_health(whole)
        self._live(config, version, started, in_place=False)
        await self._retire(old)

    async def _retire(self, old: list[Snapshot]) -> None:
        """Free the replaced snapshot off the loop, and freeze the live one (module doc)."""
        live = {id(rt) for rt in self.server.snapshot.upstreams.values()}  # taken over
        self.retired.add(rt for rt in old[0].upstreams.values() if id(rt) not in live)
        await self._off_loop(_teardown, old)  # the list hands the last reference over
        gc.collect(1)  # young garbage only (small): what is left to freeze is live
        gc.freeze()
        self._schedule_sweep()

    def _schedule_sweep(self) -> None:
        if self._sweep is None and self.retired.runtimes:
            self._sweep = asyncio.get_running_loop().call_later(1.0, self._sweep_retired)

    def _sweep_retired(self) -> None:
        self._sweep = None
        self.retired.sweep()
        self._schedule_sweep()

    async def _build_off_loop(self, whole: dict[str, Any] | None, deltas: list[dict[str, Any]],
                              config: Config) -> tuple[Config, Snapshot]:
        staged = StagedPools(self.server.registry)
        next_version = self.server.version + 1
        live = self.server.snapshot

        def build() -> tuple[Config, Snapshot]:
            cfg = config if whole is None else config_from_snapshot(whole)
            for message in deltas:
                cfg = apply_delta(cfg, message["changes"])
            return cfg, build_snapshot(cfg, staged.registry, next_version, staged.used,
                                       _give_up_the_gil, self.server.plugin_runtime, live)

        result = await self._off_loop(build)
        staged.commit(self.server.registry)
        return result

    async def _off_loop(self, fn: Callable[..., Any], *args: Any) -> Any:
        """``fn(*args)`` in the builder thread, with short GIL turns and no full collection
        meanwhile (module doc)."""
        loop = asyncio.get_running_loop()
        switch = sys.getswitchinterval()
        thresholds = gc.get_threshold()
        sys.setswitchinterval(min(switch, BUILD_SWITCH_INTERVAL))
        gc.set_threshold(thresholds[0], thresholds[1], 1 << 30)
        try:
            return await loop.run_in_executor(self._executor, fn, *args)
        finally:
            sys.setswitchinterval(switch)
            gc.set_threshold(*thresholds)

    def _set_health(self, message: dict[str, Any]) -> None:
        health = message.get("health")
        if isinstance(health, dict):
            self.server.health.update(health)

    def _live(self, config: Config, version: int, started: float, *, in_place: bool) -> None:
        self.live_config = config
        self.version = version
        self.send({"type": "ack", "version": version, "ok": True, "pid": os.getpid(),
                   "apply_ms": round((time.perf_counter() - started) * 1000, 3),
                   "in_place": in_place})

    def _ack(self, version: int, *, error: str, resync: bool = False) -> None:
        message = {"type": "ack", "version": version, "ok": False, "pid": os.getpid(),
                   "error": error}
        if resync:
            message["resync"] = True
        self.send(message)
