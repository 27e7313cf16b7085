"""One routed Admin API request (``Call``) and what its handlers may use of the API.

Handlers live in several modules (crud, health, workspaces, the API itself); they get the
API as ``AdminContext``, the few attributes they need, so no handler module imports the
API that routes to it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from fastgw.config.model import Config, Target, Upstream
from fastgw.controlplane.admin.http import Request
from fastgw.controlplane.store import FileConfigStore

__all__ = ["AdminContext", "CacheSource", "Call", "HealthSource"]


class HealthSource(Protocol):
    def target_health(self, upstream: Upstream, target: Target) -> str:
        """HEALTHY, UNHEALTHY, HEALTHCHECKS_OFF or DNS_ERROR."""
        ...

    def set_manual(self, upstream: Upstream, address: str, healthy: bool) -> None:
        """An operator's override for one target address."""
        ...


class CacheSource(Protocol):
    async def ask(self, op: str, key: str | None = None) -> list[dict[str, Any]]:
        """proxy-cache: ``op`` (flush, purge, get) sent to every worker; their answers."""
        ...


class AdminContext(Protocol):
    store: FileConfigStore
    health: HealthSource
    caches: CacheSource
    node_id: str


@dataclass(slots=True)
class Call:
    api: AdminContext
    req: Request
    ws: str
    params: dict[str, str]

    @property
    def config(self) -> Config:
        return self.api.store.state.configs[self.ws]
