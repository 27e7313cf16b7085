"""What one finished request leaves for logs, and the two shapes it is written in.

The exchange fills a `LogRecord` only when something will read it (the access log, or a
log-phase plugin): a request pays nothing for logging it does not do. The record holds
raw values (bytes, loop times, entities); the serializers turn them into JSON-able dicts
off the proxying path of anything but the request being logged.

Shapes:
- `fastgw_entry`: fastgw's compact line (time, client, method, path, route, service,
  target, status, bytes, latencies, request id, trace id).
- `kong_entry`: Kong 3.x's log serializer (`kong.log.serialize()`, what file-log and
  http-log write): request {method, uri, url, size, querystring, headers}, response
  {status, size, headers}, latencies {kong, proxy, request, receive}, service, route,
  upstream_uri, upstream_status, tries, client_ip, started_at (epoch ms), consumer,
  workspace, source. Latencies follow Kong's definitions: proxy is the waiting time
  (request sent to response head, or to the failure), receive the time reading the
  response body, kong the time before proxying plus receive.

Sensitive request and response fields are redacted by default (`access_log_redact`):
their values become "REDACTED", so credentials never reach a log file.
"""

from __future__ import annotations

from typing import Any, Final
from urllib.parse import parse_qsl

from fastgw.config.model import entity_to_dict

__all__ = ["REDACTED_FIELDS", "LogRecord", "fastgw_entry", "kong_entry"]

REDACTED_FIELDS: Final = frozenset({
    "authorization", "proxy-authorization", "cookie", "set-cookie", "apikey", "x-api-key",
})


class LogRecord:
    """One request, as it ended."""

    __slots__ = ("started_at", "client_ip", "scheme", "host", "port", "method", "target",
                 "request_headers", "request_size", "status", "response_head",
                 "response_size", "request_ms", "upstream_ms", "receive_ms", "route",
                 "service", "upstream_uri", "upstream_status", "tries", "source",
                 "request_id", "trace_id", "consumer", "workspace")

    def __init__(self) -> None:
        self.started_at = 0.0  # epoch seconds
        self.client_ip = ""
        self.scheme = "http"
        self.host = ""
        self.port = 0
        self.method = ""
        self.target = b""
        self.request_headers: list[tuple[bytes, bytes, bytes]] = []
        self.request_size = 0
        self.status = 0
        self.response_head = b""  # status line and fields as sent to the client
        self.response_size = 0
        self.request_ms = 0.0
        self.upstream_ms = -1.0  # Kong's waiting time; -1: nothing went upstream
        self.receive_ms = 0.0
        self.route: Any = None
        self.service: Any = None
        self.upstream_uri = b""
        self.upstream_status = 0
        self.tries: list[tuple[str, int]] = []
        self.source = "kong"  # "upstream": the backend's response; "kong": the gateway's
        self.request_id = b""
        self.trace_id = b""
        self.consumer: Any = None
        self.workspace = "default"

    @property
    def kong_ms(self) -> float:
        return self.request_ms - max(self.upstream_ms, 0.0)


def _ms(value: float) -> float:
    return int(value * 1000) / 1000  # microsecond precision; truncation is cheap


def fastgw_entry(r: LogRecord, iso_time: str) -> dict[str, Any]:
    entry = {
        "time": iso_time,
        "client": r.client_ip,
        "method": r.method,
        "path": r.target.decode("latin-1"),
        "route": _label(r.route, "name") or (r.route.id if r.route is not None else None),
        "service": _label(r.service, "name") or _label(r.service, "host"),
        "target": f"{r.tries[-1][0]}:{r.tries[-1][1]}" if r.tries else None,
        "status": r.status,
        "bytes_in": r.request_size,
        "bytes_out": r.response_size,
        "latency_ms": {
            "request": _ms(r.request_ms),
            "upstream": _ms(r.upstream_ms) if r.upstream_ms >= 0 else None,
            "gateway": _ms(r.kong_ms),
        },
        "request_id": r.request_id.decode("latin-1"),
        "trace_id": r.trace_id.decode("latin-1") or None,
    }
    if r.consumer is not None:  # identified by an auth plugin
        entry["consumer"] = r.consumer.username or r.consumer.id
    return entry


def kong_entry(r: LogRecord, redact: bool = True) -> dict[str, Any]:
    target = r.target.decode("latin-1")
    qpos = target.find("?")
    query = target[qpos + 1:] if qpos != -1 else ""
    default_port = 443 if r.scheme == "https" else 80
    authority = r.host if r.port in (0, default_port) else f"{r.host}:{r.port}"
    entry: dict[str, Any] = {
        "request": {
            "method": r.method,
            "uri": target,
            "url": f"{r.scheme}://{authority}{target}",
            "size": r.request_size,
            "querystring": _querystring(query),
            "headers": _field_map(((n, v) for n, _, v in r.request_headers), redact),
        },
        "response": {
            "status": r.status,
            "size": r.response_size,
            "headers": _field_map(_head_fields(r.response_head), redact),
        },
        "latencies": {
            "kong": int(r.kong_ms),
            "proxy": int(r.upstream_ms) if r.upstream_ms >= 0 else -1,
            "request": int(r.request_ms),
            "receive": int(r.receive_ms),
        },
        "tries": [{"ip": ip, "port": port, "balancer_latency": 0} for ip, port in r.tries],
        "client_ip": r.client_ip,
        "started_at": int(r.started_at * 1000),
        "upstream_uri": r.upstream_uri.decode("latin-1"),
        "source": "service" if r.source == "upstream" else "kong",
        "workspace_name": r.workspace,
    }
    if r.upstream_status:
        entry["upstream_status"] = str(r.upstream_status)
    if r.route is not None:
        entry["route"] = _entity_doc(r.route)
    if r.service is not None:
        entry["service"] = _entity_doc(r.service)
    if r.consumer is not None:
        entry["consumer"] = _entity_doc(r.consumer)
    if r.request_id:
        entry["request"]["id"] = r.request_id.decode("latin-1")
    if r.trace_id:
        entry["trace_id"] = {"w3c": r.trace_id.decode("latin-1")}
    return entry


def _label(entity: Any, name: str) -> str | None:
    return getattr(entity, name, None) if entity is not None else None


def _querystring(query: str) -> dict[str, Any]:
    """Kong's `kong.request.get_query()`: repeated keys give lists, bare keys true."""
    out: dict[str, Any] = {}
    for part in query.split("&"):
        if not part:
            continue
        value: Any
        if "=" not in part:
            key, value = part, True
        else:
            pairs = parse_qsl(part, keep_blank_values=True)
            if not pairs:
                continue
            key, value = pairs[0]
        if key in out:
            have = out[key]
            out[key] = have + [value] if isinstance(have, list) else [have, value]
        else:
            out[key] = value
    return out


def _head_fields(head: bytes) -> list[tuple[bytes, bytes]]:
    """(lower name, value) of a head's fields (the head is one the gateway wrote)."""
    out = []
    for line in head.split(b"\r\n")[1:]:
        name, sep, value = line.partition(b":")
        if sep:
            out.append((name.strip().lower(), value.strip()))
    return out


def _field_map(fields: Any, redact: bool) -> dict[str, Any]:
    """Kong's header tables: lower-case names, repeated fields as lists."""
    out: dict[str, Any] = {}
    for lname, value in fields:
        key = lname.decode("latin-1")
        text = "REDACTED" if redact and key in REDACTED_FIELDS else value.decode("latin-1")
        if key in out:
            have = out[key]
            out[key] = have + [text] if isinstance(have, list) else [have, text]
        else:
            out[key] = text
    return out


# Entity documents, computed once per entity object (a config change brings new objects).
_DOCS: dict[tuple[str, str], tuple[Any, dict[str, Any]]] = {}


def _entity_doc(entity: Any) -> dict[str, Any]:
    key = (type(entity).__name__, entity.id)
    hit = _DOCS.get(key)
    if hit is None or hit[0] is not entity:
        if len(_DOCS) > 4096:
            _DOCS.clear()
        hit = _DOCS[key] = (entity, entity_to_dict(entity))
    return hit[1]
