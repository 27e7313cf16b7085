"""Multi-process mode: a supervisor forks N proxy workers, each with its own
SO_REUSEPORT listener, and keeps them running.

Signals: SIGTERM/SIGINT drain every worker and exit; SIGHUP makes every worker re-read
the config (each validates it; an invalid file keeps the running config). A worker that
dies unexpectedly is replaced. (The Admin API and pushed snapshots over IPC described in
DESIGN.md build on this process split.)
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from typing import Any, Callable

from fastgw.config import Config
from fastgw.server import bind_socket

log = logging.getLogger("fastgw.supervisor")

RESPAWN_WINDOW = 5.0  # a worker dying sooner than this after start counts as a crash loop
MAX_QUICK_DEATHS = 5


class Supervisor:
    def __init__(self, config: Config, reload: Callable[[], Any], workers: int) -> None:
        self.config = config
        self.reload = reload
        self.workers = workers
        self.children: dict[int, float] = {}  # pid -> start time
        self.stopping = False
        self.quick_deaths = 0

    def _spawn(self) -> None:
        pid = os.fork()
        if pid == 0:  # worker
            code = 0
            try:
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                signal.signal(signal.SIGINT, signal.SIG_DFL)
                signal.signal(signal.SIGHUP, signal.SIG_DFL)
                from fastgw.server import install_uvloop, serve

                install_uvloop()
                asyncio.run(serve(self.config, reload=self.reload))
            except BaseException:  # noqa: BLE001 - the worker must never return into the supervisor
                log.exception("worker failed")
                code = 1
            finally:
                os._exit(code)
        self.children[pid] = time.monotonic()

    def _forward(self, signum: int) -> None:
        for pid in list(self.children):
            try:
                os.kill(pid, signum)
            except ProcessLookupError:
                pass

    def run(self) -> int:
        # Fail fast (and once) if the address cannot be bound at all.
        probe = bind_socket(self.config.gateway.proxy_listen)
        probe.close()

        def on_stop(signum: int, _frame: Any) -> None:
            self.stopping = True
            self._forward(signal.SIGTERM)

        def on_hup(signum: int, _frame: Any) -> None:
            self._forward(signal.SIGHUP)

        signal.signal(signal.SIGTERM, on_stop)
        signal.signal(signal.SIGINT, on_stop)
        signal.signal(signal.SIGHUP, on_hup)
        for _ in range(self.workers):
            self._spawn()
        log.info("supervisor %d started %d workers", os.getpid(), self.workers)
        status = 0
        while self.children:
            try:
                pid, code = os.wait()
            except ChildProcessError:
                break
            except InterruptedError:  # pragma: no cover - PEP 475 retries, kept for clarity
                continue
            started = self.children.pop(pid, None)
            if started is None:
                continue
            if self.stopping:
                continue
            log.error("worker %d exited (status %d); replacing it", pid, code)
            if time.monotonic() - started < RESPAWN_WINDOW:
                self.quick_deaths += 1
                if self.quick_deaths >= MAX_QUICK_DEATHS:
                    log.error("workers keep dying at start; giving up")
                    self.stopping = True
                    self._forward(signal.SIGTERM)
                    status = 1
                    continue
            self._spawn()
        return status
