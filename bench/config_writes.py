"""Config writes on a large config, under load: what an Admin API write costs the proxy.

    python -m bench.config_writes --services 10000
    python -m bench.config_writes --services 500,2000,10000 --baseline /tmp/before

For each size N it runs ``fastgw run --workers 2`` on a config with N services and N routes
(``/api/s{i}``; one of them, ``/api/atelier``, goes to an upstream of two IRIS emulators),
drives ``--rate`` GET/s through the proxy (bench/paced_load.py, open loop, latency from the
scheduled send time), measures the proxy's p99 for a few seconds, then sends ``--writes``
target weight PATCHes back to back (each as soon as the previous one answered) while a
poller asks ``/status/ready`` every 50 ms. It reports, as issue 14's table:

* Admin write: the PATCH round trip seen by the client (median, max);
* spread to all workers: push to the last worker's ack, per config version, from the
  supervisor's "config version N live on all workers in X ms" log lines (median, max);
* proxy p99 during writes: the requests scheduled between the first PATCH and the moment
  every worker runs the last version, next to the p99 before the writes;
* ``/status/ready`` 503s among the polls of the write phase;
* CPU per write: the supervisor's and each worker's CPU time (user + system, from
  /proc) over the write phase, divided by the writes. It moves much less than the p99
  when other jobs share the machine: the steadier figure for a before/after;

and the issue's targets: p99 during writes within max(2x baseline, baseline + 5 ms), a
weight change on every worker within 50 ms, an Admin write within 50 ms (medians).
``--baseline DIR`` runs another checkout (e.g. ``git worktree add /tmp/before main``) first,
in the same run, so before and after share the machine's conditions. Results go to
bench/results/config-writes-<time>.json and config-writes-latest.json. Never part of the
test suite's pass/fail.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson
import requests

from tests.support.admin import admin_config, wait_until
from tests.support.gateway import GatewayProcess, config_for_targets
from tests.support.procs import REPO_ROOT, IrisProcess

__all__ = ["large_config", "main"]

DEFAULT_OUT = REPO_ROOT / "bench" / "results"
_LIVE = re.compile(r"config version (\d+) live on all workers in ([\d.]+) ms")


def large_config(services: int, targets: Sequence[str]) -> dict[str, Any]:
    """``services`` services with one route each; ``atelier`` goes to the emulators."""
    config = config_for_targets(list(targets))
    for i in range(1, services):
        config["services"].append({"name": f"s{i}", "host": "iris", "routes": [
            {"name": f"r{i}", "paths": [f"/api/s{i}"]}]})
    return config


def _pct(values: list[float], p: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p / 100))]


def _wait(predicate: Any, timeout: float, what: str) -> None:
    def answered() -> bool:
        try:
            return bool(predicate())
        except requests.RequestException:
            return False

    try:
        wait_until(answered, timeout)
    except TimeoutError:
        raise TimeoutError(f"{what}: not within {timeout}s") from None


def _cpu_ms(pid: int) -> float | None:
    """User + system CPU time of a process so far (Linux /proc), None when unknown."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) * 1000 / os.sysconf("SC_CLK_TCK")


def _all_current(admin_url: str) -> bool:
    # The admin listener's /status: the status listener's asks every worker for its
    # counters, which is a scrape, and a scrape is not what is measured here.
    status = requests.get(admin_url + "/status", timeout=5).json()
    version = status["config_version"]
    workers = status["workers"]
    return len(workers) == 2 and all(w["config_version"] >= version for w in workers)


def _write_request(kind: str, i: int, admin_url: str,
                   target: str) -> tuple[str, str, dict[str, Any]]:
    """(method, url, body) of the i-th write of a stream of ``kind``."""
    if kind == "weight":
        return "PATCH", f"{admin_url}/upstreams/iris/targets/{target}", \
            {"weight": 50 if i % 2 == 0 else 100}
    return "POST", f"{admin_url}/services/s1/routes", {"paths": [f"/api/added{i}"]}


def measure(root: Path, services: int, backends: list[IrisProcess], *, writes: int, rate: float,
            baseline_s: float, kind: str = "weight") -> dict[str, Any]:
    targets = [f"127.0.0.1:{b.port}" for b in backends]
    config = admin_config(large_config(services, targets))
    gw = GatewayProcess(config, workers=2, root=root, startup_timeout=180)
    gw.start()
    workers: list[int] = []
    try:
        status_url, admin_url = gw.status_url, gw.admin_url
        _wait(lambda: requests.get(status_url + "/status/ready", timeout=5).status_code == 200,
              180, "gateway ready")
        _wait(lambda: _all_current(admin_url), 60, "workers current")
        status = requests.get(admin_url + "/status", timeout=5).json()
        workers = [w["pid"] for w in status["workers"]]
        start_at = time.monotonic() + 0.5
        load = subprocess.Popen(
            [sys.executable, "-m", "bench.paced_load", "--port", str(gw.port), "--rate", str(rate),
             "--duration", "600", "--start-at", repr(start_at)],
            cwd=str(REPO_ROOT), stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        try:
            time.sleep(max(0.0, start_at - time.monotonic()) + baseline_s)
            polls: list[int] = []
            stop = threading.Event()

            def poll_ready() -> None:
                with requests.Session() as s:
                    while not stop.is_set():
                        try:
                            r = s.get(status_url + "/status/ready", timeout=10)
                            polls.append(r.status_code)
                        except requests.RequestException:
                            polls.append(0)
                        stop.wait(0.05)

            poller = threading.Thread(target=poll_ready, daemon=True)
            write_ms: list[float] = []
            codes: list[int] = []
            cpu_from = [_cpu_ms(pid) for pid in [gw.pid, *workers]]
            writes_from = time.monotonic()
            poller.start()
            with requests.Session() as s:
                for i in range(writes):
                    method, url, body = _write_request(kind, i, admin_url, targets[0])
                    t0 = time.perf_counter()
                    r = s.request(method, url, json=body, timeout=60)
                    write_ms.append((time.perf_counter() - t0) * 1000)
                    codes.append(r.status_code)
            _wait(lambda: _all_current(admin_url), 300, "last version on every worker")
            writes_until = time.monotonic()
            cpu_until = [_cpu_ms(pid) for pid in [gw.pid, *workers]]
            stop.set()
            poller.join(15)
            time.sleep(0.5)
        finally:
            out, _ = load.communicate(timeout=60)  # closes its stdin: the load stops
        samples = orjson.loads(out)["samples"]
    finally:
        gw.stop()
        # A worker still busy with queued config versions outlives a supervisor that was
        # killed for not stopping in time: it would load the next measurement's CPU.
        for pid in workers:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        log = gw.log()
        gw._dir.cleanup()
    spreads = [float(ms) for _, ms in _LIVE.findall(log)][1:]  # [0] is the start-up version
    before = [ms for t, ms, st in samples if t < writes_from]
    during = [ms for t, ms, st in samples if writes_from <= t <= writes_until]
    failed = sum(1 for _, _, st in samples if st != 200)
    cpu = [None if a is None or b is None else (b - a) / writes
           for a, b in zip(cpu_from, cpu_until)]
    return {
        "services": services,
        "kind": kind,
        "root": str(root),
        "writes": writes,
        "write_statuses": sorted(set(codes)),
        "admin_write_ms": {"median": statistics.median(write_ms), "max": max(write_ms)},
        "spread_ms": {"median": statistics.median(spreads) if spreads else None,
                      "max": max(spreads) if spreads else None, "versions": len(spreads)},
        "proxy_p99_ms": {"before": _pct(before, 99), "during": _pct(during, 99),
                         "during_max": max(during) if during else None,
                         "requests_during": len(during)},
        "proxy_failed": failed,
        "ready_503": {"count": sum(1 for c in polls if c == 503), "polls": len(polls)},
        "write_phase_s": writes_until - writes_from,
        "cpu_ms_per_write": {"supervisor": cpu[0], "workers": cpu[1:]},
    }


def _fmt(x: float | None) -> str:
    if x is None:
        return "-"
    return f"{x / 1000:.2f} s" if x >= 1000 else f"{x:.1f} ms"


def _fmt_cpu(cpu: dict[str, Any]) -> str:
    workers = " + ".join(_fmt(w) for w in cpu["workers"])
    return f"{_fmt(cpu['supervisor'])} / {workers}"


def format_table(results: list[dict[str, Any]]) -> str:
    lines = [("| checkout | services + routes | writes | Admin write (median / max) | spread to "
              "all workers (median / max) | proxy p99 before -> during writes (max) | "
              "`/status/ready` 503 | CPU per write: supervisor / workers |"),
             "|---|---|---|---|---|---|---|---|"]
    for r in results:
        p99 = r["proxy_p99_ms"]
        lines.append(
            f"| {r['label']} | {r['services']:,} | {r['kind']} | "
            f"{_fmt(r['admin_write_ms']['median'])} / "
            f"{_fmt(r['admin_write_ms']['max'])} | {_fmt(r['spread_ms']['median'])} / "
            f"{_fmt(r['spread_ms']['max'])} | {_fmt(p99['before'])} -> {_fmt(p99['during'])} "
            f"({_fmt(p99['during_max'])}) | {r['ready_503']['count']} of "
            f"{r['ready_503']['polls']} polls | {_fmt_cpu(r['cpu_ms_per_write'])} |")
    return "\n".join(lines)


def targets_met(r: dict[str, Any]) -> str:
    p99 = r["proxy_p99_ms"]
    bound = max(2 * p99["before"], p99["before"] + 5.0)
    checks = [
        ("p99 during writes", p99["during"] <= bound, f"{p99['during']:.1f} <= {bound:.1f} ms"),
        ("spread", (r["spread_ms"]["median"] or 0) <= 50,
         f"median {_fmt(r['spread_ms']['median'])} <= 50 ms"),
        ("admin write", r["admin_write_ms"]["median"] <= 50,
         f"median {_fmt(r['admin_write_ms']['median'])} <= 50 ms"),
    ]
    return "; ".join(f"{name} {'met' if ok else 'NOT met'} ({why})" for name, ok, why in checks)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.config_writes",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--services", default="10000", help="comma list of sizes (services = routes)")
    p.add_argument("--writes", type=int, default=30)
    p.add_argument("--kind", choices=("weight", "route"), default="weight",
                   help="weight: PATCH a target's weight (the issue's stream); route: POST a "
                        "new route each time (a change that needs a new snapshot)")
    p.add_argument("--rate", type=float, default=400.0, help="proxy requests per second")
    p.add_argument("--baseline-seconds", type=float, default=4.0,
                   help="load before the writes, for the baseline p99")
    p.add_argument("--baseline", type=Path, help="another checkout to run first (before/after)")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = p.parse_args(argv)
    sizes = [int(x) for x in args.services.split(",") if x.strip()]
    roots = ([("baseline", args.baseline.resolve())] if args.baseline else []) + \
        [("this checkout", REPO_ROOT)]
    results: list[dict[str, Any]] = []
    started = time.strftime("%Y%m%d-%H%M%S")
    with IrisProcess("A") as a, IrisProcess("B") as b:
        for size in sizes:
            for label, root in roots:
                print(f"{label}: {size} services + routes ...", file=sys.stderr, flush=True)
                r = measure(root, size, [a, b], writes=args.writes, rate=args.rate,
                            baseline_s=args.baseline_seconds, kind=args.kind)
                r["label"] = label
                results.append(r)
                print(f"  {targets_met(r)}", file=sys.stderr, flush=True)
    print(format_table(results))
    for r in results:
        print(f"{r['label']}, {r['services']:,}: {targets_met(r)}; failed proxy requests "
              f"{r['proxy_failed']}, write statuses {r['write_statuses']}")
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"config-writes-{started}.json"
    data = orjson.dumps({"started": started, "rate": args.rate, "results": results},
                        option=orjson.OPT_INDENT_2)
    path.write_bytes(data)
    (args.out / "config-writes-latest.json").write_bytes(data)
    print(f"results: {path} (and config-writes-latest.json)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
