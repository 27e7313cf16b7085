"""proxy-cache on the phases (decisions and the store in core.plugins.proxycache).

access         Bypass, or the key; a fresh entry is answered at once (Hit: the stored
               status, fields and body, ``Age``), without a backend; otherwise Miss or
               Refresh, and the request goes on with a `CacheFill` as the call's tee.
header_filter  a response that may not be stored drops the tee (Bypass); else the tee
               keeps its status and fields.
body           the tee copies the decoded body up to the cache's bound, and stores the
               entry when the response was read whole.

The cache itself is the worker's (dataplane.plugins.registry.PluginRuntime): it outlives
config snapshots, and the supervisor's purges reach it over IPC (dataplane.worker).
"""

from __future__ import annotations

import time
from typing import Any, Final, Mapping

from fastgw.core.plugins.proxycache import (
    NOT_STORED,
    CachedResponse,
    Directives,
    ResponseCache,
    cache_key,
    directives,
    header_args,
    query_args,
    request_cacheable,
    request_uri,
    resource_ttl,
    response_cacheable,
)
from fastgw.dataplane.plugins.phases import BodyTee, PhasePlugin, PluginCall, PluginReply

__all__ = ["ProxyCache", "CacheFill"]

_NO_DIRECTIVES: Final[Directives] = {}


def _status_line(value: bytes) -> bytes:
    return b"X-Cache-Status: " + value + b"\r\n"


class ProxyCache(PhasePlugin):
    def __init__(self, name: str, priority: int, instance_id: str,
                 config: Mapping[str, Any], cache: ResponseCache) -> None:
        super().__init__(name, priority, instance_id)
        self.cache = cache
        self.filters_response = True
        self.statuses = frozenset(int(s) for s in config["response_code"])
        self.methods = frozenset(config["request_method"])
        self.types = frozenset(config["content_type"])
        self.cache_ttl = float(config["cache_ttl"])
        storage_ttl = config.get("storage_ttl")
        self.storage_ttl = float(storage_ttl) if storage_ttl is not None else -1.0
        self.cache_control = bool(config["cache_control"])
        self.ignore_uri_case = bool(config.get("ignore_uri_case"))
        self.vary_query_params: list[str] = list(config.get("vary_query_params") or ())
        self.vary_headers: list[str] = list(config.get("vary_headers") or ())
        shown = config.get("response_headers") or {}
        self.show_age = bool(shown.get("age", True))
        self.show_status = bool(shown.get("X-Cache-Status", True))
        self.show_key = bool(shown.get("X-Cache-Key", True))

    def _set_status(self, call: PluginCall, value: bytes) -> None:
        if self.show_status:
            call.set_response_field(b"x-cache-status", _status_line(value))

    def access(self, call: PluginCall) -> PluginReply | None:
        head = call.head
        cc = _NO_DIRECTIVES
        if self.cache_control:
            value = head.field(b"cache-control")
            cc = directives(value.decode("latin-1") if value is not None else None)
        if not request_cacheable(head.method, self.methods, self.cache_control, cc):
            self._set_status(call, b"Bypass")
            return None
        consumer = call.consumer
        key = cache_key(
            consumer.id if consumer is not None else None, call.route_id, head.method,
            request_uri(head.method, head.target, head.http11, self.ignore_uri_case),
            query_args(head.query, self.ignore_uri_case), header_args(head.headers),
            self.vary_query_params, self.vary_headers)
        if self.show_key:
            call.set_response_field(b"x-cache-key", b"X-Cache-Key: %s\r\n" % key.encode())
        now = time.time()
        entry = self.cache.get(key, now)
        if entry is None:
            if self.cache_control and "only-if-cached" in cc:
                return PluginReply(504, None, [], b"")  # RFC 9111 §5.2.1.7
            self._fill(call, key, b"Miss")
            return None
        age = now - entry.timestamp
        if self.cache_control:
            max_age = cc.get("max-age")
            max_stale = cc.get("max-stale")
            min_fresh = cc.get("min-fresh")
            if (isinstance(max_age, float) and age > max_age) or (
                    isinstance(max_stale, float) and age - entry.ttl > max_stale) or (
                    isinstance(min_fresh, float) and entry.ttl - age < min_fresh):
                self._fill(call, key, b"Refresh")
                return None
        elif age > self.cache_ttl:
            self._fill(call, key, b"Refresh")  # kept for storage_ttl, not fresh
            return None
        self._set_status(call, b"Hit")
        lines = [b"%s: %s\r\n" % (name, value) for name, value in entry.fields
                 if not (self.show_age and name.lower() == b"age")]
        if self.show_age:
            lines.append(b"Age: %d\r\n" % int(age))
        return PluginReply(entry.status, None, lines, entry.body, entry.length)

    def _fill(self, call: PluginCall, key: str, status: bytes) -> None:
        self._set_status(call, status)
        call.tee = CacheFill(self, key, call.head.method == "HEAD")

    def header_filter(self, call: PluginCall, status: int,
                      fields: list[tuple[bytes, bytes]]) -> None:
        tee = call.tee
        if not isinstance(tee, CacheFill) or tee.plugin is not self:
            return
        types: list[bytes] = []
        control: list[bytes] = []
        expires: bytes | None = None
        length = -1
        kept: list[tuple[bytes, bytes]] = []
        for name, value in fields:
            lname = name.lower()
            if lname == b"content-type":
                types.append(value)
            elif lname == b"cache-control":
                control.append(value)
            elif lname == b"expires":
                expires = value  # the last one wins (Kong)
            elif lname == b"content-length" and value.isdigit():
                length = int(value)
            if lname not in NOT_STORED:
                kept.append((name, value))
        cc = _NO_DIRECTIVES
        now = time.time()
        ttl = self.cache_ttl
        if self.cache_control:
            cc = directives(b", ".join(control).decode("latin-1"))
            ttl = resource_ttl(cc, expires.decode("latin-1") if expires is not None else None,
                               now)
        if not response_cacheable(status, self.statuses, types, self.types,
                                  self.cache_control, cc, ttl) or (tee.head_only and length < 0):
            call.tee = None
            self._set_status(call, b"Bypass")
            return
        tee.status = status
        tee.fields = kept
        tee.ttl = ttl
        tee.length = length

    def storage_seconds(self, ttl: float) -> float:
        """How long the store keeps an entry: storage_ttl, else its ttl."""
        return self.storage_ttl if self.storage_ttl >= 0 else ttl


class CacheFill(BodyTee):
    """One Miss or Refresh: the response's copy on its way into the cache."""

    def __init__(self, plugin: ProxyCache, key: str, head_only: bool) -> None:
        self.plugin = plugin
        self.key = key
        self.head_only = head_only
        self.status = 0  # set by header_filter when the response may be stored
        self.fields: list[tuple[bytes, bytes]] = []
        self.ttl = 0.0
        self.length = -1
        self.parts: list[bytes] | None = []
        self.size = 0

    def feed(self, data: bytes) -> None:
        parts = self.parts
        if parts is None:
            return
        self.size += len(data)
        if self.size > self.plugin.cache.limit:
            self.parts = None  # larger than the whole cache: never stored
            return
        parts.append(bytes(data))

    def complete(self) -> None:
        parts = self.parts
        if parts is None or not self.status:
            return
        body = b"".join(parts)
        self.parts = None
        now = time.time()
        plugin = self.plugin
        length = self.length if self.head_only else len(body)
        plugin.cache.put(self.key, CachedResponse(
            self.status, self.fields, body, length, now, self.ttl,
            plugin.storage_seconds(self.ttl)))
