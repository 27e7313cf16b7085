"""Node settings: the top-level ``"gateway"`` key of config.json.

Precedence (highest first): CLI overrides > ``FASTGW_<KEY>`` environment variables >
the file's ``gateway`` section > defaults. Values coming from the environment or the CLI
may be strings and are parsed to the field's type. No I/O: ``env`` is passed in.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field, fields
from typing import Any, Literal, Mapping

from fastgw.config.errors import ConfigError
from fastgw.core.http.gateway_fields import (
    DEFAULT_HEADERS,
    DEFAULT_HEADERS_UPSTREAM,
    parse_tokens,
)


__all__ = ["GatewaySettings", "load_settings", "parse_listen", "ENV_PREFIX", "settings_to_dict",
           "SETTING_NAMES"]

ENV_PREFIX = "FASTGW_"

_Net = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, slots=True, kw_only=True)
class GatewaySettings:
    proxy_listen: str = "0.0.0.0:8000"
    admin_listen: str = "127.0.0.1:8001"  # "off" disables the listener
    status_listen: str = "127.0.0.1:8100"  # "off" disables the listener
    workers: int | Literal["auto"] = "auto"
    trusted_ips: tuple[str, ...] = ()
    upstream_keepalive_pool_size: int = 512
    upstream_keepalive_max_requests: int = 10000
    upstream_keepalive_idle_timeout: float = 60
    max_request_line_size: int = 8192  # 414 beyond
    max_header_size: int = 32768  # total header bytes; 431 beyond
    max_header_count: int = 100  # fields per request head; 431 beyond
    max_body_size: int = 0  # 0 = unlimited (Kong's client_max_body_size); else 413
    client_body_buffer_size: int = 8192  # request body bytes in memory, then a temp file
    client_body_temp_path: str | None = None  # None: <system temp>/fastgw-client-body
    keepalive_requests: int = 1000  # requests per client connection (nginx's default)
    underscores_in_headers: bool = False  # off: fields with "_" are dropped (nginx)
    allow_trace: bool = False  # off: TRACE gets 405
    lingering_time: float = 30  # nginx: how long a closing connection reads what comes
    lingering_timeout: float = 5  # nginx: the longest wait for more while lingering
    client_header_timeout: float = 60
    client_body_timeout: float = 60
    client_keepalive_timeout: float = 75
    drain_timeout: float = 30
    # Seconds a worker may go without a heartbeat before the supervisor reports it, takes
    # it out of readiness and replaces it (SIGKILL, respawn); 0 turns the watchdog off.
    worker_heartbeat_timeout: float = 5
    admin_token: str | None = None
    access_log: str | None = None
    access_log_format: Literal["fastgw", "kong"] = "fastgw"  # kong: Kong's log serializer
    access_log_redact: bool = True  # credentials (authorization, cookie, apikey...) redacted
    # Kong's `headers` / `headers_upstream`: what the gateway adds (core.http.gateway_fields)
    headers: tuple[str, ...] = DEFAULT_HEADERS
    headers_upstream: tuple[str, ...] = DEFAULT_HEADERS_UPSTREAM
    tracing: Literal["w3c", "off"] = "w3c"  # traceparent continued or started upstream
    metrics_prefix: str = "fastgw"  # Prometheus metric name prefix ("kong" for Kong dashboards)
    # Per-request counting for /metrics. Off only to measure what counting costs (the
    # benchmark's metrics-on/off comparison) or where nothing scrapes the node.
    metrics: bool = True
    # Kong's `plugins` property: the plugins this node runs. "bundled" is every plugin
    # fastgw implements (fastgw.config.plugins); "off" none; names may follow "bundled".
    plugins: tuple[str, ...] = ("bundled",)
    # Parsed form of trusted_ips, derived in __post_init__ (not part of identity).
    _networks: tuple[_Net, ...] = field(default=(), init=False, repr=False, compare=False)
    _trust_all: bool = field(default=False, init=False, repr=False, compare=False)
    _trust_unix: bool = field(default=False, init=False, repr=False, compare=False)
    # Peer IPs repeat a lot (keep-alive, LB health checks): memoize the verdicts.
    _cache: dict[str, bool] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        nets: list[_Net] = []
        unix = False
        for item in self.trusted_ips:
            if item == "unix:":
                unix = True
                continue
            nets.append(ipaddress.ip_network(item, strict=False))
        v4_all = any(n.version == 4 and n.prefixlen == 0 for n in nets)
        v6_all = any(n.version == 6 and n.prefixlen == 0 for n in nets)
        object.__setattr__(self, "_networks", tuple(nets))
        object.__setattr__(self, "_trust_all", v4_all and v6_all)
        object.__setattr__(self, "_trust_unix", unix)

    @property
    def worker_heartbeat_interval(self) -> float:
        """Seconds between a worker's heartbeats: four per watchdog timeout (one late beat
        is no alarm), at most one a second (scrapes use them to skip silent workers)."""
        timeout = float(self.worker_heartbeat_timeout)
        return min(1.0, timeout / 4) if timeout > 0 else 1.0

    def is_trusted(self, ip: str) -> bool:
        """Whether a peer address may set X-Forwarded-* (Kong ``trusted_ips``).

        ``ip`` may be an IPv4/IPv6 literal, ``"unix:"`` (or any unix socket path
        starting with it), or empty. Unparseable input is never trusted.
        """
        hit = self._cache.get(ip)
        if hit is None:
            if len(self._cache) >= 4096:
                self._cache.clear()  # bounded; cheap to rebuild
            hit = self._cache[ip] = self._check(ip)
        return hit

    def _check(self, ip: str) -> bool:
        if not self._networks:
            return self._trust_unix and ip.startswith("unix:")
        if self._trust_all:
            return not ip.startswith("unix:") or self._trust_unix
        if ip.startswith("unix:"):
            return self._trust_unix
        try:
            addr = ipaddress.ip_address(ip)
        except ValueError:
            return False
        if addr.version == 6 and addr.ipv4_mapped is not None:
            addr = addr.ipv4_mapped  # "::ffff:10.0.0.1" behaves like 10.0.0.1
        return any(addr in n for n in self._networks if n.version == addr.version)


_FIELD_NAMES: tuple[str, ...] = tuple(f.name for f in fields(GatewaySettings) if f.init)
SETTING_NAMES = _FIELD_NAMES  # every node setting (the CLI derives its flags from these)
_LISTENS = ("proxy_listen", "admin_listen", "status_listen")
_INTS_POS = ("upstream_keepalive_pool_size", "max_request_line_size", "max_header_size",
             "max_header_count", "client_body_buffer_size", "keepalive_requests")
_INTS_NONNEG = ("upstream_keepalive_max_requests", "max_body_size")
_FLOATS = (
    "upstream_keepalive_idle_timeout",
    "client_header_timeout",
    "client_body_timeout",
    "client_keepalive_timeout",
    "drain_timeout",
    "lingering_time",
    "lingering_timeout",
    "worker_heartbeat_timeout",
)
_OPT_STRS = ("admin_token", "access_log", "client_body_temp_path")
_BOOLS = ("metrics", "underscores_in_headers", "allow_trace", "access_log_redact")
_CHOICES: dict[str, tuple[str, ...]] = {"access_log_format": ("fastgw", "kong"),
                                        "tracing": ("w3c", "off")}
_BOOL_WORDS = {"true": True, "on": True, "1": True, "false": False, "off": False, "0": False}
_METRIC_PREFIX_RE = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")

_LISTEN_RE = re.compile(r"^(?:\[([0-9A-Fa-f:.]+)\]|([^\s:\[\]]+)):(\d{1,5})$")


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


def _parse_bool_free_int(v: Any) -> int | None:
    if isinstance(v, bool):
        return None
    if isinstance(v, int):
        return v
    if isinstance(v, float) and v.is_integer():
        return int(v)
    if isinstance(v, str):
        try:
            return int(v.strip())
        except ValueError:
            return None
    return None


def _parse_number(v: Any) -> float | int | None:
    if isinstance(v, bool):
        return None
    if isinstance(v, (int, float)):
        return v
    if isinstance(v, str):
        try:
            f = float(v.strip())
        except ValueError:
            return None
        return int(f) if f.is_integer() else f
    return None


def _string_list(raw: Any) -> list[str] | None:
    """A list setting: an array of strings, or one comma-separated string (env, CLI)."""
    if isinstance(raw, str):
        return [s.strip() for s in raw.split(",") if s.strip()]
    if isinstance(raw, (list, tuple)) and all(isinstance(s, str) for s in raw):
        return [s.strip() for s in raw]
    return None


def _coerce(key: str, raw: Any) -> tuple[Any, str | None]:
    """Parse one setting value; returns (value, error message or None)."""
    if key in _LISTENS:
        if not isinstance(raw, str):
            return None, "expected a string"
        if raw.strip() == "off" and key != "proxy_listen":
            return "off", None
        try:
            parse_listen(raw)
        except ValueError as e:
            return None, str(e)
        return raw.strip(), None
    if key == "workers":
        if isinstance(raw, str) and raw.strip() == "auto":
            return "auto", None
        n = _parse_bool_free_int(raw)
        if n is None or n < 1:
            return None, "expected a positive integer or 'auto'"
        return n, None
    if key in _INTS_POS or key in _INTS_NONNEG:
        n = _parse_bool_free_int(raw)
        if n is None:
            return None, "expected an integer"
        lo = 1 if key in _INTS_POS else 0
        if n < lo:
            return None, f"value should be at least {lo}"
        return n, None
    if key in _FLOATS:
        x = _parse_number(raw)
        if x is None:
            return None, "expected a number"
        if x < 0:
            return None, "value should be at least 0"
        return x, None
    if key == "trusted_ips":
        items = _string_list(raw)
        if items is None:
            return None, "expected an array of IP addresses or CIDR ranges"
        for s in items:
            if s == "unix:":
                continue
            try:
                ipaddress.ip_network(s, strict=False)
            except ValueError:
                return None, f"invalid IP address or CIDR range: '{s}'"
        return tuple(items), None
    if key == "plugins":
        items = _string_list(raw)
        if items is None:
            return None, "expected an array of plugin names ('bundled', 'off' or names)"
        if "off" in items and len(items) > 1:
            return None, "'off' cannot be combined with other values"
        return tuple(items), None  # names are checked against fastgw.config.plugins
    if key in ("headers", "headers_upstream"):
        if not isinstance(raw, (str, list, tuple)):
            return None, "expected a comma-separated string or an array of strings"
        try:
            return parse_tokens(raw, upstream=key == "headers_upstream"), None
        except ValueError as exc:
            return None, str(exc)
    if key in _CHOICES:
        if raw not in _CHOICES[key]:
            return None, "expected one of: " + ", ".join(_CHOICES[key])
        return raw, None
    if key in _BOOLS:
        if isinstance(raw, bool):
            return raw, None
        if isinstance(raw, str) and raw.lower() in _BOOL_WORDS:
            return _BOOL_WORDS[raw.lower()], None
        return None, "expected a boolean"
    if key == "metrics_prefix":
        if not isinstance(raw, str) or not _METRIC_PREFIX_RE.match(raw):
            return None, "expected a Prometheus name prefix ([a-zA-Z_][a-zA-Z0-9_]*)"
        return raw, None
    if key in _OPT_STRS:
        if raw is None:
            return None, None
        if not isinstance(raw, str):
            return None, "expected a string"
        # Env/CLI cannot express JSON null; "off"/"" mean unset.
        return (None if raw in ("", "off") else raw), None
    return None, "unknown field"  # pragma: no cover - keys are pre-filtered


def load_settings(
    section: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
    *,
    path: str = "gateway",
) -> GatewaySettings:
    """Merge defaults < file ``section`` < ``env`` < ``overrides``; collect all errors.

    Raises ConfigError with paths like ``gateway.proxy_listen``.
    """
    errors: list[tuple[str, str]] = []
    values: dict[str, Any] = {}
    if section is not None and not isinstance(section, Mapping):
        raise ConfigError([(path, "expected a record")])
    layers: list[tuple[str, Mapping[str, Any]]] = []
    if section:
        for k in section:
            if k not in _FIELD_NAMES and not (isinstance(k, str) and k.startswith("_")):
                errors.append((f"{path}.{k}", "unknown field"))
        layers.append(("", {k: v for k, v in section.items() if k in _FIELD_NAMES}))
    if env:
        from_env = {}
        for k in _FIELD_NAMES:
            ev = env.get(ENV_PREFIX + k.upper())
            if ev is not None:
                from_env[k] = ev
        layers.append(("environment variable", from_env))
    if overrides:
        for k in overrides:
            if k not in _FIELD_NAMES:
                errors.append((f"{path}.{k}", "unknown field (command line override)"))
        layers.append(("command line override", {k: v for k, v in overrides.items()
                                                  if k in _FIELD_NAMES and v is not None}))
    for origin, layer in layers:
        for k, raw in layer.items():
            val, err = _coerce(k, raw)
            if err:
                where = f" (from {ENV_PREFIX + k.upper()})" if origin == "environment variable" \
                    else (f" (from {origin})" if origin else "")
                errors.append((f"{path}.{k}", err + where))
            else:
                values[k] = val
    if errors:
        raise ConfigError(errors)
    return GatewaySettings(**values)


def settings_to_dict(s: GatewaySettings) -> dict[str, Any]:
    """JSON shape of the ``gateway`` section (all fields, for persistence)."""
    out: dict[str, Any] = {}
    for k in _FIELD_NAMES:
        v = getattr(s, k)
        out[k] = list(v) if isinstance(v, tuple) else v
    return out
