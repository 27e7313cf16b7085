"""A tiny schema engine in the shape of Kong's ``kong.db.schema`` (pure, no I/O).

``Field`` mirrors the subset of Kong's schema we need: types, ``required``, defaults,
``between``, ``one_of``, ``len_min`` and custom validators, with Kong's error wording.
``check_record`` / ``check_value`` validate and normalise a document against fields and
collect every error (nothing stops at the first). The entity schemas that use it are in
``validate.py``, plugin config schemas in ``plugins.py``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping

__all__ = ["Errors", "Field", "MISSING", "check_record", "check_value", "copy_default",
           "default_of", "join"]


MISSING: Any = object()
Errors = list[tuple[str, str]]
Validator = Callable[[Any], "str | None"]


def join(path: str, name: str | int) -> str:
    if isinstance(name, int):
        return f"{path}[{name}]"
    return f"{path}.{name}" if path else name


@dataclass(frozen=True, slots=True)
class Field:
    type: str  # string integer number boolean array set map record any
    required: bool = False
    default: Any = MISSING
    between: tuple[float, float] | None = None
    one_of: tuple[Any, ...] | None = None
    elements: "Field | None" = None  # array / set
    keys: "Field | None" = None  # map
    values: "Field | None" = None  # map
    fields: "Mapping[str, Field] | None" = None  # record
    len_min: int | None = None
    validator: Validator | None = None
    gt: float | None = None  # Kong's `gt`: strictly greater than


def _fmt_num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


def copy_default(d: Any) -> Any:
    if isinstance(d, dict):
        return {k: copy_default(v) for k, v in d.items()}
    if isinstance(d, list):
        return [copy_default(v) for v in d]
    return d


def default_of(spec: Field) -> Any:
    if spec.type == "record" and spec.fields is not None and spec.default is MISSING:
        return check_record(spec.fields, {}, "", [])
    return copy_default(spec.default) if spec.default is not MISSING else None


def check_value(spec: Field, value: Any, path: str, errors: Errors) -> Any:
    """Validate and normalize one value; on error append to ``errors`` and return MISSING."""
    if value is None:
        if spec.default is not MISSING or (spec.type == "record" and spec.fields):
            return default_of(spec)
        if spec.required:
            errors.append((path, "required field missing"))
            return MISSING
        return None
    t = spec.type
    if t == "string":
        if not isinstance(value, str):
            errors.append((path, "expected a string"))
            return MISSING
        if len(value) < (spec.len_min if spec.len_min is not None else 1):
            errors.append((path, f"length must be at least {spec.len_min or 1}"))
            return MISSING
    elif t == "integer":
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            errors.append((path, "expected an integer"))
            return MISSING
    elif t == "number":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            errors.append((path, "expected a number"))
            return MISSING
    elif t == "boolean":
        if not isinstance(value, bool):
            errors.append((path, "expected a boolean"))
            return MISSING
    elif t in ("array", "set"):
        if not isinstance(value, (list, tuple)):
            errors.append((path, f"expected {'a set' if t == 'set' else 'an array'}"))
            return MISSING
        if spec.len_min is not None and len(value) < spec.len_min:
            errors.append((path, f"length must be at least {spec.len_min}"))
            return MISSING
        out = []
        ok = True
        for i, v in enumerate(value):
            if v is None:  # a null element is never a value (Kong: JSON null is not a string)
                errors.append((join(path, i), "required field missing"))
                ok = False
                continue
            r = check_value(spec.elements, v, join(path, i), errors) if spec.elements else v
            if r is MISSING:
                ok = False
            elif t == "array" or r not in out:  # sets drop duplicates, keep order
                out.append(r)
        if not ok:
            return MISSING
        value = out
    elif t == "map":
        if not isinstance(value, dict):
            errors.append((path, "expected a map"))
            return MISSING
        out_m: dict[str, Any] = {}
        ok = True
        for k, v in value.items():
            if spec.keys is not None and check_value(spec.keys, k, path, errors) is MISSING:
                ok = False
                continue
            if v is None and spec.values is not None:  # a null value is never a value
                errors.append((join(path, k), "required field missing"))
                ok = False
                continue
            r = check_value(spec.values, v, join(path, k), errors) if spec.values else v
            if r is MISSING:
                ok = False
            else:
                out_m[k] = r
        if not ok:
            return MISSING
        value = out_m
    elif t == "foreign":
        # Admin API sends {"id": ...}; declarative files may also use {"name": ...}
        # or a bare string (name or id), kept as {"key": ...} for the resolver.
        if isinstance(value, str) and value:
            value = {"key": value}
        elif not (isinstance(value, dict) and len(value) == 1 and set(value) <= {"id", "name"}
                  and all(isinstance(x, str) and x for x in value.values())):
            errors.append((path, "expected a record"))
            return MISSING
        else:
            value = dict(value)
    elif t == "record":
        if not isinstance(value, dict):
            errors.append((path, "expected a record"))
            return MISSING
        if spec.fields is None:
            value = copy_default(value)  # free-form (plugin config): never alias input
        else:
            n = len(errors)
            value = check_record(spec.fields, value, path, errors)
            if len(errors) > n:
                return MISSING
    if spec.one_of is not None and value not in spec.one_of:
        errors.append((path, "expected one of: " + ", ".join(str(x) for x in spec.one_of)))
        return MISSING
    if spec.between is not None and not (spec.between[0] <= value <= spec.between[1]):
        lo, hi = spec.between
        errors.append((path, f"value should be between {_fmt_num(lo)} and {_fmt_num(hi)}"))
        return MISSING
    if spec.gt is not None and not value > spec.gt:
        errors.append((path, f"value must be greater than {_fmt_num(spec.gt)}"))
        return MISSING
    if spec.validator is not None:
        msg = spec.validator(value)
        if msg:
            errors.append((path, msg))
            return MISSING
    return value


def check_record(
    schema: Mapping[str, Field],
    data: Mapping[str, Any],
    path: str,
    errors: Errors,
    *,
    ignore: Iterable[str] = (),
) -> dict[str, Any]:
    """Validate a record: unknown fields, required fields, defaults. Invalid fields are
    left out of the result (callers check ``errors``)."""
    skip = set(ignore)
    out: dict[str, Any] = {}
    for k in data:
        if k not in schema and k not in skip:
            errors.append((join(path, k), "unknown field"))
    for name, spec in schema.items():
        raw = data.get(name, MISSING)
        if raw is MISSING:
            if spec.default is not MISSING or (spec.type == "record" and spec.fields):
                out[name] = default_of(spec)
            elif spec.required:
                errors.append((join(path, name), "required field missing"))
            else:
                out[name] = None
            continue
        v = check_value(spec, raw, join(path, name), errors)
        if v is not MISSING:
            out[name] = v
    return out
