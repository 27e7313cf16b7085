"""Real Kong declarative files (tests/fixtures/kong) and the check that a stored config
still holds every entity and field of the file it started from."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastgw.config import SUPPORTED_PLUGINS
from fastgw.config.loader import parse_yaml
from fastgw.config.model import entity_to_dict
from fastgw.controlplane.store import parse_document

__all__ = ["KONG_FILES", "LOADABLE_KONG_FILES", "entity_fields", "lost_fields",
           "plugins_not_run", "read_kong_file"]

KONG_FILES = sorted(p for p in (Path(__file__).parent.parent / "fixtures" / "kong").iterdir()
                    if p.suffix in (".yml", ".yaml"))
_KINDS = ("services", "routes", "upstreams", "targets", "consumers", "plugins", "certificates",
          "snis", "ca_certificates")
_TIMESTAMPS = ("created_at", "updated_at")


def read_kong_file(path: Path) -> dict[str, Any]:
    return parse_yaml(path.read_bytes(), path.name)


def entity_fields(document: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    """Every entity of the default workspace by (kind, id), as the Admin API renders it
    (nesting, name references and the `url` shorthand resolved), and every top-level
    collection fastgw does not implement by ("extra", key)."""
    _, configs, _ = parse_document(document, env={})
    config = configs["default"]
    out: dict[tuple[str, str], dict[str, Any]] = {}
    for kind in _KINDS:
        for entity in getattr(config, kind):
            fields = entity_to_dict(entity)
            for ts in _TIMESTAMPS:  # filled in at load time when a file has none
                fields.pop(ts, None)
            out[(kind, entity.id)] = fields
    for key, value in config.extra.items():
        out[("extra", key)] = {"value": value}
    return out


def lost_fields(original: dict[str, Any], stored: dict[str, Any],
                changed: dict[tuple[str, str], set[str]] | None = None) -> list[str]:
    """What of ``original`` is missing or different in ``stored`` (fields listed in
    ``changed``, per entity, were changed on purpose and are not compared)."""
    before, after = entity_fields(original), entity_fields(stored)
    problems = []
    for key, fields in before.items():
        now = after.get(key)
        if now is None:
            problems.append(f"{key[0]} {key[1]}: gone")
            continue
        skip = (changed or {}).get(key, set())
        for name, value in fields.items():
            if name not in skip and now.get(name, "<missing>") != value:
                problems.append(f"{key[0]} {key[1]}.{name}: {value!r} became "
                                f"{now.get(name, '<missing>')!r}")
    return problems


def plugins_not_run(document: Any) -> set[str]:
    """Names of the plugin entities of a Kong file that fastgw does not run."""
    found: set[str] = set()

    def walk(node: Any, key: str | None = None) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                walk(v, k)
        elif isinstance(node, list):
            for item in node:
                if key == "plugins" and isinstance(item, dict) and "name" in item:
                    if item["name"] not in SUPPORTED_PLUGINS:
                        found.add(item["name"])
                walk(item, key)

    for kind in ("services", "routes", "consumers", "plugins"):
        walk(document.get(kind), kind)
    return found


# The files whose plugins fastgw all runs (the others are refused: tests/unit).
LOADABLE_KONG_FILES = [p for p in KONG_FILES if not plugins_not_run(read_kong_file(p))]
