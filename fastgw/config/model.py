"""Immutable configuration entities, named and defaulted exactly like Kong 3.x.

Everything here is pure data: frozen, slotted dataclasses that the router, balancer,
proxy and admin API share. Collections are tuples (hashable, cheap to share between
snapshots); the few free-form sub-documents (route headers, upstream healthchecks,
plugin config) are plain dicts that must be treated as read-only.

Validation and defaulting of *input* documents lives in ``validate.py``; the defaults
below are the same values so that entities built directly in code behave identically.
"""

from __future__ import annotations

import copy
import ipaddress
import re
import time
import uuid
from dataclasses import dataclass, field, fields
from typing import Any
from urllib.parse import urlsplit

from fastgw.config.settings import GatewaySettings

__all__ = [
    "Service",
    "Route",
    "Upstream",
    "Target",
    "Consumer",
    "Plugin",
    "Certificate",
    "SNI",
    "CACertificate",
    "Config",
    "Entity",
    "DEFAULT_HEALTHCHECKS",
    "DEFAULT_TARGET_PORT",
    "default_healthchecks",
    "new_id",
    "now_s",
    "now_ms",
    "entity_to_dict",
    "parse_service_url",
    "PROTOCOLS",
    "SERVICE_PROTOCOLS",
    "HASH_ON",
    "ALGORITHMS",
    "normalize_host",
    "normalize_target",
    "normalize_path",
    "path_chars_error",
    "pcre_to_python",
    "uuid_error",
    "name_error",
    "tag_error",
    "host_error",
    "route_host_error",
    "path_error",
    "router_path_error",
    "header_name_error",
    "route_header_name_error",
    "method_error",
    "upstream_name_error",
    "cookie_name_error",
    "target_error",
    "sni_error",
    "cidr_error",
    "CREDENTIAL_FIELDS",
]

DEFAULT_TARGET_PORT = 8000  # kong/db/dao/targets.lua DEFAULT_PORT

# Kong's healthchecks record, all defaults filled (kong.md §4, upstreams.lua), plus
# fastgw's own fields (see fastgw/health.py and docs/traffic.md): ``panic_threshold``
# (percent, 0 = off), ``slow_start`` (seconds, 0 = off), and the passive side's
# ``base_ejection_time``/``max_ejection_time`` (seconds; base 0 = Kong: no timed return).
DEFAULT_HEALTHCHECKS: dict[str, Any] = {
    "threshold": 0,
    "panic_threshold": 0,
    "slow_start": 0,
    "active": {
        "type": "http",
        "timeout": 1,
        "concurrency": 10,
        "http_path": "/",
        "https_sni": None,
        "https_verify_certificate": True,
        "headers": None,
        "healthy": {"interval": 0, "successes": 0, "http_statuses": [200, 302]},
        "unhealthy": {
            "interval": 0,
            "http_failures": 0,
            "tcp_failures": 0,
            "timeouts": 0,
            "http_statuses": [429, 404, 500, 501, 502, 503, 504, 505],
        },
    },
    "passive": {
        "type": "http",
        "base_ejection_time": 30,
        "max_ejection_time": 300,
        "healthy": {
            "successes": 0,
            "http_statuses": [200, 201, 202, 203, 204, 205, 206, 207, 208, 226,
                              300, 301, 302, 303, 304, 305, 306, 307, 308],
        },
        "unhealthy": {
            "http_failures": 0,
            "tcp_failures": 0,
            "timeouts": 0,
            "http_statuses": [429, 500, 503],
        },
    },
}


def default_healthchecks() -> dict[str, Any]:
    """A fresh deep copy, so callers can never mutate the shared default."""
    return copy.deepcopy(DEFAULT_HEALTHCHECKS)


def new_id() -> str:
    return str(uuid.uuid4())


def now_s() -> int:
    # Kong auto_timestamp_s: integer epoch seconds.
    return int(time.time())


def now_ms() -> float:
    # Kong auto_timestamp_ms (targets): float seconds with millisecond precision.
    return round(time.time(), 3)


PROTOCOLS: tuple[str, ...] = ("grpc", "grpcs", "http", "https", "tcp", "tls", "tls_passthrough", "udp", "ws", "wss")
SERVICE_PROTOCOLS: tuple[str, ...] = PROTOCOLS  # typedefs.protocol: the same list for services and routes
HASH_ON: tuple[str, ...] = ("none", "consumer", "ip", "header", "cookie", "path", "query_arg", "uri_capture")
ALGORITHMS: tuple[str, ...] = ("consistent-hashing", "least-connections", "round-robin", "latency",
              "sticky-sessions")


def parse_service_url(url: str) -> dict[str, Any]:
    """Kong's services ``url`` shorthand -> protocol/host/port/path."""
    try:
        u = urlsplit(url)
        port = u.port
    except ValueError:
        return {"host": None}
    proto = u.scheme or ("https" if port == 443 else "http")
    if port is None:
        port = 443 if proto == "https" else 80
    host = u.hostname
    if host and ":" in host:
        host = f"[{host}]"
    return {"protocol": proto, "host": host, "port": port, "path": u.path or None}


@dataclass(frozen=True, slots=True, kw_only=True)
class Service:
    id: str = field(default_factory=new_id)
    name: str | None = None
    protocol: str = "http"
    host: str
    port: int = 80
    path: str | None = None
    retries: int = 5
    connect_timeout: int = 60000
    write_timeout: int = 60000
    read_timeout: int = 60000
    enabled: bool = True
    tags: tuple[str, ...] | None = None
    created_at: int = field(default_factory=now_s)
    updated_at: int = field(default_factory=now_s)
    tls_verify: bool | None = None
    tls_verify_depth: int | None = None
    client_certificate: str | None = None  # certificate id
    ca_certificates: tuple[str, ...] | None = None
    # Fields Kong has and fastgw does not implement (and `_comment`-style keys),
    # kept verbatim so that every write and restart gives them back (DESIGN.md).
    extra: dict[str, Any] = field(default_factory=dict, hash=False)


@dataclass(frozen=True, slots=True, kw_only=True)
class Route:
    id: str = field(default_factory=new_id)
    name: str | None = None
    protocols: tuple[str, ...] = ("http", "https")
    methods: tuple[str, ...] | None = None
    hosts: tuple[str, ...] | None = None
    paths: tuple[str, ...] | None = None
    # lower-cased header name -> accepted values (keys ANDed, values ORed)
    headers: dict[str, tuple[str, ...]] | None = None
    snis: tuple[str, ...] | None = None
    sources: tuple[dict[str, Any], ...] | None = None
    destinations: tuple[dict[str, Any], ...] | None = None
    https_redirect_status_code: int = 426
    strip_path: bool = True
    preserve_host: bool = False
    regex_priority: int = 0
    path_handling: str = "v0"
    request_buffering: bool = True
    response_buffering: bool = True
    service: str | None = None  # service id
    tags: tuple[str, ...] | None = None
    created_at: int = field(default_factory=now_s)
    updated_at: int = field(default_factory=now_s)
    # Fields Kong has and fastgw does not implement (and `_comment`-style keys),
    # kept verbatim so that every write and restart gives them back (DESIGN.md).
    extra: dict[str, Any] = field(default_factory=dict, hash=False)


@dataclass(frozen=True, slots=True, kw_only=True)
class Upstream:
    id: str = field(default_factory=new_id)
    name: str
    algorithm: str = "round-robin"
    hash_on: str = "none"
    hash_fallback: str = "none"
    hash_on_header: str | None = None
    hash_fallback_header: str | None = None
    hash_on_cookie: str | None = None
    hash_on_cookie_path: str = "/"
    hash_on_query_arg: str | None = None
    hash_fallback_query_arg: str | None = None
    hash_on_uri_capture: str | None = None
    hash_fallback_uri_capture: str | None = None
    slots: int = 10000
    healthchecks: dict[str, Any] = field(default_factory=default_healthchecks)
    host_header: str | None = None
    client_certificate: str | None = None
    use_srv_name: bool = False
    tags: tuple[str, ...] | None = None
    created_at: int = field(default_factory=now_s)
    updated_at: int = field(default_factory=now_s)
    # Fields Kong has and fastgw does not implement (and `_comment`-style keys),
    # kept verbatim so that every write and restart gives them back (DESIGN.md).
    extra: dict[str, Any] = field(default_factory=dict, hash=False)


@dataclass(frozen=True, slots=True, kw_only=True)
class Target:
    id: str = field(default_factory=new_id)
    upstream: str  # upstream id
    target: str  # normalized "host:port" / "[v6]:port"
    weight: int = 100
    tags: tuple[str, ...] | None = None
    created_at: float = field(default_factory=now_ms)
    updated_at: float = field(default_factory=now_ms)
    # Fields Kong has and fastgw does not implement (and `_comment`-style keys),
    # kept verbatim so that every write and restart gives them back (DESIGN.md).
    extra: dict[str, Any] = field(default_factory=dict, hash=False)


@dataclass(frozen=True, slots=True, kw_only=True)
class Consumer:
    id: str = field(default_factory=new_id)
    username: str | None = None
    custom_id: str | None = None
    tags: tuple[str, ...] | None = None
    created_at: int = field(default_factory=now_s)
    updated_at: int = field(default_factory=now_s)
    # Credentials (fastgw.config.credentials), kept with their consumer; the Admin API
    # shows them as entities of their own, as Kong does.
    keyauth_credentials: tuple[Any, ...] = ()
    basicauth_credentials: tuple[Any, ...] = ()
    acls: tuple[Any, ...] = ()
    # Fields Kong has and fastgw does not implement (and `_comment`-style keys),
    # kept verbatim so that every write and restart gives them back (DESIGN.md).
    extra: dict[str, Any] = field(default_factory=dict, hash=False)


@dataclass(frozen=True, slots=True, kw_only=True)
class Plugin:
    id: str = field(default_factory=new_id)
    name: str
    instance_name: str | None = None
    route: str | None = None  # route id
    service: str | None = None  # service id
    consumer: str | None = None  # consumer id
    config: dict[str, Any] = field(default_factory=dict)
    protocols: tuple[str, ...] = ("grpc", "grpcs", "http", "https")
    enabled: bool = True
    tags: tuple[str, ...] | None = None
    created_at: int = field(default_factory=now_s)
    updated_at: int = field(default_factory=now_s)
    # Fields Kong has and fastgw does not implement (and `_comment`-style keys),
    # kept verbatim so that every write and restart gives them back (DESIGN.md).
    extra: dict[str, Any] = field(default_factory=dict, hash=False)


@dataclass(frozen=True, slots=True, kw_only=True)
class Certificate:
    """A certificate and its private key, PEM (Kong's ``certificates``); served to clients
    whose SNI matches one of its ``SNI`` entities, and as a client certificate to backends
    (``Service.client_certificate``). ``cert_alt``/``key_alt``: a second pair of another
    key type (RSA and ECDSA)."""

    id: str = field(default_factory=new_id)
    cert: str
    key: str
    cert_alt: str | None = None
    key_alt: str | None = None
    tags: tuple[str, ...] | None = None
    created_at: int = field(default_factory=now_s)
    updated_at: int = field(default_factory=now_s)
    extra: dict[str, Any] = field(default_factory=dict, hash=False)


@dataclass(frozen=True, slots=True, kw_only=True)
class SNI:
    """A server name (``example.com``, ``*.example.com``, ``example.*``) and the certificate
    served for it (Kong's ``snis``). Names are unique across workspaces."""

    id: str = field(default_factory=new_id)
    name: str
    certificate: str  # certificate id
    tags: tuple[str, ...] | None = None
    created_at: int = field(default_factory=now_s)
    updated_at: int = field(default_factory=now_s)
    extra: dict[str, Any] = field(default_factory=dict, hash=False)


@dataclass(frozen=True, slots=True, kw_only=True)
class CACertificate:
    """A CA certificate, PEM, trusted to verify backends (``Service.ca_certificates``)."""

    id: str = field(default_factory=new_id)
    cert: str
    cert_digest: str | None = None  # sha256 of the DER certificate, hex (computed)
    tags: tuple[str, ...] | None = None
    created_at: int = field(default_factory=now_s)
    updated_at: int = field(default_factory=now_s)
    extra: dict[str, Any] = field(default_factory=dict, hash=False)


Entity = Service | Route | Upstream | Target | Consumer | Plugin | Certificate | SNI | CACertificate


@dataclass(frozen=True, slots=True, kw_only=True)
class Config:
    # Version of the source document; entities always carry 3.0 semantics (2.x regex
    # paths are migrated on load), so it does not take part in equality.
    format_version: str = field(default="3.0", compare=False)
    services: tuple[Service, ...] = ()
    routes: tuple[Route, ...] = ()
    upstreams: tuple[Upstream, ...] = ()
    targets: tuple[Target, ...] = ()
    consumers: tuple[Consumer, ...] = ()
    plugins: tuple[Plugin, ...] = ()
    certificates: tuple[Certificate, ...] = ()
    snis: tuple[SNI, ...] = ()
    ca_certificates: tuple[CACertificate, ...] = ()
    gateway: GatewaySettings = field(default_factory=GatewaySettings)
    # Diagnostics, not configuration: excluded from equality so a dump/load round
    # trip (which may renumber paths) still compares equal.
    warnings: tuple[str, ...] = field(default=(), compare=False)
    # Top-level keys of the document fastgw does not implement (vaults,
    # consumer_groups, credentials, `_comment`, `_konnect`, ...), verbatim and in order.
    extra: dict[str, Any] = field(default_factory=dict, hash=False)

    # Small lookup helpers (linear; configs are small and these are not hot-path).
    def service(self, key: str) -> Service | None:
        """Service by id or name."""
        return _find(self.services, key, "name")

    def upstream(self, key: str) -> Upstream | None:
        """Upstream by id or name."""
        return _find(self.upstreams, key, "name")

    def route(self, key: str) -> Route | None:
        return _find(self.routes, key, "name")

    def consumer(self, key: str) -> Consumer | None:
        return _find(self.consumers, key, "username")

    def targets_for(self, upstream_id: str) -> tuple[Target, ...]:
        return tuple(t for t in self.targets if t.upstream == upstream_id)


def _find(items: tuple[Any, ...], key: str, alt: str) -> Any:
    for it in items:
        if it.id == key:
            return it
    for it in items:
        if getattr(it, alt) == key:
            return it
    return None


# Consumer fields that are entities of their own in Kong's Admin API.
CREDENTIAL_FIELDS = ("keyauth_credentials", "basicauth_credentials", "acls")
# Fields that Kong renders as foreign-key objects {"id": ...}.
_FOREIGN = frozenset({"service", "route", "consumer", "upstream", "client_certificate",
                      "certificate"})


def _jsonable(v: Any) -> Any:
    if isinstance(v, tuple):
        return [_jsonable(x) for x in v]
    if isinstance(v, dict):
        return {k: _jsonable(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_jsonable(x) for x in v]
    return v


def entity_to_dict(entity: Entity) -> dict[str, Any]:
    """Kong Admin-API JSON shape of an entity (lists, foreign keys as ``{"id": ...}``)."""
    out: dict[str, Any] = {}
    for f in fields(entity):
        v = getattr(entity, f.name)
        if f.name == "extra" or f.name in CREDENTIAL_FIELDS:
            continue
        if f.name in _FOREIGN:
            out[f.name] = None if v is None else {"id": v}
        else:
            out[f.name] = _jsonable(v)
    out.update(copy.deepcopy(entity.extra))
    return out


# --------------------------------------------------------------------------- value normalization
# Canonical forms of values stored in entities (shared by validation, router, balancer).

_HOSTNAME_RE = re.compile(r"^[A-Za-z0-9_](?:[A-Za-z0-9_.-]*[A-Za-z0-9_])?$")
_IPV4ISH_RE = re.compile(r"[0-9.]+")


def _is_port_digits(text: str) -> bool:
    # ASCII only: str.isdigit() also takes other scripts' digits, which Kong refuses.
    return text.isascii() and text.isdigit()


def normalize_host(value: str) -> tuple[str, str, int | None] | None:
    """Kong ``utils.normalize_ip``: parse ``host[:port]`` into (kind, host, port).

    kind is ``ipv4``, ``ipv6`` or ``name``; IPv6 hosts are returned bracketed.
    Returns None when invalid. A port outside 0..65535 is invalid.
    """
    port: str | None = None
    if value.startswith("["):
        end = value.find("]")
        if end < 0:
            return None
        host, rest = value[1:end], value[end + 1:]
        if rest:
            if not rest.startswith(":") or not _is_port_digits(rest[1:]):
                return None
            port = rest[1:]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            return None
        kind, host = "ipv6", f"[{ipaddress.IPv6Address(host).compressed}]"
    elif value.count(":") > 1:  # bare IPv6, no port possible
        try:
            host = f"[{ipaddress.IPv6Address(value).compressed}]"
        except ValueError:
            return None
        kind = "ipv6"
    else:
        host, _, p = value.partition(":")
        if _:
            if not _is_port_digits(p):
                return None
            port = p
        if _IPV4ISH_RE.fullmatch(host):
            try:
                ipaddress.IPv4Address(host)
            except ValueError:
                return None
            kind = "ipv4"
        elif _HOSTNAME_RE.fullmatch(host) and ".." not in host:
            kind = "name"
        else:
            return None
    if port is not None:
        n = int(port)
        if n > 65535:
            return None
        return kind, host, n
    return kind, host, None


def split_target(target: str) -> tuple[str, int]:
    """`host:port` or `[v6]:port` -> (host, port)."""
    if target.startswith("["):
        host, _, port = target[1:].partition("]:")
        return host, int(port)
    host, _, port = target.rpartition(":")
    return host, int(port)


def normalize_target(value: str, default_port: int = 8000) -> str | None:
    """``10.0.0.1`` -> ``10.0.0.1:8000``; ``::1`` -> ``[::1]:8000``; None if invalid."""
    p = normalize_host(value)
    if p is None:
        return None
    _, host, port = p
    return f"{host}:{default_port if port is None else port}"


_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
_PATH_CHARS_RE = re.compile(r"^[A-Za-z0-9\-._~/:@!$&'()*+,;=%]*$")
_PCT_RE = re.compile(r"%(?![0-9A-Fa-f]{2})")


def normalize_path(path: str) -> str:
    """Kong's router path normalization (RFC 3986 6.2.2): uppercase percent-encodings,
    decode unreserved characters, remove dot segments."""

    def pct(m: re.Match[str]) -> str:
        ch = chr(int(m.group(1), 16))
        return ch if ch in _UNRESERVED else "%" + m.group(1).upper()

    path = re.sub(r"%([0-9A-Fa-f]{2})", pct, path)
    out: list[str] = []
    segs = path.split("/")
    for i, seg in enumerate(segs):
        if seg == ".":
            if i == len(segs) - 1:
                out.append("")
            continue
        if seg == "..":
            if len(out) > 1:
                out.pop()
            if i == len(segs) - 1:
                out.append("")
            continue
        out.append(seg)
    res = "/".join(out)
    return res if res.startswith("/") else "/" + res


_PCRE_NAMED_RE = re.compile(r"\(\?<(?![=!])([A-Za-z_][A-Za-z0-9_]*)>|\(\?'([A-Za-z_][A-Za-z0-9_]*)'")


def pcre_to_python(pattern: str) -> str:
    """Translate PCRE-only syntax Kong users write (``(?<name>...)``, ``(?'name'...)``,
    ``\\k<name>``) into Python ``re`` syntax; everything else is passed through."""
    pattern = _PCRE_NAMED_RE.sub(lambda m: f"(?P<{m.group(1) or m.group(2)}>", pattern)
    return re.sub(r"\\k<([A-Za-z_][A-Za-z0-9_]*)>", r"(?P=\1)", pattern)


def path_chars_error(path: str) -> str | None:
    """typedefs.path custom validator: RFC 3986 characters and valid %-encoding."""
    if _PCT_RE.search(path):
        return f"invalid url-encoded value: '{path}'"
    if not _PATH_CHARS_RE.fullmatch(path):
        return f"invalid path: '{path}' (characters outside of the reserved list of RFC 3986 found)"
    return None


# --------------------------------------------------------------------------- Kong typedef checks
# Each returns Kong's error text for a bad value, or None. Used by the schema tables in
# validate.py (like kong/db/schema/typedefs.lua next to the entity definitions).

_UUID_RE = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-"
                      r"[0-9a-fA-F]{12}")


def uuid_error(v: str) -> str | None:
    # Kong's is_valid_uuid: the dashed form only (uuid.UUID also takes braces, "urn:"...).
    if not isinstance(v, str) or not _UUID_RE.fullmatch(v):
        return "expected a valid UUID"
    return None


_UTF8_NAME_RE = re.compile(r"^[A-Za-z0-9._~\-\u0080-\U0010ffff]+$")
_HEADER_NAME_RE = re.compile(r"^[A-Za-z0-9_-]+$")
_COOKIE_BAD_RE = re.compile(r"[\x00-\x20\x7f()<>@,;:\\\"/?={}\[\]]")


def name_error(v: str) -> str | None:
    if not _UTF8_NAME_RE.fullmatch(v):
        return (f"invalid value '{v}': the only accepted ascii characters are "
                "alphanumerics or ., -, _, and ~")
    return None


def tag_error(v: str) -> str | None:
    if "," in v or "/" in v or any(ord(c) < 0x20 or ord(c) == 0x7F for c in v):
        return f"invalid tag '{v}': expected printable ascii (except `,` and `/`) or valid utf-8 sequences"
    return None


def host_error(v: str) -> str | None:
    p = normalize_host(v)
    if p is None:
        return f"invalid value: {v}"
    return "must not have a port" if p[2] is not None else None


def route_host_error(v: str) -> str | None:
    if "*" in v:
        if v.count("*") > 1:
            return "only one wildcard must be specified"
        name = v.rsplit(":", 1)[0] if not v.startswith("[") and v.count(":") == 1 else v
        if not (name.startswith("*") or name.endswith("*")):
            return "wildcard must be leftmost or rightmost character"
        v = v.replace("*", "wildcard")
    return None if normalize_host(v) is not None else f"invalid value: {v}"


def path_error(v: str) -> str | None:
    if not v.startswith("/"):
        return "should start with: /"
    if "//" in v:
        return "must not have empty segments"
    return path_chars_error(v)


def router_path_error(v: str) -> str | None:
    if not (v.startswith("/") or v.startswith("~/")):
        return "should start with: / (fixed path) or ~/ (regex path)"
    if "//" in v:
        return "must not have empty segments"
    if v.startswith("~"):
        if _PCT_RE.search(v):
            return f"invalid url-encoded value: '{v}'"
        try:
            re.compile(pcre_to_python(v[1:]))
        except re.error as e:
            return f"invalid regex: '{v[1:]}' ({e})"
        return None
    err = path_chars_error(v)
    if err:
        return err
    norm = normalize_path(v)
    if norm != v:
        return f"non-normalized path, consider use '{norm}' instead"
    return None


def header_name_error(v: str) -> str | None:
    if not _HEADER_NAME_RE.fullmatch(v):
        return f"bad header name '{v}', allowed characters are A-Z, a-z, 0-9, '_', and '-'"
    return None


def route_header_name_error(v: str) -> str | None:
    if v.lower() == "host":
        return "cannot contain 'host' header, which must be specified in the 'hosts' attribute"
    return header_name_error(v)


def method_error(v: str) -> str | None:
    return None if re.fullmatch(r"[A-Z]+", v) else f"invalid value: {v}"


def upstream_name_error(v: str) -> str | None:
    p = normalize_host(v)
    if p is None:
        return "Invalid name; must be a valid hostname"
    if p[0] != "name":
        return "Invalid name; no ip addresses allowed"
    if p[2] is not None:
        return "Invalid name; no port allowed"
    return None


def cookie_name_error(v: str) -> str | None:
    if _COOKIE_BAD_RE.search(v):
        return ("contains one or more invalid characters. ASCII control characters (0-31;127), "
                "space, tab and the characters ()<>@,;:\\\"/?={}[] are not allowed.")
    return None


def target_error(v: str) -> str | None:
    if normalize_target(v) is None:
        return f"Invalid target ('{v}'); not a valid hostname or ip address"
    return None


def sni_error(v: str) -> str | None:
    """Kong's wildcard_host: one ``*``, leftmost or rightmost; a name, no IP, no port."""
    if "*" in v:
        if v.count("*") > 1:
            return "only one wildcard must be specified"
        if not (v.startswith("*") or v.endswith("*")):
            return "wildcard must be leftmost or rightmost character"
    p = normalize_host(v.replace("*", "wildcard"))
    if p is None:
        return f"invalid value: {v}"
    if p[0] != "name":
        return "must not be an IP"
    return None if p[2] is None else "must not have a port"


def cidr_error(v: str) -> str | None:
    try:
        ipaddress.ip_network(v, strict=False)
    except ValueError:
        return f"invalid ip or cidr range: '{v}'"
    return None
