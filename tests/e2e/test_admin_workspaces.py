"""Workspaces over the Admin API: the default workspace, /{workspace}/... addressing,
names unique per workspace, cross-workspace collisions refused with the reason, traffic
of every workspace served by the one proxy, and workspaces persisted in config.json."""

from __future__ import annotations

from typing import Iterator

import orjson
import pytest
import requests

from tests.support.gateway import GatewayProcess
from tests.support.procs import IrisProcess
from fastgw.controlplane.store import FileConfigStore
from tests.support.admin import admin_config, wait_ready


@pytest.fixture
def gw() -> Iterator[GatewayProcess]:
    with GatewayProcess(admin_config(), workers=1) as g:
        wait_ready(g, 1)
        yield g


def test_workspace_crud_and_rules(gw: GatewayProcess) -> None:
    api = gw.admin_url
    names = [w["name"] for w in requests.get(api + "/workspaces").json()["data"]]
    assert names == ["default"]
    r = requests.post(api + "/workspaces", data={"name": "team-a", "comment": "first"})
    assert r.status_code == 201 and r.json()["comment"] == "first" and r.json()["id"]
    assert requests.post(api + "/workspaces", json={"name": "team-a"}).status_code == 409
    r = requests.post(api + "/workspaces", json={"name": "services"})
    assert r.status_code == 400 and r.json()["code"] == 2 and "name" in r.json()["fields"]
    assert requests.get(api + "/workspaces/team-a").json()["name"] == "team-a"
    assert requests.patch(api + "/workspaces/team-a", json={"comment": "x"}).json()["comment"] == "x"
    assert requests.delete(api + "/workspaces/default").status_code == 400
    assert requests.get(api + "/nope/services").status_code == 404

    # Same service name in two workspaces is fine; twice in one is not.
    assert requests.post(api + "/services", json={"name": "svc", "host": "h"}).status_code == 201
    assert requests.post(api + "/team-a/services", json={"name": "svc", "host": "h"}).status_code == 201
    assert requests.post(api + "/team-a/services", json={"name": "svc", "host": "h"}).status_code == 409
    assert len(requests.get(api + "/team-a/services").json()["data"]) == 1
    assert requests.get(api + "/team-a/services/svc").json()["id"] != \
        requests.get(api + "/services/svc").json()["id"]

    # Routes that would tie in the shared router are refused, with the reason.
    assert requests.post(api + "/services/svc/routes", json={"paths": ["/shared"]}).status_code == 201
    r = requests.post(api + "/team-a/services/svc/routes", json={"paths": ["/shared"]})
    assert r.status_code == 409 and "workspace 'default'" in r.json()["message"]
    assert "paths /shared" in r.json()["message"]
    ok = requests.post(api + "/team-a/services/svc/routes",
                       json={"paths": ["/shared"], "hosts": ["a.example"]})
    assert ok.status_code == 201  # strictly more specific: no silent tie
    # Upstream names resolve across workspaces: refused too.
    assert requests.post(api + "/upstreams", json={"name": "up"}).status_code == 201
    r = requests.post(api + "/team-a/upstreams", json={"name": "up"})
    assert r.status_code == 409 and "already used in workspace 'default'" in r.json()["message"]

    # Non-empty workspaces need cascade.
    assert requests.delete(api + "/workspaces/team-a").status_code == 400
    doc = orjson.loads(gw.config_path.read_bytes())
    assert [w["name"] for w in doc["workspaces"]] == ["default", "team-a"]
    assert doc["workspaces"][1]["services"][0]["name"] == "svc"
    assert requests.delete(api + "/workspaces/team-a?cascade=true").status_code == 204
    assert requests.get(api + "/workspaces/team-a").status_code == 404


def test_workspace_traffic_and_persistence(iris_pair: tuple[IrisProcess, IrisProcess]) -> None:
    a, b = iris_pair
    gw = GatewayProcess(admin_config(), workers=1)
    try:
        gw.start()
        wait_ready(gw, 1)
        api = gw.admin_url
        requests.post(api + "/workspaces", json={"name": "ops"}).raise_for_status()
        for ws, iris, path in (("", a, "/api/atelier"), ("/ops", b, "/ops/api")):
            requests.post(api + f"{ws}/services", json={
                "name": "atelier", "url": f"http://127.0.0.1:{iris.port}/api/atelier"}).raise_for_status()
            requests.post(api + f"{ws}/services/atelier/routes",
                          json={"paths": [path]}).raise_for_status()
        wait_ready(gw, 1)
        got = requests.get(gw.url + "/api/atelier/", timeout=5).json()["result"]["content"]["id"]
        ops = requests.get(gw.url + "/ops/api/", timeout=5).json()["result"]["content"]["id"]
        assert (got, ops) == ("A", "B")
        etag = requests.get(api + "/config").json()["etag"]
        assert gw.stop() == 0
        store = FileConfigStore.open(str(gw.config_path))
        assert [w.name for w in store.state.workspaces] == ["default", "ops"]
        gw.start()
        wait_ready(gw, 1)
        assert requests.get(api + "/config").json()["etag"] == etag
        assert requests.get(gw.url + "/ops/api/", timeout=5).json()["result"]["content"]["id"] == "B"
    finally:
        gw.stop()
        gw._dir.cleanup()


def test_ids_are_unique_per_kind_across_workspaces(gw: GatewayProcess) -> None:
    """Regressions found by schemathesis: ids were compared across kinds once a second
    workspace existed, and a workspace created by PUT with another's id made the next
    rename replace both (every later write then failed)."""
    api = gw.admin_url
    shared = "0b9f0e34-2f7c-4c55-9b8e-7cbf7d0f3a51"
    team_b = requests.post(api + "/workspaces", json={"name": "team-b"}).json()
    assert requests.post(api + "/services", json={"id": shared, "name": "s", "host": "h"}) \
        .status_code == 201
    # Another kind may use the same id (Kong: a table per kind).
    r = requests.post(api + "/routes", json={"id": shared, "paths": ["/x"],
                                             "service": {"id": shared}})
    assert r.status_code == 201, r.text
    # The same kind in another workspace may not: one merged data plane.
    r = requests.post(api + "/team-b/services", json={"id": shared, "name": "s", "host": "h"})
    assert r.status_code == 400 and r.json()["code"] == 3, r.text

    r = requests.put(api + "/workspaces/team-c", json={"id": team_b["id"]})
    assert r.status_code == 400 and r.json()["code"] == 3, r.text
    r = requests.patch(api + "/workspaces/team-b", json={"name": "team-d"})
    assert r.status_code == 200 and r.json()["id"] == team_b["id"], r.text
    names = [w["name"] for w in requests.get(api + "/workspaces").json()["data"]]
    assert names == ["default", "team-d"]
    assert requests.post(api + "/team-d/services", json={"name": "t", "host": "h"}) \
        .status_code == 201

    # PUT by name: the URL's name is the entity's, whatever the body says (Kong's upsert_by).
    r = requests.put(api + "/services/named", json={"name": "other", "host": "h"})
    assert r.status_code == 200 and r.json()["name"] == "named", r.text
    # A key that is neither an id nor a valid name: Kong's 400 "invalid unique name".
    r = requests.get(api + "/services/a%20b")
    assert r.status_code == 400 and r.json()["code"] == 10, r.text
