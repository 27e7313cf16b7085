"""The pure parts of the Admin API contract: schema documents, CORS answers, /endpoints
paths, /tags rows, GET / blocks. Table-driven; the wire behaviour is replayed end to end in
tests/e2e/test_kong_manager_calls.py."""

from __future__ import annotations

from typing import Any

import pytest

from fastgw.config import ConfigError, load_declarative
from fastgw.config.schema import Field
from fastgw.config.schema_doc import field_document, record_document
from fastgw.config.settings import GatewaySettings, load_settings
from fastgw.config.validate import SCHEMAS
from fastgw.controlplane.admin.cors import CorsPolicy, allow_list, gui_origin
from fastgw.controlplane.admin.meta import endpoint_paths, tag_rows
from fastgw.controlplane.admin.node_info import configuration_block, plugins_block
from fastgw.controlplane.admin.schemas import entity_document, plugin_document


def _fields(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {name: attrs for f in doc["fields"] for name, attrs in f.items()}


@pytest.mark.parametrize("kind", sorted(SCHEMAS))
def test_entity_document_lists_exactly_the_validated_fields(kind: str) -> None:
    doc = entity_document(kind)
    assert doc is not None
    assert [next(iter(f)) for f in doc["fields"]] == list(SCHEMAS[kind])


@pytest.mark.parametrize(("kind", "field", "expected"), [
    ("services", "port", {"type": "integer", "required": True, "default": 80,
                          "between": [0, 65535]}),
    ("services", "id", {"type": "string", "uuid": True, "auto": True}),
    ("services", "created_at", {"type": "integer", "auto": True, "timestamp": True}),
    ("services", "name", {"type": "string", "unique": True}),
    ("targets", "upstream", {"type": "foreign", "required": True, "reference": "upstreams"}),
    ("targets", "weight", {"type": "integer", "default": 100, "between": [0, 65535]}),
    ("routes", "service", {"type": "foreign", "reference": "services"}),
    ("routes", "protocols", {"type": "set", "required": True, "default": ["http", "https"],
                             "len_min": 1, "elements": {"type": "string", "one_of": [
                                 "grpc", "grpcs", "http", "https", "tcp", "tls",
                                 "tls_passthrough", "udp", "ws", "wss"]}}),
    ("routes", "headers", {"type": "map", "keys": {"type": "string"},
                           "values": {"type": "array", "elements": {"type": "string"}}}),
    ("consumers", "username", {"type": "string", "unique": True}),
    ("upstreams", "algorithm", {"type": "string", "default": "round-robin", "one_of": [
        "consistent-hashing", "least-connections", "round-robin", "latency",
        "sticky-sessions"]}),
])
def test_entity_document_attributes(kind: str, field: str, expected: dict[str, Any]) -> None:
    assert _fields(entity_document(kind) or {})[field] == expected


def test_nested_records_carry_their_defaults() -> None:
    hc = _fields(entity_document("upstreams") or {})["healthchecks"]
    active = _fields(hc)["active"]
    assert _fields(active)["http_path"] == {"type": "string", "default": "/"}
    assert _fields(_fields(active)["unhealthy"])["http_statuses"]["default"] == [
        429, 404, 500, 501, 502, 503, 504, 505]


@pytest.mark.parametrize(("spec", "expected"), [
    (Field("number", between=(0.5, 2.0)), {"type": "number", "between": [0.5, 2]}),
    (Field("string", default=None), {"type": "string"}),
    (Field("record", fields={"a": Field("boolean", default=False)}),
     {"type": "record", "fields": [{"a": {"type": "boolean", "default": False}}]}),
])
def test_field_document(spec: Field, expected: dict[str, Any]) -> None:
    assert field_document(spec) == expected


def test_documents_never_share_mutable_defaults() -> None:
    doc = record_document({"tags": Field("array", default=["a"])})
    doc["fields"][0]["tags"]["default"].append("b")
    assert record_document({"tags": Field("array", default=["a"])})["fields"][0]["tags"][
        "default"] == ["a"]


def test_plugin_document_and_unknown_names() -> None:
    doc = plugin_document("canary")
    assert doc is not None
    config = _fields(_fields(doc)["config"])
    assert config["hash"]["default"] == "consumer" and "none" in config["hash"]["one_of"]
    assert plugin_document("no-such-plugin") is None and entity_document("nothing") is None


@pytest.mark.parametrize(("gui_urls", "origin", "allowed_origin", "readable"), [
    ((), "http://anywhere:8002", "http://anywhere:8002", True),  # Kong: echoes any origin
    ((), None, "*", True),
    (("http://km:8002/manager",), "http://km:8002", "http://km:8002", True),
    (("http://km:8002/manager",), "http://evil", "http://km:8002", False),
    (("http://a:1", "https://B:2/x"), "https://b:2", "https://b:2", True),
    (("http://a:1", "https://b:2"), None, "http://a:1", False),
])
def test_cors_origin(gui_urls: tuple[str, ...], origin: str | None, allowed_origin: str,
                     readable: bool) -> None:
    policy = CorsPolicy(gui_urls)
    headers = dict(policy.headers({"origin": origin} if origin else {}))
    assert headers["Access-Control-Allow-Origin"] == allowed_origin
    assert headers["Access-Control-Allow-Credentials"] == "true" and headers["Vary"] == "Origin"
    assert policy.allowed(origin) is readable


@pytest.mark.parametrize(("methods", "allow"), [
    ({"GET": 1, "POST": 1}, "GET, HEAD, OPTIONS, POST"),
    ({"PUT": 1, "POST": 1}, "OPTIONS, POST, PUT"),
    ({"GET": 1, "PATCH": 1, "DELETE": 1, "PUT": 1}, "DELETE, GET, HEAD, OPTIONS, PATCH, PUT"),
])
def test_allow_lists(methods: dict[str, int], allow: str) -> None:
    assert allow_list(methods) == allow
    fields = dict(CorsPolicy.preflight_headers({}, methods))
    assert fields["Allow"] == fields["Access-Control-Allow-Methods"] == allow
    assert fields["Access-Control-Allow-Headers"] == "Content-Type"


def test_gui_origin() -> None:
    assert gui_origin("HTTPS://KM.example.com:8445/manager/x") == "https://km.example.com:8445"


def test_endpoint_paths_name_parameters_after_their_collection() -> None:
    patterns = [("services", "{id}", "routes", "{id}"), ("upstreams", "{u}", "health"),
                ("upstreams", "{u}", "targets", "{t}", "{address}", "healthy"),
                ("schemas", "plugins", "{name}"), ("ab",), ("a", "z"), ("a",), ()]
    assert endpoint_paths(patterns) == [
        "/", "/a", "/a/z", "/ab", "/schemas/plugins/{name}", "/services/{services}/routes/{routes}",
        "/upstreams/{upstreams}/health",
        "/upstreams/{upstreams}/targets/{targets}/{address}/healthy"]


def test_tag_rows_in_collection_order() -> None:
    cfg = load_declarative({"_format_version": "3.0",
                            "upstreams": [{"name": "u", "tags": ["b"],
                                           "targets": [{"target": "h:1", "tags": ["t"]}]}],
                            "services": [{"name": "s", "host": "u", "tags": ["a", "b"]}]})
    rows = list(tag_rows(cfg))
    assert [(r["entity_name"], r["tag"]) for r in rows] == [
        ("services", "a"), ("services", "b"), ("upstreams", "b"), ("targets", "t")]
    assert rows[0]["entity_id"] == cfg.services[0].id


def test_root_blocks_shaped_as_kong() -> None:
    settings = GatewaySettings(proxy_listen="0.0.0.0:8000, 0.0.0.0:8443 ssl",
                               admin_listen="127.0.0.1:8001", status_listen="off",
                               admin_token="secret")
    conf = configuration_block(settings, "/etc/fastgw/config.json")
    assert conf["proxy_listen"] == ["0.0.0.0:8000", "0.0.0.0:8443 ssl"]
    assert conf["status_listen"] == []
    assert conf["proxy_listeners"] == [{
        "ip": "0.0.0.0", "port": port, "listener": listener, "ssl": ssl,
        "http2": False, "proxy_protocol": False, "deferred": False, "bind": False,
        "reuseport": False, "backlog": None}
        for port, listener, ssl in ((8000, "0.0.0.0:8000", False),
                                    (8443, "0.0.0.0:8443 ssl", True))]
    assert conf["status_listeners"] == [] and conf["admin_gui_listeners"][0]["port"] == 8001
    assert "admin_token" not in conf and conf["role"] == "traditional"
    cfg = load_declarative({"_format_version": "3.0", "gateway": {"plugins": ["canary", "cors"]},
                            "plugins": [{"name": "canary",
                                         "config": {"percentage": 5, "upstream_host": "x"}}]})
    assert plugins_block(cfg) == {
        "available_on_server": {"canary": {"version": "3.4.0", "priority": 20},
                                "cors": {"version": "3.4.0", "priority": 2000}},
        "enabled_in_cluster": ["canary"]}


@pytest.mark.parametrize(("raw", "expected"), [
    ("http://localhost:8002", ("http://localhost:8002",)),
    ("http://a:1, https://b/manager", ("http://a:1", "https://b/manager")),
    (["https://km.example.com"], ("https://km.example.com",)),
    ("", ()),
    (None, ()),
])
def test_admin_gui_url_setting(raw: Any, expected: tuple[str, ...]) -> None:
    assert load_settings({"admin_gui_url": raw}).admin_gui_url == expected


@pytest.mark.parametrize("raw", ["ftp://x", "localhost:8002", "http://", 8002, ["http://a", 1]])
def test_admin_gui_url_refused(raw: Any) -> None:
    with pytest.raises(ConfigError) as err:
        load_settings({"admin_gui_url": raw})
    assert err.value.errors[0][0] == "gateway.admin_gui_url"
