"""Entity-level differences between two Configs, as JSON, and their application. Pure.

An Admin API write changes one entity (or a few, with cascades) of a config that may hold
tens of thousands. The supervisor sends workers that difference instead of the whole
document, so a worker decodes a handful of entities instead of every one:

    {kind: {"put": [entity dict, ...], "delete": [id, ...],
            "insert": [[id, id before it or null], ...] | "order": [id, ...]}}

for the kinds (``services``, ``routes``, ...) that changed. ``put`` entities replace the
one with the same id in place; ``delete`` removes ids. Order is meaningful (targets are
balanced in order, and the store keeps routes grouped by service, so a new route goes in
the middle), so new entities are placed by ``insert``: each right after the entity named
(null: first), in the order listed. Only when existing entities moved relative to each
other does a delta carry the whole new id sequence (``order``). Entity dicts are
``entity_document``'s (``entity_to_dict``, and a consumer's credentials), decoded by
``build_entity``, which validates each one again: a worker never trusts a frame blindly.

Node settings (the ``gateway`` section) are not part of a delta: ``config_delta`` returns
None when they differ, and the caller sends the whole config.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from fastgw.config.declarative import build_entity, entity_document
from fastgw.config.model import Config
from fastgw.config.validate import ConfigError

__all__ = ["ENTITY_KINDS", "apply_delta", "config_delta", "delta_size"]

ENTITY_KINDS = ("services", "routes", "upstreams", "targets", "consumers", "plugins",
                "certificates", "snis", "ca_certificates")

Delta = dict[str, dict[str, list[Any]]]


def config_delta(old: Config, new: Config) -> Delta | None:
    """What turns ``old`` into ``new`` (empty when they are equal), or None when the node
    settings differ. Unchanged entities are found by identity first (an Admin API write
    keeps every other entity object), then by equality (a reload builds new objects)."""
    if old.gateway != new.gateway:
        return None
    delta: Delta = {}
    for kind in ENTITY_KINDS:
        before: tuple[Any, ...] = getattr(old, kind)
        after: tuple[Any, ...] = getattr(new, kind)
        if before is after:
            continue
        old_by_id = {e.id: e for e in before}
        put = []
        for e in after:
            was = old_by_id.get(e.id)
            if was is not e and was != e:
                put.append(e)
        new_ids = [e.id for e in after]
        present = set(new_ids)
        deleted = [i for i in old_by_id if i not in present]
        change: dict[str, list[Any]] = {}
        if put:
            change["put"] = [entity_document(e) for e in put]
        if deleted:
            change["delete"] = deleted
        survivors = [i for i in old_by_id if i in present]
        if [i for i in new_ids if i in old_by_id] != survivors:
            change["order"] = new_ids  # existing entities moved
        else:
            inserted = [[i, new_ids[n - 1] if n else None]
                        for n, i in enumerate(new_ids) if i not in old_by_id]
            if inserted:
                change["insert"] = inserted
        if change:
            delta[kind] = change
    return delta


def delta_size(delta: Mapping[str, Mapping[str, list[Any]]]) -> int:
    """Entities a delta decodes or lists (what applying it costs, roughly)."""
    return sum(len(c.get("put", ())) + len(c.get("delete", ())) + len(c.get("order", ()))
               for c in delta.values())


def _inserted(ids: list[str], inserts: Any, path: str) -> list[str]:
    """``ids`` with each ``[id, predecessor]`` of ``inserts`` placed right after its
    predecessor (None: first); a predecessor may be an id inserted before it."""
    following: dict[str | None, list[str]] = {}
    for item in inserts:
        if not (isinstance(item, list) and len(item) == 2):
            raise ConfigError([(path, "expected [id, id before it or null] pairs")])
        following.setdefault(item[1], []).append(item[0])
    out: list[str] = []

    def place(first: list[str]) -> None:  # each id, then what follows it (depth first)
        stack = list(reversed(first))
        while stack:
            current = stack.pop()
            out.append(current)
            stack.extend(reversed(following.pop(current, [])))

    place(following.pop(None, []))
    for anchor in ids:
        place([anchor])
    if following:
        unknown = sorted(map(str, following))
        raise ConfigError([(path, f"inserted after unknown entities {unknown}")])
    return out


def apply_delta(old: Config, delta: Any) -> Config:
    """``old`` with ``delta`` applied. Raises ConfigError for a malformed delta or an
    entity that does not validate (the caller keeps ``old``)."""
    if not isinstance(delta, dict):
        raise ConfigError([("", "config delta is not an object")])
    changes: dict[str, Any] = {}  # entity kind -> its new tuple (replace() keywords)
    for kind, change in delta.items():
        if kind not in ENTITY_KINDS or not isinstance(change, dict):
            raise ConfigError([(str(kind), "not an entity collection of a config delta")])
        items = {e.id: e for e in getattr(old, kind)}
        existing = list(items)
        for i, data in enumerate(change.get("put") or ()):
            if not isinstance(data, dict):
                raise ConfigError([(f"{kind}.put[{i}]", "expected an object")])
            entity, _warnings = build_entity(kind, data, path=f"{kind}.put[{i}]")
            items[entity.id] = entity
        for entity_id in change.get("delete") or ():
            items.pop(entity_id, None)
        order = change.get("order")
        if order is None:
            order = _inserted([i for i in existing if i in items], change.get("insert") or (),
                              f"{kind}.insert")
        if not isinstance(order, list) or len(order) != len(items) or set(order) != set(items):
            raise ConfigError([(f"{kind}.order", "does not list exactly the entities")])
        changes[kind] = tuple(items[i] for i in order)
    return replace(old, **changes)
