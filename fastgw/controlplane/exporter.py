"""Node metrics in the supervisor: gather worker stats over IPC, render Prometheus metrics.

Theory of operation
-------------------
A scrape (``GET /metrics`` on the status or admin listener, or ``GET /status``) asks every
live worker for its counters (``{"type": "stats", "seq": n}`` over its IPC channel; the
worker answers with `stats_reply`), waits a bounded time (``STATS_TIMEOUT``) for the
answers, and sums them with `fastgw.dataplane.stats.aggregate`. Workers also push their
counters unasked every second (`fastgw.dataplane.worker.STATS_PUSH_INTERVAL`). A worker
that does not answer in time is counted with its previous counters, and so is one whose
heartbeats stopped (it is not even asked, so a hung worker costs a scrape nothing); the
scrape says so: ``worker_stats_stale`` counts them, ``/status`` flags them
(``stats_stale``), and the log names them. A worker that is gone keeps its last counters
in the totals (its final stats are sent when it drains; a crash loses only what it
counted since its last push), so node counters never go down when a worker is replaced.

`NodeCollector` is a prometheus-client custom collector: it turns the aggregate into
metric families at scrape time (no prometheus-client object is touched per request). Names
and labels are Kong 3.x's (reference/kong.md §5) with the ``metrics_prefix`` setting
(``fastgw`` by default; ``kong`` makes a Kong dashboard work unchanged, and then the
gateway latency is named ``kong_kong_latency_ms`` as in Kong). See docs/metrics.md.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any, Protocol
from collections.abc import Iterator

from prometheus_client.core import (
    CollectorRegistry,
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.exposition import choose_encoder

from fastgw import __version__
from fastgw.dataplane.stats import GATEWAY_BUCKETS, UPSTREAM_BUCKETS, aggregate

from fastgw.controlplane.workers import WorkerHandle

if TYPE_CHECKING:
    from fastgw.config.settings import GatewaySettings
    from fastgw.controlplane.admin.api import AdminAPI
    from fastgw.controlplane.admin.http import Request, Response
    from fastgw.controlplane.store import FileConfigStore

__all__ = ["MetricsHub", "NodeCollector", "HEALTH_STATES"]

log = logging.getLogger("fastgw.metrics")


class Node(Protocol):
    """What the metrics read of the supervisor (it is one)."""

    node_id: str
    store: FileConfigStore
    workers: dict[int, WorkerHandle]
    api: AdminAPI

    @property
    def settings(self) -> GatewaySettings: ...

STATS_TIMEOUT = 0.5  # seconds a scrape waits for the workers' answers
RETIRED_FOLD_AFTER = 300.0  # seconds after which a dead worker's counters are folded
HEALTH_STATES = ("healthchecks_off", "healthy", "unhealthy", "dns_error")
def le_label(bound: float) -> str:
    """A bucket bound as Kong prints it: ``"1"``, ``"100"`` (not ``"1.0"``), so that SLO
    queries written against Kong (``{le="100"}``) match."""
    return str(int(bound)) if float(bound).is_integer() else repr(float(bound))


_UP_LE = [le_label(b) for b in UPSTREAM_BUCKETS]
_GW_LE = [le_label(b) for b in GATEWAY_BUCKETS]


def _buckets(hist: list[int], les: list[str]) -> list[tuple[str, float]]:
    out: list[tuple[str, float]] = []
    total = 0
    for le, n in zip(les, hist[:-1], strict=True):
        total += n
        out.append((le, total))
    out.append(("+Inf", total + hist[-1]))
    return out


def _bandwidth_family(p: str) -> Metric:
    """Kong names it ``kong_bandwidth_bytes``, a counter without the ``_total`` suffix that
    prometheus-client would add; with the ``kong`` prefix it keeps Kong's exact name (as an
    untyped family, which rate() reads the same), else ``<prefix>_bandwidth_bytes_total``."""
    doc = "Bytes received from clients (ingress) and sent to them (egress)"
    labels = ["service", "route", "direction", "workspace", "consumer"]
    if p != "kong":
        return CounterMetricFamily(f"{p}_bandwidth_bytes", doc, labels=labels)
    return _UntypedFamily(f"{p}_bandwidth_bytes", doc, labels)


class _UntypedFamily(Metric):
    """A family whose samples carry exactly its name (no suffix added at encoding)."""

    def __init__(self, name: str, documentation: str, labels: list[str]) -> None:
        super().__init__(name, documentation, "unknown")
        self.labels = labels

    def add_metric(self, values: list[str], value: float) -> None:
        self.add_sample(self.name, dict(zip(self.labels, values)), value)


class Families:
    """The metric families to export: Kong's prometheus plugin toggles, the union over
    its enabled instances (metrics are node-wide here); every family when there is none
    (fastgw exported them all before plugins, and still does by default)."""

    def __init__(self, status_codes: bool, latency: bool, bandwidth: bool,
                 upstream_health: bool, per_consumer: bool) -> None:
        self.status_codes = status_codes
        self.latency = latency
        self.bandwidth = bandwidth
        self.upstream_health = upstream_health
        self.per_consumer = per_consumer

    @classmethod
    def of(cls, plugins: Any) -> Families:
        found = [p.config for p in plugins if p.name == "prometheus" and p.enabled]
        if not found:
            return cls(True, True, True, True, False)

        def wanted(toggle: str) -> bool:
            return any(c.get(toggle) for c in found)

        return cls(wanted("status_code_metrics"), wanted("latency_metrics"),
                   wanted("bandwidth_metrics"), wanted("upstream_health_metrics"),
                   wanted("per_consumer"))


def _consumer_counts(route: dict[str, Any]) -> dict[tuple[str, str], dict[str, int]]:
    """(source, code) -> consumer -> count, from a route's "consumer|source|code" keys."""
    out: dict[tuple[str, str], dict[str, int]] = {}
    for key, n in (route.get("consumer_codes") or {}).items():
        consumer, source, code = key.rsplit("|", 2)
        out.setdefault((source, code), {})[consumer] = n
    return out


class NodeCollector:
    """Renders `MetricsHub.current` (set just before each encoding)."""

    def __init__(self, hub: MetricsHub) -> None:
        self.hub = hub

    def describe(self) -> list[Metric]:
        return []  # families depend on the config; nothing to check at registration

    def collect(self) -> Iterator[Metric]:
        hub = self.hub
        agg = hub.current
        p = hub.prefix
        node_id = hub.supervisor.node_id
        workspaces = hub.route_workspaces()
        route_labels = ["service", "route", "workspace"]

        requests = CounterMetricFamily(
            f"{p}_http_requests", "HTTP requests by route, status code and source (service: the "
            "response came from the upstream; kong: from the gateway). Unmatched requests are not counted.",
            labels=["service", "route", "code", "source", "workspace", "consumer"])
        latency = {
            "request": HistogramMetricFamily(
                f"{p}_request_latency_ms", "Total request latency in ms (head received to last byte sent)",
                labels=route_labels),
            "upstream": HistogramMetricFamily(
                f"{p}_upstream_latency_ms", "Upstream latency in ms (routing to the response head)",
                labels=route_labels),
            "gateway": HistogramMetricFamily(
                f"{p}_{'kong' if p == 'kong' else 'gateway'}_latency_ms",
                "Latency added by the gateway in ms (request latency minus upstream latency)",
                labels=route_labels),
        }
        bandwidth = _bandwidth_family(p)
        retries = CounterMetricFamily(
            f"{p}_upstream_retries", "Upstream attempts retried on another target after a failure",
            labels=route_labels)
        wanted = hub.families()
        for r in agg["routes"]:
            ws = workspaces.get(r["route_id"], "default")
            svc, route = r["service"], r["route"]
            by_consumer = _consumer_counts(r) if wanted.per_consumer else {}
            for source in ("service", "kong"):
                for code, n in sorted(r[source + "_codes"].items()):
                    mine = by_consumer.get((source, code), {})
                    rest = n - sum(mine.values())
                    if rest or not mine:
                        requests.add_metric([svc, route, code, source, ws, ""], rest)
                    for consumer, count in sorted(mine.items()):
                        requests.add_metric([svc, route, code, source, ws, consumer], count)
            labels = [svc, route, ws]
            for name, family in latency.items():
                les = _GW_LE if name == "gateway" else _UP_LE
                hist = r[name + "_hist"]
                if sum(hist):
                    family.add_metric(labels, _buckets(hist, les), r[name + "_sum"])
            bandwidth.add_metric([svc, route, "ingress", ws, ""], r["ingress"])
            bandwidth.add_metric([svc, route, "egress", ws, ""], r["egress"])
            retries.add_metric(labels, r["retries"])
        if wanted.status_codes:
            yield requests
        if wanted.latency:
            yield from latency.values()
        if wanted.bandwidth:
            yield bandwidth
        yield retries
        yield from self._upstreams(p, agg, wanted.upstream_health)
        yield from self._node(p, node_id, agg)

    def _upstreams(self, p: str, agg: dict[str, Any], health_wanted: bool) -> Iterator[Metric]:
        hub = self.hub
        health = GaugeMetricFamily(
            f"{p}_upstream_target_health", "Target health: 1 for the current state, 0 for the others",
            labels=["upstream", "target", "address", "state", "subsystem"])
        for upstream, target, address, state in hub.target_states():
            for s in HEALTH_STATES:
                health.add_metric([upstream, target, address, s, "http"], 1.0 if s == state else 0.0)
        if health_wanted:
            yield health
        probes = CounterMetricFamily(
            f"{p}_upstream_health_probes", "Active health check probes by result (success, "
            "http_failure, tcp_failure, timeout, unclassified)", labels=["upstream", "target", "result"])
        # Probes run once per node, in the supervisor: its own counts are the node's.
        for (upstream, target, result), n in sorted(hub.supervisor.api.health.probe_counts().items()):
            probes.add_metric([upstream, target, result], n)
        yield probes
        reused = CounterMetricFamily(
            f"{p}_upstream_connections_reused", "Upstream requests sent on a pooled keep-alive connection",
            labels=["address"])
        created = CounterMetricFamily(
            f"{p}_upstream_connections_created", "Upstream connections opened", labels=["address"])
        errors = CounterMetricFamily(
            f"{p}_upstream_connect_errors", "Upstream connection attempts that failed or timed out",
            labels=["address"])
        for address, stats in sorted(agg["pools"].items()):
            reused.add_metric([address], stats["reused"])
            created.add_metric([address], stats["created"])
            errors.add_metric([address], stats["connect_errors"])
        yield reused
        yield created
        yield errors

    def _node(self, p: str, node_id: str, agg: dict[str, Any]) -> Iterator[Metric]:
        hub = self.hub
        conns = agg["connections"]
        node = ["node_id", "subsystem", "state"]
        # Kong's gauge of nginx's stub_status: connections by state, and "total", which
        # nginx (so Kong) counts in requests, not connections.
        states = GaugeMetricFamily(
            f"{p}_nginx_connections_total", "Client connections by state (active, reading, "
            "writing, waiting now; accepted and handled since start) and total requests",
            labels=node)
        counts = {"active": conns["active"], "reading": conns["reading"],
                  "writing": conns["writing"], "waiting": conns["waiting"],
                  "accepted": conns["accepted"], "handled": conns["accepted"],
                  "total": agg["requests"]}
        for state, n in counts.items():
            states.add_metric([node_id, "http", state], n)
        yield states
        current = GaugeMetricFamily(
            f"{p}_nginx_http_current_connections", "Client connections now open, by state",
            labels=node)
        for state in ("active", "reading", "writing", "waiting"):
            current.add_metric([node_id, "http", state], conns[state])
        yield current
        requests = CounterMetricFamily(
            f"{p}_nginx_requests", "Client requests, matched by a route or not",
            labels=["node_id", "subsystem"])
        requests.add_metric([node_id, "http"], agg["requests"])
        yield requests
        info = InfoMetricFamily(f"{p}_node", "This node", labels=["node_id", "version"])
        info.add_metric([node_id, __version__], {})
        yield info
        yield GaugeMetricFamily(f"{p}_datastore_reachable", "Whether the config store is usable", value=1)
        state = hub.supervisor.store.state
        yield GaugeMetricFamily(f"{p}_config_version", "Version of the running configuration",
                                value=state.version)
        yield GaugeMetricFamily(
            f"{p}_config_last_reload_timestamp_seconds",
            "Unix time of the last configuration change or reload attempt", value=hub.reload_time)
        yield GaugeMetricFamily(
            f"{p}_config_last_reload_success", "1 if the last configuration change or reload "
            "attempt was applied, 0 if it was refused", value=1 if hub.reload_ok else 0)
        reloads = CounterMetricFamily(f"{p}_config_reloads", "Configuration changes and reload "
                                      "attempts by result", labels=["result"])
        reloads.add_metric(["success"], hub.reloads_ok)
        reloads.add_metric(["failure"], hub.reloads_failed)
        yield reloads
        sup = hub.supervisor
        workers = GaugeMetricFamily(
            f"{p}_workers", "Proxy worker processes by state: ready (on the newest config), "
            "stale (serving an older one while the newest is applied), starting, "
            "unresponsive (no heartbeat; being replaced)", labels=["state"])
        version = state.version
        counts = dict.fromkeys(("ready", "stale", "starting", "unresponsive"), 0)
        for w in sup.workers.values():
            if w.unresponsive:
                counts["unresponsive"] += 1
            elif not w.ready:
                counts["starting"] += 1
            else:
                counts["ready" if w.acked >= version else "stale"] += 1
        for name, n in counts.items():
            workers.add_metric([name], n)
        yield workers
        yield GaugeMetricFamily(
            f"{p}_config_stale_seconds", "Seconds since the oldest config version some worker "
            "does not run yet was pushed (0 when every worker runs the newest)",
            value=sup.staleness())
        restarts = CounterMetricFamily(
            f"{p}_worker_restarts", "Workers replaced, by why they died: exited (after "
            "running past the crash-loop window), quick_exit (soon after starting: backs off "
            "when repeated), unresponsive (killed by the heartbeat watchdog)",
            labels=["reason"])
        for reason, n in sorted(sup.restarts.items()):
            restarts.add_metric([reason], n)
        yield restarts
        backoff = max((c["respawn_in_s"] for c in sup.crash_loop_status()), default=0.0)
        yield GaugeMetricFamily(
            f"{p}_worker_respawn_backoff_seconds", "Seconds until the next backed-off respawn "
            "of a crash-looping worker (0 when none waits)", value=backoff)
        yield GaugeMetricFamily(
            f"{p}_worker_stats_stale", "Workers whose counters in this scrape are their last "
            "known ones (no answer within the scrape's bound, or no heartbeat)",
            value=len(hub.stale_pids))


class MetricsHub:
    """The supervisor's side: worker stats, reload results, and the HTTP handlers."""

    def __init__(self, supervisor: Node) -> None:
        self.supervisor = supervisor
        self.latest: dict[int, dict[str, Any]] = {}  # pid -> last stats of a live worker
        # Workers that are gone: pid -> (when noticed, last stats). A late final message
        # replaces the entry (never adds to it); entries older than RETIRED_FOLD_AFTER are
        # summed into `folded` to bound memory across many respawns.
        self.retired: dict[int, tuple[float, dict[str, Any]]] = {}
        self.folded: dict[str, Any] | None = None
        self.current: dict[str, Any] = aggregate(())
        self._seq = 0
        self._waiters: dict[int, tuple[set[int], asyncio.Future[None]]] = {}
        self._workspaces: dict[str, str] = {}  # route id -> workspace, including deleted routes
        self.stale_pids: set[int] = set()  # workers counted with old counters in the last scrape
        self.reload_time = time.time()
        self.reload_ok = True
        self.reloads_ok = 0
        self.reloads_failed = 0
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(NodeCollector(self))  # type: ignore[arg-type]
        supervisor.store.subscribe(self._on_change)

    @property
    def prefix(self) -> str:
        return self.supervisor.settings.metrics_prefix

    # -- config reloads ------------------------------------------------------------------
    def _on_change(self, state: Any) -> None:
        self.reload_time = time.time()
        self.reload_ok = True
        self.reloads_ok += 1

    def reload_failed(self) -> None:
        """A SIGHUP reload was refused (the running config stays)."""
        self.reload_time = time.time()
        self.reload_ok = False
        self.reloads_failed += 1

    # -- worker stats --------------------------------------------------------------------
    def on_stats(self, w: WorkerHandle, msg: dict[str, Any]) -> None:
        """A worker's ``stats`` message (an answer, or its final one when draining)."""
        if w.pid in self.retired:
            self.retired[w.pid] = (self.retired[w.pid][0], msg)  # final, after it was noticed gone
        else:
            self.latest[w.pid] = msg
        seq = msg.get("seq")
        waiter = self._waiters.get(seq) if isinstance(seq, int) else None
        if waiter is not None:
            pending, future = waiter
            pending.discard(w.pid)
            if not pending and not future.done():
                future.set_result(None)

    def _retire_dead(self) -> None:
        now = time.monotonic()
        live = {w.pid for w in self.supervisor.workers.values()}
        for pid in [pid for pid in self.latest if pid not in live]:
            self.retired[pid] = (now, self.latest.pop(pid))
        old = [pid for pid, (since, _) in self.retired.items() if now - since > RETIRED_FOLD_AFTER]
        if old:
            snaps = [self.retired.pop(pid)[1] for pid in old]
            if self.folded is not None:
                snaps.append(self.folded)
            self.folded = aggregate((), counters_only=snaps)

    def _counters_of_dead(self) -> list[dict[str, Any]]:
        snaps = [snap for _, snap in self.retired.values()]
        return snaps + [self.folded] if self.folded is not None else snaps

    async def refresh(self, timeout: float = STATS_TIMEOUT) -> dict[str, Any]:
        """Ask every live worker for its counters; return the node's aggregate."""
        now = time.monotonic()
        # A worker whose heartbeats stopped would not answer either: do not wait for it.
        silent_after = 3 * self.supervisor.settings.worker_heartbeat_interval
        live = [w for w in self.supervisor.workers.values() if w.ready]
        workers = [w for w in live if not w.unresponsive and now - w.last_seen < silent_after]
        stale = {w.pid for w in live} - {w.pid for w in workers}
        if workers:
            self._seq += 1
            seq = self._seq
            future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._waiters[seq] = ({w.pid for w in workers}, future)
            for w in workers:
                w.channel.send({"type": "stats", "seq": seq})
            try:
                await asyncio.wait_for(future, timeout)
            except TimeoutError:
                stale |= self._waiters[seq][0]
            finally:
                del self._waiters[seq]
        if stale:
            log.warning("metrics: workers %s did not answer (within %ss, or no heartbeat); "
                        "using their last counters", sorted(stale), timeout)
        self.stale_pids = stale
        self._retire_dead()
        self.current = aggregate(self.latest.values(), counters_only=self._counters_of_dead())
        return self.current

    # -- labels --------------------------------------------------------------------------
    def families(self) -> Families:
        """What the prometheus plugins ask the node to export (all without any)."""
        return Families.of(self.supervisor.store.state.merged.plugins)

    def route_workspaces(self) -> dict[str, str]:
        for ws, config in self.supervisor.store.state.configs.items():
            for route in config.routes:
                self._workspaces[route.id] = ws
        return self._workspaces

    def target_states(self) -> Iterator[tuple[str, str, str, str]]:
        """(upstream name, target, address, state) for every configured target."""
        merged = self.supervisor.store.state.merged
        upstreams = {u.id: u for u in merged.upstreams}
        health = self.supervisor.api.health
        for target in merged.targets:
            upstream = upstreams.get(target.upstream)
            if upstream is None:
                continue
            state = health.target_health(upstream, target).lower()
            address = "" if state == "dns_error" else target.target
            yield upstream.name, target.target, address, state

    # -- rendering -----------------------------------------------------------------------
    def render(self, accept: str | None) -> tuple[bytes, str]:
        """The exposition of `current`: OpenMetrics if the scraper asks for it, else text."""
        encoder, content_type = choose_encoder(accept or "")
        return encoder(self.registry), content_type

    def server_status(self) -> dict[str, int]:
        """Kong's ``/status`` ``server`` block, from the last aggregate."""
        c = self.current["connections"]
        return {"connections_accepted": c["accepted"], "connections_active": c["active"],
                "connections_handled": c["accepted"], "connections_reading": c["reading"],
                "connections_writing": c["writing"], "connections_waiting": c["waiting"],
                "total_requests": self.current["requests"]}

    async def metrics_response(self, req: Request) -> Response:
        from fastgw.controlplane.admin.http import Response

        await self.refresh()
        body, content_type = self.render(req.headers.get("accept"))
        return Response(200, body, content_type=content_type)

    async def status_response(self, req: Request) -> Response:
        """``GET /status`` with fresh connection and request counts."""
        from fastgw.controlplane.admin.http import json_response

        from fastgw.controlplane.admin.http import HTTPError
        from fastgw.controlplane.admin.status import memory_options

        try:
            memory_options(req)  # a bad ?unit= or ?scale= is a 400 before any work
        except HTTPError as exc:
            return exc.response()
        await self.refresh()
        return json_response(200, self.supervisor.api.status_body(req))

    def install(self) -> None:
        """Add ``/metrics`` (and a fresh ``/status``) to the status and admin listeners."""
        sup = self.supervisor
        sup.status_api.add_route("GET", "/metrics", self.metrics_response)
        sup.status_api.add_route("GET", "/status", self.status_response)

        async def admin_metrics(call: Any) -> Response:
            return await self.metrics_response(call.req)

        sup.api.node_routes.append((("metrics",), {"GET": admin_metrics}))
