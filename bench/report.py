"""Turn raw runs into medians, ratios and the issue's pass/fail lines; print, save, chart.

Medians, not means: one noisy neighbour burst ruins a mean on this box; the median of
interleaved repeats is what reference/performance.md quotes. The spread (min..max over
repeats) is printed next to it so a reader can tell a real gap from noise.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

__all__ = [
    "SPEED_TARGETS",
    "SpeedTarget",
    "draw_chart",
    "format_table",
    "speed_targets",
    "summarize",
    "write_results",
]

CHART_WORKLOAD = "get_c64"
# Which ratios are printed: numerator -> the references it is divided by. fastgw1/fastgw1py
# is what compiling gains; "baseline" is a --baseline checkout.
RATIO_PAIRS = {
    "fastgw1": ("baseline", "fastgw1py", "nginx", "direct"),
    "fastgw1py": ("baseline", "nginx", "direct"),
    "fastgwN": ("baseline", "nginx", "direct"),
    "minimal": ("nginx", "direct"),
    "minimalc": ("nginx", "direct"),
}


@dataclass(frozen=True)
class SpeedTarget:
    """One of issue 15's target lines: `metric` of a candidate / nginx's, `op` `bound`."""

    workload: str
    metric: str  # a summary field, or "added_p50_us": p50 minus direct's p50 (same workload)
    op: str
    bound: float
    label: str


# Issue 15 ("Speed"): fastgw --workers 1 (each build) against nginx with one worker.
SPEED_TARGETS = (
    SpeedTarget("get_c64", "cpu_us_per_request", "<=", 1.2, "keep-alive GET c=64, CPU/request"),
    SpeedTarget("get_c64", "rps", ">=", 0.85, "keep-alive GET c=64, req/s"),
    SpeedTarget("get_c1", "added_p50_us", "<=", 1.5, "c=1, p50 added over direct"),
    SpeedTarget("get_close", "cpu_us_per_request", "<=", 1.5, "new connection/request, CPU/req"),
)
SPEED_CANDIDATES = ("fastgw1", "fastgw1py", "baseline")
# Ratios printed without a verdict: the reachable floor, interpreted and compiled.
SPEED_CONTEXT = ("minimal", "minimalc")
SPEED_REFERENCE = "nginx"


def _median(values: list[float]) -> float | None:
    values = [v for v in values if v is not None]
    return round(statistics.median(values), 2) if values else None


def _spread(values: list[float]) -> list[float] | None:
    values = [v for v in values if v is not None]
    return [round(min(values), 2), round(max(values), 2)] if values else None


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a is not None and b else None


def summarize(doc: dict[str, Any]) -> dict[str, Any]:
    """Add `summary`, `ratios`, `added_latency` and `speed_targets` to the results document."""
    groups: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for run in doc["runs"]:
        groups.setdefault(run["workload"], {}).setdefault(run["target"], []).append(run)
    summary: dict[str, dict[str, Any]] = {}
    for workload, by_target in groups.items():
        summary[workload] = {}
        for target, runs in by_target.items():
            lat = [r["latency_us"] for r in runs]
            rss = [r["rss_peak_kb"] for r in runs if r["rss_peak_kb"]]
            summary[workload][target] = {
                "repeats": len(runs),
                "requests": sum(r["requests"] for r in runs),
                "rps": _median([r["rps"] for r in runs]),
                "rps_spread": _spread([r["rps"] for r in runs]),
                "p50_us": _median([x["p50"] for x in lat]),
                "p50_spread": _spread([x["p50"] for x in lat]),
                "p90_us": _median([x["p90"] for x in lat]),
                "p99_us": _median([x["p99"] for x in lat]),
                "p99_spread": _spread([x["p99"] for x in lat]),
                "max_us": max(x["max"] for x in lat),
                "errors": sum(r["error_count"] for r in runs),
                "non2xx": sum(r["non2xx"] for r in runs),
                "cpu_us_per_request": _median([r["cpu_us_per_request"] for r in runs]),
                "cpu_spread": _spread([r["cpu_us_per_request"] for r in runs]),
                "backend_cpu_us_per_request": _median(
                    [r["backend_cpu_us_per_request"] for r in runs]),
                "rss_peak_kb": max(rss) if rss else None,
            }
    doc["summary"] = summary

    ratios: dict[str, dict[str, Any]] = {}
    for workload, by_target in summary.items():
        for fg, refs in RATIO_PAIRS.items():
            if fg not in by_target:
                continue
            for ref in refs:
                if ref not in by_target:
                    continue
                a, b = by_target[fg], by_target[ref]
                ratios.setdefault(workload, {})[f"{fg}/{ref}"] = {
                    k: _ratio(a[k], b[k]) for k in ("rps", "cpu_us_per_request", "p99_us")
                }
    doc["ratios"] = ratios

    added: dict[str, Any] = {}
    c1 = summary.get("get_c1", {})
    if "direct" in c1:
        base = c1["direct"]
        for target, s in c1.items():
            if target != "direct":
                added[target] = {
                    "p50_us": round(s["p50_us"] - base["p50_us"], 1),
                    "p99_us": round(s["p99_us"] - base["p99_us"], 1),
                }
    doc["added_latency"] = added

    doc["speed_targets"] = speed_targets(summary)
    return doc


def _best(s: dict[str, Any], metric: str) -> float | None:
    """A target's best run for `metric`: the most req/s, the least CPU or latency.

    Interference from other load only ever makes a run worse, so best against best is the
    least disturbed view of both (timeit's reasoning); it is reported next to the medians.
    """
    field = {"rps": "rps_spread", "cpu_us_per_request": "cpu_spread",
             "p50_us": "p50_spread", "p99_us": "p99_spread"}[metric]
    spread = s.get(field)
    if not spread:
        return None
    return spread[1] if metric == "rps" else spread[0]


def _speed_value(by_target: dict[str, Any], name: str, metric: str,
                 best: bool) -> float | None:
    if name not in by_target:
        return None
    if metric != "added_p50_us":
        return _best(by_target[name], metric) if best else by_target[name][metric]
    if "direct" not in by_target:
        return None
    pick = (lambda t: _best(by_target[t], "p50_us")) if best else (
        lambda t: by_target[t]["p50_us"])
    mine, direct = pick(name), pick("direct")
    return None if mine is None or direct is None else round(mine - direct, 2)


def _positive_ratio(a: float | None, b: float | None) -> float | None:
    """a / b, or None when b is not positive (an added latency of zero or less is noise)."""
    return round(a / b, 3) if a is not None and b is not None and b > 0 else None


def speed_targets(summary: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """Issue 15's lines for every candidate (and the context rows) present with nginx.

    Each row: the candidate's and nginx's values and their ratio, on medians and on best
    runs, and whether the ratio meets the bound (`pass`, `best_pass`; None for context).
    """
    out: dict[str, list[dict[str, Any]]] = {}
    for name in (*SPEED_CANDIDATES, *SPEED_CONTEXT):
        rows = []
        for t in SPEED_TARGETS:
            by_target = summary.get(t.workload, {})
            if name not in by_target or SPEED_REFERENCE not in by_target:
                continue
            row: dict[str, Any] = {"line": t.label, "workload": t.workload, "metric": t.metric,
                                   "target": f"{t.op} {t.bound}"}
            for prefix, best in (("", False), ("best_", True)):
                mine = _speed_value(by_target, name, t.metric, best)
                ref = _speed_value(by_target, SPEED_REFERENCE, t.metric, best)
                ratio = _positive_ratio(mine, ref)
                row[f"{prefix}value"], row[f"{prefix}nginx"] = mine, ref
                row[f"{prefix}ratio"] = ratio
                row[f"{prefix}pass"] = (None if name in SPEED_CONTEXT
                                        else _meets(ratio, t.op, t.bound))
            rows.append(row)
        if rows:
            out[name] = rows
    return out


def _meets(value: float | None, op: str, bound: float) -> bool:
    return value is not None and (value >= bound if op == ">=" else value <= bound)


def _fmt(v: float | None, scale: float = 1.0, digits: int = 0) -> str:
    return "-" if v is None else f"{v / scale:.{digits}f}"


def format_table(doc: dict[str, Any]) -> str:
    lines = [
        (f"load generator: {doc['loadgen']}   duration {doc['duration_s']} s x "
         f"{doc['repeats']} repeat(s), interleaved; medians (spread min..max)   "
         f"cpus: {doc['cpus']}"),
        "backends: " + ", ".join(f"{k} {v}" for k, v in doc["backends"].items()
                                 if k in ("kind", "version", "addresses", "urls", "pinned_cpu")),
    ]
    builds = {name: t["build"] for name, t in doc.get("targets", {}).items() if "build" in t}
    if builds:
        lines.append("fastgw builds: " + "; ".join(f"{n} = {b}" for n, b in builds.items()))
    lines += [f"note: {note}" for note in doc.get("notes", [])]
    lines.append("")
    head = (f"{'workload':10s} {'target':9s} {'req/s':>8s} {'(spread)':>15s} {'p50 ms':>7s} "
            f"{'p90 ms':>7s} {'p99 ms':>7s} {'max ms':>8s} {'err':>4s} {'!2xx':>5s} "
            f"{'cpu us/req':>10s} {'(spread)':>13s} {'be cpu':>7s} {'RSS MiB':>8s}")
    lines += [head, "-" * len(head)]
    for workload, by_target in doc["summary"].items():
        for target, s in by_target.items():
            rs, cs = s["rps_spread"], s["cpu_spread"]
            lines.append(
                f"{workload:10s} {target:9s} {_fmt(s['rps']):>8s} "
                f"{(f'{rs[0]:.0f}..{rs[1]:.0f}' if rs else '-'):>15s} "
                f"{_fmt(s['p50_us'], 1000, 3):>7s} {_fmt(s['p90_us'], 1000, 2):>7s} "
                f"{_fmt(s['p99_us'], 1000, 2):>7s} {_fmt(s['max_us'], 1000, 1):>8s} "
                f"{s['errors']:>4d} {s['non2xx']:>5d} {_fmt(s['cpu_us_per_request'], 1, 1):>10s} "
                f"{(f'{cs[0]:.1f}..{cs[1]:.1f}' if cs else '-'):>13s} "
                f"{_fmt(s['backend_cpu_us_per_request'], 1, 1):>7s} "
                f"{_fmt(s['rss_peak_kb'], 1024, 1):>8s}")
        lines.append("")
    if doc["ratios"]:
        lines.append("ratios (median / median):        req/s   cpu/req     p99")
        for workload, pairs in doc["ratios"].items():
            for pair, r in pairs.items():
                lines.append(f"  {workload:10s} {pair:16s}   {_fmt(r['rps'], 1, 2):>7s} "
                             f"{_fmt(r['cpu_us_per_request'], 1, 2):>8s} "
                             f"{_fmt(r['p99_us'], 1, 2):>7s}")
        lines.append("")
    if doc["added_latency"]:
        lines.append("added latency over direct at c=1 (us):  p50     p99")
        for target, a in doc["added_latency"].items():
            lines.append(f"  {target:9s}                          {a['p50_us']:>6.0f}  "
                         f"{a['p99_us']:>6.0f}")
        lines.append("")
    lines += format_speed_targets(doc)
    return "\n".join(lines)


_UNITS = {"cpu_us_per_request": "us", "rps": "req/s", "added_p50_us": "us"}


def _verdict(passed: bool | None) -> str:
    return "" if passed is None else "PASS" if passed else "FAIL"


def format_speed_targets(doc: dict[str, Any]) -> list[str]:
    """Issue 15's lines: per candidate, ratio to nginx on medians and best runs, PASS/FAIL."""
    rows_by_name = doc.get("speed_targets") or {}
    if not rows_by_name:
        return []
    builds = {name: t.get("build") for name, t in doc.get("targets", {}).items()}
    lines = [(f"speed targets (issue 15): ratio = target / {SPEED_REFERENCE} (1 worker each), "
              "on medians and best run vs best run"),
             (f"  {'line':34s} {'bound':8s} {'median':>6s}      {'best':>6s}       "
              f"values (median: target vs {SPEED_REFERENCE})")]
    for name, rows in rows_by_name.items():
        what = (f"build: {builds[name]}" if builds.get(name) else
                f"context, no verdict: the minimal uvloop + httptools proxy"
                f"{', compiled with mypyc' if name == 'minimalc' else ''}"
                if name in SPEED_CONTEXT else "")
        lines.append(f"  {name}" + (f" ({what})" if what else ""))
        for r in rows:
            unit = _UNITS[r["metric"]]
            digits = 0 if unit == "req/s" else 1
            sign = "+" if r["metric"] == "added_p50_us" else ""
            values = (f"{sign}{_fmt(r['value'], 1, digits)} vs {sign}{_fmt(r['nginx'], 1, digits)}"
                      f" {unit}")
            lines.append(f"    {r['line']:32s} {r['target']:8s} {_fmt(r['ratio'], 1, 2):>6s} "
                         f"{_verdict(r['pass']):4s} {_fmt(r['best_ratio'], 1, 2):>6s} "
                         f"{_verdict(r['best_pass']):4s}  {values}")
    return lines


def write_results(doc: dict[str, Any], out_dir: Path) -> tuple[Path, Path]:
    """results-<timestamp>.json and latest.json (a copy, not a symlink: survives copying)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    data = orjson.dumps(doc, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS)
    path = out_dir / f"results-{stamp}.json"
    path.write_bytes(data)
    latest = out_dir / "latest.json"
    latest.write_bytes(data)
    return path, latest


def chart_workload(doc: dict[str, Any]) -> str | None:
    """get_c64 as the issue asks; otherwise the first keep-alive GET that was run."""
    if CHART_WORKLOAD in doc["summary"]:
        return CHART_WORKLOAD
    return next((w for w in doc["summary"] if w.startswith("get_c")), None)


def draw_chart(doc: dict[str, Any], path: Path) -> str:
    """Throughput and p99 per target, side by side; returns a line for the console."""
    try:
        import matplotlib

        matplotlib.use("Agg")  # no display on a server; must precede pyplot
        import matplotlib.pyplot as plt
    except ImportError:
        return ("chart skipped: matplotlib is not installed "
                "(pip install -e '.[bench]' or pip install matplotlib)")
    workload = chart_workload(doc)
    if workload is None:
        return "chart skipped: no keep-alive GET workload in this run"
    by_target = doc["summary"][workload]
    names = list(by_target)
    rps = [by_target[n]["rps"] or 0 for n in names]
    p99 = [(by_target[n]["p99_us"] or 0) / 1000 for n in names]
    colors = ["#888888" if n == "direct" else "#1f77b4" if n.startswith("fastgw")
              else "#2ca02c" for n in names]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    ax1.bar(names, rps, color=colors)
    ax1.set_title(f"{workload}: requests/s (median)")
    ax1.set_ylabel("requests/s")
    ax2.bar(names, p99, color=colors)
    ax2.set_title(f"{workload}: p99 latency (median)")
    ax2.set_ylabel("ms")
    for ax, values, fmt in ((ax1, rps, "{:.0f}"), (ax2, p99, "{:.2f}")):
        for i, v in enumerate(values):
            ax.annotate(fmt.format(v), (i, v), ha="center", va="bottom", fontsize=8)
    fig.suptitle(f"fastgw bench ({doc['loadgen']}, {doc['cpus']} CPUs, {doc['started']})",
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return f"chart: {path}"
