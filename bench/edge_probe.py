"""Edge probes: issue 9's attacker bytes against fastgw and nginx, side by side.

    python -m bench.edge_probe                      # probes, slow clients, limits, 5,000 idle
    python -m bench.edge_probe --idle 500           # fewer idle connections (quicker)
    python -m bench.edge_probe --targets fastgw --json out.json

Each proxy runs in front of its own recording backend (tests/support/recorder.py), which
keeps every byte it receives. For every probe of tests/support/edge_probes.py (the same
bytes the edge tests send) the table gives what the client got (status, then `close`,
`open` or `reset`; `hang`: nothing within the bound) and what reached the backend:
`nothing`, `N framed` (requests whose head the proxy wrote), `N UNFRAMED` (requests the
proxy did not frame: smuggled), `unparsed` (bytes the backend could not parse).

Then: slow clients (100 POSTs whose bodies trickle in: backend connections held meanwhile),
limits (an over-limit upload that keeps sending: does the client read the 413?), memory
after an upgrade request followed by a stream of bytes, and memory per idle connection
(bench/idle.py's method: N idle keep-alive connections, RSS of the proxy's process tree).

nginx runs as the reference edge: one worker, `upstream { keepalive 32; }`,
`proxy_http_version 1.1`, `proxy_set_header Connection ""`, default request buffering,
`client_max_body_size` = BODY_LIMIT, only /api/atelier proxied (and /api/stream with
`proxy_request_buffering off`, like fastgw's route); it also sets Via,
X-Request-Id and X-Forwarded-For so that the recorder knows its heads (via "1.1 nginx").
This is a report, not a test: nothing here passes or fails (the edge tests do that).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import orjson

from bench.anchors import NGINX, AnchorProcess, nginx_conf_text
from bench.idle import idle_cost, raise_nofile
from bench.procstat import memory_kb
from tests.support.edge import Edge, edge_config
from tests.support.edge_probes import BODY_LIMIT, REJECTED, SCENARIOS, Probe, websocket_head
from tests.support.gateway import GatewayProcess
from tests.support.rawclient import RawConnection
from tests.support.recorder import Activity, RecordingBackend

__all__ = ["main", "nginx_edge_config", "run_edge_probe"]

BOUND = 3.0  # seconds a client waits for an answer or a close before calling it a hang
NGINX_VIA = "1.1 nginx"
SLOW_CLIENTS = 100
UPLOAD = 4 << 20
UPGRADE_STREAM = 64 << 20


def nginx_edge_config(prefix: str, port: int, backends: Sequence[str]) -> str:
    servers = "".join(f"        server {b};\n" for b in backends)
    locations = _proxied("/api/atelier") + _proxied("/api/stream", "proxy_request_buffering off;")
    return nginx_conf_text(prefix, "fastgw edge probe: nginx as the reference edge (written by "
                           "bench/edge_probe.py)", f"""    client_max_body_size {BODY_LIMIT};
    upstream backend {{
{servers}        keepalive 32;
    }}
    server {{
        listen 127.0.0.1:{port};
{locations}        location / {{
            return 404;
        }}
    }}
""")


def _proxied(path: str, *extra: str) -> str:
    """A location proxied to the recorder, with the fields that mark nginx's own heads."""
    lines = ["proxy_pass http://backend;", "proxy_http_version 1.1;",
             'proxy_set_header Connection "";', f'proxy_set_header Via "{NGINX_VIA}";',
             "proxy_set_header X-Request-Id $request_id;",
             "proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;", *extra]
    body = "".join(f"            {line}\n" for line in lines)
    return f"        location {path} {{\n{body}        }}\n"


@dataclass
class Proxy:
    name: str
    edge: Edge
    roots: list[int]  # its process tree (memory)
    config: str


@contextmanager
def fastgw_proxy() -> Iterator[Proxy]:
    with RecordingBackend() as backend:
        config = edge_config(backend)
        with GatewayProcess(config, workers=1) as gw:
            yield Proxy("fastgw", Edge.of(gw, backend), [gw.pid],
                        orjson.dumps(config, option=orjson.OPT_INDENT_2).decode())


@contextmanager
def nginx_proxy() -> Iterator[Proxy]:
    with RecordingBackend() as backend, AnchorProcess(
            NGINX, [backend.address], nginx_conf=nginx_edge_config) as nginx:
        yield Proxy("nginx", Edge(nginx.port, backend, via=NGINX_VIA), [nginx.pid],
                    nginx.config_text)


PROXIES: dict[str, Callable[[], Any]] = {"fastgw": fastgw_proxy, "nginx": nginx_proxy}


# -- what happened -----------------------------------------------------------------------


def backend_summary(activity: Activity, via: str) -> str:
    if not activity.requests and not activity.parse_errors:
        return "nothing" if not activity.received else f"{activity.received} bytes"
    unframed = activity.unframed(via)
    framed = len(activity.requests) - len(unframed)
    words = []
    if framed:
        words.append(f"{framed} framed")
    if unframed:
        words.append(f"{len(unframed)} UNFRAMED (" + ", ".join(
            f"{r.method} {r.target[:30]}" for r, _ in unframed) + ")")
    incomplete = sum(1 for r in activity.requests if not r.complete)
    if incomplete:
        words.append(f"{incomplete} incomplete")
    if activity.parse_errors:
        words.append(f"unparsed x{len(activity.parse_errors)}")
    return ", ".join(words)


def run_probe(edge: Edge, probe: Probe) -> dict[str, str]:
    """Warm pool (unless the probe wants it cold), the probe's connections in turn, then a
    sentinel; what each side saw."""
    edge.backend.reset()
    if probe.cold:
        time.sleep(0.1)  # the proxy drops the pooled connections the backend just closed
    else:
        edge.warm()
    mark = edge.backend.mark()
    client = []
    for i, segments in enumerate(probe.connections):
        with RawConnection(edge.port, timeout=BOUND) as conn:
            conn.send_segments(segments, 0.05)
            outcome = conn.read(probe.expected_responses(i), BOUND)
            if outcome.responses and outcome.responses[-1].closes():
                conn.closed_within(BOUND)
            client.append(outcome.describe())
    try:
        backend = backend_summary(edge.after(mark), edge.via)
    except AssertionError as exc:
        backend = f"SENTINEL FAILED ({str(exc).splitlines()[0][:60]})"
    return {"client": " | ".join(client), "backend": backend}


def slow_clients(edge: Edge) -> dict[str, Any]:
    """SLOW_CLIENTS POSTs whose bodies trickle in: what the backend holds meanwhile."""
    backend = edge.backend
    backend.reset()
    edge.warm()
    mark = backend.mark()
    conns = [RawConnection(edge.port, timeout=10) for _ in range(SLOW_CLIENTS)]
    try:
        for conn in conns:
            conn.send(b"POST /api/atelier/slow HTTP/1.1\r\nHost: edge.test\r\n"
                      b"Content-Length: 48\r\n\r\n" + b"s" * 12)
        time.sleep(0.5)
        for conn in conns:
            conn.send(b"s" * 12)
        time.sleep(0.5)
        held = backend.since(mark)
        for conn in conns:
            conn.send(b"s" * 24)
        answered = sum(1 for conn in conns if conn.read(1, 10).statuses == [200])
    finally:
        for conn in conns:
            conn.close()
    return {"backend_connections_while_incomplete": held.connections,
            "backend_requests_while_incomplete": len(held.requests),
            "answered_200": answered}


def lingering(edge: Edge) -> str:
    """An upload over the limit that keeps sending: does the client get to read the 413?"""
    edge.backend.reset()
    edge.warm()
    with RawConnection(edge.port, timeout=BOUND) as conn:
        conn.send(b"POST /api/atelier/upload HTTP/1.1\r\nHost: edge.test\r\n"
                  b"Content-Length: %d\r\n\r\n" % UPLOAD)
        for _ in range(UPLOAD // 65536):
            if not conn.send(b"u" * 65536):
                break
        outcome = conn.read(1, BOUND)
    sent = f", upload cut ({outcome.send_error})" if outcome.send_error else ", upload complete"
    return outcome.describe() + sent


def upgrade_stream(proxy: Proxy) -> str:
    """UPGRADE_STREAM bytes after an upgrade request to an unrouted path: proxy growth."""
    before, _ = memory_kb(proxy.roots)
    sent = 0
    with RawConnection(proxy.edge.port, timeout=BOUND) as conn:
        if conn.send(websocket_head(b"/admin/ws")):
            block = b"\x00" * (1 << 20)
            while sent < UPGRADE_STREAM and conn.send(block, BOUND):
                sent += len(block)
        after, _ = memory_kb(proxy.roots)
        ending = conn.outcome.ending if conn.outcome.ending != "open" else conn.closed_within(BOUND)
    return (f"+{(after - before) / 1024:.0f} MiB after {sent >> 20} MiB sent, "
            f"connection {ending}")


def run_edge_probe(targets: Sequence[str], idle: int,
                   log: Callable[[str], None] = print) -> dict[str, Any]:
    raise_nofile()
    doc: dict[str, Any] = {"probes": {}, "targets": {}}
    for name in targets:
        with PROXIES[name]() as proxy:
            log(f"{name}: {len(REJECTED) + len(SCENARIOS)} probes ...")
            result: dict[str, Any] = {"config": proxy.config}
            for probe in (*REJECTED, *SCENARIOS):
                doc["probes"].setdefault(probe.name, {
                    "finding": probe.finding,
                    "expected": (f"{'/'.join(map(str, sorted(probe.statuses)))} close, nothing"
                                 if probe.statuses else probe.note)})[name] = run_probe(
                    proxy.edge, probe)
            log(f"{name}: slow clients, limits, upgrade stream ...")
            result["slow_clients"] = slow_clients(proxy.edge)
            result["lingering_413"] = lingering(proxy.edge)
            result["upgrade_stream"] = upgrade_stream(proxy)
            doc["targets"][name] = result
        if idle:
            with PROXIES[name]() as proxy:  # a fresh process: nothing left from the probes
                log(f"{name}: {idle} idle connections ...")
                proxy.edge.warm()
                time.sleep(0.5)
                doc["targets"][name]["idle"] = idle_cost(proxy.edge.port, proxy.roots, idle,
                                                         log=log)
    return doc


def format_report(doc: dict[str, Any]) -> str:
    names = list(doc["targets"])
    rows = [["probe", "finding", "expected", *(f"{n}: {side}" for n in names
                                              for side in ("client", "backend"))]]
    for probe, entry in doc["probes"].items():
        rows.append([probe, entry["finding"], entry["expected"][:40],
                     *(entry[n][side] for n in names for side in ("client", "backend"))])
    widths = [min(60, max(len(r[i]) for r in rows)) for i in range(len(rows[0]))]
    lines = ["  ".join(cell[:w].ljust(w) for cell, w in zip(row, widths)).rstrip()
             for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    lines.append("")
    for name, result in doc["targets"].items():
        slow = result["slow_clients"]
        lines.append(f"{name}: {SLOW_CLIENTS} slow POSTs held "
                     f"{slow['backend_connections_while_incomplete']} backend connections and "
                     f"{slow['backend_requests_while_incomplete']} requests while bodies were "
                     f"incomplete; {slow['answered_200']} answered 200 once complete")
        lines.append(f"{name}: over-limit upload ({UPLOAD >> 20} MiB) that keeps sending: "
                     f"{result['lingering_413']}")
        lines.append(f"{name}: upgrade request then {UPGRADE_STREAM >> 20} MiB of bytes: "
                     f"{result['upgrade_stream']}")
        idle = result.get("idle")
        if idle:
            lines.append(f"{name}: {idle['established']} idle connections: "
                         f"{idle['rss_per_connection_bytes']} bytes each "
                         f"(RSS {idle['rss_before_kb'] / 1024:.1f} -> "
                         f"{idle['rss_after_kb'] / 1024:.1f} MiB)")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.edge_probe",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--targets", default="fastgw,nginx",
                        help="comma list from fastgw,nginx (default both)")
    parser.add_argument("--idle", type=int, default=5000,
                        help="idle connections for the memory figure (0: skip; default 5000)")
    parser.add_argument("--json", help="also write the results (and configs) to this file")
    args = parser.parse_args(argv)
    targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    unknown = [t for t in targets if t not in PROXIES]
    if unknown:
        print(f"unknown targets {unknown}", file=sys.stderr)
        return 2
    doc = run_edge_probe(targets, args.idle, log=lambda line: print(line, flush=True))
    print()
    print(format_report(doc))
    if args.json:
        with open(args.json, "wb") as out:
            out.write(orjson.dumps(doc, option=orjson.OPT_INDENT_2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
