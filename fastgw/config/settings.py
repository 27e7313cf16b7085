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
from fastgw.config.listeners import ListenAddress, parse_listen, parse_listeners


__all__ = ["GatewaySettings", "load_settings", "parse_listen", "ENV_PREFIX", "settings_to_dict",
           "SETTING_NAMES", "CIPHER_SUITES", "TLS_VERSIONS"]

ENV_PREFIX = "FASTGW_"

_Net = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, slots=True, kw_only=True)
class GatewaySettings:
    # Kong's listen syntax (fastgw.config.listeners): entries separated by commas, "ssl"
    # makes one terminate TLS. "off" disables the admin and status listeners.
    proxy_listen: str = "0.0.0.0:8000, 0.0.0.0:8443 ssl"
    admin_listen: str = "127.0.0.1:8001"
    status_listen: str = "127.0.0.1:8100"
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
    # proxy-cache's memory strategy: bytes of cached responses each worker keeps (an LRU;
    # Kong's shared dict, kong_db_cache, is its mem_cache_size: 128m for the whole node).
    proxy_cache_size: int = 64 << 20
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
    # Kong's admin_gui_url: where the admin GUI (Kong Manager) is served from. Its origins
    # are the only ones the Admin API's CORS answers allow; empty allows any origin (Kong's).
    admin_gui_url: tuple[str, ...] = ()
    access_log: str | None = None
    access_log_format: Literal["fastgw", "kong"] = "fastgw"  # kong: Kong's log serializer
    access_log_redact: bool = True  # credentials (authorization, cookie, apikey...) redacted
    # Kong's `headers` / `headers_upstream`: what the gateway adds (core.http.gateway_fields)
    headers: tuple[str, ...] = DEFAULT_HEADERS
    headers_upstream: tuple[str, ...] = DEFAULT_HEADERS_UPSTREAM
    tracing: Literal["w3c", "off"] = "w3c"  # traceparent continued or started upstream
    metrics_prefix: str = "fastgw"  # Prometheus metric name prefix ("kong" for Kong dashboards)
    # TLS at the edge (Kong's names). Without ssl_cert/ssl_cert_key, a self-signed default
    # certificate is made at first start and kept beside the config file.
    ssl_cert: str | None = None
    ssl_cert_key: str | None = None
    admin_ssl_cert: str | None = None  # None: the default certificate
    admin_ssl_cert_key: str | None = None
    status_ssl_cert: str | None = None
    status_ssl_cert_key: str | None = None
    ssl_protocols: str = "TLSv1.2 TLSv1.3"
    ssl_cipher_suite: str = "intermediate"  # Mozilla's "intermediate" list (or modern, custom)
    ssl_ciphers: str | None = None  # OpenSSL cipher list for ssl_cipher_suite "custom"
    ssl_session_tickets: bool = True
    ssl_session_timeout: float = 86400  # seconds (Kong: 1d)
    # TLS to backends: a service's tls_verify / tls_verify_depth when they are null, and
    # the CAs trusted when it names no ca_certificates ("system" or a PEM file).
    upstream_tls_verify: bool = False  # Kong's default (nginx proxy_ssl_verify off)
    upstream_tls_verify_depth: int = 1  # nginx proxy_ssl_verify_depth
    upstream_tls_trusted_certificate: str = "system"
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

    def listeners(self, name: str) -> tuple[ListenAddress, ...]:
        """The entries of a listen setting (``proxy``, ``admin`` or ``status``)."""
        return parse_listeners(getattr(self, f"{name}_listen"))

    @property
    def tls_versions(self) -> tuple[str, ...]:
        """``ssl_protocols`` as a tuple, ``modern`` meaning TLS 1.3 only (as Kong)."""
        if self.ssl_cipher_suite == "modern":
            return ("TLSv1.3",)
        return tuple(self.ssl_protocols.split())

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
             "max_header_count", "client_body_buffer_size", "keepalive_requests",
             "proxy_cache_size")
_INTS_NONNEG = ("upstream_keepalive_max_requests", "max_body_size", "upstream_tls_verify_depth")
_FLOATS = (
    "upstream_keepalive_idle_timeout",
    "client_header_timeout",
    "client_body_timeout",
    "client_keepalive_timeout",
    "drain_timeout",
    "lingering_time",
    "lingering_timeout",
    "ssl_session_timeout",
    "worker_heartbeat_timeout",
)
_OPT_STRS = ("admin_token", "access_log", "client_body_temp_path", "ssl_cert", "ssl_cert_key",
             "admin_ssl_cert", "admin_ssl_cert_key", "status_ssl_cert", "status_ssl_cert_key",
             "ssl_ciphers")
_BOOLS = ("metrics", "underscores_in_headers", "allow_trace", "access_log_redact",
          "ssl_session_tickets", "upstream_tls_verify")
_CHOICES: dict[str, tuple[str, ...]] = {"access_log_format": ("fastgw", "kong"),
                                        "tracing": ("w3c", "off"),
                                        "ssl_cipher_suite": ("modern", "intermediate", "custom")}
# TLS versions fastgw speaks; older ones are deprecated (RFC 8996) and refused.
TLS_VERSIONS = ("TLSv1.2", "TLSv1.3")
# Mozilla's server-side TLS recommendations (https://wiki.mozilla.org/Security/Server_Side_TLS,
# configuration generator version 5.7), as Kong's ssl_cipher_suite; "custom" uses ssl_ciphers.
# The TLS 1.3 suites are OpenSSL's defaults, which are the same as Mozilla's.
CIPHER_SUITES = {
    "modern": "",  # TLS 1.3 only: no TLS 1.2 cipher list
    "intermediate": "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
                    "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"
                    "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305:"
                    "DHE-RSA-AES128-GCM-SHA256:DHE-RSA-AES256-GCM-SHA384:"
                    "DHE-RSA-CHACHA20-POLY1305",
}
_BOOL_WORDS = {"true": True, "on": True, "1": True, "false": False, "off": False, "0": False}
_METRIC_PREFIX_RE = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")


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
            parse_listeners(raw)
        except ValueError as e:
            return None, str(e)
        return raw.strip(), None
    if key == "ssl_protocols":
        words = raw.split() if isinstance(raw, str) else []
        if not words:
            return None, "expected TLS versions separated by spaces (TLSv1.2 TLSv1.3)"
        for word in words:
            if word not in TLS_VERSIONS:
                return None, (f"'{word}' is not supported: fastgw speaks " + " and ".join(
                    TLS_VERSIONS) + " (older versions are deprecated, RFC 8996)")
        return " ".join(v for v in TLS_VERSIONS if v in words), None
    if key == "upstream_tls_trusted_certificate":
        if not isinstance(raw, str) or not raw.strip():
            return None, "expected 'system' or the path of a PEM file"
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
    if key == "admin_gui_url":
        return _gui_urls(raw)
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


_GUI_URL_RE = re.compile(r"^https?://[^/\s?#]+(?:/\S*)?$", re.IGNORECASE)


def _gui_urls(raw: Any) -> tuple[Any, str | None]:
    """Kong's ``admin_gui_url``: one URL or a comma-separated list of http(s) URLs."""
    if raw is None:
        return (), None
    items = _string_list(raw)
    if items is None:
        return None, "expected a URL or an array of URLs"
    for url in items:
        if not _GUI_URL_RE.match(url):
            return None, f"invalid URL '{url}', expected http://host[:port][/path]"
    return tuple(items), None


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
    errors += _tls_errors(values, path)
    if errors:
        raise ConfigError(errors)
    return GatewaySettings(**values)


def _tls_errors(values: Mapping[str, Any], path: str) -> list[tuple[str, str]]:
    """Settings that only make sense together."""
    errors = []
    for prefix in ("", "admin_", "status_"):
        cert, key = values.get(f"{prefix}ssl_cert"), values.get(f"{prefix}ssl_cert_key")
        if cert is not None and key is None:
            errors.append((f"{path}.{prefix}ssl_cert_key",
                           f"required when {prefix}ssl_cert is set"))
        elif key is not None and cert is None:
            errors.append((f"{path}.{prefix}ssl_cert",
                           f"required when {prefix}ssl_cert_key is set"))
    if values.get("ssl_cipher_suite") == "custom" and not values.get("ssl_ciphers"):
        errors.append((f"{path}.ssl_ciphers", "required when ssl_cipher_suite is 'custom'"))
    depth = values.get("upstream_tls_verify_depth")
    if isinstance(depth, int) and depth > 64:
        errors.append((f"{path}.upstream_tls_verify_depth", "value should be between 0 and 64"))
    return errors


def settings_to_dict(s: GatewaySettings) -> dict[str, Any]:
    """JSON shape of the ``gateway`` section (all fields, for persistence)."""
    out: dict[str, Any] = {}
    for k in _FIELD_NAMES:
        v = getattr(s, k)
        out[k] = list(v) if isinstance(v, tuple) else v
    return out
