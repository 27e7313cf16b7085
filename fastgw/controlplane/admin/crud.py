"""Entity endpoints: lists with pagination and tag filters, and the writes, committed
through the store (one writer at a time, whole config validated, file saved).

A ``Call`` (``call.py``) is one routed request: the workspace it addresses, the path
parameters and the API's store, health and node id. Handlers return a ``Response`` or raise ``HTTPError``.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any, Awaitable, Callable
from urllib.parse import quote, urlencode

import orjson

from fastgw.controlplane.admin import entities as E
from fastgw.controlplane.admin.call import Call
from fastgw.controlplane.admin.forms import parse_body
from fastgw.controlplane.admin.http import HTTPError, Request, Response, json_response
from fastgw.config import ConfigError
from fastgw.config.model import SNI, Config, Entity, tag_error
from fastgw.config.validate import SCHEMAS
from fastgw.config.workspaces import route_collision

__all__ = ["Call", "Handler", "Route", "paginate", "list_entities", "get_entity", "post_entity",
           "put_entity", "patch_entity", "delete_entity", "get_parent", "patch_parent",
           "put_parent", "delete_parent", "commit"]

MAX_PAGE = 1000
DEFAULT_PAGE = 100


Handler = Callable[[Call], Awaitable[Response]]
# A routing table row: path pattern ("{name}" segments are parameters) -> method -> handler.
Route = tuple[tuple[str, ...], dict[str, Handler]]


# --------------------------------------------------------------------------- reads

def _bad(code: int, name: str, message: str) -> HTTPError:
    return HTTPError(400, {"code": code, "name": name, "message": message})


def _tag_filter(req: Request) -> Callable[[Entity], bool] | None:
    raw = req.arg("tags")
    if raw is None:
        return None
    if "," in raw and "/" in raw:
        raise _bad(11, "invalid options", "invalid option (tags: invalid filter syntax: "
                   "cannot mix ',' (and) with '/' (or))")
    any_of = "/" in raw
    wanted = [t for t in raw.split("/" if any_of else ",")]
    for t in wanted:
        if not t or tag_error(t):
            raise _bad(11, "invalid options", f"invalid option (tags: invalid tag '{t}')")

    def match(e: Entity) -> bool:
        have = set(getattr(e, "tags", None) or ())
        return bool(have & set(wanted)) if any_of else set(wanted) <= have

    return match


def _page_size(req: Request) -> int:
    raw = req.arg("size")
    if raw is None:
        return DEFAULT_PAGE
    if not raw.isascii() or not raw.lstrip("+-").isdigit():
        raise _bad(9, "invalid size", "size must be a number")
    size = int(raw)
    if not 1 <= size <= MAX_PAGE:
        raise _bad(9, "invalid size", f"size must be an integer between 1 and {MAX_PAGE}")
    return size


def _token(entity_id: str) -> str:
    return base64.urlsafe_b64encode(orjson.dumps([entity_id])).decode().rstrip("=")


def _start_index(req: Request, items: list[Any], numeric: bool) -> int:
    raw = req.arg("offset")
    if raw is None:
        return 0
    if numeric:  # targets: plain numeric offsets, as in Kong
        if not (raw.isascii() and raw.isdigit()):
            raise _bad(7, "invalid offset", f"'{raw}' is not a valid offset: bad number")
        return int(raw)
    try:
        decoded = orjson.loads(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))
        wanted = decoded[0]
    except (binascii.Error, ValueError, TypeError, IndexError, KeyError):
        raise _bad(7, "invalid offset", f"'{raw}' is not a valid offset: bad encoding") from None
    for i, e in enumerate(items):
        if e.id == wanted:
            return i
    raise _bad(7, "invalid offset", f"'{raw}' is not a valid offset: the entity at that "
               "position no longer exists")


def paginate(req: Request, items: list[Any], render: Callable[[Any], dict[str, Any]],
             *, numeric: bool = False) -> dict[str, Any]:
    """Kong's list shape: ``{"data": [...], "next": url|None[, "offset": token]}``."""
    size = _page_size(req)
    match = _tag_filter(req)
    if match is not None:
        items = [e for e in items if match(e)]
    start = _start_index(req, items, numeric)
    page = items[start:start + size]
    out: dict[str, Any] = {"data": [render(e) for e in page], "next": None}
    if start + size < len(items):
        token = str(start + size) if numeric else _token(items[start + size].id)
        args = {"offset": token}
        for k in ("size", "tags"):
            if req.arg(k) is not None:
                args[k] = req.arg(k)  # type: ignore[assignment]
        out["offset"] = token
        out["next"] = req.path.rstrip("/") + "?" + urlencode(args, quote_via=quote)
    return out


def _key(call: Call, kind: str, param: str) -> str:
    """The path's key for ``kind``, refused as Kong refuses it (400) when it is neither
    an id nor a valid value of the endpoint key."""
    key = call.params[param]
    E.check_key(kind, key)
    return key


def _parent(call: Call, kind: str, param: str) -> Entity:
    parent = E.find(call.config, kind, _key(call, kind, param))
    if parent is None:
        raise E.not_found()
    return parent


def _scope(call: Call, nested: tuple[str, str, str] | None) -> tuple[str, str] | None:
    """``nested = (parent kind, path param, fk field)``."""
    if nested is None:
        return None
    parent_kind, param, fk = nested
    return fk, _parent(call, parent_kind, param).id


async def list_entities(call: Call, kind: str, nested: tuple[str, str, str] | None = None) -> Response:
    scope = _scope(call, nested)
    cfg = call.config
    items = list(E.select(cfg, kind, scope))
    return json_response(200, paginate(call.req, items, lambda e: E.to_dict(e, cfg),
                                       numeric=kind == "targets"))


async def get_entity(call: Call, kind: str, param: str,
                     nested: tuple[str, str, str] | None = None) -> Response:
    entity = E.find(call.config, kind, _key(call, kind, param), scope=_scope(call, nested))
    if entity is None:
        raise E.not_found()
    return json_response(200, E.to_dict(entity, call.config))


# --------------------------------------------------------------------------- writes

def _body(call: Call, kind: str) -> dict[str, Any]:
    return parse_body(call.req, SCHEMAS[kind])


_NO_SNIS: Any = object()


def _snis(kind: str, body: dict[str, Any]) -> Any:
    """A certificate body's ``snis`` (names of SNIs to create with it), taken out of it."""
    if kind != "certificates" or "snis" not in body:
        return _NO_SNIS
    names = body.pop("snis")
    if names is None:
        return []
    return [names] if isinstance(names, str) else names  # a form's single "snis=a.com"


def _with_snis(cfg: Config, entity: Entity, names: Any) -> Config:
    return cfg if names is _NO_SNIS else E.certificate_snis(cfg, entity.id, names)


def _cross_workspace(call: Call, kind: str, entity: Entity) -> None:
    """Refuse what would be ambiguous in the shared data plane (409 with the reason)."""
    state = call.api.store.state
    for ws, cfg in state.configs.items():
        if ws == call.ws:
            continue
        if any(e.id == entity.id for e in getattr(cfg, kind)):
            # One table per kind across workspaces (Kong EE; one merged data plane here):
            # the id is taken. Another kind may use it (another table).
            raise HTTPError(400, {"code": 3, "name": "primary key violation",
                                  "message": "primary key violation on key "
                                             f"'{E.lua_table({'id': entity.id})}'",
                                  "fields": {"id": entity.id}})
        if isinstance(entity, SNI) and any(s.name == entity.name for s in cfg.snis):
            raise HTTPError(409, {"code": 5, "name": "unique constraint violation",
                                  "message": f"sni '{entity.name}' is already used "
                                             f"in workspace '{ws}'",
                                  "fields": {"name": entity.name}})
        if kind == "upstreams":
            name = getattr(entity, "name")
            if any(u.name == name for u in cfg.upstreams):
                raise HTTPError(409, {"code": 5, "name": "unique constraint violation",
                                      "message": f"upstream name '{name}' is already used in "
                                                 f"workspace '{ws}'; service hosts resolve "
                                                 "upstream names across all workspaces",
                                      "fields": {"name": name}})
        if kind == "routes":
            for other in cfg.routes:
                why = route_collision(entity, other)  # type: ignore[arg-type]
                if why:
                    label = f"'{other.name}'" if other.name else other.id
                    raise HTTPError(409, {"code": 5, "name": "unique constraint violation",
                                          "message": f"route collides with route {label} in "
                                                     f"workspace '{ws}': {why}",
                                          "fields": {"@entity": [why]}})


async def commit(call: Call, change: Callable[[Config], tuple[Config, Any]]) -> Any:
    """Run ``change`` on the current config under the store lock and save the result."""
    store = call.api.store
    async with store.lock:
        state = store.state
        if call.ws not in state.configs:
            raise E.not_found()
        new_cfg, result = change(state.configs[call.ws])
        try:
            await store.commit(state.workspaces, {**state.configs, call.ws: new_cfg})
        except ConfigError as err:
            raise E.schema_error(err) from None
        return result


def _stored(call: Call, kind: str, entity_id: str) -> dict[str, Any]:
    # Render what the store accepted (after its canonical round trip).
    entity = E.find(call.config, kind, entity_id)
    assert entity is not None
    return E.to_dict(entity, call.config)


async def post_entity(call: Call, kind: str, nested: tuple[str, str, str] | None = None) -> Response:
    body = _body(call, kind)
    names = _snis(kind, body)

    def change(cfg: Config) -> tuple[Config, Entity]:
        scope = _scope(call, nested)
        new, entity = E.create(cfg, kind, body, scope)
        _cross_workspace(call, kind, entity)
        return _with_snis(new, entity, names), entity

    entity = await commit(call, change)
    return json_response(201, _stored(call, kind, entity.id))


async def put_entity(call: Call, kind: str, param: str,
                     nested: tuple[str, str, str] | None = None) -> Response:
    key = _key(call, kind, param)
    body = _body(call, kind)
    names = _snis(kind, body)

    def change(cfg: Config) -> tuple[Config, tuple[Entity, bool]]:
        new, entity, created = E.upsert(cfg, kind, key, body, _scope(call, nested))
        _cross_workspace(call, kind, entity)
        return _with_snis(new, entity, names), (entity, created)

    entity, _created = await commit(call, change)
    return json_response(200, _stored(call, kind, entity.id))  # Kong: 200, created or not


async def patch_entity(call: Call, kind: str, param: str,
                       nested: tuple[str, str, str] | None = None) -> Response:
    key = _key(call, kind, param)
    body = _body(call, kind)
    names = _snis(kind, body)

    def change(cfg: Config) -> tuple[Config, Entity]:
        existing = E.find(cfg, kind, key, scope=_scope(call, nested))
        if existing is None:
            raise E.not_found()
        new, entity = E.update(cfg, kind, existing, body)
        _cross_workspace(call, kind, entity)
        return _with_snis(new, entity, names), entity

    entity = await commit(call, change)
    return json_response(200, _stored(call, kind, entity.id))


async def delete_entity(call: Call, kind: str, param: str,
                        nested: tuple[str, str, str] | None = None) -> Response:
    key = _key(call, kind, param)

    def change(cfg: Config) -> tuple[Config, None]:
        existing = E.find(cfg, kind, key, scope=_scope(call, nested))
        if existing is None:
            if nested is not None:
                raise E.not_found()
            raise _NothingToDo()  # Kong: top-level DELETE of a missing entity is 204
        return E.delete(cfg, kind, existing), None

    try:
        await commit(call, change)
    except _NothingToDo:
        pass
    return Response(204, content_type=None)


class _NothingToDo(Exception):
    pass


# --------------------------------------------------------------------------- parents

async def get_parent(call: Call, kind: str, param: str, fk: str) -> Response:
    """``GET /routes/{r}/service`` and the like."""
    child = E.find(call.config, kind, _key(call, kind, param))
    if child is None or getattr(child, fk) is None:
        raise E.not_found()
    parent = E.find(call.config, E.KINDS[kind].foreign[fk], getattr(child, fk))
    if parent is None:
        raise E.not_found()
    return json_response(200, E.to_dict(parent, call.config))


async def patch_parent(call: Call, kind: str, param: str, fk: str) -> Response:
    parent_kind = E.KINDS[kind].foreign[fk]
    key = _key(call, kind, param)
    body = _body(call, parent_kind)

    def change(cfg: Config) -> tuple[Config, Entity]:
        child = E.find(cfg, kind, key)
        parent = E.find(cfg, parent_kind, getattr(child, fk)) if child and getattr(child, fk) else None
        if parent is None:
            raise E.not_found()
        return E.update(cfg, parent_kind, parent, body)

    entity = await commit(call, change)
    return json_response(200, _stored(call, parent_kind, entity.id))


async def put_parent(call: Call, kind: str, param: str, fk: str) -> Response:
    """``PUT /routes/{r}/service``: replace the route's service with the body (Kong's upsert
    of the foreign entity); a route without one gets a new service, associated with it."""
    parent_kind = E.KINDS[kind].foreign[fk]
    key = _key(call, kind, param)
    body = _body(call, parent_kind)

    def change(cfg: Config) -> tuple[Config, Entity]:
        child = E.find(cfg, kind, key)
        if child is None:
            raise E.not_found()
        current = getattr(child, fk)
        if current is not None:
            new, parent, _created = E.upsert(cfg, parent_kind, current, body)
            return new, parent
        new, parent = E.create(cfg, parent_kind, body)
        return E.link(new, kind, child, fk, parent.id), parent

    entity = await commit(call, change)
    return json_response(200, _stored(call, parent_kind, entity.id))


async def delete_parent(call: Call, kind: str, param: str, fk: str) -> Response:
    """``DELETE /routes/{r}/service``: Kong refuses (405) to delete a foreign entity
    through its child; 404 when there is none."""
    child = E.find(call.config, kind, _key(call, kind, param))
    if child is None or getattr(child, fk) is None:
        raise E.not_found()
    return json_response(405, {"message": "Method not allowed"})
