"""The file store and the pure helpers behind the Admin API (no processes needed)."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path

import orjson
import pytest

from fastgw.controlplane.admin import entities as E
from fastgw.controlplane.admin.forms import coerce_record, unflatten
from fastgw.controlplane.admin.http import HTTPError
from fastgw.config import ConfigError
from fastgw.controlplane.store import FileConfigStore, PreconditionFailed
from fastgw.config.validate import SCHEMAS


def _write(path: Path, doc: dict) -> str:
    path.write_bytes(orjson.dumps(doc))
    return str(path)


def test_writes_keep_the_users_gateway_section_and_not_overrides(tmp_path: Path) -> None:
    path = _write(tmp_path / "c.json", {"_format_version": "3.0", "gateway": {"workers": 1}})
    store = FileConfigStore.open(path, env={"FASTGW_DRAIN_TIMEOUT": "3"},
                                 overrides={"proxy_listen": "127.0.0.1:9"})
    assert store.state.merged.gateway.drain_timeout == 3
    cfg = store.state.configs["default"]
    new, _ = E.create(cfg, "services", {"name": "s", "host": "h"})

    async def go() -> None:
        async with store.lock:
            await store.commit(store.state.workspaces, {"default": new})

    asyncio.run(go())
    doc = orjson.loads(Path(path).read_bytes())
    assert doc["gateway"] == {"workers": 1}
    assert doc["services"][0]["name"] == "s"
    assert FileConfigStore.open(path).state.etag == store.state.etag
    assert not [p for p in tmp_path.iterdir() if p.suffix == ".tmp"]


def test_rejected_commit_and_if_match_change_nothing(tmp_path: Path) -> None:
    path = _write(tmp_path / "c.json", {"_format_version": "3.0"})
    store = FileConfigStore.open(path)
    before, state = Path(path).read_bytes(), store.state
    bad = replace(state.configs["default"], routes=(E.build_entity("routes", {"paths": ["/a"], "service": {"id": "5b1d0b3e-6a0c-4f53-9a43-2f1e0c6a7b11"}})[0],))

    async def go() -> None:
        with pytest.raises(ConfigError):
            async with store.lock:
                await store.commit(state.workspaces, {"default": bad})
        with pytest.raises(PreconditionFailed):
            await store.replace_document({"_format_version": "3.0"}, if_match='"nope"')
        with pytest.raises(ConfigError):
            await store.replace_document({"_format_version": "3.0", "services": [{}]})

    asyncio.run(go())
    assert Path(path).read_bytes() == before and store.state is state


def test_concurrent_writers_are_serialised(tmp_path: Path) -> None:
    path = _write(tmp_path / "c.json", {"_format_version": "3.0"})
    store = FileConfigStore.open(path)

    async def add(i: int) -> None:
        async with store.lock:
            cfg = store.state.configs["default"]
            new, _ = E.create(cfg, "consumers", {"username": f"c{i}"})
            await store.commit(store.state.workspaces, {"default": new})

    async def go() -> None:
        await asyncio.gather(*(add(i) for i in range(25)))

    asyncio.run(go())
    assert len(FileConfigStore.open(path).state.merged.consumers) == 25
    assert store.state.version == 26


def test_workspaces_in_the_file(tmp_path: Path) -> None:
    doc = {"_format_version": "3.0", "services": [{"name": "s", "host": "h"}],
           "workspaces": [{"name": "b", "services": [{"name": "s", "host": "h",
                                                      "routes": [{"paths": ["/b"]}]}]}]}
    store = FileConfigStore.open(_write(tmp_path / "c.json", doc))
    ids = [s.id for s in store.state.merged.services]
    assert len(ids) == 2 and len(set(ids)) == 2  # same name, distinct ids per workspace
    doc["services"][0]["routes"] = [{"paths": ["/b"]}]
    with pytest.raises(ConfigError) as err:
        FileConfigStore.open(_write(tmp_path / "d.json", doc))
    assert "collides" in str(err.value)


def test_form_keys_like_kong() -> None:
    pairs = [("paths[]", "/a"), ("paths[]", "/b"), ("service.id", "x"), ("headers.x-region", "eu"),
             ("strip_path", "false"), ("hosts[2]", "b.com"), ("hosts[1]", "a.com"), ("name", "")]
    out = coerce_record(SCHEMAS["routes"], unflatten(pairs))
    assert out == {"paths": ["/a", "/b"], "service": {"id": "x"}, "headers": {"x-region": ["eu"]},
                   "strip_path": False, "hosts": ["a.com", "b.com"], "name": None}
    up = coerce_record(SCHEMAS["upstreams"], unflatten([("healthchecks.active.healthy.interval", "5")]))
    assert up == {"healthchecks": {"active": {"healthy": {"interval": 5}}}}


def test_lua_style_unique_message() -> None:
    cfg = E.create(E.Config(), "upstreams", {"name": "u"})[0]
    uid = cfg.upstreams[0].id
    cfg = E.create(cfg, "targets", {"target": "a:1"}, ("upstream", uid))[0]
    with pytest.raises(HTTPError) as err:
        E.create(cfg, "targets", {"target": "a:1"}, ("upstream", uid))
    assert err.value.body["message"] == f"UNIQUE violation detected on '{{target=\"a:1\",upstream={{id=\"{uid}\"}}}}'"
