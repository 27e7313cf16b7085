"""file-log and http-log: Kong's log entries (dataplane.logrecord.kong_entry), written off
the request path.

file-log appends one JSON line per request to ``path`` through the access log's writer
(dataplane.accesslog: batched once a second, written by a thread, whole lines only,
reopened when the file is moved away), so a slow disk never stalls a request.

http-log queues entries in memory (at most ``queue.max_entries``; beyond, entries are
dropped and counted, never hoarded) and one task per plugin instance sends them to
``http_endpoint``: batches of up to ``queue.max_batch_size`` entries (one JSON object
when the batch size is 1, else a JSON array, as Kong), waiting at most
``queue.max_coalescing_delay`` seconds for a batch to fill. A batch the endpoint refuses
(no connection, a timeout, a status outside 2xx) is sent again after
``queue.initial_retry_delay`` seconds, doubling up to ``queue.max_retry_delay``, until
``queue.max_retry_time`` has passed; then it is dropped and logged. The request path only
appends to the queue. An ``https`` endpoint's certificate is verified against the system's
trust store (``SSL_CERT_FILE`` / ``SSL_CERT_DIR`` point elsewhere), as Kong verifies
against ``lua_ssl_trusted_certificate = system``; a user and password in the endpoint's
URL are sent as a basic-auth ``Authorization`` header and never logged.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import ssl
import time
from collections import deque
from typing import Any, Mapping
from urllib.parse import unquote, urlsplit

import orjson

from fastgw.dataplane.accesslog import AccessLog
from fastgw.dataplane.logrecord import kong_entry
from fastgw.dataplane.plugins.phases import PhasePlugin, PluginCall

__all__ = ["FileLog", "HttpLog", "HttpLogQueue"]

log = logging.getLogger("fastgw.plugins")


class FileLog(PhasePlugin):
    def __init__(self, name: str, priority: int, instance_id: str, sink: AccessLog) -> None:
        super().__init__(name, priority, instance_id)
        self.sink = sink
        self.logs = True

    def log(self, call: PluginCall, record: Any) -> None:
        self.sink.add(record)


class HttpLog(PhasePlugin):
    def __init__(self, name: str, priority: int, instance_id: str,
                 queue: HttpLogQueue) -> None:
        super().__init__(name, priority, instance_id)
        self.queue = queue
        self.logs = True

    def log(self, call: PluginCall, record: Any) -> None:
        self.queue.put(kong_entry(record))


class HttpLogQueue:
    """One http-log instance's entries and the task that sends them."""

    def __init__(self, loop: asyncio.AbstractEventLoop, config: Mapping[str, Any]) -> None:
        self.loop = loop
        self.config = config
        queue = config["queue"]
        self.batch_size = int(queue["max_batch_size"])
        self.delay = float(queue["max_coalescing_delay"])
        self.max_entries = int(queue["max_entries"])
        self.retry_time = float(queue["max_retry_time"])
        self.first_retry = float(queue["initial_retry_delay"])
        self.max_retry = float(queue["max_retry_delay"])
        url = urlsplit(config["http_endpoint"])
        https = url.scheme.lower() == "https"
        self.tls: ssl.SSLContext | None = ssl.create_default_context() if https else None
        self.host = url.hostname or ""
        self.port = url.port or (443 if https else 80)
        authority = url.netloc.rsplit("@", 1)[-1]  # without user and password
        self.endpoint = url._replace(netloc=authority).geturl()  # as logs may show it
        self.target = (url.path or "/") + (f"?{url.query}" if url.query else "")
        self.timeout = float(config["timeout"]) / 1000.0
        extra = "".join(f"{k}: {v}\r\n" for k, v in (config.get("headers") or {}).items())
        if url.username is not None:
            token = f"{unquote(url.username)}:{unquote(url.password or '')}"
            extra += f"Authorization: Basic {base64.b64encode(token.encode()).decode()}\r\n"
        self.head = (f"{config['method']} {self.target} HTTP/1.1\r\nHost: {authority}\r\n"
                     f"Content-Type: {config['content_type']}\r\nUser-Agent: fastgw\r\n"
                     f"{extra}").encode("latin-1")
        self.entries: deque[Any] = deque()
        self.dropped = 0
        self.wake = asyncio.Event()
        self.task: asyncio.Task[None] | None = None
        self.closing = False

    def put(self, entry: Any) -> None:
        """From the request path: queue one entry (never blocks, never grows unbounded)."""
        if len(self.entries) >= self.max_entries:
            self.dropped += 1
            return
        self.entries.append(entry)
        if self.task is None:
            self.task = self.loop.create_task(self._run())
        if len(self.entries) >= self.batch_size:
            self.wake.set()

    def close(self) -> None:
        """Superseded by a config change: send what is queued, then stop. Thread-safe
        (snapshots may be built off the loop)."""
        self.loop.call_soon_threadsafe(self._close)

    def _close(self) -> None:
        self.closing = True
        self.wake.set()

    async def _run(self) -> None:
        while True:
            if len(self.entries) < self.batch_size and not self.closing:
                self.wake.clear()
                try:
                    await asyncio.wait_for(self.wake.wait(), self.delay or None)
                except asyncio.TimeoutError:
                    pass
            if not self.entries:
                if self.closing:
                    return
                continue
            batch = [self.entries.popleft()
                     for _ in range(min(self.batch_size, len(self.entries)))]
            await self._deliver(batch)
            if self.dropped:
                log.warning("http-log %s: %d entries dropped (queue full)",
                            self.endpoint, self.dropped)
                self.dropped = 0

    async def _deliver(self, batch: list[Any]) -> None:
        body = orjson.dumps(batch[0] if self.batch_size == 1 else batch)
        deadline = time.monotonic() + self.retry_time
        delay = self.first_retry
        while True:
            try:
                status = await asyncio.wait_for(self._send(body), self.timeout)
                if 200 <= status < 300:
                    return
                why = f"status {status}"
            except (OSError, asyncio.TimeoutError, ValueError) as exc:
                why = str(exc) or type(exc).__name__
            if time.monotonic() + delay > deadline:
                log.error("http-log %s: %d entries dropped after retrying for %ss (%s)",
                          self.endpoint, len(batch), self.retry_time, why)
                return
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.max_retry)

    async def _send(self, body: bytes) -> int:
        """One POST on a new connection; the response's status."""
        reader, writer = await asyncio.open_connection(self.host, self.port, ssl=self.tls)
        try:
            writer.write(self.head + b"Content-Length: %d\r\nConnection: close\r\n\r\n"
                         % len(body) + body)
            await writer.drain()
            line = await reader.readline()
            parts = line.split(None, 2)
            if len(parts) < 2 or not parts[1].isdigit():
                raise ValueError(f"bad response {line[:40]!r}")
            return int(parts[1])
        finally:
            writer.close()
