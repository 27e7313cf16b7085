"""JSON Schema (2020-12, as OpenAPI 3.1 uses it) of the Admin API's entities, generated
from the ``Field`` tables that validate every write (pure, no I/O).

Request schemas state what validation accepts, as exactly as JSON Schema can: types,
enums, ranges, one regular expression per value check (``VALUE_PATTERNS``, each the same
check as the model's function, both ways) and Kong's entity rules as ``if``/``then``.
Response schemas state types and nullability only: what is stored passed the checks.

What JSON Schema cannot state is left to the server and listed in ``fastgw.controlplane.
admin.openapi``: foreign keys that must exist, ids already in use, two fields that must
differ, a certificate that must parse and match its key, a plugin's own entity checks.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from typing import Any

from fastgw.config import model as _m
from fastgw.config import plugins as _plugins
from fastgw.config.credentials import CREDENTIAL_KINDS
from fastgw.config.plugins import PLUGIN_SCHEMAS, PLUGINS
from fastgw.config.schema import MISSING, Field
from fastgw.config.validate import KONG_ONLY, SCHEMAS

__all__ = [
    "CONSUMERLESS_PLUGINS",
    "UUID_PATTERN",
    "VALUE_PATTERNS",
    "credential_request",
    "credential_response",
    "entity_request",
    "entity_response",
    "key_schema",
    "unpatterned_validators",
    "value_schema",
]

Schema = dict[str, Any]

# ----------------------------------------------------------------------- value patterns
# ECMA-262 regular expressions that Python reads the same way ([0-9], never \d).
UUID_PATTERN = "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
_OCTET = "(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])"
_IPV4 = f"(?:{_OCTET}\\.){{3}}{_OCTET}"
_PORT = ":0*(?:[0-9]{1,4}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])"
_LABELS = "[A-Za-z0-9_](?:[A-Za-z0-9_.-]*[A-Za-z0-9_])?"
# A host name (fastgw.config.model.normalize_host): no "..", and not digits and dots only
# (those are IPv4 addresses or nothing).
_NAME = f"(?![0-9.]+(?::|$)){_LABELS}"
# One "*" as the first or last character, standing for a label (Kong's wildcard_host).
_WILD = "(?:\\*(?:[A-Za-z0-9_.-]*[A-Za-z0-9_])?|[A-Za-z0-9_][A-Za-z0-9_.-]*\\*)"
_NO_DOTS = "(?!.*\\.\\.)"
_PCHAR = "[A-Za-z0-9._~!$&'()*+,;=:@-]"
# Percent-encodings a normalized path keeps: upper case, never an unreserved character.
_PCT_KEPT = "%(?:[01][0-9A-F]|2[0-9A-CF]|3[A-F]|40|5[B-E]|60|7[B-DF]|[89A-F][0-9A-F])"
_IPV6: Schema = {"type": "string", "format": "ipv6"}


def _p(pattern: str) -> Schema:
    return {"type": "string", "pattern": pattern}


_HOST = [_p(f"^{_IPV4}$"), _IPV6, _p(f"^{_NO_DOTS}{_NAME}$")]
_HOST_PORT = [_p(f"^{_IPV4}(?:{_PORT})?$"), _IPV6, _p(f"^{_NO_DOTS}{_NAME}(?:{_PORT})?$")]

_CIDR: Schema = {"anyOf": [_p(f"^{_IPV4}(?:/(?:3[0-2]|[12]?[0-9]))?$"), _IPV6]}

# Each value check of the model as a schema that accepts exactly what the check accepts.
VALUE_PATTERNS: dict[Callable[[str], str | None], Schema] = {
    _m.uuid_error: _p(UUID_PATTERN),
    _m.name_error: _p("^(?:[A-Za-z0-9._~-]|[^\\x00-\\x7f])+$"),
    _m.tag_error: _p("^[^,/\\x00-\\x1f\\x7f]+$"),
    _m.header_name_error: _p("^[A-Za-z0-9_-]+$"),
    _m.route_header_name_error: _p("^(?![Hh][Oo][Ss][Tt]$)[A-Za-z0-9_-]+$"),
    _m.method_error: _p("^[A-Z]+$"),
    _m.cookie_name_error: _p("^[^\\x00-\\x20\\x7f()<>@,;:\\\\\"/?={}\\[\\]]+$"),
    _m.path_error: _p(f"^(?!.*//)/(?:{_PCHAR}|/|%[0-9A-Fa-f]{{2}})*$"),
    _m.router_path_error: {"anyOf": [
        _p(f"^(?!.*//)(?!.*/\\.\\.?(?:/|$))/(?:{_PCHAR}|/|{_PCT_KEPT})*$"),
        # Regex paths: any expression Python compiles is accepted; the document states
        # the literal ones (a pattern cannot say "compiles").
        _p("^~/(?:[A-Za-z0-9_-]+/?)*$")]},
    _m.host_error: {"anyOf": _HOST},
    _m.upstream_name_error: _p(f"^{_NO_DOTS}(?![0-9.]+$){_LABELS}$"),
    _m.target_error: {"anyOf": _HOST_PORT},
    _m.route_host_error: {"anyOf": [
        _p(f"^{_IPV4}(?:{_PORT})?$"), _IPV6,
        _p(f"^{_NO_DOTS}(?:{_NAME}|{_WILD})(?:{_PORT})?$")]},
    _m.sni_error: _p(f"^{_NO_DOTS}(?:(?![0-9.]+$){_LABELS}|{_WILD})$"),
    _plugins._uri_error: _p("^/"),
    _m.cidr_error: _CIDR,
    _plugins._ip_or_cidr_error: _CIDR,
    _plugins._filename_error: _p("^[^*&%\\\\`]+$"),
    _plugins._colon_pairs: _p("^[^:]+:"),  # Kong: ^[^:]+:.*$
    _plugins._http_url_error: _p(f"^{_plugins.HTTP_URL_PATTERN}$"),
    _plugins._strategy_error: _p("^memory$"),  # proxy-cache: redis is refused
}


def uuid_error_check() -> Callable[[str], str | None]:
    return _m.uuid_error


def _validators(fields: Mapping[str, Field]) -> set[Any]:
    found: set[Any] = set()
    for spec in fields.values():
        for sub in (spec, spec.elements, spec.keys, spec.values):
            if sub is not None and sub.validator is not None:
                found.add(sub.validator)
            if sub is not None and sub.fields:
                found |= _validators(sub.fields)
        if spec.fields:
            found |= _validators(spec.fields)
    return found


def unpatterned_validators() -> set[str]:
    """Value checks of the entity and plugin tables that ``VALUE_PATTERNS`` lacks (a field
    checked by one is documented looser than it is)."""
    tables = [*SCHEMAS.values(), *KONG_ONLY.values(), *PLUGIN_SCHEMAS.values()]
    used = set().union(*(_validators(t) for t in tables))
    return {f"{v.__module__}.{v.__qualname__}" for v in used - VALUE_PATTERNS.keys()}


# ----------------------------------------------------------------------- fields

def _nullable(schema: Schema) -> Schema:
    if "type" in schema and "anyOf" not in schema:
        t = schema["type"]
        return {**schema, "type": [t, "null"] if isinstance(t, str) else [*t, "null"]}
    return {"anyOf": [schema, {"type": "null"}]}


def _foreign(request: bool) -> Schema:
    if not request:
        return {"type": "object", "properties": {"id": {"type": "string"}}}
    # {"id": ...} or {"name": ...}: either resolves (the Admin API's ``_build``).
    return {"anyOf": [
        {"type": "object", "required": ["id"], "additionalProperties": False,
         "properties": {"id": _p(UUID_PATTERN)}},
        {"type": "object", "required": ["name"], "additionalProperties": False,
         "properties": {"name": {"type": "string", "minLength": 1}}},
        {"type": "string", "minLength": 1}]}  # an id or a name (declarative files' form)


def value_schema(spec: Field, *, request: bool) -> Schema:
    """One value of ``spec`` (without null)."""
    t = spec.type
    out: Schema
    if t in ("string", "integer", "number", "boolean"):
        out = {"type": t}
        if request:
            if spec.one_of is not None:
                out["enum"] = list(spec.one_of)
            if spec.between is not None:
                lo, hi = spec.between
                out["minimum"], out["maximum"] = (int(lo), int(hi)) if t == "integer" else (lo, hi)
            if t == "string":
                out["minLength"] = spec.len_min or 1
                pattern = VALUE_PATTERNS.get(spec.validator) if spec.validator else None
                if pattern is not None:
                    out = {"allOf": [out, pattern]} if "anyOf" in pattern else {**out, **pattern}
    elif t in ("array", "set"):
        out = {"type": "array"}
        if spec.elements is not None:
            out["items"] = value_schema(spec.elements, request=request)
        if request and spec.len_min:
            out["minItems"] = spec.len_min
    elif t == "map":
        out = {"type": "object"}
        if spec.values is not None:
            out["additionalProperties"] = value_schema(spec.values, request=request)
        if request and spec.keys is not None and spec.keys.validator is not None:
            out["propertyNames"] = VALUE_PATTERNS.get(spec.keys.validator, {})
    elif t == "record" and spec.fields:
        out = record_schema(spec.fields, request=request)
    elif t == "record":
        out = {"type": "object"}
    elif t == "foreign":
        out = _foreign(request)
    else:
        out = {}
    return out


def field_schema(spec: Field, *, request: bool) -> Schema:
    """A field's schema with its nullability: in a request null means "unset" (the
    default applies) unless the field is required without a default; in a response a
    field with a non-null default is never null."""
    s = value_schema(spec, request=request)
    if request:
        nullable = not (spec.required and spec.default is MISSING)
        if spec.type == "record" and spec.fields:
            nullable = True  # null: the record's defaults
    else:
        nullable = spec.default is MISSING or spec.default is None
    return _nullable(s) if nullable else s


def record_schema(fields: Mapping[str, Field], *, request: bool,
                  with_required: bool = True) -> Schema:
    """``with_required``: list the fields that must be given (an entity's own list is
    made by ``entity_request``, which knows what the URL gives)."""
    props = {k: field_schema(f, request=request) for k, f in fields.items()}
    out: Schema = {"type": "object", "properties": props}
    if request:
        out["additionalProperties"] = False
        required = [k for k, f in fields.items() if f.required and f.default is MISSING]
        if with_required and required:
            out["required"] = required
    return out


# ----------------------------------------------------------------------- entity rules

def _absent_or_null(*names: str) -> Schema:
    return {"properties": {n: {"type": "null"} for n in names}}


def _nonempty(name: str) -> Schema:
    return {"required": [name], "properties": {name: {"anyOf": [
        {"type": "array", "minItems": 1}, {"type": "object", "minProperties": 1}]}}}


def _protocols_within(group: tuple[str, ...]) -> Schema:
    return {"properties": {"protocols": {"type": "array", "items": {"enum": list(group)}}}}


def _contains(name: str, values: tuple[str, ...]) -> Schema:
    return {"required": [name], "properties": {name: {
        "type": "array", "contains": {"enum": list(values)}}}}


_SECURE = ("grpcs", "https", "tls", "tls_passthrough", "wss")
_HTTP_LIKE = ("http", "https", "grpc", "grpcs", "ws", "wss")
_STREAM = ("tcp", "tls", "udp")


def _route_rules() -> list[Schema]:
    """fastgw.config.validate._check_route; an absent ``protocols`` is http, https."""
    groups = [("http", "https"), _STREAM, ("tls_passthrough",), ("grpc", "grpcs"), ("ws", "wss")]
    unset = {"anyOf": [{"not": {"required": ["protocols"]}},
                       {"properties": {"protocols": {"type": "null"}}}]}
    http_like = {"anyOf": [unset, _protocols_within(_HTTP_LIKE)]}
    secure = {"anyOf": [unset, _contains("protocols", _SECURE)]}
    matchers = [_nonempty(f) for f in ("methods", "hosts", "headers", "paths")]
    return [
        # "these sets are mutually exclusive"
        {"anyOf": [unset, *[_protocols_within(g) for g in groups]]},
        {"if": http_like, "then": {"allOf": [
            {"anyOf": [*matchers, {"allOf": [_nonempty("snis"),
                                              {"anyOf": [unset, _contains("protocols", (
                                                  "https", "grpcs", "wss"))]}]}]},
            {"not": {"anyOf": [_nonempty("sources"), _nonempty("destinations")]}}]}},
        {"if": {"allOf": [{"required": ["protocols"]}, _protocols_within(_STREAM)]},
         "then": {"anyOf": [_nonempty(f) for f in ("sources", "destinations", "snis")]}},
        {"if": _nonempty("snis"), "then": secure},
    ]


def _service_rules() -> list[Schema]:
    """fastgw.config.validate._check_service. A ``url`` (documented with http and https
    only) sets the protocol instead."""
    no_url = {"anyOf": [{"not": {"required": ["url"]}},
                        {"properties": {"url": {"type": "null"}}}]}
    https_url = {"required": ["url"], "properties": {"url": _p("^https://")}}
    streamish = {"required": ["protocol"], "properties": {"protocol": {
        "enum": ["tcp", "tls", "udp", "grpc", "grpcs"]}}}
    tls_capable = {"anyOf": [
        {"allOf": [no_url, {"required": ["protocol"],
                            "properties": {"protocol": {"enum": ["https", "tls", "wss"]}}}]},
        https_url]}
    return [
        {"if": {"allOf": [no_url, streamish]}, "then": _absent_or_null("path")},
        {"if": {"not": tls_capable}, "then": _absent_or_null(
            "client_certificate", "tls_verify", "tls_verify_depth", "ca_certificates")},
        {"anyOf": [{"required": ["host"], "properties": {"host": {"type": "string"}}},
                   {"required": ["url"], "properties": {"url": {"type": "string"}}}]},
    ]


_COMPANIONS = {"header": ("hash_on_header", "hash_fallback_header"),
               "cookie": ("hash_on_cookie", "hash_on_cookie"),
               "query_arg": ("hash_on_query_arg", "hash_fallback_query_arg"),
               "uri_capture": ("hash_on_uri_capture", "hash_fallback_uri_capture")}


def _is(name: str, *values: str) -> Schema:
    return {"required": [name], "properties": {name: {"enum": list(values)}}}


def _upstream_rules() -> list[Schema]:
    """fastgw.config.validate._check_upstream (but "distinct values": two fields compared),
    one ``anyOf`` per side: nested ``if``s would multiply into too many branches for a
    generator."""
    def companion(side: str, value: str, field: str) -> Schema:
        return {"required": [side, field], "properties": {
            side: {"const": value}, field: {"type": "string"}}}

    unset = {"anyOf": [{"not": {"required": ["hash_fallback"]}},
                       {"properties": {"hash_fallback": {"enum": [None, "none"]}}}]}
    none_on = {"anyOf": [{"not": {"required": ["hash_on"]}},
                         {"properties": {"hash_on": {"enum": [None, "none"]}}}]}
    on = [{"allOf": [none_on, unset]},
          {"allOf": [companion("hash_on", "cookie", "hash_on_cookie"), unset]},
          *[companion("hash_on", v, fields[0]) for v, fields in _COMPANIONS.items()
            if v != "cookie"],
          *[{"allOf": [_is("hash_on", v), {"not": _is("hash_fallback", v)}]}
            for v in ("consumer", "ip", "path")]]
    fallback = [{"anyOf": [{"not": {"required": ["hash_fallback"]}}, {"properties": {
        "hash_fallback": {"enum": [None, "none", "consumer", "ip", "path"]}}}]},
                *[companion("hash_fallback", v, fields[1]) for v, fields in _COMPANIONS.items()]]
    return [{"anyOf": on}, {"anyOf": fallback}]


def _consumer_rules() -> list[Schema]:
    return [{"anyOf": [{"required": [f], "properties": {f: {"type": "string"}}}
                       for f in ("username", "custom_id")]}]


def _certificate_rules() -> list[Schema]:
    both = {"required": ["cert_alt", "key_alt"], "properties": {
        "cert_alt": {"type": "string"}, "key_alt": {"type": "string"}}}
    return [{"anyOf": [both, _absent_or_null("cert_alt", "key_alt")]}]


# Auth plugins identify consumers: they cannot be scoped to one (typedefs.no_consumer).
CONSUMERLESS_PLUGINS = frozenset(name for name, spec in PLUGINS.items() if spec.no_consumer)


def _plugin_rules(enabled: Collection[str]) -> list[Schema]:
    """The config schema of each plugin the node runs (``PLUGIN_SCHEMAS``); an auth
    plugin cannot be scoped to a consumer (Kong's typedefs.no_consumer)."""
    rules: list[Schema] = []
    for name in sorted(set(enabled) & PLUGIN_SCHEMAS.keys()):
        config = record_schema(PLUGIN_SCHEMAS[name], request=True)
        if not config.get("required"):
            config = _nullable(config)  # null: every default
        then: Schema = {"properties": {"config": config}}
        if PLUGINS[name].no_consumer:
            then["properties"]["consumer"] = {"type": "null"}
        if config.get("required"):
            then["required"] = ["config"]
        rules.append({"if": _is("name", name), "then": then})
    return rules


_RULES: dict[str, Callable[[], list[Schema]]] = {
    "routes": _route_rules, "services": _service_rules, "upstreams": _upstream_rules,
    "consumers": _consumer_rules, "certificates": _certificate_rules,
}
_SERVICE_URL = (f"^https?://(?:{_IPV4}|{_NO_DOTS}{_NAME})(?:{_PORT})?"
                f"(?:/(?!.*//)(?:{_PCHAR}|/|%[0-9A-Fa-f]{{2}})*)?$")


def entity_request(kind: str, *, create: bool, endpoint_key_in_url: bool = False,
                   validate: bool = False, plugins: Collection[str] = ()) -> Schema:
    """A write body of ``kind``. ``create``: POST or PUT (the required fields and the
    entity rules apply; a PATCH body is merged into the stored entity first, so it only
    has to be well-typed). ``endpoint_key_in_url``: PUT by name, the URL gives that field.
    ``validate``: ``POST /schemas/{kind}/validate``, the entity alone (a target names its
    upstream; a certificate's ``snis`` is not a field of it). ``plugins``: the names a
    plugin may have (the node's enabled plugins that fastgw runs)."""
    fields = dict(SCHEMAS[kind])
    schema = record_schema(fields, request=True, with_required=False)
    props = schema["properties"]
    props.update({k: field_schema(f, request=True) for k, f in KONG_ONLY[kind].items()})
    if kind == "services":
        # A url sets protocol, host, port and path, whatever the body says of them (Kong's
        # shorthand): their own schemas apply only without one.
        overridden = {f: props.pop(f) for f in ("protocol", "host", "port", "path")}
        props.update({f: {} for f in overridden})
        no_url = {"anyOf": [{"not": {"required": ["url"]}},
                            {"properties": {"url": {"type": "null"}}}]}
        schema.setdefault("allOf", []).append(
            {"if": no_url, "then": {"properties": overridden}})
        props["url"] = {"type": ["string", "null"], "pattern": _SERVICE_URL,
                        "description": "shorthand for protocol, host, port and path"}
    if kind == "certificates" and not validate:
        props["snis"] = {"type": ["array", "null"], "uniqueItems": True,
                         "items": VALUE_PATTERNS[_m.sni_error]}
    if kind == "plugins":
        props["config"] = {"type": ["object", "null"]}  # per plugin: see _plugin_rules
        props["name"] = {"type": "string", "enum": sorted(set(plugins) & PLUGIN_SCHEMAS.keys())}
    if not create:
        for name, spec in fields.items():  # PATCH: nothing required, null never needed
            if spec.required and spec.default is MISSING and props.get(name):
                props[name] = value_schema(spec, request=True)
        return schema
    key = KEY_FIELDS.get(kind) if endpoint_key_in_url else None
    implied = {"upstream"} if kind == "targets" and not validate else set()  # by the path
    required = [k for k, f in fields.items() if f.required and f.default is MISSING
                and k != key and f.type != "record" and k not in implied]
    if kind == "services":
        required = [r for r in required if r != "host"]  # or url: see the rules
    if required:
        schema["required"] = required
    if kind == "plugins":
        rules = _plugin_rules(plugins)
    else:
        rules = [] if (kind == "consumers" and key) else _RULES.get(kind, list)()
    if rules:
        schema["allOf"] = schema.get("allOf", []) + rules
    return schema


def entity_response(kind: str) -> Schema:
    fields = SCHEMAS[kind]
    props = {k: field_schema(f, request=False) for k, f in fields.items()}
    props["id"] = {"type": "string"}
    if kind == "certificates":
        props["snis"] = {"type": "array", "items": {"type": "string"}}
    return {"type": "object", "required": ["id"], "properties": props}


# ----------------------------------------------------------------------- path keys

# The field an entity may be addressed by instead of its id (Kong's endpoint_key).
KEY_FIELDS: dict[str, str] = {"services": "name", "routes": "name", "upstreams": "name",
                              "targets": "target", "consumers": "username",
                              "plugins": "instance_name", "snis": "name"}


def key_schema(kind: str) -> Schema:
    """``/{kind}/{key}``: an id, or a valid value of the endpoint key."""
    field = KEY_FIELDS.get(kind)
    if field is None:
        return _p(UUID_PATTERN)
    spec = SCHEMAS[kind][field]
    key = value_schema(Field("string", validator=spec.validator), request=True)
    return {"anyOf": [_p(UUID_PATTERN), key]}


# ----------------------------------------------------------------------- credentials
# What the server sets whatever the body says (fastgw.controlplane.admin.credentials:
# the consumer is the URL's, created_at the server's).
_CREDENTIAL_IGNORED = ("consumer", "created_at")


def credential_request(collection: str, *, create: bool, key_in_url: bool = False) -> Schema:
    """A credential write body: POST (``create``), PUT (``create`` and ``key_in_url``:
    the URL names the key field, or the stored credential gives it) or PATCH (merged
    into the stored credential)."""
    kind = CREDENTIAL_KINDS[collection]
    fields = {k: f for k, f in kind.fields.items() if k not in _CREDENTIAL_IGNORED}
    schema = record_schema(fields, request=True, with_required=False)
    schema["properties"].update({k: {} for k in _CREDENTIAL_IGNORED})
    if create:
        required = [k for k, f in fields.items() if f.required and f.default is MISSING
                    and not (key_in_url and k == kind.endpoint_key)]
        if required:
            schema["required"] = required
    return schema


def credential_response(collection: str) -> Schema:
    kind = CREDENTIAL_KINDS[collection]
    props = {k: field_schema(f, request=False) for k, f in kind.fields.items()}
    props["consumer"] = _foreign(request=False)
    return {"type": "object", "required": ["id", "consumer"], "properties": props}
