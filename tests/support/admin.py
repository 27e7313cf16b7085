"""Helpers for the Admin API tests: gateways with the admin listener on a free port."""

from __future__ import annotations

import time
from typing import Any, Callable

import requests

from tests.support.gateway import GatewayProcess, free_port


def admin_config(base: dict[str, Any] | None = None, **gateway: Any) -> dict[str, Any]:
    """A config (default: no entities) whose admin and status listeners are on free ports."""
    config = dict(base or {"_format_version": "3.0"})
    config["gateway"] = {**config.get("gateway", {}),
                         "admin_listen": f"127.0.0.1:{free_port()}",
                         "status_listen": f"127.0.0.1:{free_port()}", **gateway}
    return config


def wait_ready(gw: GatewayProcess, workers: int, timeout: float = 20.0) -> dict[str, Any]:
    """Until every worker runs the current config version; returns the admin /status."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            status = requests.get(gw.admin_url + "/status", timeout=2).json()
            ws = status["workers"]
            if len(ws) == workers and all(w["ready"] for w in ws) and \
                    status["config"]["all_workers_current"]:
                return status
        except (requests.RequestException, KeyError, ValueError):
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"workers not ready after {timeout}s:\n{gw.log()}")
        time.sleep(0.05)


def wait_until(predicate: Callable[[], bool], timeout: float = 5.0, step: float = 0.02) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met in time")
        time.sleep(step)
