"""The edge tests' harness: a fastgw process in front of a recording backend, and the
checks every edge test ends with (tests/e2e/test_edge_security.py, tests/e2e/test_fuzz.py).

"Nothing reaches a backend" is checked after the fact: take a mark of the recorder, send
the probe, then send a normal request on a new connection (the sentinel: it must get 200
from the same worker pid) and wait for the sentinel at the backend; every byte the backend
received since the mark, other than the sentinel's, came from the probe.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from tests.support.edge_probes import BODY_LIMIT
from tests.support.gateway import GatewayProcess, config_for_targets
from tests.support.procs import status_kb
from tests.support.rawclient import ClientResponse, converse
from tests.support.recorder import (
    FASTGW_VIA,
    Activity,
    Mark,
    RecordedRequest,
    RecordingBackend,
    WebSocketMode,
)

__all__ = [
    "SENTINEL",
    "Edge",
    "T",
    "assert_kong_error",
    "assert_nothing_upstream",
    "assert_only_framed",
    "edge_config",
    "error_problems",
    "framing_problems",
    "running_edge",
    "upstream_problems",
]

T = 5.0  # bound of every wait for an answer ("at once": no 60 s read_timeout)
WARM = b"GET /api/atelier/warm HTTP/1.1\r\nHost: edge.test\r\n\r\n"
SENTINEL = b"GET /api/atelier/__sentinel HTTP/1.1\r\nHost: edge.test\r\n\r\n"


def edge_config(backend: RecordingBackend, gateway: dict[str, Any] | None = None
                ) -> dict[str, Any]:
    """config_for_targets' layout (route /api/atelier) plus the routes the edge tests use:
    /api/stream without request buffering, and /p on host good.test (preserve_host)."""
    config = config_for_targets([backend.address],
                                gateway={"max_body_size": BODY_LIMIT, **(gateway or {})})
    config["services"][0]["routes"] += [
        {"name": "stream", "paths": ["/api/stream"], "strip_path": False,
         "request_buffering": False},
        {"name": "absolute", "hosts": ["good.test"], "paths": ["/p"], "strip_path": False,
         "preserve_host": True},
    ]
    return config


class Edge:
    """A gateway, the recorder behind it, and the checks every edge test ends with.

    `Edge.of(gw, backend)` for a fastgw process (its worker pid is checked after every
    probe); `Edge(port, backend, via=...)` for another proxy (bench/edge_probe: nginx)."""

    def __init__(self, port: int, backend: RecordingBackend, *,
                 gw: GatewayProcess | None = None, via: str = FASTGW_VIA) -> None:
        self.port = port
        self.backend = backend
        self.gw = gw
        self.via = via
        self.worker = 0
        if gw is not None:
            pids = gw.worker_pids()
            assert len(pids) == 1, gw.log()
            self.worker = pids[0]

    @classmethod
    def of(cls, gw: GatewayProcess, backend: RecordingBackend) -> Edge:
        return cls(gw.port, backend, gw=gw)

    def warm(self) -> None:
        """One request, so that the upstream pool holds an idle connection."""
        outcome = converse(self.port, [WARM])
        assert outcome.statuses == [200], outcome

    def assert_serving(self, sentinel: bytes = SENTINEL) -> RecordedRequest:
        """A normal request on a new connection gets 200 from the same worker (no crash,
        no respawn), and reaches the backend; returns it as the backend saw it."""
        target = sentinel.split(b" ", 2)[1].decode()
        mark = self.backend.mark()
        outcome = converse(self.port, [sentinel], timeout=T)
        assert outcome.statuses == [200], f"normal request after the probe: {outcome.describe()}"
        gw = self.gw
        if gw is not None:
            assert gw.worker_pids() == [self.worker], "the worker was replaced:\n" + gw.log()
            assert gw.proc is not None and gw.proc.poll() is None

        def arrived() -> list[RecordedRequest]:
            return [r for r in self.backend.since(mark).requests
                    if r.target == target and r.complete]

        assert self.backend.wait_for(lambda: bool(arrived()), T), "the sentinel did not arrive"
        return arrived()[-1]

    def after(self, mark: Mark, sentinel: bytes = SENTINEL) -> Activity:
        """What reached the backend since `mark`, once a sentinel request made it through
        (so whatever the probe made the gateway write has arrived too), minus the sentinel."""
        arrived = self.assert_serving(sentinel)
        activity = self.backend.since(mark)
        activity.requests = [r for r in activity.requests if r is not arrived]
        activity.received -= len(arrived.raw_head)
        return activity

    def rss_kb(self) -> tuple[int, int]:
        return status_kb(self.worker, b"VmRSS:"), status_kb(self.worker, b"VmHWM:")


def upstream_problems(activity: Activity) -> list[str]:
    problems = []
    if activity.requests or activity.parse_errors:
        problems.append(f"reached the backend: {activity.requests} {activity.parse_errors}")
    elif activity.received:
        problems.append(f"{activity.received} bytes reached the backend")
    return problems


def assert_nothing_upstream(activity: Activity) -> None:
    problems = upstream_problems(activity)
    assert not problems, problems[0]


def framing_problems(activity: Activity, via: str = FASTGW_VIA) -> list[str]:
    """Why what reached the backend is not only requests the gateway framed (empty: it is):
    unparsable bytes, requests without the gateway's head, unrouted (/admin) targets."""
    problems = []
    if activity.parse_errors:
        problems.append(f"unparsable bytes at the backend: {activity.parse_errors}")
    unframed = activity.unframed(via)
    if unframed:
        problems.append(f"not framed by the gateway: {unframed}")
    secret = [r for r in activity.requests if r.target.startswith("/admin")]
    if secret:
        problems.append(f"an unrouted request reached the backend: {secret}")
    return problems


def assert_only_framed(activity: Activity) -> None:
    problems = framing_problems(activity)
    assert not problems, "\n".join(problems)


def error_problems(response: ClientResponse, statuses: frozenset[int] | set[int]) -> list[str]:
    """Why `response` is not one of Kong's JSON errors with one of `statuses` and
    Connection: close (empty: it is)."""
    problems = []
    if response.status not in statuses:
        problems.append(f"status {response.status}, expected {sorted(statuses)}: {response}")
    if not response.closes():
        problems.append(f"no Connection: close on {response}")
    try:
        body = response.json()
    except ValueError:
        body = None
    if not (isinstance(body, dict) and isinstance(body.get("message"), str)
            and isinstance(body.get("request_id"), str)):
        problems.append(f"not Kong's error body: {response.body[:200]!r}")
    return problems


def assert_kong_error(response: ClientResponse, statuses: frozenset[int] | set[int]) -> None:
    problems = error_problems(response, statuses)
    assert not problems, "; ".join(problems)


@contextmanager
def running_edge(gateway: dict[str, Any] | None = None, env: dict[str, str] | None = None,
                 websocket: WebSocketMode = "refuse") -> Iterator[Edge]:
    """A recording backend and a fastgw in front of it (edge_config), both stopped after."""
    with RecordingBackend(websocket=websocket) as backend:
        gw = GatewayProcess(edge_config(backend, gateway), env=env)
        try:
            yield Edge.of(gw.start(), backend)
        finally:
            gw.stop()
            gw._dir.cleanup()
