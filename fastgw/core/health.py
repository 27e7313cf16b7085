"""Target health: the pure state machine behind active and passive health checks.

No I/O and no clock: every call takes ``now`` (seconds, any monotonic origin). The
supervisor owns one ``HealthBoard`` per node; the active prober (``fastgw.controlplane.prober``)
and the workers' passive reports feed it, and its per-target results are pushed to every
worker, which turns them into balancer availability with ``availability()``.

Rules (Kong's ``lua-resty-healthcheck``, reference/kong.md §4)
-----------------------------------------------------------------
1. Counters are per target and shared by both sources (active probes, passive traffic):
   ``successes``, ``http_failures``, ``tcp_failures``, ``timeouts``. The limit a counter
   is compared with comes from the side (active or passive) that reported the event.
2. A success clears every failure counter; any failure clears the success counter. They
   count consecutive events since the opposite event, not a time window.
3. A healthy target flips to unhealthy when a failure counter reaches its non-zero limit;
   an unhealthy target flips back when successes reach theirs. A limit of 0 disables that
   counter. Every flip resets all counters. A status in neither list is ignored.
4. Health checking is "on" for an upstream if an active interval is non-zero or a passive
   unhealthy counter is non-zero; otherwise targets report ``HEALTHCHECKS_OFF``.

Beyond Kong, on purpose (reference §7, §8)
------------------------------------------
5. Timed ejection (Envoy outlier detection): a target made unhealthy by *passive* checks
   comes back by itself after ``base_ejection_time x ejections`` seconds, capped at
   ``max_ejection_time``. The multiplier decays by one per ``base_ejection_time`` spent
   healthy. ``base_ejection_time = 0`` restores Kong (down until active checks or an
   operator bring it back). An active probe failing on an ejected target cancels the
   timer: the active checker then decides when it is back.
6. Slow start: a target that becomes healthy (or is added by a config change) carries a
   weight factor ``max(10%, t / slow_start)`` (Envoy with aggression 1), quantised to
   tenths so workers rebuild their balancers at most ten times per window.
7. Panic mode: when the healthy share of the weight is below ``panic_threshold`` percent,
   every target with weight takes traffic again instead of nothing (``availability``).
8. Manual overrides (Admin API ``/healthy``, ``/unhealthy``) set the state directly and
   reset counters and timers; with health checks off they are what the target reports.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

__all__ = [
    "HEALTHY", "UNHEALTHY", "HEALTHCHECKS_OFF", "SUCCESS", "HTTP_FAILURE", "TCP_FAILURE",
    "TIMEOUT", "ACTIVE", "PASSIVE", "MANUAL", "CheckLimits", "HealthPolicy", "TargetHealth",
    "Transition", "HealthBoard", "availability", "slow_start_percent", "ejection_seconds",
]

HEALTHY, UNHEALTHY, HEALTHCHECKS_OFF = "HEALTHY", "UNHEALTHY", "HEALTHCHECKS_OFF"
# Event kinds (short: they travel in every passive IPC batch).
SUCCESS, HTTP_FAILURE, TCP_FAILURE, TIMEOUT = "s", "h", "t", "o"
ACTIVE, PASSIVE, MANUAL = "active", "passive", "manual"
_KIND_NAMES = {SUCCESS: "successes", HTTP_FAILURE: "http failures", TCP_FAILURE: "tcp failures",
               TIMEOUT: "timeouts"}
MIN_SLOW_START_PERCENT = 10


@dataclass(frozen=True, slots=True)
class CheckLimits:
    """One side's thresholds (``healthchecks.active`` or ``healthchecks.passive``)."""

    successes: int = 0
    healthy_statuses: frozenset[int] = frozenset()
    http_failures: int = 0
    tcp_failures: int = 0
    timeouts: int = 0
    unhealthy_statuses: frozenset[int] = frozenset()

    @classmethod
    def from_record(cls, side: Mapping[str, Any]) -> CheckLimits:
        ok = side.get("healthy") or {}
        bad = side.get("unhealthy") or {}
        return cls(
            successes=int(ok.get("successes") or 0),
            healthy_statuses=frozenset(ok.get("http_statuses") or ()),
            http_failures=int(bad.get("http_failures") or 0),
            tcp_failures=int(bad.get("tcp_failures") or 0),
            timeouts=int(bad.get("timeouts") or 0),
            unhealthy_statuses=frozenset(bad.get("http_statuses") or ()),
        )

    def limit(self, kind: str) -> int:
        if kind == SUCCESS:
            return self.successes
        if kind == HTTP_FAILURE:
            return self.http_failures
        if kind == TCP_FAILURE:
            return self.tcp_failures
        return self.timeouts

    def classify(self, status: int) -> str | None:
        """SUCCESS, HTTP_FAILURE, or None for an orphan status (ignored, as in Kong)."""
        if status in self.healthy_statuses:
            return SUCCESS
        if status in self.unhealthy_statuses:
            return HTTP_FAILURE
        return None

    @property
    def counts_failures(self) -> bool:
        return bool(self.http_failures or self.tcp_failures or self.timeouts)


@dataclass(frozen=True, slots=True)
class HealthPolicy:
    """An upstream's ``healthchecks`` record, read once per config."""

    active: CheckLimits = CheckLimits()
    passive: CheckLimits = CheckLimits()
    active_type: str = "http"
    timeout: float = 1.0
    concurrency: int = 10
    http_path: str = "/"
    https_sni: str | None = None
    https_verify_certificate: bool = True
    headers: tuple[tuple[str, str], ...] = ()
    healthy_interval: float = 0.0
    unhealthy_interval: float = 0.0
    threshold: float = 0.0
    panic_threshold: float = 0.0
    slow_start: float = 0.0
    base_ejection_time: float = 30.0
    max_ejection_time: float = 300.0

    @classmethod
    def from_healthchecks(cls, hc: Mapping[str, Any] | None) -> HealthPolicy:
        hc = hc or {}
        active = hc.get("active") or {}
        passive = hc.get("passive") or {}
        headers = tuple((str(name), str(value))
                        for name, values in (active.get("headers") or {}).items()
                        for value in (values if isinstance(values, (list, tuple)) else [values]))
        return cls(
            active=CheckLimits.from_record(active),
            passive=CheckLimits.from_record(passive),
            active_type=str(active.get("type") or "http"),
            timeout=float(active.get("timeout") or 1),
            concurrency=max(1, int(active.get("concurrency") or 10)),
            http_path=str(active.get("http_path") or "/"),
            https_sni=active.get("https_sni"),
            https_verify_certificate=active.get("https_verify_certificate") is not False,
            headers=headers,
            healthy_interval=float((active.get("healthy") or {}).get("interval") or 0),
            unhealthy_interval=float((active.get("unhealthy") or {}).get("interval") or 0),
            threshold=float(hc.get("threshold") or 0),
            panic_threshold=float(hc.get("panic_threshold") or 0),
            slow_start=float(hc.get("slow_start") or 0),
            base_ejection_time=float(passive.get("base_ejection_time", 30) or 0),
            max_ejection_time=float(passive.get("max_ejection_time", 300) or 0),
        )

    @property
    def active_enabled(self) -> bool:
        return self.healthy_interval > 0 or self.unhealthy_interval > 0

    @property
    def passive_enabled(self) -> bool:
        return self.passive.counts_failures

    @property
    def enabled(self) -> bool:
        """Kong's rule 4: HEALTHCHECKS_OFF otherwise."""
        return self.active_enabled or self.passive_enabled

    def side(self, source: str) -> CheckLimits:
        return self.active if source == ACTIVE else self.passive


def ejection_seconds(ejections: int, base: float, cap: float) -> float:
    """Envoy: base x number of ejections, capped (a cap of 0 means uncapped)."""
    seconds = base * max(1, ejections)
    return min(seconds, cap) if cap > 0 else seconds


def slow_start_percent(elapsed: float, window: float) -> int:
    """Weight percent ``elapsed`` seconds into a slow-start window, in steps of 10."""
    if window <= 0 or elapsed >= window:
        return 100
    tenths = int(10 * max(elapsed, 0.0) / window)
    return max(MIN_SLOW_START_PERCENT, tenths * 10)


class TargetHealth:
    """One target's health on this node."""

    __slots__ = ("healthy", "counters", "ejections", "ejected_until", "healthy_since",
                 "ramp_from", "manual", "reason")

    def __init__(self, now: float, ramp: bool = False) -> None:
        self.healthy = True  # Kong: a new target starts healthy
        self.counters: dict[str, int] = {}
        self.ejections = 0
        self.ejected_until: float | None = None  # passive ejection that ends by itself
        self.healthy_since = now
        self.ramp_from: float | None = now if ramp else None  # slow start origin
        self.manual = False  # last set by an operator
        self.reason = "new target"


@dataclass(frozen=True, slots=True)
class Transition:
    key: tuple[str, str]  # (upstream id, "host:port")
    healthy: bool
    reason: str

    def describe(self, upstream_name: str) -> str:
        state = HEALTHY if self.healthy else UNHEALTHY
        return f"upstream {upstream_name} target {self.key[1]} is {state}: {self.reason}"


class HealthBoard:
    """Every target's health on one node, keyed by (upstream id, target address).

    Keys are addresses, not balancer positions or target ids, so adding, removing or
    re-weighting other targets (or this one) never resets a target's state (Kong #7835).
    """

    def __init__(self) -> None:
        self.policies: dict[str, HealthPolicy] = {}
        self.targets: dict[tuple[str, str], TargetHealth] = {}
        self._configured = False

    # -- configuration -------------------------------------------------------------------
    def configure(self, upstreams: Mapping[str, tuple[HealthPolicy, Iterable[str]]],
                  now: float) -> list[Transition]:
        """Install policies and target sets; keep the state of every surviving target."""
        changes: list[Transition] = []
        live: set[tuple[str, str]] = set()
        for uid, (policy, addresses) in upstreams.items():
            old = self.policies.get(uid)
            self.policies[uid] = policy
            for addr in addresses:
                key = (uid, addr)
                live.add(key)
                state = self.targets.get(key)
                if state is None:
                    # A target added while running warms up; the initial set does not.
                    ramp = self._configured and policy.slow_start > 0
                    self.targets[key] = TargetHealth(now, ramp=ramp)
                elif old is not None and old.enabled and not policy.enabled \
                        and not state.healthy and not state.manual:
                    changes.append(self._flip(key, state, True, "health checks turned off", now))
        for key in [k for k in self.targets if k not in live]:
            del self.targets[key]
        for uid in [u for u in self.policies if u not in upstreams]:
            del self.policies[uid]
        self._configured = True
        return changes

    # -- events --------------------------------------------------------------------------
    def record(self, key: tuple[str, str], source: str, kind: str, now: float,
               count: int = 1) -> Transition | None:
        """``count`` consecutive events of one kind from one source (rules 1-3, 5)."""
        state = self.targets.get(key)
        policy = self.policies.get(key[0])
        if state is None or policy is None or count <= 0:
            return None
        limits = policy.side(source)
        counters = state.counters
        if kind == SUCCESS:
            n = counters.get(SUCCESS, 0) + count
            counters.clear()
            if state.healthy:
                return None
            counters[SUCCESS] = n
            limit = limits.successes
            if limit and n >= limit:
                return self._flip(key, state, True, f"{source} check: {n} successes", now)
            return None
        counters.pop(SUCCESS, None)
        n = counters.get(kind, 0) + count
        counters[kind] = n
        if not state.healthy:
            if source == ACTIVE and state.ejected_until is not None:
                state.ejected_until = None  # rule 5: active probes now own the recovery
            return None
        limit = limits.limit(kind)
        if not limit or n < limit:
            return None
        reason = f"{source} check: {n} {_KIND_NAMES[kind]}"
        transition = self._flip(key, state, False, reason, now)
        if source == PASSIVE and policy.base_ejection_time > 0:
            base = policy.base_ejection_time
            # The multiplier decays by one for every base period the target stayed healthy.
            decay = int((now - state.healthy_since) // base)
            state.ejections = max(0, state.ejections - decay) + 1
            seconds = ejection_seconds(state.ejections, base, policy.max_ejection_time)
            state.ejected_until = now + seconds
            transition = Transition(key, False, f"{reason}, ejected for {seconds:g}s")
            state.reason = transition.reason
        return transition

    def record_status(self, key: tuple[str, str], source: str, status: int,
                      now: float) -> Transition | None:
        policy = self.policies.get(key[0])
        kind = policy.side(source).classify(status) if policy is not None else None
        return self.record(key, source, kind, now) if kind is not None else None

    def set_manual(self, key: tuple[str, str], healthy: bool, now: float) -> Transition | None:
        state = self.targets.get(key)
        if state is None:
            return None
        state.manual = True
        state.counters.clear()
        state.ejected_until = None
        if state.healthy == healthy:
            return None
        return self._flip(key, state, healthy, "set by the Admin API", now, manual=True)

    def tick(self, now: float) -> list[Transition]:
        """Passive ejections whose time is up (rule 5)."""
        out = []
        for key, state in self.targets.items():
            if state.ejected_until is not None and state.ejected_until <= now:
                out.append(self._flip(key, state, True, "ejection time elapsed", now))
        return out

    def next_deadline(self, now: float) -> float | None:
        """When ``tick`` or a slow-start step next has something to do."""
        best: float | None = None
        for key, state in self.targets.items():
            due = state.ejected_until
            if due is None and state.ramp_from is not None:
                window = self.policies[key[0]].slow_start
                pct = slow_start_percent(now - state.ramp_from, window)
                due = state.ramp_from + window * (pct // 10 + 1) / 10 if pct < 100 else now
            if due is not None and (best is None or due < best):
                best = due
        return best

    def _flip(self, key: tuple[str, str], state: TargetHealth, healthy: bool, reason: str,
              now: float, manual: bool = False) -> Transition:
        state.healthy = healthy
        state.counters.clear()
        state.ejected_until = None
        state.manual = manual
        state.reason = reason
        if healthy:
            state.healthy_since = now
            policy = self.policies.get(key[0])
            state.ramp_from = now if policy is not None and policy.slow_start > 0 else None
        else:
            state.ramp_from = None
        return Transition(key, healthy, reason)

    # -- reading -------------------------------------------------------------------------
    def status(self, key: tuple[str, str]) -> str:
        """HEALTHY / UNHEALTHY / HEALTHCHECKS_OFF as the Admin API reports it."""
        state = self.targets.get(key)
        policy = self.policies.get(key[0])
        if state is None:
            return HEALTHCHECKS_OFF
        if (policy is None or not policy.enabled) and not state.manual:
            return HEALTHCHECKS_OFF
        return HEALTHY if state.healthy else UNHEALTHY

    def weight_percent(self, key: tuple[str, str], now: float) -> int:
        state = self.targets.get(key)
        if state is None or state.ramp_from is None:
            return 100
        pct = slow_start_percent(now - state.ramp_from, self.policies[key[0]].slow_start)
        if pct >= 100:
            state.ramp_from = None  # the ramp is over
        return pct

    def upstream_table(self, uid: str, now: float) -> dict[str, list[int]]:
        """``{address: [healthy 0/1, weight percent]}``: what workers need, and no more."""
        return {addr: [1 if st.healthy else 0, self.weight_percent((u, addr), now)]
                for (u, addr), st in self.targets.items() if u == uid}


def availability(healthy: Sequence[int], weights: Sequence[int], threshold: float = 0.0,
                 panic_threshold: float = 0.0) -> tuple[bytearray, str]:
    """Per-target availability for the balancer, and the upstream's mode.

    Modes: ``"normal"``; ``"panic"`` (healthy weight share below ``panic_threshold``
    percent: every weighted target takes traffic, rule 7); ``"unhealthy"`` (Kong: the
    balancer is healthy only if the available share is strictly above ``threshold``;
    otherwise nothing is available and requests get 503).
    """
    total = sum(w for w in weights if w > 0)
    up = sum(w for w, h in zip(weights, healthy) if h and w > 0)
    share = up * 100.0 / total if total else 0.0
    if panic_threshold > 0 and share < panic_threshold:
        return bytearray(1 for _ in weights), "panic"
    if threshold > 0 and share <= threshold:
        return bytearray(len(weights)), "unhealthy"
    return bytearray(1 if h else 0 for h in healthy), "normal"

