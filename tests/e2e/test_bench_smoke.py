"""Smoke test of the load benchmark harness (`python -m bench run --quick`).

It checks the harness works end to end (emulators, fastgw, nginx, the load generator, CPU
accounting, JSON output); it asserts no performance figure beyond "non-zero and sane":
benchmarks report numbers, tests check behaviour (DESIGN.md).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.support.procs import REPO_ROOT
from tests.conftest import require_tool

TARGETS = ("direct", "fastgw1", "nginx")
WORKLOADS = ("get_c8", "bytes_1m")


def test_quick_run_writes_sane_json(tmp_path: Path) -> None:
    require_tool("nginx", "apt-get install nginx-light")
    out = tmp_path / "results"
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "run", "--quick", "--targets", ",".join(TARGETS),
         "--workloads", ",".join(WORKLOADS), "--out", str(out)],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=90,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    doc = json.loads((out / "latest.json").read_text())
    assert doc["loadgen"]  # wrk ... or builtin: the report names it
    assert set(doc["targets"]) == set(TARGETS)
    assert "worker_processes 1;" in doc["targets"]["nginx"]["config"]
    assert "keepalive 128;" in doc["targets"]["nginx"]["config"]
    assert len(doc["runs"]) == len(TARGETS) * len(WORKLOADS)
    for run in doc["runs"]:
        where = f"{run['target']} {run['workload']}"
        assert run["requests"] > 0, where
        assert run["error_count"] == 0 and run["non2xx"] == 0, (where, run)
        assert run["cpu_us_per_request"] is not None and run["cpu_us_per_request"] > 0, where
        lat = run["latency_us"]
        assert 0 < lat["p50"] <= lat["p99"] <= lat["max"], (where, lat)
        assert run["rss_peak_kb"] > 0, where
    summary = doc["summary"]
    assert set(summary) == set(WORKLOADS)
    assert "fastgw1/nginx" in doc["ratios"]["get_c8"]
    assert "fastgw1/direct" in doc["ratios"]["bytes_1m"]
    assert "requests/s" in proc.stdout or "req/s" in proc.stdout  # the table was printed


def test_baseline_checkout_runs_as_its_own_target(tmp_path: Path) -> None:
    """--baseline DIR: another checkout's fastgw (here: this one) runs next to fastgw1 and
    the ratios give fastgw1/baseline; its commit is on record."""
    out = tmp_path / "results"
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "run", "--quick", "--targets", "fastgw1",
         "--workloads", "get_c8", "--baseline", str(REPO_ROOT), "--out", str(out)],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    doc = json.loads((out / "latest.json").read_text())
    assert [run["target"] for run in doc["runs"]] == ["fastgw1", "baseline"]
    assert all(run["requests"] > 0 and run["error_count"] == 0 for run in doc["runs"])
    assert str(REPO_ROOT) in doc["targets"]["baseline"]["version"]
    assert doc["ratios"]["get_c8"]["fastgw1/baseline"]["rps"] > 0
    bad = subprocess.run([sys.executable, "-m", "bench", "run", "--baseline", str(tmp_path)],
                         cwd=REPO_ROOT, capture_output=True, text=True, timeout=30)
    assert bad.returncode == 2 and "not a fastgw checkout" in bad.stderr
