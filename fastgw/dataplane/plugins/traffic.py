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
    """One client's current windows of one plugin: for each period the counter's id,
    where it was last found, when the window started and ends, the tokens this worker
    holds in it and the shared count after its last reservation."""

    def __init__(self, n: int) -> None:
        self.second = -1
        self.ids = [0] * n
        self.hints = [0] * n
        self.starts = [-1] * n
        self.ends = [0] * n
        self.left = [0] * n
        self.after = [0] * n
        self.need = [False] * n


class RateLimiting(PhasePlugin):
    """Counts each request in every configured period's current window, node-wide
    (dataplane.plugins.counters: tokens reserved under the node's lock, spent here)."""

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

    def _roll(self, w: _Windows, ident: str, now: float, second: int) -> None:
        """A new second: windows that ended start anew (their tokens are void)."""
        w.second = second
        for i in range(len(self.limits)):
            period = self.limits[i][0]
            start = window_start(period, now)
            if start != w.starts[i]:
                w.starts[i] = start
                w.ends[i] = start + _KEEP[period]
                w.ids[i] = counter_id(counter_key(self.instance_id, ident, period, start))
                w.left[i] = 0
                w.after[i] = 0

    def access(self, call: PluginCall) -> PluginReply | None:
        now = time.time()
        second = int(now)
        ident = self.identifier(call)
        w = self.windows.get(ident)
        if w is None:
            if len(self.windows) >= _WINDOWS_KEPT:
                self.windows.clear()
            w = self.windows[ident] = _Windows(len(self.limits))
        if w.second != second:
            self._roll(w, ident, now, second)
        left = w.left
        n = len(left)
        need = w.need
        missing = False
        for i in range(n):
            need[i] = left[i] <= 0
            if need[i]:
                missing = True
        refused = False
        usage = [0] * n
        if missing:
            try:
                ok, counts, grants = self.counters.reserve(
                    w.ids, w.hints, w.ends, self.limit_values, need, second)
            except OSError as exc:
                log.error("rate-limiting: counters unavailable: %s", exc)
                if self.fault_tolerant:
                    return None
                return PluginReply(500, "An unexpected error occurred")
            for i in range(n):
                if need[i]:
                    if ok:
                        left[i] += grants[i]
                        w.after[i] = counts[i]
                    else:
                        usage[i] = counts[i]  # what the node has counted: full ones refuse
            refused = not ok
        for i in range(n):
            if not refused or not need[i]:
                # The node's count as far as this worker knows: reserved minus unspent.
                usage[i] = w.after[i] - left[i]
            if not refused:
                left[i] -= 1
        decision = self.policy.decide(usage, w.starts, now)
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
