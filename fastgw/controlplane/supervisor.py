"""The supervisor: owns the config store, serves the admin and status listeners, and
runs N proxy workers as fresh subprocesses fed whole config snapshots over IPC.

Process model (DESIGN.md): one supervisor process with its own asyncio loop, and
``workers`` processes started as ``python -m fastgw worker --ipc-fd N`` (a new
interpreter, never a fork of a process whose event loop is running). Each worker binds
its own SO_REUSEPORT socket on ``proxy_listen`` and gets one socketpair end; the
protocol is in ``fastgw.dataplane.ipc``. Every accepted change (Admin API write, ``POST /config``,
SIGHUP reload) becomes a new store version, which is pushed to every worker as a whole
snapshot; workers ack each version, which is how the supervisor measures propagation and
answers ``/status/ready``. Target health is node state, not config: ``HealthService``
(``fastgw.controlplane.prober``) pushes small ``health`` messages instead.

``--workers 1`` is the same shape (supervisor + one worker), on purpose: one code path
for reload, drain and respawn; an admin write (whole-config validation, fsync) never
stalls the proxy loop; and the worker is the very process the multi-worker mode runs,
so per-core proxy speed is identical. The idle supervisor costs ~30 MB and no CPU.

Signals: SIGTERM/SIGINT drain every worker (each finishes in-flight requests within
``drain_timeout``) and exit 0. SIGHUP re-reads config.json in the supervisor; an invalid
file keeps the running config and logs why. A worker that dies is replaced (a crash loop
at start-up gives up with status 1).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import signal
import socket
import sys
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from fastgw.controlplane.admin.api import AdminAPI
from fastgw.controlplane.admin.http import HTTPServer
from fastgw.controlplane.admin.status import StatusAPI
from fastgw.controlplane.exporter import MetricsHub
from fastgw.config import ConfigError
from fastgw.config.settings import GatewaySettings, parse_listen
from fastgw.controlplane.store import FileConfigStore, StoreState
from fastgw.controlplane.prober import HealthService
from fastgw.dataplane.ipc import Channel
from fastgw.dataplane.plugins.counters import (
    create_node_lock,
    node_counter_names,
    remove_node_counters,
    unstick,
)
from fastgw.dataplane.plugins.registry import COUNTERS_ENV
from fastgw.dataplane.server import bind_socket

__all__ = ["Supervisor", "admin_listen_problem", "StartupError"]

log = logging.getLogger("fastgw.supervisor")

RESPAWN_WINDOW = 5.0  # a worker dying sooner than this after start counts as a crash loop
MAX_QUICK_DEATHS = 5
_KEEP_PROPAGATION = 64  # versions whose push->ack time is remembered


class StartupError(Exception):
    """A reason to refuse to start, meant for the operator as is."""


def admin_listen_problem(settings: GatewaySettings) -> str | None:
    """Why the admin listener must not start as configured, or None."""
    if settings.admin_listen == "off" or settings.admin_token:
        return None
    host, _ = parse_listen(settings.admin_listen)
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if loopback:
        return None
    return (f"refusing to start: admin_listen {settings.admin_listen} is reachable from other "
            "hosts and no admin_token is set. Set gateway.admin_token (or FASTGW_ADMIN_TOKEN) "
            "so the Admin API requires a Fastgw-Admin-Token header, or bind admin_listen to "
            "127.0.0.1.")


@dataclass(eq=False)
class WorkerHandle:
    slot: int
    proc: asyncio.subprocess.Process
    channel: Channel
    started: float = field(default_factory=time.monotonic)
    acked: int = 0  # newest config version this worker runs
    ready: bool = False  # acked at least once: listening

    @property
    def pid(self) -> int:
        return self.proc.pid


class Supervisor:
    def __init__(self, store: FileConfigStore, workers: int, *, log_level: str = "info") -> None:
        self.store = store
        self.count = workers
        self.log_level = log_level
        self.node_id = str(uuid.uuid4())
        # The node's rate-limit counters and their lock, shared by its workers.
        self.counters_file, self.counters_lock_name = node_counter_names(os.getpid())
        self.counters_lock = create_node_lock(self.counters_lock_name)
        self.workers: dict[int, WorkerHandle] = {}  # slot -> handle
        self.stopping = False
        self.quick_deaths = 0
        self.status_code = 0
        self.stop_event: asyncio.Event | None = None
        self.pushed_at: dict[int, float] = {}
        self.propagation_ms: dict[int, float] = {}
        self.servers: list[HTTPServer] = []
        # One health state per node: active probes here, passive batches from workers.
        self.health = HealthService(self._send_health)
        self.api = AdminAPI(store, self, admin_token=self.settings.admin_token,
                            health=self.health)
        self.status_api = StatusAPI(self.api.status_body, self.readiness)
        self.metrics = MetricsHub(self)  # /metrics on both listeners, worker stats over IPC
        self.metrics.install()
        self._message: dict[str, Any] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    @property
    def settings(self) -> GatewaySettings:
        return self.store.state.merged.gateway

    # -- RuntimeInfo (for the Admin API) ------------------------------------------------
    def pids(self) -> dict[str, Any]:
        return {"master": os.getpid(), "workers": [w.pid for w in self.workers.values()]}

    def status(self) -> dict[str, Any]:
        version = self.store.state.version
        workers = [{"pid": w.pid, "slot": w.slot, "config_version": w.acked, "ready": w.ready,
                    "uptime_s": round(time.monotonic() - w.started, 3),
                    "rss_bytes": _rss(w.pid)} for w in self.workers.values()]
        latest = max(self.propagation_ms) if self.propagation_ms else None
        return {"workers": workers,
                "config": {"version": version,
                           "all_workers_current": all(w.acked >= version for w in self.workers.values()),
                           "propagated_version": latest,
                           "propagation_ms": self.propagation_ms.get(latest) if latest else None},
                "pids": self.pids(),
                "server": self.metrics.server_status()}

    def readiness(self) -> tuple[bool, str]:
        if self.stopping:
            return False, "draining"
        version = self.store.state.version
        live = [w for w in self.workers.values() if w.ready]
        if len(live) < self.count:
            return False, f"{len(live)} of {self.count} workers running"
        behind = [w.pid for w in live if w.acked < version]
        if behind:
            return False, f"workers {behind} not yet on config version {version}"
        return True, "ready"

    # -- snapshots ------------------------------------------------------------------------
    def _snapshot(self, state: StoreState) -> dict[str, Any]:
        self.health.configure(state.merged)
        return {"type": "config", "version": state.version, "workspaces": state.snapshot(),
                "health": self.health.full_message()}

    def _send_health(self, message: dict[str, Any]) -> None:
        for w in self.workers.values():
            w.channel.send(message)

    def _on_change(self, state: StoreState) -> None:
        """Store listener: push the new version to every worker, now."""
        self._message = self._snapshot(state)
        self.pushed_at[state.version] = time.monotonic()
        for old in sorted(self.pushed_at)[:-_KEEP_PROPAGATION]:
            self.pushed_at.pop(old, None)
            self.propagation_ms.pop(old, None)
        for w in self.workers.values():
            w.channel.send(self._message)
        log.info("config version %d pushed to %d workers", state.version, len(self.workers))

    def _on_ack(self, w: WorkerHandle, msg: dict[str, Any]) -> None:
        version = int(msg.get("version") or 0)
        if not msg.get("ok"):
            log.error("worker %d refused config version %d: %s", w.pid, version, msg.get("error"))
            return
        w.acked = max(w.acked, version)
        w.ready = True
        pushed = self.pushed_at.get(version)
        if pushed is not None and version not in self.propagation_ms and \
                all(x.acked >= version for x in self.workers.values()):
            ms = (time.monotonic() - pushed) * 1000
            self.propagation_ms[version] = round(ms, 3)
            log.info("config version %d live on all workers in %.1f ms", version, ms)

    # -- workers --------------------------------------------------------------------------
    async def _spawn(self, slot: int) -> None:
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "fastgw", "worker", "--ipc-fd", str(child.fileno()),
                "--log-level", self.log_level,
                pass_fds=(child.fileno(),), stdin=asyncio.subprocess.DEVNULL,
                # The node's rate-limit counters, shared by its workers.
                env={**os.environ, COUNTERS_ENV: self.counters_file})
        finally:
            child.close()
        channel = await Channel.open(parent)
        w = WorkerHandle(slot, proc, channel)
        self.workers[slot] = w
        if self._message is None:
            self._message = self._snapshot(self.store.state)
        channel.send(self._message)
        channel.send(self.health.full_message())  # the cached snapshot's may be stale
        self._track(self._read_acks(w))
        self._track(self._watch(w))

    def _track(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _read_acks(self, w: WorkerHandle) -> None:
        while True:
            try:
                msg = await w.channel.recv()
            except ValueError as exc:
                log.error("worker %d sent a bad IPC frame: %s", w.pid, exc)
                return
            if msg is None:
                return
            if msg.get("type") == "ack":
                self._on_ack(w, msg)
            elif msg.get("type") == "stats":
                self.metrics.on_stats(w, msg)
            elif msg.get("type") == "passive":
                self.health.on_passive(msg)

    async def _watch(self, w: WorkerHandle) -> None:
        code = await w.proc.wait()
        w.channel.close()
        if self.workers.get(w.slot) is w:
            del self.workers[w.slot]
        if self.stopping:
            return
        log.error("worker %d exited (status %d); replacing it", w.pid, code)
        # It may have died holding the counters' lock (dataplane.plugins.counters).
        await asyncio.get_running_loop().run_in_executor(None, unstick, self.counters_lock)
        if time.monotonic() - w.started < RESPAWN_WINDOW:
            self.quick_deaths += 1
            if self.quick_deaths >= MAX_QUICK_DEATHS:
                log.error("workers keep dying at start; giving up")
                self.status_code = 1
                self._stop()
                return
        await self._spawn(w.slot)

    # -- lifecycle ------------------------------------------------------------------------
    async def _listen(self, listen: str, handler: Any, name: str) -> None:
        if listen == "off":
            return
        sock = bind_socket(listen, reuse_port=False, backlog=128)
        server = HTTPServer(handler, name=name)
        await server.start(sock)
        self.servers.append(server)
        log.info("%s API listening on %s", name, listen)

    def _stop(self) -> None:
        if self.stopping:
            return
        self.stopping = True
        for w in self.workers.values():
            try:
                w.proc.send_signal(signal.SIGTERM)
            except ProcessLookupError:
                pass
        assert self.stop_event is not None
        self.stop_event.set()

    async def _reload(self) -> None:
        try:
            state = await self.store.reload_file()
        except ConfigError as exc:
            self.metrics.reload_failed()
            log.error("reload refused, keeping the running config: %s", exc)
            for path, message in exc.errors:
                log.error("  %s: %s", path, message)
            return
        except Exception as exc:  # unreadable file and the like
            self.metrics.reload_failed()
            log.error("reload refused, keeping the running config: %s", exc)
            return
        for warning in state.merged.warnings:
            log.warning("%s", warning)
        log.info("config reloaded from %s (version %d)", self.store.path, state.version)

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        self.stop_event = asyncio.Event()
        problem = admin_listen_problem(self.settings)
        if problem:
            raise StartupError(problem)
        # Fail fast (and once) if the proxy address cannot be bound at all.
        bind_socket(self.settings.proxy_listen).close()
        await self._listen(self.settings.admin_listen, self.api.handle, "admin")
        await self._listen(self.settings.status_listen, self.status_api.handle, "status")
        self.store.subscribe(self._on_change)
        self.pushed_at[self.store.state.version] = time.monotonic()
        self.health.configure(self.store.state.merged)
        self.health.start()
        for slot in range(self.count):
            await self._spawn(slot)
        loop.add_signal_handler(signal.SIGTERM, self._stop)
        loop.add_signal_handler(signal.SIGINT, self._stop)
        loop.add_signal_handler(signal.SIGHUP, lambda: self._track(self._reload()))
        log.info("supervisor %d started %d workers", os.getpid(), self.count)
        await self.stop_event.wait()
        await self._drain()
        return self.status_code

    async def _drain(self) -> None:
        self.health.stop()
        bound = float(self.settings.drain_timeout) + 5.0
        procs = [w.proc for w in self.workers.values()]
        if procs:
            log.info("draining %d workers (up to %ss)", len(procs), self.settings.drain_timeout)
            done, pending = await asyncio.wait([asyncio.ensure_future(p.wait()) for p in procs],
                                               timeout=bound)
            for p in procs:
                if p.returncode is None:
                    log.error("worker %d did not drain in time; killing it", p.pid)
                    p.kill()
                    await p.wait()
        for server in self.servers:
            await server.close()
        for task in list(self._tasks):
            task.cancel()
        remove_node_counters(self.counters_file, self.counters_lock_name)  # not past the node
        log.info("stopped")


def _rss(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None
