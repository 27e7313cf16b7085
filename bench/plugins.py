"""What plugins cost on real sockets: fastgw `--workers 1` with and without them, in one run.

    python -m bench.plugins [--duration 4] [--repeats 3] [--pure-python]

Variants (issue 10), each a route `/` on two nginx backends (bench/nginx_backends.py;
the emulator when nginx is missing), loaded by wrk at c=64 keep-alive (`get_c64`) with
an `apikey` header, interleaved A B C D A B C D ...:

  none        no plugins
  key-auth    key-auth (one consumer, one key)
  rate-limit  rate-limiting, local policy, a limit never reached (every request is
              counted in the node's shared counters)
  auth+rl     key-auth + rate-limiting (the issue's target: <= 15% more CPU per request
              than none)
  five        key-auth + acl + rate-limiting + cors + correlation-id

Reported per variant: CPU microseconds per request of the gateway's processes (median
of the repeats, min-max) and requests/s; then the target line on medians.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
from contextlib import ExitStack
from typing import Any

from bench.anchors import ANCHOR_EQUIVALENT_SETTINGS, NGINX
from bench.fastgw_build import PURE_PYTHON_ENV
from bench.loadgen import WORKLOADS, run_load
from bench.nginx_backends import NginxBackends
from bench.procstat import cpu_seconds_between, cpu_snapshot
from tests.support.gateway import GatewayProcess, config_for_targets
from tests.support.procs import IrisProcess

KEY = "bench-key"
_KEY_AUTH = {"name": "key-auth"}
_RATE_LIMIT = {"name": "rate-limiting", "config": {"second": 1e9, "limit_by": "consumer"}}
VARIANTS: dict[str, list[dict[str, Any]]] = {
    "none": [],
    "key-auth": [_KEY_AUTH],
    "rate-limit": [_RATE_LIMIT],
    "auth+rl": [_KEY_AUTH, _RATE_LIMIT],
    "five": [_KEY_AUTH, {"name": "acl", "config": {"allow": ["bench"]}}, _RATE_LIMIT,
             {"name": "cors"}, {"name": "correlation-id"}],
}
TARGET_RATIO = 1.15  # key-auth + rate-limiting vs none, CPU per request


def config(backends: list[str], plugins: list[dict[str, Any]]) -> dict[str, Any]:
    cfg = config_for_targets(backends, route={"paths": ["/"], "plugins": plugins},
                             gateway=dict(ANCHOR_EQUIVALENT_SETTINGS))
    cfg["consumers"] = [{"username": "bench", "keyauth_credentials": [{"key": KEY}],
                         "acls": [{"group": "bench"}]}]
    return cfg


def main() -> int:
    p = argparse.ArgumentParser(prog="python -m bench.plugins", description=__doc__.split("\n")[0])
    p.add_argument("--duration", type=int, default=4)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--pure-python", action="store_true", help=f"{PURE_PYTHON_ENV}=1")
    args = p.parse_args()
    variants = [v for v in args.variants.split(",") if v]
    env = {PURE_PYTHON_ENV: "1"} if args.pure_python else {}
    workload = WORKLOADS["get_c64"]
    results: dict[str, list[tuple[float, float]]] = {v: [] for v in variants}
    with ExitStack() as stack:
        if shutil.which(NGINX):
            backends = stack.enter_context(NginxBackends()).addresses
            kind = "nginx"
        else:
            backends = [f"127.0.0.1:{stack.enter_context(IrisProcess(i)).port}" for i in "AB"]
            kind = "emulator"
        gateways = {v: stack.enter_context(GatewayProcess(config(backends, VARIANTS[v]),
                                                          workers=1, env=env))
                    for v in variants}
        print(f"backends: {kind}; build: {'pure Python' if env else 'as installed'}; "
              f"{args.repeats} x {args.duration} s per variant, c=64 keep-alive")
        for v, gw in gateways.items():  # warm up, and check every variant answers 200
            r = run_load(gw.url, workload, 1, [f"apikey: {KEY}"])
            if r.non2xx or not r.requests:
                print(f"{v}: {r.non2xx} non-2xx of {r.requests}", file=sys.stderr)
                return 1
        for _ in range(args.repeats):
            for v, gw in gateways.items():
                before = cpu_snapshot([gw.pid])
                r = run_load(gw.url, workload, args.duration, [f"apikey: {KEY}"])
                cpu = cpu_seconds_between(before, cpu_snapshot([gw.pid]))
                results[v].append((cpu / r.requests * 1e6, r.rps))
    print(f"{'variant':<12} {'CPU us/req':>11} {'(min-max)':>15} {'req/s':>9}")
    medians: dict[str, float] = {}
    for v, runs in results.items():
        cpus = [c for c, _ in runs]
        medians[v] = statistics.median(cpus)
        print(f"{v:<12} {medians[v]:>11.1f} {f'({min(cpus):.1f}-{max(cpus):.1f})':>15} "
              f"{statistics.median(r for _, r in runs):>9,.0f}")
    if "none" in medians and "auth+rl" in medians:
        ratio = medians["auth+rl"] / medians["none"]
        verdict = "PASS" if ratio <= TARGET_RATIO else "FAIL"
        print(f"key-auth + rate-limiting / none, CPU per request: {ratio:.3f} "
              f"(target <= {TARGET_RATIO}) {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
