"""The supervisor: owns the config store, serves the admin and status listeners, and
runs N proxy workers as fresh subprocesses fed config versions over IPC.

Process model (DESIGN.md): one supervisor process with its own asyncio loop, and
``workers`` processes started as ``python -m fastgw worker --ipc-fd N`` (a new
interpreter, never a fork of a process whose event loop is running). Each worker binds
its own SO_REUSEPORT socket on ``proxy_listen`` and gets one socketpair end; the
protocol is in ``fastgw.dataplane.ipc``. Every accepted change (Admin API write, ``POST
/config``, SIGHUP or ``POST /config/reload``) becomes a new store version, which
``ConfigPublisher`` sends to every worker, as a delta when it is small; workers apply it
off their proxy loop (``fastgw.dataplane.reconfigure``) and ack it, which is how the
supervisor measures propagation and staleness. Target health is node state, not config:
``HealthService`` (``fastgw.controlplane.prober``) pushes small ``health`` messages.

``--workers 1`` is the same shape (supervisor + one worker), on purpose: one code path
for reload, drain and respawn; an admin write never stalls the proxy loop; and the
worker is the very process the multi-worker mode runs, so per-core proxy speed is
identical. The idle supervisor costs ~30 MB and no CPU.

Readiness (``/status/ready``) is 200 once every worker has started, for as long as some
worker serves and none is hung: a worker still applying a newer config serves the older
one, completely, so it stays ready (how far behind it is, is ``/status``'s
``config.stale_for_s`` and the ``config_stale_seconds`` metric).

Keeping the node up:
- One instance per proxy port (``fastgw.controlplane.instance``): a second ``fastgw run``
  on the same proxy port exits 1 naming the port and the other pid.
- Watchdog: workers heartbeat over IPC; one silent for ``worker_heartbeat_timeout``
  seconds is reported (log, ``/status``, metrics), taken out of readiness, SIGKILLed and
  respawned. Scrapes do not wait for it (``fastgw.controlplane.exporter``).
- Crash loops back off per slot and isolated deaths do not add up
  (``fastgw.controlplane.respawn``); the node exits on its own (status 1) only when no
  worker serves and one keeps dying right after start.

Signals: ``fastgw run`` blocks SIGHUP, SIGTERM and SIGINT from its first instruction
(``fastgw.__main__``); ``run`` installs the handlers and unblocks them before anything
else, so one sent during start-up is handled, never fatal. SIGTERM/SIGINT drain every
worker (each finishes in-flight requests within ``drain_timeout``) and exit 0. SIGHUP
re-reads config.json; an invalid file keeps the running config and logs why.
"""

from __future__ import annotations

import asyncio
import gc
import ipaddress
import logging
import os
import signal
import socket
import ssl
import sys
import time
import uuid
from typing import Any

from fastgw.config import ConfigError
from fastgw.config.settings import GatewaySettings
from fastgw.controlplane.admin.api import AdminAPI
from fastgw.controlplane.admin.http import HTTPServer
from fastgw.controlplane.admin.status import StatusAPI
from fastgw.controlplane.exporter import MetricsHub
from fastgw.controlplane.default_cert import (
    CertificateFileError,
    default_certificate,
    listener_certificate,
)
from fastgw.controlplane.instance import StartupError, claim_proxy_address
from fastgw.controlplane.prober import HealthService
from fastgw.controlplane.publisher import ConfigPublisher
from fastgw.controlplane.respawn import CrashLoopPolicy
from fastgw.controlplane.store import FileConfigStore, StoreState
from fastgw.controlplane.workers import WorkerHandle
from fastgw.controlplane.cache_admin import WorkerCaches
from fastgw.dataplane.ipc import Channel
from fastgw.dataplane.plugins.counters import (
    create_node_lock,
    node_counter_names,
    remove_node_counters,
    unstick,
)
from fastgw.dataplane.plugins.registry import COUNTERS_ENV
from fastgw.dataplane.server import bind_socket
from fastgw.dataplane.tls import CertPair, server_context
from fastgw.dataplane.tls_native import TICKET_KEYS_SIZE

__all__ = ["Supervisor", "WorkerHandle", "admin_listen_problem", "StartupError", "SUPERVISOR_SIGNALS"]

log = logging.getLogger("fastgw.supervisor")

# Blocked by fastgw.__main__ before anything else runs; handled once the loop runs.
SUPERVISOR_SIGNALS = (signal.SIGHUP, signal.SIGTERM, signal.SIGINT)


def admin_listen_problem(settings: GatewaySettings) -> str | None:
    """Why the admin listener must not start as configured, or None."""
    if settings.admin_listen == "off" or settings.admin_token:
        return None
    if all(_loopback(a.host) for a in settings.listeners("admin")):
        return None
    return (f"refusing to start: admin_listen {settings.admin_listen} is reachable from other "
            "hosts and no admin_token is set. Set gateway.admin_token (or FASTGW_ADMIN_TOKEN) "
            "so the Admin API requires a Fastgw-Admin-Token header, or bind admin_listen to "
            "127.0.0.1.")


def _loopback(host: str) -> bool:
    try:
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class Supervisor:
    def __init__(self, store: FileConfigStore, workers: int, *, log_level: str = "info") -> None:
        self.store = store
        self.count = workers
        self.log_level = log_level
        self.node_id = str(uuid.uuid4())
        # The node's rate-limit counters and their lock, shared by its workers (made when
        # the workers start, removed when the supervisor stops, however it stops).
        self.counters_file, self.counters_lock_name = node_counter_names(os.getpid())
        self.counters_lock: Any = None
        self.workers: dict[int, WorkerHandle] = {}  # slot -> handle
        self.stopping = False
        self.started_all = False  # every slot has had a ready worker (start-up is over)
        self.status_code = 0
        self.stop_event: asyncio.Event | None = None
        self.servers: list[HTTPServer] = []
        self.respawn = CrashLoopPolicy()
        self.respawn_at: dict[int, float] = {}  # slot -> when its backed-off respawn is due
        self.restarts: dict[str, int] = {"exited": 0, "quick_exit": 0, "unresponsive": 0}
        self._instance_locks: list[socket.socket] = []  # one per proxy_listen entry
        # The ssl listeners' default certificate (read or made in run()), and the node's
        # session ticket keys: every worker seals tickets with them, so a client resumes
        # its TLS session on whichever worker takes its next connection. In memory only;
        # new ones at each start.
        self.default_cert: CertPair | None = None
        self.ticket_keys = os.urandom(TICKET_KEYS_SIZE)
        self._reload_queued = False
        # One health state per node: active probes here, passive batches from workers.
        self.health = HealthService(self._send_health)
        self.publisher = ConfigPublisher(self.health.full_message)
        # proxy-cache purges and look-ups, asked of every worker (each has its cache).
        self.caches = WorkerCaches(self.workers.values)
        self.api = AdminAPI(store, self, admin_token=self.settings.admin_token,
                            health=self.health, caches=self.caches)
        self.status_api = StatusAPI(self.api.status_body, self.readiness)
        self.metrics = MetricsHub(self)  # /metrics on both listeners, worker stats over IPC
        self.metrics.install()
        self._tasks: set[asyncio.Task[Any]] = set()

    @property
    def settings(self) -> GatewaySettings:
        return self.store.state.merged.gateway

    # -- RuntimeInfo (for the Admin API) ------------------------------------------------
    def pids(self) -> dict[str, Any]:
        return {"master": os.getpid(), "workers": [w.pid for w in self.workers.values()]}

    def status(self) -> dict[str, Any]:
        now = time.monotonic()
        version = self.store.state.version
        stale_stats = self.metrics.stale_pids
        workers = [{"pid": w.pid, "slot": w.slot, "config_version": w.acked, "ready": w.ready,
                    "responsive": not w.unresponsive,
                    "last_heartbeat_s": round(now - w.last_seen, 3),
                    "stats_stale": w.pid in stale_stats,
                    "last_apply": w.last_apply,
                    "uptime_s": round(now - w.started, 3),
                    "rss_bytes": _rss(w.pid)} for w in self.workers.values()]
        latest, latest_ms = self.publisher.latest_propagated
        ready = [w for w in self.workers.values() if w.ready]
        return {"workers": workers,
                "config": {"version": version,
                           "all_workers_current": all(w.acked >= version
                                                      for w in self.workers.values()),
                           "stale_workers": [w.pid for w in ready if w.acked < version],
                           "stale_for_s": round(self.staleness(), 3),
                           "propagated_version": latest,
                           "propagation_ms": latest_ms},
                "worker_restarts": dict(self.restarts),
                "crash_loop": self.crash_loop_status(now),
                "pids": self.pids(),
                "server": self.metrics.server_status()}

    def crash_loop_status(self, now: float | None = None) -> list[dict[str, Any]]:
        now = time.monotonic() if now is None else now
        return [{"slot": slot, "quick_deaths_in_a_row": streak,
                 "respawn_in_s": round(max(0.0, self.respawn_at.get(slot, now) - now), 3)}
                for slot, streak in sorted(self.respawn.streaks.items()) if streak]

    def staleness(self) -> float:
        return self.publisher.staleness(w.acked for w in self.workers.values() if w.ready)

    async def reload(self) -> StoreState:
        """SIGHUP and ``POST /config/reload``: re-read the file; log and count the result."""
        try:
            state = await self.store.reload_file()
        except ConfigError as exc:
            self.metrics.reload_failed()
            log.error("reload refused, keeping the running config: %s", exc)
            for path, message in exc.errors:
                log.error("  %s: %s", path, message)
            raise
        except Exception as exc:  # unreadable file and the like
            self.metrics.reload_failed()
            log.error("reload refused, keeping the running config: %s", exc)
            raise ConfigError([("", str(exc))]) from None
        for warning in state.merged.warnings:
            log.warning("%s", warning)
        log.info("config reloaded from %s (version %d)", self.store.path, state.version)
        return state

    def _on_sighup(self) -> None:
        # A reload that has not started reading yet will read this edit too: a burst of
        # SIGHUPs (a config tool, a script) makes one or two reloads, not a queue of them.
        if not self._reload_queued:
            self._reload_queued = True
            self._track(self._reload_on_signal())

    async def _reload_on_signal(self) -> None:
        async with self.store.lock:  # wait for the writer in progress, if any
            self._reload_queued = False
        try:
            await self.reload()
        except ConfigError:
            pass  # logged and counted by reload()

    def readiness(self) -> tuple[bool, str]:
        if self.stopping:
            return False, "draining"
        now = time.monotonic()
        for w in self.workers.values():
            if w.unresponsive:
                return False, (f"worker {w.pid} unresponsive (no heartbeat for "
                               f"{now - w.last_seen:.1f}s); replacing it")
        serving = [w for w in self.workers.values() if w.serving]
        if not self.started_all:
            return False, f"{len(serving)} of {self.count} workers running"
        if not serving:
            return False, "no worker running; respawning"
        return True, "ready"

    # -- config versions ------------------------------------------------------------------
    def _send_health(self, message: dict[str, Any]) -> None:
        for w in self.workers.values():
            w.channel.send(message)

    def _on_change(self, state: StoreState) -> None:
        """Store listener: send the new version to every worker, now."""
        self.health.configure(state.merged)
        message = self.publisher.publish(state)
        for w in self.workers.values():
            w.channel.send(message)
        how = "as a change" if "changes" in message else "whole"
        if how == "whole":  # a reload or a replaced document: a heap of new entities
            _keep_out_of_full_collections()
        log.info("config version %d pushed to %d workers (%s)", state.version,
                 len(self.workers), how)

    def _on_ack(self, w: WorkerHandle, msg: dict[str, Any]) -> None:
        version = int(msg.get("version") or 0)
        if not msg.get("ok"):
            if msg.get("resync"):
                log.warning("worker %d cannot apply config version %d to the one it has; "
                            "sending it the whole config", w.pid, version)
                w.channel.send(self.publisher.whole())
                return
            log.error("worker %d refused config version %d: %s", w.pid, version, msg.get("error"))
            return
        w.acked = max(w.acked, version)
        w.last_apply = {"version": version, "apply_ms": msg.get("apply_ms"),
                        "in_place": bool(msg.get("in_place"))}
        if not w.ready:
            w.ready = True
            if not self.started_all and len(self.workers) == self.count and \
                    all(x.ready for x in self.workers.values()):
                self.started_all = True
        for done, ms in self.publisher.on_acks(x.acked for x in self.workers.values()):
            log.info("config version %d live on all workers in %.1f ms", done, ms)

    # -- workers --------------------------------------------------------------------------
    async def _spawn(self, slot: int) -> None:
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "fastgw", "worker", "--ipc-fd", str(child.fileno()),
                "--heartbeat", repr(self.settings.worker_heartbeat_interval),
                "--log-level", self.log_level,
                pass_fds=(child.fileno(),), stdin=asyncio.subprocess.DEVNULL,
                # The node's rate-limit counters, shared by its workers.
                env={**os.environ, COUNTERS_ENV: self.counters_file})
        finally:
            child.close()
        channel = await Channel.open(parent)
        w = WorkerHandle(slot, proc, channel)
        self.workers[slot] = w
        if self.stopping:  # the stop came while it started: it never got _stop's SIGTERM
            proc.send_signal(signal.SIGTERM)
        first = self.publisher.whole()
        if self.default_cert is not None:  # the worker's TLS material rides on its first config
            first = {**first, "tls": {"cert": self.default_cert.cert, "key": self.default_cert.key,
                                      "ticket_keys": self.ticket_keys.hex()}}
        channel.send(first)
        channel.send(self.health.full_message())  # the cached snapshot's may be stale
        self._track(self._read(w))
        self._track(self._watch(w))

    def _track(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _read(self, w: WorkerHandle) -> None:
        while True:
            try:
                msg = await w.channel.recv()
            except ValueError as exc:
                log.error("worker %d sent a bad IPC frame: %s", w.pid, exc)
                return
            if msg is None:
                return
            w.last_seen = time.monotonic()
            kind = msg.get("type")
            if kind == "ack":
                self._on_ack(w, msg)
            elif kind == "stats":
                self.metrics.on_stats(w, msg)
            elif kind == "passive":
                self.health.on_passive(msg)
            elif kind == "proxy-cache":
                self.caches.on_answer(w, msg)

    async def _watch(self, w: WorkerHandle) -> None:
        code = await w.proc.wait()
        w.channel.close()
        if self.workers.get(w.slot) is w:
            del self.workers[w.slot]
        if self.stopping:
            return
        # It may have died holding the counters' lock (dataplane.plugins.counters).
        if self.counters_lock is not None:
            await asyncio.get_running_loop().run_in_executor(None, unstick, self.counters_lock)
        lifetime = time.monotonic() - w.started
        delay = self.respawn.on_death(w.slot, lifetime)
        streak = self.respawn.streak(w.slot)
        reason = "unresponsive" if w.unresponsive else ("quick_exit" if streak else "exited")
        self.restarts[reason] += 1
        serving = any(x.serving for x in self.workers.values())
        if self.respawn.gives_up(w.slot, serving=serving):
            log.error("worker %d exited (status %d) %.1fs after it started, %d times in a row, "
                      "and no worker is serving: giving up", w.pid, code, lifetime, streak)
            self.status_code = 1
            self._stop()
            return
        if delay:
            log.error("worker %d exited (status %d) %.1fs after it started, %d times in a row "
                      "in slot %d: respawning in %.1fs", w.pid, code, lifetime, streak, w.slot,
                      delay)
            self.respawn_at[w.slot] = time.monotonic() + delay
            await asyncio.sleep(delay)
            self.respawn_at.pop(w.slot, None)
            if self.stopping:
                return
        else:
            log.error("worker %d exited (status %d); replacing it", w.pid, code)
        await self._spawn(w.slot)

    async def _watchdog(self) -> None:
        """SIGKILL workers whose heartbeats stopped (hung loop, SIGSTOP): ``_watch``
        respawns them. Settings are read each round, so a reload can change the timeout."""
        while True:
            timeout = float(self.settings.worker_heartbeat_timeout)
            await asyncio.sleep(min(0.25, timeout / 4) if timeout > 0 else 1.0)
            if timeout <= 0 or self.stopping:
                continue
            now = time.monotonic()
            for w in list(self.workers.values()):
                silent = now - w.last_seen
                if silent > timeout and not w.unresponsive and w.proc.returncode is None:
                    w.unresponsive = True
                    log.error("worker %d sent no heartbeat for %.1fs (hung or stopped): taking "
                              "it out of readiness, killing and replacing it", w.pid, silent)
                    try:
                        w.proc.kill()
                    except ProcessLookupError:
                        pass

    # -- lifecycle ------------------------------------------------------------------------
    async def _listen(self, handler: Any, name: str) -> None:
        """Every entry of ``<name>_listen`` (admin or status), over TLS where it says ssl."""
        for address in self.settings.listeners(name):
            tls = None
            if address.ssl:
                assert self.default_cert is not None
                pair = listener_certificate(self.settings, name, self.default_cert)
                tls = server_context(self.settings, pair)
            sock = bind_socket(address, reuse_port=False, backlog=128)
            server = HTTPServer(handler, name=name)
            await server.start(sock, tls)
            self.servers.append(server)
            log.info("%s API listening on %s", name, address)

    def _prepare_tls(self) -> None:
        """Check the backends' trusted CAs, and read (or make) the default certificate
        when any listener says ssl. Raises StartupError."""
        settings = self.settings
        trusted = settings.upstream_tls_trusted_certificate
        if trusted != "system":
            try:  # workers load it for every service verifying its backends: check it once
                ssl.create_default_context(cafile=trusted)
            except (OSError, ssl.SSLError) as exc:
                raise StartupError(f"refusing to start: upstream_tls_trusted_certificate "
                                   f"{trusted}: {exc}") from None
        if any(a.ssl for name in ("proxy", "admin", "status") for a in settings.listeners(name)):
            try:
                self.default_cert = default_certificate(settings, self.store.path)
            except CertificateFileError as exc:
                raise StartupError(f"refusing to start: {exc}") from None
        for address in settings.listeners("proxy"):
            if address.http2:
                log.warning("proxy_listen %s: http2 is not supported; clients negotiate "
                            "HTTP/1.1 (ALPN)", address)

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

    def _handle_signals(self, loop: asyncio.AbstractEventLoop) -> None:
        """Handlers first, then unblock: a signal that came during start-up runs now."""
        loop.add_signal_handler(signal.SIGTERM, self._stop)
        loop.add_signal_handler(signal.SIGINT, self._stop)
        loop.add_signal_handler(signal.SIGHUP, self._on_sighup)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, SUPERVISOR_SIGNALS)

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        self.stop_event = asyncio.Event()
        self._handle_signals(loop)
        try:
            problem = admin_listen_problem(self.settings)
            if problem:
                raise StartupError(problem)
            self._prepare_tls()
            self._instance_locks = [claim_proxy_address(address)
                                    for address in self.settings.listeners("proxy")]
            await self._listen(self.api.handle, "admin")
            await self._listen(self.status_api.handle, "status")
            self.store.subscribe(self._on_change)
            self.publisher.start(self.store.state)
            self.health.configure(self.store.state.merged)
            self.health.start()
            self.counters_lock = create_node_lock(self.counters_lock_name)
            for slot in range(self.count):
                if self.stopping:
                    break
                await self._spawn(slot)
            self._track(self._watchdog())
            _keep_out_of_full_collections()
            log.info("supervisor %d started %d workers", os.getpid(), self.count)
            await self.stop_event.wait()
            await self._drain()
        finally:
            for lock in self._instance_locks:
                lock.close()
            remove_node_counters(self.counters_file, self.counters_lock_name)
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
        log.info("stopped")


def _keep_out_of_full_collections() -> None:
    """Freeze what is alive now (the loaded config: a million objects at 10,000 services)
    so no full collection scans it again. Unfrozen, every few writes one took 20-70 ms of
    a core the workers need (bench.config_writes); an entity write adds and frees little,
    and frozen entities are still freed by reference counting when a write replaces them.
    Young garbage is collected first, so only cyclic garbage already old stays frozen."""
    gc.collect(1)
    gc.freeze()


def _rss(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None
