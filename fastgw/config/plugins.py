"""Config schemas of the plugins fastgw executes (pure; used by ``validate.py``).

A plugin listed here has its ``config`` validated and defaulted like any Kong record, so
a bad value is a ``schema violation`` at write time instead of a surprise at run time.
Plugins not listed are kept as free-form data and reported as not executed.

``canary`` is Kong Enterprise's Canary Release plugin (reference/kong.md §6), accepted
as is, plus fastgw's ``hash: "cookie"`` with ``hash_cookie`` (the cookie's name).
"""

from __future__ import annotations

import time
from typing import Any, Callable

from fastgw.config import model as _m
from fastgw.config.schema import Errors, Field, join

__all__ = ["PLUGIN_SCHEMAS", "PLUGIN_CHECKS", "CANARY"]

_COND = "failed conditional validation given value of field '{}'"


def _uri_error(value: str) -> str | None:
    return None if value.startswith("/") else "should start with: /"


CANARY: dict[str, Field] = {
    "percentage": Field("number", between=(0, 100)),
    "start": Field("number"),
    "duration": Field("number", default=3600, between=(1, 2**31)),
    "steps": Field("number", default=1000, between=(1, 2**31)),
    "hash": Field("string", default="consumer",
                  one_of=("consumer", "ip", "header", "cookie", "none", "allow", "deny")),
    "hash_header": Field("string", validator=_m.header_name_error),
    "hash_cookie": Field("string", validator=_m.cookie_name_error),
    "groups": Field("array", elements=Field("string")),
    "canary_by_header_name": Field("string", validator=_m.header_name_error),
    "upstream_host": Field("string", validator=_m.host_error),
    "upstream_port": Field("integer", between=(0, 65535)),
    "upstream_uri": Field("string", validator=_uri_error),
    "upstream_fallback": Field("boolean", default=False),
}


def _check_canary(config: dict[str, Any], path: str, errors: Errors) -> None:
    entity = join(path, "@entity")
    if config.get("upstream_host") is None and config.get("upstream_uri") is None:
        errors.append((entity, "at least one of these fields must be non-empty: "
                       "'config.upstream_uri', 'config.upstream_host'"))
    for kind, companion in (("header", "hash_header"), ("cookie", "hash_cookie")):
        if config.get("hash") == kind and not config.get(companion):
            errors += [(entity, _COND.format("config.hash")),
                       (join(path, f"config.{companion}"), "required field missing")]
    if config.get("hash") in ("allow", "deny") and not config.get("groups"):
        errors += [(entity, _COND.format("config.hash")),
                   (join(path, "config.groups"), "required field missing")]
    if config.get("percentage") is None and config.get("start") is None:
        # Kong 3.2.1+: a time-based rollout starts when the plugin is created. The store
        # saves the filled-in value, so the rollout does not restart on every load.
        config["start"] = int(time.time())


PLUGIN_SCHEMAS: dict[str, dict[str, Field]] = {"canary": CANARY}
PLUGIN_CHECKS: dict[str, Callable[[dict[str, Any], str, Errors], None]] = {
    "canary": _check_canary,
}
