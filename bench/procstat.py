"""CPU time and memory of a process tree, read from /proc (Linux only).

Why CPU time per request: on a small shared box requests/s moves with whatever else runs,
but the CPU a proxy spends per request holds still (reference/performance.md). We read
utime+stime (fields 14 and 15 of /proc/PID/task/TID/stat, in clock ticks) of *every thread*
of *every process* in the tree before and after a run: a multi-worker fastgw is a supervisor
plus forked workers, nginx is a master plus a worker. /proc/PID/stat alone would sum a
process's live threads too, but per-thread reads let a worker or thread born during the run
count from zero instead of being missed or double-counted.

Memory: VmRSS is sampled by a background thread during a run (peak of the tree's sum), and
VmHWM (the kernel's own per-process peak) is read at the end; both in KiB.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.procs import status_kb

__all__ = [
    "CLK_TCK",
    "CpuSnapshot",
    "RssSampler",
    "cpu_snapshot",
    "cpu_seconds_between",
    "descendants",
    "memory_kb",
]

CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
_PROC = Path("/proc")


def _ppid_map() -> dict[int, int]:
    """pid -> parent pid for every visible process (one pass over /proc)."""
    out: dict[int, int] = {}
    for entry in os.scandir(_PROC):
        if not entry.name.isdigit():
            continue
        try:
            raw = Path(entry.path, "stat").read_bytes()
        except OSError:  # the process exited while we were scanning
            continue
        # comm (field 2) may contain spaces and parentheses: split after the last ')'.
        rest = raw[raw.rfind(b")") + 2 :].split()
        out[int(entry.name)] = int(rest[1])
    return out


def descendants(roots: list[int]) -> list[int]:
    """The roots and all their children, grandchildren... (a fork()ed worker tree)."""
    parents = _ppid_map()
    children: dict[int, list[int]] = {}
    for pid, ppid in parents.items():
        children.setdefault(ppid, []).append(pid)
    seen: list[int] = []
    stack = [pid for pid in roots if pid in parents]
    while stack:
        pid = stack.pop()
        if pid in seen:
            continue
        seen.append(pid)
        stack.extend(children.get(pid, ()))
    return seen


def _task_ticks(pid: int) -> dict[tuple[int, int], int]:
    """(pid, tid) -> utime+stime ticks for each thread of one process."""
    out: dict[tuple[int, int], int] = {}
    try:
        tasks = os.listdir(_PROC / str(pid) / "task")
    except OSError:
        return out
    for tid in tasks:
        try:
            raw = (_PROC / str(pid) / "task" / tid / "stat").read_bytes()
        except OSError:
            continue
        rest = raw[raw.rfind(b")") + 2 :].split()
        # rest[0] is field 3 (state): utime is field 14 -> rest[11], stime field 15 -> rest[12].
        out[(pid, int(tid))] = int(rest[11]) + int(rest[12])
    return out


@dataclass
class CpuSnapshot:
    taken: float
    ticks: dict[tuple[int, int], int] = field(default_factory=dict)

    @property
    def total_ticks(self) -> int:
        return sum(self.ticks.values())


def cpu_snapshot(roots: list[int]) -> CpuSnapshot:
    """Per-thread CPU ticks of the whole tree under `roots`, right now."""
    snap = CpuSnapshot(time.monotonic())
    for pid in descendants(roots):
        snap.ticks.update(_task_ticks(pid))
    return snap


def cpu_seconds_between(before: CpuSnapshot, after: CpuSnapshot) -> float:
    """CPU seconds the tree used between two snapshots.

    A thread present in both counts its difference; a thread born during the run counts
    all its ticks (it started at zero). A thread that died during the run is lost: for the
    event-loop servers measured here that does not happen in steady state.
    """
    ticks = 0
    for key, value in after.ticks.items():
        ticks += value - before.ticks.get(key, 0)
    return ticks / CLK_TCK


def memory_kb(roots: list[int]) -> tuple[int, int]:
    """(sum of VmRSS, sum of VmHWM) over the tree, KiB."""
    pids = descendants(roots)
    return (
        sum(status_kb(pid, b"VmRSS:") for pid in pids),
        sum(status_kb(pid, b"VmHWM:") for pid in pids),
    )


class RssSampler:
    """Samples the tree's summed VmRSS every `interval` s in a thread; keeps the peak.

    A thread rather than asyncio: the harness mostly sits in subprocess.run(wrk), and
    0.25 s sampling of a few /proc files costs well under 1% of one core.
    """

    def __init__(self, roots: list[int], interval: float = 0.25) -> None:
        self.roots = roots
        self.interval = interval
        self.peak_kb = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def _run(self) -> None:
        while True:
            rss, _ = memory_kb(self.roots)
            self.peak_kb = max(self.peak_kb, rss)
            if self._stop.wait(self.interval):
                return

    def __enter__(self) -> "RssSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        rss, _ = memory_kb(self.roots)  # one last sample: a short run may never be sampled
        self.peak_kb = max(self.peak_kb, rss)
