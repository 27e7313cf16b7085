"""Kong's plugins on real requests: configured through the Admin API (form and JSON, as
Kong's docs do) and through config.json, against a real fastgw and the IRIS emulator.

One gateway serves the module (each test adds its plugins and removes them); the
rate-limit exactness test runs its own `--workers 2` node.
"""

from __future__ import annotations

import base64
import http.server
import ssl
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any, Iterator

import orjson
import pytest
import requests

from tests.support.admin import wait_ready
from tests.support.admin import wait_until as until  # bounded: a config change to go live
from tests.support.gateway import GatewayProcess, free_port
from tests.support.procs import REPO_ROOT, IrisProcess

T = 10  # seconds: every HTTP call of these tests is bounded


def base_config(iris_url: str) -> dict[str, Any]:
    return {
        "_format_version": "3.0",
        "services": [{"name": "echo", "url": iris_url, "routes": [
            {"name": "echo", "paths": ["/_emulator"], "strip_path": False},
            # configured in config.json: correlation-id and a consumer-less rate limit
            {"name": "filed", "paths": ["/api/atelier"], "strip_path": False, "plugins": [
                {"name": "correlation-id", "config": {"echo_downstream": True}},
                {"name": "request-size-limiting",
                 "config": {"allowed_payload_size": 1, "size_unit": "kilobytes"}}]},
        ]}],
        "consumers": [
            {"username": "alice", "custom_id": "A-1",
             "keyauth_credentials": [{"key": "alice-key"}],
             "basicauth_credentials": [{"username": "alice", "password": "alice-pw"}],
             "acls": [{"group": "gold"}]},
            {"username": "bob", "keyauth_credentials": [{"key": "bob-key"}]},
        ],
        "gateway": {"admin_listen": f"127.0.0.1:{free_port()}"},
    }


@pytest.fixture(scope="module")
def gw() -> Iterator[GatewayProcess]:
    with IrisProcess("A") as iris:
        with GatewayProcess(base_config(iris.url)) as gateway:
            yield gateway


class Api:
    def __init__(self, gw: GatewayProcess) -> None:
        self.url = gw.admin_url
        self.proxy = gw.url
        self.created: list[str] = []

    def add(self, path: str, *, form: Any = None, json: Any = None) -> dict[str, Any]:
        r = requests.post(self.url + path, data=form, json=json, timeout=T)
        assert r.status_code == 201, r.text
        body: dict[str, Any] = r.json()
        if "name" in body and "config" in body:
            self.created.append(body["id"])
        return body

    def remove_all(self) -> None:
        for pid in self.created:
            requests.delete(f"{self.url}/plugins/{pid}", timeout=T)
        self.created.clear()

    def get(self, path: str = "/_emulator/echo", **kw: Any) -> requests.Response:
        return requests.get(self.proxy + path, timeout=T, **kw)


@pytest.fixture
def api(gw: GatewayProcess) -> Iterator[Api]:
    a = Api(gw)
    yield a
    a.remove_all()
    until(lambda: a.get().status_code == 200)


def upstream_headers(r: requests.Response) -> dict[str, str]:
    return {k.lower(): v for k, v in r.json()["headers"]}


def message(r: requests.Response) -> str:
    return str(r.json()["message"])


# --------------------------------------------------------------------------- authentication

def test_key_auth_by_form(api: Api) -> None:
    api.add("/routes/echo/plugins", form={"name": "key-auth", "config.key_names[]": "apikey",
                                           "config.hide_credentials": "true"})
    until(lambda: api.get().status_code == 401)
    r = api.get()
    assert message(r) == "No API key found in request"
    assert r.headers["WWW-Authenticate"] == 'Key realm="kong"'
    assert message(api.get(headers={"apikey": "nope"})) == "Invalid authentication credentials"
    r = api.get(headers={"apikey": "alice-key", "X-Consumer-ID": "spoofed"})
    assert r.status_code == 200
    up = upstream_headers(r)
    assert up["x-consumer-username"] == "alice" and up["x-consumer-custom-id"] == "A-1"
    assert up["x-consumer-id"] != "spoofed" and "x-credential-identifier" in up
    assert "apikey" not in up  # hide_credentials
    r = api.get("/_emulator/echo?apikey=bob-key&keep=1")
    assert r.status_code == 200 and r.json()["path"] == "/_emulator/echo?keep=1"
    assert upstream_headers(r)["x-consumer-username"] == "bob"


def test_basic_auth_by_json(api: Api) -> None:
    api.add("/routes/echo/plugins", json={"name": "basic-auth", "config": {}})
    until(lambda: api.get().status_code == 401)
    r = api.get()
    assert message(r) == "Unauthorized" and r.headers["WWW-Authenticate"] == 'Basic realm="kong"'
    assert api.get(auth=("alice", "wrong")).status_code == 401
    assert message(api.get(auth=("alice", "wrong"))) == "Invalid authentication credentials"
    r = api.get(auth=("alice", "alice-pw"))
    assert r.status_code == 200
    assert upstream_headers(r)["x-credential-identifier"] == "alice"


def test_anonymous_consumer(api: Api) -> None:
    api.add("/routes/echo/plugins", json={"name": "key-auth", "config": {"anonymous": "bob"}})
    until(lambda: "x-anonymous-consumer" in upstream_headers(api.get()))
    up = upstream_headers(api.get())
    assert up["x-anonymous-consumer"] == "true" and up["x-consumer-username"] == "bob"
    assert "x-anonymous-consumer" not in upstream_headers(api.get(headers={"apikey": "alice-key"}))


def test_acl_allow_and_deny(api: Api) -> None:
    api.add("/routes/echo/plugins", json={"name": "key-auth"})
    acl = api.add("/routes/echo/plugins", form={"name": "acl", "config.allow": "gold"})
    until(lambda: api.get(headers={"apikey": "bob-key"}).status_code == 403)
    r = api.get(headers={"apikey": "bob-key"})
    assert message(r) == "You cannot consume this service"
    r = api.get(headers={"apikey": "alice-key"})
    assert r.status_code == 200 and upstream_headers(r)["x-consumer-groups"] == "gold"
    requests.patch(f"{api.url}/plugins/{acl['id']}", timeout=T,
                   json={"config": {"allow": None, "deny": ["gold"]}}).raise_for_status()
    until(lambda: api.get(headers={"apikey": "alice-key"}).status_code == 403)
    assert api.get(headers={"apikey": "bob-key"}).status_code == 200


def test_credentials_endpoints(api: Api) -> None:
    url = api.url
    r = requests.post(f"{url}/consumers/bob/key-auth", json={}, timeout=T)
    assert r.status_code == 201 and len(r.json()["key"]) == 32  # generated
    key = r.json()
    assert requests.post(f"{url}/consumers/alice/key-auth", json={"key": key["key"]},
                         timeout=T).status_code == 409
    r = requests.post(f"{url}/consumers/bob/basic-auth",
                      data={"username": "bobby", "password": "s3cret"}, timeout=T)
    assert r.status_code == 201 and "s3cret" not in r.text and len(r.json()["password"]) == 40
    assert requests.post(f"{url}/consumers/bob/acls", data={"group": "silver"},
                         timeout=T).status_code == 201
    assert requests.post(f"{url}/consumers/bob/acls", data={"group": "silver"},
                         timeout=T).status_code == 409
    listed = requests.get(f"{url}/key-auths", timeout=T).json()["data"]
    assert key["id"] in {k["id"] for k in listed}
    owner = requests.get(f"{url}/key-auths/{key['key']}/consumer", timeout=T).json()
    assert owner["username"] == "bob"
    api.add("/routes/echo/plugins", json={"name": "basic-auth"})
    until(lambda: api.get().status_code == 401)
    assert api.get(auth=("bobby", "s3cret")).status_code == 200
    assert requests.delete(f"{url}/consumers/bob/key-auth/{key['id']}",
                           timeout=T).status_code == 204
    assert requests.get(f"{url}/key-auths/{key['id']}", timeout=T).status_code == 404
    for path in ("basic-auth/bobby", "acls/silver"):
        assert requests.delete(f"{url}/consumers/bob/{path}", timeout=T).status_code == 204


# --------------------------------------------------------------------------- traffic control

def test_rate_limiting_by_form(api: Api) -> None:
    api.add("/routes/echo/plugins", form={"name": "rate-limiting", "config.hour": "3",
                                           "config.limit_by": "ip"})
    until(lambda: "X-RateLimit-Limit-Hour" in api.get().headers)
    statuses = [api.get() for _ in range(4)]
    # The first request of until() counted too: 3 allowed in all.
    assert [r.status_code for r in statuses] == [200, 200, 429, 429]
    refused = statuses[-1]
    assert message(refused) == "API rate limit exceeded"
    assert refused.headers["X-RateLimit-Remaining-Hour"] == "0"
    assert refused.headers["RateLimit-Limit"] == "3"
    assert int(refused.headers["Retry-After"]) >= 1
    assert statuses[0].headers["X-RateLimit-Remaining-Hour"] == "1"


def test_request_size_limiting_from_config_json(gw: GatewayProcess) -> None:
    url = gw.url + "/api/atelier/"
    big = b"x" * 2048
    r = requests.post(url, data=big, timeout=T)
    assert r.status_code == 413 and message(r) == "Request size limit exceeded"
    r = requests.post(url, data=iter([big]), timeout=T)  # chunked: counted as it comes
    assert r.status_code == 413 and message(r) == "Request size limit exceeded"
    assert requests.post(url, data=b"x" * 100, timeout=T).status_code != 413


def test_correlation_id_from_config_json(gw: GatewayProcess) -> None:
    r = requests.get(gw.url + "/api/atelier/", timeout=T)
    assert "#" in r.headers["Kong-Request-ID"]  # uuid#counter, echoed downstream
    r = requests.get(gw.url + "/api/atelier/", headers={"Kong-Request-ID": "mine"}, timeout=T)
    assert r.headers["Kong-Request-ID"] == "mine"


def test_ip_restriction(api: Api) -> None:
    plugin = api.add("/routes/echo/plugins", json={"name": "ip-restriction",
                                                    "config": {"deny": ["127.0.0.0/8"]}})
    until(lambda: api.get().status_code == 403)
    assert message(api.get()) == "Your IP address is not allowed"
    requests.patch(f"{api.url}/plugins/{plugin['id']}", timeout=T, json={
        "config": {"deny": None, "allow": ["::1", "127.0.0.1"], "status": 401,
                   "message": "go away"}}).raise_for_status()
    until(lambda: api.get().status_code == 200)


# --------------------------------------------------------------------------- headers

def test_cors_preflight_and_response(api: Api) -> None:
    api.add("/routes/echo/plugins", form={"name": "cors", "config.origins": "http://app.example",
                                           "config.max_age": "600",
                                           "config.exposed_headers": "X-Iris-Id"})
    until(lambda: "Vary" in api.get(headers={"Origin": "http://app.example"}).headers)
    r = requests.options(api.proxy + "/_emulator/echo", timeout=T, headers={
        "Origin": "http://app.example", "Access-Control-Request-Method": "POST"})
    assert r.status_code == 200 and r.content == b""
    assert r.headers["Access-Control-Allow-Origin"] == "http://app.example"
    assert r.headers["Access-Control-Max-Age"] == "600"
    assert "POST" in r.headers["Access-Control-Allow-Methods"]
    r = api.get(headers={"Origin": "http://app.example"})
    assert r.headers["Access-Control-Allow-Origin"] == "http://app.example"
    assert r.headers["Access-Control-Expose-Headers"] == "X-Iris-Id"
    assert "Access-Control-Allow-Origin" not in api.get(headers={"Origin": "http://x"}).headers


def test_request_transformer(api: Api) -> None:
    api.add("/routes/echo/plugins", json={"name": "request-transformer", "config": {
        "remove": {"headers": ["x-drop"], "querystring": ["secret"]},
        "add": {"headers": ["X-Added:yes"], "querystring": ["v:2"], "body": ["source:gw"]},
        "rename": {"headers": ["x-old:X-New"]}}})
    until(lambda: "x-added" in upstream_headers(api.get()))
    r = requests.post(api.proxy + "/_emulator/echo?secret=1&a=b", timeout=T,
                      json={"n": 1}, headers={"X-Drop": "1", "X-Old": "o"})
    up = upstream_headers(r)
    assert up["x-added"] == "yes" and up["x-new"] == "o"
    assert "x-drop" not in up and "x-old" not in up
    assert r.json()["path"] == "/_emulator/echo?a=b&v=2"
    assert orjson.loads(r.json()["body"]) == {"n": 1, "source": "gw"}
    assert up["content-length"] == str(len(r.json()["body"]))


def test_response_transformer(api: Api) -> None:
    api.add("/routes/echo/plugins", form={"name": "response-transformer",
                                           "config.add.headers": "X-Served-By:fastgw",
                                           "config.remove.headers": "X-Iris-Id"})
    until(lambda: "X-Served-By" in api.get().headers)
    r = api.get()
    assert r.headers["X-Served-By"] == "fastgw" and "X-Iris-Id" not in r.headers
    assert r.json()["id"] == "A"  # the body is untouched


def test_response_transformer_json_body(api: Api) -> None:
    api.add("/routes/echo/plugins", form={"name": "response-transformer",
                                           "config.rename.json": "id:iris_id",
                                           "config.add.json": ["gw:fastgw", "n:2"],
                                           "config.add.json_types": ["string", "number"]})
    until(lambda: "gw" in api.get().json())
    r = api.get()
    body = r.json()
    assert body["gw"] == "fastgw" and body["n"] == 2
    assert body["iris_id"] == "A" and "id" not in body
    assert r.headers["Content-Length"] == str(len(r.content))
    assert "Transfer-Encoding" not in r.headers


# --------------------------------------------------------------------------- precedence

def test_precedence_global_service_route_consumer(api: Api) -> None:
    def limit(key: str) -> str:
        return api.get(headers={"apikey": key}).headers.get("X-RateLimit-Limit-Hour", "")

    api.add("/routes/echo/plugins", json={"name": "key-auth"})
    api.add("/plugins", json={"name": "rate-limiting", "config": {"hour": 1000}})
    until(lambda: limit("bob-key") == "1000")
    api.add("/services/echo/plugins", json={"name": "rate-limiting", "config": {"hour": 500}})
    until(lambda: limit("bob-key") == "500")
    route = api.add("/routes/echo/plugins", json={"name": "rate-limiting",
                                                  "config": {"hour": 200}})
    until(lambda: limit("bob-key") == "200")
    api.add("/consumers/alice/plugins", json={"name": "rate-limiting", "config": {"hour": 50}})
    until(lambda: limit("alice-key") == "50")
    assert limit("bob-key") == "200"  # a consumer's own plugin is for that consumer only
    api.add("/plugins", json={"name": "rate-limiting", "consumer": {"id": _consumer_id(api, "bob")},
                              "route": {"id": _route_id(api, "echo")}, "config": {"hour": 20}})
    until(lambda: limit("bob-key") == "20")  # route + consumer beats route alone
    requests.delete(f"{api.url}/plugins/{route['id']}", timeout=T)
    until(lambda: limit("alice-key") == "50")
    assert limit("bob-key") == "20"


def _consumer_id(api: Api, name: str) -> str:
    return str(requests.get(f"{api.url}/consumers/{name}", timeout=T).json()["id"])


def _route_id(api: Api, name: str) -> str:
    return str(requests.get(f"{api.url}/routes/{name}", timeout=T).json()["id"])


# --------------------------------------------------------------------------- refusal

def test_unknown_plugin_refused_by_admin_api(api: Api) -> None:
    r = requests.post(api.url + "/plugins", data={"name": "rate-limting"}, timeout=T)
    assert r.status_code == 400
    assert r.json()["fields"] == {"name": "plugin 'rate-limting' not enabled; add it to the "
                                          "'plugins' configuration property"}
    r = requests.post(api.url + "/plugins", json={"name": "rate-limiting",
                                                  "config": {"minute": "5"}}, timeout=T)
    assert r.status_code == 400 and r.json()["fields"] == {"config": {"minute":
                                                                      "expected a number"}}
    enabled = requests.get(api.url + "/plugins/enabled", timeout=T).json()["enabled_plugins"]
    assert "key-auth" in enabled and "rate-limting" not in enabled
    root = requests.get(api.url + "/", timeout=T).json()["plugins"]["available_on_server"]
    assert sorted(root) == sorted(enabled) and root["key-auth"]["priority"] == 1250
    schema = requests.get(api.url + "/schemas/plugins/key-auth", timeout=T).json()
    config = next(f["config"] for f in schema["fields"] if "config" in f)
    assert {"key_names": {"type": "array", "required": True, "default": ["apikey"],
                          "elements": {"type": "string"}}} in config["fields"]
    assert requests.get(api.url + "/schemas/plugins/nope", timeout=T).status_code == 404


@pytest.mark.parametrize("plugin", ["rate-limting", "proxy-cache-advanced"])
def test_unknown_plugin_refused_by_check_and_run(tmp_path: Any, plugin: str) -> None:
    path = tmp_path / "config.json"
    path.write_bytes(orjson.dumps({"_format_version": "3.0", "plugins": [{"name": plugin}]}))
    check = subprocess.run([sys.executable, "-m", "fastgw", "check", "-c", str(path)],
                           capture_output=True, text=True, timeout=60, cwd=REPO_ROOT)
    assert check.returncode == 1
    assert f"plugin '{plugin}' not enabled" in check.stdout + check.stderr
    with pytest.raises(RuntimeError, match=f"plugin '{plugin}' not enabled"):
        GatewayProcess(orjson.loads(path.read_bytes())).start()


# --------------------------------------------------------------------------- exact limits

def test_rate_limit_exact_across_two_workers() -> None:
    limit, total = 60, 240
    with IrisProcess("A") as iris:
        config = {"_format_version": "3.0", "services": [{"name": "s", "url": iris.url,
            "routes": [{"name": "r", "paths": ["/_emulator"], "strip_path": False}],
            "plugins": [{"name": "rate-limiting", "config": {"hour": limit,
                                                             "limit_by": "service"}},
                        {"name": "correlation-id", "config": {"generator": "uuid#counter",
                                                              "echo_downstream": True}}]}],
            "gateway": {"admin_listen": f"127.0.0.1:{free_port()}"}}
        # A window boundary in the middle would reset the count: start well inside one.
        while time.time() % 3600 > 3540:
            time.sleep(1)
        with GatewayProcess(config, workers=2) as gw:
            wait_ready(gw, 2)

            def one(_: int) -> tuple[int, str]:
                with requests.get(gw.url + "/_emulator/echo", timeout=T,
                                  headers={"Connection": "close"}) as r:
                    return r.status_code, r.headers.get("Kong-Request-ID", "").split("#")[0]

            with ThreadPoolExecutor(16) as pool:
                results = list(pool.map(one, range(total)))
    statuses = [s for s, _ in results]
    assert statuses.count(200) == limit, statuses.count(200)
    assert statuses.count(429) == total - limit
    # Both workers answered (the uuid part of uuid#counter is per worker).
    assert len({w for _, w in results}) == 2


# --------------------------------------------------------------------------- prometheus

def test_prometheus_toggles_and_per_consumer(api: Api) -> None:
    def metrics() -> str:
        return requests.get(api.url + "/metrics", timeout=T).text

    api.get()
    until(lambda: "_request_latency_ms_bucket" in metrics())  # no plugin: every family
    api.add("/routes/echo/plugins", json={"name": "key-auth"})
    until(lambda: api.get().status_code == 401)
    api.add("/plugins", form={"name": "prometheus", "config.per_consumer": "true",
                              "config.status_code_metrics": "true"})

    def alice_counted() -> bool:
        assert api.get(headers={"apikey": "alice-key"}).status_code == 200
        return any('consumer="alice"' in line and line.startswith("fastgw_http_requests_total")
                   for line in metrics().splitlines())

    until(alice_counted)
    text = metrics()
    assert "_request_latency_ms_bucket" not in text  # latency_metrics off
    assert "fastgw_bandwidth_bytes" not in text  # bandwidth_metrics off
    assert "fastgw_upstream_target_health" not in text


# --------------------------------------------------------------------------- logging

class _Collector(http.server.BaseHTTPRequestHandler):
    """A real HTTP endpoint for http-log: the first POST gets 500 (a retry must follow),
    the others 200; every body is kept."""

    bodies: list[Any] = []
    posts = 0

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        type(self).posts += 1
        body = self.rfile.read(int(self.headers["Content-Length"]))
        status = 500 if type(self).posts == 1 else 200
        if status == 200:
            type(self).bodies.append(orjson.loads(body))
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


def test_http_log_batches_and_retries(api: Api) -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Collector)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        api.add("/routes/echo/plugins", json={"name": "http-log", "config": {
            "http_endpoint": f"http://127.0.0.1:{server.server_port}/logs",
            "headers": {"X-Log-Token": "t"},
            "queue": {"max_batch_size": 2, "max_coalescing_delay": 0.2,
                      "initial_retry_delay": 0.05}}})
        until(lambda: api.get().status_code == 200)  # the plugin is live
        _Collector.bodies.clear()
        for i in range(4):
            api.get(f"/_emulator/echo?n={i}")

        def uris() -> list[str]:
            return [e["request"]["uri"] for batch in _Collector.bodies for e in batch]

        until(lambda: all(f"/_emulator/echo?n={i}" in uris() for i in range(4)), timeout=10)
    finally:
        server.shutdown()
    entries = [e for batch in _Collector.bodies for e in batch]
    assert all(isinstance(b, list) and len(b) <= 2 for b in _Collector.bodies)
    assert sorted(uris()).count("/_emulator/echo?n=0") == 1  # delivered once
    entry = entries[-1]
    assert entry["response"]["status"] == 200 and entry["route"]["name"] == "echo"
    assert entry["service"]["name"] == "echo" and "latencies" in entry
    assert _Collector.posts > len(_Collector.bodies)  # the refused batch was sent again


class _TlsCollector(http.server.BaseHTTPRequestHandler):
    """An https endpoint for http-log: keeps each body with its Authorization header."""

    received: list[tuple[str | None, Any]] = []

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).received.append((self.headers.get("Authorization"), orjson.loads(body)))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@contextmanager
def _https_server(cert: Any) -> Iterator[http.server.ThreadingHTTPServer]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _TlsCollector)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    cert.configure_cert(context)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def test_http_log_over_https_verified_with_basic_auth(tmp_path: Any) -> None:
    """An https endpoint whose certificate the node trusts gets the entries, with the URL's
    user and password as basic auth; one signed by an unknown CA gets nothing (the
    certificate is verified), and the error is logged without the password."""
    trustme = pytest.importorskip("trustme")
    trusted, unknown = trustme.CA(), trustme.CA()
    bundle = tmp_path / "trusted.pem"
    trusted.cert_pem.write_to_path(str(bundle))
    _TlsCollector.received.clear()
    with _https_server(trusted.issue_cert("localhost")) as good, \
            _https_server(unknown.issue_cert("localhost")) as bad, IrisProcess("A") as iris:
        config = base_config(iris.url)
        queue = {"max_batch_size": 1, "max_coalescing_delay": 0.05, "max_retry_time": 0.5,
                 "initial_retry_delay": 0.05}
        config["plugins"] = [
            {"name": "http-log", "route": "echo", "config": {
                "http_endpoint": f"https://bob:s%3Acret@localhost:{good.server_port}/logs",
                "queue": queue}},
            {"name": "http-log", "route": "filed", "config": {
                "http_endpoint": f"https://bob:s%3Acret@localhost:{bad.server_port}/logs",
                "queue": queue}}]
        with GatewayProcess(config, env={"SSL_CERT_FILE": str(bundle)}) as gw:
            wait_ready(gw, 1)
            assert requests.get(gw.url + "/_emulator/echo?n=1", timeout=T).status_code == 200
            assert requests.get(gw.url + "/api/atelier/", timeout=T).status_code == 200
            until(lambda: len(_TlsCollector.received) >= 1, timeout=10)
            until(lambda: "entries dropped after retrying" in gw.log(), timeout=10)
            log_text = gw.log()
    assert len(_TlsCollector.received) == 1  # nothing from the unverified endpoint
    authorization, entry = _TlsCollector.received[0]
    assert authorization == "Basic " + base64.b64encode(b"bob:s:cret").decode()
    assert entry["request"]["uri"] == "/_emulator/echo?n=1"
    assert "CERTIFICATE_VERIFY_FAILED" in log_text or "certificate verify failed" in log_text
    assert "s%3Acret" not in log_text and f"https://localhost:{bad.server_port}/logs" in log_text


def test_file_log(api: Api, tmp_path: Any) -> None:
    path = tmp_path / "file.log"
    api.add("/routes/echo/plugins", json={"name": "key-auth"})
    until(lambda: api.get().status_code == 401)
    api.add("/routes/echo/plugins", form={"name": "file-log", "config.path": str(path)})

    def logged() -> bool:
        assert api.get(headers={"apikey": "alice-key"}).status_code == 200
        return path.exists() and b'"alice"' in path.read_bytes()

    until(logged, timeout=10)
    entry = orjson.loads(path.read_bytes().splitlines()[-1])
    assert entry["consumer"]["username"] == "alice"
    assert entry["request"]["headers"]["apikey"] == "REDACTED"  # credentials never logged


# --------------------------------------------------------------------------- config.json

def test_every_plugin_from_config_json() -> None:
    """The same plugins as above, each on a route of its own, from the file."""
    def route(name: str, *plugins: dict[str, Any]) -> dict[str, Any]:
        return {"name": name, "paths": [f"/{name}"], "strip_path": True, "plugins": list(plugins)}

    with IrisProcess("A") as iris:
        config = base_config(iris.url)
        config["services"][0]["url"] = iris.url + "/_emulator"
        config["services"][0]["routes"] = [
            route("key", {"name": "key-auth"}),
            route("basic", {"name": "basic-auth"}),
            route("acl", {"name": "key-auth"}, {"name": "acl", "config": {"deny": ["gold"]}}),
            route("limit", {"name": "rate-limiting", "config": {"hour": 1, "limit_by": "ip"}}),
            route("ip", {"name": "ip-restriction", "config": {"deny": ["127.0.0.1", "::1"]}}),
            route("cors", {"name": "cors", "config": {"origins": ["http://a.example"]}}),
            route("req", {"name": "request-transformer",
                          "config": {"add": {"headers": ["X-From:file"]}}}),
            route("resp", {"name": "response-transformer",
                           "config": {"add": {"headers": ["X-Resp:file"], "json": ["from:file"]},
                                      "remove": {"json": ["headers"]}}}),
        ]
        with GatewayProcess(config) as gw:
            def get(path: str, **kw: Any) -> requests.Response:
                return requests.get(gw.url + path, timeout=T, **kw)

            assert get("/key/echo").status_code == 401
            assert get("/key/echo", headers={"apikey": "bob-key"}).status_code == 200
            assert get("/basic/echo", auth=("alice", "alice-pw")).status_code == 200
            assert get("/basic/echo", auth=("alice", "nope")).status_code == 401
            assert get("/acl/echo", headers={"apikey": "alice-key"}).status_code == 403
            assert get("/acl/echo", headers={"apikey": "bob-key"}).status_code == 200
            assert [get("/limit/echo").status_code for _ in range(2)] == [200, 429]
            assert get("/ip/echo").status_code == 403
            r = get("/cors/echo", headers={"Origin": "http://a.example"})
            assert r.headers["Access-Control-Allow-Origin"] == "http://a.example"
            assert upstream_headers(get("/req/echo"))["x-from"] == "file"
            r = get("/resp/echo")
            assert r.headers["X-Resp"] == "file"
            assert r.json()["from"] == "file" and "headers" not in r.json()
            assert int(r.headers["Content-Length"]) == len(r.content)
