"""The worker's side of node health: applying the supervisor's verdicts to balancers.

A worker never judges health itself (DESIGN.md: one state per node). ``WorkerHealth``
applies the supervisor's ``health`` messages (``update``) and re-applies the last known
state to every new config snapshot before it goes live (``bind``), so health survives
config changes; it also sends the passive recorders' runs (dataplane.passive) to the
supervisor every tick.
"""

from __future__ import annotations

import asyncio
from typing import Any, Callable

from fastgw.core.health import HealthPolicy, availability
from fastgw.dataplane.balancing import UpstreamRuntime
from fastgw.dataplane.passive import PassiveRecorder
from fastgw.dataplane.snapshot import Snapshot

__all__ = ["WorkerHealth"]


class WorkerHealth:
    """Node health as this worker knows it, applied to its balancers."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        # upstream id -> {address: [healthy 0/1, weight percent]} (the supervisor's tables)
        self.tables: dict[str, dict[str, list[int]]] = {}
        self.recorders: dict[tuple[str, str], PassiveRecorder] = {}
        self.upstreams: dict[str, UpstreamRuntime] = {}  # the live snapshot's, by id
        self.send: Callable[[dict[str, Any]], None] | None = None
        self._soon = False

    def attach(self, send: Callable[[dict[str, Any]], None]) -> None:
        """Where passive batches go (the IPC channel to the supervisor)."""
        self.send = send

    # -- node health -> balancers ---------------------------------------------------------
    def bind(self, snapshot: Snapshot) -> None:
        """Wire a snapshot that is about to go live: recorders, last known health."""
        upstreams: dict[str, UpstreamRuntime] = {}
        live: set[tuple[str, str]] = set()
        for rt in snapshot.upstreams.values():
            uid = rt.upstream.id
            upstreams[uid] = rt
            policy = HealthPolicy.from_healthchecks(rt.upstream.healthchecks)
            rt.policy = policy
            record = policy.passive_enabled or policy.passive.successes > 0
            for target in rt.targets:
                if not record:
                    target.passive = None
                    continue
                key = (uid, target.key)
                recorder = self.recorders.get(key)
                if recorder is None:
                    recorder = self.recorders[key] = PassiveRecorder(self, policy.passive)
                else:
                    recorder.configure(policy.passive)
                target.passive = recorder
                live.add(key)
            self._apply(rt)
        for key in [k for k in self.recorders if k not in live]:
            del self.recorders[key]
        self.upstreams = upstreams

    def update(self, message: dict[str, Any]) -> None:
        """A ``health`` message (``full``: the whole table, else only changed upstreams)."""
        tables = message.get("upstreams")
        if not isinstance(tables, dict):
            return
        if message.get("full"):
            self.tables = dict(tables)
            changed = list(self.upstreams)
        else:
            self.tables.update(tables)
            changed = list(tables)
        for uid in changed:
            rt = self.upstreams.get(uid)
            if rt is not None:
                self._apply(rt)

    def reapply(self, rt: UpstreamRuntime) -> None:
        """The upstream's configured weights changed in place (fastgw.dataplane.reconfigure):
        apply node health to them again (availability, slow start, a new balancer)."""
        self._apply(rt)

    def _apply(self, rt: UpstreamRuntime) -> None:
        table = self.tables.get(rt.upstream.id) or {}
        healthy: list[int] = []
        weights: list[int] = []
        # Slow start ramps round-robin and least-connections weights only (as Envoy):
        # re-weighting a hash ring would move clients between targets on every step.
        ramps = not rt.needs_key
        for target in rt.targets:
            up, pct = table.get(target.key) or (1, 100)
            healthy.append(1 if up else 0)
            w = target.weight
            ramped = ramps and 0 < pct < 100 and w > 0
            weights.append(max(1, w * pct // 100) if ramped else w)
        policy = rt.policy
        available, mode = availability(healthy, rt.weights, policy.threshold,
                                       policy.panic_threshold)
        rt.set_health(available, weights, mode)

    # -- passive batches -> supervisor ----------------------------------------------------
    def flush_soon(self) -> None:
        if not self._soon:
            self._soon = True
            self.loop.call_soon(self.flush)

    def flush(self) -> None:
        """Send what every recorder saw since the last flush (runs kept in order)."""
        self._soon = False
        events = []
        for (uid, addr), recorder in self.recorders.items():
            if recorder.n or recorder.runs:
                runs = recorder.drain()
                if runs:
                    events.append([uid, addr, runs])
        if events and self.send is not None:
            self.send({"type": "passive", "events": events})
