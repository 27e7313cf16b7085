"""The access log: one JSON line per request, written off the event loop.

The proxy loop only encodes a line (orjson) and appends it to a list. Once a second (the
worker's slow sweeper tick) or when the list is long, the batch is joined and handed to
a writer thread, which does the blocking `write()` (a slow disk never stalls requests).
Each batch is one `write()` on an O_APPEND descriptor, so the lines of several workers
sharing one file never interleave. A file that was moved away (logrotate) is reopened
by path at the next batch.

Target: ``None`` (off), ``"stdout"``, or a file path (setting ``access_log``); the line
shape is fastgw's compact one or Kong's serializer (``access_log_format``; see
dataplane.logrecord). A write the disk cuts short is undone, so a full disk never leaves
a broken JSON line.

Request ids (core.http.request_id): ``X-Request-Id`` from the client when it is a plain
token, else one made of a per-worker random prefix and a counter (32 hex digits, like
Kong's): unique without a random draw per request.
"""

from __future__ import annotations

import fcntl
import logging
import os
import queue
import threading
import time

import orjson

from fastgw.dataplane.logrecord import LogRecord, fastgw_entry, kong_entry

__all__ = ["AccessLog"]

log = logging.getLogger("fastgw.accesslog")

BATCH_LINES = 2048  # hand a batch to the writer early when this many lines wait
_MAX_QUEUED_BATCHES = 256  # beyond, lines are dropped (and counted) rather than hoarded

class _Writer(threading.Thread):
    """Blocking writes of joined batches, in order, to stdout or a (reopened) file."""

    def __init__(self, target: str) -> None:
        super().__init__(name="fastgw-access-log", daemon=True)
        self.target = target
        self.batches: queue.Queue[bytes | None] = queue.Queue(_MAX_QUEUED_BATCHES)
        self.fd = -1
        self.inode = -1

    def _open(self) -> None:
        if self.target == "stdout":
            self.fd = 1
            return
        self.fd = os.open(self.target, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self.inode = os.fstat(self.fd).st_ino

    def _moved(self) -> bool:
        if self.target == "stdout":
            return False
        try:
            return os.stat(self.target).st_ino != self.inode
        except FileNotFoundError:
            return True

    def _write(self, batch: bytes) -> None:
        """Append a batch of whole lines, or nothing: a write the disk cuts short (full,
        quota) is truncated back, so the next batch never continues a broken line. The
        file lock keeps other workers appending to the same file out of that window."""
        if self.fd == 1:
            view = memoryview(batch)
            while view:
                view = view[os.write(1, view):]
            return
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        try:
            size = os.fstat(self.fd).st_size
            view = memoryview(batch)
            try:
                while view:
                    view = view[os.write(self.fd, view):]
            except OSError:
                os.ftruncate(self.fd, size)
                raise
        finally:
            fcntl.flock(self.fd, fcntl.LOCK_UN)

    def run(self) -> None:
        while True:
            batch = self.batches.get()
            if batch is None:
                break
            try:
                if self.fd < 0 or self._moved():
                    if self.fd > 1:
                        os.close(self.fd)
                    self._open()
                self._write(batch)
            except OSError as exc:
                log.error("access log %s: %s", self.target, exc)
                self.fd = -1 if self.fd > 1 else self.fd
        if self.fd > 1:
            os.close(self.fd)


class _Clock:
    """ISO-8601 UTC timestamps with milliseconds. Under load many lines share a millisecond,
    so the text is kept per millisecond and the date part per second."""

    __slots__ = ("ms", "text", "second", "prefix")

    def __init__(self) -> None:
        self.ms = -1
        self.text = ""
        self.second = -1
        self.prefix = ""

    def iso(self, now: float) -> str:
        ms = int(now * 1000)
        if ms != self.ms:
            self.ms = ms
            second = ms // 1000
            if second != self.second:
                self.second = second
                self.prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            self.text = f"{self.prefix}.{ms % 1000:03d}Z"
        return self.text


class AccessLog:
    """Lines waiting on the loop, plus the thread that writes them."""

    __slots__ = ("target", "kong_format", "redact", "lines", "dropped", "_writer", "_clock")

    def __init__(self, target: str, kong_format: bool = False, redact: bool = True) -> None:
        self.target = target
        self.kong_format = kong_format  # access_log_format: "kong" (Kong's serializer)
        self.redact = redact  # access_log_redact: credentials never reach the file
        self.lines: list[bytes] = []
        self.dropped = 0
        self._clock = _Clock()
        self._writer = _Writer(target)
        self._writer.start()

    def add(self, record: LogRecord) -> None:
        """Encode one request's line (called once per request by the exchange)."""
        if self.kong_format:
            entry = kong_entry(record, self.redact)
        else:
            entry = fastgw_entry(record, self._clock.iso(record.started_at
                                                        + record.request_ms / 1000.0))
        lines = self.lines
        lines.append(orjson.dumps(entry))
        if len(lines) >= BATCH_LINES:
            self.flush()

    def flush(self) -> None:
        """Hand what is waiting to the writer thread (never blocks the loop)."""
        lines = self.lines
        if not lines:
            return
        self.lines = []
        lines.append(b"")
        try:
            self._writer.batches.put_nowait(b"\n".join(lines))
        except queue.Full:
            self.dropped += len(lines) - 1  # the disk cannot keep up: shed, do not hoard

    def close(self, timeout: float = 5.0) -> None:
        """Flush and stop the writer (bounded wait; at drain/stop)."""
        self.flush()
        try:
            self._writer.batches.put(None, timeout=timeout)
        except queue.Full:
            return
        self._writer.join(timeout)
        if self.dropped:
            log.warning("access log %s: %d lines dropped (writer too slow)", self.target, self.dropped)
