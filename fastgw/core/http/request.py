"""A request head as one validated value, read from llhttp's parser callbacks.

Theory of operation
-------------------
`RequestReader` is the callback object of one client connection's httptools parser. It
collects the target and the fields of each request head, enforces the size limits while
they arrive, and at the end of the head decides, in this one place and from what llhttp
parsed, everything the gateway needs to know: a `RequestHead` value (method, target,
routing host, fields, version, keep-alive, framing), or the status to refuse the request
with. The owner (the data plane's client connection) gets one or the other through
`on_head(head)` or a `RequestRefused` raised out of `feed_data`; it never looks at a
framing field itself. Body bytes and the end of each message go straight from llhttp to
the owner (`on_body`, `on_message_complete` are the owner's bound methods).

No I/O here and no asyncio: the reader is driven by bytes and tested by bytes
(tests/unit/test_request_head.py has rows for every rule below).

Rules (RFC 9112 and RFC 9110; nginx's choice where the RFC leaves one)
----------------------------------------------------------------------
Framing (RFC 9112 §6)
  F1  One source of truth: the framing is decided here, from the fields llhttp parsed,
      before anything is written upstream; upstream, the gateway writes framing fields
      of its own and never copies the client's.
  F2  Transfer-Encoding is accepted only as exactly "chunked" (case-insensitive, OWS
      trimmed) in a single field line. Any other coding or list ("gzip", "identity",
      "gzip, chunked", "chunked, chunked") -> 501, as nginx ("unknown transfer
      encoding"): llhttp decodes "gzip, chunked" as chunked and would hand the backend a
      coding the client never sent it.
  F3  Transfer-Encoding together with Content-Length -> 400 (§6.1 "ought to be handled
      as an error"; the classic smuggling vector).
  F4  Transfer-Encoding in an HTTP/1.0 request -> 400 (§6.1: the framing is faulty).
  F5  Content-Length is 1*DIGIT once OWS is trimmed, in one field line (two lines ->
      400 even when equal, as nginx); over max_body_size -> 413 before any body byte.
  F6  Neither field: no body (§6.3 rule 6).
Target and Host (RFC 9112 §3)
  H1  origin-form starts with "/". absolute-form ("http://host/p") is accepted for the
      http and https schemes and its authority replaces Host (§3.2.2); asterisk-form and
      authority-form -> 400.
  H2  HTTP/1.1 without Host, with two Host lines, or with an invalid Host -> 400 (§3.2).
      HTTP/1.0 may omit it.
  H3  A valid host is a non-empty reg-name, IPv4 address or bracketed IPv6 literal
      (RFC 3986 §3.2.2) with an optional ":port" of digits: no userinfo ("a@b"), no
      whitespace, no "/" or "\\".
Version and method
  V1  Only HTTP/1.0 and HTTP/1.1 -> else 505 (llhttp also reads 0.9 and 2.0 request lines).
  M1  TRACE -> 405 unless allow_trace: it would echo cookies and credentials back to a
      script (cross-site tracing).
  M2  CONNECT -> 405: the gateway is not a forward proxy.
Connection management (RFC 9112 §9)
  C1  keep-alive is llhttp's verdict (the version and Connection's close/keep-alive).
  C2  Other Connection tokens name more hop-by-hop fields (RFC 9110 §7.6.1).
  C3  An upgrade (Upgrade plus Connection: upgrade) is relayed for websocket only: when
      the Upgrade list (every field) has a `websocket` token, the backend is offered that
      protocol alone (U5); any other is proxied as a plain HTTP/1.1 request without its
      Upgrade. An upgrade request that announces a body -> 400: llhttp stops at the end of
      an upgrade head, so that body could never be framed.
Fields
  L1  A target over max_request_line_size -> 414; a head over max_header_size bytes or
      with more than max_header_count fields -> 431.
  L2  Field names with "_" are dropped (never forwarded, never routed on) unless
      underscores_in_headers: CGI-style backends read "X_Forwarded_For" as
      "X-Forwarded-For" (nginx's default, and Kong's).
  L3  Expect: 100-continue is answered by the gateway once it wants the body (RFC 9110
      §10.1.1, as nginx); Expect is not forwarded.
"""

from __future__ import annotations

import re
from typing import Any, Callable, Final

from fastgw.core.http.fields import METHOD_NAMES

__all__ = [
    "CHUNKED",
    "HeadCollector",
    "HeadSink",
    "LENGTH",
    "NO_BODY",
    "RequestHead",
    "RequestLimits",
    "RequestReader",
    "RequestRefused",
    "valid_host",
]

# Request body framing (RequestHead.framing).
NO_BODY: Final = 0
LENGTH: Final = 1
CHUNKED: Final = 2

# What on_header does with a field (by lower-case name; memoised in _FIELD_KINDS).
_PLAIN: Final = 0
_UNDERSCORED: Final = 1
_HOST: Final = 2
_LENGTH: Final = 3
_TE: Final = 4
_CONNECTION: Final = 5
_UPGRADE: Final = 6
_EXPECT: Final = 7
_SPECIAL: Final = {b"host": _HOST, b"content-length": _LENGTH, b"transfer-encoding": _TE,
                   b"connection": _CONNECTION, b"upgrade": _UPGRADE, b"expect": _EXPECT}
# Field names as sent -> (lower-case name, kind): clients repeat the same spellings, so
# one dict lookup per field replaces a lower() and a classification.
_FIELD_KINDS: Final[dict[bytes, tuple[bytes, int]]] = {}


def _field_kind(name: bytes) -> tuple[bytes, int]:
    """Classify a field name not seen before (rule L2 for underscores), and remember it."""
    lname = name.lower()
    kind = _SPECIAL.get(lname)
    if kind is None:
        # find(), not `b"_" in lname`: bytes.__contains__ first tries its argument as an
        # int and raises (and clears) a TypeError for a bytes one.
        kind = _UNDERSCORED if lname.find(b"_") != -1 else _PLAIN
    found = (lname, kind)
    if len(_FIELD_KINDS) < 4096:  # bounded: field names are few; junk names just miss
        _FIELD_KINDS[name] = found
    return found


_CONNECTION_KEYWORDS: Final = frozenset({b"close", b"keep-alive", b"upgrade"})
_OWS: Final = b" \t"

# RFC 3986 §3.2.2 host (reg-name, IPv4, IP-literal) and an optional port.
_HOST_RE: Final = re.compile(
    rb"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-._~!$&'()*+,;=%]+)(?::[0-9]*)?\Z"
)
_HOST_CACHE: Final[dict[bytes, bool]] = {}


def valid_host(host: bytes) -> bool:
    """Rule H3. Verdicts are memoised: a node sees few distinct hosts."""
    ok = _HOST_CACHE.get(host)
    if ok is None:
        ok = _HOST_RE.match(host) is not None
        if len(_HOST_CACHE) >= 4096:
            _HOST_CACHE.clear()
        _HOST_CACHE[host] = ok
    return ok


class RequestRefused(Exception):
    """Raised out of a parser callback: this request gets `status` and the connection closes."""

    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


class RequestLimits:
    """The node settings the reader enforces (gateway.* in config.json)."""

    __slots__ = ("max_request_line", "max_header_size", "max_header_count", "max_body_size",
                 "underscores", "allow_trace")

    def __init__(self, *, max_request_line: int = 8192, max_header_size: int = 32768,
                 max_header_count: int = 100, max_body_size: int = 0,
                 underscores: bool = False, allow_trace: bool = False) -> None:
        self.max_request_line = max_request_line
        self.max_header_size = max_header_size
        self.max_header_count = max_header_count
        self.max_body_size = max_body_size
        self.underscores = underscores
        self.allow_trace = allow_trace

    @classmethod
    def from_settings(cls, s: Any) -> RequestLimits:
        return cls(max_request_line=s.max_request_line_size, max_header_size=s.max_header_size,
                   max_header_count=s.max_header_count, max_body_size=s.max_body_size,
                   underscores=s.underscores_in_headers, allow_trace=s.allow_trace)


class RequestHead:
    """One request head, validated. Never changed once built.

    `headers` holds (lower-case name, name as sent, value) of every field kept (rule L2),
    in order, the framing and hop-by-hop ones included: the upstream head builder decides
    what to forward. `path` and `query` split the target (absolute-form reduced to its
    path, H1); `query` keeps its "?". `host` is what routing uses (H1, H2); `host_field`
    the Host field as sent (None when absent).
    """

    __slots__ = ("method", "target", "path", "query", "host", "host_field", "headers",
                 "http11", "keep_alive", "framing", "content_length", "expect_continue",
                 "websocket", "hop_names", "size")

    def __init__(self, method: str, target: bytes, path: bytes, query: bytes,
                 host: bytes | None, host_field: bytes | None,
                 headers: list[tuple[bytes, bytes, bytes]], http11: bool, keep_alive: bool,
                 framing: int, content_length: int, expect_continue: bool, websocket: bool,
                 hop_names: frozenset[bytes] | None, size: int) -> None:
        self.method = method
        self.target = target
        self.path = path
        self.query = query
        self.host = host
        self.host_field = host_field
        self.headers = headers
        self.http11 = http11
        self.keep_alive = keep_alive
        self.framing = framing
        self.content_length = content_length  # LENGTH only (may be 0); else 0
        self.expect_continue = expect_continue
        self.websocket = websocket
        self.hop_names = hop_names  # extra hop-by-hop names from Connection (C2)
        self.size = size  # request line and fields as received, for $request_length

    @property
    def has_body(self) -> bool:
        return self.framing == CHUNKED or self.content_length > 0

    def field(self, lname: bytes) -> bytes | None:
        """The first value of a field (lower-case name), or None."""
        for name, _, value in self.headers:
            if name == lname:
                return value
        return None

    def field_map(self) -> dict[str, str]:
        """Fields as {lower name: values joined by ", "}, for router header conditions."""
        out: dict[str, str] = {}
        for lname, _, value in self.headers:
            key = lname.decode("latin-1")
            text = value.decode("latin-1")
            out[key] = out[key] + ", " + text if key in out else text
        return out


class HeadSink:
    """Where a RequestReader hands what it read (the data plane's client connection); a
    base class rather than callbacks so that, compiled, the calls are direct."""

    __slots__ = ()

    def on_begin(self) -> None:
        """A request's first byte arrived."""
        raise NotImplementedError

    def on_head(self, head: RequestHead) -> None:
        """A request head was accepted (its body, if any, follows through on_body)."""
        raise NotImplementedError


class _DetachedSink(HeadSink):
    """The sink of a reader whose connection is gone (nothing reaches it)."""

    __slots__ = ()

    def on_begin(self) -> None:
        pass

    def on_head(self, head: RequestHead) -> None:
        pass


_DETACHED: Final = _DetachedSink()


def _drop_body(body: bytes) -> None:
    pass


def _nothing() -> None:
    pass


# Final: compiled, detach() reads them from C statics, not the module's dict.
_DROP_BODY: Final = _drop_body
_NOTHING: Final = _nothing


class HeadCollector(HeadSink):
    """A sink that keeps every head it is given (reading heads offline: tools, tests)."""

    __slots__ = ("heads",)

    def __init__(self) -> None:
        self.heads: list[RequestHead] = []

    def on_begin(self) -> None:
        pass

    def on_head(self, head: RequestHead) -> None:
        self.heads.append(head)


class RequestReader:
    """httptools callback object for one client connection (see the module docstring).

    The owner is a `HeadSink` (told of each request's first byte and of every accepted
    head) and gives its own `on_body(bytes)` / `on_message_complete()`, which llhttp
    calls directly. `parser` is set once the owner has created the httptools parser
    around this reader.
    """

    __slots__ = ("limits", "parser", "sink", "on_body", "on_message_complete", "opening",
                 "url", "headers", "size", "count", "n_host", "host", "n_length", "length",
                 "n_te", "te", "connection", "upgrade", "expect", "refused")

    def __init__(self, limits: RequestLimits, sink: HeadSink, on_body: Callable[[bytes], None],
                 on_message_complete: Callable[[], None]) -> None:
        self.limits = limits
        self.parser: Any = None
        self.sink = sink
        self.on_body = on_body
        self.on_message_complete = on_message_complete
        # The bytes of the parser's first feed_data, when the owner gives them: the first
        # request line is at their start, and reading its version there is far cheaper than
        # llhttp's get_http_version() (a formatted str). Dropped once the first head is read.
        self.opening: bytes | None = None
        self.refused = 0  # the status of the head being refused (0: none)
        self._reset()

    def detach(self) -> None:
        """The connection is gone: drop every reference back to it (connection -> reader
        -> connection is a cycle only the garbage collector would find, and a collection
        per few hundred connections is what a connection-per-request load pays)."""
        self.parser = None
        self.sink = _DETACHED
        self.on_body = _DROP_BODY
        self.on_message_complete = _NOTHING

    # -- llhttp callbacks -------------------------------------------------------------

    def on_message_begin(self) -> None:
        self.sink.on_begin()

    def _reset(self) -> None:
        """Fresh per-head state (after each head is handed over: an idle connection keeps
        nothing of its last request)."""
        self.opening = None  # the first bytes fed serve the first head only
        self.url = b""
        self.headers: list[tuple[bytes, bytes, bytes]] = []
        self.size = 0
        self.count = 0
        self.n_host = 0
        self.host: bytes | None = None
        self.n_length = 0
        self.length = b""
        self.n_te = 0
        self.te = b""
        self.connection: list[bytes] | None = None
        self.upgrade: list[bytes] | None = None  # every Upgrade field's value
        self.expect: bytes | None = None

    def on_url(self, url: bytes) -> None:
        # Most targets come in one piece: kept as given, no copy (`+=` on bytes is a
        # generic in-place add when compiled).
        self.url = self.url + url if self.url else url
        if len(self.url) > self.limits.max_request_line:
            self._refuse(414)

    def on_header(self, name: bytes, value: bytes) -> None:
        limits = self.limits
        self.size += len(name) + len(value) + 4
        self.count += 1
        if self.size > limits.max_header_size or self.count > limits.max_header_count:
            self._refuse(431)
        found = _FIELD_KINDS.get(name)  # the exact spelling, seen before: no lower()
        if found is None:
            found = _field_kind(name)
        lname, kind = found
        if kind == _PLAIN:
            self.headers.append((lname, name, value))
            return
        if kind == _UNDERSCORED:
            if not limits.underscores:
                return  # L2
            self.headers.append((lname, name, value))
            return
        self.headers.append((lname, name, value))
        if kind == _HOST:
            self.n_host += 1
            self.host = value
        elif kind == _LENGTH:
            self.n_length += 1
            self.length = value
        elif kind == _TE:
            self.n_te += 1
            self.te = value
        elif kind == _CONNECTION:
            if self.connection is None:
                self.connection = [value]
            else:
                self.connection.append(value)
        elif kind == _UPGRADE:
            if self.upgrade is None:
                self.upgrade = [value]
            else:
                self.upgrade.append(value)
        else:
            self.expect = value

    def on_headers_complete(self) -> None:
        head = self._decide()
        self._reset()
        self.sink.on_head(head)

    # -- the decision -----------------------------------------------------------------

    def _decide(self) -> RequestHead:
        parser = self.parser
        limits = self.limits
        raw_method = parser.get_method()
        if raw_method == b"GET":
            method = "GET"  # most requests: no hash of a new bytes object
        else:
            method = METHOD_NAMES.get(raw_method) or raw_method.decode("latin-1")
        keep_alive = parser.should_keep_alive()
        url = self.url
        # V1. llhttp reads 0.9, 1.0, 1.1 and 2.0, and keeps a connection alive without a
        # Connection field only for x.y with y > 0: so that case is 1.1 without asking.
        # The first request line, whole at the start of the first bytes fed, shows its
        # version as llhttp read it (any other spelling, a leading CRLF or a line split
        # over two reads just falls back to asking).
        if keep_alive and self.connection is None:
            http11 = True
        else:
            opening = self.opening
            version = _opening_version(opening, raw_method, url) if opening is not None else ""
            if not version:
                version = parser.get_http_version()
            if version == "1.1":
                http11 = True
            elif version == "1.0":
                http11 = False
            else:
                self._refuse(505)
        if method == "TRACE" and not limits.allow_trace or method == "CONNECT":
            self._refuse(405)  # M1, M2

        # H1: the target
        qpos = url.find(b"?")
        path, query = (url, b"") if qpos == -1 else (url[:qpos], url[qpos:])
        host_field = self.host
        if self.n_host > 1:
            self._refuse(400)  # H2
        if path[:1] == b"/":
            host = host_field
        else:
            host, path = _absolute_form(path)
            if host is None:
                self._refuse(400)
        if host_field is not None and not valid_host(host_field):
            self._refuse(400)  # H2, H3 (also when absolute-form overrides it)
        if host is None:
            if http11:
                self._refuse(400)  # H2
        elif host is not host_field and not valid_host(host):
            self._refuse(400)

        # F2-F6: framing
        framing = NO_BODY
        length = 0
        if self.n_te:
            if self.n_length:
                self._refuse(400)  # F3
            if not http11:
                self._refuse(400)  # F4
            if self.n_te > 1 or self.te.strip(_OWS).lower() != b"chunked":
                self._refuse(501)  # F2
            framing = CHUNKED
        elif self.n_length:
            value = self.length.strip(_OWS)
            if self.n_length > 1 or not value.isdigit():
                self._refuse(400)  # F5
            length = int(value)
            framing = LENGTH  # "Content-Length: 0" too: the backend gets it as sent
            if limits.max_body_size and length > limits.max_body_size:
                self._refuse(413)

        # C2, C3
        hop_names: frozenset[bytes] | None = None
        websocket = False
        if self.connection is not None:
            tokens: set[bytes] | None = None
            for value in self.connection:
                if value == b"close" or value == b"keep-alive":
                    continue  # the usual single keyword: nothing to split
                for token in value.split(b","):
                    token = token.strip(_OWS).lower()
                    if token and token not in _CONNECTION_KEYWORDS:
                        if tokens is None:
                            tokens = set()
                        tokens.add(token)
            if tokens:
                hop_names = frozenset(tokens)
        if self.upgrade is not None and parser.should_upgrade():
            if framing == CHUNKED or length:
                self._refuse(400)
            websocket = _offers_websocket(self.upgrade)
        expect = self.expect
        return RequestHead(
            method, url, path, query, host, host_field, self.headers, http11, keep_alive,
            framing, length,
            expect is not None and expect.strip(_OWS).lower() == b"100-continue",
            websocket, hop_names, len(url) + len(raw_method) + 14 + self.size,
        )

    def _refuse(self, status: int) -> None:
        self.refused = status
        raise RequestRefused(status)


def _offers_websocket(values: list[bytes]) -> bool:
    """C3: whether the Upgrade fields (all of them: a list split over several fields is one
    list) offer the websocket protocol, as a token of its own (RFC 9110 §7.8)."""
    for value in values:
        for token in value.split(b","):
            if token.strip(_OWS).lower() == b"websocket":
                return True
    return False


def _opening_version(opening: bytes, method: bytes, url: bytes) -> str:
    """The version of the request line at the start of `opening` ("1.1" or "1.0"), or ""
    when those bytes are not exactly `method SP url SP HTTP/1.x CRLF`."""
    # Compared in place (prefix, single bytes, two slices): no request line is built.
    start = len(method) + 1  # the target
    end = start + len(url)  # the SP before the version
    if len(opening) < end + 11 or not opening.startswith(method) or opening[start - 1] != 0x20 \
            or opening[end] != 0x20 or opening[start:end] != url \
            or opening[end + 1:end + 8] != b"HTTP/1." or opening[end + 9] != 0x0D \
            or opening[end + 10] != 0x0A:
        return ""
    minor = opening[end + 8]
    if minor == 0x31:
        return "1.1"
    if minor == 0x30:
        return "1.0"
    return ""


def _absolute_form(target: bytes) -> tuple[bytes | None, bytes]:
    """`http://host:port/p` -> (b"host:port", b"/p") (RFC 9112 §3.2.2); (None, b"") if not."""
    lowered = target[:8].lower()
    if lowered.startswith(b"http://"):
        rest = target[7:]
    elif lowered.startswith(b"https://"):
        rest = target[8:]
    else:
        return None, b""
    slash = rest.find(b"/")
    authority, path = (rest, b"/") if slash == -1 else (rest[:slash], rest[slash:])
    if not authority or not valid_host(authority):
        return None, b""
    return authority, path
