"""Kong collections fastgw keeps but does not run yet, served read-only.

A Kong file's ``certificates``, ``ca_certificates`` and ``snis`` are kept verbatim in
``Config.extra`` (DESIGN.md: configuration is the user's data). Their endpoints list
what is kept, in Kong's list shape, so clients that read them (Kong Manager's service
and upstream forms ask ``/certificates?size=1000``) get a valid, usually empty, answer.
Writes are the TLS issue's; until then they answer 405 like any method an endpoint lacks.
"""

from __future__ import annotations

from functools import partial
from typing import Any

from fastgw.controlplane.admin import crud
from fastgw.controlplane.admin import entities as E
from fastgw.controlplane.admin.http import Response, json_response

__all__ = ["KEPT_ROOTS", "KEPT_ROUTES"]

KEPT_ROOTS = ("certificates", "ca_certificates", "snis")


def _kept(call: crud.Call, kind: str) -> list[dict[str, Any]]:
    items = call.config.extra.get(kind)
    return [e for e in items if isinstance(e, dict)] if isinstance(items, list) else []


async def list_kept(call: crud.Call, kind: str) -> Response:
    return json_response(200, crud.paginate(call.req, _kept(call, kind), dict, numeric=True))


async def get_kept(call: crud.Call, kind: str) -> Response:
    key = call.params["id"]
    for item in _kept(call, kind):
        if key in (item.get("id"), item.get("name")):
            return json_response(200, item)
    raise E.not_found()


KEPT_ROUTES: list[crud.Route] = [
    route for kind in KEPT_ROOTS for route in (
        ((kind,), {"GET": partial(list_kept, kind=kind)}),
        ((kind, "{id}"), {"GET": partial(get_kept, kind=kind)}),
    )
]
