"""The pure health state machine (fastgw.core.health), the worker's passive recorder and
availability, table-driven: Kong's counter semantics, timed ejection, slow start, panic."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from fastgw.config import load_declarative
from fastgw.core.health import (
    ACTIVE,
    HEALTHCHECKS_OFF,
    HEALTHY,
    HTTP_FAILURE,
    PASSIVE,
    SUCCESS,
    TCP_FAILURE,
    TIMEOUT,
    UNHEALTHY,
    HealthBoard,
    HealthPolicy,
    availability,
    ejection_seconds,
    slow_start_percent,
)
from fastgw.dataplane.health import WorkerHealth
from fastgw.dataplane.passive import PassiveRecorder, failure_kind

U = "u1"
A, B = "10.0.0.1:80", "10.0.0.2:80"


def policy(**hc: Any) -> HealthPolicy:
    up = load_declarative({"_format_version": "3.0",
                           "upstreams": [{"name": "u", "healthchecks": hc}]}).upstreams[0]
    return HealthPolicy.from_healthchecks(up.healthchecks)


PASSIVE_3 = {"passive": {"unhealthy": {"http_failures": 3, "tcp_failures": 2, "timeouts": 2},
                         "healthy": {"successes": 2}, "base_ejection_time": 0}}


def board(pol: HealthPolicy, *targets: str, now: float = 0.0) -> HealthBoard:
    b = HealthBoard()
    b.configure({U: (pol, targets or (A, B))}, now)
    return b


def test_defaults_are_off_and_kong_shaped() -> None:
    p = policy()
    assert not p.enabled and not p.active_enabled and not p.passive_enabled
    assert p.passive.unhealthy_statuses == {429, 500, 503}
    assert p.active.healthy_statuses == {200, 302}
    assert (p.base_ejection_time, p.max_ejection_time, p.panic_threshold, p.slow_start) == \
        (30, 300, 0, 0)
    assert board(p).status((U, A)) == HEALTHCHECKS_OFF


# (events as (source, kind, count), expected healthy at the end, transitions seen)
COUNTER_CASES = [
    ("two http failures stay healthy", [(PASSIVE, HTTP_FAILURE, 2)], True, 0),
    ("three http failures eject", [(PASSIVE, HTTP_FAILURE, 3)], False, 1),
    ("a success in between clears failures",
     [(PASSIVE, HTTP_FAILURE, 2), (PASSIVE, SUCCESS, 1), (PASSIVE, HTTP_FAILURE, 2)], True, 0),
    ("failure kinds count separately",
     [(PASSIVE, HTTP_FAILURE, 2), (PASSIVE, TCP_FAILURE, 1), (PASSIVE, HTTP_FAILURE, 1)], False, 1),
    ("tcp limit 2", [(PASSIVE, TCP_FAILURE, 1), (PASSIVE, TCP_FAILURE, 1)], False, 1),
    ("timeouts limit 2", [(PASSIVE, TIMEOUT, 2)], False, 1),
    ("successes revive", [(PASSIVE, TIMEOUT, 2), (PASSIVE, SUCCESS, 2)], True, 2),
    ("a failure resets successes",
     [(PASSIVE, TIMEOUT, 2), (PASSIVE, SUCCESS, 1), (PASSIVE, TCP_FAILURE, 1),
      (PASSIVE, SUCCESS, 1)], False, 1),
    ("active side has its own limits (all 0 here: nothing happens)",
     [(ACTIVE, HTTP_FAILURE, 50)], True, 0),
]


@pytest.mark.parametrize("name,events,healthy,flips", COUNTER_CASES,
                         ids=[c[0] for c in COUNTER_CASES])
def test_kong_counter_semantics(name: str, events: list[tuple[str, str, int]], healthy: bool,
                                flips: int) -> None:
    b = board(policy(**PASSIVE_3))
    seen = [t for src, kind, n in events if (t := b.record((U, A), src, kind, 1.0, n))]
    assert len(seen) == flips
    assert b.status((U, A)) == (HEALTHY if healthy else UNHEALTHY)
    assert b.status((U, B)) == HEALTHY  # the other target is untouched


def test_transition_reasons_are_readable() -> None:
    b = board(policy(**PASSIVE_3))
    t = b.record((U, A), PASSIVE, HTTP_FAILURE, 0.0, 3)
    assert t is not None and t.describe("iris") == \
        "upstream iris target 10.0.0.1:80 is UNHEALTHY: passive check: 3 http failures"
    t = b.record((U, A), PASSIVE, SUCCESS, 0.0, 2)
    assert t is not None and t.healthy and t.reason == "passive check: 2 successes"


def test_status_lists_and_orphan_status() -> None:
    b = board(policy(**PASSIVE_3))
    for status in (500, 503, 418, 429):  # 418 is in neither list: ignored, no reset
        b.record_status((U, A), PASSIVE, status, 0.0)
    assert b.status((U, A)) == UNHEALTHY


def test_timed_ejection_grows_caps_and_decays() -> None:
    p = policy(passive={"unhealthy": {"http_failures": 1}, "base_ejection_time": 10,
                        "max_ejection_time": 25})
    b = board(p)
    key = (U, A)
    t = b.record(key, PASSIVE, HTTP_FAILURE, 0.0)
    assert t is not None and t.reason.endswith("ejected for 10s")
    assert b.tick(9.9) == [] and b.next_deadline(5.0) == 10.0
    [back] = b.tick(10.0)
    assert back.healthy and back.reason == "ejection time elapsed"
    assert b.record(key, PASSIVE, HTTP_FAILURE, 11.0).reason.endswith("20s")  # type: ignore[union-attr]
    b.tick(31.0)
    assert b.record(key, PASSIVE, HTTP_FAILURE, 32.0).reason.endswith("25s")  # type: ignore[union-attr]
    b.tick(57.0)
    # 40 s healthy = 4 base periods: the multiplier decays from 3 to 0, then counts this one.
    assert b.record(key, PASSIVE, HTTP_FAILURE, 97.0).reason.endswith("10s")  # type: ignore[union-attr]
    assert [ejection_seconds(n, 30, 300) for n in (1, 2, 11)] == [30, 60, 300]


def test_kong_mode_without_timed_ejection_and_active_owns_recovery() -> None:
    b = board(policy(**PASSIVE_3))  # base_ejection_time 0: Kong, no return by itself
    b.record((U, A), PASSIVE, TCP_FAILURE, 0.0, 2)
    assert b.tick(10**6) == [] and b.next_deadline(0.0) is None
    p = policy(passive={"unhealthy": {"tcp_failures": 1}, "base_ejection_time": 5},
               active={"unhealthy": {"interval": 1, "tcp_failures": 1},
                       "healthy": {"interval": 1, "successes": 1}})
    b = board(p)
    b.record((U, A), PASSIVE, TCP_FAILURE, 0.0)
    b.record((U, A), ACTIVE, TCP_FAILURE, 1.0)  # active says still down: timer cancelled
    assert b.tick(100.0) == []
    t = b.record((U, A), ACTIVE, SUCCESS, 101.0)
    assert t is not None and t.healthy and t.reason == "active check: 1 successes"


def test_manual_overrides() -> None:
    b = board(policy())  # checks off: manual state is what shows
    assert b.set_manual((U, A), False, 0.0) is not None
    assert b.status((U, A)) == UNHEALTHY and b.status((U, B)) == HEALTHCHECKS_OFF
    assert b.set_manual((U, A), False, 0.0) is None  # no change, no second log line
    assert b.set_manual((U, A), True, 0.0) is not None and b.status((U, A)) == HEALTHY
    b = board(policy(**PASSIVE_3))
    b.record((U, A), PASSIVE, TIMEOUT, 0.0, 2)
    b.set_manual((U, A), True, 1.0)
    b.record((U, A), PASSIVE, TIMEOUT, 2.0, 1)  # counters were reset by the override
    assert b.status((U, A)) == HEALTHY


def test_state_survives_other_target_changes_and_reweighting() -> None:
    p = policy(**PASSIVE_3)
    b = board(p)
    b.record((U, A), PASSIVE, TIMEOUT, 0.0, 2)
    b.configure({U: (p, (A, B, "10.0.0.3:80"))}, 1.0)  # add one
    b.configure({U: (p, (A,))}, 2.0)  # remove two
    assert b.status((U, A)) == UNHEALTHY
    assert set(b.targets) == {(U, A)}
    # Turning checks off readmits what checks had ejected (but not a manual override).
    assert [t.healthy for t in b.configure({U: (policy(), (A,))}, 3.0)] == [True]


@pytest.mark.parametrize("elapsed,window,pct", [
    (0, 10, 10), (0.9, 10, 10), (1, 10, 10), (2.5, 10, 20), (5, 10, 50), (9.99, 10, 90),
    (10, 10, 100), (3, 0, 100), (-1, 10, 10),
])
def test_slow_start_percent(elapsed: float, window: float, pct: int) -> None:
    assert slow_start_percent(elapsed, window) == pct


def test_slow_start_after_recovery_and_for_added_targets() -> None:
    p = policy(slow_start=10, passive={"unhealthy": {"tcp_failures": 1},
                                       "base_ejection_time": 1})
    b = board(p, A, now=0.0)
    assert b.upstream_table(U, 0.0) == {A: [1, 100]}  # the initial set does not ramp
    b.record((U, A), PASSIVE, TCP_FAILURE, 0.0)
    assert b.upstream_table(U, 0.5) == {A: [0, 100]}
    b.tick(1.0)
    assert b.upstream_table(U, 1.0) == {A: [1, 10]}
    assert b.next_deadline(1.0) == pytest.approx(3.0)  # 10% until 20% of the window
    assert b.upstream_table(U, 6.0) == {A: [1, 50]}
    assert b.upstream_table(U, 11.0) == {A: [1, 100]}
    assert b.next_deadline(11.0) is None
    b.configure({U: (p, (A, B))}, 20.0)
    assert b.upstream_table(U, 21.0)[B] == [1, 10]


# (healthy flags, weights, threshold, panic, expected availability, mode)
AVAIL_CASES = [
    ([1, 1], [100, 100], 0, 0, [1, 1], "normal"),
    ([1, 0], [100, 100], 0, 0, [1, 0], "normal"),
    ([0, 0], [100, 100], 0, 0, [0, 0], "normal"),  # nothing: 503 ring-balancer
    ([0, 0], [100, 100], 0, 50, [1, 1], "panic"),
    ([1, 0], [100, 100], 0, 50, [1, 0], "normal"),  # 50% is not below 50%
    ([1, 0, 0], [100, 100, 100], 0, 50, [1, 1, 1], "panic"),
    ([1, 0], [100, 100], 50, 0, [0, 0], "unhealthy"),  # Kong: available% must be > threshold
    ([1, 0], [300, 100], 50, 0, [1, 0], "normal"),
    ([0, 1], [100, 0], 0, 50, [1, 1], "panic"),  # weight 0 counts for nothing
]


@pytest.mark.parametrize("healthy,weights,threshold,panic,expected,mode", AVAIL_CASES)
def test_availability(healthy: list[int], weights: list[int], threshold: float, panic: float,
                      expected: list[int], mode: str) -> None:
    assert availability(healthy, weights, threshold, panic) == (bytearray(expected), mode)


class _Owner:
    def __init__(self) -> None:
        self.urgent = 0

    def flush_soon(self) -> None:
        self.urgent += 1


def test_passive_recorder_runs_in_order_and_urgent_flush() -> None:
    owner = _Owner()
    rec = PassiveRecorder(owner, policy(**PASSIVE_3).passive)  # type: ignore[arg-type]
    for status in (200, 200, 500, 418, 503, 200):
        rec.on_status(status)
    rec.on_failure(failure_kind("connect timeout"))
    rec.on_failure(failure_kind("connection reset"))
    assert rec.drain() == [["s", 2], ["h", 2], ["s", 1], ["o", 1], ["t", 1]]
    assert rec.drain() is None and owner.urgent == 0
    for _ in range(3):
        rec.on_status(500)
    assert owner.urgent == 1  # the local run reached http_failures=3


def test_worker_health_applies_tables_panic_and_slow_start() -> None:
    loop = asyncio.new_event_loop()
    try:
        cfg = load_declarative({"_format_version": "3.0", "upstreams": [{
            "name": "u", "healthchecks": {"panic_threshold": 60},
            "targets": [{"target": A}, {"target": B, "weight": 50}]}]})
        from fastgw.dataplane.sweeper import DeadlineSweeper
        from fastgw.dataplane.snapshot import PoolRegistry, build_snapshot

        reg = PoolRegistry(loop, DeadlineSweeper(loop, 1), max_idle=1, max_requests=1,
                           idle_timeout=1)
        snap = build_snapshot(cfg, reg, 1)
        wh = WorkerHealth(loop)
        sent: list[dict[str, Any]] = []
        wh.attach(sent.append)
        wh.bind(snap)
        rt = snap.upstreams["u"]
        uid = rt.upstream.id
        assert rt.available == bytearray([1, 1]) and rt.targets[0].passive is None
        wh.update({"upstreams": {uid: {A: [1, 100], B: [0, 100]}}})
        assert rt.available == bytearray([1, 0]) and rt.mode == "normal"  # 66% healthy
        wh.update({"upstreams": {uid: {A: [0, 100], B: [1, 100]}}})
        assert rt.available == bytearray([1, 1]) and rt.mode == "panic"  # 33% < 60%
        wh.update({"upstreams": {uid: {A: [1, 20], B: [1, 100]}}})
        assert rt.effective == [20, 50] and rt.weights == [100, 50]
        # A new snapshot (config change) gets the last known health before going live.
        snap2 = build_snapshot(cfg, reg, 2)
        wh.bind(snap2)
        assert snap2.upstreams["u"].effective == [20, 50]
        wh.flush()
        assert sent == []  # nothing happened, nothing sent
    finally:
        loop.close()
