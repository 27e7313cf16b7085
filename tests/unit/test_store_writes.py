"""The store's write path: incremental file encoding, local checks instead of a round trip,
and hand edits that are never overwritten (issue 14)."""

from __future__ import annotations

import asyncio
import os
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

import orjson
import pytest
import trustme

from fastgw.config import ConfigError
from fastgw.config.model import Config
from fastgw.controlplane.admin import entities as E
from fastgw.controlplane.store import (
    FileChangedOnDisk,
    FileConfigStore,
    atomic_write,
    dump_document,
)
from tests.support.certs import ca_pem, issue

CA = trustme.CA()
EDGE, OTHER = issue(CA, "a.example"), issue(CA, "b.example")
DOC: dict[str, Any] = {
    "_format_version": "3.0",
    # Kong data fastgw keeps verbatim without enforcing it (Config.extra, entity extra)
    "_info": {"select_tags": ["a"]},
    "certificates": [{**EDGE.entity(), "snis": [{"name": "a.example"}]}],
    "ca_certificates": [{"cert": ca_pem(CA)}],
    "upstreams": [{"name": "u", "targets": [{"target": "10.0.0.1:80", "failover": True},
                                            {"target": "10.0.0.2:80", "weight": 5}],
                   "sticky_sessions_cookie": "c",
                   "healthchecks": {"active": {"healthy": {"interval": 5}}}}],
    "services": [{"name": f"s{i}", "host": "u", "tags": ["t"],
                  "routes": [{"name": f"r{i}", "paths": [f"/s{i}"], "headers": {"x-a": ["b"]}}]}
                 for i in range(4)],
    "routes": [{"name": "loose", "hosts": ["example.com"]}],
    "consumers": [{"username": "ann", "custom_id": "c1"}],
    "plugins": [{"name": "canary", "service": "s1", "config": {"percentage": 10,
                                                                "upstream_host": "u"}}],
    "gateway": {"workers": 1, "drain_timeout": 3},
    "workspaces": [{"name": "team", "services": [{"name": "s0", "host": "h", "routes": [
        {"name": "tr", "paths": ["/team"]}]}], "upstreams": [{"name": "tu"}],
                    "vaults": [{"name": "env", "prefix": "team-env"}]}],
}


def _open(tmp_path: Path, doc: dict[str, Any] = DOC) -> FileConfigStore:
    path = tmp_path / "config.json"
    path.write_bytes(orjson.dumps(doc, option=orjson.OPT_INDENT_2))
    return FileConfigStore.open(str(path))


def _slow_bytes(store: FileConfigStore) -> bytes:
    return orjson.dumps(dump_document(store.state), option=orjson.OPT_INDENT_2) + b"\n"


def _write(store: FileConfigStore, ws: str,
           change: Callable[[Config], Config]) -> None:
    async def go() -> None:
        async with store.lock:
            configs = dict(store.state.configs)
            configs[ws] = change(configs[ws])
            await store.commit(store.state.workspaces, configs)

    asyncio.run(go())


def _service(cfg: Config, name: str) -> Any:
    found = cfg.service(name)
    assert found is not None
    return found


CHANGES: list[tuple[str, Callable[[Config], Config]]] = [
    ("default", lambda c: E.create(c, "routes", {"paths": ["/mid"]},
                                   ("service", _service(c, "s1").id))[0]),
    ("default", lambda c: E.update(c, "targets", c.targets[1], {"weight": 9})[0]),
    # a route moved to another service, one deleted: two services' items change
    ("default", lambda c: E.update(c, "routes", c.route("r2"),
                                   {"service": {"id": _service(c, "s3").id}})[0]),
    ("default", lambda c: E.delete(c, "routes", c.route("r0"))),
    ("default", lambda c: E.delete(c, "targets", c.targets[0])),
    ("default", lambda c: E.create(c, "services", {"name": "new", "host": "u"})[0]),
    ("default", lambda c: E.create(c, "plugins", {"name": "canary", "route": {"id": c.routes[0].id},
                                                  "config": {"percentage": 1,
                                                             "upstream_host": "u"}})[0]),
    ("default", lambda c: E.delete(c, "upstreams", c.upstreams[0])),
    ("default", lambda c: E.create(c, "consumers", {"username": "bob"})[0]),
    ("team", lambda c: E.create(c, "routes", {"paths": ["/team2"]},
                                ("service", _service(c, "s0").id))[0]),
    ("default", lambda c: _with_snis(*E.create(c, "certificates", OTHER.entity()),
                                     ["b.example", "*.b.example"])),
    ("default", lambda c: E.create(c, "snis", {"name": "a2.example",
                                               "certificate": {"id": c.certificates[0].id}})[0]),
    ("default", lambda c: E.delete(c, "certificates", c.certificates[0])),
]


def _with_snis(cfg: Config, cert: Any, names: list[str]) -> Config:
    return E.certificate_snis(cfg, cert.id, names)


def test_file_bytes_are_the_documents_whatever_path_wrote_them(tmp_path: Path) -> None:
    store = _open(tmp_path)
    assert b"".join(store.encoder.encode(store.state)) + b"\n" == _slow_bytes(store)
    path = Path(store.path)
    for ws, change in CHANGES:
        _write(store, ws, change)
        on_disk = path.read_bytes()
        assert on_disk == _slow_bytes(store)
        # A restart loads the same state, with the same etag.
        reopened = FileConfigStore.open(store.path)
        assert reopened.state.configs == store.state.configs
        assert reopened.state.etag == store.state.etag


def test_local_checks_accept_what_the_round_trip_accepts(tmp_path: Path) -> None:
    """An Admin API write is checked locally (no dump/load of the whole document); the state
    it makes must be the one the full round trip makes: same entities, same order."""
    store = _open(tmp_path)
    for ws, change in CHANGES:
        state = store.state
        configs = dict(state.configs)
        configs[ws] = change(configs[ws])
        local = store.check_write(state.workspaces, configs)
        full = store.validate(state.workspaces, configs)
        assert local.configs == full.configs
        for name in full.configs:
            for kind in ("services", "routes", "upstreams", "targets", "consumers", "plugins",
                         "certificates", "snis", "ca_certificates"):
                assert [e.id for e in getattr(local.configs[name], kind)] == \
                    [e.id for e in getattr(full.configs[name], kind)]
        _write(store, ws, change)


def test_local_checks_refuse_dangling_references_and_collisions(tmp_path: Path) -> None:
    store = _open(tmp_path)
    state = store.state
    default = state.configs["default"]
    missing = {"id": "5b1d0b3e-6a0c-4f53-9a43-2f1e0c6a7b11"}
    orphan = E.build_entity("routes", {"paths": ["/x"], "service": missing})[0]
    with pytest.raises(ConfigError, match="invalid reference"):
        store.check_write(state.workspaces, {**state.configs,
                                             "default": E._store(default, "routes", orphan)})
    team = state.configs["team"]
    clash = E.create(team, "routes", {"paths": ["/s0"], "headers": {"x-a": ["b"]}},
                     ("service", team.services[0].id))[0]
    with pytest.raises(ConfigError, match="collides"):
        store.check_write(state.workspaces, {**state.configs, "team": clash})


def _add_consumer(store: FileConfigStore, name: str) -> None:
    _write(store, "default", lambda c: E.create(c, "consumers", {"username": name})[0])


def test_hand_edit_is_never_overwritten(tmp_path: Path) -> None:
    store = _open(tmp_path)
    path = Path(store.path)
    _add_consumer(store, "first")  # the store's own write is no edit
    doc = orjson.loads(path.read_bytes())
    doc["services"].append({"name": "by-hand", "host": "example.com"})
    edited = orjson.dumps(doc)  # another size and formatting: as an editor would save it
    path.write_bytes(edited)
    with pytest.raises(FileChangedOnDisk, match="POST /config/reload"):
        _add_consumer(store, "second")
    assert path.read_bytes() == edited  # nothing overwritten
    assert store.state.merged.consumer("second") is None  # nothing half-applied
    asyncio.run(store.reload_file())  # SIGHUP / POST /config/reload
    assert store.state.merged.service("by-hand") is not None
    _add_consumer(store, "second")
    after = FileConfigStore.open(store.path).state.merged
    assert after.service("by-hand") is not None and after.consumer("second") is not None


def test_same_size_edit_in_place_is_noticed_and_touch_is_not(tmp_path: Path) -> None:
    store = _open(tmp_path)
    path = Path(store.path)
    _add_consumer(store, "first")
    # `touch`: the stat changes, the content does not.
    os.utime(path, ns=(1, 1))
    _add_consumer(store, "second")
    # An edit that keeps size and inode (and even the mtime): the content hash tells.
    raw = path.read_bytes()
    stat = path.stat()
    edited = raw.replace(b'"second"', b'"sEcond"')
    with open(path, "r+b") as f:
        f.write(edited)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1))
    with pytest.raises(FileChangedOnDisk):
        _add_consumer(store, "third")
    assert path.read_bytes() == edited


def test_post_config_refuses_to_overwrite_a_hand_edit(tmp_path: Path) -> None:
    store = _open(tmp_path)
    path = Path(store.path)
    path.write_bytes(path.read_bytes() + b"\n")
    with pytest.raises(FileChangedOnDisk):
        asyncio.run(store.replace_document({"_format_version": "3.0"}))
    assert store.state.merged.service("s0") is not None


def test_yaml_store_writes_whole_documents_and_notices_edits(tmp_path: Path) -> None:
    from fastgw.config.loader import dump_yaml

    path = tmp_path / "kong.yml"
    path.write_bytes(dump_yaml(DOC))
    store = FileConfigStore.open(str(path))
    _add_consumer(store, "bob")
    assert path.read_bytes().startswith(b"_format_version:")  # still YAML
    reopened = FileConfigStore.open(str(path))
    assert reopened.state.etag == store.state.etag
    assert reopened.state.merged.consumer("bob") is not None
    path.write_bytes(path.read_bytes().replace(b"username: bob", b"username: rob"))
    with pytest.raises(FileChangedOnDisk):
        _add_consumer(store, "carl")


def test_atomic_write_writes_pieces_in_order(tmp_path: Path) -> None:
    """The store writes a file from its encoded pieces (no join): more pieces than one
    writev takes, empty ones among them, the same bytes as joined."""
    pieces = [bytes([65 + i % 26]) * (i % 7) for i in range(5000)]
    path = tmp_path / "pieces.json"
    stat = atomic_write(str(path), pieces)
    assert path.read_bytes() == b"".join(pieces) and stat.st_size == len(b"".join(pieces))
    atomic_write(str(path), b"whole")
    assert path.read_bytes() == b"whole"


def test_a_write_that_changed_only_targets_still_refuses_a_dangling_reference(
        tmp_path: Path) -> None:
    """The local checks skip collections that are the current state's own tuples; a
    removed parent is still caught through the children that point at it."""
    store = _open(tmp_path)
    state = store.state
    default = state.configs["default"]
    service = _service(default, "s2")
    without = replace(default, services=tuple(s for s in default.services if s is not service))
    assert without.routes is default.routes  # the routes did not change, the service went
    with pytest.raises(ConfigError, match="invalid reference 'service"):
        store.check_write(state.workspaces, {**state.configs, "default": without})
    upstream_gone = replace(default, upstreams=())
    with pytest.raises(ConfigError, match="invalid reference 'upstream"):
        store.check_write(state.workspaces, {**state.configs, "default": upstream_gone})
