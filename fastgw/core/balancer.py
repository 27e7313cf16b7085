"""Target selection for upstreams: the pure, synchronous core of load balancing.

Theory of operation
-------------------
A balancer object is built once per (upstream, target list) and is rebuilt by the
caller whenever targets or weights change. Targets are identified by their index
``0..n-1`` in the caller's target list. Health is not tracked here: the caller
passes ``available``, a per-index sequence (``bytearray`` or ``list[bool]``) that
it updates in place, and ``exclude``, the indices this request already tried
(retries). A target with weight 0 is never picked. Every ``pick`` returns an
index or ``None`` when nothing is eligible (the caller answers 503, like Kong's
"failure to get a peer from the ring-balancer").

* ``SmoothWeightedRoundRobin`` is nginx's smooth weighted round-robin
  (``ngx_http_upstream_get_peer``): every eligible peer gets
  ``current += weight``, the highest ``current`` wins (first wins ties) and pays
  back ``total``. Ineligible peers are left out of that round, exactly as nginx
  does, so the others keep their relative proportions and smoothness.
* ``ConsistentHashRing`` is a Ketama continuum: each target puts
  ``~160 * weight / mean_weight`` points on a 32-bit circle, placed by a stable
  hash (blake2b) of ``"<key> <i>"``. A request key (CRC-32, stable across
  processes, unlike ``hash()``) is mapped to the first point at or after it,
  walking clockwise past unavailable or excluded targets. Adding a target only
  takes over the arcs its own points cover, so about 1/(N+1) of the keys move
  and none move between two old targets.
* ``LeastConnections`` picks the lowest ``(in_flight + 1) / weight`` (Kong's
  formula: the heaviest target wins when all are idle); ties are broken
  round-robin so that idle traffic spreads out.

Why smooth WRR instead of Kong's shuffled wheel
-----------------------------------------------
Kong's round-robin repeats every address ``weight/gcd`` times in a wheel that is
shuffled randomly, so proportions are exact only over a whole wheel and can come
in bursts (weights 17/31 give a random 48-slot wheel, and each worker shuffles
its own). Smooth WRR gives the same long-run proportions with the most even
interleaving possible (5,1,1 gives ``a a b a c a a``), is deterministic and
testable, and needs no wheel rebuild when health changes.

Speed
-----
For a fixed set of eligible targets the SWRR dynamics are periodic with period
``sum(eligible weights)`` (after at most one transient period), so one period of
picks and states is recorded and then replayed while ``available`` equals the
recorded snapshot: the common-case pick is one C-level compare plus a list index,
whether everything is up or one target is down. A retry pick (``exclude``) or a
health change runs the explicit nginx loop from the recorded state and starts a
new recording. This memoizes the exact dynamics; it is not an approximation
(tests compare against a plain transcription of the nginx loop).
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Collection, Mapping, Sequence
from hashlib import blake2b
from math import gcd, inf
from typing import Any, Final
from urllib.parse import unquote_plus
from zlib import crc32

__all__ = [
    "SmoothWeightedRoundRobin",
    "ConsistentHashRing",
    "LeastConnections",
    "HashingBalancer",
    "make_balancer",
    "hash_input",
    "balancer_key",
    "hash_cookie_header",
]

Avail = Sequence[Any]  # bytearray, list[bool] or list[int]; truthy = may receive traffic

# Longest SWRR period (sum of gcd-reduced weights) that is recorded for replay.
# Larger periods (odd weights like 997/1000) always use the explicit loop.
_MAX_PERIOD: Final = 1024
_POINTS_PER_TARGET: Final = 160  # Ketama/Kong default
_MIN_SLOTS: Final = 1000  # Kong clamps slots to >= 1000 for the continuum


class SmoothWeightedRoundRobin:
    """nginx smooth weighted round-robin over target indices."""

    __slots__ = ("weights", "_w", "_aw", "_cw", "_seq", "_states", "_k", "_key", "_period",
                 "_rec_key", "_rec_period", "_rec_seq", "_rec_states")
    needs_key = False

    def __init__(self, weights: Sequence[int]) -> None:
        self.weights: tuple[int, ...] = tuple(int(w) for w in weights)
        if any(w < 0 for w in self.weights):
            raise ValueError("weights must be >= 0")
        g = 0
        for w in self.weights:
            g = gcd(g, w)
        # Dividing by the gcd scales the state vector without changing any choice,
        # and keeps replay periods short (Kong's default 100/100 -> period 2).
        self._w: list[int] = [w // g if g else 0 for w in self.weights]
        self._aw: tuple[tuple[int, int], ...] = tuple((i, w) for i, w in enumerate(self._w) if w)
        self._cw: list[int] = [0] * len(self._w)
        # Replay memo: while `available` equals the snapshot `_key` and nothing is
        # excluded, pick number k of the recorded orbit is `_seq[k]`, and the
        # state before it is `_states[k]`.
        self._seq: list[int] | None = None
        self._states: list[tuple[int, ...]] = []
        self._k = 0
        self._key: Any = None
        self._period = 0
        self._rec_key: Any = None  # availability snapshot being recorded
        self._rec_period = 0  # 0 = do not record for _rec_key
        self._rec_seq: list[int] = []
        self._rec_states: list[tuple[int, ...]] = []
        everyone = bytearray([1] * len(self._w))
        for _ in range(sum(self._w) if sum(self._w) <= _MAX_PERIOD else 0):
            self._pick_slow(everyone, ())  # records the canonical cycle from zero

    def pick(self, available: Avail, exclude: Collection[int] = (), key: Any = None) -> int | None:
        # `available == snapshot` is a C-level compare for bytearray and list.
        if not exclude and available == self._key:
            k = self._k
            nk = k + 1
            self._k = 0 if nk == self._period else nk
            return self._seq[k]  # type: ignore[index]
        return self._pick_slow(available, exclude)

    def acquire(self, i: int) -> None:
        """Attempts are not counted (only least-connections needs them)."""

    def release(self, i: int) -> None:
        """See acquire."""

    def _pick_slow(self, available: Avail, exclude: Collection[int]) -> int | None:
        if self._seq is not None:
            # Leave replay: the explicit loop continues from the recorded state.
            self._cw = list(self._states[self._k])
            self._seq = None
            self._key = None
        cw = self._cw
        best = -1
        best_cw = 0
        total = 0
        if exclude:
            self._rec_key = None  # a one-off retry round breaks any orbit being recorded
            for i, wi in self._aw:
                if available[i] and i not in exclude:
                    c = cw[i] + wi
                    cw[i] = c
                    total += wi
                    if best < 0 or c > best_cw:  # strict '>': first wins ties, as nginx
                        best = i
                        best_cw = c
            if best >= 0:
                cw[best] = best_cw - total
                return best
            return None

        if self._rec_key is None or available != self._rec_key:
            # New availability pattern: start recording its orbit. Its period is the
            # sum of the eligible weights (after at most one transient period).
            self._rec_key = available[:]
            p = sum(wi for i, wi in self._aw if available[i])
            self._rec_period = p if p <= _MAX_PERIOD else 0
            self._rec_seq = []
            self._rec_states = []
        before = tuple(cw) if self._rec_period else None
        for i, wi in self._aw:
            if available[i]:
                c = cw[i] + wi
                cw[i] = c
                total += wi
                if best < 0 or c > best_cw:
                    best = i
                    best_cw = c
        if best < 0:
            return None
        cw[best] = best_cw - total
        if before is not None:
            rs = self._rec_states
            rs.append(before)
            self._rec_seq.append(best)
            if len(rs) == self._rec_period:
                if tuple(cw) == rs[0]:  # closed orbit: replay it from now on
                    self._seq = self._rec_seq
                    self._states = rs
                    self._k = 0
                    self._key = self._rec_key
                    self._period = self._rec_period
                # else a transient: record the next period from here
                self._rec_seq = []
                self._rec_states = []
        return best


class ConsistentHashRing:
    """Ketama-style continuum; owners are target indices in the caller's order.

    Differences from Kong, on purpose: points sit on the full 32-bit circle (no
    ``mod slots`` collisions; ``slots`` only caps the point count) and the walk
    past down targets goes clockwise (Kong goes counter-clockwise). A given key
    therefore lands on a different target than it would in Kong (which also
    hashes with xxhash32); stickiness and movement properties are the same.
    """

    __slots__ = ("_pos", "_owner", "_next", "_npoints", "_ntargets")
    needs_key = True

    def __init__(self, keys: Sequence[str], weights: Sequence[int], slots: int = 10000) -> None:
        if len(keys) != len(weights):
            raise ValueError("keys and weights differ in length")
        live = [i for i, w in enumerate(weights) if w > 0]
        total = sum(weights[i] for i in live)
        budget = max(int(slots), _MIN_SLOTS)
        # Kong's formula: points proportional to weight, 160 per average target.
        counts = {i: max(1, int(weights[i] * len(live) * _POINTS_PER_TARGET / total))
                  for i in live}
        npts = sum(counts.values())
        if npts > budget:  # keep the continuum bounded by `slots`
            counts = {i: max(1, c * budget // npts) for i, c in counts.items()}
        points: list[tuple[int, str, int]] = []
        for i in live:
            key = keys[i]
            for j in range(counts[i]):
                h = blake2b(f"{key} {j}".encode(), digest_size=4).digest()
                points.append((int.from_bytes(h, "big"), key, i))
        # Sorting by (position, key) makes the ring independent of list order.
        points.sort(key=lambda p: (p[0], p[1]))
        self._pos: list[int] = [p[0] for p in points]
        self._owner: list[int] = [p[2] for p in points]
        self._npoints = n = len(points)
        self._ntargets = len(live)
        # _next[i]: first point clockwise of i owned by another target, so a walk
        # past a down target skips its consecutive points in one hop.
        nxt = [0] * n
        if len(live) > 1:
            owner = self._owner
            j = 0
            while owner[j] == owner[-1]:
                j += 1  # first point not owned like the last one (wrap-around)
            for i in range(n - 1, -1, -1):
                nxt[i] = j
                if owner[i] != owner[i - 1]:
                    j = i
        self._next: list[int] = nxt

    def pick(self, hash_value: str | bytes, available: Avail,
             exclude: Collection[int] = ()) -> int | None:
        n = self._npoints
        if not n:
            return None
        data = hash_value.encode() if isinstance(hash_value, str) else hash_value
        i = bisect_left(self._pos, crc32(data))
        if i == n:
            i = 0  # wrap around the circle
        t = self._owner[i]
        if available[t] and (not exclude or t not in exclude):
            return t
        return self._walk(i, available, exclude)

    def _walk(self, i: int, available: Avail, exclude: Collection[int]) -> int | None:
        # Clockwise to the next eligible owner. Hop over runs of one owner first;
        # if that revisits owners, finish with a full scan that sees each once.
        owner = self._owner
        nxt = self._next
        j = i
        for _ in range(self._ntargets - 1):
            j = nxt[j]
            t = owner[j]
            if available[t] and t not in exclude:
                return t
        n = self._npoints
        seen = {owner[i]}
        for step in range(1, n):
            t = owner[(i + step) % n]
            if t in seen:
                continue
            if available[t] and t not in exclude:
                return t
            seen.add(t)
            if len(seen) >= self._ntargets:
                break
        return None

    def owner(self, hash_value: str | bytes) -> int | None:
        """Owner ignoring health (for tests and diagnostics)."""
        if not self._npoints:
            return None
        hv = hash_value.encode() if isinstance(hash_value, str) else hash_value
        i = bisect_left(self._pos, crc32(hv))
        return self._owner[0 if i == self._npoints else i]


class LeastConnections:
    """Lowest (in_flight + 1) / weight wins; ties round-robin."""

    __slots__ = ("_w", "counts", "_scores", "_rr", "_n")
    needs_key = False

    def __init__(self, weights: Sequence[int]) -> None:
        self._w: tuple[int, ...] = tuple(int(w) for w in weights)
        self._n = len(self._w)
        self.counts: list[int] = [0] * self._n
        # Division (not multiplication by 1/w) is correctly rounded, so equal
        # ratios give equal floats and tie-breaking stays exact.
        self._scores: list[float] = [1 / w if w > 0 else inf for w in self._w]
        self._rr = 0

    def pick(self, available: Avail, exclude: Collection[int] = (), key: Any = None) -> int | None:
        s = self._scores
        if exclude or 0 in available:
            s = [x if a else inf for x, a in zip(s, available)]
            for i in exclude:
                s[i] = inf
        m = min(s)
        if m == inf:
            return None
        j = s.index(m)
        rr = self._rr
        if j < rr:  # prefer the first tie at or after the rotating cursor
            tail = s[rr:]
            if m in tail:
                j = rr + tail.index(m)
        j1 = j + 1
        self._rr = 0 if j1 == self._n else j1
        return j

    def acquire(self, i: int) -> None:
        c = self.counts[i] + 1
        self.counts[i] = c
        w = self._w[i]
        self._scores[i] = (c + 1) / w if w > 0 else inf

    def release(self, i: int) -> None:
        c = self.counts[i] - 1
        if c < 0:
            c = 0  # tolerate a double release rather than go negative
        self.counts[i] = c
        w = self._w[i]
        self._scores[i] = (c + 1) / w if w > 0 else inf


class HashingBalancer:
    """``ConsistentHashRing`` behind the common ``pick(available, exclude, key)``."""

    __slots__ = ("ring", "_pick")
    needs_key = True

    def __init__(self, ring: ConsistentHashRing) -> None:
        self.ring = ring
        self._pick = ring.pick

    def pick(self, available: Avail, exclude: Collection[int] = (),
             key: str | bytes | None = None) -> int | None:
        # Kong hashes a missing value as "" (all such requests share one target).
        return self._pick(b"" if key is None else key, available, exclude)

    def acquire(self, i: int) -> None:
        """Attempts are not counted (only least-connections needs them)."""

    def release(self, i: int) -> None:
        """See acquire."""


Balancer = SmoothWeightedRoundRobin | HashingBalancer | LeastConnections


def _get(obj: Any, name: str) -> Any:
    if isinstance(obj, Mapping):
        return obj.get(name)
    return getattr(obj, name, None)


def make_balancer(upstream: Any, target_keys: Sequence[str], weights: Sequence[int]) -> Balancer:
    """Build the balancer for ``upstream.algorithm``.

    All returned objects have ``pick(available, exclude=(), key=None)`` and
    ``needs_key``. ``"latency"`` (Kong 3.2+ peak-EWMA) is not implemented yet and
    falls back to least-connections, which also favours fast targets because they
    release connections sooner. ``"sticky-sessions"`` (Kong 3.11) is not implemented
    either: the load loop warns, and its targets get round-robin without the cookie.
    """
    algorithm = _get(upstream, "algorithm") or "round-robin"
    if algorithm in ("round-robin", "sticky-sessions"):
        return SmoothWeightedRoundRobin(weights)
    if algorithm == "consistent-hashing":
        slots = _get(upstream, "slots") or 10000
        return HashingBalancer(ConsistentHashRing(target_keys, weights, slots))
    if algorithm in ("least-connections", "latency"):
        return LeastConnections(weights)
    raise ValueError(f"unknown balancer algorithm: {algorithm!r}")


def cookie_value(raw: str, name: str) -> str | None:
    """The value of cookie `name` in a Cookie header, or None."""
    for part in raw.split(";"):
        k, sep, v = part.partition("=")
        if sep and k.strip() == name:
            return v.strip()
    return None


def _query_arg(query: str, name: str) -> str | None:
    # Like ngx.req.get_uri_args + Kong's normalisation: a bare `a` is "true",
    # repeated args are sorted and joined with ",".
    values: list[str] = []
    for part in query.split("&"):
        if not part:
            continue
        k, sep, v = part.partition("=")
        if unquote_plus(k) == name:
            values.append(unquote_plus(v) if sep else "true")
    if not values:
        return None
    if len(values) == 1:
        return values[0]
    values.sort()
    return ",".join(values)


_EMPTY: Final[Mapping[str, str]] = {}


def hash_input(upstream: Any, side: str = "on", *, client_ip: str = "",
               headers: Mapping[str, Any] = _EMPTY, path: str = "/", query: str = "",
               captures: Mapping[str, Any] | None = None,
               consumer_id: str | None = None) -> str | None:
    """Value to hash for ``hash_on`` (side "on") or ``hash_fallback`` (side "fallback").

    ``None`` means "no value" (the caller tries the fallback). For ``cookie``,
    ``None`` means the cookie is missing: the caller generates a uuid, hashes it
    and sets the cookie with ``hash_cookie_header``.
    """
    fb = side == "fallback"
    kind = _get(upstream, "hash_fallback" if fb else "hash_on")
    if not kind or kind == "none":
        return None
    if kind == "ip":
        return client_ip or None
    if kind == "consumer":
        return consumer_id or None  # caller passes consumer id, else credential id
    if kind == "header":
        name = _get(upstream, "hash_fallback_header" if fb else "hash_on_header")
        value = headers.get(name.lower()) if name else None
        if isinstance(value, (list, tuple)):
            value = ", ".join(value)  # nginx >= 1.23 joins repeated headers
        return value
    if kind == "cookie":
        name = _get(upstream, "hash_on_cookie")  # one cookie name for both sides
        raw = headers.get("cookie")
        if not name or not raw:
            return None
        if isinstance(raw, (list, tuple)):
            raw = "; ".join(raw)
        return cookie_value(raw, name)
    if kind == "path":
        return path
    if kind == "query_arg":
        name = _get(upstream, "hash_fallback_query_arg" if fb else "hash_on_query_arg")
        return _query_arg(query, name) if name and query else None
    if kind == "uri_capture":
        name = _get(upstream, "hash_fallback_uri_capture" if fb else "hash_on_uri_capture")
        if not captures or not name:
            return None
        value = captures.get(name)
        if value is None or value is False:  # unmatched optional group
            return None
        return value if isinstance(value, str) else str(value)
    return None  # unknown kind: schema validation rejects it; behave like none


def balancer_key(upstream: Any, **request: Any) -> str | None:
    """Apply ``hash_on`` then ``hash_fallback`` (Kong ``get_value_to_hash``)."""
    value = hash_input(upstream, "on", **request)
    if value is None and _get(upstream, "hash_on") not in (None, "none", "cookie"):
        value = hash_input(upstream, "fallback", **request)
    return value


def hash_cookie_header(upstream: Any, value: str) -> bytes:
    """``Set-Cookie`` header value for a generated hash cookie (no name, no CRLF).

    Kong writes the misspelt ``Same-Site=Lax``, which browsers ignore; the valid
    ``SameSite`` attribute is used here.
    """
    name = _get(upstream, "hash_on_cookie")
    path = _get(upstream, "hash_on_cookie_path") or "/"
    return f"{name}={value}; Path={path}; SameSite=Lax; HttpOnly".encode("latin-1")
