"""A benchmark server (nginx, HAProxy, the minimal proxy) as a foreground child process.

`MinimalProxyProcess` (bench/minimal_proxy.py's handle) lives here, not in that module, so
the proxy process imports nothing but asyncio, uvloop and httptools.

Each runs in its own temporary directory (configs, pid files, logs, temp files), so it works
as root and as an ordinary user and leaves nothing behind. Start-up waits, bounded, until
every port it serves accepts connections; stop is SIGTERM then SIGKILL, always reaped.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections.abc import Sequence
from importlib.metadata import version
from pathlib import Path
from typing import Self

from tests.support.gateway import free_port, wait_port
from tests.support.procs import REPO_ROOT, stop_process

__all__ = ["MinimalProxyProcess", "ServerProcess", "compile_problem"]

MINIMAL_SOURCE = REPO_ROOT / "bench" / "minimal_proxy.py"
# Runs the compiled module from the build directory given as argv[1]; refuses to fall
# back to the source (a "compiled" figure must come from the compiled code).
_RUN_COMPILED = ("import sys; build = sys.argv.pop(1); sys.path.insert(0, build); "
                 "import minimal_proxy as m; "
                 "assert not m.__file__.endswith('.py'), m.__file__; m.main()")


class ServerProcess:
    """Subclasses fill `args` (and usually write a config into `prefix`) before `start()`."""

    def __init__(self, name: str, ports: Sequence[int], *, startup_timeout: float = 10.0,
                 taskset: str | None = None) -> None:
        self.name = name
        self.ports = list(ports)
        self.startup_timeout = startup_timeout
        self.taskset = taskset
        self._dir = tempfile.TemporaryDirectory(prefix=f"bench-{name}-")
        self.prefix = self._dir.name
        self.args: list[str] = []
        self.env: dict[str, str] | None = None  # None: the harness's own environment
        self.config_text = ""
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = Path(self.prefix, "stderr.log")

    @property
    def port(self) -> int:
        return self.ports[0]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def write_config(self, filename: str, text: str) -> Path:
        self.config_text = text
        path = Path(self.prefix, filename)
        path.write_text(text)
        return path

    def command(self) -> list[str]:
        return ["taskset", "-c", self.taskset, *self.args] if self.taskset else list(self.args)

    def start(self) -> Self:
        self._log = open(self.log_path, "wb")  # noqa: SIM115 (closed by stop())
        self.proc = subprocess.Popen(
            self.command(), stdin=subprocess.DEVNULL, stdout=self._log,
            stderr=subprocess.STDOUT, cwd=self.prefix, env=self.env,
        )
        deadline = time.monotonic() + self.startup_timeout
        for port in self.ports:
            while True:
                if self.proc.poll() is not None:
                    code = self.proc.returncode
                    self.stop()
                    raise RuntimeError(f"{self.name} exited with {code}:\n{self.log()}")
                try:
                    wait_port("127.0.0.1", port, 0.2)
                    break
                except TimeoutError:
                    if time.monotonic() > deadline:
                        self.stop()
                        raise TimeoutError(f"{self.name} did not listen on {port}:\n{self.log()}")
        return self

    def log(self) -> str:
        text = ""
        for name in ("stderr.log", "error.log"):  # error.log: nginx's own
            try:
                text += Path(self.prefix, name).read_text(errors="replace")
            except OSError:
                pass
        return text

    def stop(self) -> int | None:
        proc, self.proc = self.proc, None
        if proc is None:
            return None
        code = stop_process(proc, 5.0)  # nginx: fast shutdown; haproxy -db: exits
        self._log.close()
        return code

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
        self._dir.cleanup()


def compile_problem() -> str | None:
    """Why the minimal proxy cannot be compiled here (None: it can): mypyc and a C compiler."""
    if importlib.util.find_spec("mypyc") is None:
        return "mypyc is not installed (pip install -e '.[dev]')"
    compiler = (sysconfig.get_config_var("CC") or "cc").split()[0]
    if shutil.which(compiler) is None:
        return f"no C compiler ({compiler}; apt-get install gcc)"
    return None


class MinimalProxyProcess(ServerProcess):
    """The harness's handle: `python -m bench.minimal_proxy` on a free port (bench/load.py).

    compiled=True: the same source built with mypyc in this process's temp dir first
    (about 20 s; `compile_problem()` says whether it can be), then run from there."""

    def __init__(self, backends: Sequence[str], *, taskset: str | None = None,
                 compiled: bool = False) -> None:
        super().__init__("minimalc" if compiled else "minimal", [free_port()], taskset=taskset)
        self.compiled = compiled
        if compiled:
            build = Path(self.prefix, "build")
            self.args = [sys.executable, "-c", _RUN_COMPILED, str(build)]
        else:
            self.args = [sys.executable, "-m", "bench.minimal_proxy"]
        self.args += ["--port", str(self.port)]
        for backend in backends:
            self.args += ["--backend", backend]
        # It runs in its temp dir, so it finds `bench` through PYTHONPATH.
        self.env = dict(os.environ)
        self.env["PYTHONPATH"] = os.pathsep.join(
            filter(None, [str(REPO_ROOT), self.env.get("PYTHONPATH")]))

    def start(self) -> Self:
        if self.compiled:
            self._compile()
        return super().start()

    def _compile(self) -> None:
        problem = compile_problem()
        if problem is not None:
            raise RuntimeError(f"cannot compile the minimal proxy: {problem}")
        build = Path(self.prefix, "build")
        build.mkdir()
        shutil.copy(MINIMAL_SOURCE, build / "minimal_proxy.py")
        out = subprocess.run([sys.executable, "-m", "mypyc", "minimal_proxy.py"], cwd=build,
                             capture_output=True, text=True, timeout=300, check=False)
        if out.returncode != 0 or not list(build.glob("minimal_proxy.*.so")):
            raise RuntimeError(f"mypyc failed on bench/minimal_proxy.py:\n{out.stdout}{out.stderr}")

    def version(self) -> str:
        build = ", compiled with mypyc" if self.compiled else ""
        return (f"bench/minimal_proxy.py{build} (uvloop {version('uvloop')}, "
                f"httptools {version('httptools')})")
