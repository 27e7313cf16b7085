"""Certificate selection by server name: Kong's order (kong/runloop/certificate.lua), and
the cases of Kong's own spec (spec/02-integration/05-proxy/06-ssl_spec.lua)."""

from __future__ import annotations

import pytest

from fastgw.core.sni import SniIndex, candidates

# The SNIs of Kong's wildcard spec, each naming the certificate it serves.
KONG_SPEC = SniIndex({"*.wildcard.com": "alt", "wildcard.*": "alt", "wildcard.org": "alt-alt",
                      "test.wildcard.*": "alt-alt", "*.www.wildcard.com": "alt-alt",
                      "example.com": "example", "ssl1.com": "example"}, "default")


@pytest.mark.parametrize("server_name,served", [
    ("test.wildcard.com", "alt"),  # prefix wildcard
    ("wildcard.eu", "alt"),  # suffix wildcard
    ("wildcard.org", "alt-alt"),  # exact first
    ("test.wildcard.org", "alt-alt"),  # suffix third (test.wildcard.*), no prefix match
    ("test.www.wildcard.com", "alt-alt"),  # the prefix wildcard is one label deep
    ("ssl1.com", "example"),
    ("EXAMPLE.com", "example"),  # DNS names are case-insensitive
    ("test.com", "default"),  # nothing matches
    (None, "default"),  # no SNI
    ("", "default"),
])
def test_kong_spec_order(server_name: str | None, served: str) -> None:
    assert KONG_SPEC.lookup(server_name) == served


@pytest.mark.parametrize("server_name,expected", [
    ("a.b.c", ["a.b.c", "*.b.c", "a.b.*", "*"]),
    ("b.c", ["b.c", "b.*", "*"]),  # two labels: no prefix wildcard (Kong's pattern)
    ("localhost", ["localhost", "*"]),
    ("A.B.C", ["a.b.c", "*.b.c", "a.b.*", "*"]),
    ("*.b.c", ["*.b.c", "*"]),  # a client sending a wildcard matches it literally only
])
def test_candidates(server_name: str, expected: list[str]) -> None:
    assert candidates(server_name) == expected


@pytest.mark.parametrize("server_name,served", [
    ("unknown.example", "catch-all"),  # "*" before the default
    (None, "default"),  # but not without SNI (Kong returns the default directly)
    ("a.example", "a"),
])
def test_catch_all_sni(server_name: str | None, served: str) -> None:
    index = SniIndex({"*": "catch-all", "A.example": "a"}, "default")
    assert index.lookup(server_name) == served and len(index) == 2
