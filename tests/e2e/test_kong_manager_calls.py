"""Replays the Admin API calls Kong Manager OSS makes, over real sockets, as a browser would.

The calls come from Kong Manager's sources (Kong/kong-manager: ``src/services/apiService.ts``,
``src/stores/info.ts``, ``src/pages/overview/Overview.vue``, ``src/pages/upstreams/TargetList.vue``)
and the entity packages it is built on (Kong/public-ui-components, ``packages/entities``:
``entities-upstreams-targets/src/{upstreams,targets}-endpoints.ts`` and ``TargetForm.vue``,
``entities-gateway-services/src/gateway-services-endpoints.ts``,
``entities-routes/src/routes-endpoints.ts``, ``entities-plugins/src/plugins-endpoints.ts``,
``entities-shared/src/composables/{useFetchUrlBuilder,useFetcher,useTagsFilter}.ts``):

- lists as ``GET /{workspace}/upstreams?size=N`` (the workspace is empty in Kong Manager OSS,
  which older versions sent as ``//upstreams``);
- forms validate with ``POST /schemas/{entity}/validate`` before they create or edit, read
  ``/certificates?size=1000`` and ``/ca_certificates?size=1000`` for their selects, and the
  plugin form renders from ``GET /schemas/plugins/{name}``;
- the targets list marks health with ``PUT /upstreams/{u}/targets/{t}/healthy|unhealthy``;
- the plugin picker reads ``plugins.available_on_server`` from ``GET /``, the overview reads
  ``configuration.admin_listen[0]`` and ``proxy_listeners``, the tags filter ``GET /tags``.

Every call carries the ``Origin`` of a Kong Manager served on another port, and every call a
browser would preflight (a JSON body, PATCH, PUT, DELETE) is preceded by its ``OPTIONS``
preflight, as the browser sends it: each answer must let the browser read it.
"""

from __future__ import annotations

import http.client
from typing import Any, Callable, Iterator

import pytest
import requests

from tests.support.admin import admin_config, wait_ready, wait_until
from tests.support.gateway import GatewayProcess

ORIGIN = "http://localhost:8002"
_SIMPLE = ("GET", "HEAD")


@pytest.fixture(scope="module")
def gw() -> Iterator[GatewayProcess]:
    with GatewayProcess(admin_config(), workers=1) as g:
        wait_ready(g, 1)
        yield g


class Browser:
    """Sends what a browser on ``ORIGIN`` sends, and checks what it needs back."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.session = requests.Session()
        self.calls: list[tuple[str, str, int]] = []

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> requests.Response:
        url = self.base + path
        if method not in _SIMPLE or body is not None:
            pre = self.session.options(url, timeout=10, headers={
                "Origin": ORIGIN, "Access-Control-Request-Method": method,
                "Access-Control-Request-Headers": "content-type"})
            assert pre.status_code == 204, (method, path, pre.status_code, pre.text)
            assert method in pre.headers["Access-Control-Allow-Methods"].split(", "), path
            assert "content-type" in pre.headers["Access-Control-Allow-Headers"].lower()
            self._readable(pre, path)
        r = self.session.request(method, url, json=body, headers={"Origin": ORIGIN}, timeout=10)
        self._readable(r, path)
        self.calls.append((method, path, r.status_code))
        return r

    @staticmethod
    def _readable(r: requests.Response, path: str) -> None:
        assert r.headers.get("Access-Control-Allow-Origin") == ORIGIN, (path, dict(r.headers))
        assert r.headers.get("Access-Control-Allow-Credentials") == "true", path


def _ok(r: requests.Response, status: int) -> Any:
    assert r.status_code == status, (r.request.method, r.url, r.status_code, r.text)
    return r.json() if r.content else None


def _is_list(doc: Any) -> list[Any]:
    assert set(doc) >= {"data", "next"} and isinstance(doc["data"], list), doc
    return doc["data"]


def test_kong_manager_pages_replayed(gw: GatewayProcess) -> None:
    km = Browser(gw.admin_url)
    # Shell and overview (stores/info.ts, Overview.vue).
    info = _ok(km.call("GET", "/"), 200)
    assert info["version"] and info["edition"] == "community"
    assert isinstance(info["plugins"]["available_on_server"], dict)
    assert "canary" in info["plugins"]["available_on_server"]
    conf = info["configuration"]
    assert conf["admin_listen"] == [gw.config["gateway"]["admin_listen"]]
    proxy = conf["proxy_listeners"][0]
    assert proxy["port"] == gw.port and proxy["ssl"] is False
    assert conf["role"] == "traditional" and conf["database"] == "off"
    assert "admin_token" not in conf
    _is_list(_ok(km.call("GET", "/tags?size=100"), 200))

    # Upstreams: list, form (services and certificates selects, validate), create, edit.
    _is_list(_ok(km.call("GET", "/upstreams?size=30"), 200))
    _is_list(_ok(km.call("GET", "//upstreams?size=30"), 200))  # workspace "" in older versions
    _is_list(_ok(km.call("GET", "/services?size=1000"), 200))
    assert _is_list(_ok(km.call("GET", "/certificates?size=1000"), 200)) == []
    body = {"name": "km-upstream", "algorithm": "round-robin", "hash_on": "none",
            "hash_fallback": "none", "slots": 10000, "tags": ["km"]}
    assert _ok(km.call("POST", "/schemas/upstreams/validate", body), 200) == {
        "message": "schema validation successful"}
    up = _ok(km.call("POST", "/upstreams", body), 201)
    assert _ok(km.call("GET", f"/upstreams/{up['id']}"), 200)["name"] == "km-upstream"
    hc = {"healthchecks": {"active": {"healthy": {"interval": 5}, "unhealthy": {"interval": 5}}}}
    assert _ok(km.call("PATCH", f"/upstreams/{up['id']}", hc), 200)["healthchecks"]["active"][
        "healthy"]["interval"] == 5

    # Targets (TargetForm.vue validates, then posts the same body, upstream included).
    _is_list(_ok(km.call("GET", f"/upstreams/{up['id']}/targets?size=30"), 200))
    bad = {"target": "123", "weight": 100, "tags": [], "upstream": {"id": up["id"]}}
    err = _ok(km.call("POST", "/schemas/targets/validate", bad), 400)
    assert err["message"] == ("schema violation (target: Invalid target ('123'); "
                              "not a valid hostname or ip address)")  # Kong Manager's own test
    target = {"target": "127.0.0.1:52773", "weight": 100, "tags": [], "upstream": {"id": up["id"]}}
    _ok(km.call("POST", "/schemas/targets/validate", target), 200)
    t = _ok(km.call("POST", f"/upstreams/{up['id']}/targets", target), 201)
    assert _ok(km.call("GET", f"/upstreams/{up['id']}/targets/{t['id']}"), 200)["weight"] == 100
    assert _ok(km.call("PATCH", f"/upstreams/{up['id']}/targets/{t['id']}",
                       {**target, "weight": 50}), 200)["weight"] == 50
    for verb in ("unhealthy", "healthy"):
        assert km.call("PUT", f"/upstreams/{up['id']}/targets/{t['id']}/{verb}").status_code == 204
    assert _ok(km.call("GET", f"/upstreams/{up['id']}/health"), 200)["data"][0]["health"]

    # Services (form: certificate selects, validate), related lists.
    _is_list(_ok(km.call("GET", "/services?size=30"), 200))
    assert _is_list(_ok(km.call("GET", "/ca_certificates?size=1000"), 200)) == []
    svc_body = {"name": "km-service", "protocol": "http", "host": "km-upstream", "port": 80,
                "path": "/api", "retries": 5, "connect_timeout": 60000, "write_timeout": 60000,
                "read_timeout": 60000, "enabled": True, "tags": []}
    _ok(km.call("POST", "/schemas/services/validate", svc_body), 200)
    svc = _ok(km.call("POST", "/services", svc_body), 201)
    assert _ok(km.call("GET", f"/services/{svc['id']}"), 200)["host"] == "km-upstream"
    _ok(km.call("PATCH", f"/services/{svc['id']}", {"retries": 3}), 200)

    # Routes (the form lists services at "/services/", with its trailing slash).
    _is_list(_ok(km.call("GET", "/routes?size=30"), 200))
    _is_list(_ok(km.call("GET", "/services/?size=1000"), 200))
    route_body = {"name": "km-route", "protocols": ["http", "https"], "paths": ["/km"],
                  "strip_path": True, "preserve_host": False, "service": {"id": svc["id"]}}
    _ok(km.call("POST", "/schemas/routes/validate", route_body), 200)
    route = _ok(km.call("POST", "/routes", route_body), 201)
    assert _ok(km.call("GET", f"/routes/{route['id']}/service"), 200)["id"] == svc["id"]
    _ok(km.call("PATCH", f"/routes/{route['id']}", {"paths": ["/km2"]}), 200)
    _is_list(_ok(km.call("GET", f"/services/{svc['id']}/routes?size=30"), 200))
    _is_list(_ok(km.call("GET", f"/services/{svc['id']}/plugins?size=30"), 200))
    _is_list(_ok(km.call("GET", f"/routes/{route['id']}/plugins?size=30"), 200))

    # Plugins: picker, schema-driven form, scoped create, edit, delete.
    _is_list(_ok(km.call("GET", "/plugins?size=30"), 200))
    schema = _ok(km.call("GET", "/schemas/plugins/canary"), 200)
    config_fields = next(f["config"] for f in schema["fields"] if "config" in f)["fields"]
    assert {"percentage": {"type": "number", "between": [0, 100]}} in config_fields
    assert _ok(km.call("GET", "/schemas/plugins/no-such-plugin"), 404) == {
        "message": "No plugin named 'no-such-plugin'"}
    plugin_body = {"name": "canary", "config": {"percentage": 10, "upstream_host": "km-upstream"}}
    _ok(km.call("POST", "/schemas/plugins/validate", plugin_body), 200)
    plugin = _ok(km.call("POST", f"/routes/{route['id']}/plugins", plugin_body), 201)
    assert plugin["route"] == {"id": route["id"]}
    _ok(km.call("PATCH", f"/plugins/{plugin['id']}", {"config": {"percentage": 20}}), 200)
    assert km.call("DELETE", f"/plugins/{plugin['id']}").status_code == 204

    # Tags as the filter reads them; deletes.
    tags = _is_list(_ok(km.call("GET", "/tags?size=100"), 200))
    assert {"entity_name": "upstreams", "entity_id": up["id"], "tag": "km"} in tags
    assert _is_list(_ok(km.call("GET", "/tags/km"), 200)) == [
        {"entity_name": "upstreams", "entity_id": up["id"], "tag": "km"}]
    for path in (f"/upstreams/{up['id']}/targets/{t['id']}", f"/routes/{route['id']}",
                 f"/services/{svc['id']}", f"/upstreams/{up['id']}"):
        assert km.call("DELETE", path).status_code == 204
    assert not [c for c in km.calls if c[2] >= 405 and c[2] != 404 or c[2] >= 500], km.calls


def test_every_endpoint_answers_options_and_head(gw: GatewayProcess) -> None:
    api = gw.admin_url
    paths = requests.get(api + "/endpoints", timeout=10).json()["data"]
    assert "/routes/{routes}/service" in paths and "/schemas/{entity}/validate" in paths
    for path in paths:
        concrete = path.replace("{", "x").replace("}", "x")
        r = requests.options(api + concrete, timeout=10)
        assert r.status_code == 204, (path, r.status_code)
        allow = r.headers["Allow"].split(", ")
        assert "OPTIONS" in allow and ("GET" not in allow or "HEAD" in allow), (path, allow)
    for path in ("/", "/upstreams", "/schemas/services", "/tags", "/endpoints", "/certificates"):
        get = requests.get(api + path, timeout=10)
        head = requests.head(api + path, timeout=10)
        assert head.status_code == get.status_code == 200, path
        assert head.content == b"" and int(head.headers["Content-Length"]) > 0, path


def test_schemas_follow_the_tables_that_validate(gw: GatewayProcess) -> None:
    api = gw.admin_url
    doc = requests.get(api + "/schemas/services", timeout=10).json()
    fields = {name: attrs for f in doc["fields"] for name, attrs in f.items()}
    assert fields["port"] == {"type": "integer", "required": True, "default": 80,
                              "between": [0, 65535]}
    assert fields["name"]["unique"] is True and fields["id"]["auto"] is True
    assert requests.get(api + "/schemas/nothing", timeout=10).json() == {
        "message": "No entity named 'nothing'"}
    bad = requests.post(api + "/schemas/services/validate", json={"host": "a b", "port": 99999},
                        timeout=10)
    assert bad.status_code == 400 and bad.json()["name"] == "schema violation"
    assert set(bad.json()["fields"]) == {"host", "port"}
    # Validation writes nothing.
    assert requests.get(api + "/services", timeout=10).json()["data"] == []


def test_put_routes_service_replaces_or_creates_and_links(gw: GatewayProcess) -> None:
    api = gw.admin_url
    route = requests.post(api + "/routes", json={"name": "lonely", "paths": ["/lonely"]},
                          timeout=10).json()
    r = requests.put(api + f"/routes/{route['id']}/service", json={"name": "made", "host": "a.b"},
                     timeout=10)
    assert r.status_code == 200, r.text
    made = r.json()
    assert requests.get(api + f"/routes/{route['id']}", timeout=10).json()["service"] == {
        "id": made["id"]}
    r = requests.put(api + f"/routes/{route['id']}/service", json={"name": "made", "host": "c.d"},
                     timeout=10)
    assert r.status_code == 200 and r.json()["id"] == made["id"] and r.json()["host"] == "c.d"
    assert r.json()["port"] == 80  # PUT replaces: defaults for what the body leaves out
    r = requests.delete(api + f"/routes/{route['id']}/service", timeout=10)
    assert r.status_code == 405
    assert requests.put(api + "/routes/nothing/service", json={"host": "a"},
                        timeout=10).status_code == 404
    requests.delete(api + f"/routes/{route['id']}", timeout=10)
    requests.delete(api + f"/services/{made['id']}", timeout=10)


def test_cors_origins_and_token(gateway_factory: Callable[..., GatewayProcess]) -> None:
    gw = gateway_factory(admin_config(admin_gui_url="http://km.example:8002/manager",
                                      admin_token="s3cret"))
    wait_until(lambda: requests.get(gw.status_url + "/status/ready", timeout=2).ok, 20)
    api = gw.admin_url
    pre = requests.options(api + "/services", timeout=10, headers={
        "Origin": "http://km.example:8002", "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type,kong-admin-token"})
    # The preflight needs no token; it allows the token's header.
    assert pre.status_code == 204
    assert pre.headers["Access-Control-Allow-Origin"] == "http://km.example:8002"
    assert pre.headers["Access-Control-Allow-Headers"] == "content-type,kong-admin-token"
    r = requests.get(api + "/services", headers={"Origin": "http://km.example:8002"}, timeout=10)
    assert r.status_code == 401 and r.headers["Access-Control-Allow-Origin"] == \
        "http://km.example:8002"  # the GUI can read why
    r = requests.get(api + "/services", timeout=10,
                     headers={"Origin": "http://evil.example", "Kong-Admin-Token": "s3cret"})
    assert r.status_code == 200
    assert r.headers["Access-Control-Allow-Origin"] == "http://km.example:8002"  # not evil's
    # An unknown workspace is not revealed to an unauthenticated preflight or call.
    assert requests.options(api + "/nope/services", timeout=10).status_code == 204
    assert requests.get(api + "/nope/services", timeout=10).status_code == 401


def test_portal_files(gw: GatewayProcess) -> None:
    api = gw.admin_url
    r = requests.get(api + "/portal", allow_redirects=False, timeout=10)
    assert r.status_code == 301 and r.headers["Location"] == "/portal/"
    index = requests.get(api + "/portal/", timeout=10)
    assert index.status_code == 200 and index.headers["Content-Type"].startswith("text/html")
    assert "script-src 'self'" in index.headers["Content-Security-Policy"]
    js = requests.get(api + "/portal/js/app.js", timeout=10)
    assert js.headers["Content-Type"].startswith("text/javascript")
    again = requests.get(api + "/portal/js/app.js", headers={"If-None-Match": js.headers["ETag"]},
                         timeout=10)
    assert again.status_code == 304 and again.content == b""
    host, port = gw.config["gateway"]["admin_listen"].split(":")
    for path in ("/portal/nothing.js", "/portal/../config", "/portal/js/../../config",
                 "/portal/%2e%2e/config"):
        conn = http.client.HTTPConnection(host, int(port), timeout=10)
        conn.request("GET", path)  # sent as is: clients would normalize the dots away
        assert conn.getresponse().status == 404, path
        conn.close()
    assert requests.post(api + "/portal/", timeout=10).status_code == 405
    assert requests.options(api + "/portal/", timeout=10).headers["Allow"] == "GET, HEAD, OPTIONS"
