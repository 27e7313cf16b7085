"""The access log end to end: Kong's serializer shape from a real gateway, credentials
redacted, and a full disk that never leaves a broken JSON line."""

from __future__ import annotations

import time
from pathlib import Path

import orjson

from fastgw.dataplane.accesslog import AccessLog
from fastgw.dataplane.logrecord import LogRecord
from tests.support.disk import fill
from tests.support.gateway import GatewayProcess, config_for_targets
from tests.support.procs import IrisProcess


def _lines(path: Path, n: int, timeout: float = 10.0) -> list[dict]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists():
            lines = path.read_bytes().splitlines()
            if len(lines) >= n:
                return [orjson.loads(line) for line in lines]
        time.sleep(0.05)
    raise TimeoutError(f"{path}: fewer than {n} lines")


def test_kong_format_with_credentials_redacted(tmp_path: Path) -> None:
    log = tmp_path / "access.log"
    with IrisProcess("A") as iris:
        config = config_for_targets([f"127.0.0.1:{iris.port}"], gateway={
            "access_log": str(log), "access_log_format": "kong"})
        with GatewayProcess(config) as gw:
            import requests

            r = requests.get(gw.url + "/api/atelier/?a=1&a=2&flag",
                             headers={"Authorization": "Basic c2VjcmV0", "X-Trace": "t1"},
                             timeout=10)
            assert r.status_code == 200
            (entry,) = _lines(log, 1)
    req = entry["request"]
    assert req["method"] == "GET" and req["uri"] == "/api/atelier/?a=1&a=2&flag"
    assert req["url"].endswith("/api/atelier/?a=1&a=2&flag")
    assert req["querystring"] == {"a": ["1", "2"], "flag": True}
    assert req["headers"]["authorization"] == "REDACTED"
    assert req["headers"]["x-trace"] == "t1"
    assert req["size"] > 0
    assert entry["response"]["status"] == 200 and entry["response"]["size"] > 0
    assert entry["response"]["headers"]["x-request-id"] == r.headers["X-Request-Id"]
    assert set(entry["latencies"]) == {"kong", "proxy", "request", "receive"}
    assert entry["latencies"]["proxy"] >= 0
    assert entry["route"]["name"] == "atelier" and entry["service"]["name"] == "atelier"
    assert entry["upstream_uri"] == "/api/atelier/?a=1&a=2&flag"
    assert entry["upstream_status"] == "200" and entry["source"] == "service"
    assert entry["tries"] == [{"ip": "127.0.0.1", "port": iris.port, "balancer_latency": 0}]
    assert entry["client_ip"] == "127.0.0.1"
    assert abs(entry["started_at"] / 1000 - time.time()) < 60


def test_a_full_disk_never_leaves_a_broken_line(small_disk: Path) -> None:
    """The disk fills in the middle of a batch: the batch's bytes are taken back, the next
    batch (once there is room) starts on a line of its own."""
    path = small_disk / "access.log"
    log = AccessLog(str(path))
    record = LogRecord()
    record.method, record.target, record.status = "GET", b"/x" * 40, 200
    log.add(record)
    log.flush()
    _lines(path, 1)
    filler = fill(small_disk, leave=4096)  # room for a few lines, not for a big batch
    for _ in range(500):
        log.add(record)
    log.flush()
    time.sleep(0.5)  # the writer thread meets ENOSPC
    filler.unlink()
    log.add(record)
    log.close()
    lines = path.read_bytes().split(b"\n")
    assert lines[-1] == b""  # ends with a newline: no partial line
    parsed = [orjson.loads(line) for line in lines[:-1]]  # every line is whole JSON
    assert len(parsed) in (2, 502)  # the big batch went whole or not at all
