"""The plugins fastgw executes: Kong's names, config schemas, defaults and priorities (pure).

A plugin is accepted only when fastgw runs it (DESIGN.md: never accept configuration that
is not enforced). ``PLUGINS`` is that list; ``gateway.plugins`` (Kong's ``plugins =
bundled``) may narrow it per node. Any other name is refused with Kong's wording for a
plugin not enabled on the node, by the Admin API, ``fastgw check`` and ``fastgw run``.

Each schema is Kong 3.x's (``kong/plugins/<name>/schema.lua``): field names, types,
defaults, ``entity_checks``; priorities are the handlers' ``PRIORITY``. Where Kong has a
value fastgw does not run (a ``redis`` or ``cluster`` rate-limiting policy, proxy-cache's
``redis`` strategy, templates in
transformer values), the value is refused by
name instead of being stored and ignored; the fields themselves are kept and checked so
that a later implementation needs no migration.

``canary`` is Kong Enterprise's Canary Release plugin (reference/kong.md §6), accepted
as is, plus fastgw's ``hash: "cookie"`` with ``hash_cookie`` (the cookie's name).
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from fastgw.config import model as _m
from fastgw.config.schema import Errors, Field, join

__all__ = ["PLUGINS", "PluginSpec", "PLUGIN_SCHEMAS", "PLUGIN_CHECKS", "CANARY",
           "BUNDLED", "not_enabled", "RATE_LIMIT_PERIODS"]

_COND = "failed conditional validation given value of field '{}'"
Check = Callable[[dict[str, Any], str, Errors], None]


@dataclass(frozen=True, slots=True)
class PluginSpec:
    name: str
    priority: int  # Kong's handler PRIORITY: higher runs first
    fields: Mapping[str, Field]  # the config record
    check: Check | None = None  # entity checks over a valid config
    no_consumer: bool = False  # typedefs.no_consumer: cannot be scoped to a consumer
    version: str = "3.4.0"


def not_enabled(name: str) -> str:
    """Kong's message for a plugin the node does not run (kong/db/schema/plugin_loader)."""
    return f"plugin '{name}' not enabled; add it to the 'plugins' configuration property"


def _unsupported_value(value: Any) -> str:
    return f"'{value}' is not supported by fastgw yet"


def _uri_error(value: str) -> str | None:
    return None if value.startswith("/") else "should start with: /"


def _ip_or_cidr_error(value: str) -> str | None:
    return None if _m.cidr_error(value) is None else f"invalid ip or cidr range: '{value}'"


def _at_least_one(config: Mapping[str, Any], names: tuple[str, ...], path: str,
                  errors: Errors) -> bool:
    if any(config.get(n) not in (None, [], {}) for n in names):
        return True
    errors.append((join(path, "@entity"), "at least one of these fields must be non-empty: "
                   + ", ".join(f"'config.{n}'" for n in names)))
    return False


def _required_if(config: Mapping[str, Any], field: str, value: Any, needed: str, path: str,
                 errors: Errors) -> None:
    if config.get(field) == value and config.get(needed) is None:
        errors += [(join(path, "@entity"), _COND.format(f"config.{field}")),
                   (join(path, f"config.{needed}"), "required field missing")]


def _no_templates(values: Any, path: str, errors: Errors) -> None:
    """Kong evaluates ``$(...)`` templates in transformer values; fastgw does not yet."""
    for i, v in enumerate(values or ()):
        if isinstance(v, str) and "$(" in v:
            errors.append((join(path, i), "templates ('$(...)') are not supported by fastgw "
                                          "yet"))


# --------------------------------------------------------------------------- canary

CANARY: dict[str, Field] = {
    "percentage": Field("number", between=(0, 100)),
    "start": Field("number"),
    "duration": Field("number", default=3600, between=(1, 2**31)),
    "steps": Field("number", default=1000, between=(1, 2**31)),
    "hash": Field("string", default="consumer",
                  one_of=("consumer", "ip", "header", "cookie", "none", "allow", "deny")),
    "hash_header": Field("string", validator=_m.header_name_error),
    "hash_cookie": Field("string", validator=_m.cookie_name_error),
    "groups": Field("array", elements=Field("string")),
    "canary_by_header_name": Field("string", validator=_m.header_name_error),
    "upstream_host": Field("string", validator=_m.host_error),
    "upstream_port": Field("integer", between=(0, 65535)),
    "upstream_uri": Field("string", validator=_uri_error),
    "upstream_fallback": Field("boolean", default=False),
}


def _check_canary(config: dict[str, Any], path: str, errors: Errors) -> None:
    entity = join(path, "@entity")
    if config.get("upstream_host") is None and config.get("upstream_uri") is None:
        errors.append((entity, "at least one of these fields must be non-empty: "
                       "'config.upstream_uri', 'config.upstream_host'"))
    for kind, companion in (("header", "hash_header"), ("cookie", "hash_cookie")):
        if config.get("hash") == kind and not config.get(companion):
            errors += [(entity, _COND.format("config.hash")),
                       (join(path, f"config.{companion}"), "required field missing")]
    if config.get("hash") in ("allow", "deny") and not config.get("groups"):
        errors += [(entity, _COND.format("config.hash")),
                   (join(path, "config.groups"), "required field missing")]
    if config.get("percentage") is None and config.get("start") is None:
        # Kong 3.2.1+: a time-based rollout starts when the plugin is created. The store
        # saves the filled-in value, so the rollout does not restart on every load.
        config["start"] = int(time.time())


# --------------------------------------------------------------------------- authentication

_HEADER_NAME = Field("string", validator=_m.header_name_error)
_STRINGS = Field("array", default=[], elements=Field("string"))

KEY_AUTH: dict[str, Field] = {
    "key_names": Field("array", required=True, default=["apikey"], elements=_HEADER_NAME),
    "hide_credentials": Field("boolean", default=False),
    "anonymous": Field("string"),  # a consumer id or username
    "key_in_header": Field("boolean", default=True),
    "key_in_query": Field("boolean", default=True),
    "key_in_body": Field("boolean", default=False),
    "run_on_preflight": Field("boolean", default=True),
}

BASIC_AUTH: dict[str, Field] = {
    "anonymous": Field("string"),
    "hide_credentials": Field("boolean", default=False),
}

ACL: dict[str, Field] = {
    "allow": Field("array", elements=Field("string")),
    "deny": Field("array", elements=Field("string")),
    "hide_groups_header": Field("boolean", default=False),
    "always_use_authenticated_groups": Field("boolean", default=False),
    "include_consumer_groups": Field("boolean", default=False),
}


def _check_acl(config: dict[str, Any], path: str, errors: Errors) -> None:
    if config.get("allow") and config.get("deny"):
        errors.append((join(path, "@entity"), "only one of these fields must be non-empty: "
                       "'config.allow', 'config.deny'"))
        return
    _at_least_one(config, ("allow", "deny"), path, errors)
    if config.get("include_consumer_groups"):
        errors.append((join(path, "config.include_consumer_groups"),
                       _unsupported_value(True) + " (fastgw has no consumer groups)"))


# --------------------------------------------------------------------------- traffic control

RATE_LIMIT_PERIODS = ("second", "minute", "hour", "day", "month", "year")
_LIMIT = Field("number", gt=0)

RATE_LIMITING: dict[str, Field] = {
    **{p: _LIMIT for p in RATE_LIMIT_PERIODS},
    "limit_by": Field("string", default="consumer",
                      one_of=("consumer", "credential", "ip", "service", "header", "path",
                              "consumer-group")),
    "header_name": _HEADER_NAME,
    "path": Field("string", validator=_m.path_error),
    "policy": Field("string", default="local", len_min=0, one_of=("local", "cluster", "redis")),
    "fault_tolerant": Field("boolean", default=True),
    # The redis policy's fields, accepted and checked for the cluster work to come.
    "redis_host": Field("string", validator=_m.host_error),
    "redis_port": Field("integer", default=6379, between=(0, 65535)),
    "redis_password": Field("string", len_min=0),
    "redis_username": Field("string"),
    "redis_ssl": Field("boolean", default=False),
    "redis_ssl_verify": Field("boolean", default=False),
    "redis_server_name": Field("string", validator=_m.sni_error),
    "redis_timeout": Field("number", default=2000),
    "redis_database": Field("integer", default=0),
    "hide_client_headers": Field("boolean", default=False),
    "error_code": Field("number", default=429),
    "error_message": Field("string", default="API rate limit exceeded"),
    "sync_rate": Field("number", default=-1),
}


def _fmt_limit(v: float) -> str:
    return f"{float(v):.1f}"


def _check_rate_limiting(config: dict[str, Any], path: str, errors: Errors) -> None:
    if not _at_least_one(config, RATE_LIMIT_PERIODS, path, errors):
        return
    for i, lower in enumerate(RATE_LIMIT_PERIODS):
        v1 = config.get(lower)
        if v1 is None:
            continue
        for upper in RATE_LIMIT_PERIODS[i + 1:]:
            v2 = config.get(upper)
            if v2 is not None and v2 < v1:
                errors.append((join(path, "config"), f"The limit for {upper}({_fmt_limit(v2)}) "
                               f"cannot be lower than the limit for {lower}({_fmt_limit(v1)})"))
                return
    for needed in ("redis_host", "redis_port", "redis_timeout"):
        _required_if(config, "policy", "redis", needed, path, errors)
    _required_if(config, "limit_by", "header", "header_name", path, errors)
    _required_if(config, "limit_by", "path", "path", path, errors)
    if config.get("policy") in ("cluster", "redis"):
        # Counters shared between nodes are the clustering issue's; until then a policy
        # that is stored but not run would be a limit that does not hold.
        errors.append((join(path, "config.policy"),
                       _unsupported_value(config["policy"]) + " (use 'local': exact across "
                                                              "the node's workers)"))
    if config.get("limit_by") == "consumer-group":
        errors.append((join(path, "config.limit_by"),
                       _unsupported_value("consumer-group") + " (fastgw has no consumer groups)"))


IP_RESTRICTION: dict[str, Field] = {
    "allow": Field("array", elements=Field("string", validator=_ip_or_cidr_error)),
    "deny": Field("array", elements=Field("string", validator=_ip_or_cidr_error)),
    "status": Field("number"),
    "message": Field("string"),
}


def _check_ip_restriction(config: dict[str, Any], path: str, errors: Errors) -> None:
    _at_least_one(config, ("allow", "deny"), path, errors)


REQUEST_SIZE_LIMITING: dict[str, Field] = {
    "allowed_payload_size": Field("integer", default=128),
    "size_unit": Field("string", required=True, default="megabytes",
                       one_of=("megabytes", "kilobytes", "bytes")),
    "require_content_length": Field("boolean", default=False),
}

_METHODS = ("GET", "HEAD", "PUT", "PATCH", "POST", "DELETE", "OPTIONS", "TRACE", "CONNECT")
CORS: dict[str, Field] = {
    "origins": Field("array", elements=Field("string")),
    "headers": Field("array", elements=Field("string")),
    "exposed_headers": Field("array", elements=Field("string")),
    "methods": Field("array", default=list(_METHODS), elements=Field("string", one_of=_METHODS)),
    "max_age": Field("number"),
    "credentials": Field("boolean", default=False),
    "private_network": Field("boolean", default=False),
    "preflight_continue": Field("boolean", default=False),
}

CORRELATION_ID: dict[str, Field] = {
    "header_name": Field("string", default="Kong-Request-ID"),
    "generator": Field("string", default="uuid#counter", one_of=("uuid", "uuid#counter",
                                                                 "tracker")),
    "echo_downstream": Field("boolean", default=False),
}


# --------------------------------------------------------------------------- transformers

def _colon_pairs(value: str) -> str | None:
    """``name:value`` items (Kong's colon_string_array: ``^[^:]+:.*$``)."""
    return None if value.find(":") > 0 else f"invalid value: {value}"


def _strings(validator: Callable[[str], str | None] | None = None) -> Field:
    return Field("array", default=[], elements=Field("string", validator=validator))


def _record(**fields: Field) -> Field:
    return Field("record", fields=fields)


REQUEST_TRANSFORMER: dict[str, Field] = {
    "http_method": Field("string", validator=_m.method_error),
    "remove": _record(body=_strings(), headers=_strings(), querystring=_strings()),
    "rename": _record(body=_strings(_colon_pairs), headers=_strings(_colon_pairs),
                      querystring=_strings(_colon_pairs)),
    "replace": _record(body=_strings(_colon_pairs), headers=_strings(_colon_pairs),
                       querystring=_strings(_colon_pairs), uri=Field("string")),
    "add": _record(body=_strings(_colon_pairs), headers=_strings(_colon_pairs),
                   querystring=_strings(_colon_pairs)),
    "append": _record(body=_strings(_colon_pairs), headers=_strings(_colon_pairs),
                      querystring=_strings(_colon_pairs)),
}


def _check_request_transformer(config: dict[str, Any], path: str, errors: Errors) -> None:
    for action in ("rename", "replace", "add", "append"):
        for part in ("body", "headers", "querystring"):
            _no_templates(config[action][part], join(path, f"config.{action}.{part}"), errors)
    uri = config["replace"].get("uri")
    if isinstance(uri, str) and "$(" in uri:
        errors.append((join(path, "config.replace.uri"),
                       "templates ('$(...)') are not supported by fastgw yet"))


_JSON_TYPES = Field("array", default=[], elements=Field("string",
                                                         one_of=("boolean", "number", "string")))
RESPONSE_TRANSFORMER: dict[str, Field] = {
    "remove": _record(json=_strings(), headers=_strings()),
    "rename": _record(json=_strings(_colon_pairs), headers=_strings(_colon_pairs)),
    "replace": _record(json=_strings(_colon_pairs), json_types=_JSON_TYPES,
                       headers=_strings(_colon_pairs)),
    "add": _record(json=_strings(_colon_pairs), json_types=_JSON_TYPES,
                   headers=_strings(_colon_pairs)),
    "append": _record(json=_strings(_colon_pairs), json_types=_JSON_TYPES,
                      headers=_strings(_colon_pairs)),
}


def _check_response_transformer(config: dict[str, Any], path: str, errors: Errors) -> None:
    for action in ("rename", "replace", "add", "append"):
        _no_templates(config[action]["headers"], join(path, f"config.{action}.headers"),
                      errors)


# --------------------------------------------------------------------------- logging

def _filename_error(value: str) -> str | None:
    """Kong's file-log ``path`` match: no ``*&%\\`` characters."""
    return "not a valid filename" if any(c in value for c in "*&%\\`") else None


# http(s)://[user[:password]@]host[:port][/path][?query]: the endpoints fastgw's http-log
# can reach (userinfo becomes a basic-auth Authorization header, as Kong does). One
# expression (ECMA-262 and Python alike) so that /openapi.json states exactly this check.
_H16 = "[0-9A-Fa-f]{1,4}"
IPV6_PATTERN = ("(?:" + "|".join((
    f"(?:{_H16}:){{7}}{_H16}", f"(?:{_H16}:){{1,7}}:",
    *(f"(?:{_H16}:){{1,{n}}}(?::{_H16}){{1,{7 - n}}}" for n in range(6, 0, -1)),
    f":(?:(?::{_H16}){{1,7}}|:)")) + ")")
_USERINFO = r"[A-Za-z0-9._~%!$&'()*+,;=-]+(?::[A-Za-z0-9._~%!$&'()*+,;=-]*)?@"
HTTP_URL_PATTERN = (rf"https?://(?:{_USERINFO})?(?:\[{IPV6_PATTERN}\]|[A-Za-z0-9._~-]+)"
                    r"(?::(?:[0-9]{1,4}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}"
                    r"|655[0-2][0-9]|6553[0-5]))?(?:[/?][\x21-\x7e]*)?")
_HTTP_URL_RE = re.compile(HTTP_URL_PATTERN)


def _http_url_error(value: str) -> str | None:
    """typedefs.url for an endpoint fastgw can reach (``HTTP_URL_PATTERN``)."""
    if _HTTP_URL_RE.fullmatch(value):
        return None
    scheme, sep, rest = value.partition("://")
    if not sep:
        return "missing scheme in url"
    if scheme.lower() not in ("http", "https"):
        return f"'{scheme}' endpoints are not supported by fastgw"
    if not rest.split("/", 1)[0].split("?", 1)[0]:
        return "missing host in url"
    return ("invalid url: expected http(s)://[user[:password]@]host[:port][/path] "
            "(visible ASCII characters only)")


def _no_lua(config: dict[str, Any], path: str, errors: Errors) -> None:
    if config.get("custom_fields_by_lua"):
        errors.append((join(path, "config.custom_fields_by_lua"),
                       "Lua code is not supported by fastgw"))


FILE_LOG: dict[str, Field] = {
    "path": Field("string", required=True, validator=_filename_error),
    "reopen": Field("boolean", required=True, default=False),
    "custom_fields_by_lua": Field("map", keys=Field("string"), values=Field("string")),
}

_QUEUE: dict[str, Field] = {
    "max_batch_size": Field("integer", default=1, between=(1, 1000000)),
    "max_coalescing_delay": Field("number", default=1, between=(0, 3600)),
    "max_entries": Field("integer", default=10000, between=(1, 1000000)),
    "max_bytes": Field("integer"),
    "max_retry_time": Field("number", default=60),
    "initial_retry_delay": Field("number", default=0.01, between=(0.001, 1000000)),
    "max_retry_delay": Field("number", default=60, between=(0.001, 1000000)),
    "concurrency_limit": Field("integer", default=1, one_of=(-1, 1)),
}
HTTP_LOG: dict[str, Field] = {
    "http_endpoint": Field("string", required=True, validator=_http_url_error),
    "method": Field("string", default="POST", one_of=("POST", "PUT", "PATCH")),
    "content_type": Field("string", default="application/json",
                          one_of=("application/json", "application/json; charset=utf-8")),
    "timeout": Field("number", default=10000),
    "keepalive": Field("number", default=60000),
    "retry_count": Field("integer"),
    "queue_size": Field("integer"),
    "flush_timeout": Field("number"),
    "headers": Field("map", keys=Field("string", validator=_m.header_name_error),
                     values=Field("string")),
    "queue": Field("record", fields=_QUEUE),
    "custom_fields_by_lua": Field("map", keys=Field("string"), values=Field("string")),
}


# --------------------------------------------------------------------------- proxy-cache

# Kong 3.4's kong/plugins/proxy-cache/schema.lua. ``strategy`` has no default there either.
# fastgw's memory strategy is a per-worker LRU bounded by the node setting
# ``proxy_cache_size`` (Kong's shared dict ``memory.dictionary_name`` has no equivalent: the
# name is kept and not used).
def _strategy_error(value: str) -> str | None:
    # A cache that is configured but never filled would be configuration not enforced.
    if value == "redis":
        return _unsupported_value("redis") + " (use 'memory': a per-worker cache bounded by " \
                                             "proxy_cache_size)"
    return None


PROXY_CACHE: dict[str, Field] = {
    "response_code": Field("array", required=True, default=[200, 301, 404], len_min=1,
                           elements=Field("integer", between=(100, 900))),
    "request_method": Field("array", required=True, default=["GET", "HEAD"],
                            elements=Field("string",
                                           one_of=("HEAD", "GET", "POST", "PATCH", "PUT"))),
    "content_type": Field("array", required=True, default=["text/plain", "application/json"],
                          elements=Field("string")),
    "cache_ttl": Field("integer", default=300, gt=0),
    "strategy": Field("string", required=True, one_of=("memory", "redis"),
                      validator=_strategy_error),
    "cache_control": Field("boolean", required=True, default=False),
    "ignore_uri_case": Field("boolean", default=False),
    "storage_ttl": Field("integer"),
    "memory": Field("record", fields={
        "dictionary_name": Field("string", required=True, default="kong_db_cache")}),
    "vary_query_params": Field("array", elements=Field("string")),
    "vary_headers": Field("array", elements=Field("string")),
    "response_headers": Field("record", fields={
        "age": Field("boolean", default=True),
        "X-Cache-Status": Field("boolean", default=True),
        "X-Cache-Key": Field("boolean", default=True)}),
}


# --------------------------------------------------------------------------- prometheus

# Kong 3.x's toggles. fastgw's metrics are node-wide (one /metrics, every route): the node
# exports the families any enabled instance asks for (Kong: those of the instances on a
# request's route); without any instance, every family (fastgw's default).
PROMETHEUS: dict[str, Field] = {
    "per_consumer": Field("boolean", default=False),
    "status_code_metrics": Field("boolean", default=False),
    "latency_metrics": Field("boolean", default=False),
    "bandwidth_metrics": Field("boolean", default=False),
    "upstream_health_metrics": Field("boolean", default=False),
}


# --------------------------------------------------------------------------- the registry

PLUGINS: dict[str, PluginSpec] = {s.name: s for s in (
    PluginSpec("correlation-id", 100001, CORRELATION_ID),
    PluginSpec("cors", 2000, CORS),
    PluginSpec("ip-restriction", 990, IP_RESTRICTION, _check_ip_restriction),
    PluginSpec("key-auth", 1250, KEY_AUTH, no_consumer=True),
    PluginSpec("basic-auth", 1100, BASIC_AUTH, no_consumer=True),
    PluginSpec("request-size-limiting", 951, REQUEST_SIZE_LIMITING),
    PluginSpec("acl", 950, ACL, _check_acl, no_consumer=True),
    PluginSpec("rate-limiting", 910, RATE_LIMITING, _check_rate_limiting),
    PluginSpec("request-transformer", 801, REQUEST_TRANSFORMER, _check_request_transformer),
    PluginSpec("response-transformer", 800, RESPONSE_TRANSFORMER, _check_response_transformer),
    PluginSpec("proxy-cache", 100, PROXY_CACHE),
    PluginSpec("canary", 20, CANARY, _check_canary),
    PluginSpec("prometheus", 13, PROMETHEUS),
    PluginSpec("http-log", 12, HTTP_LOG, _no_lua),
    PluginSpec("file-log", 9, FILE_LOG, _no_lua),
)}
BUNDLED: tuple[str, ...] = tuple(sorted(PLUGINS))

# The shapes validate.py and the Admin API's form coercion read.
PLUGIN_SCHEMAS: dict[str, Mapping[str, Field]] = {n: s.fields for n, s in PLUGINS.items()}
PLUGIN_CHECKS: dict[str, Check] = {n: s.check for n, s in PLUGINS.items() if s.check}
