"""request-transformer and response-transformer edits (Kong 3.x), pure.

Each section of the config (``headers``, ``querystring``, ``body``) is applied in Kong's
order: ``remove`` (names), ``rename`` (``old:new``), ``replace`` (``name:value``, only
when present), ``add`` (``name:value``, only when absent), ``append`` (``name:value``,
one more value). Header names compare without case. The request's method
(``http_method``), path (``replace.uri``), query string and body (form-urlencoded or a
JSON object; values are strings, as in Kong) change with them.

response-transformer's JSON body edits (`edit_json_body`) follow Kong's
body_transformer.lua, quirks included: remove, rename, replace (only when the key holds a
value other than ``false``), add (only when the key is absent or ``false``), append (the
key becomes an array); values are strings unless ``json_types`` says boolean or number.

The data plane never edits raw bytes with these: header edits come out as a ``FieldEdit``
(names to drop, complete lines to add) that the one upstream-head builder (or the
response head's writer) applies; query and body edits come out as new values.
"""

from __future__ import annotations

import re
from typing import Any, Mapping, Sequence
from urllib.parse import parse_qsl, urlencode

import orjson

__all__ = ["FieldEdit", "edit_pairs", "edit_fields", "edit_query", "edit_body",
           "edit_json_body", "has_json_edits", "is_json_content_type", "split_pairs"]

Pairs = list[tuple[str, Any]]
_ACTIONS = ("remove", "rename", "replace", "add", "append")


def split_pairs(items: Sequence[str]) -> Pairs:
    """``["name:value", ...]`` -> pairs (the value may hold further colons)."""
    out: Pairs = []
    for item in items:
        name, _, value = item.partition(":")
        out.append((name.strip(), value.strip()))
    return out


def edit_pairs(pairs: Pairs, ops: Mapping[str, Any], section: str, *,
               fold_case: bool) -> Pairs:
    """Apply one section's edits (``ops[action][section]``) to ordered (name, value)
    pairs; a name may occur more than once."""
    def same(a: str, b: str) -> bool:
        return a.lower() == b.lower() if fold_case else a == b

    def has(name: str) -> bool:
        return any(same(n, name) for n, _ in pairs)

    for action in _ACTIONS:
        items = (ops.get(action) or {}).get(section) or ()
        if not items:
            continue
        if action == "remove":
            pairs = [(n, v) for n, v in pairs if not any(same(n, r) for r in items)]
            continue
        for name, value in split_pairs(items):
            if action == "rename":
                if has(name):
                    pairs = [(value if same(n, name) else n, v) for n, v in pairs]
            elif action == "replace":
                if has(name):
                    first = next(i for i, (n, _) in enumerate(pairs) if same(n, name))
                    pairs = [p for p in pairs if not same(p[0], name)]
                    pairs.insert(first, (name, value))
            elif action == "add":
                if not has(name):
                    pairs.append((name, value))
            else:  # append
                pairs.append((name, value))
    return pairs


class FieldEdit:
    """Header edits as the head builders take them: lower-case names whose fields are
    dropped, and complete ``Name: value\\r\\n`` lines added after the kept ones."""

    __slots__ = ("drop", "add")

    def __init__(self, drop: frozenset[bytes] | set[bytes], add: list[bytes]) -> None:
        self.drop = drop
        self.add = add

    def by_name(self) -> dict[bytes, bytes]:
        """Lower-case name -> the lines that replace its fields (b"": removed)."""
        out = {name: b"" for name in self.drop}
        for line in self.add:
            lname = line.split(b":", 1)[0].lower()
            out[lname] = out.get(lname, b"") + line
        return out


def edit_fields(fields: Sequence[tuple[bytes, bytes]], ops: Mapping[str, Any],
                section: str = "headers") -> FieldEdit | None:
    """Header edits of ``ops`` over fields (name as sent, value): None when nothing
    changes; else every name whose values changed is dropped and written anew."""
    before = [(n.decode("latin-1"), v.decode("latin-1")) for n, v in fields]
    after = edit_pairs(list(before), ops, section, fold_case=True)
    if after == before:
        return None

    def grouped(pairs: Pairs) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for n, v in pairs:
            out.setdefault(n.lower(), []).append(v)
        return out

    old, new = grouped(before), grouped(after)
    changed = {n for n in set(old) | set(new) if old.get(n) != new.get(n)}
    lines = [f"{n}: {v}\r\n".encode("latin-1") for n, v in after if n.lower() in changed]
    return FieldEdit({n.encode("latin-1") for n in changed}, lines)


def edit_query(query: bytes, ops: Mapping[str, Any]) -> bytes | None:
    """The new query string (with its "?", or b"" for none), or None when unchanged."""
    raw = query[1:].decode("latin-1") if len(query) > 1 else ""
    before = parse_qsl(raw, keep_blank_values=True)
    after = edit_pairs(list(before), ops, "querystring", fold_case=False)
    if after == before:
        return None
    return b"?" + urlencode(after).encode("latin-1") if after else b""


def edit_body(content_type: bytes | None, body: bytes, ops: Mapping[str, Any]) -> bytes | None:
    """The new body of a form-urlencoded or JSON-object request, or None when unchanged
    (other types are left alone, as Kong leaves them)."""
    if not any((ops.get(a) or {}).get("body") for a in _ACTIONS):
        return None
    kind = (content_type or b"").split(b";", 1)[0].strip().lower()
    if kind == b"application/x-www-form-urlencoded":
        try:
            before = parse_qsl(body.decode("utf-8"), keep_blank_values=True)
        except UnicodeDecodeError:
            return None
        after = edit_pairs(list(before), ops, "body", fold_case=False)
        return None if after == before else urlencode(after).encode("utf-8")
    if kind == b"application/json" or kind.endswith(b"+json"):
        try:
            data = orjson.loads(body) if body.strip() else {}
        except orjson.JSONDecodeError:
            return None
        if not isinstance(data, dict):
            return None
        pairs: list[tuple[str, Any]] = list(data.items())
        edited = edit_pairs(pairs, ops, "body", fold_case=False)
        out: dict[str, Any] = {}
        for k, v in edited:
            if k in out and any(a == "append" for a in ops) and isinstance(v, str):
                prev = out[k]
                out[k] = (prev if isinstance(prev, list) else [prev]) + [v]
            else:
                out[k] = v
        return None if out == data else orjson.dumps(out)
    return None


# --------------------------------------------------------------------------- JSON response bodies

# Lua's tonumber on the decimal and hexadecimal spellings a config value may use.
_DECIMAL = re.compile(r"\s*[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?\s*")
_HEX = re.compile(r"\s*[+-]?0[xX][0-9a-fA-F]+\s*")


def has_json_edits(ops: Mapping[str, Any]) -> bool:
    """Kong's is_body_transform_set: some action edits the JSON body."""
    return any((ops.get(a) or {}).get("json") for a in _ACTIONS)


def is_json_content_type(value: bytes | None) -> bool:
    """Kong's is_json_body: "application/json" anywhere in the Content-Type."""
    return value is not None and b"application/json" in value.lower()


def _json_pairs(items: Sequence[str]) -> list[tuple[str, str | None]]:
    """Kong's iter (``^([^:]+):*(.-)$``): the name up to the first colon, the value after
    every colon that follows it; an empty value is nil."""
    out: list[tuple[str, str | None]] = []
    for item in items:
        name, _, rest = item.partition(":")
        value = rest.lstrip(":")
        out.append((name, value or None))
    return out


def _number(text: str) -> int | float | None:
    if _HEX.fullmatch(text):
        return int(text.strip(), 16)
    if not _DECIMAL.fullmatch(text):
        return None
    number = float(text)
    return int(number) if number.is_integer() and abs(number) < 2 ** 53 else number


def _json_value(value: str | None, json_type: str | None) -> Any:
    """Kong's json_value: the value as cjson spells it inside a string (quotes and
    slashes unescaped again; nil is "null"), cast to ``json_type``; None: no value."""
    if value is None:
        text = "null"
    else:
        text = orjson.dumps(value).decode()[1:-1].replace('\\"', '"')
    if json_type == "number":
        return _number(text)
    if json_type == "boolean":
        return text == "true"
    return text


def _append(current: Any, value: Any) -> list[Any]:
    if isinstance(current, str):
        return [current, value]
    if isinstance(current, list):
        return current + [value]
    return [value]


def edit_json_body(ops: Mapping[str, Any], body: bytes) -> bytes | None:
    """The response body with ``ops``' JSON edits applied, or None when it is left as it
    is: not valid JSON (Kong logs and passes it), or not an object (fastgw's choice: Kong
    re-encodes an array unchanged and fails on a scalar)."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(data, dict):
        return None

    def section(action: str, part: str) -> Sequence[Any]:
        return (ops.get(action) or {}).get(part) or ()

    for name, _ in _json_pairs(section("remove", "json")):
        data.pop(name, None)
    for old, new in _json_pairs(section("rename", "json")):
        if old in data and new is not None:
            value = data.pop(old)
            data[new] = value
            if old == new:
                del data[new]  # Kong sets the new name, then clears the old one: gone
    for action in ("replace", "add", "append"):
        types = section(action, "json_types")
        for i, (name, raw) in enumerate(_json_pairs(section(action, "json"))):
            value = _json_value(raw, types[i] if i < len(types) else None)
            if value is None:
                continue
            present = name in data and data[name] is not False  # Lua: false is falsy
            if action == "replace":
                if present:
                    data[name] = value
            elif action == "add":
                if not present:
                    data[name] = value
            else:
                data[name] = _append(data.get(name), value)
    return orjson.dumps(data)
