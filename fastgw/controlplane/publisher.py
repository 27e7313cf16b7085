"""Config versions on their way to the workers: what to send, and when each is live.

Every accepted change is a new store version. ``ConfigPublisher.publish`` turns it into the
one message every worker gets: the change itself (``fastgw.config.delta``) when it is small
and the node settings did not change, else the whole config. A worker that starts, or that
cannot apply a change to the version it has (``resync``), gets ``whole()``, built lazily
(dumping 10,000 services takes ~140 ms; spawns and reloads are rare, writes are not).

Workers ack the version they made live; a worker that skipped versions (it applies only
the newest of those queued) acks them all at once. ``on_acks`` turns that into
propagation times: a version is live when every worker runs it or a newer one, and its
time is from the push to that moment. ``staleness`` is how long the node has served a
config older than the store's newest: what ``/status`` and the metrics report, while
``/status/ready`` stays 200 (a complete older config still serves).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from fastgw.config.delta import config_delta, delta_size
from fastgw.config.model import Config

if TYPE_CHECKING:
    from fastgw.controlplane.store import StoreState

__all__ = ["DELTA_LIMIT", "ConfigPublisher"]

DELTA_LIMIT = 500  # entities; a larger change is cheaper to send whole than to patch in
_KEEP = 64  # versions whose push time and propagation are remembered


class ConfigPublisher:
    def __init__(self, health_message: Callable[[], dict[str, Any]],
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.health_message = health_message
        self.clock = clock
        self.version = 0  # newest version published
        self.config: Config | None = None  # its merged config
        self.pushed_at: dict[int, float] = {}
        self.propagation_ms: dict[int, float] = {}
        self._state: StoreState | None = None
        self._whole: dict[str, Any] | None = None  # cached whole message of self.version

    def start(self, state: StoreState) -> None:
        """The version the workers start with."""
        self._set(state, None)

    def publish(self, state: StoreState) -> dict[str, Any]:
        """The message that brings every worker from the last version to ``state``."""
        delta = config_delta(self.config, state.merged) if self.config is not None else None
        base = self.version
        self._set(state, None)
        if delta is None or delta_size(delta) > DELTA_LIMIT:
            return self.whole()
        return {"type": "config", "version": state.version, "base": base, "changes": delta}

    def whole(self) -> dict[str, Any]:
        """The newest version as a whole config (a new worker's first message)."""
        if self._whole is None:
            assert self._state is not None, "nothing published yet"
            self._whole = {"type": "config", "version": self._state.version,
                           "workspaces": self._state.snapshot(), "health": self.health_message()}
        return self._whole

    def _set(self, state: StoreState, whole: dict[str, Any] | None) -> None:
        self._state = state
        self._whole = whole
        self.version = state.version
        self.config = state.merged
        self.pushed_at[state.version] = self.clock()
        for old in sorted(self.pushed_at)[:-_KEEP]:
            self.pushed_at.pop(old, None)
            self.propagation_ms.pop(old, None)

    def on_acks(self, acked: Iterable[int]) -> list[tuple[int, float]]:
        """Versions that just became live on every worker, given each worker's newest
        acked version, with their push-to-live times in ms."""
        everywhere = min(acked, default=0)
        now = self.clock()
        done = []
        for version in sorted(self.pushed_at):
            if version > everywhere:
                break
            if version not in self.propagation_ms:
                ms = round((now - self.pushed_at[version]) * 1000, 3)
                self.propagation_ms[version] = ms
                done.append((version, ms))
        return done

    def staleness(self, acked: Iterable[int]) -> float:
        """Seconds since the oldest version some worker does not run yet was pushed."""
        behind = [v for v in acked if v < self.version]
        if not behind:
            return 0.0
        oldest = min(behind) + 1
        pushed = self.pushed_at.get(oldest)
        if pushed is None:  # forgotten already: the oldest one remembered is a lower bound
            pushed = min(self.pushed_at.values())
        return max(0.0, self.clock() - pushed)

    @property
    def latest_propagated(self) -> tuple[int | None, float | None]:
        if not self.propagation_ms:
            return None, None
        version = max(self.propagation_ms)
        return version, self.propagation_ms[version]
