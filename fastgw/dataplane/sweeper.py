"""Deadline sweeping: one periodic tick per worker instead of a timer per request.

Arming and cancelling a `loop.call_later` handle on every request (and re-arming it on
every read of a long body) costs more than the rest of a small request's bookkeeping.
Instead, objects that can time out carry a `deadline` (loop time, 0 = none) and sit in a
set; a tick every `interval` seconds calls `on_deadline()` on those past due. Timeouts are
therefore accurate to one tick (100 ms for upstream I/O, which is well under Kong's
millisecond-configured but in practice second-scale timeouts).

A tick holds no reference to a closed connection: owners discard themselves on close,
so nothing leaks (the uvicorn timer-leak pitfall in reference/craft.md).
"""

from __future__ import annotations

import asyncio
from typing import Protocol


class HasDeadline(Protocol):
    deadline: float

    def on_deadline(self) -> None: ...


class DeadlineSweeper:
    __slots__ = ("_loop", "_interval", "_members", "_handle", "on_tick")

    def __init__(self, loop: asyncio.AbstractEventLoop, interval: float) -> None:
        self._loop = loop
        self._interval = interval
        self._members: set[HasDeadline] = set()
        self._handle: asyncio.TimerHandle | None = None
        self.on_tick: list = []  # extra callables run every tick (e.g. Date refresh)

    def add(self, member: HasDeadline) -> None:
        self._members.add(member)

    def discard(self, member: HasDeadline) -> None:
        self._members.discard(member)

    def __len__(self) -> int:
        return len(self._members)

    def start(self) -> None:
        if self._handle is None:
            self._handle = self._loop.call_later(self._interval, self._tick)

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _tick(self) -> None:
        now = self._loop.time()
        due = [m for m in self._members if 0 < m.deadline <= now]
        for member in due:
            member.deadline = 0.0
            try:
                member.on_deadline()
            except Exception:  # pragma: no cover - a bug in one owner must not stop the tick
                import logging

                logging.getLogger("fastgw").exception("deadline handler failed")
        for fn in self.on_tick:
            fn()
        self._handle = self._loop.call_later(self._interval, self._tick)
