"""proxy-cache decisions (Kong 3.x ``kong/plugins/proxy-cache``: handler.lua, cache_key.lua),
and the memory strategy's store, pure.

Request: cacheable when its method is in ``request_method`` and, with ``cache_control``,
its ``Cache-Control`` has neither ``no-store`` nor ``no-cache``; otherwise ``Bypass``.
Key (cache_key.lua): sha256 hex of ``prefix|method|uri|params|headers`` where prefix is
``consumer:route``, ``route`` or ``default``; uri is the request line with everything
from the first ``?`` cut (so ``GET /a HTTP/1.1`` without a query, ``GET /a`` with one:
Kong's ``ngx.var.request`` rule), lower-cased with ``ignore_uri_case``; params the query
arguments named by ``vary_query_params`` (all of them when empty), sorted, ``k=v`` joined
by ``:`` (repeated values sorted and joined by ``,``, a bare name alone); headers the
fields named by ``vary_headers`` (none when empty), the same way.

Served: a stored entry younger than ``cache_ttl`` (without ``cache_control``) is a Hit;
older, a Refresh (fetched and stored again). With ``cache_control``, the client's
``max-age``, ``max-stale`` and ``min-fresh`` may ask for a Refresh, and ``only-if-cached``
without an entry is a 504.

Response: stored when its status is in ``response_code``, its single ``Content-Type``
equals one of ``content_type`` exactly, and, with ``cache_control``, it is neither
``private``, ``no-store`` nor ``no-cache`` and its ``s-maxage``/``max-age``/``Expires``
gives it a positive lifetime (its ttl; else ``cache_ttl``). Kept for ``storage_ttl``
(else that ttl). fastgw never stores 1xx, 204 and 304 answers (they have no body to
replay with a Content-Length).
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from email.utils import parsedate_to_datetime
from typing import Any, Final, Iterable, Sequence
from urllib.parse import unquote_plus

__all__ = ["directives", "resource_ttl", "request_cacheable", "response_cacheable",
           "query_args", "header_args", "cache_key", "request_uri", "CachedResponse",
           "ResponseCache", "NOT_STORED", "CACHE_VERSION", "Directives", "Args"]

CACHE_VERSION: Final = 1
# Kong's hop_by_hop_headers (not replayed), plus what the gateway writes itself on a hit.
NOT_STORED: Final = frozenset({
    b"connection", b"keep-alive", b"proxy-authenticate", b"proxy-authorization", b"te",
    b"trailers", b"transfer-encoding", b"upgrade", b"content-length", b"date", b"server",
    b"x-cache-status", b"x-cache-key"})
_ENTRY_OVERHEAD: Final = 256  # bytes counted per entry beyond its key, fields and body

Directives = dict[str, Any]  # name -> float (a number), str, or True (a bare token)
Args = dict[str, list[str | None]]  # name -> values in order (None: a bare name)


def directives(value: str | None) -> Directives:
    """A ``Cache-Control`` value as Kong's parse_directive_header reads it."""
    out: Directives = {}
    if not value:
        return out
    for part in value.split(","):
        name, eq, arg = part.strip().partition("=")
        name = name.strip().lower()
        if not name:
            continue
        if not eq or not arg:
            out[name] = True
            continue
        try:
            out[name] = float(arg)
        except ValueError:
            out[name] = arg
    return out


def _number(value: Any) -> float | None:
    return value if isinstance(value, float) else None


def resource_ttl(cc: Directives, expires: str | None, now: float) -> float:
    """Seconds a response may be served: s-maxage, max-age, else Expires; 0 if none."""
    max_age = _number(cc.get("s-maxage"))
    if max_age is None:
        max_age = _number(cc.get("max-age"))
    if max_age is None and expires:
        try:
            max_age = parsedate_to_datetime(expires).timestamp() - now
        except (TypeError, ValueError, IndexError):
            max_age = None
    return max(max_age, 0.0) if max_age is not None else 0.0


def request_cacheable(method: str, methods: frozenset[str], cache_control: bool,
                      cc: Directives) -> bool:
    if method not in methods:
        return False
    return not (cache_control and ("no-store" in cc or "no-cache" in cc))


def response_cacheable(status: int, statuses: frozenset[int], content_types: list[bytes],
                       types: frozenset[str], cache_control: bool, cc: Directives,
                       ttl: float) -> bool:
    """``content_types``: the response's Content-Type values (Kong bails on none or
    several); ``ttl``: its resource_ttl (read with cache_control only)."""
    if status not in statuses or status < 200 or status in (204, 304):
        return False
    if len(content_types) != 1 or not content_types[0]:
        return False
    if content_types[0].decode("latin-1") not in types:
        return False
    if cache_control:
        if "private" in cc or "no-store" in cc or "no-cache" in cc:
            return False
        if ttl <= 0:
            return False
    return True


def request_uri(method: str, target: bytes, http11: bool, ignore_case: bool) -> str:
    """The key's uri part: Kong's ``ngx.var.request`` with everything from "?" cut."""
    line = f"{method} {target.decode('latin-1')} HTTP/1.{1 if http11 else 0}"
    cut = line.find("?")
    if cut >= 0:
        line = line[:cut]
    return line.lower() if ignore_case else line


def query_args(query: bytes, lower_names: bool = False) -> Args:
    """``query`` ("?..." or b""): ngx.req.get_uri_args's table (values decoded)."""
    out: Args = {}
    if len(query) < 2:
        return out
    for item in query[1:].decode("latin-1").split("&"):
        if not item:
            continue
        name, eq, value = item.partition("=")
        key = unquote_plus(name)
        if not key:
            continue
        if lower_names:
            key = key.lower()
        out.setdefault(key, []).append(unquote_plus(value) if eq else None)
    return out


def header_args(headers: Iterable[tuple[bytes, bytes, bytes]]) -> Args:
    """A request's fields as ngx.req.get_headers's table (lower-case names)."""
    out: Args = {}
    for lname, _, value in headers:
        out.setdefault(lname.decode("latin-1"), []).append(value.decode("latin-1"))
    return out


def _vary_part(args: Args, names: Sequence[str], header_names: bool) -> str:
    """cache_key.lua's generate_key_from: "name=value" of the names present, by ":"."""
    parts = []
    for name in names:
        # kong.request.get_headers finds "X_Foo" and "x-foo" alike.
        values = args.get(name.lower().replace("_", "-") if header_names else name)
        if not values:
            continue
        if len(values) > 1:
            parts.append(name + "=" + ",".join(sorted(v or "" for v in values)))
        elif values[0] is None:
            parts.append(name)
        else:
            parts.append(f"{name}={values[0]}")
    return ":".join(parts)


def cache_key(consumer_id: str | None, route_id: str | None, method: str, uri: str,
              params: Args, headers: Args, vary_query_params: Sequence[str],
              vary_headers: Sequence[str]) -> str:
    if consumer_id and route_id:
        prefix = f"{consumer_id}:{route_id}"
    else:
        prefix = route_id or "default"
    params_part = _vary_part(params, vary_query_params or sorted(params), False)
    headers_part = _vary_part(headers, vary_headers, True) if vary_headers else ""
    text = f"{prefix}|{method}|{uri}|{params_part}|{headers_part}"
    return hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()


class CachedResponse:
    """One stored response: what a Hit replays, and Kong's metadata for the Admin API."""

    __slots__ = ("status", "fields", "body", "length", "timestamp", "ttl", "expires",
                 "size")

    def __init__(self, status: int, fields: list[tuple[bytes, bytes]], body: bytes,
                 length: int, timestamp: float, ttl: float, storage_ttl: float) -> None:
        self.status = status
        self.fields = fields  # (name as sent, value), in order
        self.body = body
        self.length = length  # the Content-Length to send (a HEAD's: the backend's)
        self.timestamp = timestamp  # wall-clock seconds when stored
        self.ttl = ttl  # how long it is fresh (cache_ttl or the response's own)
        self.expires = timestamp + storage_ttl  # when the store forgets it
        self.size = len(body) + sum(len(n) + len(v) + 4 for n, v in fields) + _ENTRY_OVERHEAD

    def metadata(self) -> dict[str, Any]:
        """Kong's stored object (``GET /proxy-cache/{key}``)."""
        headers: dict[str, Any] = {}
        for name, value in self.fields:
            key = name.decode("latin-1").lower()
            text = value.decode("latin-1")
            old = headers.get(key)
            headers[key] = text if old is None else (
                [*old, text] if isinstance(old, list) else [old, text])
        return {"status": self.status, "headers": headers,
                "body": self.body.decode("utf-8", "replace"), "body_len": self.length,
                "timestamp": int(self.timestamp), "ttl": self.ttl,
                "version": CACHE_VERSION, "req_body": None}


class ResponseCache:
    """The memory strategy: key -> CachedResponse, least recently used first out, bounded
    by bytes; an entry is dropped when its storage time is over."""

    __slots__ = ("limit", "used", "_entries")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self._entries: OrderedDict[str, CachedResponse] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: str, now: float) -> CachedResponse | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if now >= entry.expires:
            self.purge(key)
            return None
        self._entries.move_to_end(key)
        return entry

    def put(self, key: str, entry: CachedResponse) -> bool:
        """Store (replacing); False when the entry alone exceeds the bound."""
        size = entry.size + len(key)
        if size > self.limit:
            self.purge(key)
            return False
        self.purge(key)
        self._entries[key] = entry
        self.used += size
        self._evict()
        return True

    def purge(self, key: str) -> bool:
        entry = self._entries.pop(key, None)
        if entry is None:
            return False
        self.used -= entry.size + len(key)
        return True

    def flush(self) -> int:
        count = len(self._entries)
        self._entries.clear()
        self.used = 0
        return count

    def resize(self, limit: int) -> None:
        self.limit = limit
        self._evict()

    def _evict(self) -> None:
        entries = self._entries
        while self.used > self.limit and entries:
            key, entry = entries.popitem(last=False)
            self.used -= entry.size + len(key)
