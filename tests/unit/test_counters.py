"""The node's shared rate-limit counters (fastgw.dataplane.plugins.counters): tokens
reserved under the lock never exceed a limit, even from concurrent processes; windows
that end free their slot; a full probe run evicts."""

from __future__ import annotations

import multiprocessing
import os
from pathlib import Path

from fastgw.dataplane.plugins.counters import (
    LEASE_SHARE,
    PROBES,
    SLOTS,
    SharedCounters,
    counter_id,
    create_node_lock,
    remove_node_counters,
    unstick,
)


def _spend(path: str, lock_name: str, key: int, tries: int, limit: int, out: object) -> None:
    """A worker: admits a request when it holds a token, reserving more when out."""
    counters = SharedCounters(path, lock_name)
    hints, left, admitted = [0], 0, 0
    for _ in range(tries):
        if left <= 0:
            ok, _counts, grants = counters.reserve([key], hints, [2**40], [limit], [True], 1000)
            if not ok:
                continue
            left += grants[0]
        left -= 1
        admitted += 1
    out.put(admitted)  # type: ignore[attr-defined]


def test_never_more_than_the_limit_across_processes(tmp_path: Path) -> None:
    path, name = str(tmp_path / "counters"), f"/fastgw-test-{os.getpid()}-{id(tmp_path)}"
    lock = create_node_lock(name)
    try:
        ctx = multiprocessing.get_context("fork")
        out = ctx.Queue()
        key = counter_id(b"plugin|client|minute|0")
        procs = [ctx.Process(target=_spend, args=(path, name, key, 2000, 5000, out))
                 for _ in range(4)]
        for p in procs:
            p.start()
        admitted = sum(out.get(timeout=30) for _ in procs)
        for p in procs:
            p.join(10)
        # 8000 tries: never more than the limit. Fewer only by tokens a worker still held
        # when it stopped: its last reservation, at most 1/LEASE_SHARE of what was left.
        assert 5000 - 4 * (5000 // LEASE_SHARE) <= admitted <= 5000
        assert not unstick(lock, 0.01)  # nobody holds it
    finally:
        remove_node_counters(path, name)


def test_reservations_shrink_near_the_limit_and_windows_expire(tmp_path: Path) -> None:
    counters = SharedCounters(str(tmp_path / "c"), None)
    a, b = counter_id(b"a"), counter_id(b"b")
    hints = [0, 0]
    ok, counts, grants = counters.reserve([a, b], hints, [110, 200], [160, 5], [True, True], 100)
    assert ok and grants == [160 // LEASE_SHARE, 1] and counts == grants
    # only b needs tokens: a is not touched
    ok, counts, grants = counters.reserve([a, b], hints, [110, 200], [160, 5], [False, True], 100)
    assert ok and grants == [0, 1] and counts == [10, 2]
    for _ in range(3):
        assert counters.reserve([b], hints[1:], [200], [5], [True], 100)[0]
    # b is full: refused, and nothing is taken for a either
    assert counters.reserve([a, b], hints, [110, 200], [160, 5], [True, True], 100) == (
        False, [10, 5], [0, 0])
    # a's window ended: a new one starts at 0
    ok, counts, _ = counters.reserve([a], hints[:1], [120], [160], [True], 110)
    assert ok and counts == [160 // LEASE_SHARE]


def test_full_probe_run_evicts_the_window_ending_first(tmp_path: Path) -> None:
    counters = SharedCounters(str(tmp_path / "c"), None)

    def take(key: int, end: int) -> int:
        return counters.reserve([key], [0], [end], [10], [True], 1)[1][0]

    # PROBES + 1 ids that all start at the same slot.
    ids = [i * SLOTS + 7 for i in range(1, PROBES + 2)]
    for n, key in enumerate(ids[:-1]):
        assert take(key, 1000 + n) == 1
    assert take(ids[-1], 5000) == 1
    assert counters.evicted
    assert take(ids[0], 1000) == 1  # it was the one evicted (and now evicts ids[1])
    assert take(ids[2], 1002) == 2  # the others kept counting


def test_a_lock_left_by_a_dead_worker_is_freed(tmp_path: Path) -> None:
    path, name = str(tmp_path / "counters"), f"/fastgw-test-dead-{os.getpid()}"
    lock = create_node_lock(name)
    try:
        ctx = multiprocessing.get_context("fork")
        dead = ctx.Process(target=_hold_and_die, args=(path, name))
        dead.start()
        dead.join(10)
        counters = SharedCounters(path, name)
        assert not counters.lock.acquire(True, 0.05)  # stuck: its holder is gone
        assert unstick(lock, 0.05)  # what the supervisor does when a worker dies
        assert counters.reserve([counter_id(b"k")], [0], [2**40], [5], [True], 1)[0]
    finally:
        remove_node_counters(path, name)


def _hold_and_die(path: str, lock_name: str) -> None:
    SharedCounters(path, lock_name).lock.acquire()
    os._exit(0)
