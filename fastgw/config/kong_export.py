"""fastgw's store document -> a declarative file Kong loads (``fastgw config export --kong``,
``GET /config?format=kong``). Pure.

Kong refuses fields it does not know, so fastgw's own settings are dropped, and each drop
that changes behaviour is named (the caller prints them): the ``gateway`` node settings
(Kong's live in kong.conf), the non-default ``workspaces`` (Kong's declarative format is
one workspace per file) and the health-check extensions of docs/traffic.md. Everything
else, Kong fields fastgw does not implement included, is Kong's already and is kept.
"""

from __future__ import annotations

import copy
from typing import Any

__all__ = ["FASTGW_HEALTHCHECK_FIELDS", "to_kong"]

# fastgw-only healthchecks fields, with the value at which fastgw behaves as Kong does.
FASTGW_HEALTHCHECK_FIELDS: dict[tuple[str, ...], float] = {
    ("panic_threshold",): 0,
    ("slow_start",): 0,
    ("passive", "base_ejection_time"): 0,
    ("passive", "max_ejection_time"): 0,
}


def _pop(record: dict[str, Any], path: tuple[str, ...]) -> tuple[bool, Any]:
    for key in path[:-1]:
        record = record.get(key)  # type: ignore[assignment]
        if not isinstance(record, dict):
            return False, None
    if path[-1] not in record:
        return False, None
    return True, record.pop(path[-1])


def to_kong(document: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """(Kong declarative document, what was dropped and why, one line each)."""
    out = copy.deepcopy(document)
    dropped: list[str] = []
    if out.pop("gateway", None) is not None:
        dropped.append("gateway: fastgw node settings (Kong's are in kong.conf)")
    for ws in out.pop("workspaces", None) or []:
        kinds = [k for k in ("services", "routes", "upstreams", "consumers", "plugins")
                 if ws.get(k)]
        if ws.get("name") != "default" and kinds:
            dropped.append(f"workspaces[{ws.get('name')}]: its {', '.join(kinds)} (one Kong "
                           "declarative file holds one workspace)")
    for upstream in out.get("upstreams") or []:
        checks = upstream.get("healthchecks")
        if not isinstance(checks, dict):
            continue
        base = ((checks.get("passive") or {}).get("base_ejection_time") or 0)
        for path, kong_value in FASTGW_HEALTHCHECK_FIELDS.items():
            found, value = _pop(checks, path)
            if not found or value in (None, kong_value):
                continue
            if path[-1] == "max_ejection_time" and not base:
                continue  # a cap on nothing: no behaviour is lost
            dropped.append(f"upstreams[{upstream.get('name')}].healthchecks.{'.'.join(path)}"
                           f"={value}: fastgw-only (Kong behaves as {kong_value})")
    for kind in ("services", "routes", "upstreams", "consumers", "plugins"):
        out[kind] = [_without_nulls(e) for e in out.get(kind) or []]
    for kind in ("certificates", "snis", "ca_certificates"):
        if kind in out:
            out[kind] = [_without_nulls(e) for e in out[kind] or []]
    out["_format_version"] = "3.0"
    return out, dropped


_CHILDREN = ("routes", "targets", "plugins", "snis")


def _without_nulls(entity: Any) -> Any:
    """An entity without its null fields (Kong fills the same defaults), children too;
    plugin ``config`` is left alone (a null there is the plugin's business)."""
    if not isinstance(entity, dict):
        return entity
    out = {k: v for k, v in entity.items() if v is not None}
    for child in _CHILDREN:
        if isinstance(out.get(child), list):
            out[child] = [_without_nulls(c) for c in out[child]]
    return out
