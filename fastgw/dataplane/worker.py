"""A proxy worker process: ``python -m fastgw worker --ipc-fd N``.

Started by the supervisor as a fresh interpreter (never forked from a process with a
running event loop), with one end of a socketpair as fd N. It waits for the first config
snapshot, binds its own SO_REUSEPORT socket on ``proxy_listen``, acks, and then applies
every newer snapshot it receives with ``ProxyServer.apply`` (an atomic reference swap:
in-flight exchanges finish on the plan they started with, pools of unchanged targets
survive). It never reads config.json and never talks to clients about configuration.

SIGTERM/SIGINT drain and exit 0; SIGHUP is ignored (the supervisor reloads and pushes);
EOF on the IPC socket means the supervisor is gone, so the worker drains and exits
rather than serve a config nobody can change.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
import socket
import time
from typing import Any

from fastgw.config import ConfigError, load_declarative
from fastgw.config.model import Config
from fastgw.config.workspaces import merge_configs
from fastgw.build import describe
from fastgw.dataplane.ipc import Channel
from fastgw.dataplane.server import ProxyServer, install_uvloop
from fastgw.dataplane.tls import CertPair

__all__ = ["config_from_snapshot", "Worker", "main"]

log = logging.getLogger("fastgw.worker")


STATS_PUSH_INTERVAL = 1.0  # seconds between unasked stats messages


def config_from_snapshot(message: dict[str, Any]) -> Config:
    """The merged data-plane Config of a ``config`` message. Raises ConfigError.

    The supervisor already validated it; loading again here is what turns the JSON back
    into entities (and keeps the worker from trusting a malformed frame blindly). No env
    and no overrides: the ``gateway`` dicts carry the effective settings already.
    """
    workspaces = message.get("workspaces")
    if not isinstance(workspaces, dict) or not workspaces:
        raise ConfigError([("", "snapshot without workspaces")])
    return merge_configs(load_declarative(doc, env=None) for doc in workspaces.values())


class Worker:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.server: ProxyServer | None = None
        self.version = 0
        self.stop = asyncio.Event()

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        channel = await Channel.open(self.sock)
        first = await channel.recv()
        if first is None or first.get("type") != "config":
            log.error("worker %d: no initial config from the supervisor", os.getpid())
            return 1
        try:
            config = config_from_snapshot(first)
        except ConfigError as exc:
            log.error("worker %d: initial config refused: %s", os.getpid(), exc)
            channel.send({"type": "ack", "version": first.get("version"), "ok": False,
                          "pid": os.getpid(), "error": str(exc)})
            await channel.drain()
            return 1
        tls = first.get("tls")
        default = CertPair(tls["cert"], tls["key"]) if isinstance(tls, dict) else None
        keys = bytes.fromhex(tls["ticket_keys"]) if isinstance(tls, dict) else None
        self.server = ProxyServer(config, loop, default, keys)
        await self.server.start()  # binds our own SO_REUSEPORT socket
        self.server.health.attach(channel.send)  # passive health batches go upstream
        self._set_health(first)
        self.version = int(first.get("version", 0))
        for host, port, https in self.server.listening:
            log.info("worker %d proxy listening on %s:%d%s", os.getpid(), host, port,
                     " ssl" if https else "")
        log.info("worker %d fastgw build: %s", os.getpid(), describe())
        channel.send({"type": "ack", "version": self.version, "ok": True, "pid": os.getpid(),
                      "apply_ms": 0.0})
        # Everything allocated so far (modules, the config, the router) lives as long as
        # the worker: keep it out of the collector's full scans.
        gc.freeze()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stop.set)
        loop.add_signal_handler(signal.SIGHUP, lambda: None)

        receiver = asyncio.ensure_future(self._receive(channel))
        stopper = asyncio.ensure_future(self.stop.wait())
        pusher = asyncio.ensure_future(self._push_stats(channel))
        await asyncio.wait({receiver, stopper}, return_when=asyncio.FIRST_COMPLETED)
        receiver.cancel()
        stopper.cancel()
        pusher.cancel()
        timeout = float(self.server.settings.drain_timeout)
        log.info("worker %d draining (up to %ss)", os.getpid(), timeout)
        await self.server.drain(timeout)
        # Last counters, so the node's totals keep what this worker served.
        channel.send(stats_reply(self.server, {}, final=True))
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

    async def _receive(self, channel: Channel) -> None:
        assert self.server is not None
        while True:
            message = await channel.recv()
            if message is None:
                log.warning("worker %d: supervisor gone, stopping", os.getpid())
                return
            if message.get("type") == "stats":
                channel.send(stats_reply(self.server, message))
                continue
            if message.get("type") == "health":
                self.server.health.update(message)  # node health (fastgw.controlplane.prober)
                continue
            if message.get("type") != "config":
                continue
            version = int(message.get("version", 0))
            if version <= self.version:
                continue  # stale or duplicate: snapshots are whole, the newest wins
            started = time.perf_counter()
            try:
                config = config_from_snapshot(message)
            except ConfigError as exc:
                log.error("worker %d: snapshot %d refused: %s", os.getpid(), version, exc)
                channel.send({"type": "ack", "version": version, "ok": False,
                              "pid": os.getpid(), "error": str(exc)})
                continue
            self.server.apply(config)
            self._set_health(message)
            self.version = version
            channel.send({"type": "ack", "version": version, "ok": True, "pid": os.getpid(),
                          "apply_ms": round((time.perf_counter() - started) * 1000, 3)})

    def _set_health(self, message: dict[str, Any]) -> None:
        """The node health a config message carries (a full ``health`` table)."""
        health = message.get("health")
        if isinstance(health, dict) and self.server is not None:
            self.server.health.update(health)


def stats_reply(server: ProxyServer, request: dict[str, Any], *, final: bool = False) -> dict[str, Any]:
    """The worker's answer to a ``stats`` message (also sent unasked when it drains)."""
    return {"type": "stats", "seq": request.get("seq"), "pid": os.getpid(), "final": final,
            **server.stats_snapshot()}


def main(ipc_fd: int) -> int:
    install_uvloop()
    sock = socket.socket(fileno=ipc_fd)
    try:
        return asyncio.run(Worker(sock).run())
    except OSError as exc:
        log.error("worker %d cannot start: %s", os.getpid(), exc)
        return 1
