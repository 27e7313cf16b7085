"""Configuration errors with Kong's wording (pure, no I/O).

Errors are ``(path, message)`` pairs with full paths such as
``services[0].routes[1].paths[0]``; ``ConfigError`` renders them the way Kong's
``schema violation`` messages do, with field names relative to their entity, and
``fields`` nests them into Kong's ``fields`` body.
"""

from __future__ import annotations

import re
from typing import Any, Iterable

__all__ = ["ConfigError", "entity_prefix", "errors_to_fields", "render_errors"]


_COLLECTIONS = ("services|routes|upstreams|targets|consumers|plugins|certificates|snis|"
                "ca_certificates")
_ENTITY_RE = re.compile(rf"^((?:(?:{_COLLECTIONS})\[\d+\]\.)*(?:{_COLLECTIONS})\[\d+\]|gateway)(?:\.(.*))?$")
_SEG_RE = re.compile(r"([^.\[\]]+)|\[(\d+)\]")


def entity_prefix(path: str) -> tuple[str, str]:
    """Split ``services[0].routes[1].paths[0]`` into (``services[0].routes[1]``, ``paths[0]``)."""
    m = _ENTITY_RE.match(path)
    if not m:
        return "", path
    return m.group(1), m.group(2) or ""


class ConfigError(Exception):
    """Invalid configuration; carries every error found.

    ``errors``: ``[(full_path, message)]``. ``fields``: nested dict mirroring Kong's
    ``fields`` body (entity-level errors under ``"@entity"``). ``str(err)`` is Kong's
    ``schema violation`` wording, one clause per entity.
    """

    def __init__(self, errors: Iterable[tuple[str, str]], message: str | None = None) -> None:
        self.errors: list[tuple[str, str]] = list(errors)
        self.message = message if message is not None else render_errors(self.errors)
        super().__init__(self.message)

    def __str__(self) -> str:
        return self.message

    def __reduce__(self) -> tuple[Any, ...]:  # picklable across worker processes
        return (ConfigError, (self.errors, self.message))

    @property
    def fields(self) -> dict[str, Any]:
        return errors_to_fields(self.errors)

    def lines(self) -> list[str]:
        """Human-readable ``path: message`` lines (``fastgw check``)."""
        return [f"{p}: {m}" if p else m for p, m in self.errors]


def render_errors(errors: list[tuple[str, str]]) -> str:
    groups: dict[str, list[tuple[str, str]]] = {}
    for path, msg in errors:
        ent, rel = entity_prefix(path)
        groups.setdefault(ent, []).append((rel, msg))
    parts = []
    for ent, errs in groups.items():
        # Kong lists @entity (whole-entity) errors first, without a field name.
        ordered = [m for r, m in errs if r in ("", "@entity")]
        ordered += [f"{r}: {m}" for r, m in errs if r not in ("", "@entity")]
        n = len(ordered)
        body = ("schema violation" if n == 1 else f"{n} schema violations") + f" ({'; '.join(ordered)})"
        parts.append(f"{ent}: {body}" if ent else body)
    return "; ".join(parts) if parts else "invalid configuration"


def errors_to_fields(errors: list[tuple[str, str]]) -> dict[str, Any]:
    """Nest ``a[0].b`` paths into Kong's ``fields`` shape (lists padded with None)."""
    root: dict[str, Any] = {}
    for path, msg in errors:
        segs = [int(i) if i else n for n, i in _SEG_RE.findall(path)] or ["@entity"]
        cur: Any = root
        for seg, nxt in zip(segs, segs[1:] + [None]):
            if seg == "@entity" and isinstance(cur, dict):
                cur.setdefault("@entity", []).append(msg)
                break
            if isinstance(seg, int) != isinstance(cur, list):
                break  # shape clash (same path used as field and index): keep the first
            if isinstance(cur, list):
                cur.extend([None] * (seg + 1 - len(cur)))
                have = cur[seg]
            else:
                have = cur.get(seg)
            if nxt is None:
                if have is None:
                    cur[seg] = msg
                break
            if not isinstance(have, (dict, list)):
                cur[seg] = [] if isinstance(nxt, int) else {}
            cur = cur[seg]
    return root
