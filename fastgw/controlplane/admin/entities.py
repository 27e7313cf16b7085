"""Generic CRUD over one workspace's Config, with Kong's semantics and error bodies.

Every operation is pure: it takes a ``Config`` and returns the new one (plus the entity),
or raises ``HTTPError`` with Kong's body. The API layer commits the result through the
store, which validates the whole resulting configuration once more before saving.

Kong rules implemented here (``kong/api/endpoints.lua``, ``kong/db/dao``):
- entities are addressed by id or by their endpoint key (name, username, target, ...);
- unique fields are unique per workspace (409, code 5); an explicit id already in use is
  a primary key violation (400, code 3); a foreign key to nothing is code 4 (400);
- PUT is an upsert that replaces the whole entity (missing fields get defaults), PATCH
  merges into it (records merged deeply, like Kong's ``merge_values``);
- deleting an upstream deletes its targets; deleting a service, route or consumer
  deletes its plugins; a service that routes still use cannot be deleted (code 4).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import Any, Iterable, Mapping

from fastgw.controlplane.admin.http import HTTPError
from fastgw.config import ConfigError, build_entity, entity_to_dict
from fastgw.config.certificates import EXPIRED, ca_expired, is_reference
from fastgw.config.declarative import enabled_plugins
from fastgw.config.model import (
    CREDENTIAL_FIELDS,
    SNI,
    CACertificate,
    Certificate,
    Config,
    Entity,
    sni_error,
    uuid_error,
)
from fastgw.config.validate import SCHEMAS, check_value

__all__ = ["Kind", "KINDS", "find", "select", "create", "upsert", "update", "delete", "link",
           "schema_error", "not_found", "lua_table", "to_dict", "certificate_snis", "check_key",
           "check_body_id"]


@dataclass(frozen=True, slots=True)
class Kind:
    name: str  # collection: "services"
    endpoint_key: str | None  # alternate key for addressing
    unique: tuple[str, ...]  # fields unique per workspace
    foreign: Mapping[str, str]  # fk field -> collection


KINDS: dict[str, Kind] = {k.name: k for k in (
    Kind("services", "name", ("name",), {"client_certificate": "certificates"}),
    Kind("routes", "name", ("name",), {"service": "services"}),
    Kind("upstreams", "name", ("name",), {"client_certificate": "certificates"}),
    Kind("targets", "target", (), {"upstream": "upstreams"}),
    Kind("consumers", "username", ("username", "custom_id"), {}),
    Kind("plugins", "instance_name", ("instance_name",),
         {"service": "services", "route": "routes", "consumer": "consumers"}),
    Kind("certificates", None, (), {}),
    Kind("snis", "name", ("name",), {"certificate": "certificates"}),
    Kind("ca_certificates", None, ("cert_digest",), {}),
)}
# Children that go with their parent (Kong's on_delete = "cascade").
_CASCADE = {"upstreams": (("targets", "upstream"),),
            "services": (("plugins", "service"),),
            "routes": (("plugins", "route"),),
            "consumers": (("plugins", "consumer"),),
            "certificates": (("snis", "certificate"),)}
# Entities that others still point at cannot go (Kong's default on_delete, "restrict").
_RESTRICT = {"services": (("routes", "service"),),
             "certificates": (("services", "client_certificate"),
                              ("upstreams", "client_certificate"))}


# --------------------------------------------------------------------------- errors

def not_found() -> HTTPError:
    return HTTPError(404, {"message": "Not found"})


def lua_table(fields: Mapping[str, Any]) -> str:
    """Kong renders keys in errors as Lua tables: ``{name="foo"}``, ``{upstream={id="x"}}``."""
    def val(v: Any) -> str:
        if v is None:
            return "null"
        if isinstance(v, dict):
            return lua_table(v)
        if isinstance(v, str):
            return f'"{v}"'
        return str(v)
    return "{" + ",".join(f"{k}={val(v)}" for k, v in sorted(fields.items())) + "}"


def schema_error(err: ConfigError) -> HTTPError:
    return HTTPError(400, {"code": 2, "name": "schema violation", "message": str(err),
                           "fields": err.fields})


def _unique_error(fields: Mapping[str, Any]) -> HTTPError:
    return HTTPError(409, {"code": 5, "name": "unique constraint violation",
                           "message": f"UNIQUE violation detected on '{lua_table(fields)}'",
                           "fields": dict(fields)})


def _fk_error(fk: str, target_kind: str, ref: str) -> HTTPError:
    key = {"id": ref}
    return HTTPError(400, {"code": 4, "name": "foreign key violation",
                           "message": f"the foreign key '{lua_table(key)}' does not reference "
                                      f"an existing '{target_kind}' entity.",
                           "fields": {fk: key}})


# --------------------------------------------------------------------------- lookups

def _is_uuid(key: str) -> bool:
    return uuid_error(key) is None


def check_key(kind: str, key: str) -> None:
    """Kong's checks of the key in ``/{kind}/{key}`` (kong/db/dao: ``select_by_*``,
    ``upsert_by_*``...): an id, or a valid value of the endpoint key; 400 otherwise."""
    if _is_uuid(key):
        return
    ek = KINDS[kind].endpoint_key
    if ek is None:
        raise HTTPError(400, {"code": 1, "name": "invalid primary key",
                              "message": "invalid primary key: '{id=\"expected a valid "
                                         "UUID\"}'", "fields": {"id": "expected a valid UUID"}})
    errors: list[tuple[str, str]] = []
    check_value(SCHEMAS[kind][ek], key, ek, errors)
    if errors:
        why = errors[0][1]
        raise HTTPError(400, {"code": 10, "name": f"invalid unique {ek}",
                              "message": f"invalid unique {ek}: {why}", "fields": {ek: why}})


def find(cfg: Config, kind: str, key: str, *, scope: tuple[str, str] | None = None) -> Entity | None:
    """Entity of ``kind`` by id or endpoint key; ``scope=(fk, id)`` restricts to children."""
    items = select(cfg, kind, scope)
    for e in items:
        if e.id == key:
            return e
    ek = KINDS[kind].endpoint_key
    if ek is None:
        return None
    if kind == "targets":
        from fastgw.config.model import normalize_target

        key = normalize_target(key) or key
    for e in items:
        if getattr(e, ek) == key:
            return e
    return None


def select(cfg: Config, kind: str, scope: tuple[str, str] | None = None) -> tuple[Entity, ...]:
    items: tuple[Entity, ...] = getattr(cfg, kind)
    if scope is not None:
        fk, pid = scope
        items = tuple(e for e in items if getattr(e, fk) == pid)
    return items


# --------------------------------------------------------------------------- writes

def _deep_merge(base: dict[str, Any], patch: Mapping[str, Any], records: Iterable[str]) -> dict[str, Any]:
    out = dict(base)
    for k, v in patch.items():
        if k in records and isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _merge_record(out[k], v)
        else:
            out[k] = v
    return out


def _merge_record(a: dict[str, Any], b: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(a)
    for k, v in b.items():
        out[k] = _merge_record(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _build(cfg: Config, kind: str, data: dict[str, Any]) -> Entity:
    """Validate a body into an entity and resolve its foreign keys (by id or name)."""
    spec = KINDS[kind]
    try:
        entity, _warnings = build_entity(kind, data, enabled_plugins=enabled_plugins(cfg.gateway))
    except ConfigError as err:
        raise schema_error(err) from None
    if isinstance(entity, CACertificate) and not is_reference(entity.cert) \
            and ca_expired(entity.cert, time.time()):
        # Refused when written (as Kong); a stored CA that expires later is only a warning.
        raise schema_error(ConfigError([("@entity", EXPIRED)]))
    changes: dict[str, Any] = {}
    for fk, target_kind in spec.foreign.items():
        ref = getattr(entity, fk)
        if ref is None:
            continue
        target = find(cfg, target_kind, ref)  # {"id": ...} or {"name": ...}: either works
        if target is None:
            raise _fk_error(fk, target_kind, ref)
        changes[fk] = target.id
    return replace(entity, **changes) if changes else entity


def _check_unique(cfg: Config, kind: str, entity: Entity, *, new: bool) -> None:
    spec = KINDS[kind]
    others = [e for e in getattr(cfg, kind) if e.id != entity.id]
    if new and any(e.id == entity.id for e in getattr(cfg, kind)):
        raise HTTPError(400, {"code": 3, "name": "primary key violation",
                              "message": f"primary key violation on key '{lua_table({'id': entity.id})}'",
                              "fields": {"id": entity.id}})
    for f in spec.unique:
        v = getattr(entity, f)
        if v is not None and any(getattr(e, f) == v for e in others):
            raise _unique_error({f: v})
    if kind == "targets":
        t: Any = entity
        if any(o.upstream == t.upstream and o.target == t.target for o in others):
            raise _unique_error({"target": t.target, "upstream": {"id": t.upstream}})
    if kind == "plugins":
        p: Any = entity
        key = (p.name, p.route, p.service, p.consumer)
        if any((o.name, o.route, o.service, o.consumer) == key for o in others):
            raise _unique_error({"name": p.name, "route": p.route and {"id": p.route},
                                 "service": p.service and {"id": p.service},
                                 "consumer": p.consumer and {"id": p.consumer}})


def _now(kind: str) -> float:
    return round(time.time(), 3) if kind == "targets" else int(time.time())


def _store(cfg: Config, kind: str, entity: Entity) -> Config:
    items = list(getattr(cfg, kind))
    for i, e in enumerate(items):
        if e.id == entity.id:
            items[i] = entity
            break
    else:
        items.append(entity)
    return replace(cfg, **{kind: tuple(items)})


def _scoped(data: dict[str, Any], scope: tuple[str, str] | None) -> dict[str, Any]:
    if scope is not None:
        data[scope[0]] = {"id": scope[1]}  # nested endpoints imply the parent
    return data


def _without_timestamps(kind: str, body: Mapping[str, Any]) -> dict[str, Any]:
    """The body without ``created_at``/``updated_at``: the server sets them (Kong's
    auto_timestamp), but a value of the wrong type is still refused."""
    errors: list[tuple[str, str]] = []
    data = dict(body)
    for ts in ("created_at", "updated_at"):
        if data.get(ts) is not None:
            check_value(SCHEMAS[kind][ts], data[ts], ts, errors)
        data.pop(ts, None)
    if errors:
        raise schema_error(ConfigError(errors))
    return data


def create(cfg: Config, kind: str, body: Mapping[str, Any],
           scope: tuple[str, str] | None = None) -> tuple[Config, Entity]:
    data = _scoped(_without_timestamps(kind, body), scope)
    entity = _build(cfg, kind, data)
    _check_unique(cfg, kind, entity, new=True)
    return _store(cfg, kind, entity), entity


def upsert(cfg: Config, kind: str, key: str, body: Mapping[str, Any],
           scope: tuple[str, str] | None = None) -> tuple[Config, Entity, bool]:
    """PUT: replace the entity at ``key`` (or create it there). Returns (cfg, entity, created)."""
    existing = find(cfg, kind, key, scope=scope)
    check_body_id(body)
    data = _scoped(_without_timestamps(kind, body), scope)
    spec = KINDS[kind]
    if existing is not None:
        data["id"] = existing.id
    elif _is_uuid(key):
        data["id"] = key
    if not _is_uuid(key) and spec.endpoint_key is not None:
        # PUT /services/{name}: the name in the URL is the entity's, whatever the body
        # says (Kong's upsert_by_*: entity_to_upsert[name] = unique_value).
        data[spec.endpoint_key] = key
    entity = _build(cfg, kind, data)
    if existing is not None:
        entity = replace(entity, created_at=existing.created_at, updated_at=_now(kind),
                         **_credentials_of(existing))
    _check_unique(cfg, kind, entity, new=existing is None)
    return _store(cfg, kind, entity), entity, existing is None


def check_body_id(body: Mapping[str, Any]) -> None:
    """PUT and PATCH address the entity by URL; a body ``id`` is still checked as a UUID
    (Kong validates it), then the URL's entity wins."""
    given = body.get("id")
    if given is not None and (not isinstance(given, str) or not _is_uuid(given)):
        raise schema_error(ConfigError([("id", "expected a valid UUID")]))


def update(cfg: Config, kind: str, existing: Entity, body: Mapping[str, Any]) -> tuple[Config, Entity]:
    """PATCH: merge ``body`` into ``existing``."""
    check_body_id(body)
    base = entity_to_dict(existing)
    if kind == "services" and "url" in body:
        for f in ("protocol", "host", "port", "path"):
            base.pop(f, None)  # the url shorthand replaces all four
    records = [k for k, f in SCHEMAS[kind].items() if f.type == "record"]
    data = _deep_merge(base, _without_timestamps(kind, body), records)
    data["id"] = existing.id
    data.pop("created_at", None)
    data.pop("updated_at", None)
    entity = _build(cfg, kind, data)
    entity = replace(entity, created_at=existing.created_at, updated_at=_now(kind),
                     **_credentials_of(existing))
    _check_unique(cfg, kind, entity, new=False)
    return _store(cfg, kind, entity), entity


def link(cfg: Config, kind: str, child: Entity, fk: str, parent_id: str) -> Config:
    """``child`` with its foreign key ``fk`` pointing at ``parent_id``."""
    return _store(cfg, kind, replace(child, **{fk: parent_id}, updated_at=_now(kind)))


def _credentials_of(existing: Entity) -> Any:
    """A consumer's credentials, which a PUT or PATCH of the consumer keeps (in Kong they
    are entities of their own)."""
    if not hasattr(existing, "keyauth_credentials"):
        return {}
    return {f: getattr(existing, f) for f in CREDENTIAL_FIELDS}


def delete(cfg: Config, kind: str, entity: Entity) -> Config:
    for other, fk in _RESTRICT.get(kind, ()):
        if any(getattr(e, fk) == entity.id for e in getattr(cfg, other)):
            raise HTTPError(400, {"code": 4, "name": "foreign key violation",
                                  "message": f"an existing '{other}' entity references this "
                                             f"'{kind}' entity",
                                  "fields": {"@referenced_by": other}})
    if kind == "ca_certificates":
        user = next((s for s in cfg.services if entity.id in (s.ca_certificates or ())), None)
        if user is not None:  # kong/db/dao/ca_certificates.lua
            raise HTTPError(400, {"code": 19, "name": "referenced by others",
                                  "message": f"ca certificate {entity.id} is still referenced "
                                             f"by services (id = {user.id})"})
    changes: dict[str, tuple[Any, ...]] = {
        kind: tuple(e for e in getattr(cfg, kind) if e.id != entity.id)}
    for child, fk in _CASCADE.get(kind, ()):
        changes[child] = tuple(e for e in changes.get(child, getattr(cfg, child))
                               if getattr(e, fk) != entity.id)
    return replace(cfg, **changes)


def to_dict(entity: Entity, cfg: Config | None = None) -> dict[str, Any]:
    """The Admin API's rendering; a certificate lists its SNI names (Kong's ``snis``)."""
    out = entity_to_dict(entity)
    if isinstance(entity, Certificate) and cfg is not None:
        out["snis"] = sorted(s.name for s in cfg.snis if s.certificate == entity.id)
    return out


def certificate_snis(cfg: Config, cert_id: str, names: Any) -> Config:
    """Make ``names`` the SNIs of certificate ``cert_id`` (Kong's ``snis`` pseudo-field of
    certificates: kong/db/dao/certificates.lua). Names kept keep their SNI entity."""
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise schema_error(ConfigError([("snis", "expected an array of strings")]))
    seen: set[str] = set()
    for name in names:
        why = sni_error(name)
        if why:
            raise schema_error(ConfigError([("snis", why)]))
        if name in seen:
            raise schema_error(ConfigError([("snis", f"{name} is duplicated")]))
        seen.add(name)
        owner = next((s for s in cfg.snis if s.name == name), None)
        if owner is not None and owner.certificate != cert_id:
            raise schema_error(ConfigError([("snis", f"{name} already associated with "
                                             f"existing certificate '{owner.certificate}'")]))
    now = int(time.time())
    keep = [s for s in cfg.snis if s.certificate != cert_id or s.name in seen]
    have = {s.name for s in keep if s.certificate == cert_id}
    added = [SNI(name=n, certificate=cert_id, created_at=now, updated_at=now)
             for n in sorted(seen - have)]
    return replace(cfg, snis=tuple(keep + added))
