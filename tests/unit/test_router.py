"""Tests for fastgw.core.router: Kong traditional_compatible matching and priority."""

from __future__ import annotations

import statistics
import time
from typing import Any

import pytest

from tests.support.routegen import BenchRoute, generate_routes, sample_path
from fastgw.core.router import RouteMatch, Router, _literals

R = BenchRoute  # short name for the tables below


def _ids(m: RouteMatch | None) -> str | None:
    return None if m is None else m.route.id


# Each scenario: a route table and requests (method, host, path, headers, expected route id).
SCENARIOS: dict[str, tuple[list[R], list[tuple[str, str | None, str, dict | None, str | None]]]] = {
    "longest_prefix_wins": (
        [R("api", ("/api",)), R("v1", ("/api/v1",)), R("root", ("/",))],
        [
            ("GET", None, "/api/v1/x", None, "v1"),
            ("GET", None, "/api/v1", None, "v1"),
            ("GET", None, "/api/v2", None, "api"),
            ("GET", None, "/apix", None, "api"),
            ("GET", None, "/other", None, "root"),
            ("GET", None, "/", None, "root"),
        ],
    ),
    "plain_string_prefix": (
        [R("atelier", ("/api/atelier",), strip_path=False)],
        [
            ("GET", None, "/api/atelier", None, "atelier"),
            ("GET", None, "/api/atelier/", None, "atelier"),
            ("GET", None, "/api/atelierX", None, "atelier"),
            ("GET", None, "/api/atelie", None, None),
            ("GET", None, "/api", None, None),
            ("GET", None, "/", None, None),
        ],
    ),
    "no_match": (
        [R("a", ("/a",), hosts=("a.com",)), R("b", ("/b",), methods=("POST",))],
        [
            ("GET", "a.com", "/b", None, None),
            ("GET", "b.com", "/a", None, None),
            ("GET", None, "/a", None, None),
            ("GET", None, "/b", None, None),
            ("POST", None, "/b/c", None, "b"),
        ],
    ),
    "host_exact_vs_wildcard": (
        [
            R("wild-suffix", ("/",), hosts=("*.example.com",)),
            R("exact", ("/",), hosts=("api.example.com",)),
            R("wild-prefix", ("/",), hosts=("example.*",)),
        ],
        [
            ("GET", "api.example.com", "/x", None, "exact"),
            ("GET", "API.Example.COM", "/x", None, "exact"),
            ("GET", "foo.example.com", "/x", None, "wild-suffix"),
            ("GET", "a.b.example.com", "/x", None, "wild-suffix"),
            ("GET", "example.com", "/x", None, "wild-prefix"),
            ("GET", "example.org:8000", "/x", None, "wild-prefix"),
            ("GET", "www.example.org", "/x", None, None),
            ("GET", "other.net", "/x", None, None),
            ("GET", None, "/x", None, None),
        ],
    ),
    "host_with_port": (
        [
            R("pinned", ("/p",), hosts=("api.example.com:8443",)),
            R("any-port", ("/n",), hosts=("api.example.com",)),
            R("wild-pinned", ("/w",), hosts=("*.example.com:8080",)),
            R("v6", ("/6",), hosts=("[::1]",)),
        ],
        [
            ("GET", "api.example.com:8443", "/p", None, "pinned"),
            ("GET", "api.example.com:8080", "/p", None, None),
            ("GET", "api.example.com", "/p", None, None),
            ("GET", "api.example.com:9999", "/n", None, "any-port"),
            ("GET", "api.example.com", "/n", None, "any-port"),
            ("GET", "x.example.com:8080", "/w", None, "wild-pinned"),
            ("GET", "x.example.com:8081", "/w", None, None),
            ("GET", "[::1]:8000", "/6", None, "v6"),
            ("GET", "[::1]", "/6", None, "v6"),
        ],
    ),
    "method_filtering": (
        [
            R("get", ("/m",), methods=("GET", "HEAD")),
            R("post", ("/m",), methods=("POST",)),
            R("any", ("/m",)),
        ],
        [
            ("GET", None, "/m", None, "get"),
            ("HEAD", None, "/m/x", None, "get"),
            ("POST", None, "/m", None, "post"),
            ("DELETE", None, "/m", None, "any"),
        ],
    ),
    "header_matching": (
        [
            R("one", ("/h",), headers={"x-version": ("v2", "V3")}),
            R("two", ("/h",), headers={"x-version": ("v2",), "x-env": ("prod",)}),
            R("rx", ("/r",), headers={"x-version": (r"~*^v\d+$",)}),
            R("plain", ("/",)),
        ],
        [
            ("GET", None, "/h", {"x-version": "V2"}, "one"),
            ("GET", None, "/h", {"x-version": "v3"}, "one"),
            ("GET", None, "/h", {"x-version": "v2", "x-env": "PROD"}, "two"),
            ("GET", None, "/h", {"x-version": "v3", "x-env": "prod"}, "one"),
            ("GET", None, "/h", {"x-version": "v1"}, "plain"),
            ("GET", None, "/h", None, "plain"),
            ("GET", None, "/r", {"x-version": "V12"}, "rx"),
            ("GET", None, "/r", {"x-version": "beta"}, "plain"),
        ],
    ),
    "host_only_route": (
        [R("admin", None, hosts=("admin.local",)), R("api", ("/api",))],
        [
            ("GET", "admin.local", "/anything/at/all", None, "admin"),
            ("GET", "admin.local:8000", "/", None, "admin"),
            ("GET", "admin.local", "/api/x", None, "admin"),  # PLAIN_HOST_ONLY bit beats "/api"
            ("GET", "other.local", "/api/x", None, "api"),
            ("GET", "other.local", "/x", None, None),
        ],
    ),
    "method_only_route": (
        [R("opts", None, methods=("OPTIONS",)), R("api", ("/api",))],
        [
            ("OPTIONS", None, "/x", None, "opts"),
            ("GET", None, "/x", None, None),
            # equal weight (1 field each): plain beats? both weight 1, neither regex:
            # longer max_length wins -> "/api" (len 4) over no path (len 0)
            ("OPTIONS", None, "/api", None, "api"),
        ],
    ),
    "kong_docs_regex_priority": (
        [
            R("plain", ("/version",), created_at=1),
            R("any", (r"~/version/any/",), created_at=2),
            R("status", (r"~/status/\d+",), created_at=3),
            R("rp6", (r"~/version/\d+/status/\d+",), regex_priority=6, created_at=4),
        ],
        [
            ("GET", None, "/version/1/status/2", None, "rp6"),
            ("GET", None, "/version/any/", None, "any"),
            ("GET", None, "/version/1", None, "plain"),
            ("GET", None, "/status/12", None, "status"),
            ("GET", None, "/status/x", None, None),
        ],
    ),
    "route_paths_compete_separately": (
        [
            R("multi", ("/a", "/a/very/long/path"), created_at=2),
            R("mid", ("/a/very",), created_at=1),
        ],
        [
            ("GET", None, "/a/very/long/path/x", None, "multi"),
            ("GET", None, "/a/very/x", None, "mid"),
            ("GET", None, "/a/x", None, "multi"),
        ],
    ),
    "plain_host_beats_wildcard_and_weight_beats_length": (
        [
            R("wild", ("/",), hosts=("*.example.com", "x.org")),
            R("exact", ("/",), hosts=("a.example.com",), created_at=9),
            R("long", ("/very/long/prefix/path",)),
        ],
        [
            ("GET", "a.example.com", "/very/long/prefix/path", None, "exact"),
            ("GET", "b.example.com", "/very/long/prefix/path", None, "wild"),
            ("GET", "x.org", "/", None, "wild"),
            ("GET", "c.net", "/very/long/prefix/path", None, "long"),
        ],
    ),
    "created_at_then_id_tie_break": (
        [R("newer", ("/same",), created_at=20), R("older", ("/same",), created_at=10),
         R("b", ("/tie",), created_at=5), R("a", ("/tie",), created_at=5)],
        [
            ("GET", None, "/same", None, "older"),
            ("GET", None, "/tie", None, "a"),
        ],
    ),
    "normalized_before_matching": (
        [R("v1", ("/api/v1",)), R("tilde", ("/~user",))],
        [
            ("GET", None, "/api//v1/./x", None, "v1"),
            ("GET", None, "/api/x/../v1", None, "v1"),
            ("GET", None, "/api/%76%31/x", None, "v1"),
            ("GET", None, "/%7euser/x", None, "tilde"),
            ("GET", None, "/api/v1%2Fx", None, "v1"),
            ("GET", None, "/api/v2/../../x", None, None),
        ],
    ),
    "regex_without_literal_prefix": (
        [R("legacy", (r"~/[a-z]+/legacy/\d+$",)), R("x", (r"~(?i)/CASE",)), R("api", ("/api",))],
        [
            ("GET", None, "/api/legacy/12", None, "legacy"),
            ("GET", None, "/api/legacy/12/x", None, "api"),
            ("GET", None, "/case/x", None, "x"),
            ("GET", None, "/nope", None, None),
        ],
    ),
}



def _cases() -> list[Any]:
    out = []
    for name, (routes, requests) in SCENARIOS.items():
        for i, (method, host, path, headers, expected) in enumerate(requests):
            out.append(pytest.param(routes, method, host, path, headers, expected,
                                    id=f"{name}-{i}"))
    return out


@pytest.mark.parametrize("routes,method,host,path,headers,expected", _cases())
def test_match_table(routes: list[R], method: str, host: str | None, path: str,
                     headers: dict | None, expected: str | None) -> None:
    router = Router.compile(routes)
    assert _ids(router.match(method, host, path, headers)) == expected
    # Route order in the config must not matter.
    assert _ids(Router.compile(routes[::-1]).match(method, host, path, headers)) == expected


def test_kong_docs_evaluation_order() -> None:
    routes = [
        R("plain", ("/version",), created_at=1),
        R("any", (r"~/version/any/",), created_at=2),
        R("status", (r"~/status/\d+",), created_at=1),
        R("rp6", (r"~/version/\d+/status/\d+",), regex_priority=6, created_at=4),
    ]
    order = [r.id for r, _ in Router.compile(routes).evaluation_order()]
    assert order == ["rp6", "status", "any", "plain"]


def test_split_route_groups_in_evaluation_order() -> None:
    route = R("m", ("/ab", "/x", "~/r", "/cd"))
    order = Router.compile([route]).evaluation_order()
    assert [paths for _, paths in order] == [("~/r",), ("/ab", "/cd"), ("/x",)]


def test_regex_captures_and_prefix() -> None:
    router = Router.compile([R("u", (r"~/users/(?<id>\d+)/posts/(\d+)",))])
    m = router.match("GET", None, "/users/42/posts/7/comments", None)
    assert m is not None
    assert m.prefix == "/users/42/posts/7"
    assert m.captures == {0: "/users/42/posts/7", 1: "42", 2: "7", "id": "42"}
    assert m.stripped_prefix == "/users/42/posts/7"
    assert m.upstream_path("/backend") == "/backend/comments"
    assert router.match("GET", None, "/x/users/42/posts/7", None) is None  # anchored


@pytest.mark.parametrize("pattern,prefix,need", [
    (r"/version/\d+/status/\d+", "/version/", "/status/"),
    (r"/api/regex1/(?P<id>\d+)$", "/api/regex1/", None),
    (r"^/abc", "/abc", None),
    (r"\A/abc", "/abc", None),
    (r"/ab?c/def", "/a", "c/def"),
    (r"/a*", "/", None),
    (r"/a|/b", "/", None),  # sre factors the common "/" out
    (r"/a|b", "", None),
    (r"(?i)/CASE", "", None),
    (r"(/a)/bc", "", "/bc"),
    (r"[/]x", "/x", None),
    (r"/x(?=y)yz", "/x", "yz"),
])
def test_regex_literal_extraction(pattern: str, prefix: str, need: str | None) -> None:
    assert _literals(pattern) == (prefix, need)


def test_pcre_named_groups_and_lookbehind() -> None:
    router = Router.compile([R("a", (r"~/v(?<=v)(?<n>\d)",))])
    m = router.match("GET", None, "/v1", None)
    assert m is not None and m.captures == {0: "/v1", 1: "1", "n": "1"}


def test_regex_only_evaluated_when_it_can_win() -> None:
    router = Router.compile([
        R("hosted", ("/api/x",), hosts=("h.com",)),
        R("rx", (r"~/api/.*",)),
    ])
    calls = []

    class Spy:
        def __init__(self, rx: Any) -> None:
            self.rx = rx

        def match(self, path: str) -> Any:
            calls.append(path)
            return self.rx.match(path)

    stack = [router._root]
    while stack:
        node = stack.pop()
        for e in node.entries or ():
            if e.regex is not None:
                e.regex = Spy(e.regex)
        stack.extend((node.children or {}).values())

    assert _ids(router.match("GET", "h.com", "/api/x/1", None)) == "hosted"
    assert calls == []  # outranked by the plain host route: never executed
    assert _ids(router.match("GET", "other.com", "/api/x/1", None)) == "rx"
    assert calls == ["/api/x/1"]
    assert router.match("GET", "other.com", "/web", None) is None
    assert calls == ["/api/x/1"]  # literal prefix "/api/" not on the path


def test_regex_without_groups_has_no_captures() -> None:
    m = Router.compile([R("r", (r"~/v\d+/",))]).match("GET", None, "/v2/x", None)
    assert m is not None and m.captures is None and m.prefix == "/v2/"


def test_route_match_upstream_path_and_prefix() -> None:
    router = Router.compile([
        R("strip", ("/route",)),
        R("keep", ("/keep",), strip_path=False),
        R("v1", ("/v1r",), path_handling="v1"),
        R("host", None, hosts=("h.local",)),
    ])
    m = router.match("GET", None, "/routereq", None)
    assert m is not None and m.prefix == "/route" and m.stripped_prefix == "/route"
    assert m.upstream_path("/service") == "/service/req"
    m = router.match("GET", None, "/keep/x", None)
    assert m is not None and m.stripped_prefix is None
    assert m.upstream_path(None) == "/keep/x"
    m = router.match("GET", None, "/v1rreq", None)
    assert m is not None and m.upstream_path("/service") == "/servicereq"
    m = router.match("GET", "h.local", "/route/", None)
    assert m is not None and m.route.id == "host" and m.prefix is None
    assert m.stripped_prefix is None
    assert m.upstream_path("/service") == "/service/route/"


def test_match_path_is_normalized() -> None:
    m = Router.compile([R("a", ("/a",))]).match("GET", None, "/a//b/./c", None)
    assert m is not None and m.path == "/a/b/c"
    assert m.upstream_path("/s") == "/s/b/c"


def test_default_port_for_pinned_hosts() -> None:
    router = Router.compile([R("p", ("/",), hosts=("a.com:8443",))])
    assert router.match("GET", "a.com", "/", None) is None
    assert _ids(router.match("GET", "a.com", "/", None, default_port=8443)) == "p"
    assert router.match("GET", "a.com", "/", None, default_port=80) is None


def test_uses_headers_flag() -> None:
    assert Router.compile([R("a", ("/a",))]).uses_headers is False
    assert Router.compile([R("a", ("/a",), headers={"x-a": ("1",)})]).uses_headers is True


def test_empty_router_and_invalid_regex() -> None:
    assert Router.compile([]).match("GET", "x", "/", None) is None
    with pytest.raises(ValueError, match="bad"):
        Router.compile([R("bad", ("~/(unclosed",))])


def test_generated_table_semantics() -> None:
    routes = generate_routes(1000)
    router = Router.compile(routes)
    assert _ids(router.match("GET", None, sample_path(1000), None)) == "r000998"
    assert _ids(router.match("GET", "svc3.example.com", "/api/service3/x", None)) == "r000003"
    assert router.match("GET", "nope.example.com", "/api/service3/x", None) is None
    assert _ids(router.match("GET", "a.svc7.example.org", "/api/service7", None)) == "r000007"
    m = router.match("GET", None, "/api/regex17/55", None)
    assert m is not None and m.route.id == "r000017" and m.captures == {0: "/api/regex17/55",
                                                                         1: "55", "id": "55"}
    assert _ids(router.match("GET", None, "/api/plain17/x", None)) == "r000017"
    assert _ids(router.match("PUT", None, "/api/service5", None)) is None
    assert _ids(router.match("GET", None, "/acme/legacy/1", None)) == "rx-any-1"
    assert _ids(router.match("GET", "admin.example.net", "/x", None)) == "host-only"
    assert _ids(router.match("GET", None, "/api/service211", {"x-version": "v3"})) == "r000211"
    # prefix routes /api/service1, /api/service12 ... : longest wins
    assert _ids(router.match("GET", None, "/api/service124/x", None)) == "r000124"


# ---------------------------------------------------------------------------- performance

def _interleaved_medians(routers: list[tuple[Router, str]], batches: int = 31,
                         per_batch: int = 2000) -> list[float]:
    """Median ns/match per router; batches interleaved so load noise hits all alike."""
    samples: list[list[float]] = [[] for _ in routers]
    for _ in range(batches):
        for k, (router, path) in enumerate(routers):
            match = router.match
            t0 = time.perf_counter_ns()
            for _ in range(per_batch):
                match("GET", "www.example.com", path, None)
            samples[k].append((time.perf_counter_ns() - t0) / per_batch)
    return [statistics.median(s) for s in samples]


@pytest.mark.timing
def test_performance_10k_routes() -> None:
    routes = generate_routes(10_000)
    compile_times = []
    for _ in range(3):
        t0 = time.perf_counter()
        big = Router.compile(routes)
        compile_times.append(time.perf_counter() - t0)
    assert min(compile_times) < 0.5, compile_times

    small = Router.compile(generate_routes(10))
    pair = [(big, sample_path(10_000)), (small, sample_path(10))]
    for router, path in pair:
        assert router.match("GET", "www.example.com", path, None) is not None
    _interleaved_medians(pair, batches=3)  # warm-up

    # The box is shared with other jobs: accept the best of up to 3 measurements.
    results = []
    for _ in range(3):
        t_10k, t_10 = _interleaved_medians(pair)
        results.append((round(t_10k), round(t_10)))
        if t_10k < 5_000 and t_10k / t_10 < 2.0:
            break
    else:
        pytest.fail(f"median ns/match (10k routes, 10 routes) per attempt: {results}")


@pytest.mark.parametrize("size", [0, 1, 255, 256, 257, 1000, 5003])
def test_sorted_in_slices_is_sorted_and_pauses(size: int) -> None:
    """Router.compile sorts its priority keys in slices (a merge sort that pauses every 256
    items, so a build in a thread lets the proxy loop in); the order is sorted()'s."""
    import random

    from fastgw.core.router import PAUSE_MASK, sorted_in_slices

    rng = random.Random(size)
    items = [((rng.randrange(5), rng.random(), n), f"payload{n}") for n in range(size)]
    pauses = [0]

    def pause() -> None:
        pauses[0] += 1

    assert sorted_in_slices(list(items), pause) == sorted(items)
    assert sorted_in_slices(list(items), None) == sorted(items)
    if size > PAUSE_MASK + 1:
        assert pauses[0] >= size // (PAUSE_MASK + 1) * 2  # slices sorted, then merged


def test_dismantle_takes_the_trie_apart_in_slices() -> None:
    """A replaced router is freed a slice at a time (Router.dismantle pauses every 256
    nodes); afterwards it matches nothing."""
    routes = generate_routes(2000)
    router = Router.compile(routes)
    probe = next(r for r in routes if r.paths and not r.hosts and not r.methods
                 and not r.headers and not r.paths[0].startswith("~"))
    assert router.match("GET", None, probe.paths[0], {}) is not None
    pauses = [0]

    def pause() -> None:
        pauses[0] += 1

    router.dismantle(pause)
    assert router.match("GET", None, probe.paths[0], {}) is None
    assert pauses[0] >= 2000 // 256
