"""Smoke test of `python -m bench.edge_probe`, and a check of the edge harness itself.

nginx is the reference edge: on every probe, what it lets through to the recorder must be
requests it framed itself. If the recorder mis-cut a stream or the head check were wrong,
nginx's column would show UNFRAMED or unparsed requests; so this pins the harness that
the edge tests (test_edge_security.py, test_fuzz.py) rely on. fastgw's column is the
report of the day and is not asserted on here (the edge tests do that).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.conftest import require_tool
from tests.support.edge_probes import REJECTED, SCENARIOS
from tests.support.procs import REPO_ROOT


def test_edge_probe_side_by_side(tmp_path: Path) -> None:
    require_tool("nginx", "apt-get install nginx-light")
    out = tmp_path / "edge.json"
    proc = subprocess.run(
        [sys.executable, "-m", "bench.edge_probe", "--idle", "200", "--json", str(out)],
        check=False, cwd=REPO_ROOT, capture_output=True, text=True, timeout=180,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    doc = json.loads(out.read_text())
    assert set(doc["probes"]) == {p.name for p in (*REJECTED, *SCENARIOS)}
    for name, entry in doc["probes"].items():
        assert entry["fastgw"]["client"] and entry["fastgw"]["backend"], name
        nginx = entry["nginx"]["backend"]
        assert not any(word in nginx for word in ("UNFRAMED", "unparsed", "SENTINEL")), (
            name, nginx)
    nginx = doc["targets"]["nginx"]
    config = nginx["config"]
    atelier = config[config.index("location /api/atelier"):config.index("location /api/stream")]
    assert "keepalive 32;" in config and "proxy_request_buffering" not in atelier
    assert nginx["slow_clients"] == {"backend_connections_while_incomplete": 0,
                                     "backend_requests_while_incomplete": 0, "answered_200": 100}
    for target in ("fastgw", "nginx"):
        idle = doc["targets"][target]["idle"]
        assert idle["established"] == 200 and idle["rss_per_connection_bytes"] is not None
    assert "smuggle-te-space" in proc.stdout and "idle connections" in proc.stdout
