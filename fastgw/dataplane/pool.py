"""Per-target keep-alive pools of upstream connections, and name resolution.

Theory of operation
-------------------
A pool holds the idle keep-alive connections to one backend address (host, port) for
one worker. Idle connections sit in a LIFO stack: the most recently used one is the
warmest, and the least recently used ones age out through the idle timeout. A
connection goes back only if the framing allowed reuse (nginx's rule: no error, response
fully read, request fully sent, `Connection` not `close`, fewer than `max_requests`
requests). A backend that closes an idle connection is noticed at once (its
`connection_lost` removes it), so a stale socket is never handed out; bytes on an idle
connection also close it (the idle-close race in reference/craft.md).

Every open connection stays in the sweeper from connect to close; its deadline says what
it waits for (IDLE here, or the exchange's READ/WRITE), so handing a connection out and
back costs no set operations.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
import time
from collections import deque
from typing import Any, Final, cast

from fastgw.dataplane.sweeper import IDLE, DeadlineSweeper
from fastgw.dataplane.upstream import ConnectionOwner, UpstreamConnection

__all__ = ["PoolStats", "Resolver", "UpstreamPool", "tls_failure"]

log = logging.getLogger("fastgw.proxy")


class PoolStats:
    """Counters of one pool; rendered by the metrics layer at scrape time."""

    __slots__ = ("reused", "created", "connect_errors")

    def __init__(self) -> None:
        self.reused = 0
        self.created = 0
        self.connect_errors = 0


class Resolver:
    """Non-blocking name resolution with a small TTL cache (getaddrinfo in libuv's pool)."""

    __slots__ = ("_cache", "ttl")

    def __init__(self, ttl: float = 30.0) -> None:
        self._cache: dict[tuple[str, int], tuple[float, str]] = {}
        self.ttl = ttl

    async def resolve(self, loop: asyncio.AbstractEventLoop, host: str, port: int) -> str:
        if _is_ip(host):
            return host
        now = time.monotonic()
        hit = self._cache.get((host, port))
        if hit is not None and hit[0] > now:
            return hit[1]
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        if not infos:
            raise OSError(f"name resolution failed for {host}")
        address = str(infos[0][4][0])
        self._cache[(host, port)] = (now + self.ttl, address)
        return address


def _as_protocol(conn: UpstreamConnection) -> asyncio.Protocol:
    """The connection is an asyncio protocol by duck typing (its class is compiled)."""
    return cast(asyncio.Protocol, conn)


def _is_ip(host: str) -> bool:
    try:
        socket.inet_pton(socket.AF_INET6 if ":" in host else socket.AF_INET, host)
        return True
    except OSError:
        return False


# Per-request server names (TLS to a backend with preserve_host): pools kept per pool.
MAX_NAMED_POOLS: Final = 64


class UpstreamPool(ConnectionOwner):
    """Keep-alive connections to one backend address (host, port), for one worker.

    Over TLS (`tls` set) the pool is also one server name and one TLS profile: the
    registry keys pools by all of them, so TLS and plain connections, or connections
    verified differently, never mix (Pingora's pool key). `verify_depth` >= 0 bounds the
    verified chain (nginx's proxy_ssl_verify_depth: that many intermediates at most).
    """

    __slots__ = ("host", "port", "idle", "max_idle", "max_requests", "idle_timeout",
                 "sweeper", "closed", "stats", "loop", "tls", "server_name", "verify_depth",
                 "named")

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        host: str,
        port: int,
        *,
        max_idle: int,
        max_requests: int,
        idle_timeout: float,
        sweeper: DeadlineSweeper,
        tls: ssl.SSLContext | None = None,
        server_name: str | None = None,
        verify_depth: int = -1,
    ) -> None:
        self.loop = loop
        self.host = host
        self.port = port
        self.idle: deque[UpstreamConnection] = deque()
        self.max_idle = max_idle
        self.max_requests = max_requests
        self.idle_timeout = idle_timeout
        self.sweeper = sweeper
        self.closed = False
        self.stats = PoolStats()
        self.tls = tls
        self.server_name = server_name
        self.verify_depth = verify_depth
        self.named: dict[str, UpstreamPool] | None = None

    def for_server_name(self, name: str) -> UpstreamPool:
        """The pool of this address and TLS profile for another server name (SNI)."""
        if name == self.server_name:
            return self
        named = self.named
        if named is None:
            named = self.named = {}
        pool = named.get(name)
        if pool is None:
            if len(named) >= MAX_NAMED_POOLS:
                named.pop(next(iter(named))).close()  # the oldest goes: bounded memory
            pool = named[name] = UpstreamPool(
                self.loop, self.host, self.port, max_idle=self.max_idle,
                max_requests=self.max_requests, idle_timeout=self.idle_timeout,
                sweeper=self.sweeper, tls=self.tls, server_name=name,
                verify_depth=self.verify_depth)
            pool.stats = self.stats
        return pool

    def acquire(self) -> UpstreamConnection | None:
        idle = self.idle
        while idle:
            conn = idle.pop()
            if not conn.closed:
                conn.deadline = 0.0
                self.stats.reused += 1
                return conn
        return None

    async def connect(self, resolver: Resolver, timeout: float) -> UpstreamConnection:
        """A new connection, open and in the sweeper. Raises OSError (ConnectionError when
        the backend closed it before we could use it) or asyncio.TimeoutError."""
        loop = self.loop
        try:
            address = await resolver.resolve(loop, self.host, self.port)
            if self.tls is None:
                connecting = loop.create_connection(
                    lambda: _as_protocol(UpstreamConnection(self)), address, self.port)
            else:
                connecting = loop.create_connection(
                    lambda: _as_protocol(UpstreamConnection(self)), address, self.port,
                    ssl=self.tls, server_hostname=self.server_name or "",
                    ssl_handshake_timeout=timeout)
            transport, protocol = await asyncio.wait_for(connecting, timeout)
            conn = cast(UpstreamConnection, protocol)
            if self.verify_depth >= 0:
                self._check_depth(transport)
        except ssl.SSLError as exc:
            self.stats.connect_errors += 1
            log.error("%s while SSL handshaking to upstream %s:%d (server name %s)",
                      tls_failure(exc), self.host, self.port, self.server_name or "none")
            raise
        except ValueError as exc:  # a server name ssl refuses: a failed connect, not a crash
            self.stats.connect_errors += 1
            raise OSError(f"{self.host}:{self.port}: {exc}") from exc
        except BaseException:
            self.stats.connect_errors += 1
            raise
        self.stats.created += 1
        if conn.closed:
            # Lost between connect and now (already forgotten): never hand it out.
            raise ConnectionResetError(f"{self.host}:{self.port} closed the new connection")
        self.sweeper.add(conn)
        return conn

    def _check_depth(self, transport: Any) -> None:
        """Refuse a verified chain longer than verify_depth intermediates allow."""
        sslobj = transport.get_extra_info("ssl_object")
        chain = sslobj._sslobj.get_verified_chain() if sslobj is not None else []
        # leaf + intermediates + trust anchor (OpenSSL's depth counts the intermediates)
        if len(chain) > self.verify_depth + 2:
            transport.close()
            error = ssl.SSLCertVerificationError(f"certificate chain too long ({len(chain) - 2} "
                                                 f"intermediates, tls_verify_depth "
                                                 f"{self.verify_depth})")
            error.verify_code = 22  # X509_V_ERR_CERT_CHAIN_TOO_LONG
            error.verify_message = "certificate chain too long"
            raise error

    def release(self, conn: UpstreamConnection, now: float) -> None:
        if (
            self.closed
            or conn.requests >= self.max_requests
            or len(self.idle) >= self.max_idle
            or self.idle_timeout <= 0
        ):
            conn.close()
            return
        if conn.read_paused:  # an idle socket must be read to notice the backend closing it
            conn.resume_reading()
        conn.deadline = now + self.idle_timeout
        conn.deadline_kind = IDLE
        self.idle.append(conn)

    def forget(self, conn: UpstreamConnection) -> None:
        """Drop a closed connection from the sweeper and the idle list."""
        self.sweeper.discard(conn)
        try:
            self.idle.remove(conn)
        except ValueError:
            pass

    def close(self) -> None:
        """Stop pooling: idle connections close now, busy ones when their exchange ends."""
        self.closed = True
        while self.idle:
            self.idle.pop().close()
        if self.named is not None:
            for pool in self.named.values():
                pool.close()
            self.named = None


def tls_failure(exc: ssl.SSLError) -> str:
    """nginx's words for a failed handshake with a backend, with OpenSSL's reason."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        code = getattr(exc, "verify_code", None)
        message = getattr(exc, "verify_message", None) or exc.reason or str(exc)
        return f"upstream SSL certificate verify error: ({code}:{message})" if code \
            else f"upstream SSL certificate verify error: ({message})"
    return f"upstream SSL handshake failed: {exc.reason or exc}"
