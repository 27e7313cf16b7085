"""Endpoints about the API itself: ``/tags`` and ``/endpoints`` (Kong's shapes).

- ``GET /tags``: every (entity, tag) pair of the workspace, as Kong lists its ``tags``
  table: ``{"data": [{"entity_name": "services", "entity_id": ..., "tag": ...}],
  "next": ..., "offset": ...}``; ``GET /tags/{tag}``: the pairs of one tag.
- ``GET /endpoints``: every path the Admin API serves, parameters written ``{name}`` and
  named after the collection they address (``/services/{services}/routes``), sorted
  segment by segment as Kong sorts them.
"""

from __future__ import annotations

from typing import Any, Iterable, Iterator

from fastgw.config.model import Config
from fastgw.controlplane.admin import crud
from fastgw.controlplane.admin.http import Response, json_response

__all__ = ["META_ROUTES", "TAGGED_KINDS", "tag_rows", "endpoint_path", "endpoint_paths"]

TAGGED_KINDS = ("services", "routes", "upstreams", "targets", "consumers", "plugins")
# A parameter right after one of these segments addresses that collection.
_COLLECTIONS = frozenset(TAGGED_KINDS) | {"workspaces", "tags", "certificates",
                                          "ca_certificates", "snis"}


def tag_rows(cfg: Config) -> Iterator[dict[str, Any]]:
    """One row per tag of every entity, collections in Kong's order."""
    for kind in TAGGED_KINDS:
        for entity in getattr(cfg, kind):
            for tag in getattr(entity, "tags", None) or ():
                yield {"entity_name": kind, "entity_id": entity.id, "tag": tag}


async def list_tags(call: crud.Call) -> Response:
    rows = list(tag_rows(call.config))
    return json_response(200, crud.paginate(call.req, rows, dict, numeric=True))


async def list_tag(call: crud.Call) -> Response:
    tag = call.params["tags"]
    rows = [r for r in tag_rows(call.config) if r["tag"] == tag]
    return json_response(200, crud.paginate(call.req, rows, dict, numeric=True))


def endpoint_path(pattern: tuple[str, ...]) -> str:
    """``("services", "{id}", "routes")`` -> ``/services/{services}/routes``."""
    segs: list[str] = []
    for i, seg in enumerate(pattern):
        before = pattern[i - 1] if i else ""
        if seg.startswith("{") and before in _COLLECTIONS and pattern[0] != "schemas":
            seg = "{" + before + "}"
        segs.append(seg)
    return "/" + "/".join(segs)


def endpoint_paths(patterns: Iterable[tuple[str, ...]]) -> list[str]:
    """Every pattern's ``endpoint_path``, sorted as Kong sorts them."""
    paths = {endpoint_path(p) for p in patterns}
    # Kong sorts with "/" as the lowest character: /a, /a/z, /ab (segment by segment).
    return sorted(paths, key=lambda p: p.replace("/", "\x00"))


META_ROUTES: list[crud.Route] = [
    (("tags",), {"GET": list_tags}),
    (("tags", "{tags}"), {"GET": list_tag}),
]
