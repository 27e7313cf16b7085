"""The store's document: its state (``StoreState``), that state as the file's dict
(``dump_document``), and as the file's bytes, re-encoding only what changed since the
last write (``DocumentEncoder``).

An Admin API write changes one entity; the file holds them all. Building the whole
document again (``dump_document``: a dict per entity, routes nested under services) costs
~110 ms for 10,000 services and routes, more than an Admin write may take in all.
``DocumentEncoder`` keeps each collection (a workspace's services with their routes,
upstreams with their targets, loose routes, consumers, plugins, ...) as encoded pieces,
with each top-level item's bytes keyed by entity id and by the entity objects they were
made from. A collection whose source tuples are the very ones of the last write is reused
whole; otherwise each item whose objects are the same (or equal; entities are immutable)
is reused. A write then costs a pass over the changed collection and nothing for the
others. Each item is hashed once, when it is encoded, and the document's digest (the
store's etag) is made of those digests, so no write hashes the whole file either.

The output is byte for byte ``orjson.dumps(dump_document(state), option=OPT_INDENT_2)``
(tests/unit/test_store_writes.py holds it to that), so the file does not depend on which
path wrote it, and the store's etag (a hash of these bytes) is the same after a restart.
Each item is encoded by ``dump_declarative`` itself, on a config holding just that item.
"""

from __future__ import annotations

import hashlib
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
# One encoded item: the entity objects it was made from, its padded bytes, their sha256.
_Item = tuple[tuple[Any, ...], bytes, bytes]
# (a member's key, its value as pieces, the digest of those pieces)
_Member = tuple[str, list[bytes], bytes]


@dataclass(slots=True)
class _Array:
    """One encoded collection: the source tuples it was made from, its pieces, its digest
    (of its items' digests) and its items by entity id."""

    sources: tuple[Any, ...]
    pieces: list[bytes]
    digest: bytes
    items: dict[Any, _Item]


# Collections whose items nest children: the children's foreign key to their parent.
_NESTED = {"services": "service", "upstreams": "upstream", "certificates": "certificate"}
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


def _sha(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def _pad(depth: int) -> bytes:
    return b"  " * depth


def _value(value: Any, depth: int) -> bytes:
    """A JSON value as it appears at ``depth`` of an indented document (first line unpadded)."""
    return orjson.dumps(value, option=_INDENT).replace(b"\n", b"\n" + _pad(depth))


def _plain(key: str, value: Any, depth: int) -> _Member:
    """A member whose value is encoded whole (small: settings, metadata)."""
    encoded = _value(value, depth)
    return key, [encoded], _sha(encoded)


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


def _object(members: list[_Member], depth: int) -> list[bytes]:
    """Pieces of an object whose member values are already encoded for ``depth + 1``."""
    if not members:
        return [b"{}"]
    inner = _pad(depth + 1)
    pieces = [b"{\n"]
    for key, value, _ in members:
        pieces.append(inner + orjson.dumps(key) + b": ")
        pieces += value
        pieces.append(b",\n")
    pieces[-1] = b"\n" + _pad(depth) + b"}"
    return pieces


def _object_digest(members: list[_Member]) -> bytes:
    """What identifies an object's bytes: its keys and its values' digests, in order (the
    layout around them follows from those and the depth)."""
    return _sha(b"".join(orjson.dumps(key) + digest for key, _, digest in members))


class DocumentEncoder:
    """Encodes successive StoreStates; keeps the items of the last one (bounded by it).

    ``digest`` (hex) identifies the bytes of the last ``encode``: a sha256 over the
    digests of their parts, each part hashed once when it was encoded, so a write hashes
    what it encoded, not the 13 MB of a 10,000-service file (the store's etag)."""

    def __init__(self) -> None:
        # Whole collections by (kind, workspace), each with its encoded items by entity id.
        self._arrays: dict[_Key, _Array] = {}
        self.digest = ""

    def encode(self, state: StoreState, *, with_gateway: bool = True) -> list[bytes]:
        """The document as pieces (``b"".join`` them; writing them needs no join)."""
        arrays = self._arrays
        self._arrays = {}
        default = state.configs[DEFAULT_WORKSPACE]
        members = self._collections(default, DEFAULT_WORKSPACE, 0, arrays)
        if with_gateway and state.gateway_raw is not None:
            members.append(_plain("gateway", dict(state.gateway_raw), 1))
        workspaces = []
        workspace_digests = []
        for ws in state.workspaces:
            ws_members = [_plain(k, v, 3) for k, v in workspace_to_dict(ws).items()]
            if ws.name != DEFAULT_WORKSPACE:
                ws_members += [m for m in
                               self._collections(state.configs[ws.name], ws.name, 2, arrays)
                               if m[0] != "_format_version"]
            workspaces.append(_pad(2) + b"".join(_object(ws_members, 2)))
            workspace_digests.append(_object_digest(ws_members))
        members.append(("workspaces", _array(workspaces, 1), _sha(b"".join(workspace_digests))))
        self.digest = _object_digest(members).hex()
        return _object(members, 0)

    @staticmethod
    def _tls_collections(cfg: Config, array: Callable[..., _Member]) -> list[_Member]:
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
            members.append(array(
                "certificates", (cfg.certificates, cfg.snis),
                lambda: [(c, *nested.get(c.id, ())) for c in cfg.certificates]))
        if loose:
            members.append(array("snis", (cfg.snis,), lambda: loose))
        if cfg.ca_certificates:
            members.append(array(
                "ca_certificates", (cfg.ca_certificates,),
                lambda: [(c,) for c in cfg.ca_certificates]))
        return members

    # -- one config's collections, as dump_declarative nests them ---------------------------
    def _collections(self, cfg: Config, workspace: str, depth: int,
                     arrays: dict[_Key, _Array]) -> list[_Member]:
        """Members of a config at ``depth`` (its collections' items sit at depth + 2)."""
        item_depth = depth + 2

        def item(kind: str, parts: tuple[Any, ...], hit: _Item | None) -> _Item:
            """The encoded item of ``parts``: ``hit`` when made from the same entities."""
            if hit is None or hit[0] != parts:  # tuple ==: identity first, then equality
                encoded = _pad(item_depth) + _value(
                    dump_declarative(_ALONE[kind](parts))[kind][0], item_depth)
                hit = (parts, encoded, _sha(encoded))
            return hit

        def array(kind: str, sources: tuple[Any, ...],
                  make: Callable[[], list[tuple[Any, ...]]]) -> _Member:
            """A whole collection, reused as is while its source tuples are the same objects
            (an Admin write replaces one collection and keeps the others); else each item
            is reused while its entity objects are the same (or equal)."""
            key = (kind, workspace)
            old = arrays.get(key)
            if old is not None and len(old.sources) == len(sources) and \
                    all(a is b for a, b in zip(old.sources, sources)):
                self._arrays[key] = old
                return kind, old.pieces, old.digest
            known = old.items if old is not None else {}
            if old is not None and kind in _NESTED and old.sources[0] is sources[0]:
                patched = self._children_changed(
                    old, sources, _NESTED[kind], lambda parts, hit: item(kind, parts, hit))
                if patched is not None:
                    self._arrays[key] = patched
                    return kind, patched.pieces, patched.digest
            items: dict[Any, _Item] = {}
            for parts in make():
                items[parts[0].id] = item(kind, parts, known.get(parts[0].id))
            encoded_items = list(items.values())
            new = _Array(sources, _array([i[1] for i in encoded_items], depth + 1),
                         _sha(b"".join(i[2] for i in encoded_items)), items)
            self._arrays[key] = new
            return kind, new.pieces, new.digest

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

        members = [_plain("_format_version", "3.0", depth + 1),
                   array("services", (cfg.services, cfg.routes), services)]
        if self._has_loose_routes(cfg, workspace, arrays):
            members.append(array("routes", (cfg.routes,), loose))
        members.append(array("upstreams", (cfg.upstreams, cfg.targets), upstreams))
        members.append(array("consumers", (cfg.consumers,),
                             lambda: [(c,) for c in cfg.consumers]))
        members.append(array("plugins", (cfg.plugins,), lambda: [(p,) for p in cfg.plugins]))
        members += self._tls_collections(cfg, array)
        # Kong collections and metadata fastgw keeps verbatim without implementing them.
        members += [_plain(key, v, depth + 1) for key, v in cfg.extra.items()]
        return members

    @staticmethod
    def _children_changed(old: _Array, sources: tuple[Any, ...], fk: str,
                          item: Callable[[tuple[Any, ...], _Item | None], _Item]
                          ) -> _Array | None:
        """``old`` with the items of the parents whose children changed made again: a route
        added to one of 10,000 services encodes that service, not a pass over all of them.
        None when the unchanged children moved relative to each other (rebuild it all)."""
        before, after = old.sources[1], sources[1]
        was, now = set(map(id, before)), set(map(id, after))
        if [c for c in before if id(c) in now] != [c for c in after if id(c) in was]:
            return None  # (list ==: identity first, so this costs a pass, no more)
        touched = {getattr(c, fk) for c in after if id(c) not in was}
        touched.update(getattr(c, fk) for c in before if id(c) not in now)
        touched &= old.items.keys()  # (children without a parent are not nested here)
        if not touched:
            return _Array(sources, old.pieces, old.digest, old.items)
        nested: dict[Any, list[Any]] = {parent: [] for parent in touched}
        for child in after:
            found = nested.get(getattr(child, fk))
            if found is not None:
                found.append(child)
        items = dict(old.items)
        pieces = list(old.pieces)
        for position, parent_id in enumerate(items):  # items are in the parents' order
            if parent_id in touched:
                hit = old.items[parent_id]
                new = item((hit[0][0], *nested[parent_id]), hit)
                items[parent_id] = new
                pieces[1 + 2 * position] = new[1]  # _array: "[", item, ",", item, ...
        return _Array(sources, pieces, _sha(b"".join(i[2] for i in items.values())), items)

    @staticmethod
    def _has_loose_routes(cfg: Config, workspace: str, arrays: dict[_Key, _Array]) -> bool:
        """Any route without a service? Known without a pass over 10,000 routes when the
        routes are the tuple the services' array was made from last time."""
        old = arrays.get(("services", workspace))
        if old is not None and old.sources[1] is cfg.routes:
            return ("routes", workspace) in arrays
        return any(r.service is None for r in cfg.routes)
