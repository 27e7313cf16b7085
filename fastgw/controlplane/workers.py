"""The supervisor's handle on one worker process: its IPC channel and what it last said."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

from fastgw.dataplane.ipc import Channel

__all__ = ["WorkerHandle"]


@dataclass(eq=False)
class WorkerHandle:
    slot: int
    proc: asyncio.subprocess.Process
    channel: Channel
    started: float = field(default_factory=time.monotonic)
    acked: int = 0  # newest config version this worker runs
    ready: bool = False  # acked at least once: listening
    last_seen: float = field(default_factory=time.monotonic)  # its last message (heartbeat)
    unresponsive: bool = False  # silent past the watchdog timeout: being replaced
    last_apply: dict[str, Any] | None = None  # the last ack: version, ms, in place or built

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def serving(self) -> bool:
        return self.ready and not self.unresponsive
