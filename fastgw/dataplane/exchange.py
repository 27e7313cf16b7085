"""One request through the proxy: route, pick a target, relay request and response.

Theory of operation
-------------------
The downstream protocol parses a request head and creates an `Exchange`. When it becomes
the connection's active exchange (pipelined ones wait their turn), `begin()` routes it,
asks the service's balancer for a target and takes a pooled connection (synchronously:
no task on the keep-alive fast path) or opens one (a task, only for new connections).

Request body bytes arrive through `feed_body()`; they are written upstream as they come
(back-pressure: a paused upstream pauses reading the client). Up to `REPLAY_LIMIT` bytes
are also kept so an idempotent request can be retried on another target.

Retries (nginx `proxy_next_upstream error timeout`, which is what Kong runs): a connect
error, a timeout, or a reset before the first response byte is retried on a target not yet
tried, up to `service.retries` times. A non-idempotent request whose bytes were written to
a backend is never sent again (RFC 9110 §9.2.2). HTTP error statuses are never retried.

Response framing to the client (RFC 9112 §6): no body for HEAD, 1xx, 204 and 304;
Content-Length passes through; a chunked or close-delimited upstream body is re-chunked
for HTTP/1.1 clients and sent close-delimited to HTTP/1.0 clients.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from fastgw.dataplane.accesslog import valid_request_id
from fastgw.core.http.headers import (
    CONTINUE_100,
    FORWARDED,
    HOP_BY_HOP,
    IDEMPOTENT_METHODS,
    METHOD_BYTES,
    VIA_VALUE,
    clean_response_head,
    connection_tokens,
    cut_field,
    error_response,
)

if TYPE_CHECKING:
    from fastgw.dataplane.downstream import DownstreamProtocol
    from fastgw.dataplane.upstream import UpstreamConnection
    from fastgw.dataplane.snapshot import RoutePlan, Snapshot, TargetRuntime

log = logging.getLogger("fastgw.proxy")

# Router results kept per snapshot (Kong keeps an LRU of 5000 for the same reason).
ROUTE_CACHE_SIZE = 8192
REPLAY_LIMIT = 65536  # request body bytes kept for a retry; also the pre-connect buffer
VIA_LINE = b"Via: " + VIA_VALUE + b"\r\n"
CHUNK_END = b"0\r\n\r\n"
CRLF = b"\r\n"

# states
QUEUED, CONNECTING, SENDING, RESPONDING, DONE = range(5)

# x-request-id: replaced by exactly one (the client's when valid, else ours).
_REQUEST_DROP = HOP_BY_HOP | FORWARDED | {b"host", b"expect", b"via", b"x-request-id"}


class Exchange:
    __slots__ = (
        "down",
        "method",
        "url",
        "headers",
        "http11",
        "keep_alive",
        "upgrade",
        "host",
        "chunked_in",
        "expect_continue",
        "chunks",
        "chunks_size",
        "body_size",
        "request_complete",
        "sent_complete",
        "bytes_sent",
        "plan",
        "match",
        "upstream_target",
        "target",
        "conn",
        "tried",
        "attempts",
        "state",
        "response_started",
        "rechunk",
        "eof_body",
        "upgrade_buf",
        "continue_sent",
        "reused",
        "status",
        "hash_cookie",
        "counted",
        "pending",
        "prefix_line",
        "t0",
        "t_head",
        "head_size",
        "bytes_out",
        "request_id",
        "finished",
    )

    def __init__(
        self,
        down: DownstreamProtocol,
        method: str,
        url: bytes,
        headers: list[tuple[bytes, bytes, bytes]],
        http11: bool,
        keep_alive: bool,
        upgrade: bool,
        host: bytes | None,
        chunked_in: bool,
        expect_continue: bool,
    ) -> None:
        self.down = down
        self.method = method
        self.url = url
        self.headers = headers  # (lower name, name, value)
        self.http11 = http11
        self.keep_alive = keep_alive
        self.upgrade = upgrade
        self.host = host
        self.chunked_in = chunked_in
        self.expect_continue = expect_continue
        self.chunks: list[bytes] | None = []
        self.chunks_size = 0
        self.body_size = 0
        self.request_complete = False
        self.sent_complete = False
        self.bytes_sent = False
        self.plan: RoutePlan | None = None
        self.match = None
        self.upstream_target = b""
        self.target: TargetRuntime | None = None
        self.conn: UpstreamConnection | None = None
        self.tried: list[TargetRuntime] = []
        self.attempts = 0
        self.state = QUEUED
        self.response_started = False
        self.rechunk = False
        self.eof_body = False
        self.upgrade_buf: list[bytes] | None = None
        self.continue_sent = False
        self.reused = False
        self.status = 0
        self.hash_cookie: str | None = None
        self.counted = False  # the balancer counts this attempt (least-connections only)
        # Response bytes gathered during one upstream read, written with one syscall.
        self.pending: list[bytes] | None = None
        self.prefix_line = b""
        # Metrics and access log (see _finish): loop clock at the request head and at the
        # backend's response head (0.0: no upstream response), head bytes as received
        # (set by the downstream), response bytes handed to the client.
        self.t0 = down.started  # the request's first byte (Kong: ngx.req.start_time)
        self.t_head = 0.0
        self.head_size = 0
        self.bytes_out = 0
        self.request_id = b""  # the client's valid X-Request-Id, else ours (set lazily)
        self.finished = False

    # -- routing ----------------------------------------------------------------------

    def begin(self) -> None:
        """Route the request and start the first attempt (called when it becomes active)."""
        if self.body_size < 0:  # the downstream's mark: Content-Length over the limit
            self.body_size = 0
            self.respond_error(413, close=True)
            return
        down = self.down
        snapshot = down.server.snapshot
        url = self.url
        qpos = url.find(b"?")
        if qpos == -1:
            raw_path, query = url, b""
        else:
            raw_path, query = url[:qpos], url[qpos:]
        if not raw_path.startswith(b"/"):
            raw_path, query = _absolute_form(url, raw_path, query)
            if raw_path is None:
                self.respond_error(400)
                return
        cache = snapshot.route_cache
        key = (self.method, self.host, raw_path)
        hit = cache.get(key) if cache is not None else None
        if hit is None:
            hit = self._route(snapshot, raw_path)
            if cache is not None:
                if len(cache) >= ROUTE_CACHE_SIZE:
                    cache.clear()  # cheap bound; a working set that fits stays hot
                cache[key] = hit
        match, plan, upstream_path, prefix_line = hit
        if plan is None:
            if match is None:
                self.respond_error(404)
            else:
                self.respond_error(503, "no Service found with those values")
            return
        self.plan = plan
        self.match = match
        self.prefix_line = prefix_line
        self.upstream_target = upstream_path + query if query else upstream_path
        if self.expect_continue and not self.request_complete and not self.continue_sent:
            # We answer 100 ourselves when ready for the body, as nginx does (RFC 9110 §10.1.1).
            self.continue_sent = True
            down.transport.write(CONTINUE_100)
        self._next_attempt()

    def _route(
        self, snapshot: Snapshot, raw_path: bytes
    ) -> tuple[Any, RoutePlan | None, bytes, bytes]:
        """Router match and upstream path (cached per method, Host and path, like Kong)."""
        router = snapshot.router
        headers_map = self.headers_map() if router.uses_headers else None
        host = self.host.decode("latin-1") if self.host is not None else None
        match = router.match(
            self.method, host, raw_path.decode("latin-1"), headers_map, self.down.server_port_int
        )
        if match is None:
            return None, None, b"", b""
        plan = snapshot.route_plans.get(match.route.id)
        if plan is None:
            return match, None, b"", b""
        prefix = match.stripped_prefix
        prefix_line = b"X-Forwarded-Prefix: " + prefix.encode("latin-1") + CRLF if prefix else b""
        return match, plan, match.upstream_path(plan.service_path).encode("latin-1"), prefix_line

    def headers_map(self) -> dict[str, str]:
        result: dict[str, str] = {}
        for lname, _, value in self.headers:
            key = lname.decode("latin-1")
            text = value.decode("latin-1")
            result[key] = result[key] + ", " + text if key in result else text
        return result

    def _next_attempt(self) -> None:
        plan = self.plan
        assert plan is not None
        target = plan.pick(self, self.tried)
        if target is None:
            if self.attempts == 0:
                self.respond_error(503)
            else:
                self.respond_error(self.status or 502)
            return
        self.target = target
        owner = target.owner
        self.counted = owner is not None and owner.counts  # least-connections only
        self.tried.append(target)
        self.attempts += 1
        conn = target.pool.acquire()
        if conn is not None:
            self.reused = True
            self._attach(conn)
        else:
            self.state = CONNECTING
            self.reused = False
            self.down.loop.create_task(self._connect(target))

    async def _connect(self, target: TargetRuntime) -> None:
        plan = self.plan
        assert plan is not None
        try:
            conn = await target.pool.connect(self.down.server.resolver, plan.connect_timeout)
        except asyncio.TimeoutError:
            if self.state == CONNECTING:
                self._attempt_failed("connect timeout", 504)
            return
        except OSError as exc:
            if self.state == CONNECTING:
                log.debug("connect to %s failed: %s", target.key, exc)
                self._attempt_failed("connect error", 502)
            return
        if self.state != CONNECTING:
            target.pool.release(conn)  # the client went away meanwhile; keep it warm
            return
        self._attach(conn)

    # -- sending the request ----------------------------------------------------------

    def _attach(self, conn: UpstreamConnection) -> None:
        self.conn = conn
        self.state = SENDING
        conn.begin(self, self.method == "HEAD")
        parts = [self._upstream_head()]
        chunks = self.chunks
        if chunks:
            if self.chunked_in:
                for chunk in chunks:
                    parts += (b"%x\r\n" % len(chunk), chunk, CRLF)
            else:
                parts += chunks
        if self.request_complete:
            if self.chunked_in:
                parts.append(CHUNK_END)
            self.sent_complete = True
        transport = conn.transport
        assert transport is not None
        transport.write(b"".join(parts))
        self.bytes_sent = True
        plan = self.plan
        assert plan is not None
        # While the client is still sending the body, only a stalled backend write
        # (upstream_write_paused) arms a deadline; the client has its own body timeout.
        conn.deadline = self.down.loop.time() + plan.read_timeout if self.sent_complete else 0.0
        if self.upgrade_buf:
            transport.write(b"".join(self.upgrade_buf))
            self.upgrade_buf = []
        if not self.request_complete and self.chunks_size >= REPLAY_LIMIT:
            self.down.resume_reading_for_body()

    def _upstream_head(self) -> bytes:
        """Request line and headers for the chosen target (RFC 9110 §7.6 proxy rules)."""
        down = self.down
        target = self.target
        plan = self.plan
        assert target is not None and plan is not None
        if plan.preserve_host and self.host is not None:
            host = self.host
        else:
            host = target.host_header
        parts = [
            METHOD_BYTES.get(self.method) or self.method.encode("latin-1"),
            b" ",
            self.upstream_target,
            b" HTTP/1.1\r\nHost: ",
            host,
            CRLF,
        ]
        incoming = _copy_request_headers(parts, self.headers, down.trusted, None, self)
        if incoming is _RESTART:
            # Connection named extra hop-by-hop headers (RFC 9110 §7.6.1): copy again without them.
            del parts[6:]
            tokens: set[bytes] = set()
            for lname, _, value in self.headers:
                if lname == b"connection":
                    tokens |= connection_tokens(value)
            incoming = _copy_request_headers(parts, self.headers, down.trusted, tokens, self)
        if self.chunked_in:
            parts.append(b"Transfer-Encoding: chunked\r\n")
        if self.upgrade:
            for lname, name, value in self.headers:
                if lname == b"upgrade":
                    parts += (b"Upgrade: ", value, CRLF)
            parts.append(b"Connection: upgrade\r\n")
        request_id = self.request_id
        if not request_id:
            request_id = self.request_id = down.server.request_ids.new()
        parts += (b"X-Request-Id: ", request_id, CRLF)
        if incoming is None:
            # Via, X-Forwarded-*, X-Real-IP and the blank line, cached per connection.
            parts.append(down.forwarded_tail(self.host, self.prefix_line))
        else:
            parts.append(VIA_LINE)
            match = self.match
            prefix = match.stripped_prefix if match is not None else None
            parts.append(down.forwarded_headers(incoming, self.host, prefix))
            parts.append(CRLF)
        return b"".join(parts)

    def feed_body(self, data: bytes) -> None:
        """A piece of the request body from the client parser."""
        if self.state == DONE:
            return  # the answer is already given (e.g. 404): the body is read and dropped
        self.body_size += len(data)
        limit = self.down.server.max_body_size
        if limit and self.body_size > limit:
            self.respond_error(413, close=True)
            return
        conn = self.conn
        if conn is not None and self.state >= SENDING:
            transport = conn.transport
            assert transport is not None
            if self.chunked_in:
                transport.writelines((b"%x\r\n" % len(data), data, CRLF))
            else:
                transport.write(data)
            chunks = self.chunks
            if chunks is not None:
                self.chunks_size += len(data)
                if self.chunks_size > REPLAY_LIMIT:
                    self.chunks = None  # too big to replay: this request is not retried
                else:
                    chunks.append(data)
            return
        if self.chunks is None:
            # Mid-retry of a body that could not be kept: nothing sane to do but fail.
            self.respond_error(502, close=True)
            return
        self.chunks.append(data)
        self.chunks_size += len(data)
        if self.chunks_size >= REPLAY_LIMIT:
            self.down.pause_reading_for_body()

    def request_done(self) -> None:
        """The client has sent the whole request."""
        self.request_complete = True
        if self.state == SENDING and self.conn is not None and not self.sent_complete:
            transport = self.conn.transport
            assert transport is not None
            if self.chunked_in:
                transport.write(CHUNK_END)
            self.sent_complete = True
            plan = self.plan
            assert plan is not None
            self.conn.deadline = self.down.loop.time() + plan.read_timeout

    def request_fully_sent(self) -> bool:
        return self.sent_complete

    def upstream_write_paused(self, paused: bool) -> None:
        conn = self.conn
        plan = self.plan
        if paused:
            self.down.pause_reading_for_upstream()
            if conn is not None and plan is not None and not self.response_started:
                conn.deadline = self.down.loop.time() + plan.write_timeout
        else:
            self.down.resume_reading_for_upstream()
            if conn is not None and plan is not None and not self.response_started:
                conn.deadline = (
                    self.down.loop.time() + plan.read_timeout if self.sent_complete else 0.0
                )

    # -- relaying the response --------------------------------------------------------

    def on_response_head(
        self,
        conn: UpstreamConnection,
        status: int,
        raw_head: bytes,
        special: list[tuple[bytes, bytes, bytes]],
    ) -> None:
        """`raw_head`: the backend's status line and fields as received, CRLF-terminated;
        `special`: its fields the proxy acts on (see headers.clean_response_head)."""
        self.state = RESPONDING
        self.response_started = True
        self.status = status
        passive = self.target.passive if self.target is not None else None
        if passive is not None:  # passive health checks (fastgw.dataplane.passive); None = off
            passive.on_status(status)
        down = self.down
        self.t_head = now = down.loop.time()
        upgrade = status == 101
        head, content_length, chunked, kept = clean_response_head(raw_head, status, special)
        parts = [head, VIA_LINE]
        if self.method == "HEAD" or status < 200 or status in (204, 304):
            pass  # no body on the wire (RFC 9112 §6.3 rule 1)
        elif content_length and not chunked:
            pass
        else:
            self.eof_body = not chunked
            if self.http11:
                self.rechunk = True
                parts.append(b"Transfer-Encoding: chunked\r\n")
            else:
                self.keep_alive = False  # close-delimited body for HTTP/1.0
        if upgrade:
            pass
        elif not self.keep_alive or down.draining or not self.request_complete or self.upgrade:
            # An unread request body (upstream answered early) cannot be skipped cheaply.
            # A refused upgrade closes too: the client parser stopped at the upgrade.
            self.keep_alive = False
            if kept is not None:
                parts[0] = cut_field(head, kept) or head
            parts.append(b"Connection: close\r\n")
        elif not self.http11 and kept is None:
            parts.append(b"Connection: keep-alive\r\n")
        cookie = self.plan.set_cookie(self) if self.plan is not None and self.plan.hashes_cookie else None
        if cookie:
            parts.append(cookie)
        parts += (b"X-Request-Id: ", self.request_id, CRLF, CRLF)
        # The head waits for the body bytes of the same read: one write per response
        # instead of two for small ones (flushed by the upstream after each read).
        head = b"".join(parts)
        self.bytes_out = len(head)
        self.pending = [head]
        plan = self.plan
        if down.write_paused:
            # The client is still full from an earlier (pipelined) response: pause_writing
            # will not fire again, so hold this backend now (resume_writing releases it).
            conn.deadline = 0.0
            conn.pause_reading()
        elif plan is not None:
            conn.deadline = now + plan.read_timeout

    def on_response_body(self, data: bytes) -> None:
        pending = self.pending
        if pending is None:
            self.pending = pending = []
        if self.rechunk:
            size = b"%x\r\n" % len(data)
            pending += (size, data, CRLF)
            self.bytes_out += len(size) + len(data) + 2
        else:
            pending.append(data)
            self.bytes_out += len(data)
        conn = self.conn
        if conn is not None and conn.deadline:
            plan = self.plan
            assert plan is not None
            conn.deadline = self.down.loop.time() + plan.read_timeout

    def flush_pending(self) -> None:
        """Write what this read produced for the client (called after each upstream read)."""
        pending = self.pending
        if pending is not None:
            self.pending = None
            if len(pending) == 1:
                self.down.transport.write(pending[0])
            else:
                self.down.transport.writelines(pending)

    def on_response_complete(self, conn: UpstreamConnection) -> None:
        if self.rechunk:
            if self.pending is None:
                self.pending = []
            self.pending.append(CHUNK_END)
            self.bytes_out += 5
        # Let go of the connection first: if this last write fills the client's buffer,
        # pause_writing must not pause a connection that is already back in the pool
        # (nothing would resume it and the next request on it would hang). The
        # connection has already dropped us (pooled or closed), so of _release_conn only
        # this part applies.
        if self.counted:
            self._end_attempt()
        self.conn = None
        self.flush_pending()
        self.state = DONE
        self._finish(self.status)
        self.down.exchange_done(self)

    def on_upstream_upgrade(self, conn: UpstreamConnection, rest: bytes) -> None:
        """101 Switching Protocols: from now on, bytes flow both ways untouched."""
        down = self.down
        self.flush_pending()
        self._release_conn(keep=True)
        self.state = DONE
        self._finish(101)  # the tunnel that follows is not an HTTP request any more
        conn.start_tunnel(down.transport)
        if rest:
            down.transport.write(rest)
        down.start_tunnel(conn)

    # -- failures ---------------------------------------------------------------------

    def on_upstream_lost(self, conn: UpstreamConnection) -> None:
        if self.state == DONE or conn is not self.conn:
            return
        if self.response_started:
            if self.eof_body:
                self.on_response_complete(conn)  # close-delimited body ended (RFC 9112 §6.3)
            else:
                self._release_conn()
                self.abort()
            return
        self._attempt_failed("connection reset", 502)

    def on_upstream_failed(self, conn: UpstreamConnection, reason: str, response_bytes: bool) -> None:
        if self.state == DONE or conn is not self.conn:
            return
        if self.response_started:
            self._release_conn()
            self.abort()
            return
        self._attempt_failed(reason, 502, retryable=not response_bytes)

    def on_upstream_timeout(self, conn: UpstreamConnection) -> None:
        if self.state == DONE:
            return
        if self.response_started:
            self._release_conn()
            self.abort()
            return
        self._attempt_failed("timeout", 504)

    def _attempt_failed(self, reason: str, status: int, retryable: bool = True) -> None:
        self._release_conn()
        self.status = status
        target = self.target
        if target is not None:
            if self.reused and reason == "connection reset":
                # A pooled connection the backend had closed (the idle-close race): the
                # target itself may be fine, so it is not reported, stays eligible, and
                # this attempt does not count against `retries` (nginx: `tries++` for a
                # cached connection). Bounded: each such failure drops one idle connection.
                self.attempts -= 1
                if target in self.tried:
                    self.tried.remove(target)
            else:
                target.report_failure(reason)
        plan = self.plan
        assert plan is not None
        if (
            retryable
            and self.attempts <= plan.retries
            and (not self.bytes_sent or (self.method in IDEMPOTENT_METHODS and self.chunks is not None))
        ):
            log.debug("retrying %s %s after %s on %s", self.method, self.url, reason, target)
            self.sent_complete = False
            self.state = QUEUED
            self._next_attempt()
            return
        log.info("upstream %s: %s", target.key if target else "?", reason)
        self.respond_error(status)

    def _end_attempt(self) -> None:
        """The balancer stops counting this attempt (callers check `counted`, which is
        set only for a target whose owner counts: least-connections)."""
        self.counted = False
        target = self.target
        assert target is not None and target.owner is not None
        target.owner.release(target)

    def _release_conn(self, keep: bool = False) -> None:
        if self.counted:
            self._end_attempt()
        conn = self.conn
        if conn is not None:
            self.conn = None
            if conn.exchange is self:
                conn.deadline = 0.0
                if not keep:
                    conn.detach()

    # -- endings ----------------------------------------------------------------------

    def respond_error(self, status: int, message: str | None = None, close: bool = False) -> None:
        if self.response_started:
            self.abort()
            return
        self._release_conn()
        down = self.down
        if close or not self.request_complete and (
            self.body_size == 0 and self.expect_continue and not self.continue_sent
        ):
            self.keep_alive = False
        if not self.request_complete and close:
            self.keep_alive = False
        keep = self.keep_alive and not down.draining
        self.keep_alive = keep
        self.response_started = True
        self.status = status
        response = error_response(
            status, message, keep_alive=keep, head_only=self.method == "HEAD",
            request_id=self._request_id().decode("latin-1"),
        )
        self.bytes_out += len(response)
        down.transport.write(response)
        self.state = DONE
        self._finish(status)
        down.exchange_done(self)

    def abort(self) -> None:
        """The response cannot be completed: cut the client connection."""
        self.flush_pending()
        self._release_conn()
        self.state = DONE
        self.keep_alive = False
        self._finish(self.status)
        self.down.abort()

    def client_gone(self) -> None:
        """The client connection closed under us."""
        self._release_conn()  # also ends a pending connect attempt's accounting
        self.state = DONE
        # nginx's 499: the client closed before it got a status (else the status it got).
        self._finish(self.status if self.response_started else 499)

    def _request_id(self) -> bytes:
        """This request's id: the client's valid X-Request-Id, else a new one (off the fast path)."""
        if not self.request_id:
            for lname, _, value in self.headers:
                if lname == b"x-request-id" and valid_request_id(value):
                    self.request_id = value
                    break
            else:
                self.request_id = self.down.server.request_ids.new()
        return self.request_id

    def _finish(self, status: int) -> None:
        """Count this request, once, however it ended (metrics and access log)."""
        if self.finished:
            return
        self.finished = True
        down = self.down
        server = down.server
        if not server.count_requests and server.access_log is None:
            return  # gateway.metrics off and no access log: nothing to record
        t0 = self.t0
        request_ms = (down.loop.time() - t0) * 1000.0
        t_head = self.t_head
        upstream_ms = (t_head - t0) * 1000.0 if t_head else -1.0
        # Request line ("GET <url> HTTP/1.1\r\n"), fields, blank line, body: what Kong's
        # $request_length counts (body bytes are counted decoded when chunked).
        size_in = len(self.method) + len(self.url) + 14 + self.head_size + self.body_size
        plan = self.plan
        if server.count_requests:
            if plan is not None:
                plan.stats.record(
                    status, request_ms, upstream_ms, size_in, self.bytes_out, self.attempts
                )
            else:
                server.stats.count_unmatched(status)
        access_log = server.access_log
        if access_log is not None:
            access_log.add(self, request_ms, upstream_ms, size_in, self.bytes_out, status,
                           self._request_id())


_RESTART: dict[bytes, bytes] = {}
_CONN_KEYWORDS = frozenset({b"close", b"keep-alive", b"upgrade"})


def _copy_request_headers(
    parts: list[bytes],
    headers: list[tuple[bytes, bytes, bytes]],
    trusted: bool,
    extra_drop: set[bytes] | None,
    exchange: Exchange,
) -> dict[bytes, bytes] | None:
    """Append forwardable request headers to `parts`.

    Returns the incoming X-Forwarded-* values of a trusted client (None when there are
    none), or `_RESTART` when a Connection header names other headers to drop. A valid
    X-Request-Id becomes `exchange.request_id` (the caller writes the one header).
    """
    incoming: dict[bytes, bytes] | None = None
    for lname, name, value in headers:
        if lname in _REQUEST_DROP:
            if lname == b"connection":
                if extra_drop is None and connection_tokens(value) - _CONN_KEYWORDS:
                    return _RESTART
            elif lname in FORWARDED:
                if trusted:
                    if incoming is None:
                        incoming = {}
                    incoming[lname] = value
            elif lname == b"via":
                parts += (b"Via: ", value, CRLF)
            elif lname == b"x-request-id" and valid_request_id(value):
                exchange.request_id = value
            continue
        if extra_drop is not None and lname in extra_drop:
            continue
        parts += (name, b": ", value, CRLF)
    return incoming


def _absolute_form(url: bytes, path: bytes, query: bytes) -> tuple[bytes | None, bytes]:
    """`GET http://host/path HTTP/1.1` (RFC 9112 §3.2.2): keep only the path and query."""
    lowered = url[:8].lower()
    if not (lowered.startswith(b"http://") or lowered.startswith(b"https://")):
        return None, b""
    rest = url.split(b"//", 1)[1]
    slash = rest.find(b"/")
    if slash == -1:
        qpos = rest.find(b"?")
        return b"/", rest[qpos:] if qpos != -1 else b""
    rest = rest[slash:]
    qpos = rest.find(b"?")
    if qpos == -1:
        return rest, b""
    return rest[:qpos], rest[qpos:]
