"""The Admin API described as OpenAPI 3.0, built from the same schema tables that
validate requests (``fastgw.config.validate.SCHEMAS``), so the two cannot drift apart.

Request schemas carry the constraints (types, enums, ranges) so generated clients and
fuzzers send meaningful bodies; response schemas carry types and nullability only (what
is stored already satisfied the constraints). Every operation documents its error
statuses with Kong's error body. Workspace-prefixed paths (``/{workspace}/services``...)
behave exactly like the default-workspace paths documented here.
"""

from __future__ import annotations

from typing import Any

from fastgw import __version__
from fastgw.config import model as _m
from fastgw.config.validate import MISSING, SCHEMAS, Field

__all__ = ["build_openapi"]

_TITLES = {"services": "Service", "routes": "Route", "upstreams": "Upstream",
           "targets": "Target", "consumers": "Consumer", "plugins": "Plugin"}
_ANY_OBJECT: dict[str, Any] = {"type": "object", "additionalProperties": True}
_UUID_PATTERN = "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
# The value checks that a pattern states exactly (both ways), so that the document and
# the server agree: what the pattern allows is accepted, what it refuses is refused.
_NON_ASCII = "[^\\x00-\\x7f]"
_PATTERNS: dict[Any, str] = {
    _m.uuid_error: _UUID_PATTERN,
    _m.name_error: f"^(?:[A-Za-z0-9._~-]|{_NON_ASCII})+$",
    _m.header_name_error: "^[A-Za-z0-9_-]+$",
    _m.method_error: "^[A-Z]+$",
    _m.tag_error: "^[^,/\\x00-\\x1f\\x7f]+$",
    _m.path_error: "^(?!.*//)/(?:[A-Za-z0-9._~/:@!$&'()*+,;=-]|%[0-9A-Fa-f]{2})*$",
}
# Fields with an entity-level rule the document cannot state: at least one of them.
_ONE_OF_REQUIRED: dict[str, tuple[str, ...]] = {
    "services": ("host", "url"), "consumers": ("username", "custom_id"),
}
_ENDPOINT_KEYS = {"services": "name", "routes": "name", "upstreams": "name",
                  "targets": "target", "consumers": "username", "plugins": "instance_name"}
_REQUIRED: dict[str, tuple[str, ...]] = {"upstreams": ("name",), "targets": ("target",),
                                          "plugins": ("name",)}


def _schema(spec: Field, *, request: bool) -> dict[str, Any]:
    t = spec.type
    out: dict[str, Any]
    if t in ("string", "integer", "number", "boolean"):
        out = {"type": t}
        if request and spec.one_of is not None:
            out["enum"] = list(spec.one_of)
        if request and spec.between is not None:
            lo, hi = spec.between
            out["minimum"], out["maximum"] = lo, hi
            if t == "integer":
                out["minimum"], out["maximum"] = int(lo), int(hi)
        if request and t == "string":
            out["minLength"] = spec.len_min or 1
            pattern = _PATTERNS.get(spec.validator)
            if pattern is not None:
                out["pattern"] = pattern
    elif t in ("array", "set"):
        items = _schema(spec.elements, request=request) if spec.elements else {}
        out = {"type": "array", "items": items}
        if request and spec.len_min:
            out["minItems"] = spec.len_min
    elif t == "map":
        values = _schema(spec.values, request=request) if spec.values else {}
        out = {"type": "object", "additionalProperties": values}
    elif t == "record" and spec.fields:
        out = {"type": "object", "properties": {k: _nullable(f, request=request)
                                                for k, f in spec.fields.items()}}
    elif t == "foreign":
        out = {"type": "object", "properties": {"id": {"type": "string"}}}
        if request:
            out["properties"]["id"] = {"type": "string", "pattern": _UUID_PATTERN}
        if request:
            out["required"] = ["id"]
            out["additionalProperties"] = False
    else:
        out = dict(_ANY_OBJECT)
    return out


def _nullable(spec: Field, *, request: bool) -> dict[str, Any]:
    s = _schema(spec, request=request)
    if request:
        # null means "unset" (the default applies), except for a required field that has
        # no default.
        if not (spec.required and spec.default is MISSING):
            s["nullable"] = True
        return s
    never_null = spec.default is not MISSING and spec.default is not None
    if not never_null:
        s["nullable"] = True
    return s


def _entity(kind: str, *, request: bool, create: bool = False, put: bool = False) -> dict[str, Any]:
    """``request``: what a body may hold; ``create``: a POST body, with the fields a new
    entity needs (a PATCH body needs none); ``put``: a PUT body, whose URL may give the
    endpoint key (``PUT /upstreams/{name}``), so that field is not required there."""
    props = {k: _nullable(f, request=request) for k, f in SCHEMAS[kind].items()
             if not (request and k in ("created_at", "updated_at"))}
    out: dict[str, Any] = {"type": "object", "properties": props}
    if create or put:
        key = _ENDPOINT_KEYS.get(kind) if put else None
        required = [f for f in _REQUIRED.get(kind, ()) if f != key]
        if required:
            out["required"] = required
        either = _ONE_OF_REQUIRED.get(kind, ())
        if either and key not in either:
            out["anyOf"] = [{"required": [f]} for f in either]
    if request:
        if kind == "services":
            props["url"] = {"type": "string", "pattern": "^[A-Za-z][A-Za-z0-9+.-]*://[A-Za-z0-9_]",
                            "description": "shorthand for protocol, host, port and path"}
        if kind == "targets":
            props.pop("upstream", None)  # implied by the path
        if kind == "upstreams":
            props["healthchecks"] = {"type": "object"}  # partial records are merged
        if kind == "plugins":
            props["config"] = {"type": "object"}
        out["additionalProperties"] = False
    else:
        out["required"] = ["id"]
        props["id"] = {"type": "string"}
        props["created_at"] = {"type": "number"}
        props["updated_at"] = {"type": "number"}
    return out


_ERROR = {"type": "object", "properties": {
    "message": {"type": "string"}, "code": {"type": "integer"}, "name": {"type": "string"},
    "fields": {"type": "object"}}, "required": ["message"]}


def _ref(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


def _errors(*codes: int) -> dict[str, Any]:
    reasons = {400: "invalid request", 401: "missing or wrong admin token", 404: "not found",
               405: "method not allowed",
               409: "unique constraint violation, or the config file was edited by hand since "
                    "it was loaded (reload it first)",
               412: "If-Match does not match", 413: "body too large",
               415: "unsupported content type"}
    out = {str(c): {"description": reasons[c], "content": _json(_ref("Error"))}
           for c in (*codes, 401, 405)}
    return out


def _body(schema: dict[str, Any]) -> dict[str, Any]:
    # JSON only: form bodies are accepted too (Kong's curl lines), but their values are all
    # strings coerced by the schema, which JSON Schema cannot state.
    return {"required": False, "content": {"application/json": {"schema": schema}}}


_PAGE_PARAMS = [
    {"name": "size", "in": "query", "required": False,
     "schema": {"type": "integer", "minimum": 1, "maximum": 1000}},
    {"name": "offset", "in": "query", "required": False,
     "schema": {"type": "string", "minLength": 1, "pattern": "^[A-Za-z0-9_-]+$"}},
    {"name": "tags", "in": "query", "required": False, "schema": {"type": "string"}},
]


def _param(name: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}


def _collection_ops(kind: str, params: list[str], tag: str) -> dict[str, Any]:
    title = _TITLES[kind]
    path_params = [_param(p) for p in params]
    return {
        "get": {"tags": [tag], "summary": f"List {kind}", "parameters": path_params + _PAGE_PARAMS,
                "responses": {"200": {"description": "a page",
                                      "content": _json(_ref(f"{title}List"))},
                              **_errors(400, 404)}},
        "post": {"tags": [tag], "summary": f"Create a {title}", "parameters": path_params,
                 "requestBody": _body(_ref(f"{title}Create")),
                 "responses": {"201": {"description": "created", "content": _json(_ref(title))},
                               **_errors(400, 404, 409, 413, 415)}},
    }


def _entity_ops(kind: str, params: list[str], tag: str) -> dict[str, Any]:
    title = _TITLES[kind]
    path_params = [_param(p) for p in params]
    ok = {"description": title, "content": _json(_ref(title))}
    return {
        "get": {"tags": [tag], "summary": f"Get a {title}", "parameters": path_params,
                "responses": {"200": ok, **_errors(404)}},
        "put": {"tags": [tag], "summary": f"Create or replace a {title}", "parameters": path_params,
                "requestBody": _body(_ref(f"{title}Replace")),
                "responses": {"200": ok, **_errors(400, 404, 409, 413, 415)}},
        "patch": {"tags": [tag], "summary": f"Update a {title}", "parameters": path_params,
                  "requestBody": _body(_ref(f"{title}Input")),
                  "responses": {"200": ok, **_errors(400, 404, 409, 413, 415)}},
        "delete": {"tags": [tag], "summary": f"Delete a {title}", "parameters": path_params,
                   "responses": {"204": {"description": "deleted (or absent)"}, **_errors(400, 404)}},
    }


def build_openapi() -> dict[str, Any]:
    paths: dict[str, Any] = {}
    for kind in ("services", "routes", "upstreams", "consumers", "plugins"):
        paths[f"/{kind}"] = _collection_ops(kind, [], kind)
        paths[f"/{kind}/{{id}}"] = _entity_ops(kind, ["id"], kind)
    for parent, child in (("services", "routes"), ("services", "plugins"),
                          ("routes", "plugins"), ("consumers", "plugins"),
                          ("upstreams", "targets")):
        paths[f"/{parent}/{{parent}}/{child}"] = _collection_ops(child, ["parent"], parent)
        paths[f"/{parent}/{{parent}}/{child}/{{id}}"] = _entity_ops(child, ["parent", "id"], parent)
    for child, fk in (("routes", "service"), ("plugins", "service"), ("plugins", "route"),
                      ("plugins", "consumer")):
        parent_title = {"service": "Service", "route": "Route", "consumer": "Consumer"}[fk]
        ok = {"description": parent_title, "content": _json(_ref(parent_title))}
        ops = _entity_ops(fk + "s", ["id"], child)
        paths[f"/{child}/{{id}}/{fk}"] = {"get": {**ops["get"], "responses": {"200": ok, **_errors(404)}},
                                         "patch": {**ops["patch"], "responses": {"200": ok, **_errors(400, 404, 409, 413, 415)}}}
    paths["/upstreams/{id}/targets/all"] = {"get": _collection_ops("targets", ["id"], "upstreams")["get"]}
    health_q = [_param("id"), {"name": "balancer_health", "in": "query", "required": False,
                               "schema": {"type": "string", "enum": ["0", "1"]}}]
    paths["/upstreams/{id}/health"] = {"get": {
        "tags": ["upstreams"], "summary": "Health of the upstream's targets", "parameters": health_q,
        "responses": {"200": {"description": "health", "content": _json(_ref("Health"))},
                      **_errors(404)}}}
    for verb in ("healthy", "unhealthy"):
        op = {"tags": ["upstreams"], "summary": f"Mark a target {verb}",
              "parameters": [_param("id"), _param("target")],
              "responses": {"204": {"description": "done"}, **_errors(404)}}
        paths[f"/upstreams/{{id}}/targets/{{target}}/{verb}"] = {"put": op, "post": op}
    ws_list = {"type": "object", "properties": {"data": {"type": "array", "items": _ref("Workspace")},
                                                "next": {"type": "string", "nullable": True},
                                                "offset": {"type": "string"}}, "required": ["data"]}
    ws_input = {"type": "object", "additionalProperties": False, "properties": {
        "name": {"type": "string", "pattern": _PATTERNS[_m.name_error], "minLength": 1},
        "comment": {"type": "string", "minLength": 1, "nullable": True},
        "meta": {"type": "object", "nullable": True},
        "config": {"type": "object", "nullable": True}}}
    ws_ok = {"description": "Workspace", "content": _json(_ref("Workspace"))}
    paths["/workspaces"] = {
        "get": {"tags": ["workspaces"], "summary": "List workspaces", "parameters": _PAGE_PARAMS,
                "responses": {"200": {"description": "page", "content": _json(ws_list)}, **_errors(400)}},
        "post": {"tags": ["workspaces"], "summary": "Create a workspace",
                 "requestBody": _body({**ws_input, "required": ["name"]}),
                 "responses": {"201": ws_ok, **_errors(400, 409, 413, 415)}}}
    paths["/workspaces/{id}"] = {
        "get": {"tags": ["workspaces"], "parameters": [_param("id")], "responses": {"200": ws_ok, **_errors(404)}},
        "patch": {"tags": ["workspaces"], "parameters": [_param("id")], "requestBody": _body(ws_input),
                  "responses": {"200": ws_ok, **_errors(400, 404, 409, 413, 415)}},
        "put": {"tags": ["workspaces"], "parameters": [_param("id")],
                "requestBody": _body({**ws_input, "properties": {
                    k: v for k, v in ws_input["properties"].items() if k != "name"}}),
                "responses": {"200": ws_ok, "201": ws_ok, **_errors(400, 404, 409, 413, 415)}},
        "delete": {"tags": ["workspaces"], "parameters": [_param("id"),
                   {"name": "cascade", "in": "query", "required": False, "schema": {"type": "boolean"}}],
                   "responses": {"204": {"description": "deleted (or absent)"}, **_errors(400)}}}
    paths["/"] = {"get": {"tags": ["node"], "summary": "Node information", "responses": {
        "200": {"description": "node", "content": _json({"type": "object", "required": ["version", "node_id"],
                "properties": {"version": {"type": "string"}, "node_id": {"type": "string"},
                               "tagline": {"type": "string"}, "pids": {"type": "object"}}})}}}}
    paths["/status"] = {"get": {"tags": ["node"], "summary": "Node status", "responses": {
        "200": {"description": "status", "content": _json({"type": "object", "required": ["database"],
                "properties": {"database": {"type": "object"}, "configuration_hash": {"type": "string"},
                               "workers": {"type": "array", "items": {"type": "object"}}}})}}}}
    paths["/config"] = {
        "get": {"tags": ["node"], "summary": "Export the declarative configuration", "responses": {
            "200": {"description": "config", "content": _json({"type": "object", "required": ["config"],
                    "properties": {"config": {"type": "string"}, "version": {"type": "integer"},
                                   "etag": {"type": "string"}}})}}},
        "post": {"tags": ["node"], "summary": "Replace the whole declarative configuration",
                 "parameters": [{"name": "check_hash", "in": "query", "required": False,
                                 "schema": {"type": "string", "enum": ["0", "1"]}},
                                {"name": "If-Match", "in": "header", "required": False,
                                 "schema": {"type": "string"}}],
                 "requestBody": {"required": True, "content": {"application/json": {"schema": {
                     "type": "object", "required": ["_format_version"],
                     "properties": {"_format_version": {"type": "string", "enum": ["1.1", "2.1", "3.0"]},
                                    "services": {"type": "array", "items": {"type": "object"}},
                                    "upstreams": {"type": "array", "items": {"type": "object"}},
                                    "consumers": {"type": "array", "items": {"type": "object"}},
                                    "plugins": {"type": "array", "items": {"type": "object"}}}}}}},
                 "responses": {"201": {"description": "applied", "content": _json(_ANY_OBJECT)},
                               "304": {"description": "unchanged (check_hash)"},
                               **_errors(400, 409, 412, 413, 415)}}}
    paths["/config/reload"] = {"post": {
        "tags": ["node"], "summary": "Re-read the config file (as SIGHUP), e.g. after a hand edit",
        "responses": {"200": {"description": "reloaded", "content": _json({
            "type": "object", "required": ["version", "etag"],
            "properties": {"message": {"type": "string"}, "version": {"type": "integer"},
                           "etag": {"type": "string"}}})},
                      **_errors(400)}}}

    schemas: dict[str, Any] = {"Error": _ERROR}
    for kind, title in _TITLES.items():
        schemas[title] = _entity(kind, request=False)
        schemas[f"{title}Input"] = _entity(kind, request=True)
        schemas[f"{title}Create"] = _entity(kind, request=True, create=True)
        schemas[f"{title}Replace"] = _entity(kind, request=True, put=True)
        schemas[f"{title}List"] = {"type": "object", "required": ["data", "next"], "properties": {
            "data": {"type": "array", "items": _ref(title)},
            "next": {"type": "string", "nullable": True}, "offset": {"type": "string"}}}
    schemas["Workspace"] = {"type": "object", "required": ["id", "name"], "properties": {
        "id": {"type": "string"}, "name": {"type": "string"},
        "comment": {"type": "string", "nullable": True}, "meta": {"type": "object"},
        "config": {"type": "object"}, "created_at": {"type": "integer"},
        "updated_at": {"type": "integer"}}}
    schemas["Health"] = {"type": "object", "required": ["data", "node_id"], "properties": {
        "data": {"oneOf": [{"type": "array", "items": {"type": "object"}}, {"type": "object"}]},
        "next": {"type": "string", "nullable": True}, "node_id": {"type": "string"}}}
    return {
        "openapi": "3.0.3",
        "info": {"title": "fastgw Admin API (Kong-compatible)", "version": __version__},
        "paths": paths,
        "components": {"schemas": schemas, "securitySchemes": {"adminToken": {
            "type": "apiKey", "in": "header", "name": "Fastgw-Admin-Token"}}},
    }
