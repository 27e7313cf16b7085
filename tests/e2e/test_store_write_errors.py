"""A write the disk refuses (full, read-only) is answered with the cause, changes nothing,
and the next write after the disk recovers goes through. Real process, real file system:
a small tmpfs mounted for the test (needs root; skipped elsewhere)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import requests

from tests.support.admin import admin_config, wait_ready
from tests.support.disk import fill
from tests.support.gateway import GatewayProcess


def test_full_and_read_only_disks_are_named_and_change_nothing(small_disk: Path) -> None:
    path = small_disk / "config.json"
    with GatewayProcess(admin_config(), workers=1, config_name=str(path)) as gw:
        wait_ready(gw, 1)
        api = gw.admin_url
        before = path.read_bytes()
        filler = fill(small_disk)
        r = requests.post(api + "/services", json={"name": "s1", "host": "a.example"}, timeout=10)
        assert r.status_code == 503, r.text
        assert "No space left on device (ENOSPC)" in r.json()["message"]
        assert "not applied" in r.json()["message"]
        assert requests.get(api + "/services/s1", timeout=10).status_code == 404
        assert path.read_bytes() == before
        assert not [p for p in small_disk.iterdir() if p.name.endswith(".tmp")]
        filler.unlink()
        r = requests.post(api + "/services", json={"name": "s1", "host": "a.example"}, timeout=10)
        assert r.status_code == 201, r.text

        done = subprocess.run(["mount", "-o", "remount,ro", str(small_disk)],
                              capture_output=True, timeout=10)
        assert done.returncode == 0, done.stderr
        r = requests.post(api + "/services", json={"name": "s2", "host": "b.example"}, timeout=10)
        assert r.status_code == 503, r.text
        assert "Read-only file system (EROFS)" in r.json()["message"]
        assert requests.get(api + "/services/s2", timeout=10).status_code == 404
        r = requests.post(api + "/config", json={"_format_version": "3.0"}, timeout=10)
        assert r.status_code == 503 and "EROFS" in r.json()["message"]
        assert requests.get(api + "/services/s1", timeout=10).status_code == 200
