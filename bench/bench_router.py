"""Micro-benchmarks for fastgw.core.router (match and compile).

Run: .venv/bin/python -m pytest bench/bench_router.py --benchmark-enable -q
Match benchmarks time a loop of LOOP lookups; ``ns/match`` in extra_info is the
per-lookup cost. Route tables come from tests/support/routegen.py (mixed plain
prefixes, exact and wildcard hosts, methods, headers, regex paths).
"""

from __future__ import annotations

import pytest

from tests.support.routegen import generate_routes, sample_path
from fastgw.core.router import Router

LOOP = 1000
SIZES = [10, 1_000, 10_000]


def _loop(router: Router, method: str, host: str | None, path: str, headers=None):
    match = router.match

    def loop() -> None:
        for _ in range(LOOP):
            match(method, host, path, headers)

    return loop


def _run(benchmark, fn) -> None:
    benchmark(fn)
    benchmark.extra_info["ns/match"] = round(benchmark.stats.stats.mean / LOOP * 1e9, 1)


@pytest.mark.parametrize("n", SIZES)
def test_match_plain_prefix(benchmark, n):
    router = Router.compile(generate_routes(n))
    path = sample_path(n)
    assert router.match("GET", "www.example.com", path, None) is not None
    _run(benchmark, _loop(router, "GET", "www.example.com", path))


@pytest.mark.parametrize("n", SIZES)
def test_match_exact_host(benchmark, n):
    router = Router.compile(generate_routes(n))
    path, host = "/api/service3/v1/items", "svc3.example.com:8000"
    assert router.match("GET", host, path, None).route.id == "r000003"
    _run(benchmark, _loop(router, "GET", host, path))


@pytest.mark.parametrize("n", SIZES)
def test_match_regex_captures(benchmark, n):
    router = Router.compile(generate_routes(n))
    path = "/acme/legacy/42"
    assert router.match("GET", None, path, None).captures["tenant"] == "acme"
    _run(benchmark, _loop(router, "GET", None, path))


@pytest.mark.parametrize("n", SIZES)
def test_match_miss(benchmark, n):
    router = Router.compile(generate_routes(n))
    assert router.match("GET", "www.example.com", "/nothing/here", None) is None
    _run(benchmark, _loop(router, "GET", "www.example.com", "/nothing/here"))


@pytest.mark.parametrize("n", SIZES)
def test_match_needs_normalization(benchmark, n):
    router = Router.compile(generate_routes(n))
    path = "/api//service1/./v1/%7Eitems"
    assert router.match("GET", None, path, None) is not None
    _run(benchmark, _loop(router, "GET", None, path))


@pytest.mark.parametrize("n", SIZES)
def test_compile(benchmark, n):
    routes = generate_routes(n)
    benchmark.pedantic(Router.compile, args=(routes,), rounds=5 if n >= 10_000 else 20,
                       iterations=1, warmup_rounds=1)
