"""The attacker's bytes of issue 9, as data: shared by the edge tests and bench/edge_probe.

A `Probe` is one or more client connections, run one after the other, each a list of
segments sent as separate packets. `REJECTED` probes must each get an error status with
`Connection: close` and put no byte on any backend connection; `SCENARIOS` are proxied,
and what reaches the backend must be exactly what the proxy framed itself.

The proxy in front of the recorder routes `/api/atelier`, and `/api/stream` without request
buffering; `/admin/secret` is routed nowhere, and `max_body_size` is `BODY_LIMIT`.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["BODY_LIMIT", "HOST", "REJECTED", "SCENARIOS", "Probe", "chunked", "websocket_head"]

HOST = b"edge.test"
BODY_LIMIT = 65536  # the proxies' max_body_size / client_max_body_size in these probes
SMUGGLED = b"GET /admin/secret HTTP/1.1\r\nHost: edge.test\r\nX-Smuggled: 1\r\n\r\n"
# An incomplete request that waits on a pooled backend connection for the next user's bytes.
CAPTURE = b"POST /capture HTTP/1.1\r\nHost: edge.test\r\nContent-Length: 300\r\n\r\n"
VICTIM = (b"GET /api/atelier/victim HTTP/1.1\r\nHost: edge.test\r\n"
          b"Authorization: Basic dmljdGltOnNlY3JldA==\r\nCookie: session=victim-secret\r\n\r\n")


@dataclass(frozen=True)
class Probe:
    name: str
    finding: str  # issue 9's finding number, or "rule" for the spec's other rules
    connections: tuple[tuple[bytes, ...], ...]  # run in turn; each: segments to send
    statuses: frozenset[int] = frozenset()  # REJECTED: the acceptable error statuses
    note: str = ""
    requests: tuple[int, ...] = ()  # requests on each connection (default: one each)
    cold: bool = False  # run with no idle pooled upstream connection

    def expected_responses(self, connection: int) -> int:
        return self.requests[connection] if self.requests else 1


def chunked(*pieces: bytes) -> bytes:
    """A chunked body of `pieces` and the last chunk."""
    return b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces if p) + b"0\r\n\r\n"


def request(method: bytes, target: bytes, fields: list[bytes], body: bytes = b"",
            version: bytes = b"HTTP/1.1", host: bytes | None = HOST) -> bytes:
    lines = [method + b" " + target + b" " + version]
    if host is not None:
        lines.append(b"Host: " + host)
    lines += fields
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def websocket_head(target: bytes, *extra: bytes) -> bytes:
    return request(b"GET", target, [b"Upgrade: websocket", b"Connection: Upgrade",
                                    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
                                    b"Sec-WebSocket-Version: 13", *extra])


def _post(*fields: bytes, body: bytes = b"", version: bytes = b"HTTP/1.1",
          host: bytes | None = HOST) -> tuple[tuple[bytes, ...], ...]:
    return ((request(b"POST", b"/api/atelier/delete-account?id=42", list(fields), body,
                     version, host),),)


def _get(*fields: bytes, version: bytes = b"HTTP/1.1", host: bytes | None = HOST,
         method: bytes = b"GET", target: bytes = b"/api/atelier/") -> tuple[tuple[bytes, ...], ...]:
    return ((request(method, target, list(fields), b"", version, host),),)


def _rejected(name: str, finding: str, connections: tuple[tuple[bytes, ...], ...],
              *statuses: int, note: str = "") -> Probe:
    return Probe(name, finding, connections, frozenset(statuses), note)


BODY = chunked(b"abc")
REJECTED: tuple[Probe, ...] = (
    # Finding 4: a coding other than chunked is refused before anything goes upstream.
    _rejected("te-gzip", "4", _post(b"Transfer-Encoding: gzip", body=BODY), 501),
    _rejected("te-identity", "4", _post(b"Transfer-Encoding: identity", body=BODY), 501),
    _rejected("te-x", "4", _post(b"Transfer-Encoding: x", body=BODY), 501),
    _rejected("te-gzip-chunked", "7", _post(b"Transfer-Encoding: gzip, chunked", body=BODY), 501),
    _rejected("te-chunked-chunked", "rule",
              _post(b"Transfer-Encoding: chunked, chunked", body=BODY), 501),
    _rejected("te-chunked-tab", "4", _post(b"Transfer-Encoding: chunked\t", body=BODY), 400, 501),
    # Framing contradictions and malformed lengths.
    _rejected("te-and-cl", "rule",
              _post(b"Content-Length: 12", b"Transfer-Encoding: chunked", body=BODY), 400),
    _rejected("cl-twice-equal", "rule",
              _post(b"Content-Length: 3", b"Content-Length: 3", body=b"abc"), 400),
    _rejected("cl-plus-sign", "rule", _post(b"Content-Length: +3", body=b"abc"), 400),
    _rejected("cl-letters", "rule", _post(b"Content-Length: 3x", body=b"abc"), 400),
    _rejected("cl-negative", "rule", _post(b"Content-Length: -1", body=b"abc"), 400),
    _rejected("te-on-http10", "7",
              _post(b"Transfer-Encoding: chunked", body=BODY, version=b"HTTP/1.0"), 400),
    # Finding 7: Host and version.
    _rejected("host-missing", "7", _get(host=None), 400),
    _rejected("host-empty", "7", _get(host=b""), 400),
    _rejected("host-twice", "7", _get(b"Host: other.test"), 400),
    _rejected("host-space", "7", _get(host=b"a b"), 400),
    _rejected("host-userinfo", "7", _get(host=b"evil.com@x"), 400),
    _rejected("host-slash", "7", _get(host=b"x/y"), 400),
    _rejected("host-nul", "7", _get(host=b"a\x00b"), 400),
    _rejected("version-2.0", "7", _get(version=b"HTTP/2.0"), 505),
    _rejected("version-1.2", "7", _get(version=b"HTTP/1.2"), 505),
    _rejected("trace", "7", _get(b"Cookie: session=secret", method=b"TRACE"), 405),
    # Finding 5: an upgrade request with a body is refused at once.
    _rejected("upgrade-ws-length", "5",
              ((websocket_head(b"/api/atelier/ws", b"Content-Length: 5") + b"hello",),), 400),
    _rejected("upgrade-h2c-length-space", "5",
              ((request(b"GET", b"/api/atelier/h2c",
                        [b"Connection: Upgrade, HTTP2-Settings", b"Upgrade: h2c",
                         b"HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA", b"Content-Length: 35 "],
                        b"x" * 35),),), 400),
    _rejected("upgrade-ws-chunked", "5",
              ((websocket_head(b"/api/atelier/ws", b"Transfer-Encoding: chunked") + BODY,),), 400),
    # Limits.
    _rejected("too-many-fields", "rule",
              _get(*(b"X-Field-%d: %d" % (i, i) for i in range(150))), 431),
    _rejected("head-too-large", "rule", _get(b"X-Big: " + b"b" * 40000), 431),
    _rejected("request-line-too-long", "rule",
              _get(target=b"/api/atelier/" + b"a" * 9000), 414),
    # Finding 6: a declared length over the limit gets 413 before any body is sent.
    _rejected("length-over-limit", "6", _post(b"Content-Length: %d" % (BODY_LIMIT * 2)), 413),
    _rejected("length-over-limit-space", "6",
              _post(b"Content-Length: %d " % (BODY_LIMIT * 2)), 413),
    _rejected("chunked-over-limit", "6",
              _post(b"Transfer-Encoding: chunked",
                    body=chunked(*(b"c" * 30000 for _ in range(5)))), 413),
)

def _split_after_head(data: bytes, body_bytes: int) -> tuple[bytes, bytes]:
    """The head and the first `body_bytes` body bytes in one packet, the rest in another."""
    cut = data.index(b"\r\n\r\n") + 4 + body_bytes
    return data[:cut], data[cut:]


# A streamed body that starts with more than client_body_buffer_size (8 KiB) with its head,
# whose decoded content would end a chunked message early and smuggle a request.
SPILLED_PAYLOAD = (b"0\r\n\r\n" + SMUGGLED + b"GET /api/atelier/pad HTTP/1.1\r\nHost: edge.test\r\n"
                   b"X-Pad: " + b"p" * 30000 + b"\r\n\r\n")
SIZED_PAYLOAD = bytes(range(256)) * 200

SCENARIOS: tuple[Probe, ...] = (
    Probe("smuggle-te-space", "1",
          ((request(b"POST", b"/api/atelier/smuggle", [b"Transfer-Encoding: chunked "],
                    chunked(SMUGGLED)),),),
          note="one framed request; /admin/secret never at the backend"),
    Probe("smuggle-capture", "1",
          ((request(b"POST", b"/api/atelier/smuggle", [b"Transfer-Encoding: chunked "],
                    chunked(CAPTURE)),), (VICTIM,)),
          note="the victim's request arrives as its own, nothing captured"),
    Probe("ws-refused-pipelined", "2",
          ((websocket_head(b"/api/atelier/ws") + SMUGGLED,),),
          note="backend refuses the upgrade (200); /admin/secret never at the backend",
          requests=(2,)),
    Probe("ws-refused-pipelined-cold", "2",
          ((websocket_head(b"/api/atelier/ws") + SMUGGLED,),),
          note="the same with no idle pooled backend connection", requests=(2,), cold=True),
    Probe("connection-names-length", "rule",
          ((request(b"POST", b"/api/atelier/hop", [b"Connection: Content-Length",
                                                   b"Content-Length: %d" % len(SMUGGLED)],
                    SMUGGLED),),),
          note="a field named in Connection cannot remove the framing"),
    Probe("stream-spilled-chunked", "fuzz",
          (_split_after_head(request(b"POST", b"/api/stream/spill",
                                     [b"Transfer-Encoding: chunked"], chunked(SPILLED_PAYLOAD)),
                             12000),),
          note="request_buffering off: one framed request with the whole body"),
    Probe("stream-spilled-length", "fuzz",
          (_split_after_head(request(b"POST", b"/api/stream/sized",
                                     [b"Content-Length: %d" % len(SIZED_PAYLOAD)], SIZED_PAYLOAD),
                             12000),),
          note="request_buffering off: the whole body arrives, the client is answered"),
    Probe("underscores", "7",
          ((request(b"POST", b"/api/atelier/underscore",
                    [b"Content-Length: 3", b"Transfer_Encoding: chunked",
                     b"X_Forwarded_For: 6.6.6.6", b"Foo_Bar: 1"], b"abc"),),),
          note="no field with '_' at the backend"),
)


def probe_named(name: str) -> Probe:
    return next(p for p in (*REJECTED, *SCENARIOS) if p.name == name)
