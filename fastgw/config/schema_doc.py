"""Kong's JSON schema documents (``GET /schemas/...``), generated from the ``Field`` tables
that validate every write (pure, no I/O). One source of truth: the document is never
written by hand, so a form rendered from it asks for exactly what validation accepts.

Shape (Kong's ``api_helpers.schema_to_jsonable``): ``{"fields": [{name: attributes}, ...]}``
in declaration order, each attribute as Kong names it: ``type``, ``required``,
``default``, ``one_of``, ``between``, ``len_min``, ``elements``, ``keys``, ``values``,
``fields`` (records), ``reference`` (foreign keys), ``uuid``, ``auto``, ``timestamp``,
``unique``. Checks written as code (a validator function, the entity-level rules) have
no JSON form; Kong drops its functions the same way. ``POST /schemas/{entity}/validate``
runs them all.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

from fastgw.config import model as _m
from fastgw.config.schema import MISSING, Field, copy_default

__all__ = ["field_document", "record_document"]

_AUTO = frozenset({"id", "created_at", "updated_at"})
_TIMESTAMPS = frozenset({"created_at", "updated_at"})


def field_document(spec: Field, *, reference: str | None = None) -> dict[str, Any]:
    """One field's attributes; ``reference``: the collection a foreign key points to."""
    out: dict[str, Any] = {"type": spec.type}
    if spec.validator is _m.uuid_error:
        out["uuid"] = True
    if spec.required:
        out["required"] = True
    if spec.default is not MISSING and spec.default is not None:
        out["default"] = copy_default(spec.default)
    if spec.one_of is not None:
        out["one_of"] = list(spec.one_of)
    if spec.between is not None:
        out["between"] = [_number(x) for x in spec.between]
    if spec.gt is not None:
        out["gt"] = _number(spec.gt)
    if spec.len_min is not None:
        out["len_min"] = spec.len_min
    if spec.elements is not None:
        out["elements"] = field_document(spec.elements)
    if spec.keys is not None:
        out["keys"] = field_document(spec.keys)
    if spec.values is not None:
        out["values"] = field_document(spec.values)
    if spec.fields is not None:
        out["fields"] = [{k: field_document(f)} for k, f in spec.fields.items()]
    if reference is not None:
        out["reference"] = reference
    return out


def record_document(fields: Mapping[str, Field], *, references: Mapping[str, str] = {},
                    unique: Iterable[str] = ()) -> dict[str, Any]:
    """An entity's document: its fields with Kong's markers for generated and unique ones."""
    unique_set = frozenset(unique)
    out = []
    for name, spec in fields.items():
        doc = field_document(spec, reference=references.get(name))
        if name in _AUTO:
            doc["auto"] = True
        if name in _TIMESTAMPS:
            doc["timestamp"] = True
        if name in unique_set:
            doc["unique"] = True
        out.append({name: doc})
    return {"fields": out}


def _number(x: float) -> float | int:
    return int(x) if float(x).is_integer() else x
