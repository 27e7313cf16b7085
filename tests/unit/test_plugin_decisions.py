"""Plugins' pure decisions (fastgw.core.plugins), table by table."""

from __future__ import annotations

import base64
import hashlib
import calendar
from dataclasses import dataclass
from typing import Any

import pytest

from fastgw.config.credentials import hash_password
from fastgw.core.plugins.auth import (
    acl_allows,
    body_fields,
    find_api_key,
    parse_basic,
    password_matches,
    remove_query_args,
)
from fastgw.core.plugins.chain import consumers_with_plugins, resolve, specificity
from fastgw.core.plugins.cors import CorsPolicy
from fastgw.core.plugins.iprestriction import IpMatcher, client_address
from fastgw.core.plugins.ratelimit import LimitPolicy, decide, window_start
from fastgw.core.plugins.transform import edit_body, edit_fields, edit_query


# --------------------------------------------------------------------------- chain

@dataclass(frozen=True)
class P:
    name: str
    route: str | None = None
    service: str | None = None
    consumer: str | None = None
    enabled: bool = True
    tag: str = ""


PRIORITIES = {"key-auth": 1250, "rate-limiting": 910, "cors": 2000, "acl": 950}


@pytest.mark.parametrize("plugins,route,service,consumer,expected", [
    # The most specific instance of a name wins (Kong's precedence 1..8).
    ([P("cors", tag="global"), P("cors", service="s", tag="svc")], "r", "s", None, ["svc"]),
    ([P("cors", service="s", tag="svc"), P("cors", route="r", tag="route")], "r", "s", None,
     ["route"]),
    ([P("cors", route="r", tag="route"), P("cors", route="r", service="s", tag="rs")], "r", "s",
     None, ["rs"]),
    ([P("cors", route="r", service="s", tag="rs"), P("cors", consumer="c", tag="c")], "r", "s",
     "c", ["rs"]),
    ([P("cors", route="r", tag="route"), P("cors", consumer="c", tag="c")], "r", "s", "c",
     ["c"]),
    ([P("cors", consumer="c", tag="c"), P("cors", service="s", consumer="c", tag="sc")],
     "r", "s", "c", ["sc"]),
    ([P("cors", service="s", consumer="c", tag="sc"),
      P("cors", route="r", consumer="c", tag="rc")], "r", "s", "c", ["rc"]),
    ([P("cors", route="r", consumer="c", tag="rc"),
      P("cors", route="r", service="s", consumer="c", tag="rsc")], "r", "s", "c", ["rsc"]),
    # Instances for other routes, services or consumers, and disabled ones, do not apply.
    ([P("cors", route="other"), P("cors", service="other"), P("cors", consumer="x"),
      P("cors", enabled=False)], "r", "s", "c", []),
    # Without a consumer, consumer-scoped instances wait.
    ([P("cors", consumer="c", tag="c"), P("cors", tag="g")], "r", "s", None, ["g"]),
    # Order: priority, highest first.
    ([P("rate-limiting", tag="rl"), P("key-auth", tag="ka"), P("cors", tag="co"),
      P("acl", tag="acl")], "r", "s", None, ["co", "ka", "acl", "rl"]),
])
def test_resolve_precedence_and_order(plugins: list[P], route: str, service: str,
                                      consumer: str | None, expected: list[str]) -> None:
    assert [p.tag for p in resolve(plugins, PRIORITIES, route, service, consumer)] == expected


def test_specificity_ranks_and_consumers_with_plugins() -> None:
    assert [specificity(p) for p in (P("a", "r", "s", "c"), P("a", "r", None, "c"),
                                     P("a", None, "s", "c"), P("a", "r", "s"),
                                     P("a", consumer="c"), P("a", "r"), P("a", service="s"),
                                     P("a"))] == [1, 2, 3, 4, 5, 6, 7, 8]
    plugins = [P("cors", consumer="c1"), P("acl", consumer="c2", route="other"),
               P("acl", consumer="c3", service="s")]
    assert consumers_with_plugins(plugins, "r", "s") == ["c1", "c3"]


# --------------------------------------------------------------------------- auth

H = [(b"apikey", b"apikey", b"k1"), (b"x-other", b"X-Other", b"v")]


@pytest.mark.parametrize("names,headers,query,body,flags,expected", [
    (["apikey"], H, b"", None, {}, ("k1", "apikey", False)),
    (["apikey"], [], b"?apikey=k2&x=1", None, {}, ("k2", "apikey", False)),
    (["apikey"], H, b"?apikey=k2", None, {}, ("k1", "apikey", False)),  # header first
    (["apikey"], H, b"?apikey=k2", None, {"in_header": False}, ("k2", "apikey", False)),
    (["apikey"], [], b"?apikey=k2", None, {"in_query": False}, (None, None, False)),
    (["apikey"], H + [(b"apikey", b"ApiKey", b"k3")], b"", None, {}, (None, "apikey", True)),
    (["apikey"], [], b"?apikey=a&apikey=b", None, {}, (None, "apikey", True)),
    (["apikey"], [], b"", {"apikey": "k4"}, {}, ("k4", "apikey", False)),
    (["key", "apikey"], H, b"", None, {}, ("k1", "apikey", False)),
    (["ApiKey"], H, b"", None, {}, ("k1", "ApiKey", False)),  # field names without case
    (["apikey"], [], b"", None, {}, (None, None, False)),
])
def test_find_api_key(names: list[str], headers: Any, query: bytes, body: Any,
                      flags: dict[str, bool], expected: tuple[Any, ...]) -> None:
    assert find_api_key(names, headers, query, body, **flags) == expected


@pytest.mark.parametrize("query,names,expected", [
    (b"?apikey=s&x=1", ["apikey"], b"?x=1"),
    (b"?x=1&apikey=s&y=%20", ["apikey"], b"?x=1&y=%20"),
    (b"?apikey=s", ["apikey"], b""),
    (b"", ["apikey"], b""),
    (b"?api%6Bey=s&z", ["apikey"], b"?z"),
])
def test_remove_query_args(query: bytes, names: list[str], expected: bytes) -> None:
    assert remove_query_args(query, names) == expected


def _basic(text: str) -> bytes:
    return b"Basic " + base64.b64encode(text.encode())


@pytest.mark.parametrize("value,expected", [
    (_basic("alice:pw"), ("alice", "pw")),
    (_basic("alice:p:w"), ("alice", "p:w")),
    (_basic("alice:"), ("alice", "")),
    (b"basic " + base64.b64encode(b"a:b"), ("a", "b")),
    (_basic(":pw"), None),
    (_basic("nocolon"), None),
    (b"Bearer xyz", None),
    (b"Basic !!!", None),
    (None, None),
])
def test_parse_basic(value: bytes | None, expected: Any) -> None:
    assert parse_basic(value) == expected


def test_password_hash_is_kongs_and_checked() -> None:
    # Kong's crypto.lua: hex sha1(password .. consumer_id)
    stored = hash_password("c1", "pw")
    assert stored == hashlib.sha1(b"pwc1").hexdigest()
    assert password_matches(stored, "c1", "pw")
    assert not password_matches(stored, "c1", "pW")
    assert not password_matches(stored, "c2", "pw")


@pytest.mark.parametrize("allow,deny,groups,ok", [
    (["gold"], None, ["gold"], True),
    (["gold"], None, ["silver", "gold"], True),
    (["gold"], None, ["silver"], False),
    (["gold"], None, [], False),
    (None, ["bad"], ["bad"], False),
    (None, ["bad"], ["good"], True),
    (None, ["bad"], [], True),
])
def test_acl(allow: Any, deny: Any, groups: list[str], ok: bool) -> None:
    assert acl_allows(allow, deny, groups) is ok


@pytest.mark.parametrize("ctype,body,expected", [
    (b"application/json", b'{"a": 1, "k": "v"}', {"a": 1, "k": "v"}),
    (b"application/json; charset=utf-8", b"[1]", {}),
    (b"application/x-www-form-urlencoded", b"k=v&a=1&a=2", {"k": "v", "a": ["1", "2"]}),
    (b"text/plain", b"k=v", {}),
    (b"application/json", b"{bad", {}),
])
def test_body_fields(ctype: bytes, body: bytes, expected: dict[str, Any]) -> None:
    assert body_fields(ctype, body) == expected


# --------------------------------------------------------------------------- rate limiting

T = calendar.timegm((2026, 3, 15, 10, 20, 30, 0, 0, 0)) + 0.25


@pytest.mark.parametrize("period,start", [
    ("second", T - 0.25),
    ("minute", T - 30.25),
    ("hour", T - 20 * 60 - 30.25),
    ("day", calendar.timegm((2026, 3, 15, 0, 0, 0, 0, 0, 0))),
    ("month", calendar.timegm((2026, 3, 1, 0, 0, 0, 0, 0, 0))),
    ("year", calendar.timegm((2026, 1, 1, 0, 0, 0, 0, 0, 0))),
])
def test_window_start(period: str, start: float) -> None:
    assert window_start(period, T) == start


def _headers(lines: list[bytes]) -> dict[str, str]:
    text = b"".join(lines).decode()
    return dict(line.split(": ", 1) for line in text.split("\r\n") if line)


@pytest.mark.parametrize("limits,usage,refused,fields", [
    ([("minute", 5.0)], [0], False, {"X-RateLimit-Limit-Minute": "5",
                                     "X-RateLimit-Remaining-Minute": "4",
                                     "RateLimit-Limit": "5", "RateLimit-Remaining": "4",
                                     "RateLimit-Reset": "30"}),
    ([("minute", 5.0)], [4], False, {"X-RateLimit-Remaining-Minute": "0",
                                     "RateLimit-Remaining": "0"}),
    ([("minute", 5.0)], [5], True, {"X-RateLimit-Remaining-Minute": "0", "Retry-After": "30"}),
    # The RateLimit-* fields follow the period with the fewest left.
    ([("second", 10.0), ("hour", 100.0)], [0, 95], False,
     {"RateLimit-Limit": "100", "RateLimit-Remaining": "4", "RateLimit-Reset": "2370",
      "X-RateLimit-Remaining-Second": "9"}),
    # Refused by one period: the others are not counted down.
    ([("second", 10.0), ("hour", 100.0)], [10, 50], True,
     {"X-RateLimit-Remaining-Second": "0", "X-RateLimit-Remaining-Hour": "50",
      "Retry-After": "1"}),
])
def test_decide(limits: list[tuple[str, float]], usage: list[int], refused: bool,
                fields: dict[str, str]) -> None:
    d = decide(limits, usage, [window_start(p, T) for p, _ in limits], T, hide_headers=False)
    assert d.refused is refused
    got = _headers(d.lines)
    for k, v in fields.items():
        assert got[k] == v, (k, got)
    assert ("Retry-After" in got) is refused


@pytest.mark.parametrize("limit,used,hide", [
    (5.0, 0, False), (5.0, 4, False), (5.0, 5, False), (5.0, 9, False), (1.0, 0, True),
    (1.0, 1, True), (100.0, 37, False)])
@pytest.mark.parametrize("period", ["second", "minute", "hour", "day", "month", "year"])
def test_limit_policy_fast_path_is_the_rule(period: str, limit: float, used: int,
                                            hide: bool) -> None:
    starts = [window_start(period, T)]
    fast = LimitPolicy([(period, limit)], hide).decide([used], starts, T)
    rule = decide([(period, limit)], [used], starts, T, hide)
    assert (fast.refused, fast.lines, fast.retry_after) == (rule.refused, rule.lines,
                                                            rule.retry_after)


def test_decide_hidden_headers_keep_retry_after() -> None:
    start = [window_start("minute", T)]
    assert _headers(decide([("minute", 1.0)], [1], start, T, True).lines) == {"Retry-After": "30"}
    assert decide([("minute", 1.0)], [0], start, T, True).lines == []


# --------------------------------------------------------------------------- ip restriction

@pytest.mark.parametrize("allow,deny,ip,ok", [
    (["10.0.0.0/8"], None, "10.1.2.3", True),
    (["10.0.0.0/8"], None, "11.1.2.3", False),
    (None, ["10.0.0.0/8"], "10.1.2.3", False),
    (None, ["10.0.0.0/8"], "192.168.0.1", True),
    (["10.0.0.0/8"], ["10.1.0.0/16"], "10.1.2.3", False),  # deny is checked first
    (["10.0.0.0/8"], ["10.1.0.0/16"], "10.2.2.3", True),
    (["2001:db8::/32"], None, "2001:db8::1", True),
    (["2001:db8::/32"], None, "2001:db9::1", False),
    (["127.0.0.1"], None, "::ffff:127.0.0.1", True),  # IPv4-mapped
    (None, ["::1"], "::1", False),
    (["0.0.0.0/0"], None, "unix:", False),  # cannot identify: refused
])
def test_ip_matcher(allow: Any, deny: Any, ip: str, ok: bool) -> None:
    assert IpMatcher(allow, deny).allowed(ip) is ok


@pytest.mark.parametrize("peer,trusted,real,xff,expected", [
    ("1.1.1.1", False, b"9.9.9.9", b"8.8.8.8", "1.1.1.1"),
    ("1.1.1.1", True, b"9.9.9.9", b"8.8.8.8", "9.9.9.9"),
    ("1.1.1.1", True, None, b"7.7.7.7, 8.8.8.8", "8.8.8.8"),
    ("1.1.1.1", True, None, None, "1.1.1.1"),
])
def test_client_address(peer: str, trusted: bool, real: Any, xff: Any, expected: str) -> None:
    assert client_address(peer, trusted, real, xff) == expected


# --------------------------------------------------------------------------- cors

def _cors(**config: Any) -> CorsPolicy:
    base = {"methods": ["GET", "POST"], "credentials": False}
    return CorsPolicy({**base, **config})


@pytest.mark.parametrize("config,origin,expected", [
    ({}, "http://a.example", {"Access-Control-Allow-Origin": "*"}),
    ({"origins": ["*"]}, None, {"Access-Control-Allow-Origin": "*"}),
    ({"credentials": True}, "http://a.example",
     {"Access-Control-Allow-Origin": "http://a.example",
      "Access-Control-Allow-Credentials": "true", "Vary": "Origin"}),
    ({"origins": ["http://a.example"]}, "http://a.example",
     {"Access-Control-Allow-Origin": "http://a.example", "Vary": "Origin"}),
    ({"origins": ["http://a.example"]}, "HTTP://A.example:80",
     {"Access-Control-Allow-Origin": "HTTP://A.example:80", "Vary": "Origin"}),
    ({"origins": ["http://a.example"]}, "http://b.example", {"Vary": "Origin"}),
    ({"origins": [r"https://.*\.example\.com"]}, "https://x.example.com",
     {"Access-Control-Allow-Origin": "https://x.example.com", "Vary": "Origin"}),
    ({"origins": [r"https://.*\.example\.com"]}, "https://x.example.com.evil", {"Vary": "Origin"}),
    ({"exposed_headers": ["X-A", "X-B"]}, "http://a",
     {"Access-Control-Allow-Origin": "*", "Access-Control-Expose-Headers": "X-A,X-B"}),
])
def test_cors_response_fields(config: dict[str, Any], origin: str | None,
                              expected: dict[str, str]) -> None:
    assert _headers(_cors(**config).response_lines(origin)) == expected


def test_cors_preflight() -> None:
    got = _headers(_cors(max_age=3600, private_network=True).preflight(
        "http://a", "X-Custom", "true") or [])
    assert got == {"Access-Control-Allow-Origin": "*", "Access-Control-Allow-Headers": "X-Custom",
                   "Access-Control-Allow-Methods": "GET,POST", "Access-Control-Max-Age": "3600",
                   "Access-Control-Allow-Private-Network": "true"}
    got = _headers(_cors(headers=["X-A"]).preflight("http://a", "X-Custom", None) or [])
    assert got["Access-Control-Allow-Headers"] == "X-A"
    assert _cors(preflight_continue=True).preflight("http://a", None, None) is None


# --------------------------------------------------------------------------- transformers

F = [(b"Host", b"h"), (b"X-A", b"1"), (b"X-B", b"2"), (b"x-b", b"3")]


@pytest.mark.parametrize("ops,drop,add", [
    ({"remove": {"headers": ["x-a"]}}, {b"x-a"}, []),
    ({"rename": {"headers": ["x-a:X-Z"]}}, {b"x-a", b"x-z"}, [b"X-Z: 1\r\n"]),
    ({"replace": {"headers": ["X-A:9"]}}, {b"x-a"}, [b"X-A: 9\r\n"]),
    ({"replace": {"headers": ["X-N:9"]}}, None, None),  # only when present
    ({"add": {"headers": ["X-A:9"]}}, None, None),  # only when absent
    ({"add": {"headers": ["X-N:9"]}}, {b"x-n"}, [b"X-N: 9\r\n"]),
    ({"append": {"headers": ["X-A:9"]}}, {b"x-a"}, [b"X-A: 1\r\n", b"X-A: 9\r\n"]),
    ({"remove": {"headers": ["x-b"]}}, {b"x-b"}, []),  # every line of the name
    ({"add": {"headers": ["X-C:a:b"]}}, {b"x-c"}, [b"X-C: a:b\r\n"]),
])
def test_edit_fields(ops: dict[str, Any], drop: Any, add: Any) -> None:
    edit = edit_fields(F, ops)
    if drop is None:
        assert edit is None
    else:
        assert edit is not None and set(edit.drop) == drop and edit.add == add


@pytest.mark.parametrize("query,ops,expected", [
    (b"?a=1&b=2", {"remove": {"querystring": ["a"]}}, b"?b=2"),
    (b"?a=1", {"add": {"querystring": ["c:3"]}}, b"?a=1&c=3"),
    (b"", {"add": {"querystring": ["c:3"]}}, b"?c=3"),
    (b"?a=1", {"rename": {"querystring": ["a:z"]}}, b"?z=1"),
    (b"?a=1", {"replace": {"querystring": ["a:x y"]}}, b"?a=x+y"),
    (b"?a=1", {"append": {"querystring": ["a:2"]}}, b"?a=1&a=2"),
    (b"?a=1", {"remove": {"querystring": ["a"]}}, b""),
    (b"?a=1", {"remove": {"querystring": ["zz"]}}, None),
])
def test_edit_query(query: bytes, ops: dict[str, Any], expected: bytes | None) -> None:
    assert edit_query(query, ops) == expected


@pytest.mark.parametrize("ctype,body,ops,expected", [
    (b"application/json", b'{"a":1,"b":"x"}', {"remove": {"body": ["a"]}}, b'{"b":"x"}'),
    (b"application/json", b'{"a":1}', {"add": {"body": ["c:v"]}}, b'{"a":1,"c":"v"}'),
    (b"application/json", b'{"a":1}', {"rename": {"body": ["a:z"]}}, b'{"z":1}'),
    (b"application/json", b'{"a":1}', {"replace": {"body": ["a:2"]}}, b'{"a":"2"}'),
    (b"application/x-www-form-urlencoded", b"a=1&b=2", {"remove": {"body": ["b"]}}, b"a=1"),
    (b"text/plain", b"a=1", {"remove": {"body": ["a"]}}, None),
    (b"application/json", b"[1]", {"remove": {"body": ["a"]}}, None),
])
def test_edit_body(ctype: bytes, body: bytes, ops: dict[str, Any], expected: bytes | None) -> None:
    assert edit_body(ctype, body, ops) == expected
