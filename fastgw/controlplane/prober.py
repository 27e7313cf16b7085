"""The supervisor's half of health checking: active probes, passive batches, pushes.

``HealthService`` owns the node's one ``HealthBoard`` (``fastgw.core.health``). It
- reads every upstream's ``healthchecks`` record on each config version (``configure``);
- runs active probes (``ActiveProber``, one task per upstream with active checks), once
  per node, whatever the number of workers;
- takes the workers' passive batches (``on_passive``) and the Admin API's manual
  overrides (``set_manual``);
- logs every transition once, with its reason, and pushes the changed upstreams' target
  tables to every worker in one small ``health`` message (coalesced per loop turn);
- wakes itself for timed-ejection ends and slow-start steps.

Probe (Kong's active check): connect with ``timeout``; for http/https send
``GET <http_path> HTTP/1.0`` with ``Host`` (the upstream's ``host_header`` or the target)
and the configured ``headers``, read the status line. A connect error or reset is a tcp
failure, running out of ``timeout`` a timeout, and the status goes through the active
status lists. ``tcp`` probes only connect; ``grpc`` probes as tcp and ``grpcs`` as a TLS
handshake (fastgw has no gRPC health protocol client). ``https`` probes speak TLS with
``https_sni`` as server name (else the target's host), verify the certificate when
``https_verify_certificate`` (against the node's upstream_tls_trusted_certificate) and
present the upstream's ``client_certificate``; a failed handshake is a tcp failure, as in
Kong.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from typing import Any, Callable

from fastgw.config.certificates import is_reference
from fastgw.config.model import Config, Upstream, split_target
from fastgw.core.health import (
    ACTIVE,
    HEALTHCHECKS_OFF,
    HTTP_FAILURE,
    PASSIVE,
    SUCCESS,
    TCP_FAILURE,
    TIMEOUT,
    HealthBoard,
    HealthPolicy,
    Transition,
)
from fastgw.dataplane.tls import CertPair, ClientProfile, client_context

__all__ = ["HealthService", "ActiveProber", "probe", "probe_context"]

log = logging.getLogger("fastgw.health")

Send = Callable[[dict[str, Any]], None]
_KINDS = frozenset({SUCCESS, HTTP_FAILURE, TCP_FAILURE, TIMEOUT})
# Probe outcome -> the `result` label of the probe counter (None: a status in neither
# the healthy nor the unhealthy list, which moves no counter).
PROBE_RESULTS = {SUCCESS: "success", HTTP_FAILURE: "http_failure", TCP_FAILURE: "tcp_failure",
                 TIMEOUT: "timeout", None: "unclassified"}


def probe_context(policy: HealthPolicy, config: Config | None = None,
                  upstream: Upstream | None = None) -> ssl.SSLContext | None:
    """The TLS context of an upstream's https/grpcs probes (None for the others), made once
    per prober: https_verify_certificate against the node's upstream_tls_trusted_certificate,
    and the upstream's client_certificate presented (mutual TLS), as Kong's checker does."""
    if policy.active_type not in ("https", "grpcs"):
        return None
    trusted = config.gateway.upstream_tls_trusted_certificate if config is not None else "system"
    client = None
    if config is not None and upstream is not None and upstream.client_certificate:
        cert = next((c for c in config.certificates if c.id == upstream.client_certificate), None)
        if cert is not None and not is_reference(cert.cert):
            client = CertPair(cert.cert, cert.key)
    return client_context(ClientProfile(policy.https_verify_certificate, 0, (), trusted, client))


async def probe(policy: HealthPolicy, host: str, port: int, host_header: str,
                tls: ssl.SSLContext | None = None) -> str | None:
    """One active probe: an event kind (``fastgw.core.health``), or None for an orphan status."""
    kind = policy.active_type
    if kind in ("https", "grpcs") and tls is None:
        tls = probe_context(policy)
    writer: asyncio.StreamWriter | None = None
    try:
        async with asyncio.timeout(policy.timeout):
            reader, writer = await asyncio.open_connection(
                host, port, ssl=tls, server_hostname=(policy.https_sni or host) if tls else None)
            if kind not in ("http", "https"):
                return SUCCESS
            lines = [f"GET {policy.http_path} HTTP/1.0", f"Host: {host_header}",
                     "User-Agent: fastgw-healthcheck", "Connection: close"]
            lines += [f"{name}: {value}" for name, value in policy.headers]
            writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
            status_line = await reader.readline()
    except TimeoutError:
        return TIMEOUT
    except (OSError, ssl.SSLError, ValueError):  # refused, reset, TLS verification failed
        return TCP_FAILURE
    finally:
        if writer is not None:
            writer.close()
    parts = status_line.split(None, 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/") or not parts[1].isdigit():
        return TCP_FAILURE  # closed before a status line, or not HTTP: the peer is broken
    return policy.active.classify(int(parts[1]))


class ActiveProber:
    """Probes one upstream's targets: ``healthy.interval`` while healthy, ``unhealthy.interval``
    while not (0 = not probed in that state), at most ``concurrency`` at a time."""

    def __init__(self, service: HealthService, upstream: Upstream, policy: HealthPolicy,
                 targets: list[str], tls: ssl.SSLContext | None = None) -> None:
        self.service = service
        self.uid = upstream.id
        self.host_header = upstream.host_header
        self.policy = policy
        self.tls = tls
        self.targets = targets
        self.due: dict[str, float | None] = {}
        self.busy: set[str] = set()
        self.wake = asyncio.Event()
        self.limit = asyncio.Semaphore(policy.concurrency)
        self.task = asyncio.ensure_future(self._run())
        self._probes: set[asyncio.Task[None]] = set()

    def stop(self) -> None:
        self.task.cancel()
        for t in self._probes:
            t.cancel()

    def _interval(self, addr: str) -> float:
        state = self.service.board.targets.get((self.uid, addr))
        healthy = state is None or state.healthy
        return self.policy.healthy_interval if healthy else self.policy.unhealthy_interval

    async def _run(self) -> None:
        clock = self.service.clock
        now = clock()
        for addr in self.targets:
            self.due[addr] = now  # a first probe right away
        while True:
            now = clock()
            for addr in self.targets:
                due = self.due.get(addr)
                if due is None:  # idle in this state: probe once its interval applies
                    interval = self._interval(addr)
                    if interval > 0:
                        self.due[addr] = due = now + interval
                if due is not None and due <= now and addr not in self.busy:
                    self.busy.add(addr)
                    task = asyncio.ensure_future(self._probe(addr))
                    self._probes.add(task)
                    task.add_done_callback(self._probes.discard)
            pending = [d for a, d in self.due.items() if d is not None and a not in self.busy]
            delay = max(0.0, min(pending) - clock()) if pending else None
            self.wake.clear()
            try:
                await asyncio.wait_for(self.wake.wait(), delay)
            except TimeoutError:
                pass

    async def _probe(self, addr: str) -> None:
        host, port = split_target(addr)
        try:
            async with self.limit:
                outcome = await probe(self.policy, host, port, self.host_header or addr,
                                      self.tls)
            self.service.count_probe(self.uid, addr, outcome)
            if outcome is not None:
                self.service.record((self.uid, addr), ACTIVE, outcome)
        finally:
            self.busy.discard(addr)
            interval = self._interval(addr)
            self.due[addr] = self.service.clock() + interval if interval > 0 else None
            self.wake.set()

    def nudge(self) -> None:
        """A target changed state: re-read intervals (an idle one may need probing now)."""
        self.wake.set()


class HealthService:
    """One health state per node, fed by probes, passive batches and the Admin API."""

    def __init__(self, send: Send, clock: Callable[[], float] = time.monotonic) -> None:
        self.send = send
        self.clock = clock
        self.board = HealthBoard()
        self.names: dict[str, str] = {}  # upstream id -> name, for log lines and metrics
        # (upstream id, target, result label) -> active probes so far (never reset)
        self.probes: dict[tuple[str, str, str], int] = {}
        self.probers: dict[str, ActiveProber] = {}
        self._probe_keys: dict[str, tuple[Any, ...]] = {}
        self._dirty: set[str] = set()
        self._flush_handle: asyncio.Handle | None = None
        self._tick_handle: asyncio.TimerHandle | None = None
        self._config: Config | None = None
        self.running = False
        self.seq = 0

    # -- lifecycle -----------------------------------------------------------------------
    def start(self) -> None:
        self.running = True
        if self._config is not None:
            self._sync_probers(self._config)

    def stop(self) -> None:
        self.running = False
        for prober in self.probers.values():
            prober.stop()
        self.probers.clear()
        self._probe_keys.clear()
        for handle in (self._flush_handle, self._tick_handle):
            if handle is not None:
                handle.cancel()

    # -- configuration -------------------------------------------------------------------
    def configure(self, config: Config) -> None:
        """A new config version: new policies and target sets; state of survivors kept."""
        if config is self._config:
            return
        self._config = config
        targets: dict[str, list[str]] = {u.id: [] for u in config.upstreams}
        for t in config.targets:
            if t.upstream in targets:
                targets[t.upstream].append(t.target)
        self.names = {u.id: u.name for u in config.upstreams}
        upstreams = {u.id: (HealthPolicy.from_healthchecks(u.healthchecks), targets[u.id])
                     for u in config.upstreams}
        self._apply(self.board.configure(upstreams, self.clock()))
        self._dirty.update(upstreams)  # new targets and policies: workers get fresh tables
        self._schedule_flush()
        if self.running:
            self._sync_probers(config)
        self._schedule_tick()

    def _sync_probers(self, config: Config) -> None:
        targets: dict[str, list[str]] = {}
        for t in config.targets:
            if t.weight > 0:  # weight 0 is HEALTHCHECKS_OFF in Kong: not probed
                targets.setdefault(t.upstream, []).append(t.target)
        wanted: dict[str, tuple[Any, ...]] = {}
        for u in config.upstreams:
            policy = HealthPolicy.from_healthchecks(u.healthchecks)
            if policy.active_enabled and targets.get(u.id):
                client = next((c for c in config.certificates
                               if c.id == u.client_certificate), None)
                wanted[u.id] = (policy, u.host_header, tuple(targets[u.id]),
                                config.gateway.upstream_tls_trusted_certificate, client)
        for uid in list(self.probers):
            if self._probe_keys.get(uid) != wanted.get(uid):
                self.probers.pop(uid).stop()
                self._probe_keys.pop(uid, None)
        by_id = {u.id: u for u in config.upstreams}
        for uid, key in wanted.items():
            if uid not in self.probers:
                self.probers[uid] = ActiveProber(self, by_id[uid], key[0], list(key[2]),
                                                 probe_context(key[0], config, by_id[uid]))
                self._probe_keys[uid] = key

    # -- events --------------------------------------------------------------------------
    def count_probe(self, uid: str, addr: str, outcome: str | None) -> None:
        key = (uid, addr, PROBE_RESULTS[outcome])
        self.probes[key] = self.probes.get(key, 0) + 1

    def probe_counts(self) -> dict[tuple[str, str, str], int]:
        """{(upstream name, target, result): probes} for the upstreams configured now."""
        names = self.names
        return {(names[uid], addr, result): n
                for (uid, addr, result), n in self.probes.items() if uid in names}

    def record(self, key: tuple[str, str], source: str, kind: str, count: int = 1) -> None:
        change = self.board.record(key, source, kind, self.clock(), count)
        if change is not None:
            self._apply([change])

    def on_passive(self, message: dict[str, Any]) -> None:
        """A worker's batch: ``[[upstream id, address, [[kind, count], ...]], ...]``, in order."""
        events = message.get("events")
        if not isinstance(events, list):
            return
        now = self.clock()
        changes: list[Transition] = []
        for item in events:
            try:
                uid, addr, runs = item
                for kind, count in runs:
                    if kind in _KINDS:
                        change = self.board.record((uid, addr), PASSIVE, kind, now, int(count))
                        if change is not None:
                            changes.append(change)
            except (TypeError, ValueError):
                log.error("malformed passive health batch ignored: %r", item)
        self._apply(changes)

    def set_manual(self, upstream: Upstream, address: str, healthy: bool) -> None:
        change = self.board.set_manual((upstream.id, address), healthy, self.clock())
        if change is not None:
            self._apply([change])
        else:
            self._dirty.add(upstream.id)  # same state, but the display may change (manual)
            self._schedule_flush()

    # -- Admin API (HealthSource) --------------------------------------------------------
    def target_health(self, upstream: Upstream, target: Any) -> str:
        if getattr(target, "weight", 1) == 0:
            return HEALTHCHECKS_OFF
        return self.board.status((upstream.id, target.target))

    # -- pushing -------------------------------------------------------------------------
    def _apply(self, changes: list[Transition]) -> None:
        for change in changes:
            name = self.names.get(change.key[0], change.key[0])
            if change.healthy:
                log.info("%s", change.describe(name))
            else:
                log.warning("%s", change.describe(name))
            self._dirty.add(change.key[0])
            prober = self.probers.get(change.key[0])
            if prober is not None:
                prober.nudge()
        if changes:
            self._schedule_flush()
            self._schedule_tick()

    def _schedule_flush(self) -> None:
        if self._flush_handle is None and self._dirty:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                return  # not serving yet: the first full message carries everything
            self._flush_handle = loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_handle = None
        if self._dirty:
            dirty, self._dirty = self._dirty, set()
            self.send(self._message(dirty, full=False))

    def full_message(self) -> dict[str, Any]:
        """Everything, for a worker that just started (or a config message)."""
        return self._message(set(self.board.policies), full=True)

    def _message(self, uids: set[str], full: bool) -> dict[str, Any]:
        self.seq += 1
        now = self.clock()
        return {"type": "health", "seq": self.seq, "full": full,
                "upstreams": {uid: self.board.upstream_table(uid, now) for uid in uids
                              if uid in self.board.policies}}

    def _schedule_tick(self) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        now = self.clock()
        due = self.board.next_deadline(now)
        if self._tick_handle is not None:
            self._tick_handle.cancel()
            self._tick_handle = None
        if due is not None:
            self._tick_handle = loop.call_later(max(0.0, due - now) + 0.001, self._tick)

    def _tick(self) -> None:
        self._tick_handle = None
        changes = self.board.tick(self.clock())
        # Slow-start steps are not transitions, but workers need the new weights.
        for (uid, _), state in self.board.targets.items():
            if state.ramp_from is not None:
                self._dirty.add(uid)
        self._apply(changes)
        self._schedule_flush()
        self._schedule_tick()
