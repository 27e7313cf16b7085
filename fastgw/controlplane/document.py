"""The store's document: its state (``StoreState``), that state as the file's dict
(``dump_document``), and as the file's bytes, re-encoding only what changed since the
last write (``DocumentEncoder``).

An Admin API write changes one entity; the file holds them all. Building the whole
document again (``dump_document``: a dict per entity, routes nested under services) costs
~110 ms for 10,000 services and routes, more than an Admin write may take in all.
``DocumentEncoder`` keeps each top-level item (a service with its routes, an upstream with
its targets, a loose route, a consumer, a plugin) as encoded bytes, keyed by the entity
objects it was made from; entities are immutable, so an item whose objects are the same
(or equal) encodes to the same bytes and is reused. A write then costs a pass over the
entities and one join.

The output is byte for byte ``orjson.dumps(dump_document(state), option=OPT_INDENT_2)``
(tests/unit/test_store_writes.py holds it to that), so the file does not depend on which
path wrote it, and the store's etag (a hash of these bytes) is the same after a restart.
Each item is encoded by ``dump_declarative`` itself, on a config holding just that item.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from fastgw.config.declarative import dump_declarative, is_entity_key
from fastgw.config.model import Config
from fastgw.config.workspaces import DEFAULT_WORKSPACE, Workspace, workspace_to_dict

__all__ = ["DocumentEncoder", "StoreState", "dump_document"]


@dataclass(frozen=True, slots=True)
class StoreState:
    version: int
    workspaces: tuple[Workspace, ...]  # default first
    configs: Mapping[str, Config]  # workspace name -> its entities (gateway = effective)
    gateway_raw: Mapping[str, Any] | None  # the file's section, verbatim
    etag: str = ""
    merged: Config = field(default_factory=Config)  # every workspace, for the data plane

    def workspace(self, key: str) -> Workspace | None:
        for ws in self.workspaces:
            if ws.id == key or ws.name == key:
                return ws
        return None

    def document(self, *, with_gateway: bool = True) -> dict[str, Any]:
        return dump_document(self, with_gateway=with_gateway)

    def snapshot(self) -> dict[str, Any]:
        """Per-workspace declarative dicts: what a worker needs to rebuild the merged config."""
        return {name: dump_declarative(cfg) for name, cfg in self.configs.items()}


def dump_document(state: StoreState, *, with_gateway: bool = True) -> dict[str, Any]:
    out = dump_declarative(state.configs[DEFAULT_WORKSPACE])
    out.pop("gateway", None)
    if with_gateway and state.gateway_raw is not None:
        out["gateway"] = dict(state.gateway_raw)
    wss = []
    for ws in state.workspaces:
        item = workspace_to_dict(ws)
        if ws.name != DEFAULT_WORKSPACE:
            sub = dump_declarative(state.configs[ws.name])
            item.update({k: v for k, v in sub.items() if is_entity_key(k)})
        wss.append(item)
    out["workspaces"] = wss
    return out


_INDENT = orjson.OPT_INDENT_2
_Key = tuple[Any, ...]
# (source tuples, (pieces, item keys)) of one encoded collection
_CachedArray = tuple[tuple[Any, ...], tuple[list[bytes], list[_Key]]]
# A config holding one top-level item (and its nested children), for dump_declarative.
_ALONE: dict[str, Callable[[tuple[Any, ...]], Config]] = {
    "services": lambda parts: Config(services=parts[:1], routes=parts[1:]),
    "upstreams": lambda parts: Config(upstreams=parts[:1], targets=parts[1:]),
    "routes": lambda parts: Config(routes=parts),
    "consumers": lambda parts: Config(consumers=parts),
    "plugins": lambda parts: Config(plugins=parts),
    "certificates": lambda parts: Config(certificates=parts[:1], snis=parts[1:]),
    "snis": lambda parts: Config(snis=parts),
    "ca_certificates": lambda parts: Config(ca_certificates=parts),
}


def _pad(depth: int) -> bytes:
    return b"  " * depth


def _value(value: Any, depth: int) -> bytes:
    """A JSON value as it appears at ``depth`` of an indented document (first line unpadded)."""
    return orjson.dumps(value, option=_INDENT).replace(b"\n", b"\n" + _pad(depth))


def _array(items: list[bytes], depth: int) -> list[bytes]:
    """Pieces of an array of already padded items (``depth``: the array's own)."""
    if not items:
        return [b"[]"]
    pieces = [b"[\n"]
    for item in items:
        pieces.append(item)
        pieces.append(b",\n")
    pieces[-1] = b"\n" + _pad(depth) + b"]"
    return pieces


def _object(members: list[tuple[str, list[bytes]]], depth: int) -> list[bytes]:
    """Pieces of an object whose member values are already encoded for ``depth + 1``."""
    if not members:
        return [b"{}"]
    inner = _pad(depth + 1)
    pieces = [b"{\n"]
    for key, value in members:
        pieces.append(inner + orjson.dumps(key) + b": ")
        pieces += value
        pieces.append(b",\n")
    pieces[-1] = b"\n" + _pad(depth) + b"}"
    return pieces


class DocumentEncoder:
    """Encodes successive StoreStates; keeps the items of the last one (bounded by it)."""

    def __init__(self) -> None:
        # Encoded items by (kind, id, depth), and whole arrays by (kind, workspace): each
        # with the objects it was made from.
        self._items: dict[_Key, tuple[tuple[Any, ...], bytes]] = {}
        self._fresh: dict[_Key, tuple[tuple[Any, ...], bytes]] = {}
        self._arrays: dict[_Key, _CachedArray] = {}

    def encode(self, state: StoreState, *, with_gateway: bool = True) -> list[bytes]:
        """The document as pieces (``b"".join`` them; writing them needs no join)."""
        self._fresh = {}
        arrays = self._arrays
        self._arrays = {}
        default = state.configs[DEFAULT_WORKSPACE]
        members = self._collections(default, DEFAULT_WORKSPACE, 0, arrays)
        if with_gateway and state.gateway_raw is not None:
            members.append(("gateway", [_value(dict(state.gateway_raw), 1)]))
        workspaces = []
        for ws in state.workspaces:
            ws_members = [(k, [_value(v, 3)]) for k, v in workspace_to_dict(ws).items()]
            if ws.name != DEFAULT_WORKSPACE:
                ws_members += [(k, v) for k, v in
                               self._collections(state.configs[ws.name], ws.name, 2, arrays)
                               if k != "_format_version"]
            workspaces.append(_pad(2) + b"".join(_object(ws_members, 2)))
        members.append(("workspaces", _array(workspaces, 1)))
        self._items = self._fresh
        return _object(members, 0)

    @staticmethod
    def _tls_collections(cfg: Config, array: Callable[..., list[bytes]]
                         ) -> list[tuple[str, list[bytes]]]:
        """Certificates with their SNIs nested, loose SNIs, CA certificates: only when there
        are some (as dump_declarative writes them)."""
        cert_ids = {c.id for c in cfg.certificates}
        nested: dict[str, list[Any]] = {}
        loose = []
        for sni in cfg.snis:
            if sni.certificate in cert_ids:
                nested.setdefault(sni.certificate, []).append(sni)
            else:
                loose.append((sni,))
        members = []
        if cfg.certificates:
            members.append(("certificates", array(
                "certificates", (cfg.certificates, cfg.snis),
                lambda: [(c, *nested.get(c.id, ())) for c in cfg.certificates])))
        if loose:
            members.append(("snis", array("snis", (cfg.snis,), lambda: loose)))
        if cfg.ca_certificates:
            members.append(("ca_certificates", array(
                "ca_certificates", (cfg.ca_certificates,),
                lambda: [(c,) for c in cfg.ca_certificates])))
        return members

    # -- one config's collections, as dump_declarative nests them ---------------------------
    def _collections(self, cfg: Config, workspace: str, depth: int,
                     arrays: dict[_Key, _CachedArray]) -> list[tuple[str, list[bytes]]]:
        """Members of a config at ``depth`` (its collections' items sit at depth + 2)."""
        item_depth = depth + 2

        def item(kind: str, parts: tuple[Any, ...]) -> bytes:
            key = (kind, parts[0].id, item_depth)
            hit = self._items.get(key)
            if hit is None or hit[0] != parts:  # tuple ==: identity first, then equality
                encoded = _value(dump_declarative(_ALONE[kind](parts))[kind][0], item_depth)
                hit = (parts, _pad(item_depth) + encoded)
            self._fresh[key] = hit
            return hit[1]

        def array(kind: str, sources: tuple[Any, ...],
                  make: Callable[[], list[tuple[Any, ...]]]) -> list[bytes]:
            """A whole collection, reused as is while its source tuples are the same objects
            (an Admin write replaces one collection and keeps the others)."""
            key = (kind, workspace)
            hit = arrays.get(key)
            if hit is not None and len(hit[0]) == len(sources) and \
                    all(a is b for a, b in zip(hit[0], sources)):
                for parts_key in hit[1][1]:
                    self._fresh[parts_key] = self._items[parts_key]
                self._arrays[key] = hit
                return hit[1][0]
            parts = make()
            pieces = _array([item(kind, p) for p in parts], depth + 1)
            keys = [(kind, p[0].id, item_depth) for p in parts]
            self._arrays[key] = (sources, (pieces, keys))
            return pieces

        routes: dict[str | None, list[Any]] = {}
        targets: dict[str, list[Any]] = {}

        def group_routes() -> None:
            if not routes:
                for r in cfg.routes:
                    routes.setdefault(r.service, []).append(r)

        def services() -> list[tuple[Any, ...]]:
            group_routes()
            return [(s, *routes.get(s.id, ())) for s in cfg.services]

        def loose() -> list[tuple[Any, ...]]:
            group_routes()
            return [(r,) for r in routes.get(None, ())]

        def upstreams() -> list[tuple[Any, ...]]:
            for t in cfg.targets:
                targets.setdefault(t.upstream, []).append(t)
            return [(u, *targets.get(u.id, ())) for u in cfg.upstreams]

        members = [("_format_version", [b'"3.0"']),
                   ("services", array("services", (cfg.services, cfg.routes), services))]
        if any(r.service is None for r in cfg.routes):
            members.append(("routes", array("routes", (cfg.routes,), loose)))
        members.append(("upstreams", array("upstreams", (cfg.upstreams, cfg.targets), upstreams)))
        members.append(("consumers", array("consumers", (cfg.consumers,),
                                           lambda: [(c,) for c in cfg.consumers])))
        members.append(("plugins", array("plugins", (cfg.plugins,),
                                         lambda: [(p,) for p in cfg.plugins])))
        members += self._tls_collections(cfg, array)
        # Kong collections and metadata fastgw keeps verbatim without implementing them.
        members += [(key, [_value(v, depth + 1)]) for key, v in cfg.extra.items()]
        return members
