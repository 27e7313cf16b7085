"""What every connection of one worker shares: settings, the live snapshot, counters.

`WorkerContext` is the state the request path reads (the exchange and both connection
protocols hold one); `dataplane.server.ProxyServer` extends it with the lifecycle
(listening, config swaps, draining). Keeping the shared state in this small lower module
lets the protocols name its type without importing the server that creates them.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
from typing import Any, Callable, Final

from fastgw.config.settings import GatewaySettings
from fastgw.core.http.gateway_fields import GatewayFields
from fastgw.core.http.request import RequestLimits
from fastgw.core.http.request_id import RequestIds
from fastgw.core.http.upstream_head import ForwardedFields
from fastgw.core.http.trace import TraceIds
from fastgw.dataplane.accesslog import AccessLog
from fastgw.dataplane.body import TempDir, remove_stale_files
from fastgw.dataplane.pool import Resolver
from fastgw.dataplane.snapshot import Snapshot
from fastgw.dataplane.stats import WorkerStats
from fastgw.dataplane.sweeper import DeadlineSweeper

__all__ = ["SPOOL_LIMIT", "SPOOL_MEMORY", "WorkerContext"]

# Response buffering: bytes kept in memory for a full client socket, then in a temp
# file up to SPOOL_LIMIT (nginx: proxy_buffers, then proxy_max_temp_file_size 1024m).
SPOOL_MEMORY: Final = 65536
SPOOL_LIMIT: Final = 1 << 30
_FASTGW_IDS: Final = (b"X-Request-Id",)


class WorkerContext:
    """The worker's shared state, as the request path reads it."""

    snapshot: Snapshot  # the live config's; set by the server before it accepts anything

    def __init__(self, loop: asyncio.AbstractEventLoop, settings: GatewaySettings) -> None:
        self.loop = loop
        # The loop's clock as a stored callable: compiled code calls it directly, where
        # `loop.time()` on an object of a Python type is a method lookup per call.
        self.clock: Callable[[], float] = loop.time
        self.io_sweeper = DeadlineSweeper(loop, 0.1)
        self.slow_sweeper = DeadlineSweeper(loop, 1.0)
        self.resolver = Resolver()
        self.stats = WorkerStats()
        self.request_ids = RequestIds()
        self.connections: set[Any] = set()  # the client connections (dataplane.downstream)
        self.draining = False
        self.access_log: AccessLog | None = None
        self.temp_dir = TempDir(_temp_path(settings))
        remove_stale_files(self.temp_dir.path)
        self._port_bytes: dict[int, bytes] = {}
        # One ForwardedFields per (client address, listening port): connections from the
        # same client share it and the upstream-head tail it caches (a new connection per
        # request costs no tail building). Bounded; cleared when full.
        self._forwarded: dict[tuple[str, int], ForwardedFields] = {}
        # A list: every exchange's (state, event) transitions are appended, in order
        # (tests, debugging). None: not recorded.
        self.trace: list[tuple[int, int]] | None = None
        self.trace_ids: TraceIds | None = None  # W3C trace ids (tracing), set by settings
        self.apply_settings(settings)

    def apply_settings(self, s: GatewaySettings) -> None:
        """Node settings that apply to new requests at once."""
        self.settings = s
        self.limits = RequestLimits.from_settings(s)
        self.keepalive_requests: int = s.keepalive_requests
        # What the gateway adds to responses and upstream requests (Kong's headers).
        self.fields = GatewayFields(s.headers, s.headers_upstream)
        self.one_request_id = self.fields.response_ids == _FASTGW_IDS  # the default
        self.cut_ids = frozenset(n.lower() for n in self.fields.response_ids)
        if s.tracing == "off":
            self.trace_ids = None
        elif self.trace_ids is None:
            self.trace_ids = TraceIds()
        self.client_header_timeout = float(s.client_header_timeout)
        self.client_body_timeout = float(s.client_body_timeout)
        self.client_keepalive_timeout = float(s.client_keepalive_timeout)
        self.lingering_time = float(s.lingering_time)
        self.lingering_timeout = float(s.lingering_timeout)
        # Request bodies (request_buffering) and spooled responses (response_buffering).
        self.body_buffer_size: int = s.client_body_buffer_size
        self.spool_memory: int = SPOOL_MEMORY
        self.spool_limit: int = SPOOL_LIMIT
        path = _temp_path(s)
        if self.temp_dir.path != path:
            self.temp_dir = TempDir(path)
            remove_stale_files(path)
        self.count_requests: bool = s.metrics
        self.is_trusted: Callable[[str], bool] = s.is_trusted  # memoised by the settings
        self._forwarded.clear()  # trusted_ips may have changed
        target = s.access_log
        kong_format = s.access_log_format == "kong"
        log = self.access_log
        if log is None or (log.target, log.kong_format, log.redact) != (
                target, kong_format, s.access_log_redact):
            if log is not None:
                log.close()
            self.access_log = AccessLog(target, kong_format, s.access_log_redact) \
                if target else None

    def forwarded_fields(self, ip: str, port: int, proto: bytes) -> ForwardedFields:
        """What the gateway tells a backend about a client on this listener (U7)."""
        key = (ip, port)
        fields = self._forwarded.get(key)
        if fields is None or fields.proto != proto:
            if len(self._forwarded) >= 4096:
                self._forwarded.clear()
            fields = self._forwarded[key] = ForwardedFields(
                ip, self.port_bytes(port), proto, self.is_trusted(ip))
        return fields

    def port_bytes(self, port: int) -> bytes:
        """A listening port as bytes (X-Forwarded-Port), made once per port."""
        value = self._port_bytes.get(port)
        if value is None:
            value = self._port_bytes[port] = str(port).encode()
        return value


def _temp_path(s: GatewaySettings) -> str:
    return s.client_body_temp_path or os.path.join(tempfile.gettempdir(), "fastgw-client-body")
