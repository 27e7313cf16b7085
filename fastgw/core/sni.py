"""Which certificate a TLS handshake gets, from the server name the client sent (SNI).

Kong's order (kong/runloop/certificate.lua, find_certificate), first match wins:
  1. the exact name                    api.example.com
  2. the name with its first label     *.example.com       (only for names of 3+ labels,
     replaced by a wildcard                                  and one label deep: *.b.c does
                                                             not match a.x.b.c)
  3. the name with its last label      api.example.*
     replaced by a wildcard
  4. the catch-all SNI "*"
  5. the default certificate (ssl_cert, or the one made at first start)
A handshake without SNI gets the default certificate directly (Kong does not consult "*"
then). Names are compared in lower case: DNS names are case-insensitive (RFC 4343), so
``API.Example.com`` finds ``api.example.com``.

Pure: the values are whatever the caller maps names to (SSL contexts in the data plane).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Generic, TypeVar

__all__ = ["SniIndex", "candidates"]

T = TypeVar("T")


def candidates(server_name: str) -> list[str]:
    """The names to look up for ``server_name``, in Kong's order (without the default)."""
    name = server_name.lower()
    out = [name]
    labels = name.split(".")
    if "*" not in name:
        if len(labels) >= 3 and all(labels):
            out.append("*." + ".".join(labels[1:]))
        if len(labels) >= 2 and labels[-2]:
            out.append(".".join(labels[:-1]) + ".*")
    out.append("*")
    return out


class SniIndex(Generic[T]):
    """Server names (as configured: exact or wildcard) -> value, and the default."""

    __slots__ = ("_names", "default")

    def __init__(self, names: Mapping[str, T], default: T) -> None:
        self._names = {name.lower(): value for name, value in names.items()}
        self.default = default

    def __len__(self) -> int:
        return len(self._names)

    def lookup(self, server_name: str | None) -> T:
        if not server_name:
            return self.default
        names = self._names
        if not names:
            return self.default
        for name in candidates(server_name):
            value = names.get(name)
            if value is not None:
                return value
        return self.default
