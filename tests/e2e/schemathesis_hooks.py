"""Schemathesis hooks for the Admin API run (``SCHEMATHESIS_HOOKS=tests.e2e.schemathesis_hooks``).

``kong_positive_data_acceptance`` is schemathesis' ``positive_data_acceptance`` (a request
the document calls valid must not be refused), but for Kong's refusals that depend on
what is stored or on rules JSON Schema cannot state. Kong answers those with 400, where
the stock check only lets 404/409 through; they are listed here one by one (each is also
named in fastgw.controlplane.admin.openapi's docstring), so any other refusal of a
documented-valid request still fails the run.
"""

from __future__ import annotations

import json
import re
from typing import Any

import requests
import schemathesis
from schemathesis.specs.openapi.checks import positive_data_acceptance

from fastgw.config.credentials import CREDENTIAL_KINDS
from fastgw.controlplane.admin.json_schema import KEY_FIELDS

# Kong error codes (kong/db/errors.lua) that depend on the stored entities, not on the
# request: a foreign key to nothing (4), an id already taken (3), a page cursor this
# node did not hand out (7), an entity still referenced (19), and a declarative document
# whose entities disagree with each other (14: names unique, references by name).
STATE_CODES = frozenset({3, 4, 7, 14, 19})
# Schema-violation messages of rules JSON Schema cannot state (two values compared, a
# PEM parsed or matched against its key, a stored entity's identity).
UNSTATABLE = (
    "invalid certificate", "invalid key", "certificate does not match key",
    "alternative certificate does not match key", "certificate and alternative certificate",
    "certificate does not appear to be a CA", "please submit only one certificate",
    "certificate expired", "values of these fields must be distinct",
    "already associated with existing certificate",
    "the default workspace cannot be", "entities); delete them first or use ?cascade=true",
    # A plugin's own entity checks (fastgw.config.plugins.PLUGIN_CHECKS), written as code.
    "'config.",
)


def _pairs(fields: Any, path: str = "") -> list[tuple[str, str]]:
    if isinstance(fields, str):
        return [(path, fields)]
    if isinstance(fields, list):
        return [p for f in fields for p in _pairs(f, path)]
    if isinstance(fields, dict):
        return [p for k, f in fields.items() for p in _pairs(f, f"{path}.{k}" if path else k)]
    return []


def _unstatable(field: str, message: str) -> bool:
    if any(message.startswith(u) or u in message for u in UNSTATABLE):
        return True
    # A field a plugin's entity check requires given another one's value ("config.hash").
    return field.startswith("config.") and message == "required field missing"


def _messages(fields: Any) -> list[str]:
    if isinstance(fields, str):
        return [fields]
    if isinstance(fields, list):
        return [m for f in fields for m in _messages(f)]
    if isinstance(fields, dict):
        return [m for f in fields.values() for m in _messages(f)]
    return []


_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
# PUT /{kind}/{key}: a key that is a name is the body's name field (Kong's upsert_by_*),
# so the body may leave it out; with an id as key, the body must have it. A rule between
# the path and the body, which OpenAPI cannot state: the document describes the former.
_KEY_MISSING = ("required field missing",
                "at least one of these fields must be non-empty: 'custom_id', 'username'")


def _key_in_body_missing(case: Any, body: dict[str, Any]) -> bool:
    keys = list((case.path_parameters or {}).values())
    if case.method.upper() != "PUT" or not keys or not _UUID.fullmatch(str(keys[-1])):
        return False
    fields = body.get("fields") or {}
    return bool(fields) and set(fields) <= _KEY_FIELDS and \
        all(m in _KEY_MISSING for m in _messages(fields))


# The fields a URL key may stand for: entities' (name, target...) and credentials' (key,
# username, group).
_KEY_FIELDS = {*KEY_FIELDS.values(), *(k.endpoint_key for k in CREDENTIAL_KINDS.values()),
               "@entity"}
_CONDITIONAL = ("value must be null", "required field missing", "expected one of")


def _merged_entity_rule(case: Any, body: dict[str, Any]) -> bool:
    """PATCH merges the body into the stored entity, then Kong's entity rules (@entity,
    with the conditional fields they name) judge the result: whether a PATCH body passes
    depends on what is stored."""
    pairs = _pairs(body.get("fields"))
    return case.method.upper() == "PATCH" and any(f == "@entity" for f, _ in pairs) and \
        all(f == "@entity" or m.startswith(_CONDITIONAL) for f, m in pairs)


def excused(status: int, body: Any) -> bool:
    """Whether a refusal is one of Kong's state-dependent or unstatable ones."""
    if status == 412:  # If-Match names another version: a precondition on stored state
        return True
    if status != 400 or not isinstance(body, dict):
        return False
    if body.get("code") in STATE_CODES:
        return True
    pairs = _pairs(body.get("fields")) or [("", str(body.get("message", "")))]
    return all(_unstatable(f, m) for f, m in pairs)


def _body(response: Any) -> Any:
    content = response.content
    if response.request.method == "HEAD" and response.status_code == 400:
        # HEAD answers GET's status without its body: ask GET for the reason.
        request = response.request
        content = requests.get(request.url, headers=dict(request.headers), timeout=10).content
    try:
        return json.loads(content or b"null")
    except ValueError:
        return None


@schemathesis.check
def kong_positive_data_acceptance(ctx: Any, response: Any, case: Any) -> bool | None:
    body = _body(response)
    if excused(response.status_code, body) or (
            response.status_code == 400 and isinstance(body, dict)
            and (_key_in_body_missing(case, body) or _merged_entity_rule(case, body))):
        return None
    return positive_data_acceptance(ctx, response, case)
