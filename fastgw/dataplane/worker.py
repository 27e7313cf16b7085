"""A proxy worker process: ``python -m fastgw worker --ipc-fd N --heartbeat S``.

Started by the supervisor as a fresh interpreter (never forked from a process with a
running event loop), with one end of a socketpair as fd N. It waits for the first config
snapshot, decodes it off the loop, binds its own SO_REUSEPORT socket on ``proxy_listen``,
acks, and then hands every later config message to a ``Reconfigurer``
(``fastgw.dataplane.reconfigure``), which applies changes without stalling the proxy loop.
It never reads config.json and never talks to clients about configuration.

From its first instruction until it exits, the worker sends a ``heartbeat`` every ``S``
seconds from its event loop: a loop that stops turning (a hang, SIGSTOP, a runaway
callback) stops the heartbeats, and the supervisor's watchdog replaces the worker.

SIGTERM/SIGINT drain and exit 0; SIGHUP is ignored from the first instruction on
(``fastgw.__main__``; the supervisor reloads and pushes); EOF on the IPC socket means the
supervisor is gone, so the worker drains and exits rather than serve a config nobody can
change.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
import socket
import time
from typing import Any, Callable

from fastgw.build import describe
from fastgw.config import ConfigError
from fastgw.core.plugins.proxycache import ResponseCache
from fastgw.dataplane.ipc import Channel
from fastgw.dataplane.reconfigure import Reconfigurer, config_from_snapshot
from fastgw.dataplane.server import ProxyServer, install_uvloop
from fastgw.dataplane.tls import CertPair

__all__ = ["Heartbeat", "Worker", "main", "stats_reply", "cache_reply"]

log = logging.getLogger("fastgw.worker")

STATS_PUSH_INTERVAL = 1.0  # seconds between unasked stats messages


class Heartbeat:
    """``{"type": "heartbeat"}`` every ``interval`` seconds, sent by the event loop itself
    (so it stops when the loop stops turning); ``interval <= 0`` sends none."""

    MESSAGE = {"type": "heartbeat"}

    def __init__(self, loop: asyncio.AbstractEventLoop, send: Callable[[dict[str, Any]], None],
                 interval: float) -> None:
        self.loop = loop
        self.send = send
        self.interval = interval
        self._handle: asyncio.TimerHandle | None = None

    def start(self) -> None:
        if self.interval > 0:
            self._beat()

    def _beat(self) -> None:
        self.send(self.MESSAGE)
        self._handle = self.loop.call_later(self.interval, self._beat)

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None


class Worker:
    def __init__(self, sock: socket.socket, heartbeat: float) -> None:
        self.sock = sock
        self.heartbeat = heartbeat
        self.server: ProxyServer | None = None
        self.stop = asyncio.Event()

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        channel = await Channel.open(self.sock)
        heartbeat = Heartbeat(loop, channel.send, self.heartbeat)
        heartbeat.start()
        try:
            return await self._serve(loop, channel)
        finally:
            heartbeat.stop()

    async def _serve(self, loop: asyncio.AbstractEventLoop, channel: Channel) -> int:
        first = await channel.recv()
        if first is None or first.get("type") != "config":
            log.error("worker %d: no initial config from the supervisor", os.getpid())
            return 1
        version = int(first.get("version", 0))
        try:
            # Off the loop: a large config takes a second to decode, and the heartbeats
            # must keep going meanwhile.
            config = await loop.run_in_executor(None, config_from_snapshot, first)
        except ConfigError as exc:
            log.error("worker %d: initial config refused: %s", os.getpid(), exc)
            channel.send({"type": "ack", "version": version, "ok": False,
                          "pid": os.getpid(), "error": str(exc)})
            await channel.drain()
            return 1
        tls = first.get("tls")  # the ssl listeners' default certificate, the ticket keys
        default = CertPair(tls["cert"], tls["key"]) if isinstance(tls, dict) else None
        keys = bytes.fromhex(tls["ticket_keys"]) if isinstance(tls, dict) else None
        self.server = server = ProxyServer(config, loop, default, keys)
        await server.start()  # binds our own SO_REUSEPORT socket
        server.health.attach(channel.send)  # passive health batches go upstream
        health = first.get("health")
        if isinstance(health, dict):
            server.health.update(health)
        for host, port, https in server.listening:
            log.info("worker %d proxy listening on %s:%d%s", os.getpid(), host, port,
                     " ssl" if https else "")
        log.info("worker %d fastgw build: %s", os.getpid(), describe())
        reconfigurer = Reconfigurer(server, config, version, channel.send)
        channel.send({"type": "ack", "version": version, "ok": True, "pid": os.getpid(),
                      "apply_ms": 0.0})
        # Everything allocated so far (modules, the config, the router) lives as long as
        # the worker: keep it out of the collector's full scans.
        gc.freeze()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stop.set)

        receiver = asyncio.ensure_future(self._receive(channel, reconfigurer))
        stopper = asyncio.ensure_future(self.stop.wait())
        pusher = asyncio.ensure_future(self._push_stats(channel))
        await asyncio.wait({receiver, stopper}, return_when=asyncio.FIRST_COMPLETED)
        receiver.cancel()
        stopper.cancel()
        pusher.cancel()
        await reconfigurer.close()
        timeout = float(server.settings.drain_timeout)
        log.info("worker %d draining (up to %ss)", os.getpid(), timeout)
        await server.drain(timeout)
        # Last counters, so the node's totals keep what this worker served.
        channel.send(stats_reply(server, {}, final=True))
        await channel.drain()
        channel.close()
        return 0

    async def _push_stats(self, channel: Channel) -> None:
        """Counters to the supervisor every STATS_PUSH_INTERVAL, unasked: a worker killed
        with SIGKILL (no final message) then loses at most that much of its counts."""
        assert self.server is not None
        while True:
            await asyncio.sleep(STATS_PUSH_INTERVAL)
            channel.send(stats_reply(self.server, {}))

    async def _receive(self, channel: Channel, reconfigurer: Reconfigurer) -> None:
        """Dispatch the supervisor's messages; never waits on a config change."""
        server = self.server
        assert server is not None
        while True:
            message = await channel.recv()
            if message is None:
                log.warning("worker %d: supervisor gone, stopping", os.getpid())
                return
            kind = message.get("type")
            if kind == "stats":
                channel.send(stats_reply(server, message))
            elif kind == "health":
                server.health.update(message)  # node health (fastgw.controlplane.prober)
            elif kind == "config":
                reconfigurer.submit(message)
            elif kind == "proxy-cache":
                channel.send(cache_reply(server.plugin_runtime.response_cache, message))


def cache_reply(cache: ResponseCache, request: dict[str, Any]) -> dict[str, Any]:
    """The worker's answer to a ``proxy-cache`` message (Admin API purges and look-ups)."""
    op = request.get("op")
    key = request.get("key")
    found = False
    entry: dict[str, Any] | None = None
    if op == "flush":
        found = cache.flush() > 0
    elif isinstance(key, str):
        hit = cache.get(key, time.time())
        found = hit is not None
        if hit is not None:
            if op == "purge":
                cache.purge(key)
            else:
                entry = hit.metadata()
    return {"type": "proxy-cache", "seq": request.get("seq"), "pid": os.getpid(),
            "found": found, "entry": entry}


def stats_reply(server: ProxyServer, request: dict[str, Any], *,
                final: bool = False) -> dict[str, Any]:
    """The worker's answer to a ``stats`` message (also sent unasked when it drains)."""
    return {"type": "stats", "seq": request.get("seq"), "pid": os.getpid(), "final": final,
            **server.stats_snapshot()}


def main(ipc_fd: int, heartbeat: float = 1.0) -> int:
    install_uvloop()
    sock = socket.socket(fileno=ipc_fd)
    try:
        return asyncio.run(Worker(sock, heartbeat).run())
    except OSError as exc:
        log.error("worker %d cannot start: %s", os.getpid(), exc)
        return 1
