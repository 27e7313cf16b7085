"""Synthetic Kong-like route tables for router tests and benchmarks.

The mix imitates a large real configuration: mostly distinct plain prefixes
(``/api/service{i}``), every 10th route pinned to a host, every 7th limited to
GET/POST, every 50th with a wildcard host, every 100th a regex path with a
named capture, every 200th with a header condition, plus two regexes without
a literal prefix (so they are tested on every request) and one host-only route.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class BenchRoute:
    """Minimal Kong Route stand-in (attribute names as in Kong), for the router's
    benchmarks and unit tests."""

    id: str
    paths: tuple[str, ...] | None = None
    hosts: tuple[str, ...] | None = None
    methods: tuple[str, ...] | None = None
    headers: dict[str, tuple[str, ...]] | None = field(default=None, hash=False)
    regex_priority: int = 0
    created_at: Any = 0
    strip_path: bool = True
    preserve_host: bool = False
    path_handling: str = "v0"
    name: str | None = None
    service: str | None = None


def generate_routes(n: int) -> list[BenchRoute]:
    routes: list[BenchRoute] = []
    for i in range(n):
        hosts = methods = headers = None
        paths: tuple[str, ...] = (f"/api/service{i}",)
        if i % 10 == 3:
            hosts = (f"svc{i}.example.com",)
        if i % 50 == 7:
            hosts = (f"*.svc{i}.example.org",)
        if i % 7 == 5:
            methods = ("GET", "POST")
        if i % 200 == 11:
            headers = {"x-version": ("v2", "v3")}
        if i % 100 == 17:
            paths = (rf"~/api/regex{i}/(?<id>\d+)$", f"/api/plain{i}")
        routes.append(BenchRoute(
            id=f"r{i:06d}", name=f"route{i}", paths=paths, hosts=hosts,
            methods=methods, headers=headers, created_at=i, service=f"s{i % 97}",
        ))
    # Prefix-less regexes and a host-only route: constant per-request work.
    routes.append(BenchRoute(id="rx-any-1", paths=(r"~/(?<tenant>[a-z]+)/legacy/\d+$",),
                             regex_priority=1, created_at=n))
    routes.append(BenchRoute(id="rx-any-2", paths=(r"~/[^/]+/v9/items/(\d+)",), created_at=n))
    routes.append(BenchRoute(id="host-only", hosts=("admin.example.net",), created_at=n))
    return routes


def sample_path(n: int) -> str:
    """A typical request path that hits a plain route of the n-route table."""
    k = min(1234, n - 1)
    if k % 10 == 3 or k % 50 == 7 or k % 7 == 5 or k % 200 == 11 or k % 100 == 17:
        k -= 1
    return f"/api/service{k}/v1/items"
