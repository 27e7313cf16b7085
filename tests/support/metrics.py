"""Helpers for the metrics tests: gateway configs with status/admin listeners, raw HTTP
requests whose bytes are known exactly, and scrapes parsed into {(name, labels): value}."""

from __future__ import annotations

import socket
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from collections.abc import Callable, Iterable, Iterator

import requests
from prometheus_client.parser import text_string_to_metric_families

from tests.support.gateway import GatewayProcess, config_for_targets, free_port

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def metrics_config(targets: Iterable[str], *, dead_port: int | None = None, **gateway: Any) -> dict[str, Any]:
    """The README setup (upstream iris, service/route atelier) plus, with `dead_port`, a
    service `dead` (route `dead`, path /dead) whose backend refuses connections."""
    config = config_for_targets(list(targets), gateway={
        "status_listen": f"127.0.0.1:{free_port()}",
        "admin_listen": f"127.0.0.1:{free_port()}",
        **gateway,
    })
    if dead_port is not None:
        config["services"].append({
            "name": "dead", "host": "127.0.0.1", "port": dead_port, "protocol": "http",
            "routes": [{"name": "dead", "paths": ["/dead"]}],
        })
    return config


def raw_request(port: int, head: bytes, timeout: float = 10.0) -> bytes:
    """Send `head` (a complete request with Connection: close) and read until close."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(head)
        chunks = []
        while True:
            data = sock.recv(65536)
            if not data:
                break
            chunks.append(data)
    return b"".join(chunks)


def get_request(path: str, extra: bytes = b"") -> bytes:
    return b"GET " + path.encode() + b" HTTP/1.1\r\nHost: gw.test\r\n" + extra + b"Connection: close\r\n\r\n"


def scrape_text(gw: GatewayProcess, accept: str | None = None, *, admin: bool = False) -> requests.Response:
    base = gw.admin_url if admin else gw.status_url
    headers = {"Accept": accept} if accept else {}
    r = requests.get(base + "/metrics", headers=headers, timeout=10)
    assert r.status_code == 200, r.text
    return r


def scrape(gw: GatewayProcess) -> Samples:
    samples: Samples = {}
    for family in text_string_to_metric_families(scrape_text(gw).text):
        for s in family.samples:
            samples[(s.name, frozenset(s.labels.items()))] = s.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float | None:
    """The sample `name` whose labels include `labels` (exactly one must match)."""
    want = set(labels.items())
    hits = [v for (n, ls), v in samples.items() if n == name and want <= ls]
    assert len(hits) <= 1, f"{name}{labels} matches {len(hits)} samples"
    return hits[0] if hits else None


def wait_ready(gw: GatewayProcess, timeout: float = 20.0) -> None:
    """Until /status/ready answers 200 (every worker runs the current config)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if requests.get(gw.status_url + "/status/ready", timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"not ready after {timeout}s:\n{gw.log()}")
        time.sleep(0.05)


def eventually(check: Callable[[], Any], timeout: float = 10.0, step: float = 0.05) -> Any:
    """Retry `check` (an assertion) until it passes or the time is up."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return check()
        except AssertionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(step)


@contextmanager
def prometheus_server(binary: str, job: str, target: str, workdir: Path) -> Iterator[str]:
    """A real Prometheus scraping `target` (host:port) every second as `job`; yields its
    base URL, and is always stopped (its log is `workdir/prometheus.log`)."""
    port = free_port()
    config = workdir / "prometheus.yml"
    config.write_text(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n"
        f"scrape_configs:\n  - job_name: {job}\n    static_configs:\n"
        f"      - targets: ['{target}']\n")
    with open(workdir / "prometheus.log", "wb") as log:
        proc = subprocess.Popen(
            [binary, f"--config.file={config}", f"--storage.tsdb.path={workdir / 'data'}",
             f"--web.listen-address=127.0.0.1:{port}", "--storage.tsdb.retention.time=1h"],
            stdout=log, stderr=subprocess.STDOUT, cwd=workdir)
        try:
            yield f"http://127.0.0.1:{port}"
        finally:
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


def prom_query(base: str, promql: str) -> list[dict[str, Any]]:
    """An instant query through Prometheus's HTTP API; its result vector."""
    r = requests.get(base + "/api/v1/query", params={"query": promql}, timeout=5)
    r.raise_for_status()
    body = r.json()
    assert body["status"] == "success", body
    return body["data"]["result"]
