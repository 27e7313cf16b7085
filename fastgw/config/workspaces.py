"""Workspaces: the entity, its validation, and the rules that keep workspaces from
stepping on each other in the one shared data plane. Pure, no I/O.

Every workspace has its own entities, and names are unique per workspace (Kong EE). But
all workspaces share one proxy listener and one data plane, where two things would be
silently ambiguous, so they are refused with the reason instead:

- **Upstream names.** ``service.host`` is resolved against upstream names; two upstreams
  called ``iris`` in two workspaces would make that lookup pick one arbitrarily.
- **Routes.** Two routes in different workspaces that match the same requests (same kinds
  of criteria, overlapping values in every one of them) would tie in the router and one
  workspace would silently steal the other's traffic. A route that is strictly more
  specific (it has a criterion the other lacks) wins deterministically and is allowed.
- **Ids.** Merged into one snapshot, an entity's id must be unique across workspaces
  among its kind (another kind may use it: Kong has a table per kind).

The default workspace is the top level of config.json; the others live under its
``workspaces`` key (see ``fastgw.controlplane.store``).
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field, replace
from typing import Any, Iterable, Mapping

from fastgw.config.model import Config, Route, name_error
from fastgw.config.validate import ConfigError, Errors, Field, check_record

__all__ = [
    "DEFAULT_WORKSPACE", "RESERVED_NAMES", "Workspace", "build_workspace", "workspace_to_dict",
    "default_workspace", "seed_ids", "route_collision", "cross_workspace_errors", "merge_configs",
    "KINDS",
]

DEFAULT_WORKSPACE = "default"
# Names that are Admin API endpoints: a workspace with one of them would shadow it in
# ``/{workspace}/...`` addressing (Kong EE refuses core entity names the same way).
RESERVED_NAMES = frozenset({
    "services", "routes", "upstreams", "targets", "consumers", "plugins", "workspaces",
    "config", "status", "openapi.json", "health", "schemas", "tags", "certificates", "snis",
    "ca_certificates", "endpoints", "timers", "clustering", "cache", "metrics",
})
_NS = uuid.UUID("0b9f0e34-2f7c-4c55-9b8e-7cbf7d0f3a51")

WORKSPACE_SCHEMA: dict[str, Field] = {
    "id": Field("string"),
    "name": Field("string", required=True, validator=name_error),
    "comment": Field("string"),
    "meta": Field("record", default={}),
    "config": Field("record", default={}),
    "created_at": Field("integer"),
    "updated_at": Field("integer"),
}


@dataclass(frozen=True, slots=True, kw_only=True)
class Workspace:
    id: str
    name: str
    comment: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    created_at: int = 0
    updated_at: int = 0


def default_workspace() -> Workspace:
    # A stable id, so a file without workspace metadata always yields the same one.
    return Workspace(id=str(uuid.uuid5(_NS, DEFAULT_WORKSPACE)), name=DEFAULT_WORKSPACE,
                     created_at=int(time.time()), updated_at=int(time.time()))


def build_workspace(data: Mapping[str, Any], *, existing: Workspace | None = None,
                    path: str = "") -> Workspace:
    """Validate a workspace body (Admin API or file); raises ConfigError (Kong wording)."""
    from fastgw.config.declarative import is_entity_key

    errors: Errors = []
    entity_keys = {k for k in data if is_entity_key(k)}
    out = check_record(WORKSPACE_SCHEMA, data, path, errors, ignore=entity_keys)
    name = out.get("name")
    if isinstance(name, str) and name in RESERVED_NAMES:
        errors.append((f"{path}.name" if path else "name",
                       f"'{name}' is an Admin API endpoint name and cannot name a workspace"))
    if out.get("id") is not None:
        try:
            uuid.UUID(out["id"])
        except ValueError:
            errors.append((f"{path}.id" if path else "id", "expected a valid UUID"))
    if errors:
        raise ConfigError(errors)
    now = int(time.time())
    return Workspace(
        id=out.get("id") or (existing.id if existing else str(uuid.uuid4())),
        name=out["name"], comment=out.get("comment"), meta=out.get("meta") or {},
        config=out.get("config") or {},
        created_at=existing.created_at if existing else (out.get("created_at") or now),
        updated_at=now if existing else (out.get("updated_at") or out.get("created_at") or now),
    )


def workspace_to_dict(ws: Workspace) -> dict[str, Any]:
    return {"id": ws.id, "name": ws.name, "comment": ws.comment, "meta": ws.meta,
            "config": ws.config, "created_at": ws.created_at, "updated_at": ws.updated_at}


# --------------------------------------------------------------------------- ids in files

_NESTED = {"services": ("routes", "plugins"), "routes": ("plugins",),
           "upstreams": ("targets",), "consumers": ("plugins",), "certificates": ("snis",)}
_KEY = {"services": "name", "routes": "name", "upstreams": "name", "consumers": "username",
        "plugins": "name", "targets": "target", "certificates": "cert", "snis": "name",
        "ca_certificates": "cert"}
# Every entity collection of a workspace's Config.
KINDS = ("services", "routes", "upstreams", "targets", "consumers", "plugins", "certificates",
         "snis", "ca_certificates")


def seed_ids(doc: Mapping[str, Any], workspace: str) -> dict[str, Any]:
    """Copy of a hand-written workspace document with ids filled in where missing.

    The declarative loader derives missing ids from names with one fixed namespace, so
    ``service foo`` would get the same id in every workspace and the merged snapshot
    would be ambiguous. Deriving them from (workspace, parent, name) instead keeps them
    distinct, and stable across reloads of an unchanged file.
    """

    def walk(kind: str, items: Any, parent: str) -> Any:
        if not isinstance(items, list):
            return items
        out = []
        for i, item in enumerate(items):
            if not isinstance(item, dict):
                out.append(item)
                continue
            item = dict(item)
            key = item.get(_KEY[kind])
            if kind == "plugins":
                refs = [str(item.get(k)) for k in ("service", "route", "consumer")]
                key = f"{key}:{':'.join(refs)}"
            if isinstance(key, str) and len(key) > 200:
                key = uuid.uuid5(_NS, key).hex  # a PEM: its digest will do
            if item.get("id") is None:
                seed = f"{workspace}/{parent}/{kind}/{key if key else i}"
                item["id"] = str(uuid.uuid5(_NS, seed))
            for child in _NESTED.get(kind, ()):
                if child in item:
                    item[child] = walk(child, item[child], f"{parent}/{kind}/{item['id']}")
            out.append(item)
        return out

    new = dict(doc)
    for kind in ("services", "routes", "upstreams", "consumers", "plugins", "certificates",
                 "snis", "ca_certificates"):
        if kind in new:
            new[kind] = walk(kind, new[kind], "")
    return new


# --------------------------------------------------------------------------- cross-workspace

_DIMS = ("hosts", "paths", "methods", "headers", "snis")


def _values(route: Route, dim: str) -> Any:
    v = getattr(route, dim)
    if not v:
        return None
    if dim == "headers":
        return {k: {x.lower() for x in vals} for k, vals in v.items()}
    if dim in ("hosts", "snis"):
        return {x.lower() for x in v}
    return set(v)


def route_collision(a: Route, b: Route) -> str | None:
    """Why ``a`` and ``b`` would match the same requests with equal priority, or None."""
    if not set(a.protocols) & set(b.protocols):
        return None
    shown = []
    for dim in _DIMS:
        va, vb = _values(a, dim), _values(b, dim)
        if (va is None) != (vb is None):
            return None  # one is strictly more specific: the router orders them
        if va is None:
            continue
        if dim == "headers":
            if set(va) != set(vb) or any(not va[k] & vb[k] for k in va):
                return None
            shown.append("headers " + ", ".join(sorted(va)))
        else:
            common = va & vb
            if not common:
                return None
            shown.append(f"{dim} " + ", ".join(sorted(common)))
    return "both match " + ("; ".join(shown) if shown else "every request")


def _anchors(route: Route) -> list[str]:
    # Routes can only collide if they share a value of their first defined criterion,
    # so bucket by it instead of comparing every pair.
    for dim in _DIMS:
        v = _values(route, dim)
        if v is not None:
            return [f"{dim}:{x}" for x in sorted(v)]
    return ["*"]


def _label(route: Route) -> str:
    return f"'{route.name}'" if route.name else route.id


def cross_workspace_errors(configs: Mapping[str, Config]) -> Errors:
    """Everything that would make the shared data plane ambiguous (see module doc)."""
    errors: Errors = []
    seen_up: dict[str, str] = {}
    seen_id: dict[tuple[str, str], str] = {}  # (kind, id): a table per kind, as in Kong
    seen_sni: dict[str, str] = {}
    buckets: dict[str, list[tuple[str, Route]]] = {}
    for ws, cfg in configs.items():
        prefix = "" if ws == DEFAULT_WORKSPACE else f"workspaces.{ws}."
        for i, up in enumerate(cfg.upstreams):
            other = seen_up.get(up.name)
            if other is not None and other != ws:
                errors.append((f"{prefix}upstreams[{i}].name", f"upstream name '{up.name}' is "
                               f"already used in workspace '{other}'; service hosts resolve "
                               "upstream names across all workspaces"))
            seen_up.setdefault(up.name, ws)
        for i, sni in enumerate(cfg.snis):
            other = seen_sni.get(sni.name)
            if other is not None and other != ws:
                # Kong: SNI names are unique across workspaces (one TLS handshake, one answer)
                errors.append((f"{prefix}snis[{i}].name", f"sni '{sni.name}' is already used "
                               f"in workspace '{other}'"))
            seen_sni.setdefault(sni.name, ws)
        for kind in KINDS:
            for i, ent in enumerate(getattr(cfg, kind)):
                other = seen_id.get((kind, ent.id))
                if other is not None:
                    errors.append((f"{prefix}{kind}[{i}].id", f"id '{ent.id}' is already used "
                                   f"in workspace '{other}'"))
                seen_id.setdefault((kind, ent.id), ws)
        for i, route in enumerate(cfg.routes):
            for anchor in _anchors(route):
                for other_ws, other_route in buckets.get(anchor, ()):
                    if other_ws == ws:
                        continue
                    why = route_collision(route, other_route)
                    if why:
                        errors.append((f"{prefix}routes[{i}]", f"route {_label(route)} collides "
                                       f"with route {_label(other_route)} in workspace "
                                       f"'{other_ws}': {why}"))
                        break
                else:
                    continue
                break
            for anchor in _anchors(route):
                buckets.setdefault(anchor, []).append((ws, route))
    return errors


def merge_configs(configs: Iterable[Config]) -> Config:
    """One Config with every workspace's entities, for the shared data plane."""
    items = list(configs)
    if len(items) == 1:
        return items[0]
    base = items[0]
    merged: dict[str, tuple[Any, ...]] = {}
    for kind in KINDS:
        merged[kind] = tuple(e for c in items for e in getattr(c, kind))
    return replace(base, warnings=tuple(w for c in items for w in c.warnings),
                   **merged)  # type: ignore[arg-type]  # entity tuples by collection name
