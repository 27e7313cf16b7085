"""Supervisor <-> worker messages: length-prefixed orjson over one socketpair per worker.

Frame: a 4-byte big-endian payload length, then the orjson document. Every message is a
JSON object with a ``type``:

supervisor -> worker
    ``{"type": "config", "version": N, "workspaces": {name: <declarative dict>},
    "health": <a full health message, below>}``: the whole config, sent to a worker that
    starts (or asks to resync), and for changes too large for a delta or that touch node
    settings (reloads, ``POST /config``).
    ``{"type": "config", "version": N, "base": M, "changes": <fastgw.config.delta>}``:
    what changed from version M (the previous one) to N; an Admin API write is a few
    entities, whatever the size of the config. ``version`` only grows.
worker -> supervisor
    ``{"type": "ack", "version": N, "ok": true, "pid": P, "apply_ms": x}`` after version
    N is live (the first ack also means "listening"). A worker applies only the newest
    of the versions queued while it was busy, so one ack may cover several. ``"ok":
    false`` with ``"error"`` when it refused a version and kept the one it had, plus
    ``"resync": true`` when a change's ``base`` is not its version (the supervisor then
    sends the whole config).
    ``{"type": "heartbeat"}`` every ``--heartbeat`` seconds, from the worker's event loop
    (the supervisor's watchdog replaces a worker that goes silent).

health (fastgw.controlplane.prober, fastgw.dataplane.passive)
    supervisor -> worker ``{"type": "health", "seq": n, "full": bool, "upstreams":
    {upstream id: {"host:port": [healthy 0|1, weight percent]}}}``: the node's one health
    state (active probes, passive reports, manual overrides, timed ejection, slow start),
    for the upstreams that changed (``full``: all of them; sent after each spawn). Small
    and frequent: never a new config version.
    worker -> supervisor ``{"type": "passive", "events": [[upstream id, "host:port",
    [[kind, count], ...]], ...]}``: what live traffic said since the last batch, as
    ordered runs (kinds ``s`` success, ``h`` http failure, ``t`` tcp failure, ``o``
    timeout), at most every 100 ms per worker, sooner when a run reaches a limit.

metrics (fastgw.controlplane.exporter)
    supervisor -> worker ``{"type": "stats", "seq": n}``; the worker answers
    ``{"type": "stats", "seq": n, "pid": P, "final": false, ...counters}`` (the
    ``fastgw.dataplane.stats.WorkerStats`` snapshot), and sends one more with ``"final": true``
    after draining, so the node's totals keep what it served.

proxy-cache (fastgw.controlplane.cache_admin)
    supervisor -> worker ``{"type": "proxy-cache", "seq": n, "op": "flush"|"purge"|"get",
    "key": k}`` (the Admin API's ``/proxy-cache`` endpoints; each worker has its own
    cache); the worker answers ``{"type": "proxy-cache", "seq": n, "pid": P, "found":
    bool, "entry": <Kong's stored object, for "get"> | null}``.

Drain and stop stay signals (SIGTERM), as for any process; EOF on the socket means the
other side is gone (a worker whose supervisor died drains and exits).
"""

from __future__ import annotations

import asyncio
import socket
import struct
from typing import Any

import orjson

__all__ = ["Channel", "encode", "MAX_FRAME"]

_HEADER = struct.Struct("!I")
MAX_FRAME = 512 * 1024 * 1024  # a sanity bound: far above any real config


def encode(message: Any) -> bytes:
    payload = orjson.dumps(message)
    return _HEADER.pack(len(payload)) + payload


class Channel:
    """One end of a socketpair, as asyncio streams."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, sock: socket.socket) -> "Channel":
        sock.setblocking(False)
        # Snapshots can be megabytes: a larger reader limit avoids tiny read chunks.
        reader, writer = await asyncio.open_unix_connection(sock=sock, limit=1 << 20)
        return cls(reader, writer)

    async def recv(self) -> dict[str, Any] | None:
        """Next message, or None on EOF (or a broken peer)."""
        try:
            head = await self.reader.readexactly(_HEADER.size)
            (size,) = _HEADER.unpack(head)
            if size > MAX_FRAME:
                raise ValueError(f"IPC frame of {size} bytes exceeds {MAX_FRAME}")
            payload = await self.reader.readexactly(size)
        except (asyncio.IncompleteReadError, ConnectionError):
            return None
        message = orjson.loads(payload)
        if not isinstance(message, dict):
            raise ValueError("IPC message is not an object")
        return message

    def send(self, message: Any) -> None:
        """Queue a message (never blocks the loop; the transport buffers)."""
        if not self.writer.is_closing():
            self.writer.write(encode(message))

    async def drain(self) -> None:
        try:
            await self.writer.drain()
        except ConnectionError:
            pass

    def close(self) -> None:
        self.writer.close()
