"""Kong's entity schemas and entity checks, and ``validate_entity`` (pure, no I/O).

The schema engine is ``schema.py`` and the error type ``errors.py``; the value checks
(typedefs) live in model.py and the plugin config schemas in plugins.py. All errors are
collected; nothing stops at the first.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Collection, Iterable, Mapping

from fastgw.config import certificates as _pem
from fastgw.config import model as _m
from fastgw.config.errors import ConfigError
from fastgw.config.credentials import CREDENTIAL_KINDS
from fastgw.config.plugins import PLUGINS, not_enabled
from fastgw.config.schema import (
    MISSING,
    Errors,
    Field,
    check_record,
    check_value,
    copy_default,
    join,
)

__all__ = ["ConfigError", "Field", "MISSING", "Errors", "SCHEMAS", "UNSUPPORTED", "KONG_ONLY",
           "NOT_ENFORCED", "check_value", "check_record", "join", "validate_entity"]


_S = Field("string")
UUID = Field("string", validator=_m.uuid_error)
TAGS = Field("set", elements=Field("string", validator=_m.tag_error))
FOREIGN = Field("foreign")
TS = Field("integer")
TS_MS = Field("number")
NAME = Field("string", validator=_m.name_error)
_TIMEOUT = Field("integer", default=60000, between=(1, 2**31 - 2))
_ENDPOINT = Field("set", elements=Field("record", fields={
    "ip": Field("string", validator=_m.cidr_error), "port": Field("integer", between=(0, 65535))}))

SERVICE: dict[str, Field] = {
    "id": UUID, "created_at": TS, "updated_at": TS, "name": NAME,
    "retries": Field("integer", default=5, between=(0, 32767)),
    "protocol": Field("string", required=True, default="http", one_of=_m.SERVICE_PROTOCOLS),
    "host": Field("string", required=True, validator=_m.host_error),
    "port": Field("integer", required=True, default=80, between=(0, 65535)),
    "path": Field("string", validator=_m.path_error),
    "connect_timeout": _TIMEOUT, "write_timeout": _TIMEOUT, "read_timeout": _TIMEOUT,
    "tags": TAGS, "client_certificate": FOREIGN,
    "tls_verify": Field("boolean"), "tls_verify_depth": Field("integer", between=(0, 64)),
    "ca_certificates": Field("array", elements=UUID),
    "enabled": Field("boolean", default=True),
}

ROUTE: dict[str, Field] = {
    "id": UUID, "created_at": TS, "updated_at": TS, "name": NAME,
    "protocols": Field("set", required=True, default=["http", "https"], len_min=1,
                       elements=Field("string", one_of=_m.PROTOCOLS)),
    "methods": Field("set", elements=Field("string", validator=_m.method_error)),
    "hosts": Field("array", elements=Field("string", validator=_m.route_host_error)),
    "paths": Field("array", elements=Field("string", validator=_m.router_path_error)),
    "headers": Field("map", keys=Field("string", validator=_m.route_header_name_error),
                     values=Field("array", elements=_S)),
    "https_redirect_status_code": Field("integer", required=True, default=426,
                                        one_of=(426, 301, 302, 307, 308)),
    "regex_priority": Field("integer", default=0),
    "strip_path": Field("boolean", required=True, default=True),
    "path_handling": Field("string", default="v0", one_of=("v0", "v1")),
    "preserve_host": Field("boolean", required=True, default=False),
    "request_buffering": Field("boolean", required=True, default=True),
    "response_buffering": Field("boolean", required=True, default=True),
    "snis": Field("set", elements=Field("string", validator=_m.sni_error)),
    "sources": _ENDPOINT, "destinations": _ENDPOINT,
    "tags": TAGS, "service": FOREIGN,
}

_SECONDS = Field("number", between=(0, 65535))
_COUNTER = Field("integer", between=(0, 255))
_STATUSES = Field("array", elements=Field("integer", between=(100, 999)))


def _hc(default: dict[str, Any]) -> Field:
    """Build the healthchecks record schema from its defaults (as Kong's gen_fields does)."""
    types: dict[str, Field] = {
        "threshold": Field("number", between=(0, 100)),
        # fastgw-only (Kong has no such fields; documented in docs/traffic.md)
        "panic_threshold": Field("number", between=(0, 100)),
        "slow_start": _SECONDS, "base_ejection_time": _SECONDS, "max_ejection_time": _SECONDS,
        "type": Field("string", one_of=("tcp", "http", "https", "grpc", "grpcs")),
        "timeout": _SECONDS, "interval": _SECONDS,
        "concurrency": Field("integer", between=(1, 2**31)),
        "successes": _COUNTER, "tcp_failures": _COUNTER, "timeouts": _COUNTER,
        "http_failures": _COUNTER, "http_path": Field("string", validator=_m.path_error),
        "http_statuses": _STATUSES, "https_sni": Field("string", validator=_m.sni_error),
        "https_verify_certificate": Field("boolean"),
        "headers": Field("map", keys=Field("string", validator=_m.header_name_error),
                         values=Field("array", elements=_S)),
    }
    fields: dict[str, Field] = {}
    for k, d in default.items():
        if isinstance(d, dict):
            fields[k] = _hc(d)
        else:
            t = types[k]
            fields[k] = Field(t.type, default=MISSING if d is None else d, between=t.between,
                              one_of=t.one_of, elements=t.elements, keys=t.keys,
                              values=t.values, validator=t.validator)
    return Field("record", fields=fields)


HEALTHCHECKS = _hc(_m.DEFAULT_HEALTHCHECKS)


_HASH = Field("string", default="none", one_of=_m.HASH_ON)
UPSTREAM: dict[str, Field] = {
    "id": UUID, "created_at": TS, "updated_at": TS,
    "name": Field("string", required=True, validator=_m.upstream_name_error),
    "algorithm": Field("string", default="round-robin", one_of=_m.ALGORITHMS),
    "hash_on": _HASH, "hash_fallback": _HASH,
    "hash_on_header": Field("string", validator=_m.header_name_error),
    "hash_fallback_header": Field("string", validator=_m.header_name_error),
    "hash_on_cookie": Field("string", validator=_m.cookie_name_error),
    "hash_on_cookie_path": Field("string", default="/", validator=_m.path_error),
    "hash_on_query_arg": _S, "hash_fallback_query_arg": _S,
    "hash_on_uri_capture": _S, "hash_fallback_uri_capture": _S,
    "slots": Field("integer", default=10000, between=(10, 2**16)),
    "healthchecks": HEALTHCHECKS,
    "host_header": Field("string", validator=_m.host_error),
    "client_certificate": FOREIGN,
    "use_srv_name": Field("boolean", default=False),
    "tags": TAGS,
}

TARGET: dict[str, Field] = {
    "id": UUID, "created_at": TS_MS, "updated_at": TS_MS,
    "upstream": Field("foreign", required=True),
    "target": Field("string", required=True, validator=_m.target_error),
    "weight": Field("integer", default=100, between=(0, 65535)),
    "tags": TAGS,
}

CONSUMER: dict[str, Field] = {
    "id": UUID, "created_at": TS, "updated_at": TS,
    "username": _S, "custom_id": _S, "tags": TAGS,
    # Credentials nested under their consumer (decK's style; fastgw.config.credentials).
    **{k.collection: Field("array", elements=Field("record", fields={
        name: f for name, f in k.fields.items() if name != "consumer"}))
       for k in CREDENTIAL_KINDS.values()},
}

PLUGIN: dict[str, Field] = {
    "id": UUID, "created_at": TS, "updated_at": TS,
    "name": Field("string", required=True),
    "instance_name": NAME,
    "route": FOREIGN, "service": FOREIGN, "consumer": FOREIGN,
    "config": Field("record", default={}),
    "protocols": Field("set", required=True, default=["grpc", "grpcs", "http", "https"],
                       len_min=1, elements=Field("string", one_of=_m.PROTOCOLS)),
    "enabled": Field("boolean", default=True),
    "tags": TAGS,
    "consumer_group": FOREIGN, "ordering": Field("record"),
}

_PEM = Field("string", required=True)
CERTIFICATE: dict[str, Field] = {
    "id": UUID, "created_at": TS, "updated_at": TS,
    "cert": _PEM, "key": _PEM, "cert_alt": _S, "key_alt": _S, "tags": TAGS,
}

SNI: dict[str, Field] = {
    "id": UUID, "created_at": TS, "updated_at": TS,
    "name": Field("string", required=True, validator=_m.sni_error),
    "certificate": Field("foreign", required=True), "tags": TAGS,
}

CA_CERTIFICATE: dict[str, Field] = {
    "id": UUID, "created_at": TS, "updated_at": TS,
    "cert": _PEM, "cert_digest": _S, "tags": TAGS,
}

SCHEMAS: dict[str, dict[str, Field]] = {
    "services": SERVICE, "routes": ROUTE, "upstreams": UPSTREAM,
    "targets": TARGET, "consumers": CONSUMER, "plugins": PLUGIN,
    "certificates": CERTIFICATE, "snis": SNI, "ca_certificates": CA_CERTIFICATE,
}

# Fields Kong knows but fastgw does not implement: accepted, kept, and reported.
UNSUPPORTED: dict[str, tuple[str, ...]] = {
    "services": (),
    "routes": ("snis", "sources", "destinations"),
    "upstreams": ("use_srv_name",),
    "targets": (),
    "consumers": (),
    "plugins": ("consumer_group", "ordering"),
    "certificates": (),
    "snis": (),
    "ca_certificates": (),
}


# Fields of Kong 3.x's entity schemas (kong/db/schema/entities/*.lua, Kong 3.12, and decK's
# nested credentials under consumers) that fastgw has no model field for. They are checked
# with Kong's type, kept verbatim in the entity's ``extra`` and reported: a Kong file never
# loses them, and never fails on them.
_CREDENTIALS = Field("array", elements=Field("record"))
KONG_ONLY: dict[str, dict[str, Field]] = {
    "services": {"tls_sans": Field("record")},
    "routes": {"expression": _S, "priority": Field("integer", between=(0, 2**46))},
    "upstreams": {
        "sticky_sessions_cookie": Field("string", validator=_m.cookie_name_error),
        "sticky_sessions_cookie_path": Field("string", validator=_m.path_error),
    },
    "targets": {"failover": Field("boolean")},
    "consumers": {k: _CREDENTIALS for k in (
        "jwt_secrets", "hmacauth_credentials", "oauth2_credentials", "mtls_auth_credentials",
        "groups",
        "consumer_groups")},
    "plugins": {"partials": Field("array", elements=Field("record"))},
    "certificates": {},
    "snis": {},
    "ca_certificates": {},
}
NOT_ENFORCED = "not supported yet, kept but not enforced"


# --------------------------------------------------------------------------- entity checks

_EMPTY: tuple[Any, ...] = (None, [], {})
_COND = "failed conditional validation given value of field '{}'"
_HTTP_MATCH = ("methods", "hosts", "headers", "paths")
_EXCLUSIVE = (("http", "https"), ("tcp", "tls", "udp"), ("tls_passthrough",),
              ("grpc", "grpcs"), ("ws", "wss"))


def _quoted(names: Iterable[str]) -> str:
    return ", ".join(f"'{n}'" for n in names)


def _apply_shorthands(kind: str, data: Mapping[str, Any]) -> dict[str, Any]:
    d = dict(data)
    if kind == "services" and "url" in d:
        url = d.pop("url")
        if url is None:
            pass  # null: unset, like any field
        elif isinstance(url, str):
            d.update(_m.parse_service_url(url))
        else:
            d["url"] = url  # reported below as a type error
    elif kind == "upstreams":
        # Kong shorthand coupling: a real hash_on implies consistent-hashing,
        # hash_on=none undoes it; least-connections/latency never hash.
        h, alg = d.get("hash_on"), d.get("algorithm")
        if alg is not None and alg not in _m.ALGORITHMS:
            pass  # reported as such below, never hidden by the coupling
        elif isinstance(h, str) and h != "none":
            d["algorithm"] = "consistent-hashing"
        elif h == "none" and alg == "consistent-hashing":
            d["algorithm"] = "round-robin"
    return d


def _check_service(e: dict[str, Any], path: str, errs: Errors) -> None:
    proto = e.get("protocol")
    if proto in ("tcp", "tls", "udp", "grpc", "grpcs") and e.get("path") is not None:
        errs += [(join(path, "@entity"), _COND.format("protocol")),
                 (join(path, "path"), "value must be null")]
    if proto not in ("https", "tls", "wss", None):
        for f in ("client_certificate", "tls_verify", "tls_verify_depth", "ca_certificates"):
            if e.get(f) is not None:
                errs += [(join(path, "@entity"), _COND.format("protocol")),
                         (join(path, f), "value must be null")]


def _check_route(e: dict[str, Any], path: str, errs: Errors) -> None:
    protos = e.get("protocols")
    if not protos:
        return
    groups = [g for g in _EXCLUSIVE if any(p in g for p in protos)]
    if len(groups) > 1:
        sets = ", ".join("(" + _quoted(g) + ")" for g in _EXCLUSIVE)
        errs.append((join(path, "protocols"), f"these sets are mutually exclusive: {sets}"))
        return
    has = {f for f in ("methods", "hosts", "headers", "paths", "snis", "sources", "destinations")
           if e.get(f) not in _EMPTY}
    if "snis" in has and not set(protos) & {"grpcs", "https", "tls", "tls_passthrough", "wss"}:
        errs.append((join(path, "@entity"), "'snis' can only be set when 'protocols' is "
                     "'grpcs', 'https', 'tls', 'tls_passthrough', or 'wss'"))
    if groups[0] in (("http", "https"), ("grpc", "grpcs"), ("ws", "wss")):
        for f in ("sources", "destinations"):
            if f in has:
                errs.append((join(path, f), f"cannot set '{f}' when 'protocols' is "
                             + " or ".join(f"'{p}'" for p in groups[0])))
        secure = {"https", "grpcs", "wss"} & set(protos)
        need = _HTTP_MATCH + (("snis",) if secure else ())
        if not has & set(need):
            shown = sorted(secure)[0] if secure else sorted(protos)[0]
            errs.append((join(path, "@entity"),
                         f"must set one of {_quoted(need)} when 'protocols' is '{shown}'"))
    elif groups[0] != ("tls_passthrough",) and not has & {"sources", "destinations", "snis"}:
        errs.append((join(path, "@entity"), "must set one of 'sources', 'destinations', "
                     "'snis' when 'protocols' is 'tcp', 'tls' or 'udp'"))


def _check_upstream(e: dict[str, Any], path: str, errs: Errors) -> None:
    on, fb = e.get("hash_on"), e.get("hash_fallback")
    companion = {"header": ("hash_on_header", "hash_fallback_header"),
                 "cookie": ("hash_on_cookie", "hash_on_cookie"),
                 "query_arg": ("hash_on_query_arg", "hash_fallback_query_arg"),
                 "uri_capture": ("hash_on_uri_capture", "hash_fallback_uri_capture")}
    for side, val in (("hash_on", on), ("hash_fallback", fb)):
        if val in companion:
            f = companion[val][0 if side == "hash_on" else 1]
            if e.get(f) is None and (join(path, f), "required field missing") not in errs:
                errs += [(join(path, "@entity"), _COND.format(side)),
                         (join(path, f), "required field missing")]
    if on in ("none", "cookie") and fb not in (None, "none"):
        errs += [(join(path, "@entity"), _COND.format("hash_on")),
                 (join(path, "hash_fallback"), "expected one of: none")]
    elif on not in (None, "none", "cookie") and fb == on and on not in companion:
        allowed = [h for h in _m.HASH_ON if h != on]
        errs += [(join(path, "@entity"), _COND.format("hash_on")),
                 (join(path, "hash_fallback"), "expected one of: " + ", ".join(allowed))]
    for v in ("header", "query_arg", "uri_capture"):
        a, b = companion[v]
        if e.get(a) is not None and e.get(a) == e.get(b) and on == fb == v:
            errs.append((join(path, "@entity"),
                         f"values of these fields must be distinct: {_quoted((a, b))}"))


def _check_consumer(e: dict[str, Any], path: str, errs: Errors) -> None:
    if e.get("username") is None and e.get("custom_id") is None:
        errs.append((join(path, "@entity"), "at least one of these fields must be non-empty: "
                     "'custom_id', 'username'"))


def _check_certificate(e: dict[str, Any], path: str, errs: Errors) -> None:
    """Kong's certificate checks (fastgw.config.certificates); vault references skipped."""
    n = len(errs)
    if (e.get("cert_alt") is None) != (e.get("key_alt") is None):
        errs.append((join(path, "@entity"), "all or none of these fields must be set: "
                     "'cert_alt', 'key_alt'"))
    for cert_field, key_field in (("cert", "key"), ("cert_alt", "key_alt")):
        cert, key = e.get(cert_field), e.get(key_field)
        if cert is not None and not _pem.is_reference(cert):
            why = _pem.certificate_error(cert)
            if why:
                errs.append((join(path, cert_field), why))
        if key is not None and not _pem.is_reference(key):
            why = _pem.key_error(key)
            if why:
                errs.append((join(path, key_field), why))
    if len(errs) > n or any(_pem.is_reference(e.get(f)) for f in
                            ("cert", "key", "cert_alt", "key_alt")):
        return
    if _pem.pair_error(e["cert"], e["key"]):
        errs.append((join(path, "@entity"), "certificate does not match key"))
    if e.get("cert_alt") is not None:
        if _pem.pair_error(e["cert_alt"], e["key_alt"]):
            errs.append((join(path, "@entity"), "alternative certificate does not match key"))
        elif _pem.key_type(e["cert"]) == _pem.key_type(e["cert_alt"]):
            errs.append((join(path, "@entity"), "certificate and alternative certificate need "
                         "to have different type (e.g. RSA and ECDSA), the provided "
                         "certificates were both of the same type"))


def _check_ca_certificate(e: dict[str, Any], path: str, errs: Errors) -> None:
    cert = e["cert"]
    if _pem.is_reference(cert):
        return
    why = _pem.ca_certificate_error(cert)
    if why:
        errs.append((join(path, "cert") if why.startswith("invalid") else
                     join(path, "@entity"), why))
        return
    e["cert_digest"] = _pem.cert_digest(cert)  # Kong's on_write transformation


_CHECKS: dict[str, Callable[[dict[str, Any], str, Errors], None]] = {
    "services": _check_service, "routes": _check_route,
    "upstreams": _check_upstream, "consumers": _check_consumer,
    "certificates": _check_certificate, "ca_certificates": _check_ca_certificate,
}


def _check_plugin(plugin: dict[str, Any], path: str, errs: Errors,
                  enabled: Collection[str] | None) -> None:
    """A plugin fastgw runs (``fastgw.config.plugins``) and the node enables, with its
    config validated and defaulted; anything else is refused by name, as Kong does."""
    name = plugin.get("name") or ""
    spec = PLUGINS.get(name)
    if spec is None or (enabled is not None and name not in enabled):
        errs.append((join(path, "name"), not_enabled(name)))
        return
    if spec.no_consumer and plugin.get("consumer") is not None:
        errs.append((join(path, "consumer"), "value must be null"))
    if not isinstance(plugin.get("config"), dict):
        return
    n = len(errs)
    config = check_record(spec.fields, plugin["config"], join(path, "config"), errs)
    if len(errs) == n and spec.check is not None:
        spec.check(config, path, errs)
    plugin["config"] = config


def validate_entity(
    kind: str,
    data: Any,
    path: str,
    errors: Errors,
    warnings: list[str],
    *,
    nested_in: str | None = None,
    ignore: Iterable[str] = (),
    enabled_plugins: Collection[str] | None = None,
) -> dict[str, Any] | None:
    """Validate one Kong entity document of collection ``kind``.

    Returns the normalized field dict (defaults filled, shorthands applied, foreign keys
    as ``{"id"|"name"|"key": ...}``) or None if it had errors (appended to ``errors``).
    ``nested_in`` names the foreign key implied by nesting (e.g. ``"service"`` for routes
    under a service); like Kong, that field is then unknown. Keys starting with ``_``
    (``_comment``, ``_ignore``) and the fields of ``KONG_ONLY`` are kept verbatim under
    ``"extra"``. ``enabled_plugins``: the plugins the node runs (None: all of
    ``fastgw.config.plugins``); a plugin outside them is an error on its ``name``.
    """
    if not isinstance(data, dict):
        errors.append((path, "expected a record"))
        return None
    schema = SCHEMAS[kind]
    if nested_in:
        schema = {k: v for k, v in schema.items() if k != nested_in}
    data = _apply_shorthands(kind, data)
    kong_only = KONG_ONLY[kind]
    kept = [k for k in data if k not in ignore and isinstance(k, str)
            and (k.startswith("_") or k in kong_only)]
    n = len(errors)
    ent_errs: Errors = []
    out = check_record(schema, data, path, ent_errs, ignore=set(ignore) | set(kept))
    for k in kept:
        if k in kong_only and data[k] is not None:
            check_value(kong_only[k], data[k], join(path, k), ent_errs)
    out["extra"] = {k: copy_default(data[k]) for k in kept}
    if kind == "plugins" and not ent_errs:
        _check_plugin(out, path, ent_errs, enabled_plugins)
    check = _CHECKS.get(kind)
    if check is not None and not ent_errs:  # like Kong: no entity checks over invalid fields
        check(out, path, ent_errs)
    if kind == "routes" and out.get("headers"):
        out["headers"] = {k.lower(): v for k, v in out["headers"].items()}
    if kind == "targets" and "target" in out:
        out["target"] = _m.normalize_target(out["target"])
    # Kong renders entity-level errors first.
    errors += [x for x in ent_errs if x[0].endswith("@entity")]
    errors += [x for x in ent_errs if not x[0].endswith("@entity")]
    if len(errors) > n:
        return None
    for f in UNSUPPORTED[kind]:
        if out.get(f) not in (None, False):
            warnings.append(f"{join(path, f)}: {NOT_ENFORCED}")
    for f in kept:
        if f in kong_only and data[f] not in (None, []):
            warnings.append(f"{join(path, f)}: {NOT_ENFORCED}")
    if kind == "ca_certificates" and out.get("cert_digest") and _pem.ca_expired(out["cert"],
                                                                               time.time()):
        # A warning, not an error: a CA that expires must not stop the next restart.
        warnings.append(f"{join(path, 'cert')}: {_pem.EXPIRED}")
    for f in ("cert", "key", "cert_alt", "key_alt"):
        if kind in ("certificates", "ca_certificates") and _pem.is_reference(out.get(f)):
            warnings.append(f"{join(path, f)}: vault references are not supported yet, kept "
                            "but the certificate is not used")
            break
    if kind == "upstreams" and out.get("algorithm") == "sticky-sessions":
        warnings.append(f"{join(path, 'algorithm')}: sticky-sessions not supported yet, "
                        "treated as round-robin")
    proto_field = {"services": "protocol", "routes": "protocols"}.get(kind)
    if proto_field:
        val = out[proto_field]
        odd = [p for p in ([val] if isinstance(val, str) else val) if p not in ("http", "https")]
        if odd:
            warnings.append(f"{join(path, proto_field)}: protocol {', '.join(odd)} "
                            "not supported yet, treated as http(s)")
    return out
