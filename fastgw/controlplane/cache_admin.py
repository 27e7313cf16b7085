"""The workers' proxy caches as the supervisor reaches them (Admin API ``/proxy-cache``).

Each worker keeps its own cache (fastgw.dataplane.plugins.proxycache): a purge is sent to
every serving worker over IPC, and so is a look-up, whose answers are collected for at
most ``timeout`` seconds (a worker that does not answer in time is left out, and logged;
a purge still reaches it, as the IPC channel keeps its order).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Callable, Iterable

from fastgw.controlplane.workers import WorkerHandle

__all__ = ["WorkerCaches", "CACHE_TIMEOUT"]

log = logging.getLogger("fastgw.supervisor")
CACHE_TIMEOUT = 2.0  # seconds the Admin API waits for the workers' answers


class WorkerCaches:
    def __init__(self, workers: Callable[[], Iterable[WorkerHandle]],
                 timeout: float = CACHE_TIMEOUT) -> None:
        self.workers = workers
        self.timeout = timeout
        self._seq = 0
        self._waiters: dict[int, tuple[set[int], list[dict[str, Any]],
                                       asyncio.Future[None]]] = {}

    async def ask(self, op: str, key: str | None = None) -> list[dict[str, Any]]:
        """Send ``op`` (flush, purge, get) to every serving worker; their answers."""
        workers = [w for w in self.workers() if w.serving]
        if not workers:
            return []
        self._seq += 1
        seq = self._seq
        answers: list[dict[str, Any]] = []
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters[seq] = ({w.pid for w in workers}, answers, future)
        for w in workers:
            w.channel.send({"type": "proxy-cache", "seq": seq, "op": op, "key": key})
        try:
            await asyncio.wait_for(future, self.timeout)
        except TimeoutError:
            log.warning("proxy-cache %s: workers %s did not answer within %ss", op,
                        sorted(self._waiters[seq][0]), self.timeout)
        finally:
            del self._waiters[seq]
        return answers

    def on_answer(self, w: WorkerHandle, msg: dict[str, Any]) -> None:
        seq = msg.get("seq")
        waiter = self._waiters.get(seq) if isinstance(seq, int) else None
        if waiter is None:
            return  # too late: the question was answered without it
        pending, answers, future = waiter
        if w.pid in pending:
            pending.discard(w.pid)
            answers.append(msg)
        if not pending and not future.done():
            future.set_result(None)
