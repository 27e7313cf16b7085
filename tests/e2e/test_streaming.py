"""Big transfers through the gateway with bounded memory.

1 GiB down and up (Content-Length and chunked) through a real fastgw process, read and
written by a raw-socket client in chunks, while a thread samples the gateway's VmRSS
every 100 ms. The gateway must stream (never buffer a body) and apply back-pressure both
ways, so its RSS stays within a few MB of where it started. A slow reader must not make
the gateway buffer what the backend sends.
"""

from __future__ import annotations

import socket
import threading
import time
from typing import Iterator

import orjson
import pytest

from tests.support.gateway import GatewayProcess, config_for_targets
from tests.support.procs import IrisProcess

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

GiB = 1 << 30
MB = 1 << 20
RSS_BOUND = 50 * MB
T = 30.0  # per socket operation
TRANSFER_BOUND = 60.0  # seconds for one 1 GiB transfer
SINK_HEAD = b"POST /_emulator/sink HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n"
_PATTERN = bytes(range(256)) * 4096  # 1 MiB; byte i of an emulator /bytes body is i % 256


def rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


class RssSampler:
    """Samples a process's RSS every 100 ms in a thread; `peak` is the maximum seen."""

    def __init__(self, pid: int, interval: float = 0.1) -> None:
        self.pid = pid
        self.interval = interval
        self.baseline = rss(pid)
        self.peak = self.baseline
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.peak = max(self.peak, rss(self.pid))
                self.samples += 1
            except (OSError, RuntimeError):
                return

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(2)
        self.peak = max(self.peak, rss(self.pid))

    @property
    def growth(self) -> int:
        return self.peak - self.baseline


@pytest.fixture(scope="module")
def iris() -> Iterator[IrisProcess]:
    with IrisProcess("A") as proc:
        yield proc


@pytest.fixture(scope="module")
def gw(iris: IrisProcess) -> Iterator[GatewayProcess]:
    config = config_for_targets(
        [f"127.0.0.1:{iris.port}"],
        route={"paths": ["/api/atelier", "/_emulator"]},
        gateway={"drain_timeout": 5},
    )
    with GatewayProcess(config, workers=1) as gateway:
        # Warm up: first-use allocations (parsers, buffers, pools) are not growth.
        download(gateway, 64 * MB)
        upload(gateway, 64 * MB, chunked=False)
        upload(gateway, 64 * MB, chunked=True)
        yield gateway
        # Nothing the transfers did may hold the drain: every client is gone by now.
        t0 = time.monotonic()
        assert gateway.stop() == 0, gateway.log()
        assert time.monotonic() - t0 < 2.0, gateway.log()


def worker_pid(gw: GatewayProcess) -> int:
    """The proxy worker (the supervisor's only child with --workers 1): its RSS is what
    a transfer could grow."""
    deadline = time.monotonic() + 10
    while True:
        with open(f"/proc/{gw.pid}/task/{gw.pid}/children") as f:
            pids = [int(x) for x in f.read().split()]
        if len(pids) == 1:
            return pids[0]
        assert time.monotonic() < deadline, pids
        time.sleep(0.05)


def connect(gw: GatewayProcess) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", gw.port), timeout=T)
    sock.settimeout(T)
    return sock


def read_head(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    buf = b""
    while b"\r\n\r\n" not in buf:
        data = sock.recv(65536)
        if not data:
            raise ConnectionError(f"EOF before the response head: {buf!r}")
        buf += data
    head, _, rest = buf.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return status, headers, rest


def read_body(sock: socket.socket, headers: dict[str, str], rest: bytes) -> bytes:
    """A small framed body (Content-Length or chunked)."""
    if "content-length" in headers:
        n = int(headers["content-length"])
        while len(rest) < n:
            data = sock.recv(65536)
            if not data:
                raise ConnectionError("EOF in body")
            rest += data
        return rest[:n]
    assert headers.get("transfer-encoding") == "chunked"
    while not rest.endswith(b"0\r\n\r\n"):
        data = sock.recv(65536)
        if not data:
            raise ConnectionError("EOF in chunked body")
        rest += data
    out = b""
    while True:
        size_line, _, rest = rest.partition(b"\r\n")
        size = int(size_line, 16)
        if size == 0:
            return out
        out += rest[:size]
        rest = rest[size + 2 :]


def download(gw: GatewayProcess, n: int, *, check_every: int = 64) -> int:
    """GET /_emulator/bytes?n=`n`, reading in 1 MiB pieces; returns the bytes received."""
    with connect(gw) as sock:
        sock.sendall(b"GET /_emulator/bytes?n=%d HTTP/1.1\r\nHost: t\r\n\r\n" % n)
        status, headers, rest = read_head(sock)
        assert status == 200
        assert int(headers["content-length"]) == n
        got = len(rest)
        buf = bytearray(MB)
        view = memoryview(buf)
        pieces = 0
        deadline = time.monotonic() + TRANSFER_BOUND
        while got < n:
            k = sock.recv_into(view, min(MB, n - got))
            if not k:
                break
            pieces += 1
            if pieces % check_every == 0 and k >= 256:
                # spot-check the content: byte i of the body is i % 256
                off = got % 256
                assert buf[:256] == (_PATTERN[off:] + _PATTERN[:off])[:256]
            got += k
            if time.monotonic() > deadline:
                raise TimeoutError(f"download too slow: {got} of {n} bytes")
        return got


def upload(gw: GatewayProcess, n: int, *, chunked: bool) -> int:
    """POST `n` bytes to /_emulator/sink in 1 MiB pieces; returns what the backend counted."""
    piece = b"u" * MB
    with connect(gw) as sock:
        if chunked:
            sock.sendall(
                b"POST /_emulator/sink HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
            )
            framed = b"%x\r\n" % MB + piece + b"\r\n"
        else:
            sock.sendall(SINK_HEAD % n)
            framed = piece
        sent = 0
        deadline = time.monotonic() + TRANSFER_BOUND
        while sent < n:
            k = min(MB, n - sent)
            if k == MB:
                sock.sendall(framed)
            elif chunked:
                sock.sendall(b"%x\r\n" % k + piece[:k] + b"\r\n")
            else:
                sock.sendall(piece[:k])
            sent += k
            if time.monotonic() > deadline:
                raise TimeoutError(f"upload too slow: {sent} of {n} bytes")
        if chunked:
            sock.sendall(b"0\r\n\r\n")
        status, headers, rest = read_head(sock)
        assert status == 200
        return orjson.loads(read_body(sock, headers, rest))["received"]


def test_download_1gib_bounded_memory(gw: GatewayProcess) -> None:
    t0 = time.monotonic()
    with RssSampler(worker_pid(gw)) as sampler:
        got = download(gw, GiB)
    assert got == GiB
    assert sampler.samples >= 5
    assert sampler.growth < RSS_BOUND, f"RSS grew {sampler.growth / MB:.1f} MB"
    assert time.monotonic() - t0 < TRANSFER_BOUND


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_upload_1gib_bounded_memory(gw: GatewayProcess, chunked: bool) -> None:
    with RssSampler(worker_pid(gw)) as sampler:
        received = upload(gw, GiB, chunked=chunked)
    assert received == GiB
    assert sampler.samples >= 5
    assert sampler.growth < RSS_BOUND, f"RSS grew {sampler.growth / MB:.1f} MB"


def test_slow_reader_backpressure(gw: GatewayProcess) -> None:
    """A client reading 64 KiB every 50 ms for 2 s: the gateway must not buffer the rest."""
    n = GiB
    with RssSampler(worker_pid(gw)) as sampler, connect(gw) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        sock.sendall(b"GET /_emulator/bytes?n=%d HTTP/1.1\r\nHost: t\r\n\r\n" % n)
        status, _, rest = read_head(sock)
        assert status == 200
        got = len(rest)
        end = time.monotonic() + 2.0
        while time.monotonic() < end:
            got += len(sock.recv(65536))
            time.sleep(0.05)
    # ~2.5 MB read in 2 s; unbounded buffering would have pulled hundreds of MB meanwhile
    assert got < 16 * MB
    assert sampler.growth < RSS_BOUND, f"RSS grew {sampler.growth / MB:.1f} MB"
    # the gateway is fine afterwards
    assert download(gw, 8 * MB) == 8 * MB


def test_client_gone_mid_upload(gw: GatewayProcess) -> None:
    """A client closing mid-upload: the gateway drops the exchange and keeps serving."""
    with connect(gw) as sock:
        sock.sendall(SINK_HEAD % GiB)
        for _ in range(32):
            sock.sendall(b"z" * MB)
    with connect(gw) as sock:
        sock.sendall(b"POST /_emulator/sink HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello")
        status, headers, rest = read_head(sock)
        assert status == 200
        assert b'"received":5' in read_body(sock, headers, rest)
