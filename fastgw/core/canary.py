"""Canary releases: Kong Enterprise's ``canary`` plugin, executed by the data plane.

A route (or a service: the route's own plugin wins, as in Kong) with an enabled
``canary`` plugin gets a ``CanaryBalancer`` in place of its service's balancer. Routes
without one are untouched: the plugin costs them nothing.

Which side a request takes (``goes_to_canary``, pure, ``now`` passed in):
1. The override header (``canary_by_header_name``): ``always`` -> canary, ``never`` ->
   stable. Kong's default is no header; ``X-Canary`` is the usual choice.
2. ``hash`` picks the client key: ``consumer`` (the consumer an auth plugin identified;
   without one, the client IP, Kong's documented fallback order), ``ip``, ``header``
   (``hash_header``; missing -> IP), ``cookie`` (fastgw: ``hash_cookie``; missing ->
   IP), ``none`` (random per request). ``allow``/``deny`` select by the consumer's ACL
   groups: ``allow`` sends the consumers in one of ``groups`` to the canary, ``deny``
   everyone else (a request without a consumer is in no group).
3. The key lands in one of ``steps`` buckets (a stable 64-bit hash, the same in every
   worker and node). Percentage mode: buckets ``< steps * percentage / 100`` go to the
   canary, so 0.1% resolution needs ``steps >= 1000`` (the default). Time mode
   (``percentage`` unset): ``floor((now - start) * steps / duration)`` buckets, moving
   from 0 to all of them in ``steps`` increments over ``duration`` seconds. A key keeps
   its side while the share only grows: a client that reached the canary stays there.
4. ``upstream_fallback``: if the canary side has no available target, use the stable one.

The canary side is ``upstream_host`` (an Upstream name, or a host with ``upstream_port``,
default the service's port) and/or ``upstream_uri`` (replaces the upstream path; the
query string is kept). Retries stay on the side of the first try.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from hashlib import blake2b
from math import floor
from typing import Any, Mapping, Sequence

from fastgw.core.balancer import cookie_value

__all__ = ["CanaryConfig", "bucket", "canary_buckets", "client_key", "goes_to_canary",
           "override_value"]

ALWAYS, NEVER = "always", "never"


@dataclass(frozen=True, slots=True)
class CanaryConfig:
    percentage: float | None = None
    start: float | None = None
    duration: float = 3600.0
    steps: int = 1000
    hash: str = "consumer"
    hash_header: str | None = None
    hash_cookie: str | None = None
    override_header: bytes | None = None  # lower-cased canary_by_header_name
    groups: tuple[str, ...] = ()  # ACL groups (hash allow / deny)
    upstream_host: str | None = None
    upstream_port: int | None = None
    upstream_uri: str | None = None
    upstream_fallback: bool = False

    @classmethod
    def from_plugin(cls, config: Mapping[str, Any]) -> CanaryConfig:
        override = config.get("canary_by_header_name")
        pct = config.get("percentage")
        return cls(
            percentage=None if pct is None else float(pct),
            start=None if config.get("start") is None else float(config["start"]),
            duration=float(config.get("duration") or 3600),
            steps=max(1, int(config.get("steps") or 1000)),
            hash=str(config.get("hash") or "consumer"),
            hash_header=(config.get("hash_header") or "").lower() or None,
            hash_cookie=config.get("hash_cookie") or None,
            override_header=override.lower().encode("latin-1") if override else None,
            groups=tuple(config.get("groups") or ()),
            upstream_host=config.get("upstream_host") or None,
            upstream_port=config.get("upstream_port"),
            upstream_uri=config.get("upstream_uri") or None,
            upstream_fallback=bool(config.get("upstream_fallback")),
        )


def bucket(key: str, steps: int) -> int:
    """Stable bucket of a client key in ``[0, steps)`` (not Python's salted ``hash``)."""
    digest = blake2b(key.encode("utf-8", "surrogateescape"), digest_size=8).digest()
    return int.from_bytes(digest, "big") % steps


def canary_buckets(cfg: CanaryConfig, now: float) -> float:
    """How many of the ``steps`` buckets go to the canary at ``now``."""
    steps = cfg.steps
    if cfg.percentage is not None:
        return steps * cfg.percentage / 100.0
    start = cfg.start if cfg.start is not None else now
    if now <= start or cfg.duration <= 0:
        return 0.0 if cfg.duration > 0 else float(steps)
    return float(min(steps, floor((now - start) * steps / cfg.duration)))


def goes_to_canary(cfg: CanaryConfig, key: str | None, now: float,
                   override: str | None = None, groups: Sequence[str] | None = None) -> bool:
    """The decision for one request (see the module docstring for the rules)."""
    if override is not None:
        value = override.strip().lower()
        if value == ALWAYS:
            return True
        if value == NEVER:
            return False
    if cfg.hash in ("allow", "deny"):
        member = any(g in cfg.groups for g in groups or ())
        return member if cfg.hash == "allow" else not member
    limit = canary_buckets(cfg, now)
    if limit <= 0:
        return False
    if limit >= cfg.steps:
        return True
    b = random.randrange(cfg.steps) if key is None else bucket(key, cfg.steps)
    return b < limit


def client_key(cfg: CanaryConfig, headers: Sequence[tuple[bytes, bytes, bytes]],
               client_ip: str, consumer_id: str | None = None) -> str | None:
    """The request's client key for ``hash`` (rule 2); ``headers`` as (lower name, name,
    value). None: random per request (``hash: none``)."""
    kind = cfg.hash
    if kind == "none":
        return None
    if kind == "consumer" and consumer_id is not None:
        return consumer_id
    wanted: bytes | None = None
    if kind == "header" and cfg.hash_header:
        wanted = cfg.hash_header.encode("latin-1")
    elif kind == "cookie" and cfg.hash_cookie:
        wanted = b"cookie"
    if wanted is not None:
        values = [v for lname, _, v in headers if lname == wanted]
        if values:
            text = b", ".join(values).decode("latin-1")
            if kind == "header":
                return text
            found = cookie_value(text.replace(",", ";"), cfg.hash_cookie or "")
            if found:
                return found
    return client_ip  # consumer, ip, and every missing value


def override_value(cfg: CanaryConfig, headers: Sequence[tuple[bytes, bytes, bytes]]) -> str | None:
    """The value of the override header (rule 1), if configured and present."""
    name = cfg.override_header
    if name is not None:
        for lname, _, value in headers:
            if lname == name:
                return value.decode("latin-1")
    return None
