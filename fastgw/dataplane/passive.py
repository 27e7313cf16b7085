"""Passive health recording: what live traffic says about each target, in this worker.

A worker never judges health itself (DESIGN.md: one state per node). A
``PassiveRecorder`` per (upstream, target) keeps ordered runs of outcomes; its owner
(dataplane.health.WorkerHealth) sends them to the supervisor in one ``passive`` message
per 100 ms tick, sooner when a run reaches a passive limit (so a lone worker ejects a
failing target without waiting); nothing is sent while nothing happens.

Cost on the hot path: an upstream without passive checks has ``target.passive = None``
(one attribute test per response). With them, a success that continues a run of
successes is a set lookup and an integer increment.
"""

from __future__ import annotations

from typing import Any, Final, Protocol

from fastgw.core.health import HTTP_FAILURE, SUCCESS, TCP_FAILURE, TIMEOUT, CheckLimits

__all__ = ["PassiveRecorder", "failure_kind"]

MAX_RUNS: Final = 64  # a target flapping on every request flushes early instead of growing a list


def failure_kind(reason: str) -> str:
    """Kong: a failed try that timed out is a timeout, anything else a tcp failure."""
    return TIMEOUT if "timeout" in reason else TCP_FAILURE


class RecorderOwner(Protocol):
    def flush_soon(self) -> None: ...


class PassiveRecorder:
    """One (upstream, target)'s passive outcomes in this worker since the last flush."""

    __slots__ = ("owner", "ok", "bad", "limits", "kind", "n", "runs")

    def __init__(self, owner: RecorderOwner, limits: CheckLimits) -> None:
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
