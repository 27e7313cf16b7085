"""Plugin chains, built once per config snapshot: which instances run on each route.

`PluginRuntime` is the worker's lasting plugin state (the node's shared rate-limit
counters); `build_chains` resolves, for every route, the instances that apply (Kong's
precedence, core.plugins.chain) into a `PluginChain` of ready plugin objects, plus one
chain per consumer that has instances of its own on the route. A route with no plugin
gets None: the exchange then pays one attribute test.

The canary plugin is resolved the same way but acts when a target is picked (it is the
route's balancer: dataplane.balancing.CanaryBalancer), so it is returned apart; the
prometheus plugin has no phase (its settings govern the node's /metrics, and
`counts_consumers` tells the exchange to count requests per consumer).
"""

from __future__ import annotations

import asyncio
import atexit
import os
import tempfile
from typing import Any, Callable

import orjson

from fastgw.config.plugins import PLUGINS
from fastgw.config.settings import GatewaySettings
from fastgw.core.plugins.proxycache import ResponseCache
from fastgw.core.plugins.chain import consumers_with_plugins, resolve
from fastgw.dataplane.plugins.auth import Acl, BasicAuth, Consumers, KeyAuth
from fastgw.dataplane.accesslog import AccessLog
from fastgw.dataplane.plugins.counters import SharedCounters
from fastgw.dataplane.plugins.headers import (
    CorrelationId,
    Cors,
    RequestTransformer,
    ResponseTransformer,
)
from fastgw.dataplane.plugins.logs import FileLog, HttpLog, HttpLogQueue
from fastgw.dataplane.plugins.phases import PhasePlugin, PluginChain
from fastgw.dataplane.plugins.proxycache import ProxyCache
from fastgw.dataplane.plugins.traffic import IpRestriction, RateLimiting, RequestSizeLimiting

__all__ = ["PluginRuntime", "build_chains", "counts_consumers", "COUNTERS_ENV"]

# Set by the supervisor for its workers: the node's counter file (dataplane.plugins.counters);
# its semaphore is named after the file.
COUNTERS_ENV = "FASTGW_COUNTERS_FILE"
_PRIORITIES = {name: spec.priority for name, spec in PLUGINS.items()}
# Plugins that take no part in the phases.
_NO_PHASE = frozenset({"canary", "prometheus"})


def counts_consumers(config: Any) -> bool:
    """Whether an enabled prometheus plugin asks for per-consumer counts."""
    return any(p.name == "prometheus" and p.enabled and p.config.get("per_consumer")
               for p in config.plugins)


class PluginRuntime:
    """A worker's plugin state that outlives snapshots: the node's rate-limit counters,
    file-log writers by path, http-log queues by instance and config, proxy-cache's
    responses (one store per worker, as Kong's one shared dict per node)."""

    def __init__(self, path: str | None = None,
                 loop: asyncio.AbstractEventLoop | None = None) -> None:
        self.path = path or os.environ.get(COUNTERS_ENV)
        self.loop = loop
        self._counters: SharedCounters | None = None
        self.files: dict[str, AccessLog] = {}
        self.queues: dict[tuple[str, bytes], HttpLogQueue] = {}
        self.response_cache = ResponseCache(GatewaySettings().proxy_cache_size)

    def file_sink(self, path: str) -> AccessLog:
        sink = self.files.get(path)
        if sink is None:
            sink = self.files[path] = AccessLog(path, kong_format=True)
        return sink

    def http_queue(self, plugin: Any) -> HttpLogQueue:
        key = (plugin.id, orjson.dumps(plugin.config, option=orjson.OPT_SORT_KEYS))
        queue = self.queues.get(key)
        if queue is None:
            loop = self.loop or asyncio.get_event_loop()
            queue = self.queues[key] = HttpLogQueue(loop, plugin.config)
        return queue

    def retain(self, files: set[str], queues: set[tuple[str, bytes]]) -> None:
        """After a config change: close what no plugin uses any more (queues drain)."""
        for path in [p for p in self.files if p not in files]:
            self.files.pop(path).close()
        for key in [k for k in self.queues if k not in queues]:
            self.queues.pop(key).close()

    def flush(self, now: float | None = None) -> None:
        """Once a second (the worker's slow sweeper): hand file-log lines to their writers.
        A copy of the list: a snapshot built in a thread may add or close writers."""
        for sink in list(self.files.values()):
            sink.flush()

    def close(self) -> None:
        self.retain(set(), set())

    @property
    def counters(self) -> SharedCounters:
        """The node's counters, opened on first use (only rate-limiting needs them)."""
        if self._counters is None:
            path = self.path
            lock_name: str | None = None
            if path is None:  # no supervisor (tests, embedding): a file of our own
                fd, path = tempfile.mkstemp(prefix="fastgw-counters-")
                os.close(fd)
                atexit.register(_unlink, path)
            else:
                lock_name = "/" + os.path.basename(path)
            self.path = path
            self._counters = SharedCounters(path, lock_name)
        return self._counters


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


Factory = Callable[[Any, "_Build"], PhasePlugin]


class _Build:
    """What plugin constructors may need, made once per snapshot."""

    __slots__ = ("runtime", "_consumers", "consumer_list")

    def __init__(self, runtime: PluginRuntime, consumers: Any) -> None:
        self.runtime = runtime
        self.consumer_list = consumers
        self._consumers: Consumers | None = None

    @property
    def consumers(self) -> Consumers:
        if self._consumers is None:
            self._consumers = Consumers(self.consumer_list)
        return self._consumers


def _make(plugin: Any, build: _Build) -> PhasePlugin:
    name = plugin.name
    args = (name, _PRIORITIES[name], plugin.id)
    config = plugin.config
    if name == "key-auth":
        return KeyAuth(*args, config, build.consumers)
    if name == "basic-auth":
        return BasicAuth(*args, config, build.consumers)
    if name == "acl":
        return Acl(*args, config, build.consumers)
    if name == "rate-limiting":
        return RateLimiting(*args, config, build.runtime.counters)
    if name == "ip-restriction":
        return IpRestriction(*args, config)
    if name == "request-size-limiting":
        return RequestSizeLimiting(*args, config)
    if name == "cors":
        return Cors(*args, config)
    if name == "correlation-id":
        return CorrelationId(*args, config)
    if name == "request-transformer":
        return RequestTransformer(*args, config)
    if name == "response-transformer":
        return ResponseTransformer(*args, config)
    if name == "proxy-cache":
        return ProxyCache(*args, config, build.runtime.response_cache)
    if name == "file-log":
        return FileLog(*args, build.runtime.file_sink(config["path"]))
    if name == "http-log":
        return HttpLog(*args, build.runtime.http_queue(plugin))
    raise ValueError(f"plugin '{name}' has no phase implementation")  # config refuses it


def build_chains(config: Any, routes: list[Any], services: dict[str, Any],
                 runtime: PluginRuntime) -> tuple[dict[str, PluginChain], dict[str, Any]]:
    """(route id -> its chain, for routes with plugins; route id -> its canary plugin)."""
    instances = [p for p in config.plugins if p.enabled]
    runtime.response_cache.resize(config.gateway.proxy_cache_size)
    phased = [p for p in instances if p.name not in _NO_PHASE]
    chains: dict[str, PluginChain] = {}
    canaries: dict[str, Any] = {}
    runtime.retain({p.config["path"] for p in phased if p.name == "file-log"},
                   {(p.id, orjson.dumps(p.config, option=orjson.OPT_SORT_KEYS))
                    for p in phased if p.name == "http-log"})
    if not instances:
        return chains, canaries
    build = _Build(runtime, config.consumers)
    made: dict[str, PhasePlugin] = {}  # one object per instance, shared by routes

    def objects(found: list[Any]) -> list[PhasePlugin]:
        out = []
        for plugin in found:
            if plugin.name in _NO_PHASE:
                continue
            obj = made.get(plugin.id)
            if obj is None:
                obj = made[plugin.id] = _make(plugin, build)
            out.append(obj)
        return out

    for route in routes:
        service_id = route.service if route.service in services else None
        found = resolve(instances, _PRIORITIES, route.id, service_id)
        canary = next((p for p in found if p.name == "canary"), None)
        if canary is not None:
            canaries[route.id] = canary
        by_consumer: dict[str, PluginChain] = {}
        for consumer_id in consumers_with_plugins(phased, route.id, service_id):
            own = objects(resolve(phased, _PRIORITIES, route.id, service_id, consumer_id))
            by_consumer[consumer_id] = PluginChain(own)
        plugins = objects(found)
        if plugins or by_consumer:
            chains[route.id] = PluginChain(plugins, by_consumer or None)
    return chains, canaries
