"""The suite's other passes: the pure-Python build with its coverage floor, and the types.

The suite itself runs on the build as installed (compiled with mypyc when it could be).
The pure-Python fallback must stay as correct: the unit and protocol layers run once more
here with FASTGW_PURE_PYTHON=1 (in a child pytest), under coverage, with floors (the
tests that time things run in the main pass only: coverage slows every line). mypy
checks the package (the core with --strict's flags, pyproject.toml).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CORE_FLOOR = 95.0  # percent of core/ lines run by the unit and protocol tests
TOTAL_FLOOR = 80.0  # core/, config/ and dataplane/ together


@pytest.mark.skipif(bool(os.environ.get("FASTGW_PURE_PYTHON")),
                    reason="this is the pure-Python pass itself")
def test_the_pure_python_build_passes_with_its_coverage_floor(tmp_path: Path) -> None:
    report = tmp_path / "coverage.json"
    env = {**os.environ, "FASTGW_PURE_PYTHON": "1", "COVERAGE_FILE": str(tmp_path / ".coverage")}
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider",
         "tests/unit", "tests/protocol", "--cov=fastgw.core", "--cov=fastgw.config",
         "--cov=fastgw.dataplane", f"--cov-report=json:{report}", "--cov-report=",
         "--deselect", "tests/unit/test_builds.py", "-m", "not timing"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    data = json.loads(report.read_text())
    total = data["totals"]["percent_covered"]
    core = [f["summary"] for name, f in data["files"].items() if "fastgw/core/" in name]
    core_pct = 100.0 * sum(s["covered_lines"] for s in core) / sum(s["num_statements"]
                                                                    for s in core)
    assert core_pct >= CORE_FLOOR, f"core/ coverage {core_pct:.1f}% < {CORE_FLOOR}%"
    assert total >= TOTAL_FLOOR, f"coverage {total:.1f}% < {TOTAL_FLOOR}%"


def test_types() -> None:
    done = subprocess.run([sys.executable, "-m", "mypy"], cwd=ROOT, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-4000:]
