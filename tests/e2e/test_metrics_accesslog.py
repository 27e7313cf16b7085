"""End to end: the access log (file and stdout) and the request id of real fastgw processes."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import orjson
import requests

from tests.support.gateway import GatewayProcess
from tests.support.procs import IrisProcess
from tests.support.metrics import get_request, metrics_config, raw_request, wait_ready

GENERATED = re.compile(r"^[0-9a-f]{32}$")


def _lines(path: Path, n: int, timeout: float = 10.0) -> list[dict[str, Any]]:
    """The first `n` JSON lines of the log (written within a second or so)."""
    deadline = time.monotonic() + timeout
    while True:
        text = path.read_text() if path.exists() else ""
        lines = [orjson.loads(line) for line in text.splitlines() if line.startswith("{")]
        if len(lines) >= n or time.monotonic() > deadline:
            return lines
        time.sleep(0.05)


def test_access_log_file_and_request_ids(iris_pair: tuple[IrisProcess, IrisProcess], gateway_factory,
                                        tmp_path: Path) -> None:
    a, _ = iris_pair
    log_path = tmp_path / "access.log"
    config = metrics_config([f"127.0.0.1:{a.port}"], access_log=str(log_path))
    config["services"][0]["routes"][0]["paths"] = ["/api/atelier", "/_emulator"]
    gw = gateway_factory(config)
    wait_ready(gw)

    # A client's id is passed upstream and returned.
    r = requests.get(gw.url + "/_emulator/echo", headers={"X-Request-Id": "client-id-42"}, timeout=5)
    assert r.status_code == 200
    assert r.headers["X-Request-Id"] == "client-id-42"
    upstream = [v for n, v in r.json()["headers"] if n.lower() == "x-request-id"]
    assert upstream == ["client-id-42"]
    # Without one (or with an invalid one), the gateway makes one: the same upstream and back.
    for headers in ({}, {"X-Request-Id": "bad id with spaces"}):
        r = requests.get(gw.url + "/_emulator/echo", headers=headers, timeout=5)
        rid = r.headers["X-Request-Id"]
        assert GENERATED.match(rid), rid
        assert [v for n, v in r.json()["headers"] if n.lower() == "x-request-id"] == [rid]
    # Gateway errors carry it too, in the header and in Kong's JSON body.
    r = requests.get(gw.url + "/nowhere", headers={"X-Request-Id": "lost-1"}, timeout=5)
    assert r.status_code == 404
    assert r.headers["X-Request-Id"] == "lost-1" and r.json()["request_id"] == "lost-1"

    head = get_request("/api/atelier/?q=1", b"X-Request-Id: raw-7\r\n")
    answer = raw_request(gw.port, head)
    assert answer.startswith(b"HTTP/1.1 200 ")

    lines = _lines(log_path, 5)
    assert len(lines) == 5, lines
    first, last = lines[0], lines[-1]
    assert set(first) == {"time", "client", "method", "path", "route", "service", "target",
                          "status", "bytes_in", "bytes_out", "latency_ms", "request_id",
                          "trace_id"}
    assert re.fullmatch(r"[0-9a-f]{32}", first["trace_id"])  # the W3C trace sent upstream
    assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$", first["time"])
    assert first["request_id"] == "client-id-42" and first["status"] == 200
    assert first["route"] == "atelier" and first["service"] == "atelier"
    assert first["target"] == f"127.0.0.1:{a.port}" and first["client"] == "127.0.0.1"
    assert set(first["latency_ms"]) == {"request", "upstream", "gateway"}
    assert first["latency_ms"]["request"] >= first["latency_ms"]["upstream"] >= 0
    missing = lines[3]
    assert missing["status"] == 404 and missing["route"] is None and missing["target"] is None
    assert missing["latency_ms"]["upstream"] is None and missing["request_id"] == "lost-1"
    assert last["path"] == "/api/atelier/?q=1" and last["method"] == "GET"
    assert last["bytes_in"] == len(head) and last["bytes_out"] == len(answer)
    assert last["request_id"] == "raw-7"


def test_access_log_stdout(iris_pair: tuple[IrisProcess, IrisProcess]) -> None:
    a, _ = iris_pair
    with GatewayProcess(metrics_config([f"127.0.0.1:{a.port}"], access_log="stdout")) as gw:
        wait_ready(gw)
        r = requests.get(gw.url + "/api/atelier/", headers={"X-Request-Id": "to-stdout"}, timeout=5)
        assert r.status_code == 200
        deadline = time.monotonic() + 10
        while '"request_id":"to-stdout"' not in gw.log() and time.monotonic() < deadline:
            time.sleep(0.05)
        line = next(ln for ln in gw.log().splitlines() if '"request_id":"to-stdout"' in ln)
        assert orjson.loads(line)["status"] == 200


def test_access_log_off_by_default(iris_pair: tuple[IrisProcess, IrisProcess], gateway_factory) -> None:
    a, _ = iris_pair
    gw = gateway_factory(metrics_config([f"127.0.0.1:{a.port}"]))
    wait_ready(gw)
    r = requests.get(gw.url + "/api/atelier/", timeout=5)
    assert r.status_code == 200 and GENERATED.match(r.headers["X-Request-Id"])
    time.sleep(1.5)
    assert '"request_id"' not in gw.log()
