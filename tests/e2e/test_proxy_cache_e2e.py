"""proxy-cache on real requests: a real fastgw (``--workers 1`` and ``--workers 2``), the IRIS
emulator counting what reaches it (``/_emulator/cacheable``), configured through
config.json and the Admin API (form and JSON), purged through the Admin API.
"""

from __future__ import annotations

import socket
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Iterator

import orjson
import pytest
import requests

from tests.support.admin import wait_ready, wait_until
from tests.support.gateway import GatewayProcess, free_port
from tests.support.procs import IrisProcess

T = 10  # seconds: every HTTP call of these tests is bounded
PATH = "/_emulator/cacheable"


def config(iris_url: str) -> dict[str, Any]:
    return {
        "_format_version": "3.0",
        "services": [{"name": "s", "url": iris_url, "routes": [
            {"name": "filed", "paths": [PATH + "/filed"], "strip_path": False, "plugins": [
                {"name": "proxy-cache", "config": {"strategy": "memory"}}]},
            {"name": "plain", "paths": ["/_emulator"], "strip_path": False},
        ]}],
        "gateway": {"admin_listen": f"127.0.0.1:{free_port()}"},
    }


class Node:
    def __init__(self, gw: GatewayProcess, iris: IrisProcess) -> None:
        self.gw = gw
        self.iris = iris
        self.plugins: list[str] = []
        self.routes: list[str] = []

    def backend_count(self) -> int:
        return int(requests.get(self.iris.url + "/_emulator/stats", timeout=T).json()["cacheable"])

    def get(self, path: str, *, method: str = "GET", fresh: bool = False,
            **kw: Any) -> requests.Response:
        headers = dict(kw.pop("headers", {}))
        if fresh:
            headers["Connection"] = "close"  # a new connection: any worker may take it
        return requests.request(method, self.gw.url + path, timeout=T, headers=headers, **kw)

    def route(self, name: str, *, form: Any = None, json: Any = None,
              quiet: bool = False) -> str:
        """A route on ``PATH/name`` with a proxy-cache plugin; returns the path."""
        r = requests.post(f"{self.gw.admin_url}/services/s/routes", timeout=T, json={
            "name": name, "paths": [f"{PATH}/{name}"], "strip_path": False})
        assert r.status_code == 201, r.text
        self.routes.append(name)
        r = requests.post(f"{self.gw.admin_url}/routes/{name}/plugins", timeout=T,
                          data=form, json=json)
        assert r.status_code == 201, r.text
        self.plugins.append(r.json()["id"])
        path = f"{PATH}/{name}"
        wait_until(lambda: self._cached(path + "?probe") if quiet
              else "X-Cache-Status" in self.get(path + "?probe").headers, timeout=10)
        return path

    def _cached(self, path: str) -> bool:
        """Without the plugin's headers: the second request did not reach the backend."""
        self.get(path)
        before = self.backend_count()
        self.get(path)
        return self.backend_count() == before

    def cleanup(self) -> None:
        for pid in self.plugins:
            requests.delete(f"{self.gw.admin_url}/plugins/{pid}", timeout=T)
        for name in self.routes:
            requests.delete(f"{self.gw.admin_url}/routes/{name}", timeout=T)
        self.plugins.clear()
        self.routes.clear()


@pytest.fixture(scope="module")
def one_worker() -> Iterator[Node]:
    with IrisProcess("A") as iris:
        with GatewayProcess(config(iris.url)) as gw:
            yield Node(gw, iris)


@pytest.fixture
def node(one_worker: Node) -> Iterator[Node]:
    yield one_worker
    one_worker.cleanup()


def memory(**config: Any) -> dict[str, Any]:
    return {"name": "proxy-cache", "config": {"strategy": "memory", **config}}


def test_miss_then_hit_configured_in_config_json(node: Node) -> None:
    path = PATH + "/filed/one"
    before = node.backend_count()
    miss = node.get(path)
    assert miss.status_code == 200
    assert miss.headers["X-Cache-Status"] == "Miss"
    key = miss.headers["X-Cache-Key"]
    assert len(key) == 64
    hit = node.get(path)
    assert hit.status_code == 200
    assert hit.headers["X-Cache-Status"] == "Hit"
    assert hit.headers["X-Cache-Key"] == key
    assert hit.content == miss.content
    assert hit.headers["Content-Type"] == "application/json"
    assert int(hit.headers["Content-Length"]) == len(miss.content)
    assert int(hit.headers["Age"]) >= 0
    assert node.backend_count() == before + 1  # the backend saw one request, not two


def test_admin_api_form_and_defaults(node: Node) -> None:
    path = node.route("form", form={"name": "proxy-cache", "config.strategy": "memory",
                                    "config.cache_ttl": "30"})
    plugin = requests.get(f"{node.gw.admin_url}/plugins/{node.plugins[-1]}", timeout=T).json()
    conf = plugin["config"]
    assert conf["cache_ttl"] == 30
    assert conf["response_code"] == [200, 301, 404]
    assert conf["request_method"] == ["GET", "HEAD"]
    assert conf["content_type"] == ["text/plain", "application/json"]
    assert conf["cache_control"] is False
    assert conf["memory"] == {"dictionary_name": "kong_db_cache"}
    assert node.get(path).headers["X-Cache-Status"] == "Miss"
    assert node.get(path).headers["X-Cache-Status"] == "Hit"


@pytest.mark.parametrize("config,field,text", [
    ({"strategy": "redis"}, "strategy", "'redis' is not supported by fastgw yet"),
    ({}, "strategy", "required field missing"),
    ({"strategy": "memory", "cache_ttl": 0}, "cache_ttl", "greater than 0"),
    ({"strategy": "memory", "response_code": []}, "response_code", "at least 1"),
])
def test_refused_configs(node: Node, config: dict[str, Any], field: str, text: str) -> None:
    r = requests.post(f"{node.gw.admin_url}/plugins", timeout=T,
                      json={"name": "proxy-cache", "config": config})
    assert r.status_code == 400, r.text
    assert text in orjson.dumps(r.json()["fields"]["config"][field]).decode()


def test_vary_query_and_headers(node: Node) -> None:
    path = node.route("vary", json=memory(vary_query_params=["a"], vary_headers=["X-Tenant"]))
    before = node.backend_count()
    assert node.get(path + "?a=1&b=1").headers["X-Cache-Status"] == "Miss"
    assert node.get(path + "?b=2&a=1").headers["X-Cache-Status"] == "Hit"  # b does not vary
    assert node.get(path + "?a=2").headers["X-Cache-Status"] == "Miss"
    t1 = node.get(path + "?a=1", headers={"X-Tenant": "one"})
    assert t1.headers["X-Cache-Status"] == "Miss"
    assert node.get(path + "?a=1", headers={"x-tenant": "one"}).headers[
        "X-Cache-Status"] == "Hit"
    assert node.get(path + "?a=1", headers={"X-Tenant": "two"}).headers[
        "X-Cache-Status"] == "Miss"
    assert node.backend_count() == before + 4


def test_every_query_parameter_varies_by_default(node: Node) -> None:
    path = node.route("allparams", json=memory())
    assert node.get(path + "?x=1&y=2").headers["X-Cache-Status"] == "Miss"
    assert node.get(path + "?y=2&x=1").headers["X-Cache-Status"] == "Hit"  # order ignored
    assert node.get(path + "?x=1&y=3").headers["X-Cache-Status"] == "Miss"


def test_ttl_expiry_refreshes(node: Node) -> None:
    path = node.route("ttl", json=memory(cache_ttl=1))
    first = node.get(path)
    assert first.headers["X-Cache-Status"] == "Miss"
    assert node.get(path).headers["X-Cache-Status"] == "Hit"
    time.sleep(2.2)
    refreshed = node.get(path)
    assert refreshed.headers["X-Cache-Status"] in ("Refresh", "Miss")  # Miss: storage ended
    assert refreshed.json()["n"] > first.json()["n"]
    assert node.get(path).headers["X-Cache-Status"] == "Hit"


def test_storage_ttl_keeps_a_stale_entry_for_refresh(node: Node) -> None:
    path = node.route("storage", json=memory(cache_ttl=1, storage_ttl=60))
    assert node.get(path).headers["X-Cache-Status"] == "Miss"
    time.sleep(2.2)
    assert node.get(path).headers["X-Cache-Status"] == "Refresh"


def test_cache_control(node: Node) -> None:
    path = node.route("cc", json=memory(cache_control=True))
    # Without a lifetime of its own, a response is not cacheable with cache_control.
    assert node.get(path + "?none").headers["X-Cache-Status"] == "Bypass"
    assert node.get(path + "?cc=private,max-age=60").headers["X-Cache-Status"] == "Bypass"
    assert node.get(path + "?cc=no-store").headers["X-Cache-Status"] == "Bypass"
    q = path + "?cc=public,max-age=60"
    assert node.get(q).headers["X-Cache-Status"] == "Miss"
    assert node.get(q).headers["X-Cache-Status"] == "Hit"
    assert node.get(q).headers["Cache-Control"] == "public,max-age=60"
    # The client's own directives.
    assert node.get(q, headers={"Cache-Control": "no-cache"}).headers[
        "X-Cache-Status"] == "Bypass"
    time.sleep(1.1)
    assert node.get(q, headers={"Cache-Control": "max-age=0"}).headers[
        "X-Cache-Status"] == "Refresh"
    assert node.get(q).headers["X-Cache-Status"] == "Hit"
    # s-maxage wins over max-age; max-age=0 alone is not cacheable.
    assert node.get(path + "?cc=max-age=0").headers["X-Cache-Status"] == "Bypass"
    only = node.get(path + "?absent", headers={"Cache-Control": "only-if-cached"})
    assert only.status_code == 504


def test_head_is_cached_apart_with_its_length(node: Node) -> None:
    path = node.route("head", json=memory())
    body = node.get(path).content
    miss = node.get(path, method="HEAD")
    assert miss.headers["X-Cache-Status"] == "Miss"  # its own key (method)
    hit = node.get(path, method="HEAD")
    assert hit.headers["X-Cache-Status"] == "Hit"
    assert hit.content == b""
    assert int(hit.headers["Content-Length"]) == len(body)
    # The connection is still in step after a HEAD hit: raw bytes, two requests, one write.
    host, port = "127.0.0.1", node.gw.port
    with socket.create_connection((host, port), timeout=T) as sock:
        sock.sendall(f"HEAD {path} HTTP/1.1\r\nHost: x\r\n\r\n"
                     f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    assert data.count(b"HTTP/1.1 200") == 2
    assert data.endswith(body)


@pytest.mark.parametrize("query", ["?status=500", "?ct=text/html",
                                   "?ct=application/json;%20charset=utf-8"])
def test_not_cacheable_response_is_bypass(node: Node, query: str) -> None:
    path = node.route("bypass", json=memory())
    before = node.backend_count()
    first = node.get(path + query)
    assert first.headers["X-Cache-Status"] == "Bypass"
    assert node.get(path + query).headers["X-Cache-Status"] == "Bypass"
    assert node.backend_count() == before + 2


def test_post_is_bypass(node: Node) -> None:
    path = node.route("post", json=memory())
    assert node.get(path, method="POST", data=b"x").headers["X-Cache-Status"] == "Bypass"


def test_chunked_response_stored_decoded_and_served_with_length(node: Node) -> None:
    path = node.route("chunked", json=memory())
    miss = node.get(path + "?chunked=1")
    assert miss.headers["X-Cache-Status"] == "Miss"
    assert miss.headers.get("Transfer-Encoding") == "chunked"  # streamed as it came
    hit = node.get(path + "?chunked=1")
    assert hit.headers["X-Cache-Status"] == "Hit"
    assert "Transfer-Encoding" not in hit.headers
    assert int(hit.headers["Content-Length"]) == len(miss.content)
    assert hit.content == miss.content


def test_response_headers_toggles(node: Node) -> None:
    path = node.route("quiet", quiet=True, json=memory(response_headers={
        "age": False, "X-Cache-Status": False, "X-Cache-Key": False}))
    before = node.backend_count()
    for _ in range(2):
        r = node.get(path + "?q")
        assert not {"Age", "X-Cache-Status", "X-Cache-Key"} & set(r.headers)
    assert node.backend_count() == before + 1


def test_purge_by_key_and_all_one_worker(node: Node) -> None:
    path = node.route("purge1", json=memory())
    key = node.get(path).headers["X-Cache-Key"]
    admin = node.gw.admin_url
    entry = requests.get(f"{admin}/proxy-cache/{key}", timeout=T)
    assert entry.status_code == 200
    assert entry.json()["status"] == 200 and entry.json()["version"] == 1
    plugin_id = node.plugins[-1]
    assert requests.get(f"{admin}/proxy-cache/{plugin_id}/caches/{key}",
                        timeout=T).status_code == 200
    assert requests.delete(f"{admin}/proxy-cache/{key}", timeout=T).status_code == 204
    assert requests.get(f"{admin}/proxy-cache/{key}", timeout=T).status_code == 404
    assert requests.delete(f"{admin}/proxy-cache/{key}", timeout=T).status_code == 404
    assert node.get(path).headers["X-Cache-Status"] == "Miss"
    assert requests.delete(f"{admin}/proxy-cache/{plugin_id}/caches/{key}",
                           timeout=T).status_code == 204
    assert node.get(path).headers["X-Cache-Status"] == "Miss"
    missing_plugin = "00000000-0000-4000-8000-000000000000"
    assert requests.get(f"{admin}/proxy-cache/{missing_plugin}/caches/{key}",
                        timeout=T).status_code == 404
    assert requests.delete(f"{admin}/proxy-cache", timeout=T).status_code == 204
    assert node.get(path).headers["X-Cache-Status"] == "Miss"


def test_two_workers_hit_and_purges_reach_every_worker() -> None:
    with IrisProcess("A") as iris:
        with GatewayProcess(config(iris.url), workers=2) as gw:
            wait_ready(gw, 2)
            node = Node(gw, iris)
            path = PATH + "/filed/two"
            admin = gw.admin_url

            def fill() -> int:
                """Fresh connections until both workers hold the entry; the backend's
                count when they do."""
                start = node.backend_count()
                wait_until(lambda: node.get(path, fresh=True).status_code == 200
                      and node.backend_count() - start >= 2, timeout=20)
                return node.backend_count()

            def responses(n: int) -> list[requests.Response]:
                with ThreadPoolExecutor(4) as pool:
                    return list(pool.map(lambda _: node.get(path, fresh=True), range(n)))

            filled = fill()
            after = responses(20)
            assert all(r.headers["X-Cache-Status"] == "Hit" for r in after)
            assert node.backend_count() == filled  # every worker answers from its cache
            key = after[0].headers["X-Cache-Key"]
            assert requests.delete(f"{admin}/proxy-cache/{key}", timeout=T).status_code == 204
            # No worker serves what it held before the purge.
            refilled = responses(40)
            stale = [r.json() for r in refilled if r.json()["n"] <= filled]
            assert not stale, stale
            # Fetched again (concurrent misses on one worker each go to the backend:
            # there is no request collapsing, as in Kong).
            assert node.backend_count() > filled
            filled = node.backend_count()
            assert all(r.headers["X-Cache-Status"] == "Hit" for r in responses(20))
            assert requests.delete(f"{admin}/proxy-cache", timeout=T).status_code == 204
            stale = [r.json() for r in responses(20) if r.json()["n"] <= filled]
            assert not stale, stale
            assert requests.get(f"{admin}/proxy-cache/{'0' * 64}", timeout=T).status_code == 404
