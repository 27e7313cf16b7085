"""`python -m bench run | idle`: the load benchmark's command line.

    python -m bench run                      # everything, ~6-8 min on 2 cores
    python -m bench run --set speed          # issue 15's speed targets, ~4 min
    python -m bench run --quick              # ~1 s per target and workload, 1 repeat
    python -m bench run --targets fastgw1,nginx --workloads get_c64 --repeats 5
    git worktree add /tmp/before HEAD~3 && python -m bench run --baseline /tmp/before \
        --targets fastgw1,nginx --workloads get_c64 --repeats 5   # before/after, one run
    python -m bench run --backend http://iris1:52773 --backend http://iris2:52773 \
        --user _SYSTEM --password SYS
    python -m bench idle --connections 10000
    python -m bench tls                      # TLS: fastgw vs nginx, same certificate

Only argument handling lives here: running is bench/load.py and bench/idle.py, output is
bench/report.py. Nothing is installed by this command; missing tools are named with the
command that installs them.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import orjson

from bench.load import ALL_TARGETS, BACKEND_KINDS, BENCH_SETS, Options, run_benchmark
from bench.loadgen import WORKLOADS
from bench.report import draw_chart, format_table, summarize, write_results
from tests.support.procs import REPO_ROOT

DEFAULT_OUT = REPO_ROOT / "bench" / "results"


def _csv(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="load test targets side by side (direct, fastgw, nginx...)")
    run.add_argument("--set", dest="bench_set", choices=list(BENCH_SETS), default="default",
                     help="; ".join(f"{name}: {b.description} (targets {','.join(b.targets)}; "
                                    f"workloads {','.join(b.workloads)})"
                                    for name, b in BENCH_SETS.items()))
    run.add_argument("--quick", action="store_true",
                     help="1 s runs, 1 repeat (the default set: workloads "
                          f"{','.join(BENCH_SETS['default'].quick_workloads)})")
    run.add_argument("--duration", type=int, help="seconds per run (default 4; --quick 1)")
    run.add_argument("--repeats", type=int, help="interleaved repeats (default 3; --quick 1)")
    run.add_argument("--targets", type=_csv, default=None,
                     help=f"comma list from {','.join(ALL_TARGETS)} (default: the set's)")
    run.add_argument("--workloads", type=_csv, default=None,
                     help=f"comma list from {','.join(WORKLOADS)} (default: the set's)")
    run.add_argument("--backends", choices=BACKEND_KINDS, default=None,
                     help="emulator: two IRIS emulators (every workload); nginx: one nginx "
                          "serving two small JSON answers (no /_emulator/ workloads) "
                          "(default: the set's)")
    run.add_argument("--backend", action="append", default=[], metavar="URL",
                     help="a real backend instead of the emulator (give two)")
    run.add_argument("--user", help="Basic auth user sent with every request")
    run.add_argument("--password", help="Basic auth password")
    run.add_argument("--workers", type=int, default=0, help="N of fastgwN (default: CPU count)")
    run.add_argument("--no-pin", action="store_true", help="do not taskset the emulators")
    run.add_argument("--out", type=Path, default=None,
                     help=f"results directory (default {DEFAULT_OUT}; {DEFAULT_OUT}/<set> for "
                          f"another set, {DEFAULT_OUT}/baseline with --baseline, so the "
                          "README's latest results stay)")
    run.add_argument("--baseline", type=Path, metavar="DIR",
                     help="another fastgw checkout (e.g. `git worktree add /tmp/old <commit>`): "
                          "its --workers 1 runs as target 'baseline', interleaved with fastgw1, "
                          "and the ratios give fastgw1/baseline (before/after in one run)")

    sub.add_parser("tls", help="TLS at the edge: fastgw vs nginx with the same certificate "
                               "(python -m bench tls --help)")
    idle = sub.add_parser("idle", help="RSS of fastgw per idle keep-alive client connection")
    idle.add_argument("--connections", type=int, default=10000)
    idle.add_argument("--out", type=Path, default=DEFAULT_OUT)
    return p


def cmd_run(args: argparse.Namespace) -> int:
    bench_set = BENCH_SETS[args.bench_set]
    workloads = args.workloads or list(
        bench_set.quick_workloads if args.quick else bench_set.workloads)
    targets = args.targets or list(bench_set.targets)
    unknown = [w for w in workloads if w not in WORKLOADS]
    bad_targets = [t for t in targets if t not in ALL_TARGETS]
    if unknown or bad_targets:
        print(f"unknown workloads {unknown} / targets {bad_targets}", file=sys.stderr)
        return 2
    if args.baseline is not None and not (args.baseline / "fastgw" / "__main__.py").is_file():
        print(f"--baseline {args.baseline}: not a fastgw checkout", file=sys.stderr)
        return 2
    if len(args.backend) not in (0, 2):
        print("give exactly two --backend URLs (or none for the emulator)", file=sys.stderr)
        return 2
    if args.backend and args.backends:
        print("--backend URLs and --backends: choose one", file=sys.stderr)
        return 2
    opts = Options(
        targets=targets,
        workloads=workloads,
        duration=args.duration or (1 if args.quick else 4),
        repeats=args.repeats or (1 if args.quick else 3),
        backends=args.backend,
        backend_kind=args.backends or bench_set.backends,
        user=args.user,
        password=args.password,
        warmup=1,
        workers_n=args.workers,
        pin=not args.no_pin,
        baseline=args.baseline.resolve() if args.baseline else None,
        log=lambda line: print(line, flush=True),
    )
    out = args.out or (DEFAULT_OUT / "baseline" if args.baseline
                       else DEFAULT_OUT if args.bench_set == "default"
                       else DEFAULT_OUT / args.bench_set)
    raw = run_benchmark(opts)
    raw["set"] = args.bench_set
    doc = summarize(raw)
    print()
    print(format_table(doc))
    path, latest = write_results(doc, out)
    print(f"\nresults: {path}\n         {latest}")
    png = path.with_suffix(".png")
    message = draw_chart(doc, png)
    if png.exists():
        (out / "latest.png").write_bytes(png.read_bytes())
    print(message)
    return 0


def cmd_idle(args: argparse.Namespace) -> int:
    from bench.idle import format_idle, run_idle

    result = run_idle(args.connections, log=lambda line: print(line, flush=True))
    print(format_idle(result))
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"idle-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2))
    print(f"results: {path}")
    return 1 if "diagnosis" in result else 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["tls"]:  # its own options (bench/tls.py)
        from bench.tls import main as tls_main

        return tls_main(argv[1:])
    args = _parser().parse_args(argv)
    if args.command == "run":
        return cmd_run(args)
    return cmd_idle(args)


if __name__ == "__main__":
    sys.exit(main())
