"""``GET /`` blocks shaped as Kong's: the node's ``configuration`` and ``plugins``.

Kong gives each listener setting as a list (``admin_listen: ["127.0.0.1:8001"]``) and
describes the sockets it opened in ``*_listeners`` (``ip``, ``port``, ``ssl``, ...);
Kong Manager's overview reads them. ``plugins.available_on_server`` names every plugin
this node runs (Kong 3.x: an object, name -> ``{"version": ...}``).
"""

from __future__ import annotations

from typing import Any

from fastgw.config.declarative import SUPPORTED_PLUGINS
from fastgw.config.model import Config
from fastgw.config.settings import GatewaySettings, parse_listen, settings_to_dict

__all__ = ["configuration_block", "plugins_block", "listeners"]

_LISTENS = ("proxy_listen", "admin_listen", "status_listen")


def listeners(listen: str) -> list[dict[str, Any]]:
    """Kong's description of the sockets behind one listen setting (none when ``off``)."""
    if listen == "off":
        return []
    ip, port = parse_listen(listen)
    return [{"ip": ip, "port": port, "listener": listen, "ssl": False, "http2": False,
             "proxy_protocol": False, "deferred": False, "bind": False,
             "reuseport": False, "backlog": None}]


def configuration_block(settings: GatewaySettings, config_file: str) -> dict[str, Any]:
    out = settings_to_dict(settings)
    out.pop("admin_token", None)  # never echo the secret
    for key in _LISTENS:
        listen = out[key]
        out[key] = [] if listen == "off" else [listen]
        out[key.replace("_listen", "_listeners")] = listeners(listen)
    # The portal (fastgw's admin GUI) is served by the admin listener, at /portal/.
    out["admin_gui_listen"] = out["admin_listen"]
    out["admin_gui_listeners"] = out["admin_listeners"]
    out["admin_gui_path"] = "/portal/"
    return {**out, "database": "off", "role": "traditional", "config_file": config_file}


def plugins_block(config: Config, version: str) -> dict[str, Any]:
    return {"available_on_server": {name: {"version": version}
                                    for name in sorted(SUPPORTED_PLUGINS)},
            "enabled_in_cluster": sorted({p.name for p in config.plugins})}
