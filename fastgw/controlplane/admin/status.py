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

from fastgw.controlplane.admin.http import HTTPError, Request, Response, json_response

__all__ = ["StatusAPI", "bytes_to_str", "memory_block", "memory_options"]

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


# --------------------------------------------------------------------------- Kong's memory block

_UNITS = {"k": (2**10, "KiB"), "m": (2**20, "MiB"), "g": (2**30, "GiB")}


def bytes_to_str(n: int, unit: str, scale: int) -> str:
    """Kong's ``bytes_to_str``: ``"b"`` gives the integer, else ``"1.50 MiB"``. Raises
    ValueError with Kong's message for a unit or scale it refuses."""
    if scale < 0:
        raise ValueError("scale must be equal or greater than 0")
    if not unit or unit.lower() == "b":
        return str(int(n))
    spec = _UNITS.get(unit.lower())
    if spec is None:
        raise ValueError(f"invalid unit '{unit}' (expected 'k/K', 'm/M', or 'g/G')")
    return f"{n / spec[0]:.{scale}f} {spec[1]}"


def memory_options(req: Request) -> tuple[str, int]:
    """``?unit=`` (default ``m``) and ``?scale=`` (default 2): a bad unit, or a scale that
    is not a whole number from 0 to 99, is a 400 (Kong's message for a negative one; Lua's
    string.format takes no precision above 99)."""
    unit = req.arg("unit") or "m"
    scale = 2
    raw = req.arg("scale")
    if raw:
        if not (raw.isascii() and raw.lstrip("+-").isdigit()):
            raise HTTPError(400, {"message": "scale must be an integer"})
        scale = int(raw)
        if scale < 0:
            raise HTTPError(400, {"message": "scale must be equal or greater than 0"})
        if scale > 99:
            raise HTTPError(400, {"message": "scale must be at most 99"})
    try:
        bytes_to_str(0, unit, scale)
    except ValueError as err:
        raise HTTPError(400, {"message": str(err)}) from None
    return unit, scale


def memory_block(workers: list[dict[str, Any]], unit: str, scale: int) -> dict[str, Any]:
    """Kong's ``/status`` ``memory`` block. fastgw has no Lua VMs nor shared dicts: each
    worker's resident memory stands where Kong puts its Lua VM's."""
    return {
        "workers_lua_vms": [{"http_allocated_gc": bytes_to_str(w.get("rss_bytes") or 0, unit,
                                                               scale), "pid": w["pid"]}
                            for w in workers],
        "lua_shared_dicts": {},
    }
