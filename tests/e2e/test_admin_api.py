"""Admin API semantics over real sockets against a real fastgw process (one per module).

Covers CRUD of every entity kind, nested endpoints, id/name addressing, PUT upsert,
PATCH, DELETE 204, the url shorthand, JSON/form/multipart bodies, pagination and tag
filters, every error shape (400 code 2/3/4, 409 code 5, 404, 405, 415, 400 code 14,
412), health endpoints and node endpoints.
"""

from __future__ import annotations

from typing import Iterator

import pytest
import requests

from tests.support.gateway import GatewayProcess
from tests.support.admin import admin_config, wait_ready


@pytest.fixture(scope="module")
def gw() -> Iterator[GatewayProcess]:
    with GatewayProcess(admin_config(), workers=1) as g:
        wait_ready(g, 1)
        yield g


@pytest.fixture
def api(gw: GatewayProcess) -> Iterator[str]:
    """The admin URL, with every entity deleted afterwards (tests stay independent)."""
    yield gw.admin_url
    r = requests.post(gw.admin_url + "/config", json={"_format_version": "3.0"}, timeout=10)
    assert r.status_code == 201, r.text


def test_seed_entities_form_posts_and_defaults(api: str) -> None:
    r = requests.post(api + "/upstreams", data={"name": "myupstream"})
    assert r.status_code == 201, r.text
    up = r.json()
    assert up["algorithm"] == "round-robin" and up["slots"] == 10000
    assert isinstance(up["created_at"], int) and len(up["id"]) == 36
    r = requests.post(api + "/upstreams/myupstream/targets", data={"target": "127.0.0.1"})
    assert r.status_code == 201
    t = r.json()
    assert t["target"] == "127.0.0.1:8000" and t["weight"] == 100
    assert t["upstream"] == {"id": up["id"]} and isinstance(t["created_at"], float)
    r = requests.post(api + "/services", data={"name": "myservice", "host": "myupstream",
                                               "path": "/api/atelier"})
    svc = r.json()
    assert r.status_code == 201 and svc["port"] == 80 and svc["protocol"] == "http"
    assert svc["retries"] == 5 and svc["connect_timeout"] == 60000 and svc["enabled"] is True
    r = requests.post(api + "/routes", data={"paths[]": "/api/atelier", "service.id": svc["id"],
                                             "headers.x-region": "eu", "strip_path": "false"})
    assert r.status_code == 201, r.text
    route = r.json()
    assert route["paths"] == ["/api/atelier"] and route["service"] == {"id": svc["id"]}
    assert route["headers"] == {"x-region": ["eu"]} and route["strip_path"] is False
    assert route["protocols"] == ["http", "https"] and route["https_redirect_status_code"] == 426


def test_json_multipart_and_url_shorthand(api: str) -> None:
    r = requests.post(api + "/services", json={"name": "s1", "url": "https://example.com/x"})
    assert r.status_code == 201
    s = r.json()
    assert (s["protocol"], s["host"], s["port"], s["path"]) == ("https", "example.com", 443, "/x")
    r = requests.post(api + "/services/s1/routes",
                      files={"name": (None, "r1"), "paths[]": (None, "/m"), "methods[]": (None, "GET")})
    assert r.status_code == 201, r.text
    assert r.json()["methods"] == ["GET"] and r.json()["service"] == {"id": s["id"]}
    r = requests.patch(api + "/services/s1", data={"url": "http://other:8080"})
    assert r.status_code == 200
    assert (r.json()["host"], r.json()["port"], r.json()["path"]) == ("other", 8080, None)


def test_address_by_id_or_name_nested_and_parent(api: str) -> None:
    s = requests.post(api + "/services", json={"name": "svc", "host": "h"}).json()
    r = requests.post(api + f"/services/{s['id']}/routes", json={"name": "rt", "paths": ["/a"]}).json()
    assert requests.get(api + "/services/svc").json()["id"] == s["id"]
    assert requests.get(api + f"/services/{s['id']}").json()["name"] == "svc"
    assert [x["id"] for x in requests.get(api + "/services/svc/routes").json()["data"]] == [r["id"]]
    assert requests.get(api + "/services/svc/routes/rt").json()["id"] == r["id"]
    assert requests.get(api + "/routes/rt/service").json()["id"] == s["id"]
    p = requests.patch(api + "/routes/rt/service", json={"retries": 2})
    assert p.status_code == 200 and p.json()["retries"] == 2
    c = requests.post(api + "/consumers", json={"username": "alice"}).json()
    pl = requests.post(api + "/consumers/alice/plugins", json={"name": "rate-limiting",
                                                               "config": {"minute": 5}})
    assert pl.status_code == 201 and pl.json()["consumer"] == {"id": c["id"]}
    assert requests.get(api + f"/plugins/{pl.json()['id']}/consumer").json()["username"] == "alice"
    assert requests.post(api + "/routes/rt/plugins", json={"name": "cors"}).status_code == 201
    assert len(requests.get(api + "/plugins").json()["data"]) == 2


def test_put_upsert_patch_delete(api: str) -> None:
    r = requests.put(api + "/services/by-put", json={"host": "a"})
    assert r.status_code == 200 and r.json()["name"] == "by-put"  # Kong: 200 on create too
    first = r.json()
    r = requests.put(api + "/services/by-put", json={"host": "b"})
    assert r.status_code == 200 and r.json()["host"] == "b" and r.json()["id"] == first["id"]
    assert r.json()["created_at"] == first["created_at"]
    r = requests.patch(api + "/services/by-put", json={"port": 8080})
    assert r.status_code == 200 and r.json()["host"] == "b" and r.json()["port"] == 8080
    assert requests.delete(api + "/services/by-put").status_code == 204
    assert requests.get(api + "/services/by-put").status_code == 404
    assert requests.delete(api + "/services/by-put").status_code == 204  # Kong: still 204
    u = requests.post(api + "/upstreams", json={"name": "u1"}).json()
    requests.post(api + "/upstreams/u1/targets", json={"target": "10.0.0.1:80"})
    assert requests.patch(api + "/upstreams/u1/targets/10.0.0.1:80",
                          json={"weight": 0}).json()["weight"] == 0
    assert requests.delete(api + "/upstreams/u1").status_code == 204
    assert requests.get(api + f"/upstreams/{u['id']}/targets").status_code == 404


def test_error_shapes(api: str) -> None:
    r = requests.post(api + "/services", json={"name": "x"})
    assert r.status_code == 400
    assert r.json() == {"code": 2, "name": "schema violation",
                        "message": "schema violation (host: required field missing)",
                        "fields": {"host": "required field missing"}}
    r = requests.post(api + "/services", json={"host": "h", "port": "x", "retries": -1})
    assert r.json()["message"].startswith("2 schema violations (")
    assert r.json()["fields"] == {"port": "expected an integer",
                                  "retries": "value should be between 0 and 32767"}
    requests.post(api + "/services", json={"name": "dup", "host": "h"})
    r = requests.post(api + "/services", json={"name": "dup", "host": "h"})
    assert r.status_code == 409
    assert r.json() == {"code": 5, "name": "unique constraint violation",
                        "message": "UNIQUE violation detected on '{name=\"dup\"}'",
                        "fields": {"name": "dup"}}
    requests.post(api + "/upstreams", json={"name": "uu"})
    requests.post(api + "/upstreams/uu/targets", json={"target": "a:1"})
    assert requests.post(api + "/upstreams/uu/targets", json={"target": "a:1"}).status_code == 409
    r = requests.post(api + "/routes", json={"paths": ["/z"],
                                             "service": {"id": "5b1d0b3e-6a0c-4f53-9a43-2f1e0c6a7b11"}})
    assert r.status_code == 400 and r.json()["code"] == 4 and r.json()["name"] == "foreign key violation"
    assert requests.get(api + "/services/nope").json() == {"message": "Not found"}
    assert requests.get(api + "/services/nope").status_code == 404
    assert requests.get(api + "/nothing/here/at/all").status_code == 404
    r = requests.delete(api + "/services")
    assert r.status_code == 405 and r.json() == {"message": "Method not allowed"}
    r = requests.post(api + "/services", data=b"host=h", headers={"Content-Type": "text/plain"})
    assert r.status_code == 415
    r = requests.post(api + "/services", data=b"{bad", headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and r.json() == {"message": "Cannot parse JSON body"}
    # A service that routes still use cannot go (Kong: foreign key violation).
    s = requests.post(api + "/services", json={"name": "used", "host": "h"}).json()
    requests.post(api + "/services/used/routes", json={"paths": ["/used"]})
    r = requests.delete(api + "/services/used")
    assert r.status_code == 400 and r.json()["code"] == 4
    assert requests.get(api + f"/services/{s['id']}").status_code == 200


def test_rejected_write_changes_nothing(api: str, gw: GatewayProcess) -> None:
    requests.post(api + "/services", json={"name": "keep", "host": "h"})
    before = gw.config_path.read_bytes()
    etag = requests.get(api + "/config").json()["etag"]
    assert requests.post(api + "/services", json={"name": "keep", "host": "h"}).status_code == 409
    assert requests.patch(api + "/services/keep", json={"port": 70000}).status_code == 400
    assert gw.config_path.read_bytes() == before
    assert requests.get(api + "/config").json()["etag"] == etag
    assert requests.get(api + "/services/keep").json()["port"] == 80


def test_pagination_and_tags(api: str) -> None:
    for i in range(7):
        tags = ["even"] if i % 2 == 0 else ["odd"]
        requests.post(api + "/consumers", json={"username": f"u{i}", "tags": tags + ["all"]})
    seen, url, pages = [], api + "/consumers?size=3", 0
    while url:
        body = requests.get(url).json()
        seen += [c["username"] for c in body["data"]]
        pages += 1
        assert ("offset" in body) == (body["next"] is not None)
        url = api + body["next"] if body["next"] else None
    assert seen == [f"u{i}" for i in range(7)] and pages == 3
    assert len(requests.get(api + "/consumers?tags=even").json()["data"]) == 4
    assert len(requests.get(api + "/consumers?tags=even,all").json()["data"]) == 4
    assert len(requests.get(api + "/consumers?tags=even/odd").json()["data"]) == 7
    first = requests.get(api + "/consumers?size=2&tags=odd").json()
    assert "tags=odd" in first["next"] and "size=2" in first["next"]
    r = requests.get(api + "/consumers?size=abc")
    assert r.status_code == 400 and r.json()["message"] == "size must be a number"
    r = requests.get(api + "/consumers?size=5000")
    assert r.json()["message"] == "size must be an integer between 1 and 1000"
    r = requests.get(api + "/consumers?offset=!!!")
    assert r.status_code == 400 and r.json()["code"] == 7
    requests.post(api + "/upstreams", json={"name": "pu"})
    for i in range(3):
        requests.post(api + "/upstreams/pu/targets", json={"target": f"10.0.0.{i}:80"})
    page = requests.get(api + "/upstreams/pu/targets?size=2").json()
    assert page["offset"] == "2" and len(page["data"]) == 2
    assert len(requests.get(api + "/upstreams/pu/targets/all").json()["data"]) == 3


def test_health_endpoints(api: str) -> None:
    requests.post(api + "/upstreams", json={"name": "hu"})
    a = requests.post(api + "/upstreams/hu/targets", json={"target": "127.0.0.1:1"}).json()
    requests.post(api + "/upstreams/hu/targets", json={"target": "127.0.0.1:2", "weight": 0})
    body = requests.get(api + "/upstreams/hu/health").json()
    assert [t["health"] for t in body["data"]] == ["HEALTHCHECKS_OFF"] * 2
    assert body["next"] is None and body["node_id"]
    assert body["data"][0]["data"]["weight"] == {"total": 100, "available": 100, "unavailable": 0}
    bal = requests.get(api + "/upstreams/hu/health?balancer_health=1").json()["data"]
    assert bal["health"] == "HEALTHCHECKS_OFF" and bal["balancer_health"] == "HEALTHY"
    assert requests.put(api + "/upstreams/hu/targets/127.0.0.1:1/unhealthy").status_code == 204
    assert requests.post(api + f"/upstreams/hu/targets/{a['id']}/unhealthy").status_code == 204
    health = {t["target"]: t["health"] for t in requests.get(api + "/upstreams/hu/health").json()["data"]}
    assert health == {"127.0.0.1:1": "UNHEALTHY", "127.0.0.1:2": "HEALTHCHECKS_OFF"}
    assert requests.put(api + "/upstreams/hu/targets/127.0.0.1:1/healthy").status_code == 204
    assert requests.put(api + "/upstreams/hu/targets/nope:1/healthy").status_code == 404
    assert requests.put(api + "/upstreams/nope/targets/127.0.0.1:1/healthy").status_code == 404
    assert requests.get(api + "/upstreams/nope/health").status_code == 404


def test_config_export_replace_and_guards(api: str, gw: GatewayProcess) -> None:
    requests.post(api + "/services", json={"name": "cfg", "host": "h"})
    got = requests.get(api + "/config")
    etag = got.json()["etag"]
    assert got.headers["ETag"] == f'"{etag}"'
    import orjson

    doc = orjson.loads(got.json()["config"])
    assert [s["name"] for s in doc["services"]] == ["cfg"] and "gateway" not in doc
    doc["services"][0]["port"] = 8081
    r = requests.post(api + "/config", json=doc, headers={"If-Match": '"stale"'})
    assert r.status_code == 412
    r = requests.post(api + "/config", json=doc, headers={"If-Match": f'"{etag}"'})
    assert r.status_code == 201
    assert requests.get(api + "/services/cfg").json()["port"] == 8081
    assert requests.post(api + "/config?check_hash=1", json=doc).status_code == 304
    r = requests.post(api + "/config", json={"_format_version": "3.0", "services": [{"name": "x"}]})
    assert r.status_code == 400
    err = r.json()
    assert err["code"] == 14 and err["name"] == "invalid declarative configuration"
    assert err["fields"] == {"services": [{"host": "required field missing"}]}
    assert requests.get(api + "/services/cfg").status_code == 200  # nothing changed
    # The gateway section of the file survives entity writes untouched.
    assert orjson.loads(gw.config_path.read_bytes())["gateway"] == gw.config["gateway"]
    form = requests.post(api + "/config", data={"config": orjson.dumps({"_format_version": "3.0"})})
    assert form.status_code == 201 and requests.get(api + "/services").json()["data"] == []


def test_node_info_status_and_openapi(api: str) -> None:
    root = requests.get(api + "/").json()
    assert root["version"] and root["node_id"] and len(root["pids"]["workers"]) == 1
    assert "admin_token" not in root["configuration"]
    status = requests.get(api + "/status").json()
    assert status["database"] == {"reachable": True} and status["configuration_hash"]
    doc = requests.get(api + "/openapi.json").json()
    # Paths named as Kong's /endpoints names them, credentials and plugins' ones included.
    assert doc["openapi"].startswith("3.") and {
        "/services/{services}", "/consumers/{consumers}/key-auth", "/plugins/enabled",
        "/schemas/plugins/{name}"} <= doc["paths"].keys()


def test_status_listener(gw: GatewayProcess) -> None:
    r = requests.get(gw.status_url + "/status/ready")
    assert r.status_code == 200 and r.json() == {"message": "ready"}
    assert "workers" in requests.get(gw.status_url + "/status").json()
    assert requests.get(gw.status_url + "/services").status_code == 404
