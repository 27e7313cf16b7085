"""/openapi.json against the routing table it is built from, and its value patterns
against the model's checks they stand for (both ways)."""

from __future__ import annotations

import re
from types import SimpleNamespace
from typing import Any

import pytest

from fastgw.config import model as m
from fastgw.config import plugins
from fastgw.controlplane.admin.api import AdminAPI
from fastgw.controlplane.admin.json_schema import VALUE_PATTERNS, unpatterned_validators
from fastgw.controlplane.admin.meta import endpoint_path
from fastgw.controlplane.admin.openapi import build_openapi

_VERBS = {"get", "put", "post", "patch", "delete", "head", "options"}


def _api() -> AdminAPI:
    api = AdminAPI(SimpleNamespace(), SimpleNamespace(node_id="n"))  # type: ignore[arg-type]

    async def admin_metrics(call: Any) -> Any:  # as fastgw.controlplane.exporter adds it
        raise NotImplementedError

    admin_metrics.__module__ = "fastgw.controlplane.exporter"
    admin_metrics.__qualname__ = "MetricsHub.install.<locals>.admin_metrics"
    api.node_routes.append((("metrics",), {"GET": admin_metrics}))
    return api


def _routed(api: AdminAPI) -> set[tuple[str, str]]:
    """Every (path, method) the router answers, /schemas/{entity} per entity."""
    from fastgw.config.validate import SCHEMAS

    out: set[tuple[str, str]] = set()
    for pattern, methods in api.node_routes + api.entity_routes:
        concrete = [pattern]
        if pattern[:2] == ("schemas", "{entity}"):
            kinds = list(SCHEMAS) + (["workspaces"] if len(pattern) == 2 else [])
            concrete = [("schemas", k, *pattern[2:]) for k in kinds]
        for p in concrete:
            verbs = {v.lower() for v in methods} | {"options"}
            if "get" in verbs:
                verbs.add("head")
            out |= {(endpoint_path(p), v) for v in verbs}
    return out


def test_every_routed_operation_is_documented_and_nothing_else() -> None:
    api = _api()
    doc = build_openapi(api.node_routes + api.entity_routes, secured=False)
    documented = {(p, v) for p, item in doc["paths"].items() for v in item if v in _VERBS}
    assert documented == _routed(api)
    for kind in ("certificates", "snis", "ca_certificates"):  # the TLS entities
        assert {f"/{kind}", f"/{kind}/{{{kind}}}"} <= doc["paths"].keys()
    assert {"/certificates/{certificates}/snis", "/tags", "/endpoints",
            "/schemas/routes/validate"} <= doc["paths"].keys()


def test_token_declared_only_when_configured() -> None:
    api = _api()
    routes = api.node_routes + api.entity_routes
    open_doc, secured = build_openapi(routes), build_openapi(routes, secured=True)
    assert "security" not in open_doc["paths"]["/services"]["get"]
    assert "401" not in open_doc["paths"]["/services"]["get"]["responses"]
    get = secured["paths"]["/services"]["get"]
    assert get["security"] and "401" in get["responses"]
    # A preflight is answered before authentication.
    assert secured["paths"]["/services"]["options"]["security"] == []


def test_an_undescribed_handler_is_an_error() -> None:
    async def mystery(call: Any) -> Any:
        raise NotImplementedError

    with pytest.raises(LookupError, match="mystery"):
        build_openapi([(("mystery",), {"GET": mystery})])


def test_every_value_check_has_a_pattern() -> None:
    assert unpatterned_validators() == set()


def _matches(schema: dict[str, Any], value: str) -> bool:
    if "anyOf" in schema:
        return any(_matches(s, value) for s in schema["anyOf"])
    if schema.get("format") == "ipv6":
        import ipaddress

        try:
            ipaddress.IPv6Address(value)
        except ValueError:
            return False
        return True
    return re.search(schema["pattern"], value) is not None and "\n" not in value


# (check, value): the pattern and the check must agree on each.
_CASES = [
    (m.uuid_error, v) for v in ("0b9f0e34-2f7c-4c55-9b8e-7cbf7d0f3a51",
                                "0b9f0e342f7c4c559b8e7cbf7d0f3a51",
                                "{0b9f0e34-2f7c-4c55-9b8e-7cbf7d0f3a51}", "x")
] + [
    (m.name_error, v) for v in ("svc-1", "über", "a b", "a\n", "a/b", "~._-")
] + [
    (m.host_error, v) for v in ("example.com", "10.0.0.1", "::1", "a..b", "1.2.3", "a:80",
                                "[::1]x", "-a", "a_b", "999.1.1.1", "a\n")
] + [
    (m.upstream_name_error, v) for v in ("backend", "10.0.0.1", "a:1", "a.b.c", "1.2")
] + [
    (m.target_error, v) for v in ("a:80", "10.0.0.1:8000", "a", "a:", "a:65536", "a:٣",
                                  "a:00080", "1.2.3:80", "::1")
] + [
    (m.route_host_error, v) for v in ("*.example.com", "example.*", "a.*.b", "**", "*",
                                      "*.a:8080", "x*y", "10.0.0.1:80")
] + [
    (m.sni_error, v) for v in ("*.example.com", "example.com", "10.0.0.1", "a:443", "a.*")
] + [
    (m.router_path_error, v) for v in ("/", "/a/b", "//a", "/a/./b", "/a/..", "/%2F", "/%41",
                                       "/%2f", "~/users/[0-9]+", "a", "/a b")
] + [
    (m.path_error, v) for v in ("/", "/a%2f", "/a//b", "a", "/a%zz")
] + [
    (m.cookie_name_error, v) for v in ("session", "a b", "a=b", "a;")
] + [
    (m.route_header_name_error, v) for v in ("X-Region", "Host", "HOST", "x y")
] + [
    (m.tag_error, v) for v in ("prod", "a,b", "a/b", "tab\t")
] + [
    (m.cidr_error, v) for v in ("10.0.0.0/8", "10.0.0.1", "::1", "10.0.0.0/33", "x")
] + [
    (plugins._http_url_error, v) for v in ("http://a", "http://a:80/x?y", "http://[::1]:8/",
                                           "http://[0]", "http://[1::2:3]/",
                                           "http://[1:2:3:4:5:6:7:8]", "http://[1:2:3:4:5:6:7:8:9]",
                                           "http://a b", "http://a:65536", "https://a",
                                           "http://", "ftp://a", "x", "http://a/\u00e9")
] + [
    (plugins._filename_error, v) for v in ("/tmp/a.log", "/tmp/a*b", "a%b", "a\\b", "a`b")
] + [
    (plugins._colon_pairs, v) for v in ("a:b", ":", "ab", "a\t:b")
] + [
    (plugins._ip_or_cidr_error, v) for v in ("10.0.0.0/8", "::1", "10.0.0.0/33", "x")
]


@pytest.mark.parametrize(("check", "value"), _CASES,
                         ids=[f"{c.__name__}:{v!r}" for c, v in _CASES])
def test_pattern_agrees_with_check(check: Any, value: str) -> None:
    accepted = check(value) is None
    documented = _matches(VALUE_PATTERNS[check], value)
    if check is m.router_path_error and value.startswith("~") and accepted:
        return  # regex paths: the document states the literal ones only
    assert documented == accepted, (value, check(value))
