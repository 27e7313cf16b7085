"""Open-loop GETs at a fixed rate, each latency measured from its *scheduled* send time.

    python -m bench.paced_load --port 8000 --rate 400 --connections 8 --duration 20

Each of ``connections`` keep-alive connections sends one request every
``connections / rate`` seconds. A request that could not be sent on time (the previous
answer on its connection was late) still counts from when it should have gone out, so a
stall shows up in every request it delayed (no coordinated omission). It stops after
``duration`` seconds, or earlier when its stdin is closed (how a caller ends a run whose
length it does not know in advance). Prints one JSON
document on stdout: ``{"samples": [[scheduled monotonic time, latency ms, status], ...]}``;
``time.monotonic()`` is system-wide on Linux, so the caller can line the samples up with
its own events. Status 0 is a transport error or a timeout.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Sequence

import orjson

from bench.loadgen import _Client

__all__ = ["main"]


async def _run(port: int, path: str, rate: float, connections: int, duration: float,
               start_at: float) -> list[list[float]]:
    loop = asyncio.get_running_loop()
    request = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode()
    interval = connections / rate
    samples: list[list[float]] = []

    async def one(offset: float) -> None:
        client: _Client | None = None
        due = start_at + offset
        end = start_at + duration
        while due < end:
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            status = 0
            try:
                if client is None or client.transport is None or client.transport.is_closing():
                    _, client = await loop.create_connection(_Client, "127.0.0.1", port)
                client.waiter = loop.create_future()
                assert client.transport is not None
                client.transport.write(request)
                status = await asyncio.wait_for(client.waiter, 10.0)
            except (TimeoutError, OSError, ConnectionError):
                if client is not None and client.transport is not None:
                    client.transport.close()
                client = None
            samples.append([due, (time.monotonic() - due) * 1000, status])
            due += interval
        if client is not None and client.transport is not None:
            client.transport.close()

    runs = asyncio.gather(*(one(i * interval / connections) for i in range(connections)))
    closed: asyncio.Future[None] = loop.create_future()

    class _StdinWatch(asyncio.Protocol):
        def connection_lost(self, exc: Exception | None) -> None:
            if not closed.done():
                closed.set_result(None)

    await loop.connect_read_pipe(_StdinWatch, sys.stdin)
    await asyncio.wait([runs, closed], return_when=asyncio.FIRST_COMPLETED)
    runs.cancel()
    try:
        await runs
    except asyncio.CancelledError:
        pass
    return samples


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.paced_load",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--path", default="/api/atelier/")
    p.add_argument("--rate", type=float, default=400.0, help="requests per second, all connections")
    p.add_argument("--connections", type=int, default=8)
    p.add_argument("--duration", type=float, required=True, help="seconds")
    p.add_argument("--start-at", type=float, default=0.0,
                   help="time.monotonic() of the first send (default: now)")
    args = p.parse_args(argv)
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # pragma: no cover - a fastgw dependency
        pass
    start = args.start_at or time.monotonic()
    samples = asyncio.run(_run(args.port, args.path, args.rate, args.connections,
                               args.duration, start))
    sys.stdout.buffer.write(orjson.dumps({"samples": samples}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
