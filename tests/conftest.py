"""Shared fixtures: real emulator backends and real fastgw processes on ephemeral ports."""

from __future__ import annotations

import os
import shutil
from typing import Any, Callable, Iterator

import pytest

from tests.support.disk import small_disk  # noqa: F401 - a fixture for every test
from tests.support.gateway import GatewayProcess, config_for_targets
from tests.support.procs import IrisProcess


def require_tool(name: str, install: str) -> str:
    """Path of a Debian tool; skip (or fail under CI=true) when it is missing."""
    path = shutil.which(name)
    if path is None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{name} is required in CI ({install})")
        pytest.skip(f"{name} not installed: {install}")
    return path


@pytest.fixture
def iris_pair() -> Iterator[tuple[IrisProcess, IrisProcess]]:
    with IrisProcess("A") as a, IrisProcess("B") as b:
        yield a, b


@pytest.fixture
def gateway_factory() -> Iterator[Callable[..., GatewayProcess]]:
    started: list[GatewayProcess] = []

    def make(config: dict[str, Any], **kwargs: Any) -> GatewayProcess:
        gw = GatewayProcess(config, **kwargs)
        started.append(gw)
        return gw.start()

    yield make
    for gw in started:
        gw.stop()
        gw._dir.cleanup()


@pytest.fixture
def gateway(iris_pair, gateway_factory) -> GatewayProcess:
    a, b = iris_pair
    return gateway_factory(config_for_targets([f"127.0.0.1:{a.port}", f"127.0.0.1:{b.port}"]))
