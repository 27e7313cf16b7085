"""rate-limiting decisions (Kong 3.x ``kong/plugins/rate-limiting``), pure.

Windows are fixed and aligned as Kong's ``kong.tools.timestamp.get_timestamps``: the
current second, minute, hour and day (UTC), calendar month and year. A request is
refused when, for any configured period, the usage already counted in the current window
has reached the limit; otherwise it counts once in every period's window. Unlike Kong,
whose ``local`` policy checks in the access phase and increments later from a timer (so
concurrent requests may all pass the check), fastgw checks and increments in one step
under the node's counter lock (``fastgw.dataplane.plugins.counters``): never more than
the limit per window, across every worker of the node.

Response fields, as Kong's handler writes them (unless ``hide_client_headers``): for
every period ``X-RateLimit-Limit-<Period>`` and ``X-RateLimit-Remaining-<Period>``; then
``RateLimit-Limit``, ``RateLimit-Remaining`` and ``RateLimit-Reset`` of the period with
the fewest requests left (ties: the longer window); on refusal ``Retry-After`` (the
reset, also when headers are hidden) and the configured ``error_code`` (429) and
``error_message`` ("API rate limit exceeded").
"""

from __future__ import annotations

import calendar
import time
from math import floor
from typing import Final, Sequence

__all__ = ["PERIOD_SECONDS", "PERIODS", "window_start", "decide", "Decision", "counter_key",
           "LimitPolicy"]

PERIODS: Final = ("second", "minute", "hour", "day", "month", "year")
PERIOD_SECONDS: Final = {"second": 1, "minute": 60, "hour": 3600, "day": 86400,
                         "month": 2592000, "year": 31536000}
_X_LIMIT: Final = {p: f"X-RateLimit-Limit-{p.capitalize()}".encode() for p in PERIODS}
_X_REMAINING: Final = {p: f"X-RateLimit-Remaining-{p.capitalize()}".encode() for p in PERIODS}


def window_start(period: str, now: float) -> int:
    """Epoch second at which the window of ``period`` holding ``now`` began (UTC)."""
    second = int(floor(now))
    if period in ("second", "minute", "hour", "day"):
        size = PERIOD_SECONDS[period]
        return second - second % size
    t = time.gmtime(second)
    if period == "month":
        return calendar.timegm((t.tm_year, t.tm_mon, 1, 0, 0, 0, 0, 0, 0))
    return calendar.timegm((t.tm_year, 1, 1, 0, 0, 0, 0, 0, 0))


def counter_key(scope: str, identifier: str, period: str, start: int) -> bytes:
    """The shared counter of one plugin instance, client and window."""
    return f"{scope}|{identifier}|{period}|{start}".encode("utf-8", "surrogateescape")


def _num(x: float) -> bytes:
    return b"%d" % x if x == int(x) else repr(x).encode()


class Decision:
    """The outcome for one request: refused or not, and the response fields to add."""

    __slots__ = ("refused", "lines", "retry_after")

    def __init__(self, refused: bool, lines: list[bytes], retry_after: int) -> None:
        self.refused = refused
        self.lines = lines  # complete "Name: value\r\n" lines
        self.retry_after = retry_after


def decide(limits: Sequence[tuple[str, float]], usage: Sequence[int], starts: Sequence[int],
           now: float, hide_headers: bool) -> Decision:
    """``limits``: (period, limit) in period order; ``usage``: each window's count before
    this request (the counter store increments them only when not refused); ``starts``:
    each window's start (``window_start``)."""
    stop: str | None = None
    n = len(limits)
    for i in range(n):
        if limits[i][1] - usage[i] <= 0:
            stop = limits[i][0]
    lines: list[bytes] = []
    best_limit = 0.0
    best_remaining = -1.0
    best_window = 0
    reset = 1
    for i in range(n):
        period, limit = limits[i]
        remaining = limit - usage[i]
        if stop is None or stop == period:
            remaining -= 1
        if remaining < 0:
            remaining = 0.0
        window = PERIOD_SECONDS[period]
        if best_remaining < 0 or remaining < best_remaining or (
                remaining == best_remaining and window > best_window):
            best_limit, best_remaining, best_window = limit, remaining, window
            reset = max(1, window - int(now - starts[i]))
        if not hide_headers:
            lines += (_X_LIMIT[period], b": ", _num(limit), b"\r\n",
                      _X_REMAINING[period], b": ", _num(remaining), b"\r\n")
    if not hide_headers and n:
        lines += (b"RateLimit-Limit: ", _num(best_limit), b"\r\nRateLimit-Remaining: ",
                  _num(best_remaining), b"\r\nRateLimit-Reset: %d\r\n" % reset)
    if stop is not None:
        lines.append(b"Retry-After: %d\r\n" % reset)
    return Decision(stop is not None, [b"".join(lines)] if lines else [], reset)


class LimitPolicy:
    """One plugin's limits with their response fields prepared, so the common case (one
    period, integral limits) decides with a few concatenations; `decide` is the rule."""

    def __init__(self, limits: Sequence[tuple[str, float]], hide_headers: bool) -> None:
        self.limits = list(limits)
        self.hide = hide_headers
        self.single = len(self.limits) == 1 and self.limits[0][1] == int(self.limits[0][1])
        if self.single:
            period, limit = self.limits[0]
            self.limit = limit
            self.window = PERIOD_SECONDS[period]
            number = _num(limit)
            self.prefix = (_X_LIMIT[period] + b": " + number + b"\r\n" + _X_REMAINING[period]
                           + b": ")
            self.middle = b"\r\nRateLimit-Limit: " + number + b"\r\nRateLimit-Remaining: "

    def decide(self, usage: Sequence[int], starts: Sequence[int], now: float) -> Decision:
        if not self.single:
            return decide(self.limits, usage, starts, now, self.hide)
        remaining = int(self.limit) - usage[0]
        refused = remaining <= 0
        remaining = remaining - 1 if remaining > 0 else 0
        reset = self.window - int(now - starts[0])
        if reset < 1:
            reset = 1
        if self.hide:
            return Decision(refused, [b"Retry-After: %d\r\n" % reset] if refused else [], reset)
        count = b"%d" % remaining
        lines = self.prefix + count + self.middle + count + b"\r\nRateLimit-Reset: %d\r\n" % reset
        if refused:
            lines += b"Retry-After: %d\r\n" % reset
        return Decision(refused, [lines], reset)
