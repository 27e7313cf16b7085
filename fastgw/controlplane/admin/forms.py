"""Request bodies as Kong's Admin API takes them: JSON, form-urlencoded and multipart.

Form fields use Kong's key syntax (``kong/api/arguments.lua``): ``paths[]=/a`` appends,
``paths[1]=/a`` sets by (1-based) index, ``service.id=...`` and ``headers.x-region=eu``
nest, and a repeated plain key becomes a list. Form values are strings, so they are
coerced with the entity's schema like Kong does: integers, numbers and booleans parsed,
a single value for an array field wrapped in a list, an empty value meaning null.
JSON bodies are taken as they are (their types are the client's to get right).
"""

from __future__ import annotations

import email.parser
import email.policy
import re
from typing import Any, Mapping
from urllib.parse import parse_qsl

import orjson

from fastgw.controlplane.admin.http import HTTPError, Request
from fastgw.config.validate import Field

__all__ = ["parse_body", "unflatten", "coerce_record", "media_type"]

_TOKEN_RE = re.compile(r"\[(\d*)\]|\.?([^.\[\]]+)")
_BOOLS = {"true": True, "false": False}


def media_type(req: Request) -> str:
    return req.headers.get("content-type", "").split(";", 1)[0].strip().lower()


def _unsupported() -> HTTPError:
    return HTTPError(415, {"message": "Unsupported Content-Type, use application/json, "
                                      "application/x-www-form-urlencoded or multipart/form-data"})


def parse_body(req: Request, schema: Mapping[str, Field] | None = None) -> dict[str, Any]:
    """The body as a dict; raises HTTPError 400 (unparseable) or 415 (unknown type)."""
    body = req.body
    if not body.strip():
        return {}
    mime = media_type(req)
    if mime == "application/json" or mime.endswith("+json") or (not mime and body.lstrip()[:1] == b"{"):
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError:
            raise HTTPError(400, {"message": "Cannot parse JSON body"}) from None
        if not isinstance(data, dict):
            raise HTTPError(400, {"message": "Cannot parse JSON body: expected an object"})
        return data
    if mime == "application/x-www-form-urlencoded":
        try:
            pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True, strict_parsing=False)
        except UnicodeDecodeError:
            raise HTTPError(400, {"message": "Cannot parse form body: invalid UTF-8"}) from None
        return coerce_record(schema, unflatten(pairs))
    if mime == "multipart/form-data":
        return coerce_record(schema, unflatten(_multipart(req)))
    raise _unsupported()


def _multipart(req: Request) -> list[tuple[str, str]]:
    head = f"Content-Type: {req.headers.get('content-type', '')}\r\n\r\n".encode("latin-1")
    msg = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + req.body)
    if not msg.is_multipart():
        raise HTTPError(400, {"message": "Cannot parse multipart body"})
    pairs = []
    for part in msg.iter_parts():  # type: ignore[attr-defined]
        name = part.get_param("name", header="content-disposition")
        if not name:
            continue
        payload = part.get_payload(decode=True) or b""
        try:
            pairs.append((str(name), payload.decode("utf-8")))
        except UnicodeDecodeError:
            raise HTTPError(400, {"message": f"Cannot parse multipart field '{name}'"}) from None
    return pairs


def unflatten(pairs: list[tuple[str, str]]) -> dict[str, Any]:
    """``[("paths[]", "/a"), ("service.id", "x")]`` -> ``{"paths": ["/a"], "service": {"id": "x"}}``."""
    root: dict[str, Any] = {}
    for key, value in pairs:
        tokens: list[str | int | None] = []
        for index, name in _TOKEN_RE.findall(key):
            if name:
                tokens.append(name)
            else:
                tokens.append(int(index) if index else None)  # None = append
        if not tokens or not isinstance(tokens[0], str):
            continue
        _put(root, tokens, value)
    return _lists(root)


class _Indexed(dict):  # type: ignore[type-arg]
    """An array being built from ``a[2]=...`` keys (turned into a list at the end)."""


def _put(cur: Any, tokens: list[str | int | None], value: str) -> None:
    for tok, nxt in zip(tokens, tokens[1:] + ["<end>"]):
        last = nxt == "<end>"
        if tok is None:  # "a[]": append
            if not isinstance(cur, _Indexed):
                return
            tok = max([k for k in cur if isinstance(k, int)], default=0) + 1
        if isinstance(cur, _Indexed) and not isinstance(tok, int):
            return  # shape clash: "a[]=x&a.b=y"; ignore the odd one out
        if last:
            have = cur.get(tok) if isinstance(cur, dict) else None
            if have is None or isinstance(cur, _Indexed):
                cur[tok] = value
            elif isinstance(have, list):
                have.append(value)
            elif isinstance(have, str):
                cur[tok] = [have, value]  # repeated plain key
            return
        child = cur.get(tok)
        want_list = nxt is None or isinstance(nxt, int)
        if not isinstance(child, dict):
            child = _Indexed() if want_list else {}
            cur[tok] = child
        cur = child


def _lists(v: Any) -> Any:
    if isinstance(v, _Indexed):
        return [_lists(v[k]) for k in sorted(v)]
    if isinstance(v, dict):
        return {k: _lists(x) for k, x in v.items()}
    return v


def _coerce(spec: Field | None, v: Any) -> Any:
    if spec is None:
        return v
    if isinstance(v, str) and v == "":
        return None
    t = spec.type
    if t in ("array", "set"):
        items = v if isinstance(v, list) else [v]
        return [_coerce(spec.elements, x) for x in items]
    if t == "map" and isinstance(v, dict):
        return {k: _coerce(spec.values, x) for k, x in v.items()}
    if t == "record" and isinstance(v, dict):
        return coerce_record(spec.fields, v) if spec.fields else v
    if not isinstance(v, str):
        return v
    if t == "integer" and re.fullmatch(r"[+-]?\d+", v.strip()):
        return int(v)
    if t == "number":
        try:
            return float(v) if not re.fullmatch(r"[+-]?\d+", v.strip()) else int(v)
        except ValueError:
            return v
    if t == "boolean" and v.lower() in _BOOLS:
        return _BOOLS[v.lower()]
    if t == "foreign":
        return {"id": v}  # "service=<id>" as a plain field
    return v


def coerce_record(schema: Mapping[str, Field] | None, data: dict[str, Any]) -> dict[str, Any]:
    """Coerce form strings to the schema's types; unknown keys pass through untouched
    (validation reports them)."""
    if schema is None:
        return {k: (None if v == "" else v) for k, v in data.items()}
    out = {k: _coerce(schema.get(k), v) for k, v in data.items()}
    name, config = out.get("name"), out.get("config")
    if "config" in schema and isinstance(name, str) and isinstance(config, dict):
        # A plugin fastgw executes has a typed config: `config.percentage=10` is a number.
        from fastgw.config.plugins import PLUGIN_SCHEMAS

        if name in PLUGIN_SCHEMAS:
            out["config"] = coerce_record(PLUGIN_SCHEMAS[name], config)
    return out
