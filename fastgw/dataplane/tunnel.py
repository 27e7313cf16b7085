"""After a 101 Switching Protocols: raw bytes both ways between a client and a backend.

The tunnel starts only once the backend has answered 101 to a websocket upgrade. Bytes
the client sent after its upgrade request were held (bounded, reading paused) until then
and go to the backend first; nothing the gateway did not parse ever reached a backend
before that point. Back-pressure runs both ways: a full backend socket pauses reading
the client, a full client socket pauses reading the backend. Either side closing closes
the other.
"""

from __future__ import annotations

from typing import Final

from fastgw.dataplane.exchange import ClientSide
from fastgw.dataplane.upstream import TunnelEnd, UpstreamConnection

__all__ = ["Tunnel"]

# The client connection's pause reason used by a tunnel (its own bit in the mask).
PAUSE_TUNNEL: Final = 1 << 6


class Tunnel(TunnelEnd):
    __slots__ = ("client", "backend", "client_full", "closed")

    def __init__(self, client: ClientSide, backend: UpstreamConnection) -> None:
        self.client = client
        self.backend = backend
        self.client_full = False
        self.closed = False
        backend.start_tunnel(self)

    def from_client(self, data: bytes) -> None:
        if not self.closed:
            self.backend.write(data)

    def from_backend(self, data: bytes) -> None:
        if not self.closed:
            self.client.write(data)

    def backend_paused(self, paused: bool) -> None:
        """The backend's socket is full (or has room again): hold the client."""
        if paused:
            self.client.pause_reading_for(PAUSE_TUNNEL)
        else:
            self.client.resume_reading_for(PAUSE_TUNNEL)

    def client_paused(self, paused: bool) -> None:
        """The client's socket is full (or has room again): hold the backend."""
        self.client_full = paused
        if paused:
            self.backend.pause_reading()
        else:
            self.backend.resume_reading()

    def backend_closed(self) -> None:
        if not self.closed:
            self.closed = True
            self.client.close()

    def client_closed(self) -> None:
        if not self.closed:
            self.closed = True
            self.backend.close()
