"""Minimal, hand-written RFC 6455 framing for the IRIS emulator's echo endpoint.

Only what a *server* needs: parse masked client frames (reassembling fragmented
messages), and build unmasked server frames.  No extensions are negotiated, so
RSV bits must be zero.  Kept dependency-free on purpose: the emulator is a
benchmark backend and must not pull the `websockets` package into its import path.
"""

from __future__ import annotations

import base64
import hashlib
import struct

__all__ = [
    "OP_CONT",
    "OP_TEXT",
    "OP_BINARY",
    "OP_CLOSE",
    "OP_PING",
    "OP_PONG",
    "WsProtocolError",
    "FrameParser",
    "accept_key",
    "build_frame",
    "close_payload",
    "check_handshake",
    "EchoSession",
]

OP_CONT = 0x0
OP_TEXT = 0x1
OP_BINARY = 0x2
OP_CLOSE = 0x8
OP_PING = 0x9
OP_PONG = 0xA

_DATA_OPS = frozenset((OP_CONT, OP_TEXT, OP_BINARY))
_CONTROL_OPS = frozenset((OP_CLOSE, OP_PING, OP_PONG))
_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

_U16 = struct.Struct("!H")
_U64 = struct.Struct("!Q")


class WsProtocolError(Exception):
    """A framing violation; `code` is the close code to send (1002, 1007, 1009)."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


def accept_key(key: bytes) -> bytes:
    """Sec-WebSocket-Accept for a Sec-WebSocket-Key (RFC 6455 section 4.2.2)."""
    return base64.b64encode(hashlib.sha1(key.strip() + _GUID).digest())


def build_frame(opcode: int, payload: bytes = b"", fin: bool = True) -> bytes:
    """An unmasked server-to-client frame (servers MUST NOT mask, section 5.1)."""
    n = len(payload)
    first = (0x80 if fin else 0) | opcode
    if n < 126:
        header = bytes((first, n))
    elif n < 0x10000:
        header = bytes((first, 126)) + _U16.pack(n)
    else:
        header = bytes((first, 127)) + _U64.pack(n)
    return header + payload


def close_payload(code: int, reason: str = "") -> bytes:
    return _U16.pack(code) + reason.encode("utf-8")[:123]


def _unmask(payload: bytes, mask: bytes) -> bytes:
    # XOR through one big int: far faster in CPython than a per-byte loop, and
    # fine for the message sizes an echo test sends.
    n = len(payload)
    if n == 0:
        return b""
    key = (mask * (n // 4 + 1))[:n]
    return (int.from_bytes(payload, "little") ^ int.from_bytes(key, "little")).to_bytes(
        n, "little"
    )


class FrameParser:
    """Incremental parser of client frames.

    `feed()` returns complete *messages* as (opcode, payload) tuples: data messages
    are reassembled from their fragments (opcode is that of the first fragment),
    control frames are returned as they arrive (they may interleave fragments).
    """

    __slots__ = ("_buf", "_frag_op", "_frag", "_frag_len", "max_message")

    def __init__(self, max_message: int = 16 * 1024 * 1024) -> None:
        self._buf = bytearray()
        self._frag_op: int | None = None
        self._frag: list[bytes] = []
        self._frag_len = 0
        self.max_message = max_message

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        buf = self._buf
        buf += data
        out: list[tuple[int, bytes]] = []
        pos = 0
        end = len(buf)
        while end - pos >= 2:
            b0 = buf[pos]
            b1 = buf[pos + 1]
            fin = bool(b0 & 0x80)
            opcode = b0 & 0x0F
            if b0 & 0x70:
                raise WsProtocolError(1002, "RSV bits set without a negotiated extension")
            if not b1 & 0x80:
                raise WsProtocolError(1002, "client frames must be masked")
            length = b1 & 0x7F
            hdr = 2
            if length == 126:
                if end - pos < 4:
                    break
                length = _U16.unpack_from(buf, pos + 2)[0]
                hdr = 4
            elif length == 127:
                if end - pos < 10:
                    break
                length = _U64.unpack_from(buf, pos + 2)[0]
                hdr = 10
            if opcode in _CONTROL_OPS:
                if length > 125 or not fin:
                    raise WsProtocolError(1002, "invalid control frame")
            elif opcode not in _DATA_OPS:
                raise WsProtocolError(1002, f"reserved opcode {opcode}")
            if length > self.max_message or self._frag_len + length > self.max_message:
                raise WsProtocolError(1009, "message too big")
            total = hdr + 4 + length
            if end - pos < total:
                break
            mask = bytes(buf[pos + hdr : pos + hdr + 4])
            payload = _unmask(bytes(buf[pos + hdr + 4 : pos + total]), mask)
            pos += total
            if opcode in _CONTROL_OPS:
                out.append((opcode, payload))
                continue
            if opcode == OP_CONT:
                if self._frag_op is None:
                    raise WsProtocolError(1002, "continuation without a started message")
            elif self._frag_op is not None:
                raise WsProtocolError(1002, "new message inside a fragmented one")
            if fin and opcode != OP_CONT:
                out.append((opcode, payload))
                continue
            if opcode != OP_CONT:
                self._frag_op = opcode
            self._frag.append(payload)
            self._frag_len += len(payload)
            if fin:
                op = self._frag_op
                assert op is not None
                msg = b"".join(self._frag)
                self._frag_op = None
                self._frag = []
                self._frag_len = 0
                out.append((op, msg))
        if pos:
            del buf[:pos]
        # A declared length is bounded above, so the pending buffer is bounded too.
        return out


def check_handshake(
    method: bytes, connection: bytes | None, upgrade: bytes | None, key: bytes | None,
    version: bytes | None,
) -> tuple[int, bytes, str]:
    """Validate a client opening handshake (RFC 6455 section 4.2.1).

    Returns (101, Sec-WebSocket-Accept value, "") on success, otherwise
    (status, extra header lines, reason) for the HTTP error response.
    """
    if (method != b"GET" or b"upgrade" not in (connection or b"").lower()
            or (upgrade or b"").strip().lower() != b"websocket"):
        return 426, b"Upgrade: websocket\r\n", "WebSocket upgrade required"
    if (version or b"").strip() != b"13":
        return 426, b"Sec-WebSocket-Version: 13\r\n", "unsupported WebSocket version"
    try:
        valid = key is not None and len(base64.b64decode(key.strip(), validate=True)) == 16
    except ValueError:  # binascii.Error is a ValueError
        valid = False
    if not valid or key is None:
        return 400, b"", "bad Sec-WebSocket-Key"
    return 101, accept_key(key), ""


class EchoSession:
    """Server side of an echo connection: bytes in, frames out.

    `feed()` returns (frames to send, close_after): data messages are echoed with their
    opcode, pings answered with pongs, a close is answered with the peer's code, and a
    protocol violation is answered with a close carrying the matching code.
    """

    __slots__ = ("_parser", "closed")

    def __init__(self, max_message: int = 16 * 1024 * 1024) -> None:
        self._parser = FrameParser(max_message)
        self.closed = False

    def feed(self, data: bytes) -> tuple[list[bytes], bool]:
        if self.closed:
            return [], False
        out: list[bytes] = []
        try:
            messages = self._parser.feed(data)
        except WsProtocolError as exc:
            return self._close(out, close_payload(exc.code, exc.reason))
        for op, payload in messages:
            if op == OP_TEXT:
                try:
                    payload.decode("utf-8")
                except UnicodeDecodeError:
                    return self._close(out, close_payload(1007, "invalid UTF-8"))
                out.append(build_frame(op, payload))
            elif op == OP_BINARY:
                out.append(build_frame(op, payload))
            elif op == OP_PING:
                out.append(build_frame(OP_PONG, payload))
            elif op == OP_CLOSE:
                # Echo the peer's code (section 5.5.1); a 1-byte close payload is malformed.
                if len(payload) == 1:
                    return self._close(out, close_payload(1002))
                return self._close(out, payload[:2])
        return out, False

    def _close(self, out: list[bytes], payload: bytes) -> tuple[list[bytes], bool]:
        self.closed = True
        out.append(build_frame(OP_CLOSE, payload))
        return out, True
