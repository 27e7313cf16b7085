"""Load generators: wrk when installed, else a small built-in asyncio one. Same result shape.

wrk is preferred: it is C, costs little CPU per request (the box has only 2 cores, shared
with the proxy and the backends), and its latency histogram is exact. We read its numbers
through a Lua `done` hook that prints one JSON line (marker `WRKJSON`), which is sturdier
than scraping the human-readable `--latency` text.

The built-in generator (`python -m bench.loadgen URL ...`, run as a subprocess so it has its
own core-time and does not share the harness's GIL) keeps `concurrency` keep-alive
connections busy for `duration` seconds, one request in flight per connection, and records
every latency. It costs far more CPU than wrk, so requests/s are lower with it; CPU time per
request of the proxy stays comparable. Reports name the generator used.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from typing import Sequence
from urllib.parse import urlsplit

__all__ = ["Workload", "WORKLOADS", "LoadResult", "run_load", "loadgen_name"]


@dataclass(frozen=True)
class Workload:
    name: str
    path: str
    concurrency: int
    method: str = "GET"
    body_size: int = 0  # request body bytes (POST)
    close: bool = False  # `Connection: close`: a new connection per request
    emulator_only: bool = False  # needs the emulator's /_emulator/ endpoints
    description: str = ""


MIB = 1 << 20
WORKLOADS: dict[str, Workload] = {
    w.name: w
    for w in (
        Workload("get_c1", "/api/atelier/", 1, description="keep-alive small GET, c=1"),
        Workload("get_c8", "/api/atelier/", 8, description="keep-alive small GET, c=8"),
        Workload("get_c64", "/api/atelier/", 64, description="keep-alive small GET, c=64"),
        Workload("get_c512", "/api/atelier/", 512, description="keep-alive small GET, c=512"),
        Workload("bytes_1m", f"/_emulator/bytes?n={MIB}", 8, emulator_only=True,
                 description="1 MiB response, c=8"),
        Workload("post_1m", "/_emulator/sink", 8, method="POST", body_size=MIB,
                 emulator_only=True, description="1 MiB POST body, c=8"),
        Workload("get_close", "/api/atelier/", 16, close=True,
                 description="small GET, Connection: close (new connection per request), c=16"),
    )
}


@dataclass
class LoadResult:
    tool: str
    requests: int
    duration_s: float
    bytes: int = 0
    non2xx: int = 0
    errors: dict[str, int] = field(default_factory=dict)  # connect/read/write/timeout
    latency_us: dict[str, float] = field(default_factory=dict)  # p50/p90/p99/max/mean

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())

    @property
    def rps(self) -> float:
        return self.requests / self.duration_s if self.duration_s > 0 else 0.0


def loadgen_name() -> str:
    """'wrk <version>' when wrk is on PATH, else 'builtin'."""
    wrk = shutil.which("wrk")
    if wrk is None:
        return "builtin"
    out = subprocess.run([wrk, "--version"], capture_output=True, text=True, timeout=5)
    first = (out.stdout or out.stderr).splitlines()[:1]
    return first[0].split(" Copyright")[0].strip() if first else "wrk"


# -- wrk ---------------------------------------------------------------------------------

_WRK_DONE = r"""
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests":%d,"duration_us":%d,"bytes":%d,"connect":%d,"read":%d,' ..
    '"write":%d,"status":%d,"timeout":%d,"p50":%d,"p90":%d,"p99":%d,"max":%d,"mean":%.1f}\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status,
    e.timeout, latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.max, latency.mean))
end
"""
_WRK_LINE = re.compile(r"^WRKJSON (\{.*\})\s*$", re.M)


def wrk_script(workload: Workload) -> str:
    lines = []
    if workload.method != "GET":
        lines.append(f'wrk.method = "{workload.method}"')
    if workload.body_size:
        # One Lua string built once per thread; wrk sends it with every request.
        lines.append(f"wrk.body = string.rep(\"x\", {workload.body_size})")
        lines.append('wrk.headers["Content-Type"] = "application/octet-stream"')
    return "\n".join(lines) + _WRK_DONE


def run_wrk(url: str, workload: Workload, duration: int, headers: Sequence[str]) -> LoadResult:
    with tempfile.NamedTemporaryFile("w", suffix=".lua", prefix="bench-wrk-", delete=False) as f:
        f.write(wrk_script(workload))
        script = f.name
    args = ["wrk", "-t1", f"-c{workload.concurrency}", f"-d{duration}s", "--timeout", "10s",
            "-s", script]
    for header in headers:
        args += ["-H", header]
    if workload.close:
        args += ["-H", "Connection: close"]
    args.append(url + workload.path)
    try:
        out = subprocess.run(args, capture_output=True, text=True, timeout=duration + 30)
    finally:
        os.unlink(script)
    m = _WRK_LINE.search(out.stdout)
    if m is None:
        raise RuntimeError(f"wrk gave no result (rc={out.returncode}):\n{out.stdout}\n{out.stderr}")
    d = json.loads(m.group(1))
    return LoadResult(
        tool="wrk",
        requests=d["requests"],
        duration_s=d["duration_us"] / 1e6,
        bytes=d["bytes"],
        non2xx=d["status"],  # wrk counts status > 399 here
        errors={k: d[k] for k in ("connect", "read", "write", "timeout")},
        latency_us={k: float(d[k]) for k in ("p50", "p90", "p99", "max", "mean")},
    )


# -- built-in ------------------------------------------------------------------------------

def run_builtin(url: str, workload: Workload, duration: int, headers: Sequence[str]) -> LoadResult:
    args = [sys.executable, "-m", "bench.loadgen", url + workload.path,
            "-c", str(workload.concurrency), "-d", str(duration), "-m", workload.method,
            "--body-size", str(workload.body_size)]
    for header in headers:
        args += ["-H", header]
    if workload.close:
        args.append("--close")
    env = dict(os.environ)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
    out = subprocess.run(args, capture_output=True, text=True, timeout=duration + 60, env=env)
    if out.returncode != 0:
        raise RuntimeError(f"builtin loadgen failed:\n{out.stderr}")
    return LoadResult(**json.loads(out.stdout.strip().splitlines()[-1]))


def run_load(url: str, workload: Workload, duration: int, headers: Sequence[str] = (),
             tool: str | None = None) -> LoadResult:
    tool = tool or ("wrk" if shutil.which("wrk") else "builtin")
    runner = run_wrk if tool == "wrk" else run_builtin
    return runner(url, workload, duration, headers)


class _Client(asyncio.Protocol):
    """One keep-alive connection: write a request, wait for its response to complete."""

    def __init__(self) -> None:
        import httptools  # a fastgw dependency, so always present where this runs

        self.parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.waiter: asyncio.Future[int] | None = None
        self.nbytes = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.nbytes += len(data)
        try:
            self.parser.feed_data(data)
        except Exception as exc:  # malformed response: fail this request
            if self.waiter is not None and not self.waiter.done():
                self.waiter.set_exception(exc)

    def on_message_complete(self) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(self.parser.get_status_code())

    def connection_lost(self, exc: Exception | None) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ConnectionError("closed before the response completed"))


async def _generate(url: str, concurrency: int, duration: float, method: str, body_size: int,
                    headers: Sequence[str], close: bool) -> dict[str, object]:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    head = [f"{method} {target} HTTP/1.1", f"Host: {parts.netloc}", *headers]
    if close:
        head.append("Connection: close")
    if body_size:
        head += [f"Content-Length: {body_size}", "Content-Type: application/octet-stream"]
    request = ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + b"x" * body_size
    loop = asyncio.get_running_loop()
    latencies: list[int] = []
    errors = {"connect": 0, "read": 0, "write": 0, "timeout": 0}
    counters = {"non2xx": 0, "bytes": 0}
    deadline = time.monotonic() + duration

    async def one_connection() -> None:
        client: _Client | None = None
        while time.monotonic() < deadline:
            if client is None or client.transport is None or client.transport.is_closing():
                try:
                    _, client = await loop.create_connection(_Client, host, port)
                except OSError:
                    errors["connect"] += 1
                    await asyncio.sleep(0.01)
                    continue
            client.waiter = loop.create_future()
            before = client.nbytes
            t0 = time.perf_counter_ns()
            assert client.transport is not None
            client.transport.write(request)
            try:
                status = await asyncio.wait_for(client.waiter, 10.0)
            except asyncio.TimeoutError:
                errors["timeout"] += 1
                client.transport.close()
                client = None
                continue
            except Exception:
                errors["read"] += 1
                client = None
                continue
            latencies.append(time.perf_counter_ns() - t0)
            counters["bytes"] += client.nbytes - before
            if status > 399:  # same rule as wrk's "Non-2xx or 3xx responses"
                counters["non2xx"] += 1
            if close or not client.parser.should_keep_alive():
                client.transport.close()
                client = None
        if client is not None and client.transport is not None:
            client.transport.close()

    started = time.monotonic()
    await asyncio.gather(*(one_connection() for _ in range(concurrency)))
    elapsed = time.monotonic() - started
    latencies.sort()

    def pct(p: float) -> float:
        if not latencies:
            return 0.0
        return latencies[min(len(latencies) - 1, int(len(latencies) * p / 100))] / 1000

    lat = {"p50": pct(50), "p90": pct(90), "p99": pct(99),
           "max": latencies[-1] / 1000 if latencies else 0.0,
           "mean": sum(latencies) / len(latencies) / 1000 if latencies else 0.0}
    return asdict(LoadResult("builtin", len(latencies), elapsed, counters["bytes"],
                             counters["non2xx"], errors, lat))


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.loadgen",
                                description="built-in keep-alive HTTP/1.1 load generator")
    p.add_argument("url")
    p.add_argument("-c", "--concurrency", type=int, default=64)
    p.add_argument("-d", "--duration", type=float, default=5.0)
    p.add_argument("-m", "--method", default="GET")
    p.add_argument("--body-size", type=int, default=0)
    p.add_argument("-H", "--header", action="append", default=[])
    p.add_argument("--close", action="store_true", help="Connection: close on every request")
    args = p.parse_args(argv)
    try:
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ImportError, ValueError, OSError):
        pass
    try:
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    except ImportError:
        pass
    result = asyncio.run(_generate(args.url, args.concurrency, args.duration, args.method,
                                   args.body_size, args.header, args.close))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
