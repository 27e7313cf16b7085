"""W3C Trace Context (`traceparent`) for the requests the gateway proxies.

The gateway is one hop of a trace: a request that arrives with a valid `traceparent`
keeps its trace id and flags, and goes upstream with a new parent id (the gateway's own
span); a request without one (or with an invalid one, which the spec says to ignore)
starts a trace: new trace id, new parent id, flags `01` (sampled, so the services behind
record it). `tracestate` passes through unchanged like any field. The trace id is written
to the access log, so a log line and a trace find each other.

Ids are random (the spec's requirement for trace ids) and drawn in batches: one
os.urandom call per 1024 requests, a slice of its hex digits per request.

traceparent = version "-" trace-id "-" parent-id "-" trace-flags
              00        32 hex, not all 0   16 hex, not all 0   2 hex
"""

from __future__ import annotations

import os
import re
from typing import Final

__all__ = ["TraceIds", "parse_traceparent"]

_TRACEPARENT: Final = re.compile(rb"00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")
_ZERO_TRACE: Final = b"0" * 32
_ZERO_SPAN: Final = b"0" * 16
_BATCH: Final = 1024


def parse_traceparent(value: bytes) -> tuple[bytes, bytes] | None:
    """(trace id, flags) of a valid version-00 traceparent, else None (ignored)."""
    m = _TRACEPARENT.fullmatch(value.strip())
    if m is None or m.group(1) == _ZERO_TRACE or m.group(2) == _ZERO_SPAN:
        return None
    return m.group(1), m.group(3)


class TraceIds:
    """Random trace ids and span ids, cut from batches of random hex digits."""

    __slots__ = ("_trace_digits", "_span_digits", "_t", "_s")

    def __init__(self) -> None:
        self._trace_digits = b""
        self._span_digits = b""
        self._t = 0  # offset of the next trace id in _trace_digits
        self._s = 0

    def add_line(self, parts: list[bytes], incoming: bytes | None) -> bytes:
        """Append the upstream `traceparent` line, in pieces, to `parts` (a head being
        built: one join later instead of a bytes object per piece now) for a request that
        came with `incoming` (its traceparent value, or None); return the trace id."""
        parsed = parse_traceparent(incoming) if incoming is not None else None
        if parsed is None:
            trace, flags = self._trace(), b"01"
        else:
            trace, flags = parsed
        parts += (b"traceparent: 00-", trace, b"-", self._span(), b"-", flags, b"\r\n")
        return trace

    def _trace(self) -> bytes:
        i = self._t
        if i >= len(self._trace_digits):
            self._trace_digits = os.urandom(16 * _BATCH).hex().encode()
            i = 0
        self._t = i + 32
        return self._trace_digits[i:i + 32]

    def _span(self) -> bytes:
        i = self._s
        if i >= len(self._span_digits):
            self._span_digits = os.urandom(8 * _BATCH).hex().encode()
            i = 0
        self._s = i + 16
        return self._span_digits[i:i + 16]
