"""proxy-cache's pure rules (core.plugins.proxycache): Kong's key, what is cacheable, the
Cache-Control lifetime, and the byte-bounded LRU store."""

from __future__ import annotations

import hashlib
from email.utils import formatdate
from typing import Any

import pytest

from fastgw.core.plugins.proxycache import (
    CachedResponse,
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

NOW = 1_700_000_000.0


@pytest.mark.parametrize("value,expected", [
    (None, {}),
    ("", {}),
    ("no-cache", {"no-cache": True}),
    ("Public, Max-Age=60", {"public": True, "max-age": 60.0}),
    ("max-age=abc, private", {"max-age": "abc", "private": True}),
    ("s-maxage=5,max-age=1", {"s-maxage": 5.0, "max-age": 1.0}),
    (" , no-store ,", {"no-store": True}),
])
def test_directives(value: str | None, expected: dict[str, Any]) -> None:
    assert directives(value) == expected


@pytest.mark.parametrize("cc,expires,ttl", [
    ("max-age=60", None, 60.0),
    ("s-maxage=10, max-age=60", None, 10.0),  # s-maxage first
    ("max-age=-5", None, 0.0),
    ("public", None, 0.0),
    ("public", formatdate(NOW + 120, usegmt=True), 120.0),
    ("public", formatdate(NOW - 120, usegmt=True), 0.0),
    ("public", "not a date", 0.0),
    ("max-age=30", formatdate(NOW + 120, usegmt=True), 30.0),  # max-age wins
])
def test_resource_ttl(cc: str, expires: str | None, ttl: float) -> None:
    assert resource_ttl(directives(cc), expires, NOW) == pytest.approx(ttl)


GET_HEAD = frozenset({"GET", "HEAD"})


@pytest.mark.parametrize("method,cache_control,cc,expected", [
    ("GET", False, "", True),
    ("HEAD", False, "", True),
    ("POST", False, "", False),
    ("GET", False, "no-store", True),  # directives are read with cache_control only
    ("GET", True, "no-store", False),
    ("GET", True, "no-cache", False),
    ("GET", True, "max-age=0", True),  # a Refresh, decided against the entry
])
def test_request_cacheable(method: str, cache_control: bool, cc: str, expected: bool) -> None:
    assert request_cacheable(method, GET_HEAD, cache_control, directives(cc)) is expected


STATUSES = frozenset({200, 301, 404})
TYPES = frozenset({"text/plain", "application/json"})


@pytest.mark.parametrize("status,types,cache_control,cc,ttl,expected", [
    (200, [b"application/json"], False, "", 0.0, True),
    (404, [b"text/plain"], False, "", 0.0, True),
    (500, [b"application/json"], False, "", 0.0, False),
    (200, [b"application/json; charset=utf-8"], False, "", 0.0, False),  # exact match
    (200, [b"text/html"], False, "", 0.0, False),
    (200, [], False, "", 0.0, False),  # no Content-Type
    (200, [b"text/plain", b"text/plain"], False, "", 0.0, False),  # several
    (200, [b"text/plain"], False, "private", 0.0, True),  # cache_control off
    (200, [b"text/plain"], True, "private, max-age=60", 60.0, False),
    (200, [b"text/plain"], True, "no-store, max-age=60", 60.0, False),
    (200, [b"text/plain"], True, "no-cache, max-age=60", 60.0, False),
    (200, [b"text/plain"], True, "public", 0.0, False),  # no lifetime
    (200, [b"text/plain"], True, "max-age=60", 60.0, True),
])
def test_response_cacheable(status: int, types: list[bytes], cache_control: bool, cc: str,
                            ttl: float, expected: bool) -> None:
    assert response_cacheable(status, STATUSES, types, TYPES, cache_control, directives(cc),
                              ttl) is expected


@pytest.mark.parametrize("status", [204, 304, 101])
def test_bodiless_statuses_never_stored(status: int) -> None:
    assert not response_cacheable(status, frozenset({status}), [b"text/plain"],
                                  TYPES, False, {}, 0.0)


@pytest.mark.parametrize("method,target,http11,ignore_case,uri", [
    ("GET", b"/a/B", True, False, "GET /a/B HTTP/1.1"),
    ("GET", b"/a/B?x=1", True, False, "GET /a/B"),  # Kong cuts the line at "?"
    ("HEAD", b"/a/B", False, False, "HEAD /a/B HTTP/1.0"),
    ("GET", b"/a/B", True, True, "get /a/b http/1.1"),
])
def test_request_uri(method: str, target: bytes, http11: bool, ignore_case: bool,
                     uri: str) -> None:
    assert request_uri(method, target, http11, ignore_case) == uri


@pytest.mark.parametrize("query,lower,args", [
    (b"", False, {}),
    (b"?", False, {}),
    (b"?a=1&b=2", False, {"a": ["1"], "b": ["2"]}),
    (b"?a=1&a=2&flag", False, {"a": ["1", "2"], "flag": [None]}),
    (b"?q=a+b%21&e=", False, {"q": ["a b!"], "e": [""]}),
    (b"?A=1", True, {"a": ["1"]}),
    (b"?=x&&b", False, {"b": [None]}),
])
def test_query_args(query: bytes, lower: bool, args: dict[str, Any]) -> None:
    assert query_args(query, lower) == args


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


URI = "GET /r HTTP/1.1"


@pytest.mark.parametrize("consumer,route,params,headers,vary_q,vary_h,text", [
    (None, "R", {}, {}, [], [], f"R|GET|{URI}||"),
    ("C", "R", {}, {}, [], [], f"C:R|GET|{URI}||"),
    (None, None, {}, {}, [], [], f"default|GET|{URI}||"),
    # Every parameter, sorted by name, when vary_query_params is empty.
    (None, "R", {"b": ["2"], "a": ["1"]}, {}, [], [], f"R|GET|{URI}|a=1:b=2|"),
    # Only the named ones, in the configured order; repeated values sorted; bare names.
    (None, "R", {"b": ["2"], "a": ["z", "y"], "f": [None]}, {}, ["f", "a"], [],
     f"R|GET|{URI}|f:a=y,z|"),
    # Headers only when named, found whatever their case or "_" for "-".
    (None, "R", {}, {"x-tenant": ["one"], "accept": ["x"]}, [], ["X_Tenant"],
     f"R|GET|{URI}||X_Tenant=one"),
    (None, "R", {}, {"x-tenant": ["one"]}, [], [], f"R|GET|{URI}||"),
])
def test_cache_key(consumer: str | None, route: str | None, params: dict[str, Any],
                   headers: dict[str, Any], vary_q: list[str], vary_h: list[str],
                   text: str) -> None:
    assert cache_key(consumer, route, "GET", URI, params, headers, vary_q, vary_h) == _sha(text)


def test_header_args_keeps_repeats() -> None:
    fields = [(b"accept", b"Accept", b"a"), (b"accept", b"ACCEPT", b"b")]
    assert header_args(fields) == {"accept": ["a", "b"]}


def _entry(body: bytes, *, at: float = NOW, storage: float = 60.0) -> CachedResponse:
    return CachedResponse(200, [(b"Content-Type", b"text/plain")], body, len(body), at, 60.0,
                          storage)


def test_store_is_lru_bounded_by_bytes() -> None:
    one = _entry(b"x" * 1000)
    cache = ResponseCache(3 * (one.size + 1))
    for key in "abc":
        assert cache.put(key, _entry(b"x" * 1000))
    assert cache.get("a", NOW) is not None  # a is now the most recently used
    assert cache.put("d", _entry(b"x" * 1000))
    assert cache.get("b", NOW) is None  # the least recently used went out
    assert {k for k in "acd" if cache.get(k, NOW)} == {"a", "c", "d"}
    assert cache.used <= cache.limit
    assert not cache.put("huge", _entry(b"x" * cache.limit))  # larger than the bound
    cache.resize(one.size + 1)
    assert len(cache) == 1 and cache.used <= cache.limit


def test_store_forgets_after_storage_time_and_purges() -> None:
    cache = ResponseCache(1 << 20)
    cache.put("k", _entry(b"body", storage=10.0))
    assert cache.get("k", NOW + 9.9) is not None
    assert cache.get("k", NOW + 10.0) is None
    assert cache.used == 0
    cache.put("k", _entry(b"body"))
    cache.put("k", _entry(b"other"))  # replaced, counted once
    assert len(cache) == 1 and cache.used == _entry(b"other").size + 1
    assert cache.purge("k") and not cache.purge("k")
    cache.put("a", _entry(b"1"))
    cache.put("b", _entry(b"2"))
    assert cache.flush() == 2 and cache.used == 0


def test_metadata_is_kongs_stored_object() -> None:
    entry = CachedResponse(200, [(b"Content-Type", b"text/plain"), (b"X-A", b"1"),
                                 (b"x-a", b"2")], b"hello", 5, NOW, 30.0, 60.0)
    assert entry.metadata() == {
        "status": 200, "headers": {"content-type": "text/plain", "x-a": ["1", "2"]},
        "body": "hello", "body_len": 5, "timestamp": int(NOW), "ttl": 30.0, "version": 1,
        "req_body": None}
