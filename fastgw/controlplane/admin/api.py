"""The Admin API: routing, authentication, and the node-level endpoints.

Entity endpoints are generated per kind (``crud.py``), nested ones per parent/child pair,
and every entity path also exists under ``/{workspace}/...`` (Kong EE). The node-level
endpoints live here: ``GET /`` (node info), ``GET /status``, ``GET|POST /config``
(export / replace everything, Kong's code 14 errors, ``If-Match`` against lost updates),
``POST /config/reload`` (re-read the file, as SIGHUP), ``/workspaces`` and ``/openapi.json``.
A write refused because the file was edited by hand since it was loaded is a 409 saying
to reload (``fastgw.controlplane.store.FileChangedOnDisk``), whatever the endpoint.

``RuntimeInfo`` is what the supervisor tells the API about the processes (pids, worker
versions); the API never touches a worker itself: writes go to the store, and the store's
listeners push snapshots.
"""

from __future__ import annotations

import hashlib
import hmac
import socket
import sys
from functools import partial
from typing import Any, Protocol

import orjson

from fastgw import __version__
from fastgw.controlplane.admin import crud
from fastgw.controlplane.admin.credentials import CREDENTIAL_ROOTS, CREDENTIAL_ROUTES
from fastgw.controlplane.admin import entities as E
from fastgw.controlplane.admin.forms import media_type, parse_body
from fastgw.controlplane.admin.cors import CorsPolicy, allow_list
from fastgw.controlplane.admin.health import HealthSource, ManualHealth, get_health, set_health
from fastgw.controlplane.admin.http import HTTPError, Request, Response, json_response, split_path
from fastgw.controlplane.admin.meta import META_ROUTES, endpoint_paths
from fastgw.controlplane.admin.proxy_cache import PROXY_CACHE_ROUTES, CacheSource, NoWorkerCaches
from fastgw.controlplane.admin.node_info import configuration_block, plugins_block
from fastgw.controlplane.admin.openapi import build_openapi
from fastgw.controlplane.admin.schemas import SCHEMA_ROUTES
from fastgw.controlplane.admin.status import memory_block, memory_options
from fastgw.controlplane.admin.workspaces import WORKSPACE_ROUTES
from fastgw.config import ConfigError
from fastgw.config.declarative import enabled_plugins
from fastgw.config.kong_export import to_kong
from fastgw.config.loader import parse_yaml
from fastgw.controlplane.portal import PORTAL_PREFIX, PortalFiles
from fastgw.controlplane.store import (
    FileChangedOnDisk,
    FileConfigStore,
    PreconditionFailed,
    StoreState,
    StoreWriteError,
)

__all__ = ["AdminAPI", "RuntimeInfo", "KONG_API_VERSION"]

# The Kong Admin API generation fastgw speaks; clients such as deck pick their format
# from ``version`` in ``GET /``. fastgw's own version is ``fastgw_version``.
KONG_API_VERSION = "3.4.0"

Route = crud.Route
ENTITY_ROOTS = ("services", "routes", "upstreams", "consumers", "plugins", "certificates",
                "snis", "ca_certificates")
_NODE_ROOTS = frozenset({"workspaces", "config", "status", "openapi.json", "metrics", "endpoints",
                         "proxy-cache"})
# What may follow a /{workspace} prefix: the entities and the per-workspace endpoints.
_SCOPED_ROOTS = frozenset(ENTITY_ROOTS) | CREDENTIAL_ROOTS | {"schemas", "tags"}


class RuntimeInfo(Protocol):
    node_id: str

    def pids(self) -> dict[str, Any]:
        """``{"master": pid, "workers": [pid, ...]}``."""
        ...

    def status(self) -> dict[str, Any]:
        """Process and propagation state for ``GET /status``."""
        ...

    async def reload(self) -> StoreState:
        """Re-read the config file, as SIGHUP does (logged and counted there). Raises
        ConfigError (or OSError) when the file is refused; the running config stays."""
        ...


def _entity_routes() -> list[Route]:
    # Literal segments before "{id}": /plugins/enabled is not a plugin.
    routes: list[Route] = [(("plugins", "enabled"), {"GET": _enabled_plugins})]
    for kind in ENTITY_ROOTS:
        routes.append(((kind,), {"GET": partial(crud.list_entities, kind=kind),
                                 "POST": partial(crud.post_entity, kind=kind)}))
        routes.append(((kind, "{id}"), {
            "GET": partial(crud.get_entity, kind=kind, param="id"),
            "PUT": partial(crud.put_entity, kind=kind, param="id"),
            "PATCH": partial(crud.patch_entity, kind=kind, param="id"),
            "DELETE": partial(crud.delete_entity, kind=kind, param="id")}))
    # Targets first (literal "all" before "{t}"), then the other parent/child pairs.
    up = ("upstreams", "p", "upstream")
    routes.append((("upstreams", "{p}", "targets", "all"),
                   {"GET": partial(crud.list_entities, kind="targets", nested=up)}))
    routes.append((("upstreams", "{u}", "health"), {"GET": get_health}))
    for verb in ("healthy", "unhealthy"):
        h = partial(_health, healthy=verb == "healthy")
        routes.append((("upstreams", "{u}", "targets", "{t}", verb), {"PUT": h, "POST": h}))
        routes.append((("upstreams", "{u}", "targets", "{t}", "{address}", verb),
                       {"PUT": h, "POST": h}))
    pairs = [("upstreams", "targets", "upstream"), ("services", "routes", "service"),
             ("services", "plugins", "service"), ("routes", "plugins", "route"),
             ("consumers", "plugins", "consumer"), ("certificates", "snis", "certificate")]
    for parent, child, fk in pairs:
        nested = (parent, "p", fk)
        routes.append(((parent, "{p}", child), {
            "GET": partial(crud.list_entities, kind=child, nested=nested),
            "POST": partial(crud.post_entity, kind=child, nested=nested)}))
        routes.append(((parent, "{p}", child, "{id}"), {
            "GET": partial(crud.get_entity, kind=child, param="id", nested=nested),
            "PUT": partial(crud.put_entity, kind=child, param="id", nested=nested),
            "PATCH": partial(crud.patch_entity, kind=child, param="id", nested=nested),
            "DELETE": partial(crud.delete_entity, kind=child, param="id", nested=nested)}))
    for child, fk in (("routes", "service"), ("plugins", "service"), ("plugins", "route"),
                      ("plugins", "consumer"), ("snis", "certificate")):
        routes.append(((child, "{id}", fk), {
            "GET": partial(crud.get_parent, kind=child, param="id", fk=fk),
            "PUT": partial(crud.put_parent, kind=child, param="id", fk=fk),
            "PATCH": partial(crud.patch_parent, kind=child, param="id", fk=fk),
            "DELETE": partial(crud.delete_parent, kind=child, param="id", fk=fk)}))
    return routes + CREDENTIAL_ROUTES + SCHEMA_ROUTES + META_ROUTES


async def _enabled_plugins(call: crud.Call) -> Response:
    """``GET /plugins/enabled``: the plugins this node runs."""
    return json_response(200, {"enabled_plugins": sorted(
        enabled_plugins(call.api.store.state.merged.gateway))})


async def _health(call: crud.Call, healthy: bool) -> Response:
    return await set_health(call, healthy)


def _match(routes: list[Route], segs: list[str]) -> tuple[dict[str, Any], dict[str, str]] | None:
    for pattern, methods in routes:
        if len(pattern) != len(segs):
            continue
        params: dict[str, str] = {}
        for p, s in zip(pattern, segs):
            if p.startswith("{"):
                params[p[1:-1]] = s
            elif p != s:
                break
        else:
            return methods, params
    return None


class AdminAPI:
    def __init__(self, store: FileConfigStore, runtime: RuntimeInfo, *,
                 admin_token: str | None = None, health: HealthSource | None = None,
                 caches: CacheSource | None = None) -> None:
        self.store = store
        self.runtime = runtime
        self.node_id = runtime.node_id
        self.admin_token = admin_token.encode() if admin_token else None
        self.health: HealthSource = health or ManualHealth()
        self.caches: CacheSource = caches or NoWorkerCaches()  # proxy-cache purges
        self.entity_routes = _entity_routes()
        self._cors = CorsPolicy()
        self.portal = PortalFiles()
        self.node_routes: list[Route] = [
            ((), {"GET": self._root}),
            (("endpoints",), {"GET": self._endpoints}),
            (("status",), {"GET": self._status}),
            (("config",), {"GET": self._get_config, "POST": self._post_config}),
            (("config", "reload"), {"POST": self._reload_config}),
            (("openapi.json",), {"GET": self._openapi}),
            *WORKSPACE_ROUTES,
            *PROXY_CACHE_ROUTES,
        ]
        self._openapi_doc: tuple[frozenset[str], bytes] | None = None

    @property
    def cors(self) -> CorsPolicy:
        """The policy of the running settings (a reload may change ``admin_gui_url``)."""
        urls = self.store.state.merged.gateway.admin_gui_url
        if self._cors.gui_urls != urls:
            self._cors = CorsPolicy(urls)
        return self._cors

    # -- dispatch ------------------------------------------------------------------------
    async def handle(self, req: Request) -> Response:
        try:
            resp = await self._respond(req)
        except HTTPError as exc:
            resp = exc.response()
        except FileChangedOnDisk as exc:
            resp = json_response(409, {"name": "config file changed on disk",
                                       "message": str(exc)})
        except StoreWriteError as exc:
            # Say why (full disk, read-only file system): the operator can act on it.
            resp = json_response(503, {"message": str(exc)})
        resp.headers += self.cors.headers(req.headers)  # errors too: a GUI reads them
        return resp

    async def _respond(self, req: Request) -> Response:
        if req.path == PORTAL_PREFIX or req.path.startswith(PORTAL_PREFIX + "/"):
            return self.portal.serve(req)  # static files, no data: see fastgw.controlplane.portal
        segs = crud_segments(req.path)
        prefix: str | None = None  # a /{workspace} prefix
        routes = self.entity_routes
        if not segs or segs[0] in _NODE_ROOTS:
            routes = self.node_routes
        elif segs[0] not in _SCOPED_ROOTS and len(segs) >= 2 and segs[1] in _SCOPED_ROOTS:
            prefix, segs = segs[0], segs[1:]
        hit = _match(routes, segs)
        if req.method == "OPTIONS" and hit is not None:
            # Answered before authentication (a preflight carries none), and without
            # looking the workspace up (that would tell its name to anyone).
            return Response(204, content_type=None,
                            headers=self.cors.preflight_headers(req.headers, hit[0]))
        if self.admin_token is not None and not self._authorized(req):
            return json_response(401, {"message": "Unauthorized"})
        ws = "default"
        if prefix is not None:
            target = self.store.state.workspace(prefix)
            if target is None:
                raise E.not_found()
            ws = target.name
        if hit is None:
            raise E.not_found()
        methods, params = hit
        handler = methods.get("GET" if req.method == "HEAD" else req.method)
        if handler is None:
            allow = allow_list(methods)
            return json_response(405, {"message": "Method not allowed"}, [("Allow", allow)])
        return await handler(crud.Call(self, req, ws, params))

    def _authorized(self, req: Request) -> bool:
        given = req.headers.get("fastgw-admin-token") or req.headers.get("kong-admin-token")
        assert self.admin_token is not None
        # compare_digest: the time taken must not reveal how much of a guess was right.
        return given is not None and hmac.compare_digest(given.encode("latin-1"), self.admin_token)

    # -- node endpoints ------------------------------------------------------------------
    async def _root(self, call: crud.Call) -> Response:
        state = self.store.state
        return json_response(200, {
            "tagline": "Welcome to fastgw",
            "version": KONG_API_VERSION,
            "fastgw_version": __version__,
            "edition": "community",
            "hostname": socket.gethostname(),
            "node_id": self.node_id,
            "plugins": plugins_block(state.merged),
            "python_version": sys.version.split()[0],
            "configuration": configuration_block(state.merged.gateway, self.store.path),
            "pids": self.runtime.pids(),
        })

    async def _endpoints(self, call: crud.Call) -> Response:
        """``GET /endpoints``: every path this API serves (Kong's shape)."""
        patterns = [p for p, _ in self.node_routes + self.entity_routes]
        return json_response(200, {"data": endpoint_paths(patterns)})

    async def _status(self, call: crud.Call) -> Response:
        return json_response(200, self.status_body(call.req))

    def status_body(self, req: Request | None = None) -> dict[str, Any]:
        """Kong's ``GET /status`` (``?unit=``/``?scale=`` for the memory block)."""
        unit, scale = memory_options(req) if req is not None else ("m", 2)
        state = self.store.state
        runtime = self.runtime.status()
        return {"database": {"reachable": True}, "configuration_hash": state.etag,
                "config_version": state.version, **runtime,
                "memory": memory_block(runtime.get("workers", []), unit, scale)}

    async def _openapi(self, call: crud.Call) -> Response:
        # Rebuilt when a reload changes the enabled plugins (the names a plugin may have).
        plugins = enabled_plugins(self.store.state.merged.gateway)
        if self._openapi_doc is None or self._openapi_doc[0] != plugins:
            routes = self.node_routes + self.entity_routes
            self._openapi_doc = plugins, orjson.dumps(build_openapi(
                routes, secured=self.admin_token is not None, plugins=plugins))
        return Response(200, self._openapi_doc[1])

    async def _get_config(self, call: crud.Call) -> Response:
        state = self.store.state
        doc = state.document(with_gateway=False)
        fmt = call.req.arg("format")
        if fmt not in (None, "", "fastgw", "kong"):
            raise HTTPError(400, {"code": 11, "name": "invalid options",
                                  "message": "invalid option (format: expected 'kong' or "
                                             "'fastgw')"})
        extra: dict[str, Any] = {}
        if fmt == "kong":  # a file Kong loads; what had to go is listed
            doc, extra["dropped"] = to_kong(doc)
        # Kong returns the config as a (YAML) string; JSON is valid YAML.
        return json_response(200, {"config": orjson.dumps(doc).decode(), "version": state.version,
                                   "etag": state.etag, **extra}, [("ETag", f'"{state.etag}"')])

    async def _post_config(self, call: crud.Call) -> Response:
        req = call.req
        check_hash = req.arg("check_hash")
        if check_hash not in (None, "0", "1", "true", "false"):
            raise HTTPError(400, {"code": 11, "name": "invalid options",
                                  "message": "invalid option (check_hash: expected a boolean)"})
        doc: Any
        if media_type(req) in _YAML_TYPES:  # the body is the document (kong.yml)
            doc = _parse_document(req.body)
        else:
            body = parse_body(req)
            doc = body
            if isinstance(body.get("config"), str):  # -F config=@kong.yml
                doc = _parse_document(body["config"])
        body_hash = hashlib.sha256(orjson.dumps(doc, option=orjson.OPT_SORT_KEYS)).hexdigest()
        if check_hash in ("1", "true") and body_hash == self.store.posted_hash:
            return Response(304, content_type=None)
        try:
            state = await self.store.replace_document(doc, if_match=req.headers.get("if-match"),
                                                      body_hash=body_hash)
        except PreconditionFailed as exc:
            raise HTTPError(412, {"message": f"precondition failed: {exc}",
                                  "etag": exc.current_etag}) from None
        except ConfigError as err:
            raise _declarative_error(err) from None
        return json_response(201, state.document(with_gateway=False),
                             [("ETag", f'"{state.etag}"')])


    async def _reload_config(self, call: crud.Call) -> Response:
        try:
            state = await self.runtime.reload()
        except ConfigError as err:
            raise _declarative_error(err) from None
        return json_response(200, {"message": f"reloaded {self.store.path}",
                                   "version": state.version, "etag": state.etag},
                             [("ETag", f'"{state.etag}"')])


_YAML_TYPES = frozenset({"application/yaml", "application/x-yaml", "text/yaml", "text/x-yaml"})


def _parse_document(text: str | bytes) -> Any:
    """A declarative document sent as text: YAML (which JSON is a part of)."""
    try:
        doc = parse_yaml(text, "config")
    except ConfigError as err:
        raise _declarative_error(err) from None
    if not isinstance(doc, dict):
        raise _declarative_error(ConfigError([("config", "expected a declarative document "
                                                        "(a YAML or JSON object)")]))
    return doc


def _declarative_error(err: ConfigError) -> HTTPError:
    return HTTPError(400, {"code": 14, "name": "invalid declarative configuration",
                           "message": f"declarative config is invalid: {err}",
                           "fields": err.fields,
                           "flattened_errors": [{"path": p, "message": m} for p, m in err.errors]})


def crud_segments(path: str) -> list[str]:
    return split_path(path)
