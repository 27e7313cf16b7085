"""Micro-benchmarks for fastgw.core.balancer picks.

Run: .venv/bin/python -m pytest bench/bench_balancer.py --benchmark-enable -q
Each benchmark times a loop of LOOP picks, so divide the reported mean by LOOP
(the ``ns/pick`` value in extra_info) for the per-pick cost.
"""

from __future__ import annotations

import pytest

from fastgw.core.balancer import (
    ConsistentHashRing,
    LeastConnections,
    SmoothWeightedRoundRobin,
    make_balancer,
)

LOOP = 1000
SIZES = [2, 10]


def _keys(n: int) -> list[str]:
    return [f"10.0.0.{i + 1}:52773" for i in range(n)]


def _run(benchmark, fn) -> None:
    benchmark(fn)
    benchmark.extra_info["ns/pick"] = round(benchmark.stats.stats.mean / LOOP * 1e9, 1)


@pytest.mark.parametrize("n", SIZES)
def test_swrr_pick_all_available(benchmark, n):
    b = SmoothWeightedRoundRobin([5] + [1] * (n - 1))
    avail = bytearray([1] * n)
    pick = b.pick

    def loop():
        for _ in range(LOOP):
            pick(avail)

    _run(benchmark, loop)


@pytest.mark.parametrize("n", SIZES)
def test_swrr_pick_one_down(benchmark, n):
    b = SmoothWeightedRoundRobin([5] + [1] * (n - 1))
    avail = bytearray([1] * n)
    avail[0] = 0  # replayed once the new orbit is recorded
    pick = b.pick

    def loop():
        for _ in range(LOOP):
            pick(avail)

    _run(benchmark, loop)


@pytest.mark.parametrize("n", SIZES)
def test_swrr_pick_retry_exclude(benchmark, n):
    """Every pick excludes one target: always the explicit nginx loop."""
    b = SmoothWeightedRoundRobin([1] * n)
    avail = bytearray([1] * n)
    excl = (0,)
    pick = b.pick

    def loop():
        for _ in range(LOOP):
            pick(avail, excl)

    _run(benchmark, loop)


@pytest.mark.parametrize("n", SIZES)
def test_ring_pick(benchmark, n):
    ring = ConsistentHashRing(_keys(n), [100] * n)
    avail = bytearray([1] * n)
    values = [f"192.168.{i // 250}.{i % 250}" for i in range(LOOP)]
    pick = ring.pick

    def loop():
        for v in values:
            pick(v, avail)

    _run(benchmark, loop)


@pytest.mark.parametrize("n", SIZES)
def test_ring_pick_via_make_balancer(benchmark, n):
    class Up:
        algorithm = "consistent-hashing"
        slots = 10000

    b = make_balancer(Up(), _keys(n), [100] * n)
    avail = bytearray([1] * n)
    values = [f"user-{i}" for i in range(LOOP)]
    pick = b.pick

    def loop():
        for v in values:
            pick(avail, (), v)

    _run(benchmark, loop)


@pytest.mark.parametrize("n", SIZES)
def test_ring_pick_one_down(benchmark, n):
    ring = ConsistentHashRing(_keys(n), [100] * n)
    avail = bytearray([1] * n)
    avail[0] = 0
    values = [f"192.168.{i // 250}.{i % 250}" for i in range(LOOP)]
    pick = ring.pick

    def loop():
        for v in values:
            pick(v, avail)

    _run(benchmark, loop)


@pytest.mark.parametrize("n", SIZES)
def test_least_connections_pick(benchmark, n):
    lc = LeastConnections([100] * n)
    avail = bytearray([1] * n)
    pick = lc.pick

    def loop():
        for _ in range(LOOP):
            pick(avail)

    _run(benchmark, loop)


@pytest.mark.parametrize("n", SIZES)
def test_least_connections_pick_acquire_release(benchmark, n):
    lc = LeastConnections([100] * n)
    avail = bytearray([1] * n)
    pick, acquire, release = lc.pick, lc.acquire, lc.release

    def loop():
        for _ in range(LOOP):
            i = pick(avail)
            acquire(i)
            release(i)

    _run(benchmark, loop)


def test_empty_loop_baseline(benchmark):
    """Loop overhead to subtract from the per-pick figures."""

    def loop():
        for _ in range(LOOP):
            pass

    _run(benchmark, loop)
