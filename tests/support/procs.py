"""Subprocess helpers shared by tests and benchmarks.

`IrisProcess` runs `python -m tests.support.iris --port 0 ...` in a child process, waits (bounded) for
its "iris <id> listening on <host>:<port>" line and always stops it on exit.
"""

from __future__ import annotations

import os
import re
import select
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import IO, Sequence

__all__ = ["IrisProcess", "REPO_ROOT", "process_gone", "status_kb", "stop_process"]

REPO_ROOT = Path(__file__).resolve().parents[2]
_READY = re.compile(rb"^iris (\S+) listening on (\S+):(\d+)\s*$")


def process_gone(pid: int) -> bool:
    """Gone, or a zombie all of whose threads have exited: only then are its sockets
    closed (a process's files go with its last thread, which can outlive the main one)."""
    try:
        threads = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return True
    for tid in threads:
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X"):
                    return False
        except OSError:
            continue
    return True


def status_kb(pid: int, field_name: bytes) -> int:
    """A KiB figure of /proc/PID/status (`b"VmRSS:"`, `b"VmHWM:"`); 0 if unreadable."""
    try:
        for line in Path(f"/proc/{pid}/status").read_bytes().splitlines():
            if line.startswith(field_name):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


def stop_process(proc: subprocess.Popen[bytes], timeout: float) -> int:
    """SIGTERM, then SIGKILL after `timeout` seconds; always reaps. Returns the exit code."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout)
    return proc.returncode


class IrisProcess:
    """Context manager around an emulator subprocess.

    >>> with IrisProcess("A", user="u", password="p") as iris:
    ...     requests.get(iris.url + "/api/atelier/", auth=("u", "p"))
    """

    def __init__(
        self,
        id: str = "A",
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        version: str | None = None,
        user: str | None = None,
        password: str | None = None,
        latency_ms: float = 0.0,
        error_rate: float = 0.0,
        fail_status: int = 500,
        keepalive_timeout: float | None = None,
        tls: tuple[str, str] | None = None,
        tls_client_ca: str | None = None,
        extra_args: Sequence[str] = (),
        python: str = sys.executable,
        startup_timeout: float = 10.0,
        stop_timeout: float = 5.0,
        taskset: str | None = None,
    ) -> None:
        self.id = id
        self.host = host
        self.port = port
        self.startup_timeout = startup_timeout
        self.stop_timeout = stop_timeout
        args = [python, "-m", "tests.support.iris", "--host", host, "--port", str(port), "--id", id]
        if version is not None:
            args += ["--version", version]
        if user is not None:
            args += ["--user", user]
        if password is not None:
            args += ["--password", password]
        if latency_ms:
            args += ["--latency-ms", str(latency_ms)]
        if error_rate:
            args += ["--error-rate", str(error_rate)]
        if fail_status != 500:
            args += ["--fail-status", str(fail_status)]
        if keepalive_timeout is not None:
            args += ["--keepalive-timeout", str(keepalive_timeout)]
        if tls is not None:  # (certificate file, key file): HTTPS
            args += ["--tls-cert", tls[0], "--tls-key", tls[1]]
        if tls_client_ca is not None:
            args += ["--tls-client-ca", tls_client_ca]
        self.scheme = "https" if tls is not None else "http"
        args += list(extra_args)
        if taskset:  # benchmarks pin the backend to a CPU so it doesn't fight the gateway
            args = ["taskset", "-c", taskset, *args]
        self.args = args
        self.proc: subprocess.Popen[bytes] | None = None
        self._stderr: IO[bytes] | None = None

    # -- public ------------------------------------------------------------------------------
    @property
    def pid(self) -> int:
        assert self.proc is not None, "not started"
        return self.proc.pid

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"

    def start(self) -> "IrisProcess":
        env = dict(os.environ)
        # `bench` must be importable whatever the caller's cwd is.
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
        env["PYTHONUNBUFFERED"] = "1"
        # stderr goes to a file, not a pipe: nobody drains it, and a full pipe would block
        # the emulator; the file lets us quote the child's traceback when startup fails.
        self._stderr = tempfile.TemporaryFile(prefix=f"iris-{self.id}-")
        self.proc = subprocess.Popen(
            self.args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=self._stderr,
            env=env, cwd=str(REPO_ROOT),
        )
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> int | None:
        """Terminate (then kill after stop_timeout) and reap; returns the exit code."""
        proc, self.proc = self.proc, None
        rc: int | None = None
        if proc is not None:
            rc = stop_process(proc, self.stop_timeout)
            if proc.stdout is not None:
                proc.stdout.close()
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None
        return rc

    def stderr_text(self) -> str:
        if self._stderr is None:
            return ""
        self._stderr.flush()
        self._stderr.seek(0)
        return self._stderr.read().decode("utf-8", "replace")

    def __enter__(self) -> "IrisProcess":
        return self.start()

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # -- internals -----------------------------------------------------------------------------
    def _wait_ready(self) -> None:
        proc = self.proc
        assert proc is not None and proc.stdout is not None
        fd = proc.stdout.fileno()
        deadline = time.monotonic() + self.startup_timeout
        buf = b""
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"iris {self.id} not ready in {self.startup_timeout}s; "
                                   f"stderr:\n{self.stderr_text()}")
            # Raw fd reads under select: a buffered readline() could block past the deadline.
            ready, _, _ = select.select([fd], [], [], min(left, 0.2))
            if ready:
                chunk = os.read(fd, 4096)
                if not chunk:
                    proc.wait(1)
                    raise RuntimeError(f"iris {self.id} exited with {proc.returncode}; "
                                       f"stderr:\n{self.stderr_text()}")
                buf += chunk
                line, nl, _ = buf.partition(b"\n")
                if nl:
                    m = _READY.match(line)
                    if m is None:
                        raise RuntimeError(f"unexpected output from iris {self.id}: {line!r}")
                    self.port = int(m.group(3))
                    return
            elif proc.poll() is not None:
                raise RuntimeError(f"iris {self.id} exited with {proc.returncode}; "
                                   f"stderr:\n{self.stderr_text()}")
