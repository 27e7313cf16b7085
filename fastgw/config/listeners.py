"""Listen addresses in Kong's syntax: ``0.0.0.0:8000, 0.0.0.0:8443 ssl``. Pure, no I/O.

A listen setting (``proxy_listen``, ``admin_listen``, ``status_listen``) is a
comma-separated list of entries; each entry is ``host:port`` followed by flags
(kong.conf.default). fastgw honours:

  ssl         the entry terminates TLS (certificates: ``fastgw.dataplane.tls``)
  backlog=N   the listen(2) backlog

and accepts, without effect, flags that describe what fastgw does anyway or cannot do:
``reuseport``, ``bind`` and ``deferred`` (every worker binds its own SO_REUSEPORT socket)
and ``http2`` (ALPN offers http/1.1 only, so clients speak HTTP/1.1; the supervisor logs
it). Any other flag (``proxy_protocol``, ``so_keepalive=...``, ``ipv6only=...``) is refused:
a setting fastgw would not enforce is an error, never silently ignored.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

__all__ = ["IGNORED_FLAGS", "ListenAddress", "parse_listen", "parse_listeners"]

_LISTEN_RE = re.compile(r"^(?:\[([0-9A-Fa-f:.]+)\]|([^\s:\[\]]+)):(\d{1,5})$")
# Flags accepted for Kong compatibility that change nothing in fastgw (see module doc).
IGNORED_FLAGS = frozenset({"reuseport", "bind", "deferred", "http2"})
DEFAULT_BACKLOG = 2048


@dataclass(frozen=True, slots=True)
class ListenAddress:
    host: str
    port: int
    ssl: bool = False
    backlog: int = DEFAULT_BACKLOG
    http2: bool = False  # asked for; not provided (HTTP/1.1 only)

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}" + (" ssl" if self.ssl else "")


def parse_listen(value: str) -> tuple[str, int]:
    """``"0.0.0.0:8000" -> ("0.0.0.0", 8000)``; ``"[::]:8000" -> ("::", 8000)``.

    Raises ValueError for anything that is not ``host:port`` (including ``"off"``).
    """
    m = _LISTEN_RE.match(value.strip()) if isinstance(value, str) else None
    if not m:
        raise ValueError(f"invalid listen address '{value}', expected host:port")
    host = m.group(1) or m.group(2)
    port = int(m.group(3))
    if port > 65535:
        raise ValueError(f"invalid port in listen address '{value}'")
    if m.group(1) is not None:
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"invalid IPv6 address in listen address '{value}'") from None
    return host, port


def parse_listeners(value: str) -> tuple[ListenAddress, ...]:
    """Every entry of a listen setting. ``"off"`` gives ``()``. Raises ValueError."""
    if value.strip() == "off":
        return ()
    out: list[ListenAddress] = []
    for entry in value.split(","):
        words = entry.split()
        if not words:
            raise ValueError(f"empty entry in listen setting '{value}'")
        host, port = parse_listen(words[0])
        ssl = http2 = False
        backlog = DEFAULT_BACKLOG
        for flag in words[1:]:
            if flag == "ssl":
                ssl = True
            elif flag.startswith("backlog="):
                number = flag[len("backlog="):]
                if not number.isdigit() or int(number) < 1:
                    raise ValueError(f"invalid backlog in listen address '{entry.strip()}'")
                backlog = int(number)
            elif flag in IGNORED_FLAGS:
                http2 = http2 or flag == "http2"
            else:
                raise ValueError(f"listen flag '{flag}' is not supported (fastgw supports "
                                 "ssl and backlog=N; reuseport, bind, deferred and http2 are "
                                 "accepted and change nothing)")
        address = ListenAddress(host, port, ssl, backlog, http2)
        if any((a.host, a.port) == (host, port) for a in out):
            raise ValueError(f"address {words[0]} is listed twice")
        out.append(address)
    return tuple(out)
