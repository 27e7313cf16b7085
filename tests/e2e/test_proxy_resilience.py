"""Resilience and correctness under load, end to end.

Real fastgw processes (`tests.support.gateway.GatewayProcess`), real IRIS emulator backends
(`tests.support.procs.IrisProcess`) and real clients over 127.0.0.1 sockets. Every test is bounded
in time; load loops are bounded in count and in time (`LOAD_TIMEOUT`). The box is small
and shared, so bounds are generous, but each one still fails on the bug it guards against
(an unbounded wait, a lost request, a request sent twice).
"""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Iterator, Sequence

import pytest
import requests

from tests.support.gateway import GatewayProcess, config_for_targets, free_port
from tests.support.procs import IrisProcess, process_gone

pytestmark = pytest.mark.timeout(120)

ATELIER = "/api/atelier/"
T = 10.0  # per-request bound
LOAD_TIMEOUT = 90.0  # bound of one load run


# -- helpers ------------------------------------------------------------------------------------


def target(p: IrisProcess | int) -> str:
    return f"127.0.0.1:{p if isinstance(p, int) else p.port}"


def cfg(
    backends: Sequence[IrisProcess | int],
    weights: Sequence[int] | None = None,
    **kwargs: Any,
) -> dict[str, Any]:
    """The README setup, plus a route for the emulator's `/_emulator/...` helpers."""
    route = {"paths": ["/api/atelier", "/_emulator"], **kwargs.pop("route", {})}
    return config_for_targets([target(b) for b in backends], weights=weights, route=route, **kwargs)


def backend_id(resp: requests.Response) -> str:
    return resp.headers.get("X-Iris-Id", "?")


def iris_stats(p: IrisProcess) -> dict[str, int]:
    """Backend counters, asked directly (on a connection of its own, which it counts)."""
    r = requests.get(p.url + "/_emulator/stats", headers={"Connection": "close"}, timeout=T)
    r.raise_for_status()
    return r.json()


def accepted(*backends: IrisProcess) -> int:
    """connections_accepted over `backends`, not counting the connections asking for it."""
    return sum(iris_stats(p)["connections_accepted"] - 1 for p in backends)


_local = threading.local()


def _session() -> requests.Session:
    s = getattr(_local, "session", None)
    if s is None:
        s = _local.session = requests.Session()
    return s


def run_load(
    url: str | Callable[[int], str],
    n: int,
    concurrency: int = 16,
    *,
    during: Callable[[Callable[[], int]], None] | None = None,
    method: str = "GET",
    **kwargs: Any,
) -> list[tuple[int, str] | str]:
    """`n` requests over `concurrency` keep-alive sessions; (status, backend id) or an error.

    `during(progress)` runs in the caller's thread while the load runs; `progress()` is the
    number of requests completed so far.
    """
    done = [0]
    lock = threading.Lock()
    deadline = time.monotonic() + LOAD_TIMEOUT

    def one(i: int) -> tuple[int, str] | str:
        if time.monotonic() > deadline:
            return "load deadline passed"
        try:
            u = url(i) if callable(url) else url
            r = _session().request(method, u, timeout=T, **kwargs)
            out: tuple[int, str] | str = (r.status_code, backend_id(r))
        except requests.RequestException as exc:
            out = f"{type(exc).__name__}: {exc}"
        with lock:
            done[0] += 1
        return out

    with ThreadPoolExecutor(concurrency) as pool:
        futures = [pool.submit(one, i) for i in range(n)]
        if during is not None:
            during(lambda: done[0])
        return [f.result(timeout=LOAD_TIMEOUT) for f in futures]


def failures(results: list[tuple[int, str] | str]) -> list[Any]:
    return [r for r in results if isinstance(r, str) or r[0] != 200]


def wait_until(pred: Callable[[], bool], timeout: float, step: float = 0.01) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(step)
    return pred()


def children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(x) for x in f.read().split()]
    except OSError:
        return []


def workers_of(gw: GatewayProcess, n: int = 1, timeout: float = 10.0) -> list[int]:
    """The worker pids (children of the supervisor), once there are `n` of them."""
    assert wait_until(lambda: len(children(gw.pid)) == n, timeout, 0.05), children(gw.pid)
    return children(gw.pid)


def live_versions(gw: GatewayProcess) -> int:
    """How many config versions every worker has acked so far (from the supervisor log)."""
    return gw.log().count("live on all workers")


def reload(gw: GatewayProcess, config: dict[str, Any], *, wait: bool = True) -> None:
    """Rewrite config.json (keeping the test's listen/worker settings) and SIGHUP."""
    config = {**config, "gateway": {**gw.config["gateway"], **config.get("gateway", {})}}
    before = live_versions(gw)
    gw.reload(config)
    if wait:
        assert wait_until(lambda: live_versions(gw) > before, 10.0, 0.02), gw.log()


def wait_exit(gw: GatewayProcess, timeout: float) -> int | None:
    assert gw.proc is not None
    try:
        return gw.proc.wait(timeout)
    except Exception:
        return None


class ClosingBackend:
    """A backend that accepts, reads a request head, counts it and closes without answering.

    To the gateway this is a reset before any response byte: retryable for a GET, not for
    a POST whose bytes were sent.
    """

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.sock.settimeout(0.1)
        self.port = self.sock.getsockname()[1]
        self.requests: list[bytes] = []
        self.connections = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> ClosingBackend:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sock.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except (socket.timeout, OSError):
                continue
            self.connections += 1
            conn.settimeout(2.0)
            buf = b""
            try:
                while b"\r\n\r\n" not in buf:
                    data = conn.recv(65536)
                    if not data:
                        break
                    buf += data
            except OSError:
                pass
            if b"\r\n\r\n" in buf:
                self.requests.append(buf.split(b"\r\n", 1)[0])
            conn.close()


class OneRequestBackend:
    """Answers the first request of each connection (keep-alive), then closes the
    connection without answering when the next request arrives on it.

    That is the idle-close race made deterministic: every pooled connection the gateway
    reuses turns out to be stale after the request was written.
    """

    RESPONSE = (
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-Iris-Id: one\r\n"
        b"Connection: keep-alive\r\n\r\nok"
    )
    CLOSE_RESPONSE = (
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-Iris-Id: one\r\n"
        b"Connection: close\r\n\r\nok"
    )

    def __init__(self, *, say_close: bool = False) -> None:
        self.say_close = say_close  # answer with `Connection: close` (and close)
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.sock.settimeout(0.1)
        self.port = self.sock.getsockname()[1]
        self.answered = 0
        self.dropped: list[bytes] = []
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._accept = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> OneRequestBackend:
        self._accept.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._accept.join(5)
        for t in self._threads:
            t.join(5)
        self.sock.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except (socket.timeout, OSError):
                continue
            t = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            self._threads.append(t)
            t.start()

    def _read_head(self, conn: socket.socket) -> bytes | None:
        buf = b""
        while b"\r\n\r\n" not in buf:
            if self._stop.is_set():
                return None
            try:
                data = conn.recv(65536)
            except socket.timeout:
                continue
            except OSError:
                return None
            if not data:
                return None
            buf += data
        return buf

    def _serve(self, conn: socket.socket) -> None:
        conn.settimeout(0.2)
        with conn:
            head = self._read_head(conn)
            if head is None:
                return
            if b"content-length:" in head.lower():
                return  # keep it simple: GETs only get an answer
            self.answered += 1  # counted before the client can see the answer
            if self.say_close:
                conn.sendall(self.CLOSE_RESPONSE)
                return
            conn.sendall(self.RESPONSE)
            head = self._read_head(conn)
            if head is not None:
                self.dropped.append(head.split(b"\r\n", 1)[0])


# -- load balancing: exact distribution -----------------------------------------------------------


@pytest.mark.parametrize("weights, expected", [((100, 100), (200, 200)), ((300, 100), (300, 100))])
def test_round_robin_exact_distribution(iris_pair, gateway_factory, weights, expected) -> None:
    a, b = iris_pair
    gw = gateway_factory(cfg([a, b], weights=weights), workers=1)
    results = run_load(gw.url + ATELIER, 400, concurrency=8)
    assert failures(results) == [], gw.log()
    counts = Counter(r[1] for r in results)  # type: ignore[index]
    assert (counts["A"], counts["B"]) == expected


def test_weight_zero_target_gets_nothing(iris_pair, gateway_factory) -> None:
    a, b = iris_pair
    with IrisProcess("C") as c:
        gw = gateway_factory(cfg([a, b, c], weights=[100, 100, 0]), workers=1)
        results = run_load(gw.url + ATELIER, 400, concurrency=8)
        assert failures(results) == []
        counts = Counter(r[1] for r in results)  # type: ignore[index]
        assert counts == {"A": 200, "B": 200}
        assert iris_stats(c)["requests"] == 1  # only our own stats request


# -- upstream connection reuse -----------------------------------------------------------------


def test_upstream_keepalive_reuses_connections(iris_pair, gateway_factory) -> None:
    a, b = iris_pair
    gw = gateway_factory(cfg([a, b]), workers=1)
    before = accepted(a, b)
    with requests.Session() as s:
        for _ in range(300):
            r = s.get(gw.url + ATELIER, timeout=T)
            assert r.status_code == 200
    assert accepted(a, b) - before <= 4


def test_upstream_keepalive_max_requests(iris_pair, gateway_factory) -> None:
    a, b = iris_pair
    gw = gateway_factory(cfg([a, b], gateway={"upstream_keepalive_max_requests": 50}), workers=1)
    before = accepted(a, b)
    with requests.Session() as s:
        for _ in range(300):
            assert s.get(gw.url + ATELIER, timeout=T).status_code == 200
    # 150 requests per backend, 50 per connection: 3 connections each
    assert 5 <= accepted(a, b) - before <= 8


def test_upstream_keepalive_idle_timeout(iris_pair, gateway_factory) -> None:
    a, b = iris_pair
    gw = gateway_factory(cfg([a, b], gateway={"upstream_keepalive_idle_timeout": 1}), workers=1)
    with requests.Session() as s:
        for _ in range(10):
            assert s.get(gw.url + ATELIER, timeout=T).status_code == 200
        first = accepted(a, b)
        assert first <= 4
        # Idle connections live 1 s (swept at a 1 s tick): gone after 2.5 s.
        assert wait_until(lambda: iris_stats(a)["active_connections"] == 1, 4.0, 0.2)
        for _ in range(10):
            assert s.get(gw.url + ATELIER, timeout=T).status_code == 200
        assert accepted(a, b) > first


# -- backend failures ---------------------------------------------------------------------------


@pytest.mark.parametrize("workers", [1, 2])
def test_backend_killed_mid_load(iris_pair, gateway_factory, workers) -> None:
    a, b = iris_pair
    gw = gateway_factory(cfg([a, b]), workers=workers)
    assert wait_until(lambda: listening(gw) == workers, 15.0, 0.05), gw.log()
    killed_at = [0]

    def kill_a(progress: Callable[[], int]) -> None:
        assert wait_until(lambda: progress() >= 500, LOAD_TIMEOUT)
        killed_at[0] = progress()
        assert a.proc is not None
        a.proc.kill()
        a.proc.wait(5)

    # 4,000 requests: the 16 load threads hold the GIL for long stretches, and a faster
    # gateway served 1,400 requests between the kill thread's wake-up and its kill.
    results = run_load(gw.url + ATELIER, 4000, concurrency=16, during=kill_a)
    assert failures(results) == []
    assert 500 <= killed_at[0] < 3900, "the kill did not land mid-load"
    counts = Counter(r[1] for r in results)  # type: ignore[index]
    assert counts["A"] >= 200 and counts["B"] >= 1000
    # after the kill, everything comes from the survivor
    later = run_load(gw.url + ATELIER, 200, concurrency=8)
    assert failures(later) == []
    assert Counter(r[1] for r in later) == {"B": 200}  # type: ignore[index]


def test_backend_closing_idle_keepalive(gateway_factory) -> None:
    with IrisProcess("A", keepalive_timeout=1) as a:
        gw = gateway_factory(cfg([a]), workers=1)
        errors = []
        with requests.Session() as s:
            for _ in range(8):
                try:
                    r = s.get(gw.url + ATELIER, timeout=T)
                    if r.status_code != 200:
                        errors.append(r.status_code)
                except requests.RequestException as exc:
                    errors.append(exc)
                time.sleep(1.1)
        assert errors == []


# -- retries --------------------------------------------------------------------------------------


def test_get_retried_after_reset_before_response(iris_pair, gateway_factory) -> None:
    a, _ = iris_pair
    with ClosingBackend() as bad:
        gw = gateway_factory(cfg([bad.port, a]), workers=1)
        with requests.Session() as s:
            for _ in range(10):
                r = s.get(gw.url + ATELIER, timeout=T)
                assert r.status_code == 200 and backend_id(r) == "A"
        # SWRR alternates, so every other request tried the bad backend first
        assert len(bad.requests) == 5
        assert all(line.startswith(b"GET ") for line in bad.requests)


def test_post_not_retried_after_bytes_sent(iris_pair, gateway_factory) -> None:
    a, _ = iris_pair
    with ClosingBackend() as bad:
        gw = gateway_factory(cfg([bad.port, a]), workers=1)  # the first pick is target 0
        before = iris_stats(a)["requests"]
        r = requests.post(gw.url + "/_emulator/echo", data=b"x" * 1000, timeout=T)
        assert r.status_code == 502
        assert wait_until(lambda: len(bad.requests) >= 1, 2.0)
        time.sleep(0.2)
        assert len(bad.requests) == 1 and bad.requests[0].startswith(b"POST ")
        assert iris_stats(a)["requests"] == before + 1  # only the stats request itself
        assert "retrying" not in gw.log()


def test_retries_zero_disables_retry(iris_pair, gateway_factory) -> None:
    a, _ = iris_pair
    with ClosingBackend() as bad:
        gw = gateway_factory(cfg([bad.port, a], service={"retries": 0}), workers=1)
        statuses = [requests.get(gw.url + ATELIER, timeout=T).status_code for _ in range(4)]
        assert statuses == [502, 200, 502, 200]
        assert len(bad.requests) == 2


def test_post_retried_after_connect_error(iris_pair, gateway_factory) -> None:
    a, _ = iris_pair
    dead = free_port()  # nothing listens there: connection refused, nothing was sent
    gw = gateway_factory(cfg([dead, a]), workers=1)
    with requests.Session() as s:
        for i in range(6):
            body = b"%d" % i * 100
            r = s.post(gw.url + "/_emulator/echo", data=body, timeout=T)
            assert r.status_code == 200 and backend_id(r) == "A"
            assert r.json()["body_length"] == len(body)


def test_large_post_retried_after_connect_error(iris_pair, gateway_factory) -> None:
    """A body bigger than the replay buffer waits (paused) while the connect fails and is
    retried: nothing had been sent, so the whole body goes to the next target."""
    a, _ = iris_pair
    dead = free_port()
    gw = gateway_factory(cfg([dead, a]), workers=1)
    body = os.urandom(4 << 20)
    with requests.Session() as s:
        for _ in range(4):
            r = s.post(gw.url + "/_emulator/sink", data=body, timeout=T)
            assert r.status_code == 200 and backend_id(r) == "A"
            assert r.json()["received"] == len(body)


def test_chunked_post_retried_after_connect_error(iris_pair, gateway_factory) -> None:
    a, _ = iris_pair
    dead = free_port()
    gw = gateway_factory(cfg([dead, a]), workers=1)

    def gen() -> Iterator[bytes]:
        for _ in range(10):
            yield b"y" * 1000

    with requests.Session() as s:
        for _ in range(4):
            r = s.post(gw.url + "/_emulator/echo", data=gen(), timeout=T)
            assert r.status_code == 200 and backend_id(r) == "A"
            assert r.json()["body_length"] == 10000


@pytest.mark.parametrize("retries", [5, 0])
def test_stale_pooled_connection_retried(gateway_factory, retries) -> None:
    """A reused connection that dies before any response byte is retried on a fresh one,
    even with retries=0 (as nginx does for a cached keep-alive connection)."""
    with OneRequestBackend() as one:
        gw = gateway_factory(cfg([one.port], service={"retries": retries}), workers=1)
        with requests.Session() as s:
            for _ in range(20):
                r = s.get(gw.url + ATELIER, timeout=T)
                assert r.status_code == 200 and r.content == b"ok"
        assert one.answered == 20
        assert wait_until(lambda: len(one.dropped) == 19, 2.0), one.dropped


def test_backend_connection_close_not_reused(gateway_factory) -> None:
    """`Connection: close` from the backend: that connection is never pooled."""
    with OneRequestBackend(say_close=True) as one:
        gw = gateway_factory(cfg([one.port], service={"retries": 0}), workers=1)
        with requests.Session() as s:
            for _ in range(30):
                r = s.get(gw.url + ATELIER, timeout=T)
                assert r.status_code == 200 and r.content == b"ok"
                assert r.headers.get("Connection") != "close"  # the client's stays open
        assert one.answered == 30 and one.dropped == []


def test_stale_pooled_connection_post_not_resent(gateway_factory) -> None:
    with OneRequestBackend() as one:
        gw = gateway_factory(cfg([one.port]), workers=1)
        with requests.Session() as s:
            assert s.get(gw.url + ATELIER, timeout=T).status_code == 200
            r = s.post(gw.url + ATELIER, data=b"payload", timeout=T)
            assert r.status_code == 502
        assert wait_until(lambda: len(one.dropped) == 1, 2.0)
        assert one.dropped[0].startswith(b"POST ")
        time.sleep(0.2)
        assert one.answered == 1


# -- timeouts ------------------------------------------------------------------------------------


def test_read_timeout_gives_504(iris_pair, gateway_factory) -> None:
    a, _ = iris_pair
    gw = gateway_factory(cfg([a], service={"read_timeout": 300}), workers=1)
    t0 = time.monotonic()
    r = requests.get(gw.url + "/_emulator/delay/2000", timeout=T)
    elapsed = time.monotonic() - t0
    assert r.status_code == 504
    assert elapsed < 1.2
    # the gateway keeps serving, on the same backend
    assert requests.get(gw.url + ATELIER, timeout=T).status_code == 200


def test_read_timeout_retried_then_504(iris_pair, gateway_factory) -> None:
    a, b = iris_pair
    gw = gateway_factory(cfg([a, b], service={"read_timeout": 300, "retries": 1}), workers=1)
    t0 = time.monotonic()
    r = requests.get(gw.url + "/_emulator/delay/2000", timeout=T)
    assert r.status_code == 504
    assert time.monotonic() - t0 < 1.8  # two attempts of ~300 ms


def test_write_timeout_backend_not_reading(gateway_factory) -> None:
    """A backend that accepts but never reads: the upload stalls, write_timeout answers 504
    within its bound, and the client connection is not left paused (the rest of the body
    is read and dropped), so nothing hangs and the drain is not held."""
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(16)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        lsock.settimeout(0.1)
        while not stop.is_set():
            try:
                held.append(lsock.accept()[0])
            except (socket.timeout, OSError):
                pass

    acceptor = threading.Thread(target=accept, daemon=True)
    acceptor.start()
    try:
        gw = gateway_factory(
            # A streamed upload (request_buffering off): with buffering, the body would go
            # to a temp file first and the backend's stall could not reach the client.
            # write_timeout well above the 0.3 s stall the client must see: on a loaded
            # machine, filling the socket buffers can eat much of a shorter timeout.
            cfg([lsock.getsockname()[1]], service={"write_timeout": 1500, "retries": 0},
                route={"request_buffering": False}, gateway={"drain_timeout": 5}),
            workers=1,
        )
        n = 256 << 20
        piece = b"w" * 65536
        with socket.create_connection(("127.0.0.1", gw.port), timeout=T) as s:
            s.sendall(b"POST /_emulator/sink HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n" % n)
            s.settimeout(0.3)
            t0 = time.monotonic()
            sent = 0
            with pytest.raises(socket.timeout):  # back-pressure reaches the client
                while time.monotonic() - t0 < 8:
                    sent += s.send(piece)
            s.settimeout(5)
            head = s.recv(65536)
            assert head.startswith(b"HTTP/1.1 504 "), head[:200]
            assert time.monotonic() - t0 < 5.0
            # the gateway reads on: 32 MB more go through without a stall
            s.settimeout(3)
            for _ in range(512):
                s.sendall(piece)
        assert gw.stop() == 0, gw.log()
    finally:
        stop.set()
        acceptor.join(2)
        for c in held:
            c.close()
        lsock.close()


def test_connect_timeout_gives_504(iris_pair, gateway_factory) -> None:
    # A listener whose accept queue is full drops further SYNs: connect() hangs.
    a, _ = iris_pair
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(0)
    port = lsock.getsockname()[1]
    fillers = []
    try:
        for _ in range(4):
            s = socket.socket()
            s.setblocking(False)
            s.connect_ex(("127.0.0.1", port))
            fillers.append(s)
        probe = socket.socket()
        probe.settimeout(0.5)
        try:
            probe.connect(("127.0.0.1", port))
            pytest.skip("the kernel accepts past a full backlog here")
        except (socket.timeout, TimeoutError):
            pass
        finally:
            probe.close()
        gw = gateway_factory(
            cfg([port], service={"connect_timeout": 300, "retries": 0}), workers=1
        )
        t0 = time.monotonic()
        r = requests.get(gw.url + ATELIER, timeout=T)
        assert r.status_code == 504
        assert time.monotonic() - t0 < 1.5
        # with a second, healthy target the connect timeout is retried there
        reload(gw, cfg([port, a], service={"connect_timeout": 300}))
        for _ in range(4):
            r = requests.get(gw.url + ATELIER, timeout=T)
            assert r.status_code == 200 and backend_id(r) == "A"
    finally:
        for s in fillers:
            s.close()
        lsock.close()


# -- SIGHUP reload under load ---------------------------------------------------------------------


@pytest.mark.parametrize("workers", [1, 2])
def test_sighup_under_load(iris_pair, gateway_factory, workers) -> None:
    a, b = iris_pair
    configs = [
        cfg([a]),
        cfg([a, b], weights=[100, 300]),
        cfg([b, a]),
        cfg([a, b], weights=[0, 100]),
        cfg([b]),
    ]
    gw = gateway_factory(configs[0], workers=workers)
    assert wait_until(lambda: listening(gw) == workers, 15.0, 0.05), gw.log()

    def reloads(progress: Callable[[], int]) -> None:
        for i, config in enumerate(configs[1:], 1):
            assert wait_until(lambda: progress() >= i * 300, LOAD_TIMEOUT)
            # Each reload is waited for: SIGHUPs that arrive before a pending reload reads
            # the file are one reload by design (the supervisor coalesces bursts), so
            # back-to-back signals would not make one version each.
            reload(gw, config)
        # the last config (only B) is in effect once every worker acked it
        assert live_versions(gw) >= 5, gw.log()

    results = run_load(gw.url + ATELIER, 2000, concurrency=16, during=reloads)
    assert failures(results) == []
    counts = Counter(r[1] for r in results)  # type: ignore[index]
    assert counts["A"] > 0 and counts["B"] > 0
    later = run_load(gw.url + ATELIER, 100, concurrency=8)
    assert failures(later) == []
    assert Counter(r[1] for r in later) == {"B": 100}  # type: ignore[index]


def test_sighup_invalid_config_refused(iris_pair, gateway_factory) -> None:
    a, b = iris_pair
    gw = gateway_factory(cfg([a]), workers=1)
    bad = cfg([b])
    bad["services"][0]["port"] = 99999
    reload(gw, bad, wait=False)
    assert wait_until(lambda: "reload refused" in gw.log(), 5.0)
    assert "port" in gw.log()
    for _ in range(10):
        r = requests.get(gw.url + ATELIER, timeout=T)
        assert r.status_code == 200 and backend_id(r) == "A"
    # unreadable JSON too
    gw.config_path.write_text("{not json")
    gw.signal(signal.SIGHUP)
    assert wait_until(lambda: gw.log().count("reload refused") >= 2, 5.0)
    assert requests.get(gw.url + ATELIER, timeout=T).status_code == 200
    assert gw.proc is not None and gw.proc.poll() is None
    # and a valid file afterwards is taken
    reload(gw, cfg([b]))
    r = requests.get(gw.url + ATELIER, timeout=T)
    assert r.status_code == 200 and backend_id(r) == "B"


# -- SIGTERM drain --------------------------------------------------------------------------------


@pytest.mark.parametrize("workers", [1, 2])
def test_sigterm_drains_in_flight(iris_pair, gateway_factory, workers) -> None:
    a, _ = iris_pair
    gw = gateway_factory(cfg([a], gateway={"drain_timeout": 5}), workers=workers)
    assert wait_until(lambda: listening(gw) == workers, 15.0, 0.05), gw.log()
    # every worker gets an in-flight request (SO_REUSEPORT spreads the connections)
    outcome: list[Any] = []

    def slow() -> None:
        try:
            r = requests.get(gw.url + "/_emulator/delay/1500", timeout=T)
            outcome.append((r.status_code, r.headers.get("Connection")))
        except requests.RequestException as exc:
            outcome.append(exc)

    threads = [threading.Thread(target=slow) for _ in range(2 * workers)]
    for t in threads:
        t.start()
    time.sleep(0.2)
    t0 = time.monotonic()
    gw.signal(signal.SIGTERM)
    time.sleep(0.3)
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", gw.port), timeout=1).close()
    for t in threads:
        t.join(T)
    assert outcome == [(200, "close")] * len(threads)
    code = wait_exit(gw, 5 + 5)
    assert code == 0, gw.log()
    assert time.monotonic() - t0 < 5 + 3


def test_sigterm_drain_bound_enforced(iris_pair, gateway_factory) -> None:
    """A response slower than drain_timeout does not hold the exit past the bound."""
    a, _ = iris_pair
    gw = gateway_factory(cfg([a], gateway={"drain_timeout": 1}), workers=1)
    assert wait_until(lambda: listening(gw) == 1, 15.0, 0.05), gw.log()
    outcome: list[Any] = []

    def slow() -> None:
        try:
            outcome.append(requests.get(gw.url + "/_emulator/delay/10000", timeout=T).status_code)
        except requests.RequestException as exc:
            outcome.append(type(exc).__name__)

    t = threading.Thread(target=slow)
    t.start()
    assert wait_until(lambda: iris_stats(a)["active_connections"] >= 2, 3.0, 0.05)
    t0 = time.monotonic()
    gw.signal(signal.SIGTERM)
    assert wait_exit(gw, 8) == 0, gw.log()
    assert time.monotonic() - t0 < 3.5
    t.join(T)
    assert outcome == ["ConnectionError"]  # cut at the bound, not answered late


def test_sigterm_idle_exits_fast(iris_pair, gateway_factory) -> None:
    a, _ = iris_pair
    gw = gateway_factory(cfg([a], gateway={"drain_timeout": 30}), workers=1)
    with requests.Session() as s:  # an idle keep-alive client must not hold the drain
        assert s.get(gw.url + ATELIER, timeout=T).status_code == 200
        t0 = time.monotonic()
        gw.signal(signal.SIGTERM)
        assert wait_exit(gw, 10) == 0
        assert time.monotonic() - t0 < 3


# -- supervisor -----------------------------------------------------------------------------------


def listening(gw: GatewayProcess) -> int:
    """How many worker processes have logged that they listen (since the gateway started)."""
    return gw.log().count("proxy listening on")


def test_supervisor_replaces_killed_worker(iris_pair, gateway_factory) -> None:
    a, b = iris_pair
    gw = gateway_factory(cfg([a, b]), workers=2)
    workers = workers_of(gw, 2)
    assert wait_until(lambda: listening(gw) == 2, 15.0, 0.05), gw.log()
    for _ in range(20):
        r = requests.get(gw.url + ATELIER, headers={"Connection": "close"}, timeout=T)
        assert r.status_code == 200
    # No request is in flight at the kill. (With SO_REUSEPORT, connections the kernel
    # already queued on the dying worker's socket are reset with it, unless the sysctl
    # net.ipv4.tcp_migrate_req=1 hands them to a sibling; so wait until it is dead.)
    os.kill(workers[0], signal.SIGKILL)
    assert wait_until(lambda: process_gone(workers[0]), 5.0)
    errors = []
    deadline = time.monotonic() + 20
    n = 0
    while time.monotonic() < deadline and (listening(gw) < 3 or n < 100):
        try:
            r = requests.get(gw.url + ATELIER, headers={"Connection": "close"}, timeout=T)
            if r.status_code != 200:
                errors.append(r.status_code)
        except requests.RequestException as exc:
            errors.append(exc)
        n += 1
    now = children(gw.pid)
    assert len(now) == 2 and workers[0] not in now, now
    assert listening(gw) == 3, gw.log()
    assert errors == [], gw.log()
    assert "replacing it" in gw.log()
    assert gw.stop() == 0


# -- consistent hashing, least connections ------------------------------------------------------


def test_consistent_hashing_by_header(iris_pair, gateway_factory) -> None:
    a, b = iris_pair
    up = {"algorithm": "consistent-hashing", "hash_on": "header", "hash_on_header": "X-User"}
    gw = gateway_factory(cfg([a, b], upstream=up), workers=1)
    with requests.Session() as s:
        seen = {
            backend_id(s.get(gw.url + ATELIER, headers={"X-User": "alice"}, timeout=T))
            for _ in range(50)
        }
        assert len(seen) == 1
        by_user = {}
        for i in range(40):
            r = s.get(gw.url + ATELIER, headers={"X-User": f"user-{i}"}, timeout=T)
            assert r.status_code == 200
            by_user[i] = backend_id(r)
        # stable on a second pass, spread over both
        for i in range(40):
            r = s.get(gw.url + ATELIER, headers={"X-User": f"user-{i}"}, timeout=T)
            assert backend_id(r) == by_user[i]
    assert set(by_user.values()) == {"A", "B"}
    assert min(Counter(by_user.values()).values()) >= 5


def test_consistent_hashing_by_cookie(iris_pair, gateway_factory) -> None:
    a, b = iris_pair
    up = {"algorithm": "consistent-hashing", "hash_on": "cookie", "hash_on_cookie": "fgw"}
    gw = gateway_factory(cfg([a, b], upstream=up), workers=1)
    spread = set()
    for _ in range(8):
        with requests.Session() as s:
            r = s.get(gw.url + ATELIER, timeout=T)
            assert r.status_code == 200
            assert "fgw=" in r.headers.get("Set-Cookie", "")
            assert "fgw" in s.cookies
            first = backend_id(r)
            spread.add(first)
            for _ in range(10):
                r = s.get(gw.url + ATELIER, timeout=T)
                assert r.status_code == 200
                assert "fgw=" not in r.headers.get("Set-Cookie", "")
                assert backend_id(r) == first
    assert len(spread) >= 1


def test_least_connections_spread(iris_pair, gateway_factory) -> None:
    a, b = iris_pair
    gw = gateway_factory(cfg([a, b], upstream={"algorithm": "least-connections"}), workers=1)
    results = run_load(gw.url + "/_emulator/delay/50", 160, concurrency=8)
    assert failures(results) == []
    counts = Counter(r[1] for r in results)  # type: ignore[index]
    assert counts["A"] >= 40 and counts["B"] >= 40, counts


# -- connection per request ---------------------------------------------------------------------


def test_connection_close_per_request(gateway) -> None:
    ids = Counter()
    for _ in range(200):
        r = requests.get(gateway.url + ATELIER, headers={"Connection": "close"}, timeout=T)
        assert r.status_code == 200
        assert r.headers.get("Connection") == "close"
        ids[backend_id(r)] += 1
    assert ids == {"A": 100, "B": 100}


def test_raw_connection_close_per_request(gateway) -> None:
    """Raw sockets: the gateway closes after the response, and nothing is left hanging."""
    req = b"GET /api/atelier/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    for _ in range(50):
        with socket.create_connection(("127.0.0.1", gateway.port), timeout=T) as s:
            s.sendall(req)
            data = b""
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
        assert data.startswith(b"HTTP/1.1 200 ")
        head, _, body = data.partition(b"\r\n\r\n")
        length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
        assert len(body) == length


# -- clients that stall or vanish mid-request -----------------------------------------------------


def _recv_all(sock: socket.socket, bound: float) -> tuple[bytes, float]:
    t0 = time.monotonic()
    sock.settimeout(bound)
    data = b""
    try:
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    except (socket.timeout, ConnectionResetError):
        pass
    return data, time.monotonic() - t0


def test_client_body_timeout(iris_pair, gateway_factory) -> None:
    a, _ = iris_pair
    gw = gateway_factory(cfg([a], gateway={"client_body_timeout": 1}), workers=1)
    with socket.create_connection(("127.0.0.1", gw.port), timeout=T) as s:
        s.sendall(
            b"POST /_emulator/sink HTTP/1.1\r\nHost: t\r\nContent-Length: 1000\r\n\r\n" + b"x" * 10
        )
        data, elapsed = _recv_all(s, 6.0)
    assert data.startswith(b"HTTP/1.1 408 "), data
    assert 0.9 < elapsed < 3.5
    # a body that keeps coming, slowly but within the timeout between reads, is fine
    with socket.create_connection(("127.0.0.1", gw.port), timeout=T) as s:
        s.sendall(b"POST /_emulator/sink HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\n\r\n")
        for ch in b"abcd":
            time.sleep(0.6)
            s.sendall(bytes([ch]))
        s.shutdown(socket.SHUT_WR)
        data, _ = _recv_all(s, 6.0)
    assert data.startswith(b"HTTP/1.1 200 ") and data.endswith(b'{"received":4}'), data


def test_client_half_close_mid_body(iris_pair, gateway_factory) -> None:
    a, _ = iris_pair
    gw = gateway_factory(cfg([a], gateway={"drain_timeout": 5}), workers=1)
    with socket.create_connection(("127.0.0.1", gw.port), timeout=T) as s:
        s.sendall(b"POST /_emulator/sink HTTP/1.1\r\nHost: t\r\nContent-Length: 100000000\r\n\r\n")
        for _ in range(16):
            s.sendall(b"x" * 65536)
        s.shutdown(socket.SHUT_WR)  # the body can never complete now
        _, elapsed = _recv_all(s, 6.0)
    assert elapsed < 2.0
    # nothing is left behind to hold a drain
    assert wait_until(lambda: iris_stats(a)["active_connections"] == 1, 3.0, 0.1)
    t0 = time.monotonic()
    assert gw.stop() == 0
    assert time.monotonic() - t0 < 2.0


# -- failures in the middle of a response ---------------------------------------------------------


def test_backend_killed_mid_response_cuts_client(gateway_factory) -> None:
    """A body cut by the backend cannot be completed: the client connection is cut too
    (never a hang, never a silently short body on a reusable connection)."""
    with IrisProcess("K") as k:
        gw = gateway_factory(cfg([k]), workers=1)
        n = 1 << 30
        with socket.create_connection(("127.0.0.1", gw.port), timeout=T) as s:
            s.sendall(b"GET /_emulator/bytes?n=%d HTTP/1.1\r\nHost: t\r\n\r\n" % n)
            got = 0
            while got < 8 << 20:
                chunk = s.recv(1 << 20)
                assert chunk
                got += len(chunk)
            assert k.proc is not None
            k.proc.kill()
            t0 = time.monotonic()
            s.settimeout(T)
            try:
                while True:
                    chunk = s.recv(1 << 20)
                    if not chunk:
                        break
                    got += len(chunk)
            except ConnectionResetError:
                pass
            assert time.monotonic() - t0 < 5.0
        assert got < n
        assert "Traceback" not in gw.log()


def test_client_gone_mid_response_frees_backend(iris_pair, gateway_factory) -> None:
    a, _ = iris_pair
    gw = gateway_factory(cfg([a]), workers=1)
    for _ in range(3):
        with socket.create_connection(("127.0.0.1", gw.port), timeout=T) as s:
            s.sendall(b"GET /_emulator/bytes?n=%d HTTP/1.1\r\nHost: t\r\n\r\n" % (1 << 30))
            assert s.recv(65536)
    # the half-read upstream connections are closed, not pooled: the backend sees them go
    assert wait_until(lambda: iris_stats(a)["active_connections"] == 1, 5.0, 0.1)
    with requests.Session() as s:
        for _ in range(20):
            assert s.get(gw.url + ATELIER, timeout=T).status_code == 200
    assert "Traceback" not in gw.log()


def test_sighup_removes_target_with_requests_in_flight(iris_pair, gateway_factory) -> None:
    a, b = iris_pair
    gw = gateway_factory(cfg([a]), workers=1)
    outcome: list[Any] = []

    def slow() -> None:
        try:
            r = requests.get(gw.url + "/_emulator/delay/1000", timeout=T)
            outcome.append((r.status_code, backend_id(r)))
        except requests.RequestException as exc:
            outcome.append(exc)

    threads = [threading.Thread(target=slow) for _ in range(4)]
    for t in threads:
        t.start()
    assert wait_until(lambda: iris_stats(a)["active_connections"] >= 5, 3.0, 0.05)
    reload(gw, cfg([b]))
    for _ in range(10):
        r = requests.get(gw.url + ATELIER, timeout=T)
        assert r.status_code == 200 and backend_id(r) == "B"
    for t in threads:
        t.join(T)
    # in-flight requests finished on the snapshot they started with
    assert outcome == [(200, "A")] * 4
    # and the removed target's pool let its connections go once they were done
    assert wait_until(lambda: iris_stats(a)["active_connections"] == 1, 3.0, 0.1)


# -- many connections at once ------------------------------------------------------------------


def test_many_concurrent_connections(iris_pair, gateway_factory) -> None:
    """256 clients connect at once, each sends 5 keep-alive requests (raw asyncio)."""
    import asyncio

    a, b = iris_pair
    gw = gateway_factory(cfg([a, b]), workers=1)
    request = b"GET /api/atelier/ HTTP/1.1\r\nHost: t\r\n\r\n"

    async def client() -> list[int]:
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
        statuses = []
        try:
            for _ in range(5):
                writer.write(request)
                head = await reader.readuntil(b"\r\n\r\n")
                statuses.append(int(head.split(b" ", 2)[1]))
                length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
                await reader.readexactly(length)
        finally:
            writer.close()
        return statuses

    async def main() -> list[Any]:
        return await asyncio.wait_for(
            asyncio.gather(*(client() for _ in range(256)), return_exceptions=True), 60
        )

    results = asyncio.run(main())
    errors = [r for r in results if not isinstance(r, list)]
    assert errors == []
    assert all(r == [200] * 5 for r in results)
