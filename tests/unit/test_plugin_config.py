"""Plugins and credentials in the configuration: refusal by name, Kong's schemas and
defaults, gateway.plugins, credentials nested or top level, hashed, unique."""

from __future__ import annotations

from typing import Any

import pytest

from fastgw.config import ConfigError, load_declarative
from fastgw.config.credentials import hash_password
from fastgw.config.declarative import dump_declarative
from fastgw.config.plugins import BUNDLED, PLUGINS
from fastgw.controlplane.admin.schemas import plugin_document

NOT_ENABLED = "plugin '{}' not enabled; add it to the 'plugins' configuration property"


def doc(**kw: Any) -> dict[str, Any]:
    return {"_format_version": "3.0", **kw}


def errors_of(document: dict[str, Any]) -> list[tuple[str, str]]:
    with pytest.raises(ConfigError) as exc:
        load_declarative(document, env={})
    return exc.value.errors


@pytest.mark.parametrize("plugin,error", [
    ({"name": "rate-limting"}, ("plugins[0].name", NOT_ENABLED.format("rate-limting"))),
    ({"name": "request-termination"},
     ("plugins[0].name", NOT_ENABLED.format("request-termination"))),
    ({"name": "proxy-cache", "config": {"strategy": "redis"}},
     ("plugins[0].config.strategy", "'redis' is not supported by fastgw yet (use "
                                    "'memory': a per-worker cache bounded by proxy_cache_size)")),
    ({"name": "rate-limiting", "config": {"minute": "5"}},
     ("plugins[0].config.minute", "expected a number")),
    ({"name": "rate-limiting", "config": {"minute": 0}},
     ("plugins[0].config.minute", "value must be greater than 0")),
    ({"name": "rate-limiting", "config": {"minute": 5, "policy": "redis"}},
     ("plugins[0].config.redis_host", "required field missing")),
    ({"name": "rate-limiting", "config": {"minute": 5, "policy": "cluster"}},
     ("plugins[0].config.policy",
      "'cluster' is not supported by fastgw yet (use 'local': exact across the node's workers)")),
    ({"name": "rate-limiting", "config": {"minute": 5, "limit_by": "header"}},
     ("plugins[0].config.header_name", "required field missing")),
    ({"name": "acl", "config": {"allow": ["a"], "deny": ["b"]}},
     ("plugins[0].@entity",
      "only one of these fields must be non-empty: 'config.allow', 'config.deny'")),
    ({"name": "acl", "config": {}},
     ("plugins[0].@entity",
      "at least one of these fields must be non-empty: 'config.allow', 'config.deny'")),
    ({"name": "key-auth", "consumer": "alice"}, ("plugins[0].consumer", "value must be null")),
    ({"name": "ip-restriction", "config": {"allow": ["10.0.0.0/33"]}},
     ("plugins[0].config.allow[0]", "invalid ip or cidr range: '10.0.0.0/33'")),
    ({"name": "request-transformer", "config": {"add": {"headers": ["x:$(headers.y)"]}}},
     ("plugins[0].config.add.headers[0]", "templates ('$(...)') are not supported by fastgw yet")),
    ({"name": "response-transformer", "config": {"add": {"json": ["a"]}}},
     ("plugins[0].config.add.json[0]", "invalid value: a")),
    ({"name": "response-transformer", "config": {"rename": {"json": [":b"]}}},
     ("plugins[0].config.rename.json[0]", "invalid value: :b")),
    ({"name": "response-transformer", "config": {"append": {"json_types": ["list"]}}},
     ("plugins[0].config.append.json_types[0]",
      "expected one of: boolean, number, string")),
    ({"name": "http-log", "config": {"http_endpoint": "ftp://x"}},
     ("plugins[0].config.http_endpoint", "'ftp' endpoints are not supported by fastgw")),
    ({"name": "http-log", "config": {"http_endpoint": "http:///a"}},
     ("plugins[0].config.http_endpoint", "missing host in url")),
    ({"name": "http-log", "config": {"http_endpoint": "http://a:70000/"}},
     ("plugins[0].config.http_endpoint",
      "invalid url: expected http(s)://[user[:password]@]host[:port][/path] "
      "(visible ASCII characters only)")),
    ({"name": "http-log", "config": {"http_endpoint": "https://a b@host/"}},
     ("plugins[0].config.http_endpoint",
      "invalid url: expected http(s)://[user[:password]@]host[:port][/path] "
      "(visible ASCII characters only)")),
    ({"name": "file-log", "config": {"path": "/tmp/a*b"}},
     ("plugins[0].config.path", "not a valid filename")),
])
def test_plugins_refused_with_kongs_wording(plugin: dict[str, Any],
                                            error: tuple[str, str]) -> None:
    consumers = [{"username": "alice"}]
    assert error in errors_of(doc(plugins=[plugin], consumers=consumers))


@pytest.mark.parametrize("endpoint", [
    "http://logs.example/x", "https://logs.example", "https://logs.example:8443/a?b=c",
    "https://bob:s%3Acret@logs.example/logs", "http://bob@[::1]:9000/", "https://[2001:db8::1]/",
])
def test_http_log_endpoints_accepted(endpoint: str) -> None:
    plugin = {"name": "http-log", "config": {"http_endpoint": endpoint}}
    loaded = load_declarative(doc(plugins=[plugin]), env={})
    assert loaded.plugins[0].config["http_endpoint"] == endpoint


def test_defaults_filled_and_typed() -> None:
    config = load_declarative(doc(plugins=[{"name": "rate-limiting", "config": {"minute": 5}},
                                           {"name": "key-auth"}]), env={})
    rl, ka = (p.config for p in config.plugins)
    assert rl["policy"] == "local" and rl["limit_by"] == "consumer" and rl["error_code"] == 429
    assert rl["redis_port"] == 6379 and rl["fault_tolerant"] is True
    assert ka == {"key_names": ["apikey"], "hide_credentials": False, "anonymous": None,
                  "key_in_header": True, "key_in_query": True, "key_in_body": False,
                  "run_on_preflight": True}


def test_gateway_plugins_narrows_what_runs() -> None:
    document = doc(plugins=[{"name": "cors"}], gateway={"plugins": ["key-auth"]})
    assert ("plugins[0].name", NOT_ENABLED.format("cors")) in errors_of(document)
    load_declarative(doc(plugins=[{"name": "cors"}], gateway={"plugins": ["bundled"]}), env={})
    assert ("gateway.plugins", f"plugin 'nope' is not a plugin fastgw runs (available: "
            f"{', '.join(BUNDLED)})") in errors_of(doc(gateway={"plugins": ["nope"]}))
    assert errors_of(doc(gateway={"plugins": ["off", "cors"]})) == [
        ("gateway.plugins", "'off' cannot be combined with other values")]


def test_every_plugin_has_a_schema_document() -> None:
    for name in PLUGINS:
        doc = plugin_document(name)
        assert doc is not None and any("config" in f for f in doc["fields"])


def test_credentials_nested_top_level_hashed_and_round_tripped() -> None:
    config = load_declarative(doc(
        consumers=[{"username": "alice", "keyauth_credentials": [{"key": "k1"}],
                    "basicauth_credentials": [{"username": "al", "password": "pw"}],
                    "acls": [{"group": "gold"}]}],
        keyauth_credentials=[{"consumer": "alice", "key": "k2"}],
        acls=[{"consumer": {"username": "alice"}, "group": "silver"}]), env={})
    alice = config.consumers[0]
    assert [k.key for k in alice.keyauth_credentials] == ["k1", "k2"]
    assert [a.group for a in alice.acls] == ["gold", "silver"]
    assert alice.basicauth_credentials[0].password == hash_password(alice.id, "pw")
    again = load_declarative(dump_declarative(config), env={})
    assert again == config  # a stored hash is not hashed again, ids are kept


@pytest.mark.parametrize("document,error", [
    (doc(consumers=[{"username": "a", "keyauth_credentials": [{"key": "k"}]},
                    {"username": "b", "keyauth_credentials": [{"key": "k"}]}]),
     ("consumers[1].keyauth_credentials[0].key",
      "uniqueness violation: 'keyauth_credentials' entity with key set to 'k' already declared")),
    (doc(consumers=[{"username": "a", "acls": [{"group": "g"}, {"group": "g"}]}]),
     ("consumers[0].acls[1].group",
      "uniqueness violation: 'acls' entity with group set to 'g' already declared")),
    (doc(consumers=[{"username": "a"}], keyauth_credentials=[{"consumer": "zz", "key": "k"}]),
     ("keyauth_credentials[0].consumer",
      "invalid reference 'consumer: zz' (no such entry in 'consumers')")),
    (doc(consumers=[{"username": "a", "basicauth_credentials": [{"username": "u"}]}]),
     ("consumers[0].basicauth_credentials[0].password", "required field missing")),
])
def test_credentials_errors(document: dict[str, Any], error: tuple[str, str]) -> None:
    assert error in errors_of(document)


def test_a_consumer_delta_carries_its_credentials() -> None:
    """Workers get Admin API writes as deltas (config.delta): a consumer's credentials
    travel with it, hashed passwords and ids unchanged."""
    from dataclasses import replace

    from fastgw.config.delta import apply_delta, config_delta

    before = load_declarative(doc(consumers=[{
        "username": "a", "keyauth_credentials": [{"key": "k"}],
        "basicauth_credentials": [{"username": "u", "password": "p"}],
        "acls": [{"group": "g"}]}]), env={})
    after = replace(before, consumers=(replace(before.consumers[0], custom_id="x"),))
    delta = config_delta(before, after)
    assert delta is not None
    assert apply_delta(before, delta).consumers == after.consumers
