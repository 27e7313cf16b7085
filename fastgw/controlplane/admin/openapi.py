"""The Admin API described as OpenAPI 3.1, generated from the routing table the server
dispatches with and from the schema tables that validate writes, so that the document
cannot drift from the server: a route is documented by what its handler is
(``_OPERATIONS``, keyed by the handler's function), and an entity's bodies come from
``fastgw.controlplane.admin.json_schema``. A handler without a description is an error
(the unit test builds the document from the real table).

Every path also answers ``HEAD`` (where it answers ``GET``) and ``OPTIONS`` (a CORS
preflight, answered before authentication). Workspace-prefixed paths
(``/{workspace}/services``...) behave exactly as the paths documented here, in that
workspace. With an ``admin_token`` the document declares the token (Kong-Admin-Token or
Fastgw-Admin-Token) on every operation but ``OPTIONS``.

What JSON Schema cannot state and the server checks (Kong answers each with 400):
a foreign key must reference an existing entity (code 4), an explicit id must be unused
(code 3), an ``offset`` must be one a previous page handed out (code 7), ``If-Match``
must name the current version (412), the fields of a declarative document must agree
with each other (code 14: unique names, references by name), certificates and keys must
parse and match, two hash fields of an upstream must differ, a plugin's own entity rules,
and the default workspace can be neither renamed nor deleted, nor a workspace with
entities deleted without ``cascade``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Collection, Iterable
from typing import Any

from fastgw import __version__
from fastgw.config.model import name_error
from fastgw.config.validate import SCHEMAS
from fastgw.config.workspaces import RESERVED_NAMES, default_workspace
from fastgw.controlplane.admin import json_schema as J
from fastgw.controlplane.admin.meta import endpoint_path

__all__ = ["build_openapi", "documented_operations"]

Schema = dict[str, Any]
Route = tuple[tuple[str, ...], dict[str, Any]]

CREDENTIAL_TITLES = {"keyauth_credentials": "KeyAuth", "basicauth_credentials": "BasicAuth",
                     "acls": "ACL"}
TITLES = {"services": "Service", "routes": "Route", "upstreams": "Upstream",
          "targets": "Target", "consumers": "Consumer", "plugins": "Plugin",
          "certificates": "Certificate", "snis": "SNI", "ca_certificates": "CACertificate"}
_TOKEN_HEADERS = ("Kong-Admin-Token", "Fastgw-Admin-Token")
_ERROR: Schema = {"type": "object", "required": ["message"], "properties": {
    "message": {"type": "string"}, "code": {"type": "integer"}, "name": {"type": "string"},
    "fields": {"type": ["object", "array"]}}}
_REASONS = {400: "invalid request", 401: "missing or wrong admin token", 404: "not found",
            405: "method not allowed",
            409: "unique constraint violation, or the config file was edited by hand since "
                 "it was loaded (reload it first)",
            412: "If-Match does not name the current version", 413: "body too large",
            415: "unsupported content type",
            503: "the configuration could not be saved (the message says why)"}
_TAG = "^[^,/\\x00-\\x1f\\x7f]+$"
_TAG_FILTER = "^(?:[^,/\\x00-\\x1f\\x7f]+(?:,[^,/\\x00-\\x1f\\x7f]+)*|[^,/\\x00-\\x1f\\x7f]+" \
              "(?:/[^,/\\x00-\\x1f\\x7f]+)+)$"


def _ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: Schema) -> Schema:
    return {"application/json": {"schema": schema}}


def _ok(status: int, schema: Schema | None, what: str = "ok") -> Schema:
    if schema is None:
        return {str(status): {"description": what}}
    return {str(status): {"description": what, "content": _json(schema)}}


def _errors(*codes: int) -> Schema:
    return {str(c): {"description": _REASONS[c], "content": _json(_ref("Error"))}
            for c in sorted(set(codes))}


_WRITE_ERRORS = (400, 404, 409, 413, 415, 503)


def _body(schema: Schema, *, required: bool = False) -> Schema:
    # JSON is documented; form bodies are accepted too (Kong's curl lines), their values
    # strings coerced by the schema, which JSON Schema cannot state.
    return {"required": required, "content": _json(schema)}


def _query(name: str, schema: Schema) -> Schema:
    return {"name": name, "in": "query", "required": False, "schema": schema}


def _page(numeric: bool) -> list[Schema]:
    offset = {"type": "string", "pattern": "^[0-9]+$"} if numeric else \
        {"type": "string", "pattern": "^[A-Za-z0-9_-]+$"}
    return [_query("size", {"type": "integer", "minimum": 1, "maximum": 1000}),
            _query("offset", offset)]


def _list_schema(item: Schema) -> Schema:
    return {"type": "object", "required": ["data", "next"], "properties": {
        "data": {"type": "array", "items": item}, "next": {"type": ["string", "null"]},
        "offset": {"type": "string"}}}


# ----------------------------------------------------------------------- entity operations
# Each describer gets the handler's keyword arguments (functools.partial) and returns the
# operation without its path parameters.

Describe = Callable[[dict[str, Any]], Schema]


def _nested(kw: dict[str, Any]) -> bool:
    return kw.get("nested") is not None


def _list(kw: dict[str, Any]) -> Schema:
    kind = kw["kind"]
    params = _page(kind == "targets")
    if kind in SCHEMAS and "tags" in SCHEMAS[kind]:
        params.append(_query("tags", {"type": "string", "pattern": _TAG_FILTER}))
    return {"summary": f"List {kind}", "parameters": params,
            "responses": {**_ok(200, _ref(f"{TITLES[kind]}List"), "a page"), **_errors(400, 404)}}


def _body_ref(kw: dict[str, Any], variant: str) -> Schema:
    """The body schema of a write; a plugin under /consumers/{c} has its own (an auth
    plugin cannot be scoped to a consumer)."""
    kind = kw["kind"]
    nested = kw.get("nested")
    under_consumer = kind == "plugins" and nested is not None and nested[0] == "consumers"
    return _ref(f"{TITLES[kind]}{variant}" + (_FOR_CONSUMER if under_consumer else ""))


_FOR_CONSUMER = "ForConsumer"


def _post(kw: dict[str, Any]) -> Schema:
    kind = kw["kind"]
    return {"summary": f"Create a {TITLES[kind]}",
            "requestBody": _body(_body_ref(kw, "Create"), required=True),
            "responses": {**_ok(201, _ref(TITLES[kind]), "created"), **_errors(*_WRITE_ERRORS)}}


def _get(kw: dict[str, Any]) -> Schema:
    kind = kw["kind"]
    return {"summary": f"Get a {TITLES[kind]}",
            "responses": {**_ok(200, _ref(TITLES[kind])), **_errors(400, 404)}}


def _put(kw: dict[str, Any]) -> Schema:
    kind = kw["kind"]
    return {"summary": f"Create or replace a {TITLES[kind]} (by id, or by "
                       f"{J.KEY_FIELDS.get(kind, 'id')}: the URL's value wins over the body's)",
            "requestBody": _body(_body_ref(kw, "Replace"), required=True),
            "responses": {**_ok(200, _ref(TITLES[kind]), "created or replaced (Kong: 200 both)"),
                          **_errors(*_WRITE_ERRORS)}}


def _patch(kw: dict[str, Any]) -> Schema:
    kind = kw["kind"]
    return {"summary": f"Update a {TITLES[kind]} (merged into the stored one)",
            "requestBody": _body(_body_ref(kw, "Update")),
            "responses": {**_ok(200, _ref(TITLES[kind])), **_errors(*_WRITE_ERRORS)}}


def _delete(kw: dict[str, Any]) -> Schema:
    kind = kw["kind"]
    return {"summary": f"Delete a {TITLES[kind]}",
            "responses": {**_ok(204, None, "deleted (or absent at the top level, as Kong)"),
                          **_errors(400, 404, 409, 503)}}


def _parent_kind(kw: dict[str, Any]) -> str:
    from fastgw.controlplane.admin.entities import KINDS

    return KINDS[kw["kind"]].foreign[kw["fk"]]


def _get_parent(kw: dict[str, Any]) -> Schema:
    return _get({"kind": _parent_kind(kw)})


def _put_parent(kw: dict[str, Any]) -> Schema:
    return _put({"kind": _parent_kind(kw)})


def _patch_parent(kw: dict[str, Any]) -> Schema:
    return _patch({"kind": _parent_kind(kw)})


def _delete_parent(kw: dict[str, Any]) -> Schema:
    return {"summary": "Refused: an entity is not deleted through its child (Kong)",
            "responses": _errors(404, 405)}


def _health(kw: dict[str, Any]) -> Schema:
    return {"summary": "Health of the upstream's targets",
            "parameters": [_query("balancer_health", {"type": "string", "enum": ["0", "1"]})],
            "responses": {**_ok(200, _ref("Health")), **_errors(400, 404)}}


def _set_health(kw: dict[str, Any]) -> Schema:
    verb = "healthy" if kw.get("healthy") else "unhealthy"
    return {"summary": f"Mark a target {verb} on this node",
            "responses": {**_ok(204, None, "done"), **_errors(400, 404)}}


# ----------------------------------------------------------------------- other operations

_SCHEMA_DOC: Schema = {"type": "object", "required": ["fields"],
                       "properties": {"fields": {"type": "array", "items": {"type": "object"}}}}
_VALID: Schema = {"type": "object", "required": ["message"],
                  "properties": {"message": {"type": "string"}}}


def _get_schema(kw: dict[str, Any]) -> Schema:
    return {"summary": "The entity's schema (Kong's /schemas document)",
            "responses": {**_ok(200, _SCHEMA_DOC), **_errors(404)}}


def _validate_schema(kw: dict[str, Any]) -> Schema:
    kind = kw["kind"]
    return {"summary": f"Check a {TITLES[kind]} as a create would, without writing it",
            "requestBody": _body(_ref(f"{TITLES[kind]}Valid"), required=True),
            "responses": {**_ok(200, _VALID, "valid"), **_errors(400, 404, 413, 415)}}


def _get_plugin_schema(kw: dict[str, Any]) -> Schema:
    return {"summary": "A plugin's config schema",
            "responses": {**_ok(200, _SCHEMA_DOC), **_errors(404)}}


def _tags(kw: dict[str, Any]) -> Schema:
    row = {"type": "object", "required": ["entity_name", "entity_id", "tag"], "properties": {
        "entity_name": {"type": "string"}, "entity_id": {"type": "string"},
        "tag": {"type": "string"}}}
    return {"summary": "(entity, tag) pairs", "parameters": _page(True),
            "responses": {**_ok(200, _list_schema(row)), **_errors(400)}}


def _workspace_name() -> Schema:
    reserved = "|".join(sorted(n.replace(".", "\\.") for n in RESERVED_NAMES))
    assert J.VALUE_PATTERNS[name_error]["pattern"].startswith("^")
    name = J.VALUE_PATTERNS[name_error]["pattern"][1:]
    return {"type": "string", "minLength": 1, "pattern": f"^(?!(?:{reserved})$){name}"}


def _workspace_body(*, create: bool) -> Schema:
    props: Schema = {"id": {"type": ["string", "null"], "pattern": J.UUID_PATTERN},
                     "name": _workspace_name(),
                     "comment": {"type": ["string", "null"], "minLength": 1},
                     "meta": {"type": ["object", "null"]}, "config": {"type": ["object", "null"]},
                     "created_at": {"type": ["integer", "null"]},
                     "updated_at": {"type": ["integer", "null"]}}
    out: Schema = {"type": "object", "additionalProperties": False, "properties": props}
    if create:
        out["required"] = ["name"]
    return out


_WS_OK = {"description": "Workspace", "content": _json(_ref("Workspace"))}


def _list_workspaces(kw: dict[str, Any]) -> Schema:
    return {"summary": "List workspaces", "parameters": _page(False),
            "responses": {**_ok(200, _list_schema(_ref("Workspace"))), **_errors(400)}}


def _post_workspace(kw: dict[str, Any]) -> Schema:
    return {"summary": "Create a workspace",
            "requestBody": _body(_workspace_body(create=True), required=True),
            "responses": {"201": _WS_OK, **_errors(*_WRITE_ERRORS)}}


def _get_workspace(kw: dict[str, Any]) -> Schema:
    return {"summary": "Get a workspace", "responses": {"200": _WS_OK, **_errors(404)}}


def _patch_workspace(kw: dict[str, Any]) -> Schema:
    return {"summary": "Update a workspace", "requestBody": _body(_workspace_body(create=False)),
            "responses": {"200": _WS_OK, **_errors(*_WRITE_ERRORS)}}


def _put_workspace(kw: dict[str, Any]) -> Schema:
    return {"summary": "Create or replace a workspace (by id or name; the URL's name wins)",
            "requestBody": _body(_workspace_body(create=False)),
            "responses": {"200": _WS_OK, "201": _WS_OK, **_errors(*_WRITE_ERRORS)}}


def _delete_workspace(kw: dict[str, Any]) -> Schema:
    return {"summary": "Delete a workspace (with its entities only with ?cascade=true)",
            "parameters": [_query("cascade", {"type": "boolean"})],
            "responses": {**_ok(204, None, "deleted (or absent)"), **_errors(400, 409, 503)}}


def _root(kw: dict[str, Any]) -> Schema:
    return {"summary": "Node information", "responses": _ok(200, {
        "type": "object", "required": ["version", "node_id"], "properties": {
            "version": {"type": "string"}, "node_id": {"type": "string"},
            "tagline": {"type": "string"}, "pids": {"type": "object"},
            "plugins": {"type": "object"}, "configuration": {"type": "object"}}})}


def _endpoints(kw: dict[str, Any]) -> Schema:
    return {"summary": "Every path this API serves", "responses": _ok(200, {
        "type": "object", "required": ["data"],
        "properties": {"data": {"type": "array", "items": {"type": "string"}}}})}


def _status(kw: dict[str, Any]) -> Schema:
    return {"summary": "Node status",
            "parameters": [_query("unit", {"type": "string", "enum": [
                                  "b", "B", "k", "K", "m", "M", "g", "G"]}),
                           _query("scale", {"type": "integer", "minimum": 0, "maximum": 99})],
            "responses": {**_ok(200, {"type": "object", "required": ["database"], "properties": {
                "database": {"type": "object"}, "configuration_hash": {"type": "string"},
                "workers": {"type": "array", "items": {"type": "object"}},
                "memory": {"type": "object"}}}), **_errors(400)}}


def _get_config(kw: dict[str, Any]) -> Schema:
    return {"summary": "Export the declarative configuration",
            "parameters": [_query("format", {"type": "string", "enum": ["fastgw", "kong"]})],
            "responses": {**_ok(200, {"type": "object", "required": ["config"], "properties": {
                "config": {"type": "string"}, "version": {"type": "integer"},
                "etag": {"type": "string"}, "dropped": {"type": "array"}}}), **_errors(400)}}


def _post_config(kw: dict[str, Any]) -> Schema:
    collection = {"type": ["array", "null"], "items": {"type": "object"}}  # null: none
    doc = {"type": "object", "required": ["_format_version"], "properties": {
        "_format_version": {"type": "string", "enum": ["1.1", "2.1", "3.0"]},
        **{kind: collection for kind in SCHEMAS}}}
    return {"summary": "Replace the whole declarative configuration",
            "parameters": [_query("check_hash", {"type": "string",
                                                 "enum": ["0", "1", "true", "false"]}),
                           {"name": "If-Match", "in": "header", "required": False,
                            "schema": {"type": "string"}}],
            "requestBody": _body(doc, required=True),
            "responses": {**_ok(201, {"type": "object"}, "applied"),
                          **_ok(304, None, "unchanged (check_hash)"),
                          **_errors(400, 409, 412, 413, 415, 503)}}


def _reload_config(kw: dict[str, Any]) -> Schema:
    return {"summary": "Re-read the config file (as SIGHUP), e.g. after a hand edit",
            "responses": {**_ok(200, {"type": "object", "required": ["version", "etag"],
                                      "properties": {"message": {"type": "string"},
                                                     "version": {"type": "integer"},
                                                     "etag": {"type": "string"}}}, "reloaded"),
                          **_errors(400)}}


def _metrics(kw: dict[str, Any]) -> Schema:
    text = {"schema": {"type": "string"}}
    return {"summary": "Prometheus metrics (text, or OpenMetrics when accepted)",
            "responses": {"200": {"description": "metrics", "content": {
                "text/plain": text, "application/openmetrics-text": text}}}}


def _openapi(kw: dict[str, Any]) -> Schema:
    return {"summary": "This document", "responses": _ok(200, {"type": "object"})}


# ----------------------------------------------------------------------- credentials

def _credential(kw: dict[str, Any]) -> str:
    return str(kw["kind"].collection)


def _list_credentials(kw: dict[str, Any]) -> Schema:
    title = CREDENTIAL_TITLES[_credential(kw)]
    params = [*_page(False), _query("tags", {"type": "string", "pattern": _TAG_FILTER})]
    return {"summary": f"List {title} credentials", "parameters": params,
            "responses": {**_ok(200, _list_schema(_ref(title)), "a page"), **_errors(400, 404)}}


def _create_credential(kw: dict[str, Any]) -> Schema:
    title = CREDENTIAL_TITLES[_credential(kw)]
    return {"summary": f"Create a {title} credential of the consumer",
            "requestBody": _body(_ref(f"{title}Create"), required=True),
            "responses": {**_ok(201, _ref(title), "created"), **_errors(*_WRITE_ERRORS)}}


def _get_credential(kw: dict[str, Any]) -> Schema:
    title = CREDENTIAL_TITLES[_credential(kw)]
    return {"summary": f"Get a {title} credential (by id or by its key field)",
            "responses": {**_ok(200, _ref(title)), **_errors(404)}}


def _update_credential(kw: dict[str, Any]) -> Schema:
    title = CREDENTIAL_TITLES[_credential(kw)]
    merge = kw.get("merge")
    summary = (f"Update a {title} credential (merged into the stored one)" if merge else
               f"Create or replace a {title} credential (by id, or by its key field)")
    body = f"{title}Update" if merge else f"{title}Replace"
    return {"summary": summary, "requestBody": _body(_ref(body), required=not merge),
            "responses": {**_ok(200, _ref(title)), **_errors(*_WRITE_ERRORS)}}


def _delete_credential(kw: dict[str, Any]) -> Schema:
    title = CREDENTIAL_TITLES[_credential(kw)]
    return {"summary": f"Delete a {title} credential",
            "responses": {**_ok(204, None, "deleted"), **_errors(404, 503)}}


def _credential_consumer(kw: dict[str, Any]) -> Schema:
    return {"summary": "The credential's consumer",
            "responses": {**_ok(200, _ref("Consumer")), **_errors(404)}}


def _enabled_plugins(kw: dict[str, Any]) -> Schema:
    return {"summary": "The plugins this node runs", "responses": _ok(200, {
        "type": "object", "required": ["enabled_plugins"],
        "properties": {"enabled_plugins": {"type": "array", "items": {"type": "string"}}}})}


_CACHED: Schema = {"type": "object", "required": ["status", "headers", "body", "timestamp"],
                   "properties": {
                       "status": {"type": "integer"}, "headers": {"type": "object"},
                       "body": {"type": "string"}, "body_len": {"type": "integer"},
                       "timestamp": {"type": "integer"}, "ttl": {"type": "number"},
                       "version": {"type": "integer"}}}


def _flush_caches(kw: dict[str, Any]) -> Schema:
    return {"summary": "proxy-cache: empty every worker's cache",
            "responses": _ok(204, None, "emptied")}


def _get_cached(kw: dict[str, Any]) -> Schema:
    return {"summary": "proxy-cache: the stored response of a cache key (X-Cache-Key)",
            "responses": {**_ok(200, _CACHED), **_errors(404)}}


def _purge_cached(kw: dict[str, Any]) -> Schema:
    return {"summary": "proxy-cache: purge a cache key from every worker's cache",
            "responses": {**_ok(204, None, "purged"), **_errors(404)}}


# Handler (module and qualified name) -> describer: bound methods of the API, partials and
# closures are found alike, and a new handler without a description is an error.
_ADMIN = "fastgw.controlplane.admin."
_OPERATIONS: dict[str, Describe] = {
    **{_ADMIN + "crud." + name: d for name, d in {
        "list_entities": _list, "post_entity": _post, "get_entity": _get, "put_entity": _put,
        "patch_entity": _patch, "delete_entity": _delete, "get_parent": _get_parent,
        "put_parent": _put_parent, "patch_parent": _patch_parent,
        "delete_parent": _delete_parent}.items()},
    _ADMIN + "health.get_health": _health,
    _ADMIN + "api._health": _set_health,
    _ADMIN + "api._enabled_plugins": _enabled_plugins,
    _ADMIN + "proxy_cache.flush_caches": _flush_caches,
    _ADMIN + "proxy_cache.get_cached": _get_cached,
    _ADMIN + "proxy_cache.purge_cached": _purge_cached,
    **{_ADMIN + "schemas." + name: d for name, d in {
        "get_schema": _get_schema, "validate_schema": _validate_schema,
        "validate_plugin": lambda kw: _validate_schema({"kind": "plugins"}),
        "get_plugin_schema": _get_plugin_schema}.items()},
    _ADMIN + "meta.list_tags": _tags, _ADMIN + "meta.list_tag": _tags,
    **{_ADMIN + "workspaces." + name: d for name, d in {
        "list_workspaces": _list_workspaces, "post_workspace": _post_workspace,
        "get_workspace": _get_workspace, "patch_workspace": _patch_workspace,
        "put_workspace": _put_workspace, "delete_workspace": _delete_workspace}.items()},
    **{_ADMIN + "credentials." + name: d for name, d in {
        "_list": _list_credentials, "_create": _create_credential, "_get": _get_credential,
        "_update": _update_credential, "_delete": _delete_credential,
        "_get_consumer": _credential_consumer}.items()},
    **{_ADMIN + "api.AdminAPI." + name: d for name, d in {
        "_root": _root, "_endpoints": _endpoints, "_status": _status,
        "_get_config": _get_config, "_post_config": _post_config,
        "_reload_config": _reload_config, "_openapi": _openapi}.items()},
    "fastgw.controlplane.exporter.MetricsHub.install.<locals>.admin_metrics": _metrics,
}


def _describe(handler: Any) -> tuple[Describe, dict[str, Any]]:
    keywords: dict[str, Any] = {}
    fn = handler
    while isinstance(fn, functools.partial):
        keywords = {**fn.keywords, **keywords}
        fn = fn.func
    fn = getattr(fn, "__func__", fn)
    name = f"{fn.__module__}.{fn.__qualname__}"
    describe = _OPERATIONS.get(name)
    if describe is None:
        raise LookupError(f"no OpenAPI description for handler {name}")
    return describe, keywords


# ----------------------------------------------------------------------- paths

def _path_param(name: str, *, method: str = "") -> Schema:
    if name in SCHEMAS:
        schema = J.key_schema(name)
    elif name == "workspaces":
        schema = {"type": "string", "minLength": 1}
        if method == "put":  # an id, or the name of the workspace to create or replace
            schema = {"anyOf": [J.VALUE_PATTERNS[J.uuid_error_check()], _workspace_name()]}
        if method == "delete":  # the default workspace cannot be deleted (by name or id)
            schema["not"] = {"enum": ["default", default_workspace().id]}
    else:
        schema = {"type": "string", "minLength": 1}
    return {"name": name, "in": "path", "required": True, "schema": schema}


# Template segments the router resolves against a fixed set: documented per value, so
# that each value's body is stated exactly (/schemas/routes/validate takes a route).
def _expansions(pattern: tuple[str, ...]) -> list[tuple[tuple[str, ...], dict[str, Any]]]:
    if pattern[:2] == ("schemas", "{entity}"):
        kinds = list(SCHEMAS) + (["workspaces"] if len(pattern) == 2 else [])
        return [(("schemas", k, *pattern[2:]), {"kind": k}) for k in kinds]
    return [(pattern, {})]


def documented_operations(routes: Iterable[Route]) -> dict[str, dict[str, tuple[Describe,
                                                                                 dict[str, Any]]]]:
    """``{path: {method: (describer, keywords)}}`` for every routed path and method,
    in routing order (the first route that matches a path wins, as in the router)."""
    out: dict[str, dict[str, tuple[Describe, dict[str, Any]]]] = {}
    for pattern, methods in routes:
        for concrete, extra in _expansions(pattern):
            path = endpoint_path(concrete)
            if path in out and concrete != pattern:
                continue  # a literal route said it first (/schemas/plugins/validate)
            item = out.setdefault(path, {})
            for method, handler in methods.items():
                describe, kw = _describe(handler)
                item.setdefault(method.lower(), (describe, {**kw, **extra}))
    return out


def _operation(path: str, method: str, describe: Describe, kw: dict[str, Any],
               secured: bool) -> Schema:
    op = describe(kw)
    names = [seg[1:-1] for seg in path.split("/") if seg.startswith("{")]
    op["parameters"] = [_path_param(n, method=method) for n in names] + op.get("parameters", [])
    if any(n in SCHEMAS for n in names):  # a key that is neither an id nor a valid name
        op["responses"].setdefault("400", _errors(400)["400"])
    if secured:
        op["responses"]["401"] = _errors(401)["401"]
    op["tags"] = [path.split("/")[1] or "node"]
    op["operationId"] = f"{method}{path}"
    if secured:
        op["security"] = [{"kongAdminToken": []}, {"fastgwAdminToken": []}]
    return op


def _head(get: Schema) -> Schema:
    responses = {code: {"description": r["description"]} for code, r in get["responses"].items()}
    return {**get, "summary": f"{get.get('summary', '')} (headers only)",
            "operationId": "head" + get["operationId"][3:], "responses": responses}


def _options(path: str, names: list[str]) -> Schema:
    return {"summary": "CORS preflight: the methods of this path in Allow", "tags": ["cors"],
            "operationId": f"options{path}", "security": [],
            # Answered before routing looks anything up: any value.
            "parameters": [{"name": n, "in": "path", "required": True,
                            "schema": {"type": "string", "minLength": 1}} for n in names],
            "responses": {"204": {"description": "the methods (Allow, "
                                                 "Access-Control-Allow-Methods)"}}}


def _body_required(op: Schema, schemas: dict[str, Schema]) -> None:
    """A body is required unless an empty one is valid: a PUT by name of an entity whose
    other fields all have defaults, a key-auth credential (its key is generated)."""
    body = op.get("requestBody")
    if not body or not body["required"]:
        return
    schema = body["content"]["application/json"]["schema"]
    if "$ref" in schema:
        schema = schemas[schema["$ref"].rsplit("/", 1)[1]]
    body["required"] = bool(schema.get("required") or schema.get("allOf"))


def build_openapi(routes: Iterable[Route], *, secured: bool = False,
                  plugins: Collection[str] = ()) -> dict[str, Any]:
    """The document of ``routes`` (the API's routing table); ``plugins``: the node's
    enabled plugins (the names a plugin entity may have)."""
    paths: dict[str, Any] = {}
    for path, methods in documented_operations(routes).items():
        item = {m: _operation(path, m, d, kw, secured) for m, (d, kw) in methods.items()}
        if "get" in item:
            item["head"] = _head(item["get"])
        item["options"] = _options(path, [s[1:-1] for s in path.split("/") if s.startswith("{")])
        paths[path] = item
    schemas: dict[str, Any] = {"Error": _ERROR}
    for kind, title in TITLES.items():
        schemas[title] = J.entity_response(kind)
        schemas[f"{title}Create"] = J.entity_request(kind, create=True, plugins=plugins)
        schemas[f"{title}Valid"] = J.entity_request(kind, create=True, validate=True,
                                                    plugins=plugins)
        schemas[f"{title}Replace"] = J.entity_request(kind, create=True, endpoint_key_in_url=True,
                                                      plugins=plugins)
        schemas[f"{title}Update"] = J.entity_request(kind, create=False, plugins=plugins)
        schemas[f"{title}List"] = _list_schema(_ref(title))
    consumer_scoped = [p for p in plugins if p not in J.CONSUMERLESS_PLUGINS]
    schemas[f"PluginCreate{_FOR_CONSUMER}"] = J.entity_request(
        "plugins", create=True, plugins=consumer_scoped)
    schemas[f"PluginReplace{_FOR_CONSUMER}"] = J.entity_request(
        "plugins", create=True, endpoint_key_in_url=True, plugins=consumer_scoped)
    schemas[f"PluginUpdate{_FOR_CONSUMER}"] = J.entity_request(
        "plugins", create=False, plugins=consumer_scoped)
    for collection, title in CREDENTIAL_TITLES.items():
        schemas[title] = J.credential_response(collection)
        schemas[f"{title}Create"] = J.credential_request(collection, create=True)
        schemas[f"{title}Replace"] = J.credential_request(collection, create=True,
                                                          key_in_url=True)
        schemas[f"{title}Update"] = J.credential_request(collection, create=False)
        schemas[f"{title}List"] = _list_schema(_ref(title))
    schemas["Workspace"] = {"type": "object", "required": ["id", "name"], "properties": {
        "id": {"type": "string"}, "name": {"type": "string"},
        "comment": {"type": ["string", "null"]}, "meta": {"type": "object"},
        "config": {"type": "object"}, "created_at": {"type": "integer"},
        "updated_at": {"type": "integer"}}}
    schemas["Health"] = {"type": "object", "required": ["data", "node_id"], "properties": {
        "data": {"type": ["array", "object"]}, "next": {"type": ["string", "null"]},
        "node_id": {"type": "string"}}}
    for item in paths.values():
        for op in item.values():
            _body_required(op, schemas)
    security = {name.replace("-", "").replace("AdminToken", "") .lower() + "AdminToken": {
        "type": "apiKey", "in": "header", "name": name} for name in _TOKEN_HEADERS}
    return {
        "openapi": "3.1.0",
        "info": {"title": "fastgw Admin API (Kong-compatible)", "version": __version__,
                 "description": __doc__.split("\n\n", 1)[1] if __doc__ else ""},
        "paths": paths,
        "components": {"schemas": schemas, "securitySchemes": security},
    }
