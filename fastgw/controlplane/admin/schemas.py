"""The ``/schemas`` family, generated from the schema tables that validate writes.

- ``GET /schemas/{entity}``: the entity's document (``fastgw.config.schema_doc``);
- ``POST /schemas/{entity}/validate``: the body checked exactly as a create would check it
  (fields and entity rules; existence of foreign keys and uniqueness are the write's job,
  as in Kong): 200 ``{"message": "schema validation successful"}`` or Kong's 400 body;
- ``GET /schemas/plugins/{name}``: the config schema of a plugin the node runs;
- ``POST /schemas/plugins/validate``: a plugin entity checked as ``POST /plugins`` would.

Forms (Kong Manager's, the portal's) render from these, so they ask for what validation
accepts. The plugin documents come from ``fastgw.config.plugins.PLUGINS``: a plugin
added there is served here with nothing else to change.
"""

from __future__ import annotations

from typing import Any, Mapping

from fastgw.config import ConfigError, build_entity
from fastgw.config.declarative import enabled_plugins
from fastgw.config.plugins import PLUGINS
from fastgw.config.schema import Field
from fastgw.config.schema_doc import field_document, record_document
from fastgw.config.validate import PLUGIN, SCHEMAS
from fastgw.config.workspaces import WORKSPACE_SCHEMA
from fastgw.controlplane.admin import crud
from fastgw.controlplane.admin import entities as E
from fastgw.controlplane.admin.forms import parse_body
from fastgw.controlplane.admin.http import Response, json_response

__all__ = ["SCHEMA_ROUTES", "entity_document", "plugin_document"]

_VALID = {"message": "schema validation successful"}


def _entity_tables() -> dict[str, Mapping[str, Field]]:
    return {**SCHEMAS, "workspaces": WORKSPACE_SCHEMA}


def entity_document(kind: str) -> dict[str, Any] | None:
    """Kong's document for a collection, or None when there is no such entity."""
    fields = _entity_tables().get(kind)
    if fields is None:
        return None
    spec = E.KINDS.get(kind)
    references = dict(spec.foreign) if spec else {}
    unique = spec.unique if spec else ("name",)
    return record_document(fields, references=references, unique=unique)


def plugin_document(name: str) -> dict[str, Any] | None:
    """A plugin's schema as Kong serves it: its scope fields and its ``config`` record."""
    spec = PLUGINS.get(name)
    if spec is None:
        return None
    consumer = field_document(PLUGIN["consumer"], reference="consumers")
    if spec.no_consumer:  # an auth plugin identifies consumers: it cannot apply to one
        consumer["eq"] = None
    config_doc = field_document(Field("record", required=True, fields=spec.fields))
    return {"fields": [{"consumer": consumer},
                       {"protocols": field_document(PLUGIN["protocols"])},
                       {"config": config_doc}]}


def _document(doc: dict[str, Any] | None, what: str, name: str) -> Response:
    if doc is None:
        return json_response(404, {"message": f"No {what} named '{name}'"})
    return json_response(200, doc)


async def get_schema(call: crud.Call) -> Response:
    name = call.params["entity"]
    return _document(entity_document(name), "entity", name)


async def get_plugin_schema(call: crud.Call) -> Response:
    name = call.params["name"]
    if name not in enabled_plugins(call.api.store.state.merged.gateway):
        return _document(None, "plugin", name)  # Kong: only the plugins the node runs
    return _document(plugin_document(name), "plugin", name)


def _validate(kind: str, body: dict[str, Any]) -> Response:
    try:
        build_entity(kind, body)
    except ConfigError as err:
        raise E.schema_error(err) from None
    return json_response(200, _VALID)


async def validate_schema(call: crud.Call) -> Response:
    kind = call.params["entity"]
    if kind not in SCHEMAS:
        return _document(None, "entity", kind)
    return _validate(kind, parse_body(call.req, SCHEMAS[kind]))


async def validate_plugin(call: crud.Call) -> Response:
    return _validate("plugins", parse_body(call.req, SCHEMAS["plugins"]))


# Literal segments first: /schemas/plugins/validate is not the schema of a plugin
# called "validate".
SCHEMA_ROUTES: list[crud.Route] = [
    (("schemas", "plugins", "validate"), {"POST": validate_plugin}),
    (("schemas", "plugins", "{name}"), {"GET": get_plugin_schema}),
    (("schemas", "{entity}", "validate"), {"POST": validate_schema}),
    (("schemas", "{entity}"), {"GET": get_schema}),
]
