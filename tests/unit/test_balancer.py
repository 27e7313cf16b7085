"""Tests for fastgw.core.balancer (pure selection core)."""

from __future__ import annotations

import random
from bisect import bisect_left
from collections import Counter
from types import SimpleNamespace
from zlib import crc32

import pytest

from fastgw.core.balancer import (
    ConsistentHashRing,
    HashingBalancer,
    LeastConnections,
    SmoothWeightedRoundRobin,
    balancer_key,
    hash_cookie_header,
    hash_input,
    make_balancer,
)

LETTERS = "abcdefghij"


def upstream(**kw):
    base = dict(
        algorithm="round-robin", hash_on="none", hash_fallback="none",
        hash_on_header=None, hash_fallback_header=None, hash_on_cookie=None,
        hash_on_cookie_path="/", hash_on_query_arg=None, hash_fallback_query_arg=None,
        hash_on_uri_capture=None, hash_fallback_uri_capture=None, slots=10000,
    )
    base.update(kw)
    return SimpleNamespace(**base)


def nginx_reference(weights, avail_seq):
    """Straight transcription of ngx_http_upstream_get_peer (no replay tricks)."""
    cw = [0] * len(weights)
    out = []
    for available, exclude in avail_seq:
        best, total = None, 0
        for i, w in enumerate(weights):
            if w == 0 or not available[i] or i in exclude:
                continue
            cw[i] += w
            total += w
            if best is None or cw[i] > cw[best]:
                best = i
        if best is not None:
            cw[best] -= total
        out.append(best)
    return out


# --------------------------------------------------------------------------- SWRR

@pytest.mark.parametrize("weights, expected", [
    ([5, 1, 1], "aabacaa" * 3),
    ([2, 1], "aba" * 4),
    ([1, 1], "ab" * 5),
    ([1, 1, 1], "abc" * 3),
    ([100, 100], "ab" * 4),        # Kong default weights reduce by gcd
    ([1], "a" * 5),
    ([0, 1], "b" * 5),
    ([3, 0, 1], "aaca" * 3),
    ([4, 2], "aba" * 3),
])
def test_swrr_sequences(weights, expected):
    b = SmoothWeightedRoundRobin(weights)
    avail = bytearray([1] * len(weights))
    got = "".join(LETTERS[b.pick(avail)] for _ in range(len(expected)))
    assert got == expected


@pytest.mark.parametrize("weights, picks, expected", [
    ([3, 1], 400, [300, 100]),
    ([5, 3, 2], 1000, [500, 300, 200]),
    ([17, 31], 480, [170, 310]),
    ([997, 1000], 1997, [997, 1000]),  # period above the replay cap: explicit loop
])
def test_swrr_exact_proportions(weights, picks, expected):
    b = SmoothWeightedRoundRobin(weights)
    avail = [True] * len(weights)
    c = Counter(b.pick(avail) for _ in range(picks))
    assert [c[i] for i in range(len(weights))] == expected


def test_swrr_weight_zero_never_picked():
    b = SmoothWeightedRoundRobin([0, 2, 0, 1])
    rng = random.Random(7)
    for _ in range(2000):
        avail = bytearray(rng.random() < 0.8 for _ in range(4))
        i = b.pick(avail)
        assert i in (None, 1, 3)
        if i is not None:
            assert avail[i]


@pytest.mark.parametrize("weights, avail, exclude", [
    ([1, 1], [0, 0], ()),
    ([5, 1, 1], [1, 1, 1], (0, 1, 2)),
    ([5, 1, 1], [0, 1, 0], {1}),
    ([0, 0], [1, 1], ()),
    ([], [], ()),
])
def test_swrr_nothing_eligible(weights, avail, exclude):
    assert SmoothWeightedRoundRobin(weights).pick(bytearray(avail), exclude) is None


@pytest.mark.parametrize("weights, down, picks, expected", [
    ([5, 3, 2], 2, 800, [500, 300, 0]),
    ([5, 3, 2], 0, 500, [0, 300, 200]),
    ([1, 1, 1, 1], 1, 300, [100, 0, 100, 100]),
    ([2, 1, 1], 0, 200, [0, 100, 100]),
])
def test_swrr_unavailable_share_goes_to_rest_proportionally(weights, down, picks, expected):
    b = SmoothWeightedRoundRobin(weights)
    avail = bytearray([1] * len(weights))
    for _ in range(7):  # start mid-cycle
        b.pick(avail)
    avail[down] = 0
    # Counts over a window are exact up to +/-1 (the window starts mid-cycle).
    seq = [b.pick(avail) for _ in range(picks)]
    got = [seq.count(i) for i in range(len(weights))]
    assert all(abs(g - e) <= 1 for g, e in zip(got, expected)), got
    assert got[down] == 0
    avail[down] = 1
    seq = [b.pick(avail) for _ in range(sum(weights) * 10)]
    got = [seq.count(i) for i in range(len(weights))]
    assert all(abs(g - w * 10) <= 1 for g, w in zip(got, weights)), got


def test_swrr_skipped_peer_keeps_others_smooth():
    # a:b:c = 2:1:1 with 'a' down -> b and c alternate exactly.
    b = SmoothWeightedRoundRobin([2, 1, 1])
    seq = [b.pick([False, True, True]) for _ in range(10)]
    assert all(x != y for x, y in zip(seq, seq[1:]))


@pytest.mark.parametrize("container", [bytearray, list])
@pytest.mark.parametrize("seed, weights", [
    (1, [5, 1, 1]), (2, [2, 1]), (3, [1, 1, 1, 1]), (4, [3, 0, 7, 2]),
    (5, [100, 50, 25]), (6, [1]), (7, [9, 8, 7, 6, 5, 4, 3, 2, 1, 1]), (8, [600, 601]),
    (9, [2, 4, 6]),
])
def test_swrr_matches_nginx_reference_under_churn(seed, weights, container):
    """Replay/record optimisation must be exactly the nginx dynamics."""
    rng = random.Random(seed)
    n = len(weights)
    trace = []
    mask = [1] * n
    for _ in range(4000):
        r = rng.random()
        if r < 0.02:  # health flip that persists for a while
            mask = [int(rng.random() < 0.75) for _ in range(n)]
        elif r < 0.04:
            mask = [1] * n
        if r > 0.95:
            trace.append((mask, {rng.randrange(n)}))  # retry
        elif r > 0.93:
            trace.append(([int(rng.random() < 0.7) for _ in range(n)], ()))  # one-off
        else:
            trace.append((mask, ()))
    b = SmoothWeightedRoundRobin(weights)
    if container is list:
        got = [b.pick([bool(x) for x in a], e) for a, e in trace]
    else:
        live = bytearray(n)  # one caller-owned bytearray mutated in place
        got = []
        for a, e in trace:
            live[:] = bytes(a)
            got.append(b.pick(live, e))
    assert got == nginx_reference(weights, trace)


def test_swrr_retry_exclude():
    b = SmoothWeightedRoundRobin([1, 1, 1])
    avail = bytearray(b"\x01\x01\x01")
    first = b.pick(avail)
    second = b.pick(avail, {first})
    third = b.pick(avail, {first, second})
    assert len({first, second, third}) == 3
    assert b.pick(avail, {0, 1, 2}) is None


# --------------------------------------------------------------------------- ring

def _keys(n):
    return [f"10.0.{i // 250}.{i % 250 + 1}:52773" for i in range(n)]


@pytest.mark.parametrize("n", [4, 5, 6, 7, 8, 9])
def test_ring_adding_target_moves_about_one_over_n_plus_one(n):
    keys = _keys(n + 1)
    old = ConsistentHashRing(keys[:n], [100] * n)
    new = ConsistentHashRing(keys, [100] * (n + 1))
    moved = 0
    for k in range(20000):
        hv = f"client-{k}"
        a, b = old.owner(hv), new.owner(hv)
        if a != b:
            moved += 1
            assert b == n, "a key moved between two old targets"
    frac = moved / 20000
    assert abs(frac - 1 / (n + 1)) <= 0.05, frac


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ring_independent_of_target_order(seed):
    keys = _keys(6)
    weights = [100, 50, 100, 200, 100, 10]
    ring = ConsistentHashRing(keys, weights)
    perm = list(range(6))
    random.Random(seed).shuffle(perm)
    ring2 = ConsistentHashRing([keys[p] for p in perm], [weights[p] for p in perm])
    for k in range(3000):
        hv = f"user{k}"
        assert keys[ring.owner(hv)] == keys[perm[ring2.owner(hv)]]


def test_ring_skips_unavailable_and_excluded():
    n = 5
    ring = ConsistentHashRing(_keys(n), [100] * n)
    all_up = bytearray([1] * n)
    avail = bytearray([1] * n)
    avail[2] = 0
    for k in range(3000):
        hv = f"k{k}"
        home = ring.pick(hv, all_up)
        got = ring.pick(hv, avail)
        assert got != 2
        if home != 2:
            assert got == home  # keys of healthy targets stay put
        excl = ring.pick(hv, all_up, {home})
        assert excl is not None and excl != home
        assert ring.pick(hv, all_up) == home
        assert ring.pick(hv.encode(), all_up) == home  # str and bytes agree
    assert ring.pick("x", bytearray(n)) is None
    assert ring.pick("x", all_up, set(range(n))) is None


@pytest.mark.parametrize("n, seed", [(2, 1), (3, 2), (6, 3), (10, 4)])
def test_ring_walk_matches_naive_clockwise_scan(n, seed):
    rng = random.Random(seed)
    ring = ConsistentHashRing(_keys(n), [rng.choice([0, 1, 50, 100]) for _ in range(n)])
    pos, owner = ring._pos, ring._owner
    for k in range(2000):
        avail = bytearray(rng.random() < 0.5 for _ in range(n))
        excl = {rng.randrange(n)} if rng.random() < 0.3 else ()
        hv = f"key-{k}"
        expected = None
        if pos:
            start = bisect_left(pos, crc32(hv.encode())) % len(pos)
            for step in range(len(pos)):
                t = owner[(start + step) % len(pos)]
                if avail[t] and t not in excl:
                    expected = t
                    break
        assert ring.pick(hv, avail, excl) == expected


@pytest.mark.parametrize("weights", [[100, 300], [1, 1, 2], [50, 0, 50]])
def test_ring_share_follows_weight(weights):
    ring = ConsistentHashRing(_keys(len(weights)), weights)
    c = Counter(ring.owner(f"req-{k}") for k in range(20000))
    total = sum(weights)
    for i, w in enumerate(weights):
        assert abs(c[i] / 20000 - w / total) < 0.07
    assert ConsistentHashRing([], []).pick("a", []) is None


# ------------------------------------------------------------------ least conn

def test_least_connections_idle_prefers_heaviest_then_round_robin():
    lc = LeastConnections([1, 3, 1])
    avail = bytearray(b"\x01\x01\x01")
    assert [lc.pick(avail) for _ in range(3)] == [1, 1, 1]
    eq = LeastConnections([100, 100, 100])
    assert [eq.pick(avail) for _ in range(6)] == [0, 1, 2, 0, 1, 2]


@pytest.mark.parametrize("weights, acquire, expected", [
    ([1, 1, 1], [0, 1], 2),
    ([1, 1], [0, 0, 1], 1),
    ([1, 2], [1], 0),         # (0+1)/1 == (1+1)/2: tie, 0 first
    ([1, 2], [1, 1], 0),      # 1 < 1.5
    ([1, 4], [1, 1, 1], 0),   # 1 == 4/4: tie, first wins
    ([1, 4], [1, 1], 1),      # 3/4 < 1
    ([0, 1], [1, 1, 1], 1),   # weight 0 never
])
def test_least_connections_acquire(weights, acquire, expected):
    lc = LeastConnections(weights)
    for i in acquire:
        lc.acquire(i)
    assert lc.pick([True] * len(weights)) == expected


def test_least_connections_release_and_health():
    lc = LeastConnections([1, 1, 1])
    avail = bytearray(b"\x01\x01\x01")
    for i in (0, 0, 1, 2, 2):
        lc.acquire(i)
    assert lc.pick(avail) == 1
    lc.release(0)
    lc.release(0)
    assert lc.counts == [0, 1, 2]
    assert lc.pick(avail) == 0
    assert lc.pick(avail, {0}) == 1
    avail[1] = 0
    assert lc.pick(avail, {0}) == 2
    assert lc.pick(avail, {0, 2}) is None
    lc.release(1)
    lc.release(1)  # double release clamps at 0
    assert lc.counts[1] == 0


def test_least_connections_spreads_concurrent_load():
    lc = LeastConnections([1, 2])
    avail = [True, True]
    for _ in range(30):
        lc.acquire(lc.pick(avail))
    assert lc.counts == [10, 20]


# -------------------------------------------------------------------- hash input

REQ = dict(
    client_ip="192.0.2.7",
    headers={"x-user": "alice", "cookie": "a=1; sess=abc123; b=2", "x-multi": ["1", "2"]},
    path="/api/atelier/v1",
    query="q=hello+world&tag=b&tag=a&flag&empty=",
    captures={"ns": "USER", "missing": False},
    consumer_id="c-42",
)


@pytest.mark.parametrize("side, fields, expected", [
    ("on", dict(hash_on="none"), None),
    ("on", dict(hash_on="ip"), "192.0.2.7"),
    ("on", dict(hash_on="consumer"), "c-42"),
    ("on", dict(hash_on="header", hash_on_header="X-User"), "alice"),
    ("on", dict(hash_on="header", hash_on_header="x-multi"), "1, 2"),
    ("on", dict(hash_on="header", hash_on_header="x-none"), None),
    ("on", dict(hash_on="cookie", hash_on_cookie="sess"), "abc123"),
    ("on", dict(hash_on="cookie", hash_on_cookie="nope"), None),
    ("on", dict(hash_on="path"), "/api/atelier/v1"),
    ("on", dict(hash_on="query_arg", hash_on_query_arg="q"), "hello world"),
    ("on", dict(hash_on="query_arg", hash_on_query_arg="tag"), "a,b"),
    ("on", dict(hash_on="query_arg", hash_on_query_arg="flag"), "true"),
    ("on", dict(hash_on="query_arg", hash_on_query_arg="empty"), ""),
    ("on", dict(hash_on="query_arg", hash_on_query_arg="zzz"), None),
    ("on", dict(hash_on="uri_capture", hash_on_uri_capture="ns"), "USER"),
    ("on", dict(hash_on="uri_capture", hash_on_uri_capture="missing"), None),
    ("fallback", dict(hash_on="header", hash_fallback="ip"), "192.0.2.7"),
    ("fallback", dict(hash_fallback="header", hash_fallback_header="x-user"), "alice"),
    ("fallback", dict(hash_fallback="query_arg", hash_fallback_query_arg="q"), "hello world"),
    ("fallback", dict(hash_fallback="uri_capture", hash_fallback_uri_capture="ns"), "USER"),
    ("fallback", dict(hash_fallback="none"), None),
])
def test_hash_input(side, fields, expected):
    assert hash_input(upstream(**fields), side, **REQ) == expected


@pytest.mark.parametrize("fields, expected", [
    (dict(hash_on="header", hash_on_header="x-absent", hash_fallback="ip"), "192.0.2.7"),
    (dict(hash_on="header", hash_on_header="x-user", hash_fallback="ip"), "alice"),
    (dict(hash_on="consumer", hash_fallback="path"), "c-42"),
    (dict(hash_on="query_arg", hash_on_query_arg="zz", hash_fallback="header",
          hash_fallback_header="x-absent"), None),
    (dict(hash_on="cookie", hash_on_cookie="absent"), None),  # caller makes a uuid
    (dict(hash_on="none", hash_fallback="ip"), None),
])
def test_balancer_key_applies_fallback(fields, expected):
    assert balancer_key(upstream(**fields), **REQ) == expected


def test_mapping_upstream_accepted():
    up = {"hash_on": "header", "hash_on_header": "x-absent", "hash_fallback": "ip"}
    assert balancer_key(up, **REQ) == "192.0.2.7"


def test_balancer_key_anonymous_consumer_falls_back():
    up = upstream(hash_on="consumer", hash_fallback="ip")
    assert balancer_key(up, **{**REQ, "consumer_id": None}) == "192.0.2.7"


@pytest.mark.parametrize("path, expected", [
    ("/", b"sticky=0f1e; Path=/; SameSite=Lax; HttpOnly"),
    ("/api", b"sticky=0f1e; Path=/api; SameSite=Lax; HttpOnly"),
    (None, b"sticky=0f1e; Path=/; SameSite=Lax; HttpOnly"),
])
def test_hash_cookie_header(path, expected):
    up = upstream(hash_on="cookie", hash_on_cookie="sticky", hash_on_cookie_path=path)
    assert hash_cookie_header(up, "0f1e") == expected


# ----------------------------------------------------------------- make_balancer

@pytest.mark.parametrize("algorithm, cls, needs_key", [
    ("round-robin", SmoothWeightedRoundRobin, False),
    ("consistent-hashing", HashingBalancer, True),
    ("least-connections", LeastConnections, False),
    ("latency", LeastConnections, False),
])
def test_make_balancer_dispatch(algorithm, cls, needs_key):
    keys = _keys(3)
    b = make_balancer(upstream(algorithm=algorithm), keys, [100, 100, 100])
    assert isinstance(b, cls)
    assert b.needs_key is needs_key
    avail = bytearray(b"\x01\x01\x01")
    key = "user-1" if needs_key else None
    i = b.pick(avail, (), key)
    assert i in (0, 1, 2)
    assert b.pick(avail, {0, 1, 2}, key) is None
    assert b.pick(bytearray(3), key=key) is None


def test_make_balancer_hashing_is_sticky_and_unknown_rejected():
    keys = _keys(4)
    b = make_balancer(upstream(algorithm="consistent-hashing"), keys, [1, 1, 1, 1])
    avail = [True] * 4
    ring = ConsistentHashRing(keys, [1, 1, 1, 1])
    for k in range(200):
        assert b.pick(avail, key=f"u{k}") == ring.pick(f"u{k}", avail)
    assert b.pick(avail) == ring.pick("", avail)  # missing key hashes as ""
    with pytest.raises(ValueError):
        make_balancer(upstream(algorithm="random"), keys, [1, 1, 1, 1])
