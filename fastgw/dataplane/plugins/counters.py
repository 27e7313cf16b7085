"""Rate-limit counters shared by every worker of a node, exact under concurrency.

Design (issue 10: ``policy: local`` must hold across all workers): one small table in a
shared memory file (``/dev/shm``), mapped by every worker, and one lock around each
change. Kong checks in the access phase and counts later from a timer, so concurrent
requests can all pass. Here a worker *reserves* tokens of a window under the lock (the
shared count grows by what it takes, never past the limit) and admits requests by
spending its tokens locally: a window never admits more than its limit, whatever the
number of workers. A reservation takes a fraction of what is left (`LEASE_SHARE`), so
with plenty left a worker touches the table once per many requests, and near the limit
it takes one token at a time. Tokens a worker holds when its window ends are simply
not used: a client may be refused a little early when traffic stops and starts on
another worker, never admitted once too many.

The lock is a named POSIX semaphore (the one ``multiprocessing`` uses): taking and
giving it back costs no system call when nobody else holds it (about 80 ns from Python,
where an ``fcntl`` record lock costs two system calls, about 650 ns). A semaphore is not
released by the kernel when its holder dies, so: every wait is bounded (`LOCK_TIMEOUT`,
then the plugin's ``fault_tolerant`` decides), and the supervisor, when a worker dies,
frees a semaphore that stays taken (`unstick`: the critical section lasts microseconds,
so one held for 100 ms has no live holder).

Table: ``SLOTS`` slots of four 64-bit cells: the counter's id (a 64-bit hash of its key:
plugin instance, client, period, window start), the window's end (epoch seconds), the
count, and one unused. A key's
slot is found by linear probing over at most ``PROBES`` slots from its hash; a slot whose
window has ended is free. Counts are exact while fewer than ``SLOTS`` windows are live
at once within a probe run; beyond that the window ending soonest is evicted (logged
once), which can only let a client through early, never block one wrongly.
"""

from __future__ import annotations

import _multiprocessing  # type: ignore[import-not-found]
import logging
import mmap
import os
from hashlib import blake2b
from typing import Any, Final

__all__ = ["SharedCounters", "SLOTS", "LEASE_SHARE", "counter_id", "node_counter_names",
           "create_node_lock", "remove_node_counters", "unstick"]

log = logging.getLogger("fastgw.plugins")

SLOTS: Final = 65536
PROBES: Final = 32
LOCK_TIMEOUT: Final = 1.0  # seconds a request waits for the counters before giving up
LEASE_SHARE: Final = 16  # a reservation takes 1/LEASE_SHARE of what is left (at least 1)
_SLOT: Final = 32  # bytes: four 64-bit cells
_CELLS: Final = 4
_SEMAPHORE: Final = 1  # multiprocessing's SemLock kind


def node_counter_names(node_pid: int) -> tuple[str, str]:
    """(counter file, semaphore name) of the node whose supervisor has ``node_pid``."""
    base = "/dev/shm" if os.path.isdir("/dev/shm") else os.path.join(os.sep, "tmp")
    return os.path.join(base, f"fastgw-counters-{node_pid}"), f"/fastgw-counters-{node_pid}"


def create_node_lock(name: str) -> Any:
    """The node's semaphore, made by the supervisor before its workers start."""
    try:
        _multiprocessing.sem_unlink(name)  # a leftover of a crashed node with our pid
    except OSError:
        pass
    return _multiprocessing.SemLock(_SEMAPHORE, 1, 1, name, False)


def remove_node_counters(path: str, name: str) -> None:
    for remove in (lambda: os.unlink(path), lambda: _multiprocessing.sem_unlink(name)):
        try:
            remove()
        except OSError:
            pass


def unstick(lock: Any, hold: float = 0.1) -> bool:
    """Free the node's semaphore if nobody gives it back within ``hold`` seconds (its
    holder died); True when it had to."""
    if lock.acquire(True, hold):
        lock.release()
        return False
    lock.release()
    log.warning("rate-limiting: counters' lock freed after a worker died holding it")
    return True


def counter_id(key: bytes) -> int:
    """A counter key's 64-bit id in the table (never 0: 0 marks an empty slot)."""
    return int.from_bytes(blake2b(key, digest_size=8).digest(), "little", signed=True) or 1


class SharedCounters:
    """The node's rate-limit windows (see the module docstring)."""

    def __init__(self, path: str, lock_name: str | None) -> None:
        self.path = path
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        size = SLOTS * _SLOT
        try:
            if os.fstat(fd).st_size < size:
                os.ftruncate(fd, size)  # every worker asks for the same size: no race
            self.map = mmap.mmap(fd, size)
        finally:
            os.close(fd)
        # The table as 64-bit integers: slot i is [id, window end, count, unused] at 4*i.
        self.cells: Any = memoryview(self.map).cast("q")
        if lock_name is None:  # no node (tests, embedding): a semaphore of our own
            name = f"/fastgw-counters-{os.getpid()}-{id(self)}"
            self.lock: Any = _multiprocessing.SemLock(_SEMAPHORE, 1, 1, name, True)
        else:
            self.lock = _multiprocessing.SemLock._rebuild(0, _SEMAPHORE, 1, lock_name)
        self.evicted = False

    def close(self) -> None:
        self.cells.release()
        self.map.close()

    def _acquire(self) -> None:
        lock = self.lock
        # Uncontended, the non-blocking try is all it costs; a bounded wait otherwise.
        if not lock.acquire(False) and not lock.acquire(True, LOCK_TIMEOUT):
            raise OSError("rate-limiting counters: lock not available")

    def _release(self) -> None:
        try:
            self.lock.release()
        except ValueError:  # the supervisor freed it meanwhile (see unstick)
            pass

    def reserve(self, ids: list[int], hints: list[int], ends: list[int],
                limits: list[float], need: list[bool],
                now: int) -> tuple[bool, list[int], list[int]]:
        """Under the lock, take tokens in the windows that ``need`` them: 1/LEASE_SHARE
        of what is left under the limit, at least one. All or nothing: when one of them
        is full, nothing is taken. Returns (taken, each window's count after, tokens
        taken per window). ``hints`` are the cells the ids were last found at (updated
        in place)."""
        self._acquire()
        try:
            cells = self.cells
            n = len(ids)
            counts: list[int] = []
            grants = [0] * n
            ok = True
            for i in range(n):
                key = ids[i]
                at = hints[i]
                if cells[at] != key:
                    at = hints[i] = self._find(key, now)
                count = cells[at + 2] if cells[at] == key and cells[at + 1] > now else 0
                counts.append(count)
                if need[i] and count >= limits[i]:
                    ok = False
            if ok:
                for i in range(n):
                    if need[i]:
                        grant = (int(limits[i]) - counts[i]) // LEASE_SHARE
                        if grant < 1:
                            grant = 1
                        grants[i] = grant
                        counts[i] += grant
                        at = hints[i]
                        cells[at] = ids[i]
                        cells[at + 1] = ends[i]
                        cells[at + 2] = counts[i]
            return ok, counts, grants
        finally:
            self._release()

    def _find(self, key: int, now: int) -> int:
        """The cell index of ``key``'s slot: its own, else the first free one, else the
        one whose window ends first (eviction)."""
        cells = self.cells
        start = key % SLOTS
        free = -1
        oldest = -1
        oldest_end = 0
        for i in range(PROBES):
            at = ((start + i) % SLOTS) * _CELLS
            stored = cells[at]
            if stored == key:
                return at
            end = cells[at + 1]
            if free < 0 and (stored == 0 or end <= now):
                free = at
            elif oldest < 0 or end < oldest_end:
                oldest, oldest_end = at, end
        if free >= 0:
            return free
        if not self.evicted:
            self.evicted = True
            log.warning("rate-limiting: counter table full around one key; the window "
                        "ending first was evicted")
        return oldest
