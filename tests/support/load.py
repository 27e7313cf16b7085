"""A small keep-alive HTTP load driver for end-to-end tests, in a background thread.

``Load`` keeps ``concurrency`` connections busy with GETs (one in flight on each), until
``total`` requests are done or ``stop()``; it records every outcome: status, the backend
that answered (``X-Iris-Id``), and transport errors (a failed client request). A
connection the gateway closes is reopened; a request that dies with it counts as failed.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from typing import Callable

import httptools


class _Response:
    def __init__(self) -> None:
        self.status = 0
        self.iris: str | None = None
        self.body = b""
        self.done = False
        self.keep_alive = True

    def on_header(self, name: bytes, value: bytes) -> None:
        if name.lower() == b"x-iris-id":
            self.iris = value.decode()

    def on_body(self, body: bytes) -> None:
        self.body += body

    def on_message_complete(self) -> None:
        self.done = True


class Load:
    def __init__(self, port: int, path: str = "/api/atelier/", *, concurrency: int = 16,
                 total: int | None = 2000, headers: Callable[[int], dict[str, str]] | None = None,
                 timeout: float = 5.0) -> None:
        self.port = port
        self.path = path
        self.concurrency = concurrency
        self.total = total
        self.headers = headers or (lambda i: {})
        self.timeout = timeout
        self.statuses: Counter[int] = Counter()
        self.backends: Counter[str] = Counter()
        self.errors: list[str] = []
        self.bodies: Counter[bytes] = Counter()  # bodies of non-2xx answers
        # (monotonic time the request was sent, backend, status, request index);
        # status 0 = transport error
        self.log: list[tuple[float, str | None, int, int]] = []
        self._issued = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._main, daemon=True)

    # -- control ---------------------------------------------------------------------
    def start(self) -> Load:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def join(self, timeout: float = 60.0) -> Load:
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "load did not finish in time"
        return self

    @property
    def done(self) -> int:
        return len(self.log)

    @property
    def failed(self) -> int:
        """Transport errors plus 5xx answers: what a client sees as a failure."""
        return len(self.errors) + sum(n for s, n in self.statuses.items() if s >= 500)

    def since(self, t: float) -> Counter[str | None]:
        """Who answered the requests sent at or after ``t``."""
        return Counter(b for when, b, _, _ in self.log if when >= t)

    def wait_done(self, n: int, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while self.done < n:
            assert time.monotonic() < deadline, f"only {self.done} of {n} requests done"
            time.sleep(0.01)

    # -- the loop --------------------------------------------------------------------
    def _main(self) -> None:
        asyncio.run(self._run())

    async def _run(self) -> None:
        await asyncio.gather(*(self._connection() for _ in range(self.concurrency)))

    def _next(self) -> int | None:
        if self._stop.is_set() or (self.total is not None and self._issued >= self.total):
            return None
        self._issued += 1
        return self._issued - 1

    async def _connection(self) -> None:
        writer: asyncio.StreamWriter | None = None
        reader: asyncio.StreamReader | None = None
        while (i := self._next()) is not None:
            sent = time.monotonic()
            try:
                if writer is None:
                    reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
                assert reader is not None
                extra = "".join(f"{k}: {v}\r\n" for k, v in self.headers(i).items())
                writer.write(f"GET {self.path} HTTP/1.1\r\nHost: gw\r\n{extra}\r\n".encode())
                resp = _Response()
                parser = httptools.HttpResponseParser(resp)
                async with asyncio.timeout(self.timeout):
                    while not resp.done:
                        data = await reader.read(65536)
                        if not data:
                            raise ConnectionError("closed before the response ended")
                        parser.feed_data(data)
                resp.status = parser.get_status_code()
                self.statuses[resp.status] += 1
                if resp.iris:
                    self.backends[resp.iris] += 1
                if resp.status >= 400:
                    self.bodies[resp.body] += 1
                self.log.append((sent, resp.iris, resp.status, i))
                if not parser.should_keep_alive():
                    writer.close()
                    writer = None
            except (OSError, TimeoutError, ConnectionError, httptools.HttpParserError) as exc:
                self.errors.append(f"request {i}: {exc!r}")
                self.log.append((sent, None, 0, i))
                if writer is not None:
                    writer.close()
                writer = None
        if writer is not None:
            writer.close()
