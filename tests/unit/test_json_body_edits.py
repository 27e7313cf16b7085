"""response-transformer's JSON body edits (core.plugins.transform.edit_json_body), table-driven:
Kong's body_transformer_spec.lua cases and the quirks of body_transformer.lua."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from fastgw.core.plugins.transform import edit_json_body, has_json_edits, is_json_content_type


def conf(**actions: dict[str, list[str]]) -> dict[str, Any]:
    out: dict[str, Any] = {a: {"json": [], "json_types": [], "headers": []}
                           for a in ("remove", "rename", "replace", "add", "append")}
    for action, parts in actions.items():
        out[action].update(parts)
    return out


CASES = [
    # Kong's spec: add
    ("add", conf(add={"json": ["p1:v1", "p3:value:3", 'p4:"v1"']}), {"p2": "v1"},
     {"p1": "v1", "p2": "v1", "p3": "value:3", "p4": '"v1"'}),
    ("add keeps an existing value", conf(add={"json": ["p1:v1"]}), {"p1": "old"},
     {"p1": "old"}),
    ("add replaces false (Lua: falsy)", conf(add={"json": ["p1:v1"]}), {"p1": False},
     {"p1": "v1"}),
    ("add keeps null", conf(add={"json": ["p1:v1"]}), {"p1": None}, {"p1": None}),
    ("add typed", conf(add={"json": ["n:1", "f:1.5", "b:true", "c:no", "s:1"],
                            "json_types": ["number", "number", "boolean", "boolean", "string"]}),
     {}, {"n": 1, "f": 1.5, "b": True, "c": False, "s": "1"}),
    ("add a number that is not one: skipped", conf(add={"json": ["n:abc"],
                                                        "json_types": ["number"]}), {}, {}),
    ("add with an empty value: the string null", conf(add={"json": ["e:"]}), {}, {"e": "null"}),
    ("add keeps slashes and quotes, escapes backslashes",
     conf(add={"json": ['u:http://a/b', 'q:say "hi"', 'w:a\\b']}), {},
     {"u": "http://a/b", "q": 'say "hi"', "w": "a\\\\b"}),
    # append
    ("append makes arrays", conf(append={"json": ["p1:v1", "p3:v3"]}), {"p1": "v2", "p2": 1},
     {"p1": ["v2", "v1"], "p2": 1, "p3": ["v3"]}),
    ("append twice", conf(append={"json": ["p1:a", "p1:b"]}), {}, {"p1": ["a", "b"]}),
    ("append to an array", conf(append={"json": ["p1:b"]}), {"p1": ["a"]}, {"p1": ["a", "b"]}),
    ("append to a number replaces it", conf(append={"json": ["p1:b"]}), {"p1": 3},
     {"p1": ["b"]}),
    ("append typed", conf(append={"json": ["p1:2"], "json_types": ["number"]}), {"p1": "1"},
     {"p1": ["1", 2]}),
    # remove
    ("remove", conf(remove={"json": ["p1", "p2"]}), {"p1": 1, "p2": 2, "p3": 3}, {"p3": 3}),
    ("remove absent", conf(remove={"json": ["p9"]}), {"p1": 1}, {"p1": 1}),
    # rename
    ("rename", conf(rename={"json": ["p1:k1", "p2:k2", "p9:k9"]}), {"p1": "v1", "p2": None},
     {"k1": "v1", "k2": None}),
    ("rename to itself removes it (Kong)", conf(rename={"json": ["p1:p1"]}), {"p1": 1}, {}),
    ("rename without a new name", conf(rename={"json": ["p1:"]}), {"p1": 1}, {"p1": 1}),
    # replace
    ("replace only present keys", conf(replace={"json": ["p1:v2", "p9:v9"]}), {"p1": "v1"},
     {"p1": "v2"}),
    ("replace keeps false (Lua: falsy)", conf(replace={"json": ["p1:v2"]}), {"p1": False},
     {"p1": False}),
    ("replace typed", conf(replace={"json": ["p1:true"], "json_types": ["boolean"]}),
     {"p1": "x"}, {"p1": True}),
    # Kong's order: remove, rename, replace, add, append
    ("order", conf(remove={"json": ["a"]}, rename={"json": ["b:a"]},
                   replace={"json": ["a:replaced"]}, add={"json": ["a:added", "c:added"]},
                   append={"json": ["c:more"]}),
     {"a": 1, "b": 2}, {"a": "replaced", "c": ["added", "more"]}),
]


@pytest.mark.parametrize("ops,before,after", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_edit_json_body(ops: dict[str, Any], before: dict[str, Any],
                        after: dict[str, Any]) -> None:
    edited = edit_json_body(ops, orjson.dumps(before))
    assert edited is not None and orjson.loads(edited) == after


@pytest.mark.parametrize("body", [b"", b"not json", b'{"a":', b"[1,2]", b'"text"', b"3"])
def test_bodies_left_as_they_are(body: bytes) -> None:
    """Invalid JSON passes unchanged (Kong); so does JSON that is not an object."""
    assert edit_json_body(conf(add={"json": ["a:b"]}), body) is None


@pytest.mark.parametrize("value,json", [
    (b"application/json", True), (b"Application/JSON; charset=utf-8", True),
    (b"application/json-patch+json", True), (b"application/problem+json", False),
    (b"text/plain", False), (None, False),
])
def test_is_json_content_type(value: bytes | None, json: bool) -> None:
    assert is_json_content_type(value) is json


def test_has_json_edits() -> None:
    assert not has_json_edits(conf())
    assert not has_json_edits(conf(add={"headers": ["a:b"]}))
    assert has_json_edits(conf(remove={"json": ["a"]}))
