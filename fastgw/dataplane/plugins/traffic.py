"""rate-limiting, ip-restriction and request-size-limiting on the phases (decisions in
core.plugins.ratelimit and core.plugins.iprestriction)."""

from __future__ import annotations

import logging
import time
from typing import Any, Final, Mapping

from fastgw.core.http.request import CHUNKED, LENGTH
from fastgw.core.plugins.iprestriction import DEFAULT_MESSAGE, IpMatcher
from fastgw.core.plugins.ratelimit import PERIODS, LimitPolicy, counter_key, window_start
from fastgw.dataplane.plugins.counters import SharedCounters, counter_id
from fastgw.dataplane.plugins.phases import PhasePlugin, PluginCall, PluginReply

__all__ = ["RateLimiting", "IpRestriction", "RequestSizeLimiting"]

log = logging.getLogger("fastgw.plugins")

# How long a window's counter is kept: at least the window (months and years vary).
_KEEP: Final = {"second": 1, "minute": 60, "hour": 3600, "day": 86400,
                "month": 32 * 86400, "year": 367 * 86400}
_WINDOWS_KEPT: Final = 10000  # clients whose current windows are remembered per plugin


class _Windows:
    """One client's current windows of one plugin: the counters' ids, where they were
    last found, and when they end (recomputed when the second changes)."""

    def __init__(self, second: int, ids: list[int], starts: list[int],
                 ends: list[int]) -> None:
        self.second = second
        self.ids = ids
        self.hints = [0] * len(ids)
        self.starts = starts
        self.ends = ends


class RateLimiting(PhasePlugin):
    def __init__(self, name: str, priority: int, instance_id: str, config: Mapping[str, Any],
                 counters: SharedCounters) -> None:
        super().__init__(name, priority, instance_id)
        self.limits = [(p, float(config[p])) for p in PERIODS if config.get(p) is not None]
        self.limit_values = [limit for _, limit in self.limits]
        self.limit_by: str = config["limit_by"]
        header = config.get("header_name")
        self.header = header.lower().encode("latin-1") if header else None
        self.path: str | None = config.get("path")
        self.hide = bool(config["hide_client_headers"])
        self.error_code = int(config["error_code"])
        self.error_message: str = config["error_message"]
        self.fault_tolerant = bool(config["fault_tolerant"])
        self.counters = counters
        self.windows: dict[str, _Windows] = {}
        self.policy = LimitPolicy(self.limits, self.hide)
        self.single = len(self.limits) == 1

    def identifier(self, call: PluginCall) -> str:
        """Whose requests are counted together (Kong's get_identifier); the client's
        address when the configured one is missing."""
        by = self.limit_by
        found: str | None = None
        if by == "consumer":
            consumer = call.consumer
            found = consumer.id if consumer is not None else call.credential_id
        elif by == "credential":
            found = call.credential_id
        elif by == "service":
            found = call.service_id
        elif by == "header" and self.header is not None:
            value = call.head.field(self.header)
            found = value.decode("latin-1") if value is not None else None
        elif by == "path":
            path = call.head.path.decode("latin-1")
            found = path if path == self.path else None
        return found if found is not None else call.client_ip

    def _windows(self, ident: str, now: float, second: int) -> _Windows:
        ids = []
        starts = []
        ends = []
        for period, _limit in self.limits:
            start = window_start(period, now)
            key = counter_key(self.instance_id, ident, period, start)
            ids.append(counter_id(key))
            starts.append(start)
            ends.append(start + _KEEP[period])
        windows = self.windows
        if len(windows) >= _WINDOWS_KEPT:
            windows.clear()
        found = windows[ident] = _Windows(second, ids, starts, ends)
        return found

    def access(self, call: PluginCall) -> PluginReply | None:
        now = time.time()
        second = int(now)
        ident = self.identifier(call)
        windows = self.windows.get(ident)
        if windows is None or windows.second != second:
            windows = self._windows(ident, now, second)
        try:
            if self.single:
                usage = [self.counters.hit_one(windows.ids[0], windows.hints,
                                               windows.ends[0], self.limit_values[0], second)]
            else:
                usage = self.counters.hit(windows.ids, windows.hints, windows.ends,
                                          self.limit_values, second)
        except OSError as exc:
            log.error("rate-limiting: counters unavailable: %s", exc)
            if self.fault_tolerant:
                return None
            return PluginReply(500, "An unexpected error occurred")
        decision = self.policy.decide(usage, windows.starts, now)
        if decision.refused:
            return PluginReply(self.error_code, self.error_message, decision.lines)
        if decision.lines:
            call.add_response_lines(decision.lines[0])
        return None


class IpRestriction(PhasePlugin):
    def __init__(self, name: str, priority: int, instance_id: str,
                 config: Mapping[str, Any]) -> None:
        super().__init__(name, priority, instance_id)
        self.matcher = IpMatcher(config.get("allow"), config.get("deny"))
        self.status = int(config.get("status") or 403)
        self.message: str = config.get("message") or DEFAULT_MESSAGE

    def access(self, call: PluginCall) -> PluginReply | None:
        if self.matcher.allowed(call.client_ip):
            return None
        return PluginReply(self.status, self.message)


_UNITS: Final = {"megabytes": 1 << 20, "kilobytes": 1 << 10, "bytes": 1}
SIZE_EXCEEDED: Final = "Request size limit exceeded"


class RequestSizeLimiting(PhasePlugin):
    def __init__(self, name: str, priority: int, instance_id: str,
                 config: Mapping[str, Any]) -> None:
        super().__init__(name, priority, instance_id)
        self.limit = int(config["allowed_payload_size"]) * _UNITS[config["size_unit"]]
        self.require_length = bool(config["require_content_length"])

    def access(self, call: PluginCall) -> PluginReply | None:
        head = call.head
        if head.framing == LENGTH:
            if head.content_length > self.limit:
                return PluginReply(413, SIZE_EXCEEDED)
            return None
        if self.require_length:
            return PluginReply(411, "A valid Content-Length header is required")
        if head.framing == CHUNKED:
            if call.received > self.limit:  # read already (it came with the head)
                return PluginReply(413, SIZE_EXCEEDED)
            # Counted as it is read (the exchange's body limit), then 413 and close.
            call.body_limit = self.limit if not call.body_limit else min(call.body_limit,
                                                                         self.limit)
        return None
