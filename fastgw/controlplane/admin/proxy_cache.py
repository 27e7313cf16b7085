"""Kong's proxy-cache Admin API (``kong/plugins/proxy-cache/api.lua``).

``DELETE /proxy-cache`` empties every cache (204); ``GET|DELETE /proxy-cache/{cache_key}``
answers the stored object or purges it (404 when no worker has it);
``GET|DELETE /proxy-cache/{plugin_id}/caches/{cache_key}`` the same after checking that
the plugin exists (404 otherwise). The workers each have a cache: the question goes to
all of them (``CacheSource``, the supervisor's ``fastgw.controlplane.cache_admin``); a
purge succeeds when any had the key, a look-up answers the first one found.
"""

from __future__ import annotations

from typing import Any

from fastgw.controlplane.admin import entities as E
from fastgw.controlplane.admin.call import CacheSource, Call
from fastgw.controlplane.admin.http import Response, json_response

__all__ = ["CacheSource", "NoWorkerCaches", "PROXY_CACHE_ROUTES"]


class NoWorkerCaches:
    """An Admin API without a supervisor: no worker, so nothing is cached."""

    async def ask(self, op: str, key: str | None = None) -> list[dict[str, Any]]:
        return []


def _caches(call: Call) -> CacheSource:
    return call.api.caches


async def flush_caches(call: Call) -> Response:
    await _caches(call).ask("flush")
    return Response(204, content_type=None)


async def get_cached(call: Call) -> Response:
    _plugin_exists(call)
    for answer in await _caches(call).ask("get", call.params["cache_key"]):
        if answer.get("found") and answer.get("entry") is not None:
            return json_response(200, answer["entry"])
    raise E.not_found()


async def purge_cached(call: Call) -> Response:
    _plugin_exists(call)
    answers = await _caches(call).ask("purge", call.params["cache_key"])
    if not any(a.get("found") for a in answers):
        raise E.not_found()
    return Response(204, content_type=None)


def _plugin_exists(call: Call) -> None:
    plugin_id = call.params.get("plugin_id")
    if plugin_id is None:
        return
    plugins = call.api.store.state.merged.plugins
    if not any(p.id == plugin_id and p.name == "proxy-cache" for p in plugins):
        raise E.not_found()


PROXY_CACHE_ROUTES: list[tuple[tuple[str, ...], dict[str, Any]]] = [
    (("proxy-cache",), {"DELETE": flush_caches}),
    (("proxy-cache", "{cache_key}"), {"GET": get_cached, "DELETE": purge_cached}),
    (("proxy-cache", "{plugin_id}", "caches", "{cache_key}"),
     {"GET": get_cached, "DELETE": purge_cached}),
]
