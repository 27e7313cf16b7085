"""The request head the gateway writes to a backend: the one place that builds it.

Rules (RFC 9110 §7.6, RFC 9112 §3 and §6; Kong's upstream headers)
-------------------------------------------------------------------
  U1  Request line: `METHOD SP target SP HTTP/1.1`, the target being the upstream path
      (Kong's path joining) and the client's query string, unchanged.
  U2  Host: the client's host when the route has preserve_host (the absolute-form
      authority when the client used one), else the target's Host value.
  U3  The client's fields are copied in order, except: hop-by-hop fields and the fields
      its Connection names, framing fields (Content-Length, Transfer-Encoding), Host,
      Expect, the X-Forwarded-* family and X-Real-IP (set below), X-Request-Id (set
      below) and Via (extended below).
  U4  Framing is the gateway's: `Content-Length: N` for a body of known size (always the
      case with request buffering), `Transfer-Encoding: chunked` for a chunked body
      streamed as it arrives, nothing without a body.
  U5  A websocket upgrade sends `Upgrade: websocket` (only the protocol the gateway relays,
      request.py C3) and `Connection: upgrade`;
      otherwise there is no Connection field (HTTP/1.1 keeps the connection alive).
  U6  Via: the client's values, then the gateway's (RFC 9110 §7.6.3).
  U7  X-Forwarded-For/-Proto/-Host/-Port/-Prefix and X-Real-IP: a trusted client's
      values are extended (For) or kept; anyone else's are replaced by what the gateway
      saw.
  U9  traceparent (W3C Trace Context, core.http.trace): the client's trace continues with
      the gateway's own span id, or a new trace starts; with tracing off it passes as is.
  U8  The request id: the client's X-Request-Id when it is a plain token, else the
      gateway's; exactly one line per name `headers_upstream` asks for (X-Request-Id by
      default, Kong's X-Kong-Request-Id, or none).
  U10 Plugins' edits (dataplane.plugins) are explicit inputs, never byte edits: `edits`
      maps lower-case names to the complete lines that replace the client's fields of
      that name (b"": removed), written after the copied fields; `new_method` replaces
      the request method. Framing, Host and the fields of U5-U9 stay the builder's own.

Cost: most requests come from untrusted clients on connections whose Host does not
change, so everything after the copied fields (Via, X-Forwarded-*, X-Real-IP, the blank
line) is cached per client connection in `ForwardedFields`.
"""

from __future__ import annotations

from typing import Callable, Final

from fastgw.core.http.fields import FORWARDED, HOP_BY_HOP, METHOD_BYTES, VIA_LINE, split_host_port
from fastgw.core.http.request import RequestHead
from fastgw.core.http.request_id import valid_request_id
from fastgw.core.http.trace import TraceIds

__all__ = ["ForwardedFields", "build_upstream_head", "client_request_id", "prefix_line"]

CRLF: Final = b"\r\n"
_DROP: Final = HOP_BY_HOP | FORWARDED | {b"host", b"expect", b"via", b"x-request-id",
                                         b"x-kong-request-id", b"traceparent",
                                  b"content-length"}


def prefix_line(prefix: str | None) -> bytes:
    """The X-Forwarded-Prefix line of a route match (precomputed per cached match)."""
    return b"X-Forwarded-Prefix: " + prefix.encode("latin-1") + CRLF if prefix else b""


class ForwardedFields:
    """What the gateway saw of one client connection, and the head's cached tail (U6, U7)."""

    __slots__ = ("ip", "port", "proto", "trusted", "_tail_host", "_tail_prefix", "_tail")

    def __init__(self, ip: str, port: bytes, proto: bytes, trusted: bool) -> None:
        self.ip = ip.encode()
        self.port = port
        self.proto = proto
        self.trusted = trusted
        self._tail_host: bytes | None = None
        self._tail_prefix = b""
        self._tail = b""

    def tail(self, host: bytes | None, prefix: bytes) -> bytes:
        """Via, X-Forwarded-*, X-Real-IP and the blank line for a client whose own
        forwarding fields do not count (cached: Host rarely changes on a connection)."""
        if host == self._tail_host and prefix is self._tail_prefix and self._tail:
            return self._tail
        ip = self.ip
        parts = [VIA_LINE, b"X-Forwarded-For: ", ip, CRLF, b"X-Forwarded-Proto: ", self.proto,
                 CRLF, b"X-Forwarded-Port: ", self.port, CRLF, b"X-Real-IP: ", ip, CRLF]
        if host is not None:
            parts += (b"X-Forwarded-Host: ", split_host_port(host)[0], CRLF)
        parts += (prefix, CRLF)
        self._tail_host = host
        self._tail_prefix = prefix
        self._tail = b"".join(parts)
        return self._tail

    def trusted_tail(self, incoming: dict[bytes, bytes], host: bytes | None,
                     prefix: bytes) -> bytes:
        """The same for a trusted client that sent forwarding fields of its own (U7)."""
        ip = self.ip
        xff = incoming.get(b"x-forwarded-for")
        parts = [
            VIA_LINE,
            b"X-Forwarded-For: ", xff + b", " + ip if xff else ip, CRLF,
            b"X-Forwarded-Proto: ", incoming.get(b"x-forwarded-proto", self.proto), CRLF,
            b"X-Forwarded-Port: ", incoming.get(b"x-forwarded-port", self.port), CRLF,
            b"X-Real-IP: ", incoming.get(b"x-real-ip", ip), CRLF,
        ]
        fhost = incoming.get(b"x-forwarded-host")
        if fhost is None and host is not None:
            fhost = split_host_port(host)[0]
        if fhost is not None:
            parts += (b"X-Forwarded-Host: ", fhost, CRLF)
        fprefix = incoming.get(b"x-forwarded-prefix")
        if fprefix is not None:
            parts += (b"X-Forwarded-Prefix: ", fprefix, CRLF)
        else:
            parts.append(prefix)
        parts.append(CRLF)
        return b"".join(parts)


def build_upstream_head(
    head: RequestHead,
    target: bytes,
    host: bytes,
    framing: bytes,
    fwd: ForwardedFields,
    prefix: bytes,
    new_id: Callable[[], bytes],
    id_names: tuple[bytes, ...] = (b"X-Request-Id",),
    trace: TraceIds | None = None,
    edits: dict[bytes, bytes] | None = None,
    new_method: str | None = None,
) -> tuple[bytes, bytes, bytes]:
    """(head bytes, request id, trace id). `framing` is the framing line of U4 (or b"");
    `prefix` the route's X-Forwarded-Prefix line (or b""); `new_id` makes an id (U8);
    `id_names` the fields that carry it upstream (Kong's headers_upstream); `trace` the
    trace ids when tracing is on (U9); `edits` and `new_method` plugins' edits (U10)."""
    method = head.method if new_method is None else new_method
    parts = [b"GET" if method == "GET" else METHOD_BYTES.get(method) or method.encode("latin-1"),
             b" ", target, b" HTTP/1.1\r\nHost: ", host, CRLF]
    hop = head.hop_names
    trusted = fwd.trusted
    incoming: dict[bytes, bytes] | None = None
    request_id = b""
    traceparent: bytes | None = None
    for lname, name, value in head.headers:
        if lname in _DROP:
            if lname in FORWARDED:
                if trusted:
                    if incoming is None:
                        incoming = {}
                    incoming[lname] = value
            elif lname == b"via":
                parts.append(b"Via: ")
                parts.append(value)
                parts.append(CRLF)
            elif lname == b"x-request-id":
                if not request_id and valid_request_id(value):
                    request_id = value
            elif lname == b"traceparent":
                if trace is None:
                    parts.append(name)  # tracing off: it passes like any field
                    parts.append(b": ")
                    parts.append(value)
                    parts.append(CRLF)
                elif traceparent is None:
                    traceparent = value
            # x-kong-request-id: set by the gateway when headers_upstream asks for it
            continue
        if hop is not None and lname in hop:
            continue
        if edits is not None and lname in edits:
            continue
        parts.append(name)
        parts.append(b": ")
        parts.append(value)
        parts.append(CRLF)
    if edits is not None:
        parts += edits.values()
    if framing:
        parts.append(framing)
    if head.websocket:
        # The one protocol relayed (C3), whatever else the client's Upgrade list offered:
        # the backend cannot switch to a protocol the gateway would not recognise.
        parts.append(b"Upgrade: websocket\r\nConnection: upgrade\r\n")
    if not request_id:
        request_id = new_id()
    for id_name in id_names:
        parts.append(id_name)
        parts.append(b": ")
        parts.append(request_id)
        parts.append(CRLF)
    trace_id = b""
    if trace is not None:
        trace_id = trace.add_line(parts, traceparent)
    parts.append(fwd.tail(head.host, prefix) if incoming is None
                 else fwd.trusted_tail(incoming, head.host, prefix))
    return b"".join(parts), request_id, trace_id


def client_request_id(head: RequestHead) -> bytes | None:
    """The client's X-Request-Id when it is a plain token (U8), for gateway-made answers."""
    for lname, _, value in head.headers:
        if lname == b"x-request-id" and valid_request_id(value):
            return value
    return None
