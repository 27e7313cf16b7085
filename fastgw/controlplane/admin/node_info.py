"""``GET /`` blocks shaped as Kong's: the node's ``configuration`` and ``plugins``.

Kong gives each listener setting as a list (``admin_listen: ["127.0.0.1:8001"]``) and
describes the sockets it opened in ``*_listeners`` (``ip``, ``port``, ``ssl``, ...);
Kong Manager's overview reads them. ``plugins.available_on_server`` names every plugin
this node runs (Kong 3.x: an object, name -> ``{"version": ..., "priority": ...}``).
"""

from __future__ import annotations

from typing import Any

from fastgw.config.declarative import enabled_plugins
from fastgw.config.listeners import parse_listeners
from fastgw.config.model import Config
from fastgw.config.plugins import PLUGINS
from fastgw.config.settings import GatewaySettings, settings_to_dict

__all__ = ["configuration_block", "plugins_block", "listeners"]

_LISTENS = ("proxy_listen", "admin_listen", "status_listen")


def listeners(listen: str) -> list[dict[str, Any]]:
    """Kong's description of the sockets behind one listen setting (none when ``off``)."""
    return [{"ip": a.host, "port": a.port, "listener": entry.strip(), "ssl": a.ssl,
             "http2": a.http2, "proxy_protocol": False, "deferred": False, "bind": False,
             "reuseport": False, "backlog": None}
            for a, entry in zip(parse_listeners(listen), _entries(listen))]


def _entries(listen: str) -> list[str]:
    """A listen setting's entries as given (Kong lists them: ``["0.0.0.0:8000", ...]``)."""
    return [] if listen.strip() == "off" else [e.strip() for e in listen.split(",")]


def configuration_block(settings: GatewaySettings, config_file: str) -> dict[str, Any]:
    out = settings_to_dict(settings)
    out.pop("admin_token", None)  # never echo the secret
    for key in _LISTENS:
        listen = out[key]
        out[key] = _entries(listen)
        out[key.replace("_listen", "_listeners")] = listeners(listen)
    # The portal (fastgw's admin GUI) is served by the admin listener, at /portal/.
    out["admin_gui_listen"] = out["admin_listen"]
    out["admin_gui_listeners"] = out["admin_listeners"]
    out["admin_gui_path"] = "/portal/"
    return {**out, "database": "off", "role": "traditional", "config_file": config_file}


def plugins_block(config: Config) -> dict[str, Any]:
    """What the node runs (``gateway.plugins``) and what the config uses."""
    return {"available_on_server": {
                name: {"version": PLUGINS[name].version, "priority": PLUGINS[name].priority}
                for name in sorted(enabled_plugins(config.gateway))},
            "enabled_in_cluster": sorted({p.name for p in config.plugins})}
