"""The node's shared rate-limit counters (fastgw.dataplane.plugins.counters): exact under
concurrent processes, windows that end free their slot, a full probe run evicts."""

from __future__ import annotations

import multiprocessing
import os
from pathlib import Path

from fastgw.dataplane.plugins.counters import (
    PROBES,
    SLOTS,
    SharedCounters,
    counter_id,
    create_node_lock,
    remove_node_counters,
    unstick,
)


def _names(tmp_path: Path) -> tuple[str, str]:
    return str(tmp_path / "counters"), f"/fastgw-test-{os.getpid()}-{id(tmp_path)}"


def _hammer(path: str, lock_name: str, key: int, tries: int, limit: int, out: object) -> None:
    counters = SharedCounters(path, lock_name)
    hints = [0]
    admitted = sum(counters.hit_one(key, hints, 2**40, limit, 1000) < limit
                   for _ in range(tries))
    out.put(admitted)  # type: ignore[attr-defined]


def test_exact_across_processes(tmp_path: Path) -> None:
    path, name = _names(tmp_path)
    lock = create_node_lock(name)
    try:
        ctx = multiprocessing.get_context("fork")
        out = ctx.Queue()
        key = counter_id(b"plugin|client|minute|0")
        procs = [ctx.Process(target=_hammer, args=(path, name, key, 400, 700, out))
                 for _ in range(4)]
        for p in procs:
            p.start()
        admitted = sum(out.get(timeout=30) for _ in procs)
        for p in procs:
            p.join(10)
        assert admitted == 700  # 1600 tries, never more than the limit, never fewer
        assert not unstick(lock, 0.01)  # nobody holds it
    finally:
        remove_node_counters(path, name)


def test_windows_count_and_expire(tmp_path: Path) -> None:
    counters = SharedCounters(str(tmp_path / "c"), None)
    a, b = counter_id(b"a"), counter_id(b"b")
    hints = [0, 0]
    assert counters.hit([a, b], hints, [110, 200], [2, 5], 100) == [0, 0]
    assert counters.hit([a, b], hints, [110, 200], [2, 5], 100) == [1, 1]
    # a is at its limit: refused, and b is not counted either
    assert counters.hit([a, b], hints, [110, 200], [2, 5], 100) == [2, 2]
    assert counters.hit([a, b], hints, [110, 200], [2, 5], 101) == [2, 2]
    # a's window ended: a new one starts at 0
    assert counters.hit([a, b], hints, [120, 200], [2, 5], 110) == [0, 2]


def test_full_probe_run_evicts_the_window_ending_first(tmp_path: Path) -> None:
    counters = SharedCounters(str(tmp_path / "c"), None)
    # PROBES + 1 ids that all start at the same slot.
    ids = [i * SLOTS + 7 for i in range(1, PROBES + 2)]
    for n, key in enumerate(ids[:-1]):
        assert counters.hit_one(key, [0], 1000 + n, 10, 1) == 0
    assert counters.hit_one(ids[-1], [0], 5000, 10, 1) == 0
    assert counters.evicted
    assert counters.hit_one(ids[0], [0], 1000, 10, 1) == 0  # it was the one evicted
    assert counters.hit_one(ids[2], [0], 1002, 10, 1) == 1  # the others kept counting
