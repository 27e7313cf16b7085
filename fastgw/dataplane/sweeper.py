"""Deadline sweeping: one periodic tick per worker instead of a timer per request.

Arming and cancelling a `loop.call_later` handle on every request (and re-arming it on
every read of a long body) costs more than the rest of a small request's bookkeeping.
Instead, objects that can time out carry a `deadline` (loop time, 0 = none) and the
`deadline_kind` it was armed for, and sit in a set; a tick every `interval` seconds calls
`on_deadline(kind)` on those past due. Timeouts are therefore accurate to one tick (100 ms
for upstream I/O, 1 s for clients).

Every deadline knows what it waits for, so a read timeout is never mistaken for a write
timeout, and the owner answers each kind in its own way (504, 408, a quiet close).

A tick holds no reference to a closed connection: owners discard themselves on close,
so nothing leaks (the uvicorn timer-leak pitfall in reference/craft.md).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Callable, Final, Protocol

__all__ = [
    "CLIENT_BODY", "CLIENT_HEADER", "CONNECT", "DeadlineSweeper", "HasDeadline", "IDLE",
    "KEEPALIVE", "KIND_NAMES", "LINGER", "READ", "WRITE",
]

log = logging.getLogger("fastgw")

# What a deadline waits for. Upstream connections: CONNECT, WRITE (the backend stopped
# taking the request), READ (the response head or the next response bytes), IDLE (a
# pooled connection). Client connections: CLIENT_HEADER (a request head), CLIENT_BODY
# (the next piece of a request body), KEEPALIVE (the next request), LINGER (a closing
# connection reading what the client still sends).
# Final, one per line: compiled code reads each as a C constant, not a module lookup.
CONNECT: Final = 1
WRITE: Final = 2
READ: Final = 3
IDLE: Final = 4
CLIENT_HEADER: Final = 5
CLIENT_BODY: Final = 6
KEEPALIVE: Final = 7
LINGER: Final = 8
KIND_NAMES: Final = {CONNECT: "connect", WRITE: "write", READ: "read", IDLE: "idle",
              CLIENT_HEADER: "client header", CLIENT_BODY: "client body",
              KEEPALIVE: "keep-alive", LINGER: "linger"}


class HasDeadline(Protocol):
    deadline: float
    deadline_kind: int

    def on_deadline(self, kind: int) -> None: ...


class DeadlineSweeper:
    __slots__ = ("_loop", "_interval", "_members", "_handle", "on_tick")

    def __init__(self, loop: asyncio.AbstractEventLoop, interval: float) -> None:
        self._loop = loop
        self._interval = interval
        self._members: set[HasDeadline] = set()
        self._handle: asyncio.TimerHandle | None = None
        self.on_tick: list[Callable[[], object]] = []  # run every tick (e.g. Date refresh)

    def add(self, member: HasDeadline) -> None:
        self._members.add(member)

    def discard(self, member: HasDeadline) -> None:
        self._members.discard(member)

    def __len__(self) -> int:
        return len(self._members)

    def __contains__(self, member: object) -> bool:
        return member in self._members

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
            if not 0 < member.deadline <= now:
                continue  # re-armed by an earlier handler of this tick
            member.deadline = 0.0
            try:
                member.on_deadline(member.deadline_kind)
            except Exception:  # pragma: no cover - a bug in one owner must not stop the tick
                log.exception("deadline handler failed")
        for fn in self.on_tick:
            fn()
        self._handle = self._loop.call_later(self._interval, self._tick)
