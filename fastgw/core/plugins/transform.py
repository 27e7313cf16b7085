"""request-transformer and response-transformer edits (Kong 3.x), pure.

Each section of the config (``headers``, ``querystring``, ``body``) is applied in Kong's
order: ``remove`` (names), ``rename`` (``old:new``), ``replace`` (``name:value``, only
when present), ``add`` (``name:value``, only when absent), ``append`` (``name:value``,
one more value). Header names compare without case. The request's method
(``http_method``), path (``replace.uri``), query string and body (form-urlencoded or a
JSON object; values are strings, as in Kong) change with them.

The data plane never edits raw bytes with these: header edits come out as a ``FieldEdit``
(names to drop, complete lines to add) that the one upstream-head builder (or the
response head's writer) applies; query and body edits come out as new values.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence
from urllib.parse import parse_qsl, urlencode

import orjson

__all__ = ["FieldEdit", "edit_pairs", "edit_fields", "edit_query", "edit_body",
           "split_pairs"]

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
