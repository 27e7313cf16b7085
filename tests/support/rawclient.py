"""A raw HTTP/1.x client for edge tests: the bytes exactly as given, every wait bounded.

Responses are parsed with httptools (llhttp, strict), so a proxy's own framing is checked
too; what the client saw in the end is an `Outcome`: the responses, and whether the
connection was closed, reset, or still open when the client stopped waiting.

>>> with RawConnection(port) as conn:
...     conn.send(b"GET / HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n")
...     outcome = conn.read(responses=1)
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Self

import httptools

__all__ = ["ClientResponse", "Outcome", "RawConnection", "converse"]

Ending = Literal["close", "reset", "open"]


@dataclass
class ClientResponse:
    status: int
    headers: list[tuple[str, str]]  # lower-case names, in order
    body: bytes = b""

    def all(self, name: str) -> list[str]:
        return [v for n, v in self.headers if n == name]

    def header(self, name: str) -> str | None:
        values = self.all(name)
        return values[0] if values else None

    def json(self) -> Any:
        return json.loads(self.body)

    def closes(self) -> bool:
        return any(v.strip().lower() == "close" for v in self.all("connection"))

    def __repr__(self) -> str:
        return f"<{self.status} {self.headers} {self.body[:200]!r}>"


@dataclass
class Outcome:
    """What a client connection got: responses (1xx interim ones left out) and its end."""

    responses: list[ClientResponse] = field(default_factory=list)
    ending: Ending = "open"  # "open": still open when the client stopped waiting
    raw: bytes = b""
    unparsed: str | None = None  # the client could not parse the response stream
    send_error: str | None = None  # "reset", "broken pipe" or "blocked" while sending

    @property
    def statuses(self) -> list[int]:
        return [r.status for r in self.responses]

    @property
    def first(self) -> ClientResponse | None:
        return self.responses[0] if self.responses else None

    def describe(self) -> str:
        """E.g. "400 close", "200,404 open", "hang" (nothing at all, still open), "reset"."""
        if not self.responses and self.ending == "open":
            return "hang"
        words = [",".join(map(str, self.statuses))] if self.responses else []
        words.append(self.ending)
        if self.unparsed:
            words.append("(unparsable response)")
        return " ".join(words)


class RawConnection:
    """A client socket; `read` parses responses as they come, within a time bound."""

    def __init__(self, port: int, *, host: str = "127.0.0.1", timeout: float = 5.0) -> None:
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.timeout = timeout
        self.outcome = Outcome()
        self._parser = httptools.HttpResponseParser(self)
        self._headers: list[tuple[str, str]] = []
        self._body: list[bytes] = []
        self._switched = False  # after a 101 the rest is not HTTP

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.sock.close()

    # -- sending --------------------------------------------------------------------------

    def send(self, data: bytes, timeout: float | None = None) -> bool:
        """Send all of `data`; False (and `outcome.send_error`) when the peer stopped it."""
        self.sock.settimeout(self.timeout if timeout is None else timeout)
        try:
            self.sock.sendall(data)
            return True
        except TimeoutError:
            self.outcome.send_error = "blocked"
        except BrokenPipeError:
            self.outcome.send_error = "broken pipe"
        except ConnectionResetError:
            self.outcome.send_error = "reset"
            self.outcome.ending = "reset"
        return False

    def send_segments(self, segments: Sequence[bytes], pause: float = 0.0) -> bool:
        """Each segment in its own send (TCP_NODELAY: its own packet), `pause` s apart."""
        for i, segment in enumerate(segments):
            if i and pause:
                time.sleep(pause)
            if not self.send(segment):
                return False
        return True

    def shutdown_write(self) -> None:
        try:
            self.sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    # -- reading --------------------------------------------------------------------------

    def read(self, responses: int | None = None, timeout: float | None = None) -> Outcome:
        """Read until `responses` responses in all (None: until the connection ends), the
        connection ends, or `timeout` seconds pass."""
        outcome = self.outcome
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while outcome.ending == "open":
            if responses is not None and len(outcome.responses) >= responses:
                break
            left = deadline - time.monotonic()
            if left <= 0:
                break
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(1 << 16)
            except TimeoutError:
                break
            except ConnectionResetError:
                outcome.ending = "reset"
                break
            if not data:
                outcome.ending = "close"
                break
            outcome.raw += data
            self._feed(data)
        return outcome

    def closed_within(self, timeout: float) -> Ending:
        """Read (and keep parsing) until the connection ends or `timeout`; its ending."""
        return self.read(None, timeout).ending

    def _feed(self, data: bytes) -> None:
        if self._switched or self.outcome.unparsed:
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._switched = True
        except httptools.HttpParserError as exc:
            self.outcome.unparsed = str(exc)

    # httptools callbacks
    def on_message_begin(self) -> None:
        self._headers = []
        self._body = []

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name.decode("latin-1").lower(), value.decode("latin-1")))

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        status = self._parser.get_status_code()
        if status < 200 and status != 101:
            return  # 100 Continue and other interim responses
        self.outcome.responses.append(ClientResponse(status, self._headers, b"".join(self._body)))


def converse(port: int, segments: Sequence[bytes], *, responses: int | None = 1,
             pause: float = 0.0, half_close: bool = False, timeout: float = 5.0) -> Outcome:
    """One connection: send the segments, then read (see `RawConnection.read`) and close."""
    with RawConnection(port, timeout=timeout) as conn:
        if conn.send_segments(segments, pause) and half_close:
            conn.shutdown_write()
        return conn.read(responses, timeout)
