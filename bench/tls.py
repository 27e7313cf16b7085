"""`python -m bench tls`: TLS at the edge, fastgw against nginx with the same certificate.

One run, both targets up side by side in front of the same backends, workloads
interleaved (for each repeat, for each workload, each target in turn), medians quoted:

  plain_c64    keep-alive GET over plain HTTP, wrk -c64: the reference CPU ratio
  tls_c64      the same over TLS (wrk): CPU per request and requests/s
  plain_close  a new plain TCP connection per request (wrk -c16, Connection: close): what
               a connection costs without TLS, to read the handshake rows against
  tls_full     a new TLS connection per request, full handshake every time:
               `openssl s_time -new` in CLIENTS processes; handshakes/s, CPU per handshake
  tls_resumed  the same resuming the session (`openssl s_time -reuse`: session tickets)

Both targets get one ECDSA P-256 certificate made for the run (fastgw's own self-signed
maker), TLS 1.2 and 1.3 (handshakes negotiate 1.3), Mozilla's intermediate ciphers for
1.2, session tickets on; nginx runs one worker with the load benchmark's upstream
keep-alive config (bench/anchors.py), fastgw `--workers 1` with the anchor-equivalent
settings. `s_time` prints `r` for each resumed connection: the run checks that resumed
handshakes did resume.

The two targets of issue 11, on medians: keep-alive TLS within the same CPU ratio to
nginx as plain HTTP (fastgw/nginx CPU per request over TLS <= the same ratio over plain
HTTP, with 10% for noise), and full handshakes at >= 0.7x nginx's rate.
"""

from __future__ import annotations

import argparse
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import orjson

from bench.anchors import ANCHOR_EQUIVALENT_SETTINGS, NGINX, AnchorProcess, nginx_main
from bench.load import EMULATOR, NGINX_BACKENDS, Options, _start_backends
from bench.loadgen import WORKLOADS, run_load
from bench.procstat import cpu_seconds_between, cpu_snapshot
from fastgw.config.settings import CIPHER_SUITES
from fastgw.controlplane.default_cert import make_self_signed
from tests.support.gateway import GatewayProcess, config_for_targets, free_port
from tests.support.procs import REPO_ROOT

__all__ = ["TLS_WORKLOADS", "main", "run_tls_benchmark", "tls_verdicts"]

TLS_WORKLOADS = ("plain_c64", "tls_c64", "plain_close", "tls_full", "tls_resumed")
CLIENTS = 4  # s_time processes at once (each one sequential)
PATH = "/api/atelier/"
_S_TIME = re.compile(r"(\d+) connections in [\d.]+ real seconds")
_PROGRESS = re.compile(r"^[*.r]+$", re.MULTILINE)  # s_time's line: one character per connection


def nginx_tls_config(cert: Path, key: Path, tls_port: int) -> Callable[[str, int, Sequence[str]],
                                                                        str]:
    """The anchor's nginx.conf with a second, ssl, listener: fastgw's TLS settings."""
    def conf(prefix: str, port: int, backends: Sequence[str]) -> str:
        servers = "".join(f"        server {b};\n" for b in backends)
        pool = ANCHOR_EQUIVALENT_SETTINGS["upstream_keepalive_pool_size"]
        return f"""# fastgw bench: nginx, one worker, plain and TLS (written by bench/tls.py)
{nginx_main(prefix)}    upstream iris {{
{servers}        keepalive {pool};
    }}
    server {{
        listen 127.0.0.1:{port};
        listen 127.0.0.1:{tls_port} ssl;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_ciphers {CIPHER_SUITES["intermediate"]};
        ssl_prefer_server_ciphers off;
        ssl_session_tickets on;
        location / {{
            proxy_pass http://iris;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}
}}
"""
    return conf


def run_s_time(port: int, duration: int, reuse: bool) -> tuple[int, int, float]:
    """(connections, resumed connections, seconds) of CLIENTS `openssl s_time` at once."""
    args = ["openssl", "s_time", "-connect", f"127.0.0.1:{port}", "-time", str(duration),
            "-www", PATH, "-reuse" if reuse else "-new"]
    t0 = time.monotonic()
    procs = [subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
             for _ in range(CLIENTS)]
    total = resumed = 0
    for proc in procs:
        out, _ = proc.communicate(timeout=duration + 30)
        m = _S_TIME.search(out)
        if m is None:
            raise RuntimeError(f"openssl s_time gave no result:\n{out[-500:]}")
        total += int(m.group(1))
        # 'r' for each resumed connection, '*' or '.' for a full handshake
        resumed += sum(line.count("r") for line in _PROGRESS.findall(out))
    return total, resumed, time.monotonic() - t0


def _measure(name: str, pids: list[int], workload: str, urls: dict[str, str], duration: int,
             ports: dict[str, int]) -> dict[str, Any]:
    before = cpu_snapshot(pids)
    resumed = None
    if workload in ("plain_c64", "tls_c64", "plain_close"):
        url = urls["tls" if workload == "tls_c64" else "plain"]
        load = WORKLOADS["get_close" if workload == "plain_close" else "get_c64"]
        result = run_load(url, load, duration, (), "wrk")
        n, seconds, errors = result.requests, result.duration_s, result.error_count + result.non2xx
    else:
        n, resumed, seconds = run_s_time(ports["tls"], duration, workload == "tls_resumed")
        errors = 0
    cpu = cpu_seconds_between(before, cpu_snapshot(pids))
    return {"target": name, "workload": workload, "requests": n, "rps": round(n / seconds, 1),
            "cpu_us_per_request": round(cpu / n * 1e6, 2) if n else None, "errors": errors,
            **({"resumed": resumed} if resumed is not None else {})}


def run_tls_benchmark(duration: int, repeats: int, log: Callable[[str], None]) -> dict[str, Any]:
    for tool, package in (("wrk", "wrk"), ("openssl", "openssl"), (NGINX, "nginx-light")):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is needed: apt-get install {package}")
    doc: dict[str, Any] = {"started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "duration_s": duration,
                           "repeats": repeats, "clients": CLIENTS, "runs": []}
    with ExitStack() as stack, tempfile.TemporaryDirectory(prefix="bench-tls-") as tmp:
        pair = make_self_signed(["localhost", "127.0.0.1"])
        cert, key = Path(tmp, "cert.pem"), Path(tmp, "key.pem")
        cert.write_text(pair.cert)
        key.write_text(pair.key)
        opts = Options(backend_kind=NGINX_BACKENDS if shutil.which(NGINX) else EMULATOR)
        backends, _, doc["backends"] = _start_backends(stack, opts)
        gateway = {**ANCHOR_EQUIVALENT_SETTINGS, "ssl_cert": str(cert), "ssl_cert_key": str(key)}
        gw = stack.enter_context(GatewayProcess(
            config_for_targets(backends, route={"paths": ["/"]}, gateway=gateway), tls=True))
        nginx_tls_port = free_port()
        nginx = stack.enter_context(AnchorProcess(
            NGINX, backends, nginx_conf=nginx_tls_config(cert, key, nginx_tls_port)))
        targets = {
            "fastgw1": ([gw.pid], {"plain": gw.url, "tls": f"https://127.0.0.1:{gw.tls_port}"},
                        {"tls": gw.tls_port}),
            "nginx": ([nginx.pid], {"plain": nginx.url,
                                    "tls": f"https://127.0.0.1:{nginx_tls_port}"},
                      {"tls": nginx_tls_port}),
        }
        doc["targets"] = {"fastgw1": {"config": gw.config}, "nginx": {
            "config": nginx.config_text, "version": nginx.version()}}
        for name, (_, urls, _) in targets.items():  # warm up: pools, allocator, sessions
            run_load(urls["tls"], WORKLOADS["get_c8"], 1, (), "wrk")
            log(f"started {name:8s} {urls['plain']}  {urls['tls']}")
        total = repeats * len(TLS_WORKLOADS) * len(targets)
        for repeat in range(repeats):
            for workload in TLS_WORKLOADS:
                for name, (pids, urls, ports) in targets.items():
                    run = _measure(name, pids, workload, urls, duration, ports)
                    run["repeat"] = repeat
                    doc["runs"].append(run)
                    log(f"[{len(doc['runs']):3d}/{total}] r{repeat} {workload:11s} {name:8s} "
                        f"{run['rps']:9.0f}/s  cpu {run['cpu_us_per_request'] or 0:7.1f} us"
                        + (f"  resumed {run['resumed']}/{run['requests']}"
                           if "resumed" in run else "") + f"  err {run['errors']}")
    doc["summary"] = summarize(doc["runs"])
    doc["verdicts"] = tls_verdicts(doc["summary"])
    return doc


def summarize(runs: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, float | None]]]:
    """{workload: {target: {rps, cpu_us}}}, medians over repeats."""
    rates: dict[tuple[str, str], list[float]] = {}
    cpus: dict[tuple[str, str], list[float]] = {}
    for run in runs:
        key = (run["workload"], run["target"])
        rates.setdefault(key, []).append(run["rps"])
        if run["cpu_us_per_request"] is not None:
            cpus.setdefault(key, []).append(run["cpu_us_per_request"])
    out: dict[str, dict[str, dict[str, float | None]]] = {}
    for (workload, target), values in rates.items():
        cpu = cpus.get((workload, target))
        out.setdefault(workload, {})[target] = {
            "rps": round(statistics.median(values), 1),
            "cpu_us": round(statistics.median(cpu), 2) if cpu else None}
    return out


def tls_verdicts(summary: dict[str, Any]) -> list[dict[str, Any]]:
    """Issue 11's two targets, from the medians."""
    def get(workload: str, target: str, metric: str) -> float | None:
        return ((summary.get(workload) or {}).get(target) or {}).get(metric)

    def ratio(a: float | None, b: float | None) -> float | None:
        return round(a / b, 3) if a and b else None

    plain = ratio(get("plain_c64", "fastgw1", "cpu_us"), get("plain_c64", "nginx", "cpu_us"))
    tls = ratio(get("tls_c64", "fastgw1", "cpu_us"), get("tls_c64", "nginx", "cpu_us"))
    full = ratio(get("tls_full", "fastgw1", "rps"), get("tls_full", "nginx", "rps"))
    return [
        {"what": "keep-alive TLS CPU/request ratio to nginx <= plain HTTP's (+10%)",
         "value": tls, "bound": round(plain * 1.1, 3) if plain else None,
         "plain_ratio": plain,
         "pass": None if tls is None or plain is None else tls <= plain * 1.1},
        {"what": "full handshakes/s >= 0.7x nginx's", "value": full, "bound": 0.7,
         "pass": None if full is None else full >= 0.7},
    ]


def format_report(doc: dict[str, Any]) -> str:
    lines = [f"{'workload':12s} {'target':8s} {'per s':>9s} {'cpu us':>8s}"]
    for workload, cells in doc["summary"].items():
        for target, cell in cells.items():
            cpu = cell["cpu_us"]
            lines.append(f"{workload:12s} {target:8s} {cell['rps']:9.0f} "
                         f"{(f'{cpu:8.1f}' if cpu is not None else '       -')}")
    lines.append("")
    for v in doc["verdicts"]:
        verdict = {True: "PASS", False: "FAIL", None: "n/a"}[v["pass"]]
        lines.append(f"{verdict}  {v['what']}: {v['value']} (bound {v['bound']})")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench tls", description=__doc__.split("\n")[0])
    p.add_argument("--duration", type=int, default=4)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", type=Path, default=REPO_ROOT / "bench" / "results" / "tls")
    args = p.parse_args(argv)
    doc = run_tls_benchmark(args.duration, args.repeats, lambda line: print(line, flush=True))
    print()
    print(format_report(doc))
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"tls-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_bytes(orjson.dumps(doc, option=orjson.OPT_INDENT_2))
    (args.out / "latest.json").write_bytes(path.read_bytes())
    print(f"\nresults: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
