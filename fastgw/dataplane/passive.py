"""The worker's half of health checking: passive recording and applying node health.

A worker never judges health itself (DESIGN.md: one state per node). It
- records what live traffic says about each target (``PassiveRecorder``), as ordered
  runs of outcomes, and sends them to the supervisor in one ``passive`` message per
  100 ms tick (sooner when a run reaches a passive limit, so a lone worker ejects a
  failing target without waiting); nothing is sent while nothing happens;
- applies the supervisor's ``health`` messages (``WorkerHealth.update``) and re-applies
  the last known state to every new config snapshot before it goes live (``bind``), so
  health survives config changes.

Cost on the hot path: an upstream without passive checks has ``target.passive = None``
(one attribute test per response). With them, a success that continues a run of
successes is a set lookup and an integer increment.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any, Callable

from fastgw.core.health import (
    HTTP_FAILURE,
    SUCCESS,
    TCP_FAILURE,
    TIMEOUT,
    CheckLimits,
    HealthPolicy,
    availability,
)

if TYPE_CHECKING:
    from fastgw.dataplane.snapshot import Snapshot, UpstreamRuntime

__all__ = ["PassiveRecorder", "WorkerHealth", "failure_kind"]

log = logging.getLogger("fastgw.health")

MAX_RUNS = 64  # a target flapping on every request flushes early instead of growing a list


def failure_kind(reason: str) -> str:
    """Kong: a failed try that timed out is a timeout, anything else a tcp failure."""
    return TIMEOUT if "timeout" in reason else TCP_FAILURE


class PassiveRecorder:
    """One (upstream, target)'s passive outcomes in this worker since the last flush."""

    __slots__ = ("owner", "ok", "bad", "limits", "kind", "n", "runs")

    def __init__(self, owner: WorkerHealth, limits: CheckLimits) -> None:
        self.owner = owner
        self.configure(limits)
        self.kind = SUCCESS
        self.n = 0  # length of the current run of `kind`
        self.runs: list[list[Any]] = []  # finished runs, oldest first

    def configure(self, limits: CheckLimits) -> None:
        self.limits = limits
        self.ok = limits.healthy_statuses
        self.bad = limits.unhealthy_statuses

    def on_status(self, status: int) -> None:
        """The status of a response from this target (orphan statuses are ignored)."""
        if status in self.ok:
            if self.kind == SUCCESS:
                self.n += 1
                return
            self._push(SUCCESS)
        elif status in self.bad:
            self._push(HTTP_FAILURE)

    def on_failure(self, kind: str) -> None:
        self._push(kind)

    def _push(self, kind: str) -> None:
        if kind == self.kind:
            self.n += 1
        else:
            if self.n:
                self.runs.append([self.kind, self.n])
                if len(self.runs) >= MAX_RUNS:
                    self.owner.flush_soon()
            self.kind = kind
            self.n = 1
        if kind != SUCCESS:
            limit = self.limits.limit(kind)
            if limit and self.n >= limit:
                self.owner.flush_soon()  # state-relevant: don't wait for the tick

    def drain(self) -> list[list[Any]] | None:
        runs = self.runs
        if self.n:
            runs.append([self.kind, self.n])
            self.n = 0  # `kind` stays: the success fast path keeps working
        if not runs:
            return None
        self.runs = []
        return runs


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
