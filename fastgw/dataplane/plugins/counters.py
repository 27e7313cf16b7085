"""Rate-limit counters shared by every worker of a node, exact under concurrency.

Design (issue 10: ``policy: local`` must hold across all workers): one small table in a
shared memory file (``/dev/shm``), mapped by every worker, and one lock around each
check-and-count. Kong checks in the access phase and counts later from a timer, so
concurrent requests can all pass; here a request's windows are read, compared with
their limits and incremented in one step under the lock, so a window never admits more
than its limit, whatever the number of workers.

The lock is an ``fcntl`` record lock on the file: the kernel drops it when its holder
dies, so a worker killed mid-update can never wedge the others (a semaphore in shared
memory would stay taken). Cost: two ``fcntl`` calls and a few slot reads per request that
reaches a rate-limiting plugin (measured in bench/plugins.py).

Table: ``SLOTS`` slots of 32 bytes: a 16-byte digest of the counter key (plugin instance,
client, period, window start), the window's end (epoch seconds) and the count. A key's
slot is found by linear probing over at most ``PROBES`` slots from its hash; a slot whose
window has ended is free. Counts are exact while fewer than ``SLOTS`` windows are live
at once within a probe run; beyond that the window ending soonest is evicted (logged
once), which can only let a client through early, never block one wrongly.
"""

from __future__ import annotations

import fcntl
import logging
import mmap
import os
import struct
from hashlib import blake2b
from typing import Final, Sequence

__all__ = ["SharedCounters", "SLOTS", "counters_path"]

log = logging.getLogger("fastgw.plugins")

SLOTS: Final = 65536
PROBES: Final = 32
_SLOT: Final = 32
_ENTRY: Final = struct.Struct("<16sqq")  # digest, window end, count
_EMPTY: Final = bytes(16)


def counters_path(node_pid: int) -> str:
    """The node's counter file: one per supervisor (workers use their parent's pid)."""
    base = "/dev/shm" if os.path.isdir("/dev/shm") else os.path.join(os.sep, "tmp")
    return os.path.join(base, f"fastgw-counters-{node_pid}")


class SharedCounters:
    """The node's rate-limit windows (see the module docstring)."""

    __slots__ = ("path", "fd", "map", "_evicted")

    def __init__(self, path: str) -> None:
        self.path = path
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        size = SLOTS * _SLOT
        if os.fstat(self.fd).st_size < size:
            os.ftruncate(self.fd, size)  # every worker asks for the same size: no race
        self.map = mmap.mmap(self.fd, size)
        self._evicted = False

    def close(self) -> None:
        self.map.close()
        os.close(self.fd)

    def hit(self, keys: Sequence[bytes], ends: Sequence[int], limits: Sequence[float],
            now: int) -> list[int]:
        """Each window's count before this request. When every count is under its limit,
        all are incremented (the request is admitted); otherwise none is."""
        digests = [blake2b(k, digest_size=16).digest() for k in keys]
        fd = self.fd
        fcntl.lockf(fd, fcntl.LOCK_EX)
        try:
            slots = [self._slot(d, now) for d in digests]
            m = self.map
            counts = []
            for off, digest in zip(slots, digests):
                stored, end, count = _ENTRY.unpack_from(m, off)
                counts.append(count if stored == digest and end > now else 0)
            if all(c < limit for c, limit in zip(counts, limits)):
                for off, digest, end, count in zip(slots, digests, ends, counts):
                    _ENTRY.pack_into(m, off, digest, end, count + 1)
            return counts
        finally:
            fcntl.lockf(fd, fcntl.LOCK_UN)

    def _slot(self, digest: bytes, now: int) -> int:
        """The offset of ``digest``'s slot: its own, else the first free one, else the
        one whose window ends first (eviction)."""
        m = self.map
        start = int.from_bytes(digest[:8], "little") % SLOTS
        free = -1
        oldest = -1
        oldest_end = 0
        for i in range(PROBES):
            off = ((start + i) % SLOTS) * _SLOT
            stored, end, _count = _ENTRY.unpack_from(m, off)
            if stored == digest:
                return off
            if free < 0 and (stored == _EMPTY or end <= now):
                free = off
            elif oldest < 0 or end < oldest_end:
                oldest, oldest_end = off, end
        if free >= 0:
            return free
        if not self._evicted:
            self._evicted = True
            log.warning("rate-limiting: counter table full around one key; the window "
                        "ending first was evicted")
        return oldest
