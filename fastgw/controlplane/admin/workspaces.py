"""``/workspaces`` endpoints (Kong EE): CRUD of the workspaces themselves.

Entities inside a workspace are served by the generic entity endpoints under
``/{workspace}/...``; the rules that keep workspaces apart in the shared data plane are
in ``fastgw.config.workspaces``. Here: the default workspace always exists and can be
neither renamed nor deleted; a workspace that still has entities is only deleted with
``?cascade=true``; renaming a workspace keeps its entities.
"""

from __future__ import annotations

from typing import Any, Awaitable, Callable

from fastgw.controlplane.admin import crud
from fastgw.controlplane.admin import entities as E
from fastgw.controlplane.admin.forms import parse_body
from fastgw.controlplane.admin.http import HTTPError, Response, json_response
from fastgw.config import ConfigError
from fastgw.config.model import Config
from fastgw.config.workspaces import (
    DEFAULT_WORKSPACE,
    WORKSPACE_SCHEMA,
    Workspace,
    build_workspace,
    workspace_to_dict,
)

__all__ = ["WORKSPACE_ROUTES"]


def _find(call: crud.Call, key: str) -> Workspace | None:
    return call.api.store.state.workspace(key)


async def list_workspaces(call: crud.Call) -> Response:
    items = list(call.api.store.state.workspaces)
    return json_response(200, crud.paginate(call.req, items, workspace_to_dict))


async def get_workspace(call: crud.Call) -> Response:
    ws = _find(call, call.params["w"])
    if ws is None:
        raise E.not_found()
    return json_response(200, workspace_to_dict(ws))


def _unique(name: str) -> HTTPError:
    return HTTPError(409, {"code": 5, "name": "unique constraint violation",
                           "message": f"UNIQUE violation detected on '{{name=\"{name}\"}}'",
                           "fields": {"name": name}})


async def _commit(call: crud.Call, change: Callable[[tuple[Workspace, ...], dict[str, Config]],
                                                    tuple[tuple[Workspace, ...], dict[str, Config], Any]]) -> Any:
    store = call.api.store
    async with store.lock:
        state = store.state
        wss, cfgs, result = change(state.workspaces, dict(state.configs))
        try:
            await store.commit(wss, cfgs)
        except ConfigError as err:
            raise E.schema_error(err) from None
        return result


def _build(body: dict[str, Any], existing: Workspace | None = None) -> Workspace:
    try:
        return build_workspace(body, existing=existing)
    except ConfigError as err:
        raise E.schema_error(err) from None


def _check_new(wss: tuple[Workspace, ...], ws: Workspace) -> None:
    """A new workspace's name and id must both be unused (an id shared by two workspaces
    would make a later rename replace both)."""
    if any(w.name == ws.name for w in wss):
        raise _unique(ws.name)
    if any(w.id == ws.id for w in wss):
        raise HTTPError(400, {"code": 3, "name": "primary key violation",
                              "message": f"primary key violation on key '{{id=\"{ws.id}\"}}'",
                              "fields": {"id": ws.id}})


def _empty(cfgs: dict[str, Config]) -> Config:
    # A new workspace shares the node's settings and starts with no entities.
    return Config(gateway=cfgs[DEFAULT_WORKSPACE].gateway)


async def post_workspace(call: crud.Call) -> Response:
    body = parse_body(call.req, WORKSPACE_SCHEMA)

    def change(wss: tuple[Workspace, ...], cfgs: dict[str, Config]) -> Any:
        ws = _build(body)
        _check_new(wss, ws)
        cfgs[ws.name] = _empty(cfgs)
        return (*wss, ws), cfgs, ws

    ws = await _commit(call, change)
    return json_response(201, workspace_to_dict(ws))


def _rename(wss: tuple[Workspace, ...], cfgs: dict[str, Config], old: Workspace,
            new: Workspace) -> tuple[tuple[Workspace, ...], dict[str, Config]]:
    if new.name != old.name:
        if old.name == DEFAULT_WORKSPACE:
            raise HTTPError(400, {"message": "the default workspace cannot be renamed"})
        if any(w.name == new.name for w in wss):
            raise _unique(new.name)
        cfgs = {(new.name if k == old.name else k): v for k, v in cfgs.items()}
    return tuple(new if w.id == old.id else w for w in wss), cfgs


async def patch_workspace(call: crud.Call) -> Response:
    body = parse_body(call.req, WORKSPACE_SCHEMA)
    E.check_body_id(body)

    def change(wss: tuple[Workspace, ...], cfgs: dict[str, Config]) -> Any:
        old = next((w for w in wss if call.params["w"] in (w.id, w.name)), None)
        if old is None:
            raise E.not_found()
        merged = {**workspace_to_dict(old), **body, "id": old.id}
        new = _build(merged, existing=old)
        wss, cfgs = _rename(wss, cfgs, old, new)
        return wss, cfgs, new

    ws = await _commit(call, change)
    return json_response(200, workspace_to_dict(ws))


async def put_workspace(call: crud.Call) -> Response:
    body = parse_body(call.req, WORKSPACE_SCHEMA)
    E.check_body_id(body)
    key = call.params["w"]

    def change(wss: tuple[Workspace, ...], cfgs: dict[str, Config]) -> Any:
        old = next((w for w in wss if key in (w.id, w.name)), None)
        data = dict(body)
        if old is not None:
            data["id"] = old.id
            data.setdefault("name", old.name)
            new = _build(data, existing=old)
            wss, cfgs = _rename(wss, cfgs, old, new)
            return wss, cfgs, (new, False)
        if E._is_uuid(key):
            data["id"] = key
        else:
            data["name"] = key  # the URL's name wins, as Kong's upsert_by_name
        new = _build(data)
        _check_new(wss, new)
        cfgs[new.name] = _empty(cfgs)
        return (*wss, new), cfgs, (new, True)

    ws, created = await _commit(call, change)
    return json_response(201 if created else 200, workspace_to_dict(ws))


async def delete_workspace(call: crud.Call) -> Response:
    raw = call.req.arg("cascade")
    if raw not in (None, "1", "0", "true", "false"):
        raise HTTPError(400, {"code": 11, "name": "invalid options",
                              "message": "invalid option (cascade: expected a boolean)"})
    cascade = raw in ("1", "true")

    def change(wss: tuple[Workspace, ...], cfgs: dict[str, Config]) -> Any:
        ws = next((w for w in wss if call.params["w"] in (w.id, w.name)), None)
        if ws is None:
            raise _Missing()
        if ws.name == DEFAULT_WORKSPACE:
            raise HTTPError(400, {"message": "the default workspace cannot be deleted"})
        cfg = cfgs[ws.name]
        count = sum(len(getattr(cfg, k)) for k in ("services", "routes", "upstreams",
                                                    "consumers", "plugins"))
        if count and not cascade:
            raise HTTPError(400, {"message": f"workspace '{ws.name}' is not empty ({count} "
                                             "entities); delete them first or use ?cascade=true"})
        del cfgs[ws.name]
        return tuple(w for w in wss if w.id != ws.id), cfgs, None

    try:
        await _commit(call, change)
    except _Missing:
        pass  # Kong: deleting something that is not there is still 204
    return Response(204, content_type=None)


class _Missing(Exception):
    pass


Handler = Callable[[crud.Call], Awaitable[Response]]
WORKSPACE_ROUTES: list[tuple[tuple[str, ...], dict[str, Handler]]] = [
    (("workspaces",), {"GET": list_workspaces, "POST": post_workspace}),
    (("workspaces", "{w}"), {"GET": get_workspace, "PATCH": patch_workspace,
                             "PUT": put_workspace, "DELETE": delete_workspace}),
]
