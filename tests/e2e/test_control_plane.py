"""End to end: a control plane that stays out of the way (issue 14), one test per defect.

1. writes on a large config neither stall the proxy nor turn readiness to 503;
2. isolated or repeated quick worker deaths never shut a serving node down;
3. a second instance on the same proxy port exits 1, naming the port and the other pid;
4. a hand edit is never overwritten by an Admin API write (409 until reloaded);
5. a hung worker is noticed, replaced, and does not slow scrapes down;
6. SIGHUP (or SIGTERM) during start-up is handled, never fatal.

Real fastgw processes, the IRIS emulator as backend, ephemeral ports, bounded waits.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from typing import Any

import orjson
import requests

from tests.support.admin import admin_config, wait_ready, wait_until
from tests.support.gateway import GatewayProcess, config_for_targets, free_port
from tests.support.metrics import scrape, value
from tests.support.procs import REPO_ROOT, IrisProcess, process_gone

ATELIER = "/api/atelier/"


def _large(targets: list[str], services: int) -> dict[str, Any]:
    config = config_for_targets(targets)
    config["services"] += [{"name": f"s{i}", "host": "iris",
                            "routes": [{"name": f"r{i}", "paths": [f"/api/s{i}"]}]}
                           for i in range(1, services)]
    return config


def _status(gw: GatewayProcess) -> dict[str, Any]:
    return requests.get(gw.admin_url + "/status", timeout=5).json()


def _worker(gw: GatewayProcess, slot: int) -> dict[str, Any] | None:
    return next((w for w in _status(gw)["workers"] if w["slot"] == slot), None)


class Poller:
    """GETs ``url`` every ``interval`` seconds in a thread; keeps (status, seconds taken)."""

    def __init__(self, url: str, interval: float) -> None:
        self.url = url
        self.interval = interval
        self.results: list[tuple[int, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with requests.Session() as s:
            while not self._stop.is_set():
                t0 = time.perf_counter()
                try:
                    code = s.get(self.url, timeout=10).status_code
                except requests.RequestException:
                    code = 0
                self.results.append((code, time.perf_counter() - t0))
                self._stop.wait(self.interval)

    def __enter__(self) -> Poller:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(15)


# -- 1. large configs -------------------------------------------------------------------


def test_writes_on_a_large_config_keep_ready_and_reach_workers_at_once(
        iris_pair: tuple[IrisProcess, IrisProcess]) -> None:
    """2,000 services: 15 back-to-back target weight PATCHes under load. Before, each
    version was rebuilt on every worker's proxy loop (~650 ms to reach all workers at this
    size) and /status/ready answered 503 to nearly every poll meanwhile."""
    a, b = iris_pair
    targets = [f"127.0.0.1:{a.port}", f"127.0.0.1:{b.port}"]
    with GatewayProcess(admin_config(_large(targets, 2000)), workers=2,
                        startup_timeout=60) as gw:
        wait_ready(gw, 2, timeout=60)
        with Poller(gw.status_url + "/status/ready", 0.02) as ready, \
                Poller(gw.url + ATELIER, 0.005) as proxy:
            time.sleep(0.3)
            with requests.Session() as s:
                for i in range(15):
                    r = s.patch(f"{gw.admin_url}/upstreams/iris/targets/{targets[0]}",
                                json={"weight": 50 + i}, timeout=30)
                    assert r.status_code == 200, r.text
            status = wait_ready(gw, 2)
            time.sleep(0.2)
        assert ready.results and all(code == 200 for code, _ in ready.results), ready.results
        assert proxy.results and all(code == 200 for code, _ in proxy.results)
        assert all(w["last_apply"]["in_place"] for w in status["workers"]), status["workers"]
        live = [float(ms) for v, ms in re.findall(r"config version (\d+) live on all workers "
                                                 r"in ([\d.]+) ms", gw.log()) if int(v) > 1]
        assert len(live) == 15 and max(live) < 200, live
        upstream = requests.get(f"{gw.admin_url}/upstreams/iris/targets", timeout=5).json()
        assert {t["target"]: t["weight"] for t in upstream["data"]}[targets[0]] == 64


def test_ready_while_a_worker_is_behind_and_staleness_reported(
        iris_pair: tuple[IrisProcess, IrisProcess]) -> None:
    """A worker that has not applied the newest version yet still serves a complete older
    config: the node stays ready; /status and the metrics say how stale it is."""
    a, _ = iris_pair
    config = admin_config(config_for_targets([f"127.0.0.1:{a.port}"]))
    with GatewayProcess(config, workers=2) as gw:
        status = wait_ready(gw, 2)
        late = status["workers"][0]["pid"]
        os.kill(late, signal.SIGSTOP)  # well under the 5 s watchdog timeout
        try:
            r = requests.post(gw.admin_url + "/consumers", json={"username": "x"}, timeout=10)
            assert r.status_code == 201
            wait_until(lambda: _status(gw)["config"]["stale_workers"] == [late], timeout=5)
            ready = requests.get(gw.status_url + "/status/ready", timeout=5)
            assert ready.status_code == 200 and ready.json() == {"message": "ready"}
            time.sleep(0.2)
            assert _status(gw)["config"]["stale_for_s"] >= 0.2
            samples = scrape(gw)
            assert value(samples, "fastgw_workers", state="stale") == 1
            assert value(samples, "fastgw_workers", state="ready") == 1
            assert (value(samples, "fastgw_config_stale_seconds") or 0) >= 0.2
        finally:
            os.kill(late, signal.SIGCONT)
        wait_until(lambda: _status(gw)["config"]["stale_workers"] == [], timeout=10)
        assert _status(gw)["config"]["stale_for_s"] == 0
        assert value(scrape(gw), "fastgw_config_stale_seconds") == 0


# -- 2. crash loops ----------------------------------------------------------------------


def test_crash_loop_backs_off_and_never_exits_while_a_worker_serves(
        iris_pair: tuple[IrisProcess, IrisProcess]) -> None:
    """Slot 0's worker is killed right after each start, six times in a row. Before, the
    supervisor exited at the fifth quick death (its counter never reset, so five isolated
    deaths over weeks did the same). Now it backs off, counts, and keeps slot 1 serving."""
    a, _ = iris_pair
    config = admin_config(config_for_targets([f"127.0.0.1:{a.port}"]))
    with GatewayProcess(config, workers=2) as gw:
        wait_ready(gw, 2)
        killed: list[int] = []
        for _ in range(6):
            def next_worker() -> bool:
                w = _worker(gw, 0)
                return bool(w and w["ready"] and w["pid"] not in killed)

            wait_until(next_worker, timeout=15)
            w = _worker(gw, 0)
            assert w is not None
            os.kill(w["pid"], signal.SIGKILL)
            killed.append(w["pid"])
            wait_until(lambda: process_gone(killed[-1]), timeout=5)
            r = requests.get(gw.url + ATELIER, headers={"Connection": "close"}, timeout=5)
            assert r.status_code == 200
        wait_until(lambda: _status(gw)["worker_restarts"]["quick_exit"] == 6, timeout=10)
        assert gw.proc is not None and gw.proc.poll() is None  # still running
        status = _status(gw)
        (loop,) = status["crash_loop"]
        assert loop["slot"] == 0 and loop["quick_deaths_in_a_row"] == 6
        assert loop["respawn_in_s"] > 0  # the 6th respawn waits (8 s)
        assert requests.get(gw.status_url + "/status/ready", timeout=5).status_code == 200
        samples = scrape(gw)
        assert value(samples, "fastgw_worker_restarts_total", reason="quick_exit") == 6
        assert (value(samples, "fastgw_worker_respawn_backoff_seconds") or 0) > 0
        assert "respawning in 4.0s" in gw.log() and "giving up" not in gw.log()
        for _ in range(5):
            r = requests.get(gw.url + ATELIER, headers={"Connection": "close"}, timeout=5)
            assert r.status_code == 200


# -- 3. one instance per port ------------------------------------------------------------


def test_second_instance_on_the_same_proxy_port_exits_naming_it(
        iris_pair: tuple[IrisProcess, IrisProcess]) -> None:
    a, b = iris_pair
    first = GatewayProcess(admin_config(config_for_targets([f"127.0.0.1:{a.port}"])), workers=2)
    with first:
        wait_ready(first, 2)
        second = GatewayProcess(admin_config(config_for_targets([f"127.0.0.1:{b.port}"])),
                                workers=2, port=first.port)
        try:
            second.start()  # returns at once: the port answers (the first instance does)
            assert second.proc is not None and second.proc.wait(20) == 1
            log = second.log()
        finally:
            second.stop()
            second._dir.cleanup()
        assert f"port {first.port} is already served by another fastgw (pid {first.pid})" \
            in log, log
        ids = set()
        for _ in range(20):  # new connections: every one lands on the first instance
            r = requests.get(first.url + ATELIER, headers={"Connection": "close"}, timeout=5)
            ids.add(r.json()["result"]["content"]["id"])
        assert ids == {"A"}


# -- 4. hand edits -----------------------------------------------------------------------


def test_hand_edit_is_not_overwritten_by_an_admin_write(
        iris_pair: tuple[IrisProcess, IrisProcess]) -> None:
    a, _ = iris_pair
    with GatewayProcess(admin_config(config_for_targets([f"127.0.0.1:{a.port}"])),
                        workers=1) as gw:
        wait_ready(gw, 1)
        api = gw.admin_url
        assert requests.post(api + "/consumers", json={"username": "one"}).status_code == 201
        doc = orjson.loads(gw.config_path.read_bytes())
        doc["services"].append({"name": "by-hand", "host": "iris",
                                "routes": [{"name": "by-hand", "paths": ["/by-hand"]}]})
        edited = orjson.dumps(doc, option=orjson.OPT_INDENT_2)
        gw.config_path.write_bytes(edited)  # no SIGHUP yet
        r = requests.post(api + "/consumers", json={"username": "two"})
        assert r.status_code == 409, r.text
        assert "POST /config/reload" in r.json()["message"]
        assert gw.config_path.read_bytes() == edited  # the edit is still there
        assert requests.get(api + "/consumers/two").status_code == 404
        assert "refusing to overwrite" in gw.log()
        r = requests.post(api + "/config/reload")
        assert r.status_code == 200 and r.json()["version"] > 1
        assert requests.get(api + "/services/by-hand").status_code == 200
        assert requests.post(api + "/consumers", json={"username": "two"}).status_code == 201
        saved = orjson.loads(gw.config_path.read_bytes())
        assert "by-hand" in [s["name"] for s in saved["services"]]
        assert {"one", "two"} <= {c["username"] for c in saved["consumers"]}
        wait_ready(gw, 1)
        assert requests.get(gw.url + "/by-hand/api/atelier/", timeout=5).status_code != 404
        # A broken edit: the reload is refused with the reason, the running config stays.
        gw.config_path.write_bytes(b"{broken")
        r = requests.post(api + "/config/reload")
        assert r.status_code == 400 and "invalid JSON" in r.text
        assert requests.get(api + "/services/by-hand").status_code == 200


# -- 5. hung workers ---------------------------------------------------------------------


def test_hung_worker_is_replaced_and_scrapes_do_not_wait_for_it(
        iris_pair: tuple[IrisProcess, IrisProcess]) -> None:
    """SIGSTOP one of two workers. Before, it was never replaced (its connections stalled
    until SIGCONT) and every scrape waited 1 s for its answer."""
    a, _ = iris_pair
    # heartbeats every 0.75 s; a worker silent for 3 s is replaced
    config = admin_config(config_for_targets([f"127.0.0.1:{a.port}"]),
                          worker_heartbeat_timeout=3)
    with GatewayProcess(config, workers=2) as gw:
        status = wait_ready(gw, 2)
        hung = status["workers"][0]["pid"]
        os.kill(hung, signal.SIGSTOP)
        stopped = time.monotonic()
        try:
            t0 = time.perf_counter()
            samples = scrape(gw)
            took = time.perf_counter() - t0
            assert took < 0.9, took  # bounded: 0.5 s at most for a worker that stays silent
            assert value(samples, "fastgw_worker_stats_stale") == 1
            time.sleep(max(0.0, stopped + 2.35 - time.monotonic()))
            t0 = time.perf_counter()  # silent for > 3 heartbeats: not even asked any more
            assert value(scrape(gw), "fastgw_worker_stats_stale") == 1
            assert time.perf_counter() - t0 < 0.4
            reported = next(w for w in _status(gw)["workers"] if w["pid"] == hung)
            assert reported["last_heartbeat_s"] >= 2 and reported["stats_stale"]
            wait_until(lambda: "sent no heartbeat" in gw.log(), timeout=5)
            wait_until(lambda: process_gone(hung), timeout=5)  # SIGKILL works on a stopped process
        finally:
            if not process_gone(hung):
                os.kill(hung, signal.SIGCONT)
        status = wait_ready(gw, 2)
        assert hung not in [w["pid"] for w in status["workers"]]
        assert status["worker_restarts"]["unresponsive"] == 1
        assert value(scrape(gw), "fastgw_worker_restarts_total", reason="unresponsive") == 1
        assert requests.get(gw.status_url + "/status/ready", timeout=5).status_code == 200


# -- 6. signals during start-up ----------------------------------------------------------


def _our_code_runs(pid: int) -> bool:
    """SIGHUP is blocked or caught: fastgw's first instruction has run."""
    try:
        with open(f"/proc/{pid}/status") as f:
            fields = dict(line.split(":", 1) for line in f if ":" in line)
    except OSError:
        return False
    return bool((int(fields["SigBlk"], 16) | int(fields["SigCgt"], 16)) & 1)


def _start(config: dict[str, Any], tmp: Any) -> subprocess.Popen[bytes]:
    """``fastgw run``, returned as soon as its first instruction has run."""
    path = tmp / "config.json"
    path.write_bytes(orjson.dumps(config))
    with open(tmp / "fastgw.log", "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "fastgw", "run", "-c", str(path)],
                                cwd=str(REPO_ROOT), stdin=subprocess.DEVNULL, stdout=log,
                                stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 10
    while not _our_code_runs(proc.pid):
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.001)
    return proc


def test_sighup_and_sigterm_during_start_up_are_handled(tmp_path: Any) -> None:
    """A config large enough that start-up takes a while; SIGHUP from the first instruction
    on, every 50 ms until the node is ready. Before, the first SIGHUP before the handler
    (installed after the workers were spawned) killed the supervisor."""
    config = _large(["127.0.0.1:9"], 1500)
    port = free_port()
    config["gateway"].update({"proxy_listen": f"127.0.0.1:{port}", "workers": 2,
                              "admin_listen": "off", "status_listen": f"127.0.0.1:{free_port()}"})
    status_url = "http://" + config["gateway"]["status_listen"]
    proc = _start(config, tmp_path)
    try:
        sent = 0
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, (tmp_path / "fastgw.log").read_text()
            proc.send_signal(signal.SIGHUP)
            sent += 1
            try:
                if requests.get(status_url + "/status/ready", timeout=1).status_code == 200:
                    break
            except requests.RequestException:
                pass
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert sent >= 2
        wait_until(lambda: "config reloaded" in (tmp_path / "fastgw.log").read_text(), timeout=10)
    finally:
        proc.terminate()
        assert proc.wait(30) == 0  # SIGTERM drains: exit 0
    # SIGTERM at the very start: a clean stop (exit 0), not a death by signal.
    (tmp_path / "fastgw.log").unlink()
    proc = _start(config, tmp_path)
    try:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0, (tmp_path / "fastgw.log").read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
