"""CORS on the admin listener, as Kong's Admin API answers browsers (pure, no I/O).

Kong (``api_helpers``): with ``admin_gui_url`` set, its origins (scheme://host[:port]) are
the allowed ones: a request from one of them gets its own ``Origin`` back in
``Access-Control-Allow-Origin``, any other gets the first allowed origin (so the browser
refuses it). Without ``admin_gui_url``, any ``Origin`` is echoed (``*`` when the request
has none). Every answer, errors included, carries ``Access-Control-Allow-Credentials:
true`` and ``Vary: Origin``, so a browser can read Kong's error bodies.

A preflight (``OPTIONS`` with ``Access-Control-Request-Method``) is answered at once,
before any authentication (a browser never sends credentials on a preflight): 204 with
the endpoint's methods in ``Allow`` and ``Access-Control-Allow-Methods``, and the
requested headers allowed (``Content-Type`` when none are named), which lets a GUI send
``Kong-Admin-Token``.
"""

from __future__ import annotations

from typing import Iterable, Mapping
from urllib.parse import urlsplit

__all__ = ["CorsPolicy", "gui_origin", "allow_list"]


def gui_origin(url: str) -> str:
    """``https://km.example.com:8445/manager`` -> ``https://km.example.com:8445``."""
    parts = urlsplit(url)
    return f"{parts.scheme.lower()}://{parts.netloc.lower()}"


def allow_list(methods: Iterable[str]) -> str:
    """An endpoint's ``Allow`` value: its methods, HEAD with GET, and OPTIONS, sorted."""
    names = set(methods) | {"OPTIONS"}
    if "GET" in names:
        names.add("HEAD")
    return ", ".join(sorted(names))


class CorsPolicy:
    def __init__(self, gui_urls: Iterable[str] = ()) -> None:
        self.gui_urls = tuple(gui_urls)
        self.origins: tuple[str, ...] = tuple(dict.fromkeys(gui_origin(u) for u in self.gui_urls))

    def allowed(self, origin: str | None) -> bool:
        """Whether a browser on ``origin`` may read the answers."""
        return not self.origins or origin in self.origins

    def headers(self, request_headers: Mapping[str, str]) -> list[tuple[str, str]]:
        """The CORS fields of every answer (``request_headers``: lower-cased names)."""
        origin = request_headers.get("origin")
        if self.origins:
            allow = origin if origin in self.origins else self.origins[0]
        else:
            allow = origin or "*"
        return [("Access-Control-Allow-Origin", allow),
                ("Access-Control-Allow-Credentials", "true"), ("Vary", "Origin")]

    @staticmethod
    def preflight_headers(request_headers: Mapping[str, str],
                          methods: Iterable[str]) -> list[tuple[str, str]]:
        """The fields of a 204 answer to ``OPTIONS`` (preflight or not)."""
        allow = allow_list(methods)
        asked = request_headers.get("access-control-request-headers")
        return [("Allow", allow), ("Access-Control-Allow-Methods", allow),
                ("Access-Control-Allow-Headers", asked or "Content-Type")]
