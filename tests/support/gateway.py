"""Run a fastgw process for tests and benchmarks: temp config, free port, bounded waits.

>>> with GatewayProcess(config_for_targets(["127.0.0.1:52773"])) as gw:
...     requests.get(gw.url + "/api/atelier/")
"""

from __future__ import annotations

import copy
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import orjson

from fastgw.config.loader import dump_yaml
from tests.support.procs import REPO_ROOT, stop_process

__all__ = ["GatewayProcess", "free_port", "config_for_targets", "wait_port"]

_WORKER_LINE = re.compile(r"worker (\d+) proxy listening on ")


# Ports this process has handed out. A port from free_port() is free again until its
# listener binds it, so the kernel may offer it once more (to free_port() or to
# reserve_port()); two of our own listeners would then collide. Never hand one out twice.
_handed_out: set[int] = set()


def _bind_fresh(make_socket: Callable[[], socket.socket]) -> socket.socket:
    """A new socket bound to 127.0.0.1 on a free port that this process never handed out."""
    held = []
    try:
        while True:
            sock = make_socket()
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
            if port not in _handed_out:
                _handed_out.add(port)
                return sock
            held.append(sock)  # keep it bound so the next pick differs
    finally:
        for sock in held:
            sock.close()


def free_port() -> int:
    """A port free now, and never one this process handed out before."""
    with _bind_fresh(socket.socket) as sock:
        return sock.getsockname()[1]


def _reusable_socket() -> socket.socket:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    return sock


def reserve_port() -> socket.socket:
    """A socket bound (not listening) to a free port, with SO_REUSEPORT.

    Holding it keeps every other `bind(port 0)` on the machine off that port (tests run
    in parallel), while fastgw, which binds with SO_REUSEPORT too, can still listen there.
    A socket that never listens gets no connections; close it once the gateway is up.
    Like free_port(), never a port this process handed out before.
    """
    return _bind_fresh(_reusable_socket)


def wait_port(host: str, port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{host}:{port} not accepting connections after {timeout}s")
            time.sleep(0.02)


def config_for_targets(
    targets: Sequence[str],
    *,
    weights: Sequence[int] | None = None,
    upstream: dict[str, Any] | None = None,
    service: dict[str, Any] | None = None,
    route: dict[str, Any] | None = None,
    gateway: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The README's setup (upstream `iris`, service `atelier`, route `/api/atelier`)."""
    weights = list(weights) if weights is not None else [100] * len(targets)
    return {
        "_format_version": "3.0",
        "upstreams": [
            {
                "name": "iris",
                "targets": [{"target": t, "weight": w} for t, w in zip(targets, weights)],
                **(upstream or {}),
            }
        ],
        "services": [
            {
                "name": "atelier",
                "host": "iris",
                "port": 80,
                "protocol": "http",
                **(service or {}),
                "routes": [
                    {"name": "atelier", "paths": ["/api/atelier"], "strip_path": False, **(route or {})}
                ],
            }
        ],
        "gateway": {"workers": 1, **(gateway or {})},
    }


class GatewayProcess:
    """`python -m fastgw run` on a temporary copy of `config` and a free port."""

    def __init__(
        self,
        config: dict[str, Any],
        *,
        workers: int = 1,
        port: int | None = None,
        env: dict[str, str] | None = None,
        startup_timeout: float = 15.0,
        stop_timeout: float = 10.0,
        extra_args: Sequence[str] = (),
        taskset: str | None = None,
        root: Path | None = None,
        config_name: str = "config.json",
        tls: bool = False,
    ) -> None:
        """`root`: the checkout whose fastgw runs (default this one; e.g. a git worktree
        of an older commit for a before/after comparison). `config_name`: the file's name
        (`kong.yml` makes it YAML). `tls`: a second proxy listener, with ssl, on another free
        port (`tls_port`, `tls_url`)."""
        self.root = root or REPO_ROOT
        self.config = copy.deepcopy(config)
        self._reserved = reserve_port() if port is None else None
        self.port = port or self._reserved.getsockname()[1]  # type: ignore[union-attr]
        gateway = self.config.setdefault("gateway", {})
        gateway["proxy_listen"] = f"127.0.0.1:{self.port}"
        self._tls_reserved = reserve_port() if tls else None
        self.tls_port = self._tls_reserved.getsockname()[1] if self._tls_reserved else 0
        if tls:
            gateway["proxy_listen"] += f", 127.0.0.1:{self.tls_port} ssl"
        gateway.setdefault("admin_listen", "off")
        gateway.setdefault("status_listen", "off")
        gateway["workers"] = workers
        self.env = env or {}
        self.startup_timeout = startup_timeout
        self.stop_timeout = stop_timeout
        self.extra_args = list(extra_args)
        self.taskset = taskset
        self.proc: subprocess.Popen[bytes] | None = None
        self._dir = tempfile.TemporaryDirectory(prefix="fastgw-test-")
        self.config_path = Path(self._dir.name) / config_name
        self.log_path = Path(self._dir.name) / "fastgw.log"
        self.write_config(self.config)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def tls_url(self) -> str:
        return f"https://localhost:{self.tls_port}"

    @property
    def default_cert(self) -> Path:
        """The self-signed certificate fastgw made beside the config (without ssl_cert)."""
        return self.config_path.parent / "fastgw-default.crt"

    @property
    def admin_url(self) -> str:
        """Base URL of the Admin API (the config's gateway.admin_listen must not be "off")."""
        return "http://" + self.config["gateway"]["admin_listen"].split(",")[0].split()[0]

    @property
    def status_url(self) -> str:
        return "http://" + self.config["gateway"]["status_listen"]

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def write_config(self, config: dict[str, Any]) -> None:
        tmp = self.config_path.with_suffix(".tmp")
        if self.config_path.suffix in (".yml", ".yaml"):
            tmp.write_bytes(dump_yaml(config))
        else:
            tmp.write_bytes(orjson.dumps(config, option=orjson.OPT_INDENT_2))
        os.replace(tmp, self.config_path)

    def start(self) -> GatewayProcess:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(self.root), env.get("PYTHONPATH")]))
        env.update(self.env)
        args = [sys.executable, "-m", "fastgw", "run", "-c", str(self.config_path), *self.extra_args]
        if self.taskset:
            args = ["taskset", "-c", self.taskset, *args]
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            args, stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT, env=env,
            cwd=str(self.root),
        )
        deadline = time.monotonic() + self.startup_timeout
        for port in (self.port, self.tls_port) if self.tls_port else (self.port,):
            while True:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"fastgw exited with {self.proc.returncode}:\n{self.log()}")
                try:
                    with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                        break
                except OSError:
                    if time.monotonic() > deadline:
                        self.stop()
                        raise TimeoutError(f"fastgw did not listen within "
                                           f"{self.startup_timeout}s:\n{self.log()}")
                    time.sleep(0.02)
        self._release_port()
        return self

    def _release_port(self) -> None:
        if self._reserved is not None:
            self._reserved.close()
            self._reserved = None
        if self._tls_reserved is not None:
            self._tls_reserved.close()
            self._tls_reserved = None

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def worker_pids(self, timeout: float = 5.0) -> list[int]:
        """Every worker pid the log announced, in order (a respawned worker adds one);
        waits (bounded) for the first announcement."""
        deadline = time.monotonic() + timeout
        while True:
            pids = list(dict.fromkeys(int(m) for m in _WORKER_LINE.findall(self.log())))
            if pids or time.monotonic() > deadline:
                return pids
            time.sleep(0.02)

    def signal(self, signum: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(signum)

    def reload(self, config: dict[str, Any] | None = None) -> None:
        if config is not None:
            self.config = config
            self.write_config(config)
        self.signal(signal.SIGHUP)

    def stop(self) -> int | None:
        proc, self.proc = self.proc, None
        if proc is None:
            return None
        code = stop_process(proc, self.stop_timeout)
        self._log.close()
        self._release_port()
        return code

    def __enter__(self) -> GatewayProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
        self._dir.cleanup()
