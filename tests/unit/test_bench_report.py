"""The benchmark's verdict logic: issue 15's speed lines and which fastgw build ran.

Pure functions of the benchmark (bench/report.py, bench/fastgw_build.py), table-driven: the
numbers the lead reads PASS/FAIL from must be computed right, on medians and on best runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bench.fastgw_build import UNKNOWN, build_from_log, is_pure_python, probe_build
from bench.report import speed_targets


def _stats(cpu: list[float], rps: list[float], p50: list[float]) -> dict[str, Any]:
    """A summary entry as bench.report.summarize builds it (medians and min..max)."""
    def med(v: list[float]) -> float:
        return sorted(v)[len(v) // 2]

    return {"cpu_us_per_request": med(cpu), "cpu_spread": [min(cpu), max(cpu)],
            "rps": med(rps), "rps_spread": [min(rps), max(rps)],
            "p50_us": med(p50), "p50_spread": [min(p50), max(p50)]}


# workload -> target -> (cpu us/req runs, req/s runs, p50 us runs)
SUMMARY = {
    "get_c64": {
        "direct": _stats([6, 6, 6], [150e3, 150e3, 150e3], [200, 200, 200]),
        "nginx": _stats([10, 12, 14], [60e3, 65e3, 70e3], [800, 800, 800]),
        "fastgw1": _stats([11, 14, 20], [50e3, 56e3, 60e3], [900, 900, 900]),
        "fastgw1py": _stats([24, 25, 26], [36e3, 38e3, 40e3], [1500, 1500, 1500]),
        "minimal": _stats([12, 13, 15], [55e3, 60e3, 62e3], [850, 850, 850]),
    },
    "get_c1": {
        "direct": _stats([9, 9, 9], [20e3, 20e3, 20e3], [50, 60, 70]),
        "nginx": _stats([20, 20, 20], [12e3, 12e3, 12e3], [80, 90, 100]),  # adds 30, best 30
        "fastgw1": _stats([30, 30, 30], [9e3, 9e3, 9e3], [90, 100, 140]),  # adds 40, best 40
        "fastgw1py": _stats([60, 60, 60], [6e3, 6e3, 6e3], [120, 150, 160]),  # 90, best 70
        "minimal": _stats([25, 25, 25], [10e3, 10e3, 10e3], [80, 95, 99]),  # 35, best 30
    },
    "get_close": {
        "nginx": _stats([40, 45, 50], [12e3, 12e3, 12e3], [300, 300, 300]),
        "fastgw1": _stats([60, 70, 80], [8e3, 8e3, 8e3], [400, 400, 400]),
        "fastgw1py": _stats([100, 110, 120], [6e3, 6e3, 6e3], [500, 500, 500]),
        "minimal": _stats([50, 55, 60], [10e3, 10e3, 10e3], [350, 350, 350]),
    },
}

# (target, line, median ratio, median pass, best ratio, best pass)
EXPECTED = [
    ("fastgw1", "keep-alive GET c=64, CPU/request", 14 / 12, True, 11 / 10, True),
    ("fastgw1", "keep-alive GET c=64, req/s", 56 / 65, True, 60 / 70, True),
    ("fastgw1", "c=1, p50 added over direct", 40 / 30, True, 40 / 30, True),
    ("fastgw1", "new connection/request, CPU/req", 70 / 45, False, 60 / 40, True),
    ("fastgw1py", "keep-alive GET c=64, CPU/request", 25 / 12, False, 24 / 10, False),
    ("fastgw1py", "keep-alive GET c=64, req/s", 38 / 65, False, 40 / 70, False),
    ("fastgw1py", "c=1, p50 added over direct", 90 / 30, False, 70 / 30, False),
    ("fastgw1py", "new connection/request, CPU/req", 110 / 45, False, 100 / 40, False),
    ("minimal", "keep-alive GET c=64, CPU/request", 13 / 12, None, 12 / 10, None),
    ("minimal", "c=1, p50 added over direct", 35 / 30, None, 30 / 30, None),
]


@pytest.mark.parametrize("target, line, ratio, passed, best_ratio, best_passed", EXPECTED)
def test_speed_lines(target: str, line: str, ratio: float, passed: bool | None,
                     best_ratio: float, best_passed: bool | None) -> None:
    rows = {r["line"]: r for r in speed_targets(SUMMARY)[target]}
    row = rows[line]
    assert row["ratio"] == pytest.approx(ratio, abs=1e-3)
    assert row["pass"] is passed
    assert row["best_ratio"] == pytest.approx(best_ratio, abs=1e-3)
    assert row["best_pass"] is best_passed


def test_every_line_for_each_candidate_and_none_without_nginx() -> None:
    out = speed_targets(SUMMARY)
    assert set(out) == {"fastgw1", "fastgw1py", "minimal"}
    assert all(len(rows) == 4 for rows in out.values())
    without_nginx = {w: {t: s for t, s in by.items() if t != "nginx"} for w, by in SUMMARY.items()}
    assert speed_targets(without_nginx) == {}


def test_added_latency_needs_direct_and_a_positive_nginx_gap() -> None:
    """No `direct`: no added latency to compare. nginx adding nothing (noise at c=1): no
    ratio, and no PASS on a ratio that does not exist."""
    c1 = dict(SUMMARY["get_c1"])
    no_direct = {"get_c1": {t: s for t, s in c1.items() if t != "direct"}}
    row = speed_targets(no_direct)["fastgw1"][0]
    assert row["ratio"] is None and row["pass"] is False
    flat = {"get_c1": {**c1, "nginx": _stats([20] * 3, [1e4] * 3, [50, 60, 70])}}
    row = speed_targets(flat)["fastgw1"][0]
    assert row["nginx"] == 0 and row["ratio"] is None and row["pass"] is False


@pytest.mark.parametrize("log, expected", [
    ("fastgw 0.1 starting\nfastgw build: compiled (mypyc), 9 modules\nworker 1 up\n",
     "compiled (mypyc), 9 modules"),
    ("fastgw build: pure Python  \n", "pure Python"),
    ("worker 1 up\n", None),
    ("", None),
])
def test_build_from_log(log: str, expected: str | None) -> None:
    assert build_from_log(log) == expected


@pytest.mark.parametrize("description, pure", [
    ("pure Python", True), ("compiled (mypyc), 9 modules", False), (UNKNOWN, None),
])
def test_is_pure_python(description: str, pure: bool | None) -> None:
    assert is_pure_python(description) is pure


_FAKE_BUILD = '''import os
def describe():
    return "pure Python" if os.environ.get("FASTGW_PURE_PYTHON") == "1" else "compiled (mypyc), 2 modules"
'''


def test_probe_asks_the_checkout_with_the_gateways_environment(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The probe runs in the target's checkout and environment: a checkout with
    fastgw/build.py answers per FASTGW_PURE_PYTHON; one without says unknown."""
    monkeypatch.delenv("FASTGW_PURE_PYTHON", raising=False)  # the suite's pure pass sets it
    with_build = tmp_path / "new"
    (with_build / "fastgw").mkdir(parents=True)
    (with_build / "fastgw" / "__init__.py").write_text("")
    (with_build / "fastgw" / "build.py").write_text(_FAKE_BUILD)
    assert probe_build(with_build, {}) == "compiled (mypyc), 2 modules"
    assert probe_build(with_build, {"FASTGW_PURE_PYTHON": "1"}) == "pure Python"
    without = tmp_path / "old"
    (without / "fastgw").mkdir(parents=True)
    (without / "fastgw" / "__init__.py").write_text("")
    assert probe_build(without, {}) == UNKNOWN
