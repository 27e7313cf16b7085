"""Tests for fastgw.core.paths: Kong path normalization and upstream path joining."""

from __future__ import annotations

import pytest

from fastgw.core.paths import join_upstream_path, normalize_path, sanitize_uri_postfix

# (raw, normalized)
NORMALIZE_CASES = [
    ("/", "/"),
    ("", ""),
    ("/api/service1/items", "/api/service1/items"),
    ("/%7E", "/~"),
    ("/%7euser", "/~user"),
    ("/a%2fb", "/a%2Fb"),
    ("/a%2Fb", "/a%2Fb"),
    ("/%41%62%30-%5F%2E", "/Ab0-_."),
    ("/%3a%40%25", "/%3A%40%25"),
    ("/%c3%a9", "/%C3%A9"),
    ("/%zz", "/%zz"),
    ("/a/./b/../c", "/a/c"),
    ("//a//b", "/a/b"),
    ("/a///b/", "/a/b/"),
    ("/a/b/", "/a/b/"),
    ("/a/.", "/a/"),
    ("/a/..", "/"),
    ("/..", "/"),
    ("/.", "/"),
    ("/../../a", "/a"),
    ("/a/b/../../../c", "/c"),
    ("/a/.b/..c/...", "/a/.b/..c/..."),
    ("/a/%2E%2E/b", "/b"),
    ("/a/%2e/b", "/a/b"),
    ("/a//./b", "/a/b"),
    ("/a/b/..//c", "/a/c"),
    ("./a", "a"),
    ("../a/b", "a/b"),
]


@pytest.mark.parametrize("raw,expected", NORMALIZE_CASES)
def test_normalize_path(raw: str, expected: str) -> None:
    assert normalize_path(raw) == expected


def test_normalize_fast_path_returns_same_object() -> None:
    raw = "/api/service1234/v1/items"
    assert normalize_path(raw) is raw


def test_normalize_is_idempotent() -> None:
    for raw, expected in NORMALIZE_CASES:
        assert normalize_path(expected) == expected, raw


@pytest.mark.parametrize("postfix,expected", [
    ("", ""), (".", ""), ("..", ""), ("./x", "x"), ("../x", "x"), ("/x", "/x"), ("x", "x"),
])
def test_sanitize_uri_postfix(postfix: str, expected: str) -> None:
    assert sanitize_uri_postfix(postfix) == expected


# kong.md §2 test vectors (spec/fixtures/router_path_handling_tests.lua):
# (service_path, route_path or None for a host match, strip ("any" = both), request, v0, v1)
SAME = object()
JOIN_VECTORS = [
    ("/", "/route", False, "/route/", "/route/", SAME),
    ("/", "/route", True, "/route", "/", SAME),
    ("/", "/route", True, "/route/", "/", SAME),
    ("/", "/route", True, "/routereq", "/req", SAME),
    ("/srv", "/rou", False, "/roureq", "/srv/roureq", "/srvroureq"),
    ("/srv/", "/rou", True, "/rou", "/srv", "/srv/"),
    ("/service", "/", "any", "/", "/service", SAME),
    ("/service", "/", "any", "/route", "/service/route", "/serviceroute"),
    ("/service", "/route", False, "/route", "/service/route", "/serviceroute"),
    ("/service", "/route", True, "/route", "/service", SAME),
    ("/service", "/route", True, "/route/", "/service/", SAME),
    ("/service", "/route", True, "/routereq", "/service/req", "/servicereq"),
    ("/service", "/route/", True, "/route/", "/service/", "/service"),
    ("/service/", "/route", True, "/route", "/service", "/service/"),
    ("/service/", "/route", True, "/route/req", "/service/req", SAME),
    ("/service", None, "any", "/route/", "/service/route/", "/serviceroute/"),
]


def _expand() -> list[tuple[str, str | None, bool, str, str, str]]:
    rows = []
    for svc, route, strip, req, v0, v1 in JOIN_VECTORS:
        v1 = v0 if v1 is SAME else v1
        for s in ((False, True) if strip == "any" else (strip,)):
            rows.append((svc, route, s, req, "v0", v0))
            rows.append((svc, route, s, req, "v1", v1))
    return rows


@pytest.mark.parametrize("svc,prefix,strip,req,handling,expected", _expand())
def test_join_upstream_path_vectors(svc: str, prefix: str | None, strip: bool, req: str,
                                    handling: str, expected: str) -> None:
    assert join_upstream_path(svc, prefix, req, strip, handling) == expected


@pytest.mark.parametrize("svc,prefix,strip,req,expected", [
    # service path null -> base "/"
    (None, "/api/atelier", False, "/api/atelier/", "/api/atelier/"),
    (None, "/api/atelier", False, "/api/atelier/v1/USER/doc", "/api/atelier/v1/USER/doc"),
    ("/api/atelier", "/api/atelier", True, "/api/atelier/", "/api/atelier/"),
    ("/api/atelier", "/api/atelier", True, "/api/atelier", "/api/atelier"),
    (None, None, True, "/", "/"),
    ("/", None, False, "/x/y", "/x/y"),
    ("/base/", "/r", False, "/r/x", "/base/r/x"),
    ("/base/", "/r", True, "/r/", "/base/"),
    ("/base", "/r", True, "/r./x", "/base/x"),  # postfix "./x" sanitized
])
def test_join_upstream_path_extra(svc: str | None, prefix: str | None, strip: bool, req: str,
                                  expected: str) -> None:
    assert join_upstream_path(svc, prefix, req, strip, "v0") == expected
