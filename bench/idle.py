"""Idle connections: what an idle keep-alive client connection costs fastgw in memory.

`python -m bench idle --connections 10000` starts two emulators and fastgw --workers 1,
opens N client connections, sends one request on each (so each connection has gone through
the whole request path and holds whatever per-connection state that leaves behind), then
keeps them all open and idle and reads the gateway's RSS. (RSS after - RSS before) / N is
the figure; thousands of idle IRIS Studio / VS Code clients are the case this models.

File descriptors: the client needs N, and so does the gateway. We raise this process's
RLIMIT_NOFILE soft limit to its hard limit *before* starting the gateway, so the gateway
inherits it (fastgw also raises its own soft limit). When the gateway still runs out, its
accept() fails with EMFILE and requests time out; we report that explicitly, with the
gateway's limit and fd count, rather than a bare timeout.
"""

from __future__ import annotations

import asyncio
import resource
import time
from pathlib import Path
from typing import Any, Callable

from tests.support.gateway import GatewayProcess, config_for_targets
from bench.loadgen import _Client
from tests.support.procs import IrisProcess
from bench.procstat import memory_kb

__all__ = ["idle_cost", "raise_nofile", "run_idle"]


def raise_nofile() -> tuple[int, int]:
    """Soft RLIMIT_NOFILE up to the hard limit; returns the (soft, hard) now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError):
            pass
    return resource.getrlimit(resource.RLIMIT_NOFILE)


def _open_files_limit(pid: int) -> str:
    try:
        for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
            if line.startswith("Max open files"):
                return " ".join(line.split()[3:5])
    except OSError:
        pass
    return "?"


def _fd_count(pid: int) -> int:
    try:
        return len(list(Path(f"/proc/{pid}/fd").iterdir()))
    except OSError:
        return -1


async def _open_idle(port: int, n: int, parallel: int) -> tuple[list[_Client], dict[str, int]]:
    """Open n connections (at most `parallel` handshakes at once, so the listen backlog
    is not overrun) and complete one GET on each."""
    loop = asyncio.get_running_loop()
    request = b"GET /api/atelier/ HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    sem = asyncio.Semaphore(parallel)
    clients: list[_Client] = []
    failures = {"connect": 0, "timeout": 0, "closed": 0, "status": 0}

    async def one() -> None:
        async with sem:
            try:
                _, client = await asyncio.wait_for(
                    loop.create_connection(_Client, "127.0.0.1", port), 10)
            except (OSError, asyncio.TimeoutError):
                failures["connect"] += 1
                return
            client.waiter = loop.create_future()
            assert client.transport is not None
            client.transport.write(request)
            try:
                status = await asyncio.wait_for(client.waiter, 10)
            except asyncio.TimeoutError:
                failures["timeout"] += 1
                client.transport.close()
                return
            except Exception:
                failures["closed"] += 1
                return
            if status != 200:
                failures["status"] += 1
            clients.append(client)

    await asyncio.gather(*(one() for _ in range(n)))
    return clients, failures


async def _still_served(clients: list[_Client], sample: int) -> int:
    """Re-use a sample of the idle connections: the gateway must still answer on them."""
    loop = asyncio.get_running_loop()
    ok = 0
    step = max(1, len(clients) // max(1, sample))
    for client in clients[::step][:sample]:
        if client.transport is None or client.transport.is_closing():
            continue
        client.waiter = loop.create_future()
        client.transport.write(b"GET /api/atelier/ HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        try:
            if await asyncio.wait_for(client.waiter, 5) == 200:
                ok += 1
        except Exception:
            pass
    return ok


def idle_cost(port: int, roots: list[int], connections: int, *, settle: float = 2.0,
              parallel: int = 256, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Open `connections` idle keep-alive connections to the proxy on `port` (one GET each,
    then nothing) and read the RSS of the process trees `roots` before and after (any
    proxy: fastgw's supervisor and worker, nginx's master and worker)."""
    rss_before, _ = memory_kb(roots)

    async def scenario() -> tuple[int, int, dict[str, int], int, int]:
        t0 = time.monotonic()
        clients, failures = await _open_idle(port, connections, parallel)
        log(f"opened {len(clients)} idle connections in {time.monotonic() - t0:.1f} s")
        await asyncio.sleep(settle)
        rss_after, _ = memory_kb(roots)
        served = await _still_served(clients, 100)
        open_now = sum(1 for c in clients
                       if c.transport is not None and not c.transport.is_closing())
        for c in clients:
            if c.transport is not None:
                c.transport.close()
        return rss_after, len(clients), failures, served, open_now

    rss_after, ok, failures, served, open_now = asyncio.run(scenario())
    per_conn = (rss_after - rss_before) * 1024 / ok if ok else None
    return {
        "established": ok,
        "failures": failures,
        "still_open": open_now,
        "sample_still_served": served,
        "rss_before_kb": rss_before,
        "rss_after_kb": rss_after,
        "rss_per_connection_bytes": round(per_conn) if per_conn is not None else None,
    }


def run_idle(connections: int, *, settle: float = 2.0, parallel: int = 256,
             log: Callable[[str], None] = print) -> dict[str, Any]:
    soft, hard = raise_nofile()
    wanted = connections
    if connections + 64 > soft:
        connections = max(1, soft - 64)
        log(f"note: RLIMIT_NOFILE is {soft}; opening {connections} connections, not {wanted}")
    result: dict[str, Any] = {"requested": wanted, "attempted": connections,
                              "client_nofile": [soft, hard]}
    with IrisProcess("A") as a, IrisProcess("B") as b:
        config = config_for_targets([f"127.0.0.1:{a.port}", f"127.0.0.1:{b.port}"])
        with GatewayProcess(config, workers=1) as gw:
            result["gateway_nofile"] = _open_files_limit(gw.pid)
            # Touch the request path once so lazily built state is in "before", not in the delta.
            from bench.loadgen import WORKLOADS, run_load

            run_load(gw.url, WORKLOADS["get_c8"], 1)
            time.sleep(0.5)
            cost = idle_cost(gw.port, [gw.pid], connections, settle=settle, parallel=parallel,
                             log=log)
            fds = _fd_count(gw.pid)
            log_text = gw.log()
    emfile = "Too many open files" in log_text or "EMFILE" in log_text
    result.update({
        "established": cost["established"],
        "failures": cost["failures"],
        "still_open": cost["still_open"],
        "sample_still_served": cost["sample_still_served"],
        "gateway_rss_before_kb": cost["rss_before_kb"],
        "gateway_rss_after_kb": cost["rss_after_kb"],
        "gateway_rss_per_connection_bytes": cost["rss_per_connection_bytes"],
        "gateway_fds_after_close": fds,
        "gateway_emfile": emfile,
    })
    if emfile or sum(cost["failures"].values()):
        result["diagnosis"] = (
            "the gateway could not accept every connection"
            + (" (it logged EMFILE: raise its open-files limit, e.g. `ulimit -n` / LimitNOFILE)"
               if emfile else "")
            + f"; its limit: {result['gateway_nofile']}")
    return result


def format_idle(result: dict[str, Any]) -> str:
    lines = [
        f"idle keep-alive connections to fastgw --workers 1: {result['established']} of "
        f"{result['attempted']} established (failures: {result['failures']})",
        f"  gateway RSS {result['gateway_rss_before_kb'] / 1024:.1f} MiB -> "
        f"{result['gateway_rss_after_kb'] / 1024:.1f} MiB",
        f"  per idle connection: {result['gateway_rss_per_connection_bytes']} bytes",
        f"  still open after settling: {result['still_open']}; a sample of "
        f"{result['sample_still_served']} re-used connections answered 200",
        f"  open-files limits: client {result['client_nofile']}, "
        f"gateway {result['gateway_nofile']}",
    ]
    if "diagnosis" in result:
        lines.append("  PROBLEM: " + result["diagnosis"])
    return "\n".join(lines)
