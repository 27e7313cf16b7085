"""Real Kong files (tests/fixtures/kong) through a real fastgw: loaded from `-c kong.yml`,
ten Admin API writes, a restart, and the file still holds every original entity and
field, implemented by fastgw or not (issue 13; DESIGN.md: configuration is the user's
data). Also: `POST /config -F config=@kong.yml`, and `fastgw config export --kong`."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import requests

from fastgw.config.loader import parse_yaml
from tests.support.admin import admin_config, wait_ready
from tests.support.gateway import GatewayProcess
from tests.support.kongfiles import KONG_FILES, LOADABLE_KONG_FILES, lost_fields, read_kong_file
from tests.support.procs import REPO_ROOT


def ten_writes(api: str, original: dict[str, Any]) -> dict[tuple[str, str], set[str]]:
    """Ten Admin API writes of every kind; returns the original fields they changed."""
    changed: dict[tuple[str, str], set[str]] = {}

    def ok(r: requests.Response, *codes: int) -> dict[str, Any]:
        assert r.status_code in codes, (r.request.method, r.request.url, r.status_code, r.text)
        return r.json() if r.content else {}

    ok(requests.post(api + "/services", json={"name": "fid-svc", "url": "http://127.0.0.1:9/x"},
                     timeout=10), 201)
    ok(requests.post(api + "/services/fid-svc/routes", data={"name": "fid-route",
                     "paths[]": "/fid-only-route"}, timeout=10), 201)
    ok(requests.post(api + "/upstreams", data={"name": "fid-up"}, timeout=10), 201)
    ok(requests.post(api + "/upstreams/fid-up/targets", data={"target": "127.0.0.1:9"},
                     timeout=10), 201)
    ok(requests.post(api + "/consumers", data={"username": "fid-user"}, timeout=10), 201)
    ok(requests.put(api + "/consumers/fid-user-2", json={"custom_id": "fid-2"}, timeout=10), 200)
    ok(requests.patch(api + "/routes/fid-route", json={"tags": ["fid"]}, timeout=10), 200)
    ok(requests.delete(api + "/consumers/fid-user-2", timeout=10), 204)
    ok(requests.patch(api + "/upstreams/fid-up", json={"slots": 100}, timeout=10), 200)
    services = requests.get(api + "/services", timeout=10).json()["data"]
    first = next((s for s in services if s["name"] != "fid-svc"), None)
    if first is not None:  # an original entity, patched: its other fields must all stay
        after = ok(requests.patch(api + f"/services/{first['id']}", json={"retries": 4},
                                  timeout=10), 200)
        assert after["retries"] == 4
        changed[("services", first["id"])] = {"retries"}
    else:
        ok(requests.patch(api + "/services/fid-svc", json={"retries": 4}, timeout=10), 200)
    return changed


@pytest.mark.parametrize("path", LOADABLE_KONG_FILES, ids=[p.name for p in LOADABLE_KONG_FILES])
def test_kong_file_survives_ten_writes_and_a_restart(path: Path) -> None:
    original = read_kong_file(path)
    config = admin_config(original)
    with GatewayProcess(config, workers=1, config_name="kong.yml") as gw:
        wait_ready(gw, 1)
        changed = ten_writes(gw.admin_url, original)
        gw.stop()
        gw.start()
        wait_ready(gw, 1)
        stored = parse_yaml(gw.config_path.read_bytes())
        assert lost_fields(original, stored, changed) == []
        for key, value in original.items():  # top-level collections fastgw lacks: verbatim
            if key not in ("services", "routes", "upstreams", "targets", "consumers",
                           "plugins", "certificates", "snis", "ca_certificates",
                           "_format_version"):
                assert stored[key] == value, key
        # ...and the Admin API serves the entities as they are in the file.
        names = {s["name"] for s in requests.get(gw.admin_url + "/services", timeout=10)
                 .json()["data"]}
        assert "fid-svc" in names
        assert "Traceback" not in gw.log(), gw.log()[-3000:]


def test_post_config_takes_a_kong_yml_as_kong_docs_send_it() -> None:
    kong_yml = (KONG_FILES[0].parent / "kong-config-init-example.yml").read_bytes()
    with GatewayProcess(admin_config(), workers=1) as gw:
        wait_ready(gw, 1)
        r = requests.post(gw.admin_url + "/config", files={"config": ("kong.yml", kong_yml)},
                          timeout=10)
        assert r.status_code == 201, r.text
        keys = requests.get(gw.admin_url + "/consumers/example-user/key-auth", timeout=10).json()
        assert [k["key"] for k in keys["data"]] == ["my-key"]
        r = requests.post(gw.admin_url + "/config", data=kong_yml,
                          headers={"Content-Type": "application/yaml"}, timeout=10)
        assert r.status_code == 201, r.text
        r = requests.post(gw.admin_url + "/config", files={"config": ("kong.yml", b"a: [b\n")},
                          timeout=10)
        assert r.status_code == 400 and r.json()["code"] == 14
        assert "invalid YAML at line" in r.json()["message"]


def run_cli(*args: str) -> subprocess.CompletedProcess[bytes]:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    return subprocess.run([sys.executable, "-m", "fastgw", *args], capture_output=True,
                          timeout=30, env=env, cwd=REPO_ROOT)


def test_export_kong_writes_a_file_kong_loads_and_names_what_it_dropped(tmp_path: Path) -> None:
    source = tmp_path / "config.json"
    source.write_bytes((REPO_ROOT / "config.json").read_bytes())
    with GatewayProcess(admin_config(parse_yaml(source.read_bytes())), workers=1) as gw:
        wait_ready(gw, 1)
        api = gw.admin_url
        assert requests.post(api + "/workspaces", json={"name": "team"}, timeout=10).ok
        assert requests.post(api + "/team/services", json={"name": "t", "host": "t.example"},
                             timeout=10).ok
        assert requests.patch(api + "/upstreams/iris", json={"healthchecks": {
            "panic_threshold": 50, "slow_start": 30}}, timeout=10).ok
        r = requests.get(api + "/config", params={"format": "kong"}, timeout=10)
        assert r.status_code == 200
        over_api = parse_yaml(r.json()["config"])
        assert "workspaces" not in over_api and "gateway" not in over_api
        assert any("panic_threshold=50" in d for d in r.json()["dropped"])
        out = tmp_path / "kong.yml"
        proc = run_cli("config", "export", "--kong", "-c", str(gw.config_path), "-o", str(out))
        assert proc.returncode == 0, proc.stderr
    stderr = proc.stderr.decode()
    for name in ("gateway", "workspaces[team]", "healthchecks.panic_threshold=50",
                 "healthchecks.slow_start=30", "passive.base_ejection_time=30"):
        assert name in stderr, stderr
    kong = parse_yaml(out.read_bytes())
    assert kong == over_api
    checks = kong["upstreams"][0]["healthchecks"]
    assert "panic_threshold" not in checks and "slow_start" not in checks
    assert "base_ejection_time" not in checks["passive"]
    assert all(v is not None for s in kong["services"] for v in s.values())
    # It round-trips: loaded back and exported again, the same file.
    again = tmp_path / "again.yml"
    proc = run_cli("config", "export", "--kong", "-c", str(out), "-o", str(again))
    assert proc.returncode == 0, proc.stderr
    assert parse_yaml(again.read_bytes()) == kong
