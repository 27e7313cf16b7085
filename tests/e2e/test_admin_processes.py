"""End to end: the Admin API driving real multi-worker gateways in front of IRIS emulators.

The seed walkthrough with curl-style form posts, persistence across restart, kill -9
during a burst of writes, a config change under load with zero failed requests, the time
a change takes to reach every worker, worker respawn, SIGHUP, and the admin token rules.
"""

from __future__ import annotations

import os
import shutil
import signal
import statistics
import subprocess
import threading
import time
from typing import Any

import orjson
import pytest
import requests

from tests.support.gateway import GatewayProcess, config_for_targets, free_port
from tests.support.procs import IrisProcess
from fastgw.controlplane.store import FileConfigStore
from tests.support.admin import admin_config, wait_ready, wait_until


def form_post(url: str, fields: list[tuple[str, str]]) -> dict[str, Any]:
    """POST like the docs' `curl -X POST url --data k=v` (curl itself when installed)."""
    curl = shutil.which("curl")
    if curl is None:
        r = requests.post(url, data=fields, timeout=5)
        assert r.status_code == 201, r.text
        return r.json()
    args = [curl, "-sS", "-X", "POST", url, "-w", "\n%{http_code}"]
    for k, v in fields:
        args += ["--data", f"{k}={v}"]
    out = subprocess.run(args, capture_output=True, timeout=10, check=True).stdout.decode()
    body, _, code = out.rpartition("\n")
    assert code == "201", out
    return orjson.loads(body)


def backend_ids(url: str, n: int) -> set[str]:
    seen = set()
    for _ in range(n):  # a new connection each time: SO_REUSEPORT spreads them over workers
        r = requests.get(url, timeout=5, headers={"Connection": "close"})
        assert r.status_code == 200, r.text
        seen.add(r.json()["result"]["content"]["id"])
    return seen


def test_seed_walkthrough_two_workers(iris_pair: tuple[IrisProcess, IrisProcess]) -> None:
    a, b = iris_pair
    with GatewayProcess(admin_config(), workers=2) as gw:
        wait_ready(gw, 2)
        api = gw.admin_url
        form_post(api + "/upstreams", [("name", "myupstream")])
        form_post(api + "/upstreams/myupstream/targets", [("target", f"127.0.0.1:{a.port}")])
        form_post(api + "/upstreams/myupstream/targets", [("target", f"127.0.0.1:{b.port}")])
        svc = form_post(api + "/services", [("name", "myservice"), ("host", "myupstream"),
                                            ("path", "/api/atelier")])
        form_post(api + "/routes", [("paths[]", "/api/atelier"), ("service.id", svc["id"])])
        wait_ready(gw, 2)
        assert backend_ids(gw.url + "/api/atelier/", 20) == {"A", "B"}


def test_persistence_across_restart(iris_pair: tuple[IrisProcess, IrisProcess]) -> None:
    a, _ = iris_pair
    gw = GatewayProcess(admin_config(), workers=1)
    try:
        gw.start()
        wait_ready(gw, 1)
        api = gw.admin_url
        requests.post(api + "/upstreams", json={"name": "keep"})
        requests.post(api + "/upstreams/keep/targets", json={"target": f"127.0.0.1:{a.port}"})
        s = requests.post(api + "/services", json={"name": "s", "host": "keep"}).json()
        requests.post(api + "/services/s/routes", json={"paths": ["/api/atelier"], "strip_path": False})
        before = requests.get(api + "/config").json()
        assert gw.stop() == 0  # SIGTERM drains and exits 0
        gw.start()
        wait_ready(gw, 1)
        after = requests.get(api + "/config").json()
        assert after["etag"] == before["etag"] and after["config"] == before["config"]
        assert requests.get(api + "/services/s").json()["id"] == s["id"]
        assert requests.get(gw.url + "/api/atelier/", timeout=5).status_code == 200
    finally:
        gw.stop()
        gw._dir.cleanup()


def test_kill9_during_write_burst_leaves_valid_file() -> None:
    gw = GatewayProcess(admin_config(), workers=1)
    try:
        gw.start()
        wait_ready(gw, 1)
        api = gw.admin_url
        stop = threading.Event()
        accepted: list[int] = []

        def writer(n: int) -> None:
            s = requests.Session()
            i = 0
            while not stop.is_set():
                try:
                    r = s.post(api + "/consumers", json={"username": f"w{n}-{i}"}, timeout=2)
                    if r.status_code == 201:
                        accepted.append(1)
                except requests.RequestException:
                    return
                i += 1

        threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
        for t in threads:
            t.start()
        wait_until(lambda: len(accepted) >= 30, timeout=20)
        os.kill(gw.pid, signal.SIGKILL)
        stop.set()
        for t in threads:
            t.join(5)
        assert gw.proc is not None
        gw.proc.wait(5)
        # Old or new, never broken: the file loads, and holds (nearly) every accepted write.
        store = FileConfigStore.open(str(gw.config_path))
        count = len(store.state.merged.consumers)
        assert len(accepted) <= count <= len(accepted) + 4
        leftovers = [f for f in os.listdir(gw.config_path.parent) if f.endswith(".tmp")]
        assert len(leftovers) <= 1  # at most the write the kill interrupted
        # Workers notice their supervisor is gone and stop: the proxy port is released.
        wait_until(lambda: _port_closed(gw.port), timeout=10)
        gw.proc = None
        gw.start()
        wait_ready(gw, 1)
        assert len(requests.get(api + "/consumers?size=1000").json()["data"]) == count
    finally:
        gw.stop()
        gw._dir.cleanup()


def _port_closed(port: int) -> bool:
    import socket

    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


def test_config_change_under_load_zero_failures(iris_pair: tuple[IrisProcess, IrisProcess]) -> None:
    a, b = iris_pair
    base = config_for_targets([f"127.0.0.1:{a.port}", f"127.0.0.1:{b.port}"])
    with GatewayProcess(admin_config(base), workers=2) as gw:
        wait_ready(gw, 2)
        api = gw.admin_url
        stop = threading.Event()
        results: dict[str, int] = {"ok": 0, "failed": 0}
        errors: list[str] = []
        lock = threading.Lock()

        def load(keepalive: bool) -> None:
            s = requests.Session()
            while not stop.is_set():
                try:
                    headers = {} if keepalive else {"Connection": "close"}
                    r = s.get(gw.url + "/api/atelier/", timeout=5, headers=headers)
                    good = r.status_code == 200
                    if not good:
                        errors.append(f"{r.status_code} {r.text[:100]}")
                except requests.RequestException as exc:
                    good = False
                    errors.append(repr(exc))
                with lock:
                    results["ok" if good else "failed"] += 1

        threads = [threading.Thread(target=load, args=(k,)) for k in (True, True, False)]
        for t in threads:
            t.start()
        try:
            for i in range(15):  # weights, targets, routes, services: all while serving
                requests.patch(api + f"/upstreams/iris/targets/127.0.0.1:{a.port}",
                               json={"weight": 10 + i}).raise_for_status()
                requests.post(api + "/services", json={"name": f"extra{i}", "host": "iris"}
                              ).raise_for_status()
                requests.post(api + f"/services/extra{i}/routes",
                              json={"paths": [f"/extra{i}"]}).raise_for_status()
                time.sleep(0.05)
            doc = orjson.loads(requests.get(api + "/config").json()["config"])
            requests.post(api + "/config", json=doc).raise_for_status()
            wait_ready(gw, 2)
            time.sleep(0.3)
        finally:
            stop.set()
            for t in threads:
                t.join(10)
        assert results["failed"] == 0, errors[:5]
        assert results["ok"] > 100


def test_change_reaches_every_worker_within_100ms(iris_pair: tuple[IrisProcess, IrisProcess]) -> None:
    a, _ = iris_pair
    base = config_for_targets([f"127.0.0.1:{a.port}"])
    with GatewayProcess(admin_config(base), workers=2) as gw:
        wait_ready(gw, 2)
        api = gw.admin_url
        measured: list[float] = []
        client_side: list[float] = []
        for i in range(20):
            t0 = time.perf_counter()
            requests.post(api + "/services/atelier/routes", json={"paths": [f"/p{i}"],
                                                                  "strip_path": False}
                          ).raise_for_status()
            status = wait_ready(gw, 2, timeout=5)
            client_side.append((time.perf_counter() - t0) * 1000)
            cfg = status["config"]
            assert cfg["propagated_version"] == cfg["version"]
            measured.append(cfg["propagation_ms"])
        # Every worker serves the last route (new connections land on both workers).
        for _ in range(10):
            r = requests.get(gw.url + "/p19", timeout=5, headers={"Connection": "close"})
            assert r.status_code != 404 or "no Route" not in r.text
        print(f"\npropagation to all workers (supervisor push -> last ack): median "
              f"{statistics.median(measured):.1f} ms, max {max(measured):.1f} ms; "
              f"client write -> observed on all: median {statistics.median(client_side):.1f} ms")
        assert max(measured) < 100, measured


def test_dead_worker_replaced_and_sighup_reload(iris_pair: tuple[IrisProcess, IrisProcess]) -> None:
    a, _ = iris_pair
    with GatewayProcess(admin_config(config_for_targets([f"127.0.0.1:{a.port}"])), workers=2) as gw:
        status = wait_ready(gw, 2)
        victim = status["workers"][0]["pid"]
        os.kill(victim, signal.SIGKILL)
        wait_until(lambda: victim not in requests.get(gw.admin_url + "/").json()["pids"]["workers"],
                   timeout=10)
        status = wait_ready(gw, 2)
        assert victim not in [w["pid"] for w in status["workers"]]
        # SIGHUP: an invalid file keeps the running config; a valid one is pushed.
        raw = orjson.loads(gw.config_path.read_bytes())
        gw.config_path.write_bytes(b"{not json")
        gw.signal(signal.SIGHUP)
        time.sleep(0.5)
        assert requests.get(gw.admin_url + "/services/atelier").status_code == 200
        raw["services"][0]["name"] = "renamed"
        gw.write_config(raw)
        gw.signal(signal.SIGHUP)
        wait_until(lambda: requests.get(gw.admin_url + "/services/renamed").status_code == 200)
        wait_ready(gw, 2)
        assert "reload refused" in gw.log()


def test_admin_listen_off_loopback_needs_token() -> None:
    port = free_port()
    cfg = admin_config()
    cfg["gateway"]["admin_listen"] = f"0.0.0.0:{port}"
    gw = GatewayProcess(cfg)
    with pytest.raises(RuntimeError) as err:
        gw.start()
    assert "admin_token" in str(err.value) and "refusing to start" in str(err.value)
    gw._dir.cleanup()
    cfg["gateway"]["admin_token"] = "s3cret"
    with GatewayProcess(cfg) as gw:
        url = f"http://127.0.0.1:{port}"
        wait_until(lambda: _port_open(port), timeout=10)
        r = requests.get(url + "/services")
        assert r.status_code == 401 and r.json() == {"message": "Unauthorized"}
        assert requests.get(url + "/services", headers={"Fastgw-Admin-Token": "wrong"}).status_code == 401
        assert requests.get(url + "/services", headers={"Fastgw-Admin-Token": "s3cret"}).status_code == 200
        assert requests.get(url + "/services", headers={"Kong-Admin-Token": "s3cret"}).status_code == 200


def _port_open(port: int) -> bool:
    return not _port_closed(port)
