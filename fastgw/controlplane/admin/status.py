"""The status listener (``status_listen``, default 127.0.0.1:8100): read-only node state
for load balancers and monitoring, without the Admin API's powers or token.

``GET /status`` is the Admin API's status body; ``GET /status/ready`` answers 200
``{"message": "ready"}`` once every worker runs the current config version, and 503
(``{"message": "draining"}`` or the reason it is not ready yet) otherwise, which is what a
load balancer in front of several nodes should poll. Other components add their own
routes with ``add_route`` (``/metrics`` will be one).
"""

from __future__ import annotations

from typing import Any, Awaitable, Callable

from fastgw.controlplane.admin.http import Request, Response, json_response

__all__ = ["StatusAPI"]

StatusHandler = Callable[[Request], Awaitable[Response]]


class StatusAPI:
    def __init__(self, status: Callable[[], dict[str, Any]],
                 readiness: Callable[[], tuple[bool, str]]) -> None:
        self._status = status
        self._readiness = readiness
        self.routes: dict[tuple[str, str], StatusHandler] = {}
        self.add_route("GET", "/status", self._get_status)
        self.add_route("GET", "/status/ready", self._get_ready)

    def add_route(self, method: str, path: str, handler: StatusHandler) -> None:
        """Register an extra endpoint (exact path match)."""
        self.routes[(method.upper(), path.rstrip("/") or "/")] = handler

    async def handle(self, req: Request) -> Response:
        path = req.path.rstrip("/") or "/"
        handler = self.routes.get((req.method, path))
        if handler is not None:
            return await handler(req)
        if any(p == path for _, p in self.routes):
            return json_response(405, {"message": "Method not allowed"})
        return json_response(404, {"message": "Not found"})

    async def _get_status(self, req: Request) -> Response:
        return json_response(200, self._status())

    async def _get_ready(self, req: Request) -> Response:
        ready, why = self._readiness()
        return json_response(200 if ready else 503, {"message": "ready" if ready else why})
