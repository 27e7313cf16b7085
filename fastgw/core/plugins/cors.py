"""cors decisions (Kong 3.x ``kong/plugins/cors/handler.lua``), pure.

A preflight (``OPTIONS`` with ``Origin`` and ``Access-Control-Request-Method``) is
answered by the gateway with 200 and no body, unless ``preflight_continue``; every other
response gets the CORS fields. The fields the plugin sets replace the backend's.

Origin: no ``origins`` (or just ``"*"``) allows every origin with ``*``; otherwise the
request's ``Origin`` is echoed when it equals one of them (scheme and host compared
without case, default ports ignored) or matches one written as a regex (an entry with
characters other than letters, digits and ``.:/-``, anchored at both ends), and
``Vary: Origin`` is added. With ``credentials``, ``Access-Control-Allow-Credentials:
true`` is sent, and a ``*`` origin becomes the request's own (browsers refuse both).
Preflight answers add ``Access-Control-Allow-Methods`` (``methods``),
``Access-Control-Allow-Headers`` (``headers``, else the requested ones),
``Access-Control-Max-Age`` and, when asked and allowed,
``Access-Control-Allow-Private-Network``; other answers
``Access-Control-Expose-Headers``.
"""

from __future__ import annotations

import re
from typing import Any, Final, Mapping

__all__ = ["CorsPolicy", "MANAGED_FIELDS"]

# The response fields the plugin sets (the backend's are replaced).
MANAGED_FIELDS: Final = frozenset({
    b"access-control-allow-origin", b"access-control-allow-credentials",
    b"access-control-expose-headers", b"access-control-allow-methods",
    b"access-control-allow-headers", b"access-control-max-age",
    b"access-control-allow-private-network"})
_REGEX_HINT: Final = re.compile(r"[^A-Za-z0-9.:/-]")
_DEFAULT_PORTS: Final = {"http": "80", "https": "443"}


def _normalize(origin: str) -> str:
    scheme, sep, rest = origin.partition("://")
    if not sep:
        return origin.lower()
    scheme = scheme.lower()
    host, _, port = rest.lower().partition(":")
    if port and port == _DEFAULT_PORTS.get(scheme):
        port = ""
    return f"{scheme}://{host}:{port}" if port else f"{scheme}://{host}"


def _line(name: bytes, value: str) -> bytes:
    return name + b": " + value.encode("latin-1") + b"\r\n"


class CorsPolicy:
    """One plugin instance's config, prepared once per snapshot."""

    __slots__ = ("allow_all", "exact", "patterns", "credentials", "methods", "headers",
                 "exposed", "max_age", "private_network", "preflight_continue")

    def __init__(self, config: Mapping[str, Any]) -> None:
        origins = list(config.get("origins") or ())
        self.allow_all = not origins or origins == ["*"]
        self.exact = {_normalize(o) for o in origins if not _REGEX_HINT.search(o)}
        self.patterns = [re.compile(o) for o in origins if _REGEX_HINT.search(o) and o != "*"]
        if "*" in origins:
            self.allow_all = True
        self.credentials = bool(config.get("credentials"))
        self.methods = ",".join(config.get("methods") or ())
        self.headers = ",".join(config.get("headers") or ()) or None
        self.exposed = ",".join(config.get("exposed_headers") or ()) or None
        max_age = config.get("max_age")
        self.max_age = None if max_age is None else (
            str(int(max_age)) if float(max_age).is_integer() else str(max_age))
        self.private_network = bool(config.get("private_network"))
        self.preflight_continue = bool(config.get("preflight_continue"))

    def _origin_lines(self, origin: str | None) -> list[bytes]:
        """Access-Control-Allow-Origin (+ credentials, Vary) for a request's Origin."""
        out: list[bytes] = []
        if self.allow_all:
            if self.credentials and origin:
                out += (_line(b"Access-Control-Allow-Origin", origin),
                        b"Access-Control-Allow-Credentials: true\r\n", b"Vary: Origin\r\n")
            else:
                out.append(b"Access-Control-Allow-Origin: *\r\n")
            return out
        if origin is not None and (_normalize(origin) in self.exact or any(
                p.fullmatch(origin) for p in self.patterns)):
            out.append(_line(b"Access-Control-Allow-Origin", origin))
            if self.credentials:
                out.append(b"Access-Control-Allow-Credentials: true\r\n")
        out.append(b"Vary: Origin\r\n")
        return out

    def preflight(self, origin: str, request_headers: str | None,
                  private_network: str | None) -> list[bytes] | None:
        """The fields of the gateway's 200 answer, or None when the preflight goes on to
        the backend (``preflight_continue``)."""
        if self.preflight_continue:
            return None
        out = self._origin_lines(origin)
        allowed = self.headers or request_headers
        if allowed:
            out.append(_line(b"Access-Control-Allow-Headers", allowed))
        out.append(_line(b"Access-Control-Allow-Methods", self.methods))
        if self.max_age is not None:
            out.append(_line(b"Access-Control-Max-Age", self.max_age))
        if self.private_network and (private_network or "").lower() == "true":
            out.append(b"Access-Control-Allow-Private-Network: true\r\n")
        return out

    def response_lines(self, origin: str | None) -> list[bytes]:
        """The fields added to an ordinary response."""
        out = self._origin_lines(origin)
        if self.exposed:
            out.append(_line(b"Access-Control-Expose-Headers", self.exposed))
        return out
