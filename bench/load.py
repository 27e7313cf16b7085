"""The load benchmark: two backends, several targets in front of them, interleaved runs.

Shape of a run (why it is done this way):
* Every target runs for the whole benchmark, side by side, in front of the *same* two
  backends. An idle target costs nothing, and keeping them up lets us interleave: for each
  repeat, for each workload, every target in turn (A B C A B C ...). Noise on a shared box
  comes in waves of seconds to minutes; interleaving spreads it over all targets instead of
  handing one target a bad minute. Medians over repeats are what we quote.
* `direct` is the load generator talking to backend A alone: the ceiling, and its "proxy
  CPU" is the backend's own CPU (as in reference/performance.md).
* Backends are the IRIS emulator (two processes; every workload) or one nginx serving two
  fixed small JSON answers (bench/nginx_backends.py; the cheapest backend, used by the
  speed set). Either is pinned with taskset (to the last allowed CPU) when there are at
  least two CPUs, so it does not migrate onto the core the proxy under test is using.
* fastgw gets the nginx anchor's settings where they differ from fastgw's defaults
  (anchors.ANCHOR_EQUIVALENT_SETTINGS), so both do the same job. `fastgw1py` is fastgw1
  with FASTGW_PURE_PYTHON=1; every fastgw target records the build it ran.
* CPU per request is measured around each run on the target's process tree
  (bench/procstat.py); requests come from the load generator's own count.
"""

from __future__ import annotations

import base64
import http.client
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from bench.anchors import ANCHOR_EQUIVALENT_SETTINGS, HAPROXY, NGINX, AnchorProcess
from bench.fastgw_build import PURE_PYTHON_ENV, describe_build, is_pure_python
from bench.loadgen import WORKLOADS, LoadResult, Workload, loadgen_name, run_load
from bench.nginx_backends import NginxBackends
from bench.procstat import RssSampler, cpu_seconds_between, cpu_snapshot, memory_kb
from bench.server_process import MinimalProxyProcess, compile_problem
from tests.support.gateway import GatewayProcess, config_for_targets
from tests.support.procs import IrisProcess

__all__ = [
    "ALL_TARGETS",
    "BENCH_SETS",
    "DEFAULT_WORKLOADS",
    "QUICK_WORKLOADS",
    "BenchSet",
    "Options",
    "run_benchmark",
]

ALL_TARGETS = ("direct", "fastgw1", "fastgw1py", "fastgwN", "nginx", "minimal", "minimalc",
               "haproxy")
DEFAULT_WORKLOADS = ("get_c1", "get_c64", "get_c512", "bytes_1m", "post_1m", "get_close")
QUICK_WORKLOADS = ("get_c8", "bytes_1m")
EMULATOR, NGINX_BACKENDS = "emulator", "nginx"
BACKEND_KINDS = (EMULATOR, NGINX_BACKENDS)


@dataclass(frozen=True)
class BenchSet:
    """A named run: its targets, workloads and backends (each overridable by a flag)."""

    targets: tuple[str, ...]
    workloads: tuple[str, ...]
    quick_workloads: tuple[str, ...]
    backends: str
    description: str


BENCH_SETS = {
    "default": BenchSet(("direct", "fastgw1", "fastgwN", "nginx", "haproxy"), DEFAULT_WORKLOADS,
                        QUICK_WORKLOADS, EMULATOR,
                        "fastgw against nginx and HAProxy on every workload (emulator backends)"),
    # Issue 15's speed targets: fastgw --workers 1, compiled and pure Python, against nginx,
    # with the minimal Python proxy as the reachable floor (interpreted, and compiled as
    # fastgw1 is), on nginx backends.
    "speed": BenchSet(("direct", "fastgw1", "fastgw1py", "nginx", "minimal", "minimalc",
                       "haproxy"),
                      ("get_c64", "get_c1", "get_close"), ("get_c64", "get_c1", "get_close"),
                      NGINX_BACKENDS,
                      "issue 15's speed targets: fastgw1 and fastgw1py vs nginx (nginx backends)"),
}
INSTALL_HINT = {
    "wrk": "apt-get install wrk",
    NGINX: "apt-get install nginx-light",
    HAPROXY: "apt-get install haproxy",
    "taskset": "apt-get install util-linux",
}


@dataclass
class Options:
    targets: list[str] = field(default_factory=lambda: list(BENCH_SETS["default"].targets))
    workloads: list[str] = field(default_factory=lambda: list(DEFAULT_WORKLOADS))
    duration: int = 4
    repeats: int = 3
    backends: list[str] = field(default_factory=list)  # external backend URLs
    backend_kind: str = EMULATOR  # without external URLs: EMULATOR or NGINX_BACKENDS
    user: str | None = None
    password: str | None = None
    warmup: int = 1
    workers_n: int = 0  # 0 = CPU count
    pin: bool = True
    baseline: Path | None = None  # another checkout: its fastgw --workers 1 as target "baseline"
    log: Callable[[str], None] = print


@dataclass
class Target:
    name: str
    kind: str  # direct | fastgw | nginx | haproxy
    url: str
    roots: list[int]  # pids whose process trees are "the proxy" for CPU and RSS
    config: Any  # exact configuration (text for anchors, dict for fastgw)
    command: list[str]
    version: str = ""
    build: str | None = None  # fastgw targets: fastgw_build.describe_build()
    env: dict[str, str] = field(default_factory=dict)  # set on top of the harness's


def cpu_list() -> list[int]:
    try:
        return sorted(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return list(range(os.cpu_count() or 1))


def _auth_header(opts: Options) -> list[str]:
    if opts.user is None:
        return []
    token = base64.b64encode(f"{opts.user}:{opts.password or ''}".encode()).decode()
    return [f"Authorization: Basic {token}"]


def _check(url: str, headers: list[str]) -> None:
    """One GET /api/atelier/ through the target: fail early and clearly, not after minutes."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=10)
    try:
        conn.request("GET", "/api/atelier/", headers=dict(h.split(": ", 1) for h in headers))
        resp = conn.getresponse()
        body = resp.read()
        if resp.status != 200:
            raise RuntimeError(f"{url}/api/atelier/ answered {resp.status}: {body[:200]!r}")
    finally:
        conn.close()


def missing_tools(opts: Options) -> list[str]:
    """Install hints for what this run would use but cannot find (nothing is installed)."""
    hints = []
    if shutil.which("wrk") is None:
        hints.append(f"wrk not found ({INSTALL_HINT['wrk']}); using the built-in load generator")
    for kind in (NGINX, HAPROXY):
        if kind in opts.targets and shutil.which(kind) is None:
            hints.append(f"{kind} not found ({INSTALL_HINT[kind]}); target '{kind}' skipped")
    if "minimalc" in opts.targets and (problem := compile_problem()) is not None:
        hints.append(f"{problem}; target 'minimalc' skipped")
    if _backend_kind(opts) == NGINX_BACKENDS and shutil.which(NGINX) is None:
        hints.append(f"{NGINX} not found ({INSTALL_HINT[NGINX]}); emulator backends instead")
    if opts.pin and not opts.backends and shutil.which("taskset") is None:
        hints.append(f"taskset not found ({INSTALL_HINT['taskset']}); backends not pinned")
    return hints


def _backend_kind(opts: Options) -> str:
    """What will serve: "external" (--backend URLs), nginx if asked and installed, else the
    emulator."""
    if opts.backends:
        return "external"
    if opts.backend_kind == NGINX_BACKENDS and shutil.which(NGINX) is not None:
        return NGINX_BACKENDS
    return EMULATOR


def _start_backends(stack: ExitStack, opts: Options) -> tuple[list[str], list[int], dict[str, Any]]:
    """(host:port list, pids, description): --backend URLs, one nginx, or two emulators."""
    if opts.backends:
        addrs = []
        for url in opts.backends:
            parts = urlsplit(url if "//" in url else "http://" + url)
            if parts.path not in ("", "/"):
                opts.log(f"note: backend path {parts.path!r} ignored; targets proxy / as is")
            addrs.append(f"{parts.hostname}:{parts.port or 80}")
        return addrs, [], {"kind": "external", "urls": opts.backends, "pinned": None}
    cpus = cpu_list()
    pin = str(cpus[-1]) if opts.pin and len(cpus) >= 2 and shutil.which("taskset") else None
    if _backend_kind(opts) == NGINX_BACKENDS:
        nginx = stack.enter_context(NginxBackends(taskset=pin))
        return nginx.addresses, [nginx.pid], {
            "kind": "nginx (bench/nginx_backends.py)", "version": nginx.version(),
            "addresses": nginx.addresses, "pinned_cpu": pin, "config": nginx.config_text}
    pids, addrs = [], []
    for ident in ("A", "B"):
        iris = stack.enter_context(
            IrisProcess(ident, user=opts.user, password=opts.password, taskset=pin))
        pids.append(iris.pid)
        addrs.append(f"127.0.0.1:{iris.port}")
    return addrs, pids, {"kind": "emulator (tests/support/iris.py)", "addresses": addrs, "pinned_cpu": pin}


def _start_target(stack: ExitStack, name: str, backends: list[str], backend_pids: list[int],
                  opts: Options) -> Target:
    if name == "direct":
        return Target(name, "direct", f"http://{backends[0]}", backend_pids[:1], None,
                      [], "backend A alone (the ceiling)")
    if name in ("fastgw1", "fastgw1py", "fastgwN"):
        workers = 1 if name != "fastgwN" else (opts.workers_n or len(cpu_list()))
        env = dict(PURE_PYTHON_ENV) if name == "fastgw1py" else {}
        return _start_fastgw(stack, name, backends, workers, env, None,
                             f"fastgw --workers {workers}")
    if name == "baseline" and opts.baseline is not None:
        return _start_fastgw(stack, name, backends, 1, {}, opts.baseline,
                             f"fastgw --workers 1 from {opts.baseline} "
                             f"({_commit(opts.baseline)})")
    if name in (NGINX, HAPROXY):
        anchor = stack.enter_context(AnchorProcess(name, backends))
        return Target(name, name, anchor.url, [anchor.pid], anchor.config_text,
                      anchor.command(), anchor.version())
    if name in ("minimal", "minimalc"):
        proxy = stack.enter_context(MinimalProxyProcess(backends, compiled=name == "minimalc"))
        return Target(name, "minimal", proxy.url, [proxy.pid], None, proxy.command(),
                      proxy.version())
    raise ValueError(f"unknown target {name!r} (choose from {', '.join(ALL_TARGETS)})")


def _start_fastgw(stack: ExitStack, name: str, backends: list[str], workers: int,
                  env: dict[str, str], root: Path | None, version: str) -> Target:
    # Route "/" (not just /api/atelier) so the /_emulator/ workloads pass too, exactly
    # like the anchors' `location /`.
    config = config_for_targets(backends, route={"paths": ["/"]},
                                gateway=dict(ANCHOR_EQUIVALENT_SETTINGS))
    gw = stack.enter_context(GatewayProcess(config, workers=workers, env=env, root=root))
    command = [sys.executable, "-m", "fastgw", "run", "-c", "<config>"]
    if env:
        command = ["env", *(f"{k}={v}" for k, v in env.items()), *command]
    return Target(name, "fastgw", gw.url, [gw.pid], gw.config, command, version,
                  build=describe_build(gw.log(), gw.root, env), env=env)


def _build_warning(target: Target) -> str | None:
    """fastgw1py must run pure Python, and fastgw1 should not (say so, never fail)."""
    pure = is_pure_python(target.build or "")
    if target.name == "fastgw1py" and pure is False:
        return f"fastgw1py runs build '{target.build}' although {PURE_PYTHON_ENV} is set"
    if target.name == "fastgw1" and pure is True:
        return f"fastgw1 runs build '{target.build}': no compiled modules (pip install -e .)"
    return None


def _commit(root: Path) -> str:
    """The checkout's commit, for the record (or "?" outside git)."""
    try:
        out = subprocess.run(["git", "-C", str(root), "log", "-1", "--format=%h %s"], check=False,
                             capture_output=True, text=True, timeout=10)
    except OSError:
        return "?"
    return out.stdout.strip()[:72] or "?"


def _measure(target: Target, workload: Workload, opts: Options, headers: list[str],
             tool: str, backend_pids: list[int]) -> dict[str, Any]:
    before = cpu_snapshot(target.roots) if target.roots else None
    backend_before = cpu_snapshot(backend_pids) if backend_pids else None
    with RssSampler(target.roots) as rss:
        result: LoadResult = run_load(target.url, workload, opts.duration, headers, tool)
    cpu_s = cpu_seconds_between(before, cpu_snapshot(target.roots)) if before else None
    backend_s = (cpu_seconds_between(backend_before, cpu_snapshot(backend_pids))
                 if backend_before else None)
    _, hwm = memory_kb(target.roots) if target.roots else (0, 0)
    n = result.requests
    return {
        "target": target.name,
        "workload": workload.name,
        "tool": result.tool,
        "requests": n,
        "duration_s": round(result.duration_s, 3),
        "rps": round(result.rps, 1),
        "bytes": result.bytes,
        "non2xx": result.non2xx,
        "errors": result.errors,
        "error_count": result.error_count,
        "latency_us": result.latency_us,
        "cpu_s": cpu_s,
        "cpu_us_per_request": round(cpu_s / n * 1e6, 2) if cpu_s is not None and n else None,
        "backend_cpu_us_per_request": (round(backend_s / n * 1e6, 2)
                                       if backend_s is not None and n else None),
        "rss_peak_kb": rss.peak_kb if target.roots else None,
        "hwm_kb": hwm or None,
    }


def run_benchmark(opts: Options) -> dict[str, Any]:
    """Start everything, run the interleaved matrix, return the raw results document."""
    log = opts.log
    for hint in missing_tools(opts):
        log(f"note: {hint}")
    targets = [t for t in opts.targets
               if t not in (NGINX, HAPROXY) or shutil.which(t) is not None]
    if compile_problem() is not None:
        targets = [t for t in targets if t != "minimalc"]
    if opts.baseline is not None:
        # Right after fastgw1 (its counterpart), so the two alternate most closely.
        at = targets.index("fastgw1") + 1 if "fastgw1" in targets else len(targets)
        targets.insert(at, "baseline")
    workloads = [WORKLOADS[w] for w in opts.workloads]
    if _backend_kind(opts) != EMULATOR:
        skipped = [w.name for w in workloads if w.emulator_only]
        if skipped:
            log(f"note: {', '.join(skipped)} need the emulator's /_emulator/ endpoints; skipped")
        workloads = [w for w in workloads if not w.emulator_only]
    headers = _auth_header(opts)
    tool = "wrk" if shutil.which("wrk") else "builtin"
    doc: dict[str, Any] = {
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "loadgen": loadgen_name(),
        "duration_s": opts.duration,
        "repeats": opts.repeats,
        "cpus": len(cpu_list()),
        "python": sys.version.split()[0],
        "workloads": {w.name: w.description for w in workloads},
        "notes": missing_tools(opts),
    }
    t0 = time.monotonic()
    with ExitStack() as stack:
        addrs, backend_pids, backend_desc = _start_backends(stack, opts)
        doc["backends"] = backend_desc
        running: list[Target] = []
        for name in targets:
            target = _start_target(stack, name, addrs, backend_pids, opts)
            _check(target.url, headers)
            running.append(target)
            build = f", build: {target.build}" if target.build else ""
            log(f"started {name:9s} {target.url}  ({target.version}{build})")
            warning = _build_warning(target)
            if warning:
                log(f"warning: {warning}")
                doc["notes"].append(warning)
        doc["targets"] = {
            t.name: {"kind": t.kind, "url": t.url, "version": t.version, "command": t.command,
                     "config": t.config, "env": t.env,
                     **({"build": t.build} if t.build is not None else {})}
            for t in running
        }
        if opts.warmup:
            # Fill upstream pools and let the allocator settle before anything is recorded.
            warm = WORKLOADS["get_c8"]
            for target in running:
                run_load(target.url, warm, opts.warmup, headers, tool)
        runs: list[dict[str, Any]] = []
        total = opts.repeats * len(workloads) * len(running)
        for repeat in range(opts.repeats):
            for workload in workloads:
                for target in running:
                    run = _measure(target, workload, opts, headers, tool, backend_pids)
                    run["repeat"] = repeat
                    runs.append(run)
                    log(f"[{len(runs):3d}/{total}] r{repeat} {workload.name:9s} "
                        f"{target.name:9s} {run['rps']:9.0f} req/s  "
                        f"p99 {run['latency_us'].get('p99', 0) / 1000:7.2f} ms  "
                        f"cpu {run['cpu_us_per_request'] or 0:7.1f} us/req  "
                        f"err {run['error_count'] + run['non2xx']}")
        doc["runs"] = runs
    doc["elapsed_s"] = round(time.monotonic() - t0, 1)
    return doc
