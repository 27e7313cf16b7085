"""Pure parts of keeping a node up (issue 14): crash-loop policy, config propagation and
staleness, readiness, one instance per proxy port."""

from __future__ import annotations

import os
import socket
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import orjson
import pytest

from fastgw.controlplane.instance import StartupError, claim_proxy_address, listener_pids
from fastgw.controlplane.publisher import ConfigPublisher
from fastgw.controlplane.respawn import CrashLoopPolicy
from fastgw.controlplane.store import FileConfigStore
from fastgw.controlplane.supervisor import Supervisor
from fastgw.controlplane.workers import WorkerHandle

# (slot, seconds the worker lived) -> (respawn delay, gives up when nothing else serves)
CRASH_LOOPS = [
    ("isolated deaths after healthy runs never add up (the issue's 5 rounds, and more)",
     [(0, 3.0), (0, 12.0)] * 3 + [(0, 3.0)],
     [0.0, 0.0] * 3 + [0.0], [False] * 7),
    ("a crash loop backs off and gives up only at the 5th death in a row",
     [(0, 0.2)] * 6, [0.0, 0.5, 1.0, 2.0, 4.0, 8.0], [False] * 4 + [True, True]),
    ("a worker that lived past the window resets its slot",
     [(0, 0.2), (0, 0.2), (0, 0.2), (0, 60.0), (0, 0.2)], [0.0, 0.5, 1.0, 0.0, 0.0], [False] * 5),
    ("slots count separately", [(0, 0.2), (1, 0.2), (0, 0.2), (1, 0.2)],
     [0.0, 0.0, 0.5, 0.5], [False] * 4),
    ("the backoff is capped", [(0, 0.1)] * 9, [0.0, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0],
     [False] * 4 + [True] * 5),
]


@pytest.mark.parametrize(("why", "deaths", "delays", "gives_up"), CRASH_LOOPS,
                         ids=[c[0] for c in CRASH_LOOPS])
def test_crash_loop_policy(why: str, deaths: list[tuple[int, float]], delays: list[float],
                           gives_up: list[bool]) -> None:
    policy = CrashLoopPolicy(window=5.0, base_delay=0.5, max_delay=30.0, give_up_after=5)
    for (slot, lifetime), delay, stop in zip(deaths, delays, gives_up, strict=True):
        assert policy.on_death(slot, lifetime) == delay
        assert policy.gives_up(slot, serving=False) is stop
        assert policy.gives_up(slot, serving=True) is False  # never while a worker serves


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _state(version: int) -> Any:
    return SimpleNamespace(version=version, merged=None, snapshot=lambda: {"default": {}})


def test_propagation_counts_skipped_versions_and_staleness() -> None:
    clock = _Clock()
    publisher = ConfigPublisher(lambda: {"type": "health"}, clock=clock)
    publisher.start(_state(1))
    assert publisher.on_acks([1, 1]) == [(1, 0.0)]
    for version in (2, 3, 4):
        clock.now += 0.010
        publisher._set(_state(version), None)  # pushed
    assert publisher.staleness([1, 4]) == pytest.approx(0.020)  # version 2 waits since +10 ms
    clock.now += 0.005
    # A worker that applied only the newest of the queued versions acks 4 once: 2, 3 and 4
    # are then live everywhere.
    done = publisher.on_acks([4, 4])
    assert [v for v, _ in done] == [2, 3, 4]
    assert [ms for _, ms in done] == pytest.approx([25.0, 15.0, 5.0])
    assert publisher.staleness([4, 4]) == 0.0


def _supervisor(tmp_path: Path, workers: int = 2) -> Supervisor:
    path = tmp_path / "config.json"
    path.write_bytes(orjson.dumps({"_format_version": "3.0", "gateway": {
        "admin_listen": "off", "status_listen": "off"}}))
    return Supervisor(FileConfigStore.open(str(path)), workers)


def _worker(slot: int, pid: int, *, ready: bool = True, acked: int = 1,
            unresponsive: bool = False) -> WorkerHandle:
    proc: Any = SimpleNamespace(pid=pid, returncode=None)
    return WorkerHandle(slot, proc, channel=None, acked=acked, ready=ready,  # type: ignore[arg-type]
                        unresponsive=unresponsive)


@pytest.mark.parametrize(("workers", "started_all", "stopping", "ready", "message"), [
    ([], False, False, False, "0 of 2 workers running"),
    ([(0, 11, True, 1, False), (1, 12, False, 0, False)], False, False, False,
     "1 of 2 workers running"),
    ([(0, 11, True, 1, False), (1, 12, True, 1, False)], True, False, True, "ready"),
    # a worker still applying version 2 serves version 1, completely: still ready
    ([(0, 11, True, 2, False), (1, 12, True, 1, False)], True, False, True, "ready"),
    # one worker dead and respawning: the other serves
    ([(0, 11, True, 2, False)], True, False, True, "ready"),
    ([], True, False, False, "no worker running; respawning"),
    # a hung worker's socket still takes connections: out of readiness until replaced
    ([(0, 11, True, 2, False), (1, 12, True, 2, True)], True, False, False,
     "worker 12 unresponsive"),
    ([(0, 11, True, 2, False), (1, 12, True, 2, False)], True, True, False, "draining"),
])
def test_readiness(tmp_path: Path, workers: list[tuple[int, int, bool, int, bool]],
                   started_all: bool, stopping: bool, ready: bool, message: str) -> None:
    sup = _supervisor(tmp_path)
    sup.store._state = sup.store.state.__class__(2, sup.store.state.workspaces,
                                                 sup.store.state.configs, None)
    for slot, pid, is_ready, acked, silent in workers:
        sup.workers[slot] = _worker(slot, pid, ready=is_ready, acked=acked, unresponsive=silent)
    sup.started_all = started_all
    sup.stopping = stopping
    ok, why = sup.readiness()
    assert ok is ready and why.startswith(message)


def test_second_claim_of_a_proxy_port_names_the_holder() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    lock = claim_proxy_address(f"127.0.0.1:{port}")
    try:
        with pytest.raises(StartupError, match=rf"port {port} is already served by another "
                                               rf"fastgw \(pid {os.getpid()}\)"):
            claim_proxy_address(f"127.0.0.1:{port}")
    finally:
        lock.close()
    claim_proxy_address(f"127.0.0.1:{port}").close()  # released with its holder


def test_port_taken_by_another_program_names_it(tmp_path: Path) -> None:
    import subprocess
    import sys

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    code = (f"import socket,sys,time; s=socket.socket(); s.bind(('0.0.0.0',{port})); "
            "s.listen(); print('up', flush=True); sys.stdin.read()")
    other = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE)
    try:
        assert other.stdout is not None and other.stdout.readline() == b"up\n"
        assert other.pid in listener_pids(port)
        with pytest.raises(StartupError, match=rf"port {port} is already in use by process "
                                               rf"{other.pid}"):
            claim_proxy_address(f"127.0.0.1:{port}")  # a wildcard listener counts too
    finally:
        other.communicate(b"", timeout=10)
