"""Which plugin instances run for a request, and in which order (Kong's plugins iterator).

An instance is scoped by any combination of route, service and consumer (all unset:
global). For one plugin name, the most specific instance that matches wins, in Kong's
order (``kong/runloop/plugins_iterator.lua``, "precedence"):

  1 route + service + consumer   2 route + consumer   3 service + consumer
  4 route + service              5 consumer           6 route
  7 service                      8 global

Instances then run by their plugin's priority, highest first (ties: by name, so the order
is the same in every worker). Disabled instances do not exist for the data plane.

Consumer-scoped instances are looked up once a consumer is known (an auth plugin ran),
as Kong does: ``resolve`` with ``consumer_id=None`` gives the chain a request starts with;
``consumers_with_plugins`` names the consumers whose chain differs, so that the data plane
precomputes those chains once per config instead of resolving per request.
"""

from __future__ import annotations

from typing import Mapping, Protocol, Sequence, TypeVar

__all__ = ["ScopedPlugin", "resolve", "consumers_with_plugins", "specificity"]


class ScopedPlugin(Protocol):
    @property
    def name(self) -> str: ...
    @property
    def route(self) -> str | None: ...
    @property
    def service(self) -> str | None: ...
    @property
    def consumer(self) -> str | None: ...
    @property
    def enabled(self) -> bool: ...


P = TypeVar("P", bound=ScopedPlugin)

# (route set, service set, consumer set) -> rank; lower wins.
_RANK: dict[tuple[bool, bool, bool], int] = {
    (True, True, True): 1, (True, False, True): 2, (False, True, True): 3,
    (True, True, False): 4, (False, False, True): 5, (True, False, False): 6,
    (False, True, False): 7, (False, False, False): 8,
}


def specificity(plugin: ScopedPlugin) -> int:
    """Kong's precedence rank of an instance's scope (1 = most specific)."""
    return _RANK[(plugin.route is not None, plugin.service is not None,
                  plugin.consumer is not None)]


def _applies(plugin: ScopedPlugin, route_id: str | None, service_id: str | None,
             consumer_id: str | None) -> bool:
    return (plugin.enabled
            and (plugin.route is None or plugin.route == route_id)
            and (plugin.service is None or plugin.service == service_id)
            and (plugin.consumer is None or plugin.consumer == consumer_id))


def resolve(plugins: Sequence[P], priorities: Mapping[str, int], route_id: str | None,
            service_id: str | None, consumer_id: str | None = None) -> list[P]:
    """The instances that run, one per plugin name, highest priority first."""
    best: dict[str, P] = {}
    for plugin in plugins:
        if not _applies(plugin, route_id, service_id, consumer_id):
            continue
        held = best.get(plugin.name)
        if held is None or specificity(plugin) < specificity(held):
            best[plugin.name] = plugin
    return sorted(best.values(), key=lambda p: (-priorities.get(p.name, 0), p.name))


def consumers_with_plugins(plugins: Sequence[ScopedPlugin], route_id: str | None,
                           service_id: str | None) -> list[str]:
    """Consumers that have an instance of their own applying to this route/service."""
    found: list[str] = []
    for plugin in plugins:
        consumer = plugin.consumer
        if consumer is not None and consumer not in found and \
                _applies(plugin, route_id, service_id, consumer):
            found.append(consumer)
    return found
