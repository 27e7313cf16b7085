"""Configuration layer: Kong 3.x defaults, validation wording, declarative load/dump."""

from __future__ import annotations

import copy
import uuid
from pathlib import Path
from typing import Any

import orjson
import pytest

from fastgw.config import (
    Config,
    ConfigError,
    GatewaySettings,
    Route,
    Service,
    Target,
    Upstream,
    build_entity,
    check_file,
    dump_declarative,
    load_config_file,
    load_declarative,
    load_settings,
    normalize_path,
    normalize_target,
    parse_listen,
)
from fastgw.config.model import DEFAULT_HEALTHCHECKS

REPO = Path(__file__).resolve().parents[2]
NOW = 1_700_000_000.123


def doc(**kw: Any) -> dict[str, Any]:
    return {"_format_version": "3.0", **kw}


def svc(**kw: Any) -> dict[str, Any]:
    return {"name": "s", "host": "example.com", **kw}


def load(d: dict[str, Any], **kw: Any) -> Config:
    return load_declarative(d, now=NOW, **kw)


def errors_of(d: dict[str, Any]) -> list[tuple[str, str]]:
    with pytest.raises(ConfigError) as ei:
        load(d)
    return ei.value.errors


# --------------------------------------------------------------------------- defaults

SERVICE_DEFAULTS = {
    "protocol": "http", "port": 80, "path": None, "retries": 5, "connect_timeout": 60000,
    "write_timeout": 60000, "read_timeout": 60000, "enabled": True, "tags": None,
    "tls_verify": None, "tls_verify_depth": None, "client_certificate": None,
    "ca_certificates": None,
}
ROUTE_DEFAULTS = {
    "protocols": ("http", "https"), "methods": None, "hosts": None, "headers": None,
    "snis": None, "sources": None, "destinations": None, "https_redirect_status_code": 426,
    "strip_path": True, "preserve_host": False, "regex_priority": 0, "path_handling": "v0",
    "request_buffering": True, "response_buffering": True, "tags": None,
}
UPSTREAM_DEFAULTS = {
    "algorithm": "round-robin", "hash_on": "none", "hash_fallback": "none",
    "hash_on_header": None, "hash_fallback_header": None, "hash_on_cookie": None,
    "hash_on_cookie_path": "/", "hash_on_query_arg": None, "hash_fallback_query_arg": None,
    "hash_on_uri_capture": None, "hash_fallback_uri_capture": None, "slots": 10000,
    "host_header": None, "client_certificate": None, "use_srv_name": False, "tags": None,
}


def _defaults_cases() -> list[tuple[str, str, Any]]:
    cases = [("service", k, v) for k, v in SERVICE_DEFAULTS.items()]
    cases += [("route", k, v) for k, v in ROUTE_DEFAULTS.items()]
    cases += [("upstream", k, v) for k, v in UPSTREAM_DEFAULTS.items()]
    cases += [("target", "weight", 100), ("target", "target", "10.0.0.1:8000")]
    return cases


@pytest.fixture(scope="module")
def minimal() -> Config:
    return load(doc(services=[svc(routes=[{"paths": ["/"]}])],
                    upstreams=[{"name": "up", "targets": [{"target": "10.0.0.1"}]}]))


@pytest.mark.parametrize("entity,field,expected", _defaults_cases())
def test_declarative_defaults_match_kong(minimal: Config, entity: str, field: str,
                                         expected: Any) -> None:
    obj = {"service": minimal.services[0], "route": minimal.routes[0],
           "upstream": minimal.upstreams[0], "target": minimal.targets[0]}[entity]
    assert getattr(obj, field) == expected


@pytest.mark.parametrize("cls,kw,field,expected", [
    (Service, {"host": "h"}, "retries", 5),
    (Service, {"host": "h"}, "port", 80),
    (Route, {}, "protocols", ("http", "https")),
    (Route, {}, "https_redirect_status_code", 426),
    (Upstream, {"name": "u"}, "slots", 10000),
    (Target, {"upstream": "x", "target": "a:1"}, "weight", 100),
])
def test_dataclass_defaults(cls: type, kw: dict[str, Any], field: str, expected: Any) -> None:
    assert getattr(cls(**kw), field) == expected


def test_healthchecks_defaults_full_record(minimal: Config) -> None:
    hc = minimal.upstreams[0].healthchecks
    assert hc == DEFAULT_HEALTHCHECKS
    assert hc["threshold"] == 0
    assert hc["active"]["unhealthy"]["http_statuses"] == [429, 404, 500, 501, 502, 503, 504, 505]
    assert hc["passive"]["unhealthy"]["http_statuses"] == [429, 500, 503]
    assert hc is not DEFAULT_HEALTHCHECKS


def test_partial_healthchecks_are_merged_with_defaults() -> None:
    c = load(doc(upstreams=[{"name": "u", "healthchecks": {
        "active": {"http_path": "/api/atelier/", "healthy": {"interval": 5, "successes": 2}}}}]))
    a = c.upstreams[0].healthchecks["active"]
    assert a["http_path"] == "/api/atelier/" and a["healthy"]["interval"] == 5
    assert a["healthy"]["http_statuses"] == [200, 302] and a["timeout"] == 1
    assert c.upstreams[0].healthchecks["passive"]["type"] == "http"


def test_ids_and_timestamps() -> None:
    c = load(doc(services=[svc(routes=[{"paths": ["/"]}])],
                 upstreams=[{"name": "u", "targets": [{"target": "a"}]}]))
    for e in (c.services[0], c.routes[0], c.upstreams[0], c.targets[0]):
        assert uuid.UUID(e.id)
    assert c.services[0].created_at == 1_700_000_000 and isinstance(c.services[0].created_at, int)
    assert c.targets[0].created_at == pytest.approx(NOW) and isinstance(c.targets[0].created_at, float)
    assert c.routes[0].service == c.services[0].id
    assert c.targets[0].upstream == c.upstreams[0].id
    # derived ids are stable across loads (hot reload keeps balancer state)
    assert load(doc(services=[svc()])).services[0].id == c.services[0].id


def test_explicit_id_kept() -> None:
    i = str(uuid.uuid4())
    assert load(doc(services=[svc(id=i)])).services[0].id == i


# --------------------------------------------------------------------------- shorthands / normalization

@pytest.mark.parametrize("url,protocol,host,port,path", [
    ("http://iris:52773", "http", "iris", 52773, None),
    ("https://iris", "https", "iris", 443, None),
    ("http://iris", "http", "iris", 80, None),
    ("http://iris/api/", "http", "iris", 80, "/api/"),
    ("https://10.0.0.1:8443/x", "https", "10.0.0.1", 8443, "/x"),
    ("http://[::1]:8080", "http", "[::1]", 8080, None),
])
def test_service_url_shorthand(url: str, protocol: str, host: str, port: int,
                               path: str | None) -> None:
    s = load(doc(services=[{"name": "s", "url": url}])).services[0]
    assert (s.protocol, s.host, s.port, s.path) == (protocol, host, port, path)


@pytest.mark.parametrize("raw,normalized", [
    ("10.0.0.1", "10.0.0.1:8000"),
    ("10.0.0.1:52773", "10.0.0.1:52773"),
    ("::1", "[::1]:8000"),
    ("[::1]", "[::1]:8000"),
    ("[::1]:9000", "[::1]:9000"),
    ("iris-a", "iris-a:8000"),
    ("iris-a:52773", "iris-a:52773"),
])
def test_target_normalization(raw: str, normalized: str) -> None:
    assert normalize_target(raw) == normalized
    c = load(doc(upstreams=[{"name": "u", "targets": [{"target": raw}]}]))
    assert c.targets[0].target == normalized


@pytest.mark.parametrize("raw,expected", [
    ("/a/./b/../c", "/a/c"), ("/%7euser", "/~user"), ("/a%2fb", "/a%2Fb"), ("/", "/"),
])
def test_normalize_path(raw: str, expected: str) -> None:
    assert normalize_path(raw) == expected


def test_route_headers_lowercased_tuples() -> None:
    r = load(doc(services=[svc(routes=[{"headers": {"X-Region": ["north", "south"]}}])])).routes[0]
    assert r.headers == {"x-region": ("north", "south")}


def test_set_fields_are_tuples_and_deduplicated() -> None:
    r = load(doc(services=[svc(routes=[{"methods": ["GET", "GET", "POST"], "paths": ["/"]}])])).routes[0]
    assert r.methods == ("GET", "POST") and isinstance(r.paths, tuple)


# --------------------------------------------------------------------------- references

@pytest.mark.parametrize("ref", ["s", {"name": "s"}, "ID", {"id": "ID"}])
def test_top_level_route_references_service(ref: Any) -> None:
    sid = str(uuid.uuid4())
    ref = sid if ref == "ID" else ({"id": sid} if ref == {"id": "ID"} else ref)
    c = load(doc(services=[svc(id=sid)], routes=[{"name": "r", "paths": ["/"], "service": ref}]))
    assert c.routes[0].service == sid


def test_top_level_targets_and_nested_plugins() -> None:
    c = load(doc(
        upstreams=[{"name": "u"}],
        targets=[{"target": "a:1", "upstream": "u"}, {"target": "b", "upstream": {"name": "u"}}],
        services=[svc(plugins=[{"name": "correlation-id"}],
                      routes=[{"name": "r", "paths": ["/"], "plugins": [{"name": "cors"}]}])],
        consumers=[{"username": "bob", "plugins": [{"name": "rate-limiting", "config": {"minute": 5}}]}],
        plugins=[{"name": "key-auth", "service": "s", "route": "r"}],
    ))
    assert [t.target for t in c.targets] == ["a:1", "b:8000"]
    assert all(t.upstream == c.upstreams[0].id for t in c.targets)
    by_name = {p.name: p for p in c.plugins}
    assert by_name["correlation-id"].service == c.services[0].id
    assert by_name["correlation-id"].route is None
    assert by_name["cors"].route == c.routes[0].id and by_name["cors"].service is None
    assert by_name["rate-limiting"].consumer == c.consumers[0].id
    assert by_name["rate-limiting"].config["minute"] == 5
    assert by_name["rate-limiting"].config["policy"] == "local"  # Kong's default, filled in
    assert by_name["key-auth"].service == c.services[0].id and by_name["key-auth"].route == c.routes[0].id
    assert by_name["key-auth"].protocols == ("grpc", "grpcs", "http", "https")
    assert not any("plugin" in w for w in c.warnings)


# --------------------------------------------------------------------------- errors

ERROR_CASES = [
    # (document, expected (path, message))
    (doc(services=[{"name": "s"}]), ("services[0].host", "required field missing")),
    (doc(services=[svc(port="80")]), ("services[0].port", "expected an integer")),
    (doc(services=[svc(port=True)]), ("services[0].port", "expected an integer")),
    (doc(services=[svc(port=70000)]), ("services[0].port", "value should be between 0 and 65535")),
    (doc(services=[svc(retries=40000)]), ("services[0].retries", "value should be between 0 and 32767")),
    (doc(services=[svc(read_timeout=0)]), ("services[0].read_timeout", "value should be between 1 and 2147483646")),
    (doc(services=[svc(path="api")]), ("services[0].path", "should start with: /")),
    (doc(services=[svc(path="/a//b")]), ("services[0].path", "must not have empty segments")),
    (doc(services=[svc(protocol="ftp")]), ("services[0].protocol", "expected one of: grpc, grpcs, http, https, tcp, tls, tls_passthrough, udp, ws, wss")),
    (doc(services=[svc(host="a.com:80")]), ("services[0].host", "must not have a port")),
    (doc(services=[svc(enabled="yes")]), ("services[0].enabled", "expected a boolean")),
    (doc(services=[svc(name="a b")]), ("services[0].name", "invalid value 'a b': the only accepted ascii characters are alphanumerics or ., -, _, and ~")),
    (doc(services=[svc(id="nope")]), ("services[0].id", "expected a valid UUID")),
    (doc(services=[svc(bogus=1)]), ("services[0].bogus", "unknown field")),
    (doc(services=[svc(routes=[{"paths": ["api"]}])]), ("services[0].routes[0].paths[0]", "should start with: / (fixed path) or ~/ (regex path)")),
    (doc(services=[svc(routes=[{"paths": ["/ok", "~/a(b"]}])]), ("services[0].routes[0].paths[1]", "invalid regex: '/a(b' (missing ), unterminated subpattern at position 2)")),
    (doc(services=[svc(routes=[{"paths": ["/a/../b"]}])]), ("services[0].routes[0].paths[0]", "non-normalized path, consider use '/b' instead")),
    (doc(services=[svc(routes=[{"paths": ["/a b"]}])]), ("services[0].routes[0].paths[0]", "invalid path: '/a b' (characters outside of the reserved list of RFC 3986 found)")),
    (doc(services=[svc(routes=[{"name": "r"}])]), ("services[0].routes[0].@entity", "must set one of 'methods', 'hosts', 'headers', 'paths', 'snis' when 'protocols' is 'https'")),
    (doc(services=[svc(routes=[{"protocols": ["http"]}])]), ("services[0].routes[0].@entity", "must set one of 'methods', 'hosts', 'headers', 'paths' when 'protocols' is 'http'")),
    (doc(services=[svc(routes=[{"paths": ["/"], "protocols": ["http", "tcp"]}])]), ("services[0].routes[0].protocols", "these sets are mutually exclusive: ('http', 'https'), ('tcp', 'tls', 'udp'), ('tls_passthrough'), ('grpc', 'grpcs'), ('ws', 'wss')")),
    (doc(services=[svc(routes=[{"paths": ["/"], "protocols": ["gopher"]}])]), ("services[0].routes[0].protocols[0]", "expected one of: grpc, grpcs, http, https, tcp, tls, tls_passthrough, udp, ws, wss")),
    (doc(services=[svc(routes=[{"paths": ["/"], "protocols": []}])]), ("services[0].routes[0].protocols", "length must be at least 1")),
    (doc(services=[svc(routes=[{"headers": {"Host": ["a"]}}])]), ("services[0].routes[0].headers", "cannot contain 'host' header, which must be specified in the 'hosts' attribute")),
    (doc(services=[svc(routes=[{"headers": {"x": "a"}}])]), ("services[0].routes[0].headers.x", "expected an array")),
    (doc(services=[svc(routes=[{"hosts": ["*.a.*"]}])]), ("services[0].routes[0].hosts[0]", "only one wildcard must be specified")),
    (doc(services=[svc(routes=[{"hosts": ["a.*.com"]}])]), ("services[0].routes[0].hosts[0]", "wildcard must be leftmost or rightmost character")),
    (doc(services=[svc(routes=[{"hosts": ["a b"]}])]), ("services[0].routes[0].hosts[0]", "invalid value: a b")),
    (doc(services=[svc(routes=[{"methods": ["get"]}])]), ("services[0].routes[0].methods[0]", "invalid value: get")),
    (doc(services=[svc(routes=[{"paths": ["/"], "https_redirect_status_code": 303}])]), ("services[0].routes[0].https_redirect_status_code", "expected one of: 426, 301, 302, 307, 308")),
    (doc(services=[svc(routes=[{"paths": ["/"], "path_handling": "v2"}])]), ("services[0].routes[0].path_handling", "expected one of: v0, v1")),
    (doc(services=[svc(routes=[{"paths": ["/"], "service": "s"}])]), ("services[0].routes[0].service", "unknown field")),
    (doc(routes=[{"paths": ["/"], "service": "missing"}]), ("routes[0].service", "invalid reference 'service: missing' (no such entry in 'services')")),
    (doc(routes=[{"paths": ["/"], "service": {"id": str(uuid.UUID(int=1))}}]), ("routes[0].service", f"invalid reference 'service: {uuid.UUID(int=1)}' (no such entry in 'services')")),
    (doc(upstreams=[{"name": "10.0.0.1"}]), ("upstreams[0].name", "Invalid name; no ip addresses allowed")),
    (doc(upstreams=[{"name": "up:80"}]), ("upstreams[0].name", "Invalid name; no port allowed")),
    (doc(upstreams=[{"name": "a b"}]), ("upstreams[0].name", "Invalid name; must be a valid hostname")),
    (doc(upstreams=[{}]), ("upstreams[0].name", "required field missing")),
    (doc(upstreams=[{"name": "u", "algorithm": "random"}]), ("upstreams[0].algorithm", "expected one of: consistent-hashing, least-connections, round-robin, latency, sticky-sessions")),
    (doc(upstreams=[{"name": "u", "slots": 5}]), ("upstreams[0].slots", "value should be between 10 and 65536")),
    (doc(upstreams=[{"name": "u", "healthchecks": {"active": {"timeout": -1}}}]), ("upstreams[0].healthchecks.active.timeout", "value should be between 0 and 65535")),
    (doc(upstreams=[{"name": "u", "healthchecks": {"threshold": 101}}]), ("upstreams[0].healthchecks.threshold", "value should be between 0 and 100")),
    (doc(upstreams=[{"name": "u", "healthchecks": {"active": {"unhealthy": {"tcp_failures": 256}}}}]), ("upstreams[0].healthchecks.active.unhealthy.tcp_failures", "value should be between 0 and 255")),
    (doc(upstreams=[{"name": "u", "healthchecks": {"active": {"healthy": {"http_statuses": [99]}}}}]), ("upstreams[0].healthchecks.active.healthy.http_statuses[0]", "value should be between 100 and 999")),
    (doc(upstreams=[{"name": "u", "healthchecks": {"active": {"type": "udp"}}}]), ("upstreams[0].healthchecks.active.type", "expected one of: tcp, http, https, grpc, grpcs")),
    (doc(upstreams=[{"name": "u", "healthchecks": {"passive": {"nope": 1}}}]), ("upstreams[0].healthchecks.passive.nope", "unknown field")),
    (doc(upstreams=[{"name": "u", "hash_on": "header"}]), ("upstreams[0].hash_on_header", "required field missing")),
    (doc(upstreams=[{"name": "u", "hash_on": "cookie", "hash_on_cookie": "c", "hash_fallback": "ip"}]), ("upstreams[0].hash_fallback", "expected one of: none")),
    (doc(upstreams=[{"name": "u", "hash_on": "none", "hash_fallback": "ip"}]), ("upstreams[0].hash_fallback", "expected one of: none")),
    (doc(upstreams=[{"name": "u", "hash_on": "ip", "hash_fallback": "ip"}]), ("upstreams[0].hash_fallback", "expected one of: none, consumer, header, cookie, path, query_arg, uri_capture")),
    (doc(upstreams=[{"name": "u", "hash_on": "header", "hash_fallback": "header", "hash_on_header": "a", "hash_fallback_header": "a"}]), ("upstreams[0].@entity", "values of these fields must be distinct: 'hash_on_header', 'hash_fallback_header'")),
    (doc(upstreams=[{"name": "u", "targets": [{"target": "a b"}]}]), ("upstreams[0].targets[0].target", "Invalid target ('a b'); not a valid hostname or ip address")),
    (doc(upstreams=[{"name": "u", "targets": [{"target": "a:99999"}]}]), ("upstreams[0].targets[0].target", "Invalid target ('a:99999'); not a valid hostname or ip address")),
    (doc(upstreams=[{"name": "u", "targets": [{"target": "a", "weight": 65536}]}]), ("upstreams[0].targets[0].weight", "value should be between 0 and 65535")),
    (doc(upstreams=[{"name": "u", "targets": [{"target": "a"}, {"target": "a:8000"}]}]), ("upstreams[0].targets[1].target", "uniqueness violation: 'targets' entity with target set to 'a:8000' already declared")),
    (doc(targets=[{"target": "a"}]), ("targets[0].upstream", "required field missing")),
    (doc(targets=[{"target": "a", "upstream": "nope"}]), ("targets[0].upstream", "invalid reference 'upstream: nope' (no such entry in 'upstreams')")),
    (doc(services=[svc(), svc()]), ("services[1].name", "uniqueness violation: 'services' entity with name set to 's' already declared")),
    (doc(services=[svc(routes=[{"name": "r", "paths": ["/"]}]), svc(name="t", routes=[{"name": "r", "paths": ["/x"]}])]), ("services[1].routes[0].name", "uniqueness violation: 'routes' entity with name set to 'r' already declared")),
    (doc(upstreams=[{"name": "u"}, {"name": "u"}]), ("upstreams[1].name", "uniqueness violation: 'upstreams' entity with name set to 'u' already declared")),
    (doc(consumers=[{"tags": ["a"]}]), ("consumers[0].@entity", "at least one of these fields must be non-empty: 'custom_id', 'username'")),
    (doc(plugins=[{"config": {}}]), ("plugins[0].name", "required field missing")),
    (doc(plugins=[{"name": "cors", "service": "nope"}]), ("plugins[0].service", "invalid reference 'service: nope' (no such entry in 'services')")),
    ({"services": []}, ("_format_version", "required field missing")),
    (doc(_format_version="2.0"), ("_format_version", "expected one of: 1.1, 2.1, 3.0")),
    (doc(frobnicate=[]), ("frobnicate", "unknown field")),
    (doc(services={}), ("services", "expected an array")),
    (doc(gateway={"proxy_listen": "nope"}), ("gateway.proxy_listen", "invalid listen address 'nope', expected host:port")),
    (doc(gateway={"workers": 0}), ("gateway.workers", "expected a positive integer or 'auto'")),
    (doc(gateway={"max_body_size": "x"}), ("gateway.max_body_size", "expected an integer")),
    (doc(gateway={"trusted_ips": ["10.0.0.0/33"]}), ("gateway.trusted_ips", "invalid IP address or CIDR range: '10.0.0.0/33'")),
    (doc(gateway={"colour": 1}), ("gateway.colour", "unknown field")),
]


@pytest.mark.parametrize("document,expected", ERROR_CASES,
                         ids=[f"{e[0]}:{e[1][:30]}" for _, e in ERROR_CASES])
def test_validation_errors(document: dict[str, Any], expected: tuple[str, str]) -> None:
    assert expected in errors_of(document)


def test_conditional_errors_come_with_entity_error() -> None:
    errs = errors_of(doc(upstreams=[{"name": "u", "hash_on": "header"}]))
    assert errs == [("upstreams[0].@entity", "failed conditional validation given value of field 'hash_on'"),
                    ("upstreams[0].hash_on_header", "required field missing")]


def test_collects_all_errors_across_entities() -> None:
    errs = errors_of(doc(
        services=[{"name": "a", "port": "x"}, svc(name="b", routes=[{"paths": ["x"]}])],
        upstreams=[{"name": "1.2.3.4", "targets": [{"target": "a", "weight": -1}]}],
    ))
    assert {p for p, _ in errs} == {
        "services[0].host", "services[0].port", "services[1].routes[0].paths[0]",
        "upstreams[0].name", "upstreams[0].targets[0].weight"}


@pytest.mark.parametrize("errors,message", [
    ([("host", "required field missing")], "schema violation (host: required field missing)"),
    ([("host", "required field missing"), ("port", "expected an integer")],
     "2 schema violations (host: required field missing; port: expected an integer)"),
    ([("healthchecks.active.timeout", "expected a number")],
     "schema violation (healthchecks.active.timeout: expected a number)"),
    ([("hash_on_header", "required field missing"),
      ("@entity", "failed conditional validation given value of field 'hash_on'")],
     "2 schema violations (failed conditional validation given value of field 'hash_on'; "
     "hash_on_header: required field missing)"),
    ([("services[0].host", "required field missing"), ("services[0].port", "expected an integer")],
     "services[0]: 2 schema violations (host: required field missing; port: expected an integer)"),
    ([("services[0].routes[1].paths[0]", "x"), ("upstreams[0].name", "y")],
     "services[0].routes[1]: schema violation (paths[0]: x); upstreams[0]: schema violation (name: y)"),
    ([("gateway.workers", "z")], "gateway: schema violation (workers: z)"),
])
def test_error_rendering(errors: list[tuple[str, str]], message: str) -> None:
    assert str(ConfigError(errors)) == message


def test_error_fields_mirror_kong() -> None:
    e = ConfigError([("services[0].host", "required field missing"),
                     ("services[0].routes[0].paths[1]", "bad"),
                     ("upstreams[0].@entity", "failed"), ("_format_version", "required field missing")])
    assert e.fields == {
        "services": [{"host": "required field missing", "routes": [{"paths": [None, "bad"]}]}],
        "upstreams": [{"@entity": ["failed"]}],
        "_format_version": "required field missing",
    }


# --------------------------------------------------------------------------- warnings / coupling

@pytest.mark.parametrize("document,warning", [
    (doc(services=[svc(routes=[{"snis": ["a.com"], "protocols": ["https"]}])]),
     "services[0].routes[0].snis: not supported yet, kept but not enforced"),
    (doc(_workspace="team"), "_workspace: not supported yet, kept but not enforced (fastgw workspaces are in 'workspaces')"),
    (doc(certificates=[{"cert": "{vault://env/cert}", "key": "{vault://env/key}"}]),
     "certificates[0].cert: vault references are not supported yet, kept but the certificate "
     "is not used"),
    (doc(vaults=[{"name": "env", "prefix": "e"}]),
     "vaults: not supported yet, kept but not enforced"),
    (doc(consumers=[{"username": "u", "jwt_secrets": [{"key": "k"}]}]),
     "consumers[0].jwt_secrets: not supported yet, kept but not enforced"),
    (doc(upstreams=[{"name": "u", "use_srv_name": True}]), "upstreams[0].use_srv_name: not supported yet, kept but not enforced"),
    (doc(services=[svc(protocol="grpc")]), "services[0].protocol: protocol grpc not supported yet, treated as http(s)"),
    (doc(_format_version="2.1", services=[svc(routes=[{"paths": [r"/v\d+"]}])]),
     r"services[0].routes[0].paths[0]: _format_version 2.1 regex path '/v\d+' converted to '~/v\d+'"),
])
def test_unsupported_fields_are_reported(document: dict[str, Any], warning: str) -> None:
    assert warning in load(document).warnings


def test_legacy_regex_path_migrated() -> None:
    c = load(doc(_format_version="2.1", services=[svc(routes=[{"paths": [r"/v\d+", "/plain"]}])]))
    assert c.routes[0].paths == (r"~/v\d+", "/plain") and c.format_version == "2.1"


def test_comment_and_ignore_accepted_silently() -> None:
    c = load(doc(_comment="hi", _ignore=[1], _transform=True,
                 services=[svc(_comment="x", _ignore=["y"])]))
    assert c.warnings == () and c.services[0].name == "s"


@pytest.mark.parametrize("given,algorithm,hash_on", [
    ({"hash_on": "ip"}, "consistent-hashing", "ip"),
    ({"hash_on": "ip", "algorithm": "round-robin"}, "consistent-hashing", "ip"),
    ({"hash_on": "none", "algorithm": "consistent-hashing"}, "round-robin", "none"),
    ({"algorithm": "least-connections"}, "least-connections", "none"),
    ({"algorithm": "consistent-hashing", "hash_on": "header", "hash_on_header": "x-user"},
     "consistent-hashing", "header"),
])
def test_upstream_hash_coupling(given: dict[str, Any], algorithm: str, hash_on: str) -> None:
    u = load(doc(upstreams=[{"name": "u", **given}])).upstreams[0]
    assert (u.algorithm, u.hash_on) == (algorithm, hash_on)


# --------------------------------------------------------------------------- settings

def test_settings_defaults() -> None:
    s = GatewaySettings()
    assert (s.proxy_listen, s.admin_listen, s.status_listen, s.workers) == (
        "0.0.0.0:8000, 0.0.0.0:8443 ssl", "127.0.0.1:8001", "127.0.0.1:8100", "auto")
    assert [str(a) for a in s.listeners("proxy")] == ["0.0.0.0:8000", "0.0.0.0:8443 ssl"]
    assert (s.tls_versions, s.ssl_cipher_suite, s.ssl_session_tickets) == (
        ("TLSv1.2", "TLSv1.3"), "intermediate", True)
    assert (s.upstream_keepalive_pool_size, s.upstream_keepalive_max_requests,
            s.upstream_keepalive_idle_timeout) == (512, 10000, 60)
    assert (s.max_request_line_size, s.max_header_size, s.max_body_size) == (8192, 32768, 0)
    assert (s.client_header_timeout, s.client_body_timeout, s.client_keepalive_timeout,
            s.drain_timeout) == (60, 60, 75, 30)
    assert s.admin_token is None and s.access_log is None and s.trusted_ips == ()


@pytest.mark.parametrize("file,env,cli,expected", [
    ({}, {}, {}, "auto"),
    ({"workers": 2}, {}, {}, 2),
    ({"workers": 2}, {"FASTGW_WORKERS": "3"}, {}, 3),
    ({"workers": 2}, {"FASTGW_WORKERS": "3"}, {"workers": 4}, 4),
    ({"workers": 2}, {"FASTGW_WORKERS": "3"}, {"workers": "auto"}, "auto"),
    ({}, {"FASTGW_WORKERS": "auto"}, {}, "auto"),
])
def test_settings_precedence(file: dict[str, Any], env: dict[str, str], cli: dict[str, Any],
                             expected: Any) -> None:
    assert load_settings(file, env, cli).workers == expected


@pytest.mark.parametrize("env,field,expected", [
    ({"FASTGW_PROXY_LISTEN": "[::]:9000"}, "proxy_listen", "[::]:9000"),
    ({"FASTGW_MAX_BODY_SIZE": "1048576"}, "max_body_size", 1048576),
    ({"FASTGW_DRAIN_TIMEOUT": "2.5"}, "drain_timeout", 2.5),
    ({"FASTGW_TRUSTED_IPS": "10.0.0.0/8, ::1,unix:"}, "trusted_ips", ("10.0.0.0/8", "::1", "unix:")),
    ({"FASTGW_ADMIN_TOKEN": "s3cret"}, "admin_token", "s3cret"),
    ({"FASTGW_STATUS_LISTEN": "off"}, "status_listen", "off"),
])
def test_settings_env_parsing(env: dict[str, str], field: str, expected: Any) -> None:
    assert getattr(load_settings({}, env), field) == expected


def test_settings_env_error_names_variable() -> None:
    with pytest.raises(ConfigError) as ei:
        load_settings({}, {"FASTGW_WORKERS": "many"})
    assert ei.value.errors == [("gateway.workers",
                                "expected a positive integer or 'auto' (from FASTGW_WORKERS)")]


@pytest.mark.parametrize("value,expected", [
    ("0.0.0.0:8000", ("0.0.0.0", 8000)), ("[::]:8001", ("::", 8001)),
    ("localhost:1", ("localhost", 1)), ("127.0.0.1:0", ("127.0.0.1", 0)),
])
def test_parse_listen(value: str, expected: tuple[str, int]) -> None:
    assert parse_listen(value) == expected


@pytest.mark.parametrize("value", ["8000", "host:", ":80", "a:70000", "[zz]:80", "off"])
def test_parse_listen_rejects(value: str) -> None:
    with pytest.raises(ValueError):
        parse_listen(value)


@pytest.mark.parametrize("trusted,ip,ok", [
    ((), "10.0.0.1", False),
    (("10.0.0.0/8",), "10.1.2.3", True),
    (("10.0.0.0/8",), "11.0.0.1", False),
    (("10.0.0.0/8",), "::ffff:10.0.0.1", True),
    (("::1",), "::1", True),
    (("0.0.0.0/0",), "8.8.8.8", True),
    (("0.0.0.0/0",), "2001:db8::1", False),
    (("0.0.0.0/0", "::/0"), "2001:db8::1", True),
    (("unix:",), "unix:", True),
    (("10.0.0.0/8",), "unix:", False),
    (("10.0.0.0/8",), "garbage", False),
])
def test_is_trusted(trusted: tuple[str, ...], ip: str, ok: bool) -> None:
    assert GatewaySettings(trusted_ips=trusted).is_trusted(ip) is ok


# --------------------------------------------------------------------------- round trip / files

KONG_MD_EXAMPLE = {
    "_format_version": "3.0",
    "_transform": True,
    "services": [{
        "name": "iris",
        "url": "http://iris-upstream:52773",
        "routes": [{"name": "atelier", "paths": ["/api/atelier"], "strip_path": False}],
        "plugins": [{"name": "correlation-id"}],
    }],
    "upstreams": [{
        "name": "iris-upstream",
        "algorithm": "round-robin",
        "healthchecks": {"active": {"http_path": "/api/atelier/",
                                    "healthy": {"interval": 5, "successes": 2},
                                    "unhealthy": {"interval": 5, "http_failures": 2,
                                                  "tcp_failures": 2, "timeouts": 2}}},
        "targets": [{"target": "iris-a:52773", "weight": 100}],
    }],
    "consumers": [{"username": "alice"}],
    "plugins": [{"name": "cors", "service": "iris"}],
}


def test_kong_reference_example_loads_unchanged() -> None:
    original = copy.deepcopy(KONG_MD_EXAMPLE)
    c = load(KONG_MD_EXAMPLE)
    assert KONG_MD_EXAMPLE == original  # input not mutated
    s, r, u = c.services[0], c.routes[0], c.upstreams[0]
    assert (s.protocol, s.host, s.port, s.path) == ("http", "iris-upstream", 52773, None)
    assert r.paths == ("/api/atelier",) and r.strip_path is False and r.service == s.id
    assert u.healthchecks["active"]["unhealthy"]["tcp_failures"] == 2
    assert c.targets[0].target == "iris-a:52773"
    assert {p.name for p in c.plugins} == {"correlation-id", "cors"}


def _rich_config() -> Config:
    return load(doc(
        services=[svc(path="/base", routes=[
            {"name": "r1", "paths": ["/a", "~/b/(?<id>\\d+)$"], "methods": ["GET"],
             "headers": {"X-A": ["1"]}, "hosts": ["*.example.com"], "regex_priority": 3}]),
            svc(name="t", url="https://t.example:8443")],
        routes=[{"name": "loose", "paths": ["/loose"]},
                {"name": "r2", "paths": ["/r2"], "service": "s"}],
        upstreams=[{"name": "u", "hash_on": "header", "hash_on_header": "x-user",
                    "targets": [{"target": "::1"}, {"target": "b", "weight": 0}]}],
        targets=[{"target": "c:1", "upstream": "u", "tags": ["x"]}],
        consumers=[{"username": "bob", "custom_id": "42"}],
        plugins=[{"name": "cors", "route": "r1", "config": {"origins": ["*"]}}],
        gateway={"workers": 2, "trusted_ips": ["10.0.0.0/8"], "admin_token": "t"},
    ))


def test_dump_load_round_trip() -> None:
    c = _rich_config()
    dumped = dump_declarative(c)
    assert dumped["_format_version"] == "3.0"
    assert dumped["gateway"]["workers"] == 2
    assert [r["name"] for r in dumped["services"][0]["routes"]] == ["r1", "r2"]
    assert [r["name"] for r in dumped["routes"]] == ["loose"]
    again = load_declarative(orjson.loads(orjson.dumps(dumped)))
    assert again == c
    assert dump_declarative(again) == dumped


def test_build_entity_for_admin_api() -> None:
    r, warnings = build_entity("routes", {"paths": ["/x"], "service": {"id": str(uuid.UUID(int=3))}},
                               now=NOW)
    assert isinstance(r, Route) and r.service == str(uuid.UUID(int=3)) and warnings == []
    with pytest.raises(ConfigError) as ei:
        build_entity("services", {"port": "x"})
    assert str(ei.value) == "2 schema violations (host: required field missing; port: expected an integer)"


def test_shipped_config_json_loads() -> None:
    c = load_config_file(REPO / "config.json", env={})
    assert c.gateway.workers == 1
    assert (c.gateway.proxy_listen, c.gateway.admin_listen, c.gateway.status_listen) == (
        "0.0.0.0:8000, 0.0.0.0:8443 ssl", "127.0.0.1:8001", "127.0.0.1:8100")
    u = c.upstream("iris")
    assert u is not None and [t.target for t in c.targets_for(u.id)] == ["127.0.0.1:52773", "127.0.0.1:52774"]
    assert all(t.weight == 100 for t in c.targets)
    s = c.service("atelier")
    assert s is not None and (s.host, s.port, s.protocol) == ("iris", 80, "http")
    r = c.route("atelier")
    assert r is not None and r.paths == ("/api/atelier",) and r.strip_path is False and r.service == s.id
    assert c.warnings == ()
    assert check_file(REPO / "config.json", env={}) == []


def test_load_config_file_env_and_overrides(tmp_path: Path) -> None:
    p = tmp_path / "c.json"
    p.write_bytes(orjson.dumps(doc(gateway={"workers": 2, "drain_timeout": 5})))
    c = load_config_file(p, env={"FASTGW_WORKERS": "3", "FASTGW_DRAIN_TIMEOUT": "7"},
                         overrides={"workers": 8})
    assert (c.gateway.workers, c.gateway.drain_timeout) == (8, 7)


def test_json_syntax_error_has_line_and_column(tmp_path: Path) -> None:
    p = tmp_path / "bad.json"
    p.write_text('{\n  "_format_version": "3.0",\n  "services": [,]\n}\n')
    with pytest.raises(ConfigError) as ei:
        load_config_file(p, env={})
    assert "line 3, column 16" in str(ei.value)
    lines = check_file(p, env={})
    assert len(lines) == 1 and "invalid JSON at line 3, column 16" in lines[0]


def test_check_file_lines(tmp_path: Path) -> None:
    p = tmp_path / "c.json"
    p.write_bytes(orjson.dumps(doc(services=[{"name": "s", "port": "x"}])))
    assert check_file(p, env={}) == ["services[0].host: required field missing",
                                      "services[0].port: expected an integer"]
    assert check_file(tmp_path / "missing.json", env={})[0].startswith("cannot read")


def test_entities_are_frozen() -> None:
    s = Service(host="h")
    with pytest.raises(AttributeError):
        s.port = 1  # type: ignore[misc]
    assert not hasattr(s, "__dict__")


@pytest.mark.parametrize(
    "raw,expected",
    [(True, True), (False, False), ("off", False), ("on", True), ("false", False), ("1", True)],
)
def test_metrics_setting_parses_booleans(raw: object, expected: bool) -> None:
    from fastgw.config.settings import load_settings

    assert load_settings({"metrics": raw}).metrics is expected
    assert load_settings(None, env={"FASTGW_METRICS": str(raw).lower()}).metrics is expected


def test_metrics_setting_rejects_non_booleans() -> None:
    from fastgw.config.settings import load_settings

    with pytest.raises(ConfigError) as err:
        load_settings({"metrics": "maybe"})
    assert err.value.errors == [("gateway.metrics", "expected a boolean")]
