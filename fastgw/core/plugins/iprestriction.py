"""ip-restriction decisions (Kong 3.x ``kong/plugins/ip-restriction/handler.lua``), pure.

The client address is the one resolved through ``trusted_ips`` (``client_address``):
a trusted peer's ``X-Real-IP`` (Kong's default ``real_ip_header``), else the last
address of its ``X-Forwarded-For``; anyone else's own address. A ``deny`` match is
refused first, then an ``allow`` list refuses everything outside it; the answer is
``status`` (403) with ``message`` ("Your IP address is not allowed"). IPv4 and IPv6,
single addresses or CIDR ranges; an IPv4-mapped IPv6 peer counts as its IPv4 address.
"""

from __future__ import annotations

import ipaddress
from typing import Sequence

__all__ = ["IpMatcher", "DEFAULT_MESSAGE", "client_address"]

DEFAULT_MESSAGE = "Your IP address is not allowed"

_Net = ipaddress.IPv4Network | ipaddress.IPv6Network
_Addr = ipaddress.IPv4Address | ipaddress.IPv6Address


def _address(ip: str) -> _Addr | None:
    try:
        addr = ipaddress.ip_address(ip.strip().strip("[]"))
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    return addr


class IpMatcher:
    """A plugin's allow / deny lists, parsed once per config; verdicts memoised."""

    __slots__ = ("allow", "deny", "_cache")

    def __init__(self, allow: Sequence[str] | None, deny: Sequence[str] | None) -> None:
        self.allow: tuple[_Net, ...] = tuple(
            ipaddress.ip_network(c, strict=False) for c in allow or ())
        self.deny: tuple[_Net, ...] = tuple(
            ipaddress.ip_network(c, strict=False) for c in deny or ())
        self._cache: dict[str, bool] = {}

    def allowed(self, ip: str) -> bool:
        verdict = self._cache.get(ip)
        if verdict is None:
            verdict = self._decide(ip)
            if len(self._cache) >= 10000:
                self._cache.clear()
            self._cache[ip] = verdict
        return verdict

    def _decide(self, ip: str) -> bool:
        addr = _address(ip)
        if addr is None:
            return False  # unix sockets and the like cannot be identified: refused (Kong)
        if self.deny and any(addr in n for n in self.deny if n.version == addr.version):
            return False
        if self.allow:
            return any(addr in n for n in self.allow if n.version == addr.version)
        return True


def client_address(peer: str, trusted: bool, real_ip: bytes | None,
                   forwarded_for: bytes | None) -> str:
    """The client's address as ``trusted_ips`` resolve it (see the module docstring)."""
    if trusted:
        if real_ip:
            return real_ip.decode("latin-1").strip()
        if forwarded_for:
            return forwarded_for.decode("latin-1").rsplit(",", 1)[-1].strip()
    return peer
