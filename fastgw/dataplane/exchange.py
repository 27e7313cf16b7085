"""One request through the proxy, as a state machine: route, buffer, pick, send, relay.

Theory of operation
-------------------
The client connection (dataplane.downstream) turns every accepted request head into an
`Exchange` and starts it when it becomes the connection's active exchange (pipelined
ones wait in order). Every change of state goes through `_go(event)`, which looks the
transition up in TRANSITIONS below; an event a state does not accept is a bug and raises
`IllegalTransition` (the client connection turns that into a 500 and a close). The
request's other dimension, whether the client has sent its whole body, is the flag
`request_complete`, not a state: a backend may answer before the body is in.

States
  IDLE        accepted, waiting for its turn on the connection
  BUFFERING   routed; the body is read before a target is chosen (request_buffering)
  CONNECTING  a target is chosen; a new connection to it is being opened
  SENDING     the request head is upstream; body bytes are still going there
  WAITING     the whole request is upstream; waiting for the response head
  RELAYING    the response head went to the client; its body follows
  COLLECTING  the response head is held back while its body is collected, to be
              rewritten by a plugin (response-transformer's JSON edits)
  DONE        finished: response complete, error answered, aborted, or client gone

Events and their rows (every row is a test in tests/protocol/test_exchange_states.py)
  BUFFER   IDLE -> BUFFERING                      route found, body to read first
  CONNECT  IDLE, BUFFERING, CONNECTING, SENDING,  no idle connection to the chosen
           WAITING -> CONNECTING                  target (the last three: a retry)
  ATTACH   IDLE, BUFFERING, CONNECTING, SENDING,  a connection is ready, the head is
           WAITING -> SENDING                     written (SENDING/WAITING: a retry)
  SENT     SENDING -> WAITING                     the last request byte is written
  HEAD     SENDING, WAITING -> RELAYING           the response head (SENDING: an early
                                                  answer while the body still comes)
  HOLD     RELAYING -> COLLECTING                 a plugin rewrites this body: the head
                                                  waits for the whole body
  RELEASE  COLLECTING -> RELAYING                 the body is in (rewritten, with its
                                                  new Content-Length) or over the bound
                                                  (relayed unchanged)
  END      RELAYING -> DONE                       the last response byte went out
  UPGRADE  RELAYING -> DONE                       101: the connection becomes a tunnel
  REPLY    IDLE .. WAITING, COLLECTING -> DONE    the gateway answers (404, 502, 504...;
                                                  COLLECTING: the backend failed mid-body,
                                                  and the client has had no byte yet)
  ABORT    RELAYING -> DONE                       a started response cannot complete:
                                                  the client connection is cut
  GONE     any state but DONE -> DONE             the client went away

Bodies. With request buffering (Kong's default) the whole body is read into a
`RequestBody` (memory, then a temp file) before a target is chosen, so a slow upload
holds no backend connection and an over-limit body gets its 413 before any backend sees
a byte; it goes upstream with `Content-Length`. Without it, the body streams as it comes
(`Transfer-Encoding: chunked` when the client chunked it) and the first REPLAY_LIMIT
bytes are kept for a retry. With response buffering (also Kong's default), a client whose
socket is full does not stall the backend: its bytes go to a `ResponseSpool` and the
connection returns to its pool as soon as the response is read.

Retries (nginx `proxy_next_upstream error timeout`, which is what Kong runs): a connect
error, a timeout, or a reset before the first response byte is retried on a target not
yet tried, up to `service.retries` times. A non-idempotent request whose bytes were
written to a backend is never sent again (RFC 9110 §9.2.2). HTTP statuses are never
retried.

Rewritten bodies. A response whose body a plugin rewrites (`PluginCall.rewrite`, set in
header_filter) is collected whole, up to REWRITE_LIMIT decoded bytes, before its head
goes out with `Content-Length` (never chunked). A larger one is relayed unchanged, with
the framing it would have had (logged once per worker). Responses without a body (HEAD,
1xx, 204, 304) are never held.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Final

from fastgw.core.http.errors import CONTINUE_100, error_response
from fastgw.core.http.fields import IDEMPOTENT_METHODS, VIA_LINE
from fastgw.core.http.request import CHUNKED, LENGTH, NO_BODY, HeadSink, RequestHead
from fastgw.core.http.response import (
    CLOSE_DELIMITED,
    RE_CHUNK,
    clean_response_head,
    cut_field,
    response_framing,
)
from fastgw.core.http.response import LENGTH as RESPONSE_LENGTH
from fastgw.core.http.response import NO_BODY as RESPONSE_NO_BODY
from fastgw.core.https_redirect import (
    HTTPS_MESSAGE,
    UPGRADE_FIELDS,
    forwarded_https,
    location_field,
)
from fastgw.core.http.upstream_head import ForwardedFields, build_upstream_head, client_request_id
from fastgw.core.plugins.iprestriction import client_address
from fastgw.dataplane.balancing import BalanceContext, TargetRuntime
from fastgw.dataplane.body import REPLAY_LIMIT, RequestBody, ResponseSpool
from fastgw.dataplane.plugins.phases import PluginCall, PluginChain, PluginReply, render_reply
from fastgw.dataplane.snapshot import RouteHit, RoutePlan
from fastgw.dataplane.sweeper import READ, WRITE
from fastgw.dataplane.context import WorkerContext
from fastgw.dataplane.logrecord import LogRecord
from fastgw.dataplane.pool import UpstreamPool
from fastgw.dataplane.upstream import ResponseSink, UpstreamConnection


log = logging.getLogger("fastgw.proxy")

CHUNK_END: Final = b"0\r\n\r\n"
CRLF: Final = b"\r\n"
# The largest request body plugins read (key_in_body, body edits); larger ones are
# forwarded as received and look empty to them.
PLUGIN_BODY_LIMIT: Final = 8 << 20
# The largest response body a plugin rewrites; a larger one passes unchanged.
REWRITE_LIMIT: Final = PLUGIN_BODY_LIMIT
SIZE_EXCEEDED: Final = "Request size limit exceeded"  # request-size-limiting's 413

# -- the state machine ----------------------------------------------------------------

IDLE: Final = 0
BUFFERING: Final = 1
CONNECTING: Final = 2
SENDING: Final = 3
WAITING: Final = 4
RELAYING: Final = 5
DONE: Final = 6
COLLECTING: Final = 7
STATE_NAMES: Final = ("IDLE", "BUFFERING", "CONNECTING", "SENDING", "WAITING", "RELAYING", "DONE",
                      "COLLECTING")
BUFFER: Final = 0
CONNECT: Final = 1
ATTACH: Final = 2
SENT: Final = 3
HEAD: Final = 4
END: Final = 5
UPGRADE: Final = 6
REPLY: Final = 7
ABORT: Final = 8
GONE: Final = 9
HOLD: Final = 10
RELEASE: Final = 11
EVENT_NAMES: Final = ("BUFFER", "CONNECT", "ATTACH", "SENT", "HEAD", "END", "UPGRADE", "REPLY",
               "ABORT", "GONE", "HOLD", "RELEASE")

TRANSITIONS: Final[dict[tuple[int, int], int]] = {
    (IDLE, BUFFER): BUFFERING,
    (IDLE, CONNECT): CONNECTING,
    (BUFFERING, CONNECT): CONNECTING,
    (CONNECTING, CONNECT): CONNECTING,
    (SENDING, CONNECT): CONNECTING,
    (WAITING, CONNECT): CONNECTING,
    (IDLE, ATTACH): SENDING,
    (BUFFERING, ATTACH): SENDING,
    (CONNECTING, ATTACH): SENDING,
    (SENDING, ATTACH): SENDING,
    (WAITING, ATTACH): SENDING,
    (SENDING, SENT): WAITING,
    (SENDING, HEAD): RELAYING,
    (WAITING, HEAD): RELAYING,
    (RELAYING, HOLD): COLLECTING,
    (COLLECTING, RELEASE): RELAYING,
    (RELAYING, END): DONE,
    (RELAYING, UPGRADE): DONE,
    (IDLE, REPLY): DONE,
    (BUFFERING, REPLY): DONE,
    (CONNECTING, REPLY): DONE,
    (SENDING, REPLY): DONE,
    (WAITING, REPLY): DONE,
    (COLLECTING, REPLY): DONE,
    (RELAYING, ABORT): DONE,
    (IDLE, GONE): DONE,
    (BUFFERING, GONE): DONE,
    (CONNECTING, GONE): DONE,
    (SENDING, GONE): DONE,
    (WAITING, GONE): DONE,
    (RELAYING, GONE): DONE,
    (COLLECTING, GONE): DONE,
}
# The same table as a flat tuple, indexed by state * len(EVENT_NAMES) + event (-1: no row).
_NEXT: Final = tuple(TRANSITIONS.get((s, e), -1) for s in range(8) for e in range(12))
_N_EVENTS: Final = 12



_over_limit_logged = False  # the REWRITE_LIMIT warning, once per worker


class HeldResponse:
    """A response held back for a body rewrite: its head's parts (``length_at``: the
    framing field's slot, for the new Content-Length) and its decoded body so far."""

    __slots__ = ("parts", "length_at", "rechunk", "chunks", "size")

    def __init__(self, parts: list[bytes], length_at: int, rechunk: bool) -> None:
        self.parts = parts
        self.length_at = length_at
        self.rechunk = rechunk  # the framing to use if it is relayed unchanged
        self.chunks: list[bytes] = []
        self.size = 0


class IllegalTransition(Exception):
    """An event the current state has no row for: a bug, never a client's doing."""


class ClientSide(HeadSink):
    """What an exchange needs of its client connection (dataplane.downstream), as a base
    class: compiled, the calls are direct."""

    __slots__ = ("server", "client_ip", "port", "https", "fwd", "write_paused", "started")

    fwd: ForwardedFields  # set when the connection is made

    def __init__(self, server: WorkerContext, port: int, https: bool = False) -> None:
        self.server = server
        self.client_ip = ""
        self.port = port
        self.https = https  # accepted on an ssl listener
        self.write_paused = False
        self.started = 0.0  # loop time at the current request's first byte

    def write(self, data: bytes) -> None:
        raise NotImplementedError

    def writelines(self, parts: list[bytes]) -> None:
        raise NotImplementedError

    def body_too_large(self, exchange: Exchange) -> None:
        raise NotImplementedError

    def pause_reading_for(self, reason: int) -> None:
        raise NotImplementedError

    def resume_reading_for(self, reason: int) -> None:
        raise NotImplementedError

    def exchange_done(self, exchange: Exchange) -> None:
        raise NotImplementedError

    def abort(self, exchange: Exchange) -> None:
        raise NotImplementedError

    def start_tunnel(self, conn: UpstreamConnection) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


# The client connection's pause reason an exchange uses (its own bit in the mask).
PAUSE_BODY: Final = 1  # an unattached streaming exchange holds REPLAY_LIMIT body bytes
PAUSE_UPSTREAM: Final = 2  # the backend's socket is full


class Exchange(ResponseSink):
    __slots__ = (
        "client", "server", "head", "state", "keep_alive", "body", "body_size",
        "request_complete", "request_sent", "sent_any", "send_pos", "upstream_paused", "chunk_up",
        "hit", "plan", "ctx", "target", "conn", "tried", "attempts", "reused", "counted",
        "status", "rechunk", "eof_body", "pending", "spool", "upstream_done",
        "request_id", "trace_id", "t0", "t_sent", "t_head", "t_end", "bytes_out", "sent_head",
        "finished", "call", "held",
    )

    def __init__(self, client: ClientSide, head: RequestHead, keep_alive: bool) -> None:
        self.client = client
        self.server = client.server
        self.head = head
        self.state = IDLE
        self.keep_alive = keep_alive
        self.body: RequestBody | None = None  # created with the first body byte
        self.body_size = 0  # request body bytes received (decoded)
        self.request_complete = head.framing == NO_BODY or (
            head.framing == LENGTH and head.content_length == 0)
        self.request_sent = False  # every request byte is upstream (this attempt)
        self.sent_any = False  # some request byte reached a backend (any attempt)
        self.send_pos = -1  # >= 0: sending a stored body from this offset
        self.upstream_paused = False
        self.chunk_up = False  # the body goes upstream chunked (streamed, size unknown)
        self.hit: RouteHit | None = None
        self.plan: RoutePlan | None = None
        self.ctx: BalanceContext | None = None
        self.target: TargetRuntime | None = None
        self.conn: UpstreamConnection | None = None
        self.tried: list[TargetRuntime] = []
        self.attempts = 0
        self.reused = False
        self.counted = False  # the balancer counts this attempt (least-connections only)
        self.status = 0
        self.rechunk = False
        self.eof_body = False  # the backend's body ends when it closes (RFC 9112 §6.3 r8)
        # Response bytes gathered during one upstream read, written with one syscall.
        self.pending: list[bytes] | None = None
        self.spool: ResponseSpool | None = None
        self.upstream_done = False  # the response is read; only the spool is left
        self.request_id = b""
        self.trace_id = b""  # W3C trace id sent upstream (b"": tracing off or not sent)
        # Metrics and access log: loop time at the request's first byte and at the
        # backend's response head (0.0: none), response bytes handed to the client.
        self.t0 = client.started
        self.t_sent = 0.0  # when the request first went upstream (Kong's balancer end)
        self.t_head = 0.0
        self.t_end = 0.0  # loop time at the end (when the last response byte was read)
        self.bytes_out = 0
        self.sent_head = b""  # the response head as sent, kept only for the access log
        self.finished = False
        # The request's plugin state (dataplane.plugins.phases), on routes with plugins.
        self.call: PluginCall | None = None
        self.held: HeldResponse | None = None  # COLLECTING: the head and body so far

    def _go(self, event: int) -> None:
        trace = self.server.trace
        if trace is not None:
            trace.append((self.state, event))
        state = _NEXT[self.state * _N_EVENTS + event]
        if state < 0:
            raise IllegalTransition(f"{EVENT_NAMES[event]} in state {STATE_NAMES[self.state]}")
        self.state = state

    # -- the request ------------------------------------------------------------------

    def start(self) -> None:
        """This exchange becomes the connection's active one: route it and go on."""
        head = self.head
        client = self.client
        hit = self.server.snapshot.route(head, client.port)
        plan = hit.plan
        if plan is None:
            if hit.match is None:
                self.reply(404)
            else:
                self.reply(503, "no Service found with those values")
            return
        self.hit = hit
        self.plan = plan
        if plan.https_only and not client.https and \
                not forwarded_https(head, client.fwd.trusted):
            self._https_required(plan.https_redirect)
            return
        chain = plan.plugins
        if chain is not None and (self.request_complete or not chain.needs_body):
            if self._access(chain):
                return  # a plugin answered
        if plan.needs_context:
            ctx = self.ctx = BalanceContext(head, client.client_ip, hit.match.captures)
            if self.call is not None:
                ctx.identify(self.call.consumer, self.call.groups)
        if not self.request_complete:
            if head.expect_continue and self.body_size == 0:
                # We answer 100 ourselves when ready for the body, as nginx does.
                client.write(CONTINUE_100)
            if plan.request_buffering:
                self._go(BUFFER)
                return
        self._pick()

    def _https_required(self, status: int) -> None:
        """A route for https only, asked over plain http: 426 or a redirect (Kong's)."""
        if status != 426:
            location = location_field(self.head, self.client.fwd.trusted)
            if location is not None:
                self.reply(status, extra=location, empty=True)
                return
        self.reply(426, HTTPS_MESSAGE, extra=UPGRADE_FIELDS)

    def feed_body(self, data: bytes) -> None:
        """A piece of the request body (decoded), from the client's parser."""
        if self.state == DONE:
            return  # answered already (404, 413...): the rest is read and dropped
        size = self.body_size = self.body_size + len(data)
        limit = self.server.limits.max_body_size
        if limit and size > limit:
            self.client.body_too_large(self)
            return
        call = self.call
        if call is not None and call.body_limit and size > call.body_limit:
            call.body_limit_hit = True  # request-size-limiting: its own 413 message
            self.client.body_too_large(self)
            return
        conn = self.conn
        if conn is not None and self.send_pos < 0 and self.state in (SENDING, RELAYING):
            # Streaming to an attached backend (request_buffering off).
            if self.chunk_up:
                conn.writelines([b"%x\r\n" % len(data), data, CRLF])
            else:
                conn.write(data)
            body = self.body
            if body is not None and body.replayable:
                body.append(data)
                if not body.replayable:
                    body.forget()  # too big to send again: this request is not retried
            return
        body = self.body
        if body is None:
            server = self.server
            buffering = self.plan.request_buffering if self.plan is not None else True
            body = self.body = RequestBody(server.body_buffer_size, server.temp_dir, buffering)
        body.append(data)
        if not body.keep_all and body.size >= REPLAY_LIMIT:
            self.client.pause_reading_for(PAUSE_BODY)  # until a backend takes it

    def body_complete(self) -> None:
        """The client sent the last body byte."""
        self.request_complete = True
        state = self.state
        if state == BUFFERING:
            self._buffered()
        elif state == SENDING and self.send_pos < 0 and self.conn is not None:
            if self.chunk_up:
                self.conn.write(CHUNK_END)
            self._request_written()
        elif state == RELAYING and self.conn is not None and self.send_pos < 0:
            if self.chunk_up:
                self.conn.write(CHUNK_END)
            self.request_sent = True

    # -- plugins ----------------------------------------------------------------------

    def _access(self, chain: PluginChain) -> bool:
        """The access phase of the route's plugins; True when one answered."""
        client = self.client
        head = self.head
        plan = self.plan
        assert plan is not None
        fwd = client.fwd
        peer = client.client_ip
        trusted = fwd.trusted
        call = self.call = PluginCall(
            head, peer,
            peer if not trusted else client_address(
                peer, trusted, head.field(b"x-real-ip"), head.field(b"x-forwarded-for")),
            trusted, plan.route.id, plan.service.id, chain)
        call.received = self.body_size
        body = self.body
        if chain.needs_body and body is not None and 0 < body.size <= PLUGIN_BODY_LIMIT:
            call.body = b"".join(body.blocks(0))
        original = call.body
        reply = chain.access(call)
        if reply is not None:
            self._plugin_reply(reply)
            return True
        if call.body is not original and call.body is not None:
            # A plugin changed the body (request-transformer, hide_credentials).
            server = self.server
            new = RequestBody(server.body_buffer_size, server.temp_dir, True)
            new.append(call.body)
            if body is not None:
                body.close()
            self.body = new
        ctx = self.ctx
        if ctx is not None:
            ctx.identify(call.consumer, call.groups)
        return False

    def _buffered(self) -> None:
        """The whole body is in: the deferred access phase (body plugins), then a target."""
        plan = self.plan
        chain = plan.plugins if plan is not None else None
        if chain is not None and self.call is None and self._access(chain):
            return
        self._pick()

    def _plugin_reply(self, reply: PluginReply) -> None:
        """A plugin answers the request itself (401, 429, a CORS preflight...)."""
        self._reply(reply.status, None, False, reply)

    # -- choosing a target and connecting ---------------------------------------------

    def _pick(self) -> None:
        plan = self.plan
        assert plan is not None
        target = plan.balancer.pick(self.ctx, self.tried)
        if target is None:
            self.reply(503 if self.attempts == 0 else self.status or 502)
            return
        self.target = target
        owner = target.owner
        self.counted = owner is not None and owner.counts  # least-connections only
        self.tried.append(target)
        self.attempts += 1
        tls = plan.tls  # TLS to the backend: its pool for this profile and server name
        pool = target.pool if tls is None else tls.pool_for(target, self.head)
        conn = pool.acquire()
        if conn is not None:
            self.reused = True
            self._attach(conn)
        else:
            self._go(CONNECT)
            self.reused = False
            self.server.loop.create_task(self._connect(target, pool))

    async def _connect(self, target: TargetRuntime, pool: UpstreamPool) -> None:
        plan = self.plan
        assert plan is not None
        try:
            conn = await pool.connect(self.server.resolver, plan.connect_timeout)
        except asyncio.TimeoutError:
            if self.state == CONNECTING and self.target is target:
                self._attempt_failed("connect timeout", 504)
            return
        except OSError as exc:
            if self.state == CONNECTING and self.target is target:
                log.debug("connect to %s failed: %s", target.key, exc)
                self._attempt_failed("connect error", 502)
            return
        if self.state != CONNECTING or self.target is not target:
            pool.release(conn, self.server.clock())  # the client went away: keep it
            return
        self._attach(conn)

    def _attach(self, conn: UpstreamConnection) -> None:
        """Write the request head (and what there is of the body) to `conn`."""
        self._go(ATTACH)
        self.conn = conn
        head = self.head
        conn.begin(self, head.method == "HEAD")
        hit = self.hit
        plan = self.plan
        target = self.target
        assert hit is not None and plan is not None and target is not None
        ctx = self.ctx
        path = hit.upstream_path
        query = head.query
        call = self.call
        if call is not None:
            if call.path is not None:
                path = call.path
            if call.query is not None:
                query = call.query
        if ctx is not None and ctx.upstream_uri:
            path = ctx.upstream_uri
        body = self.body
        streaming_chunked = False  # the size is not known yet: chunked upstream (U4)
        if head.framing == NO_BODY:
            framing = b""
        elif self.request_complete:
            framing = b"Content-Length: %d\r\n" % (body.size if body is not None else 0)
        elif head.framing == CHUNKED:
            framing = b"Transfer-Encoding: chunked\r\n"
            streaming_chunked = True
        else:
            framing = b"Content-Length: %d\r\n" % head.content_length
        request_head, self.request_id, self.trace_id = build_upstream_head(
            head, path + query if query else path,
            head.host if plan.preserve_host and head.host is not None else target.host_header,
            framing, self.client.fwd, hit.prefix_line, self.server.request_ids.new,
            self.server.fields.upstream_ids, self.server.trace_ids,
            call.upstream_fields if call is not None else None,
            call.method if call is not None else None)
        if not self.sent_any:
            self.sent_any = True
            # A pooled connection taken while the head arrived: its first byte's time
            # will do (one clock read less per request).
            self.t_sent = self.t0 if self.reused and self.body is None and self.attempts == 1 \
                else self.server.clock()
        self.request_sent = False
        self.chunk_up = streaming_chunked
        if body is None or body.size == 0:
            conn.write(request_head)
        elif body.in_memory:
            if streaming_chunked:  # re-chunk what arrived before the connection was ready
                parts = [request_head]
                for chunk in body.chunks:
                    parts += (b"%x\r\n" % len(chunk), chunk, CRLF)
                conn.writelines(parts)
            else:
                conn.writelines([request_head, *body.chunks])
            if not body.keep_all:
                if not body.replayable:
                    body.forget()
                self.client.resume_reading_for(PAUSE_BODY)
        else:
            conn.write(request_head)
            self.send_pos = 0
            self._pump()
            return
        if self.request_complete:
            self._request_written()
        else:
            conn.deadline = 0.0  # the client's body timeout applies meanwhile

    def _pump(self) -> None:
        """Send a body kept in a temp file, block by block, as the backend takes it (what
        arrives meanwhile joins the file, so the order holds). A streamed body goes on as
        it comes once the file is sent."""
        conn = self.conn
        body = self.body
        assert conn is not None and body is not None
        for block in body.blocks(self.send_pos):
            if self.chunk_up:
                conn.writelines([b"%x\r\n" % len(block), block, CRLF])
            else:
                conn.write(block)
            self.send_pos += len(block)
            if self.upstream_paused:
                return  # upstream_write_paused(False) calls us again
        self.send_pos = -1
        if self.request_complete:
            if self.chunk_up:
                conn.write(CHUNK_END)
            self._request_written()
        # else: the rest of the body is written as it arrives (feed_body, body_complete)

    def _request_written(self) -> None:
        self.request_sent = True
        self._go(SENT)
        conn = self.conn
        if conn is not None:
            # A body-less request is written as it arrives: its first byte's time will do
            # for the read deadline (one clock read less per request).
            now = self.t0 if self.body is None and self.attempts == 1 \
                else self.server.clock()
            conn.deadline = now + self._read_timeout()
            conn.deadline_kind = READ

    def upstream_write_paused(self, paused: bool) -> None:
        """The backend's socket is full (or has room again)."""
        self.upstream_paused = paused
        conn = self.conn
        plan = self.plan
        if conn is None or plan is None:
            return
        if paused:
            self.client.pause_reading_for(PAUSE_UPSTREAM)
            if self.state == SENDING:
                self._arm(WRITE, plan.write_timeout)
        else:
            self.client.resume_reading_for(PAUSE_UPSTREAM)
            if self.send_pos >= 0:
                conn.deadline = 0.0
                self._pump()
            elif self.state == SENDING:
                conn.deadline = 0.0

    def _read_timeout(self) -> float:
        # A typed read: `self.plan.read_timeout` on the Optional would compile to a generic
        # attribute lookup.
        plan = self.plan
        assert plan is not None  # set by start(), before anything goes upstream
        return plan.read_timeout

    def _arm(self, kind: int, seconds: float) -> None:
        conn = self.conn
        if conn is not None:
            conn.deadline = self.server.clock() + seconds
            conn.deadline_kind = kind

    # -- the response -----------------------------------------------------------------

    def on_response_head(self, conn: UpstreamConnection, status: int, raw_head: bytes,
                         special: list[tuple[bytes, bytes, bytes]]) -> None:
        """`raw_head`: the backend's status line and fields as received, CRLF-terminated;
        `special`: its fields the proxy acts on (core.http.response)."""
        head = self.head
        server = self.server
        added = server.fields
        fields = clean_response_head(raw_head, status, special, server.cut_ids)
        if fields.bad_coding or (status == 101 and not head.websocket):
            conn.detach()
            self._attempt_failed("invalid response", 502, retryable=False)
            return
        self._go(HEAD)
        self.status = status
        target = self.target
        passive = target.passive if target is not None else None
        if passive is not None:  # passive health checks (dataplane.passive); None = off
            passive.on_status(status)
        self.t_head = now = server.clock()
        framing = response_framing(status, head.method == "HEAD", fields, head.http11)
        self.eof_body = framing != RESPONSE_NO_BODY and not fields.chunked \
            and fields.content_length < 0
        call = self.call
        hold = False
        if call is None:
            first = fields.head
        else:
            first = call.chain.response_head(call, status, fields.head)
            hold = call.rewrite is not None and framing != RESPONSE_NO_BODY
            if hold and fields.length_line:
                first = cut_field(first, b"Content-Length") or first  # a new one follows
        parts = [first, VIA_LINE] if added.via else [first]
        framing_at = len(parts)  # where a held response's Content-Length goes
        if framing == RESPONSE_LENGTH:
            if not fields.length_line or hold:
                parts.append(b"Content-Length: %d\r\n" % fields.content_length)
        elif framing == RE_CHUNK:
            self.rechunk = not hold
            parts.append(b"Transfer-Encoding: chunked\r\n")
        elif framing == CLOSE_DELIMITED:
            self.keep_alive = False
            if hold:
                parts.append(b"")
        elif fields.content_length >= 0 and not fields.length_line and status >= 200 \
                and status != 204:
            parts.append(b"Content-Length: %d\r\n" % fields.content_length)  # HEAD, 304
        if status == 101:
            pass
        elif not self.keep_alive or server.draining or not self.request_complete \
                or head.websocket:
            # An unread request body (the backend answered early) cannot be skipped
            # cheaply, and a refused upgrade may be followed by bytes never parsed: close.
            self.keep_alive = False
            if fields.kept is not None:
                parts[0] = cut_field(parts[0], fields.kept) or parts[0]
            parts.append(b"Connection: close\r\n")
        elif not head.http11 and fields.kept is None:
            parts.append(b"Connection: keep-alive\r\n")
        ctx = self.ctx
        if ctx is not None and ctx.hash_cookie is not None:
            parts.append(ctx.hash_cookie)
        if server.one_request_id:  # the default: one X-Request-Id line
            parts += (b"X-Request-Id: ", self.request_id, CRLF)
        elif added.response_ids:
            parts.append(added.response_id_lines(self.request_id))
        if added.upstream_latency or added.proxy_latency:
            parts.append(added.latency_lines((self.t_sent - self.t0) * 1000.0,
                                             (now - self.t_sent) * 1000.0))
        if added.upstream_status:
            parts.append(b"X-Kong-Upstream-Status: %d\r\n" % status)
        parts.append(CRLF)
        conn.deadline = now + self._read_timeout()
        conn.deadline_kind = READ
        if hold:
            self._go(HOLD)
            self.held = HeldResponse(parts, framing_at, framing == RE_CHUNK)
            return
        self._release_head(b"".join(parts))

    def on_response_body(self, data: bytes) -> None:
        call = self.call
        if call is not None:
            held = self.held
            if held is not None:
                if held.size + len(data) <= REWRITE_LIMIT:
                    held.chunks.append(bytes(data))
                    held.size += len(data)
                    self._arm(READ, self._read_timeout())
                    return
                self._release_unchanged(held)
            if call.tee is not None:
                call.tee.feed(data)  # proxy-cache keeps a copy (dataplane.plugins.phases)
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

    def _release_unchanged(self, held: HeldResponse) -> None:
        """The held body outgrew REWRITE_LIMIT: relay it as the backend framed it."""
        global _over_limit_logged
        if not _over_limit_logged:
            _over_limit_logged = True
            log.warning("response body over %d bytes: relayed without its rewrite "
                        "(response-transformer JSON edits); logged once", REWRITE_LIMIT)
        self.held = None
        self._go(RELEASE)
        self.rechunk = held.rechunk
        self._release_head(b"".join(held.parts))
        for chunk in held.chunks:
            self.on_response_body(chunk)

    def _release_rewritten(self, held: HeldResponse) -> None:
        """The whole body is in: the head goes out with the rewritten body's length."""
        self.held = None
        self._go(RELEASE)
        call = self.call
        assert call is not None and call.rewrite is not None
        body = call.rewrite.rewrite(b"".join(held.chunks))
        held.parts[held.length_at] = b"Content-Length: %d\r\n" % len(body)
        self._release_head(b"".join(held.parts))
        if body:
            self.on_response_body(body)

    def _release_head(self, head: bytes) -> None:
        """The response head goes out. It waits for the body bytes of the same read: one
        write per response instead of two for small ones (flushed by the upstream after
        each read)."""
        self.bytes_out = len(head)
        self.pending = [head]
        if self.server.access_log is not None:
            self.sent_head = head
        if self.client.write_paused:
            # The client is still full from an earlier (pipelined) response: pause_writing
            # will not fire again, so spool or hold this backend now.
            self.client_write_paused(True)

    def _held_failed(self, status: int) -> None:
        """The backend failed mid-body while it was held: the client, which has had no
        byte of it, gets the gateway's answer instead of a cut connection."""
        self.held = None
        log.info("upstream %s: response cut short while collected",
                 self.target.key if self.target else "?")
        self.reply(status)

    def flush(self) -> None:
        """Hand what this upstream read produced to the client, or to the spool while the
        client's socket is full (response buffering)."""
        pending = self.pending
        if pending is None:
            return
        self.pending = None
        conn = self.conn
        if conn is not None and conn.deadline and self.t_head:
            # The backend is still sending: the read timeout counts from this read.
            conn.deadline = self.server.clock() + self._read_timeout()
        spool = self.spool
        client = self.client
        if spool is None and client.write_paused and self.plan is not None \
                and self.plan.response_buffering:
            server = self.server
            spool = self.spool = ResponseSpool(server.spool_memory, server.spool_limit,
                                               server.temp_dir)
        if spool is not None:
            for part in pending:
                spool.append(part)
            if spool.full and self.conn is not None:
                self.conn.pause_reading()  # even the spool is full: hold the backend
            return
        if len(pending) == 1:
            client.write(pending[0])
        else:
            client.writelines(pending)

    def client_write_paused(self, paused: bool) -> None:
        """The client's socket is full (or has room again). With response buffering the
        backend goes on into the spool (see flush); without it, the backend is held."""
        if self.state != RELAYING:
            return
        conn = self.conn
        plan = self.plan
        if paused:
            if conn is not None and plan is not None and not plan.response_buffering:
                conn.deadline = 0.0  # a slow client is not a slow backend
                conn.pause_reading()
            return
        spool = self.spool
        if spool is not None:
            client = self.client
            while not client.write_paused:
                data = spool.take()
                if data is None:
                    break
                if isinstance(data, list):
                    client.writelines(data)
                else:
                    client.write(data)
            if client.write_paused:
                return
            spool.close()
            self.spool = None
            if self.upstream_done:
                self._end()
                return
        if conn is not None:
            conn.resume_reading()
            if plan is not None:
                self._arm(READ, plan.read_timeout)

    def on_response_complete(self, conn: UpstreamConnection, reusable: bool) -> None:
        """The last response byte is read; the connection goes back or closes first (a
        pipelined next request should find it idle, and must never find it paused)."""
        if self.counted:
            self._end_attempt()
        self.conn = None
        target = self.target
        self.t_end = self.server.clock()
        if reusable and self.request_sent and target is not None:
            conn.pool.release(conn, self.t_end)  # its own pool (TLS pools are per profile)
        else:
            conn.close()
        call = self.call
        if call is not None:
            held = self.held
            if held is not None:
                self._release_rewritten(held)
            if call.tee is not None:
                call.tee.complete()
        if self.rechunk:
            if self.pending is None:
                self.pending = []
            self.pending.append(CHUNK_END)
            self.bytes_out += 5
        self.flush()
        if self.spool is not None:
            self.upstream_done = True  # ends when the spool has drained to the client
            return
        self._end()

    def _end(self) -> None:
        self._go(END)
        self._finish(self.status)
        self.client.exchange_done(self)

    def on_upgraded(self, conn: UpstreamConnection, rest: bytes) -> None:
        """101 Switching Protocols: from now on, bytes flow both ways untouched."""
        self.flush()
        if self.counted:
            self._end_attempt()
        self.conn = None
        self._go(UPGRADE)
        self._finish(101)  # the tunnel that follows is not an HTTP request any more
        if rest:
            self.client.write(rest)
        self.client.start_tunnel(conn)

    # -- failures ---------------------------------------------------------------------

    def on_upstream_lost(self, conn: UpstreamConnection) -> None:
        if self.state == DONE or conn is not self.conn:
            return
        if self.state == RELAYING or self.state == COLLECTING:
            if self.eof_body:
                self.on_response_complete(conn, False)  # the body ends at close (§6.3)
            else:
                self.abort()
            return
        self._attempt_failed("connection reset", 502)

    def on_upstream_error(self, conn: UpstreamConnection, reason: str) -> None:
        """The backend sent bytes that are not a valid response (the connection is closed)."""
        if self.state == DONE or conn is not self.conn:
            return
        if self.state == RELAYING or self.state == COLLECTING:
            self.abort()
            return
        self._attempt_failed(reason, 502, retryable=False)

    def on_upstream_timeout(self, conn: UpstreamConnection, kind: int) -> None:
        if self.state == DONE:
            return
        if self.state == COLLECTING:
            self._held_failed(504)
            return
        if self.state == RELAYING:
            self.abort()
            return
        self._attempt_failed("write timeout" if kind == WRITE else "read timeout", 504)

    def _attempt_failed(self, reason: str, status: int, retryable: bool = True) -> None:
        self._release_conn()
        self.status = status
        self.send_pos = -1
        self.upstream_paused = False
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
        body = self.body
        replayable = body is None or body.replayable or body.size == 0
        if (retryable and self.attempts <= plan.retries and (
                not self.sent_any
                or (self.head.method in IDEMPOTENT_METHODS and replayable))
                and (self.request_complete or replayable)):
            log.debug("retrying %s %s after %s on %s", self.head.method, self.head.target,
                      reason, target)
            self._pick()
            return
        log.info("upstream %s: %s", target.key if target else "?", reason)
        self.reply(status)

    def _end_attempt(self) -> None:
        """The balancer stops counting this attempt (least-connections only)."""
        self.counted = False
        target = self.target
        assert target is not None and target.owner is not None
        target.owner.release(target)

    def _release_conn(self) -> None:
        if self.counted:
            self._end_attempt()
        conn = self.conn
        if conn is not None:
            self.conn = None
            if conn.exchange is self:
                conn.deadline = 0.0
                conn.detach()

    # -- endings ----------------------------------------------------------------------

    def reply(self, status: int, message: str | None = None, close: bool = False,
              extra: bytes = b"", empty: bool = False) -> None:
        """The gateway answers this request itself (an error, before any response byte);
        `extra` field lines, `empty`: without a body (core.http.errors.error_response)."""
        if self.state == RELAYING:
            self.abort()
            return
        call = self.call
        if status == 413 and message is None and call is not None and call.body_limit_hit:
            message = SIZE_EXCEEDED
        self._reply(status, message, close, None, extra, empty)

    def _reply(self, status: int, message: str | None, close: bool,
               plugin_reply: PluginReply | None, extra: bytes = b"",
               empty: bool = False) -> None:
        self._go(REPLY)
        self._release_conn()
        client = self.client
        # The rest of an unfinished body is read and dropped (nginx discards it too),
        # unless the client waits for a 100 Continue that will never come.
        keep = self.keep_alive and not close and not self.server.draining and (
            self.request_complete or not (self.head.expect_continue and self.body_size == 0))
        self.keep_alive = keep
        self.status = status
        server = self.server
        call = self.call
        latency_ms = (server.clock() - self.t0) * 1000.0 \
            if server.fields.response_latency else -1.0
        if plugin_reply is not None and call is not None:
            response = render_reply(plugin_reply, call.reply_lines(), keep_alive=keep,
                                    head_only=self.head.method == "HEAD",
                                    request_id=self._request_id(), fields=server.fields,
                                    latency_ms=latency_ms)
        else:
            response = error_response(
                status, message, keep_alive=keep, head_only=self.head.method == "HEAD",
                request_id=self._request_id().decode("latin-1"), fields=server.fields,
                latency_ms=latency_ms, extra=extra, empty=empty,
            )
        self.bytes_out += len(response)
        client.write(response)
        if self.server.access_log is not None:
            self.sent_head = response[:response.find(b"\r\n\r\n") + 2]
        self._finish(status)
        client.exchange_done(self)

    def abort(self) -> None:
        """The response cannot be completed: cut the client connection."""
        if self.state == COLLECTING:
            self._held_failed(502)
            return
        self.flush()
        self._release_conn()
        self._go(ABORT)
        self.keep_alive = False
        self._finish(self.status)
        self.client.abort(self)

    def client_gone(self) -> None:
        """The client connection closed under us."""
        if self.state == DONE:
            return
        self._release_conn()  # also ends a pending connect attempt's accounting
        self.held = None
        started = self.state == RELAYING
        self._go(GONE)
        # nginx's 499: the client closed before it got a status (else the status it got).
        self._finish(self.status if started else 499)

    def _request_id(self) -> bytes:
        """This request's id: the client's valid X-Request-Id, else a new one."""
        if not self.request_id:
            self.request_id = client_request_id(self.head) or self.server.request_ids.new()
        return self.request_id

    def _finish(self, status: int) -> None:
        """Count this request, once, however it ended; free what it held."""
        if self.finished:
            return
        self.finished = True
        if not self.t_end or self.spool is not None:
            self.t_end = self.server.clock()
        if self.body is not None:
            self.body.close()
        if self.spool is not None:
            self.spool.close()
        server = self.server
        call = self.call
        logs = call is not None and call.chain.logs
        if not server.count_requests and server.access_log is None and not logs:
            return  # gateway.metrics off, no access log, no log plugin: nothing to record
        t0 = self.t0
        t_end = self.t_end
        request_ms = (t_end - t0) * 1000.0
        # Kong's waiting time: from the request going upstream to the response head, or
        # to the failure that made the gateway answer (a read timeout waits that long).
        t_head = self.t_head
        if t_head:
            upstream_ms = (t_head - self.t_sent) * 1000.0
        elif self.sent_any:
            upstream_ms = (t_end - self.t_sent) * 1000.0
        else:
            upstream_ms = -1.0
        # What Kong's $request_length counts: the head as received and the body (decoded).
        size_in = self.head.size + self.body_size
        plan = self.plan
        if server.count_requests:
            if plan is not None:
                plan.stats.record(status, request_ms, upstream_ms, t_head != 0.0, size_in,
                                  self.bytes_out, self.attempts)
                if call is not None and call.consumer is not None and plan.count_consumers:
                    consumer = call.consumer
                    plan.stats.count_consumer(consumer.username or consumer.id,
                                              t_head != 0.0, status)
            else:
                server.stats.count_unmatched(status)
        access_log = server.access_log
        if access_log is not None or logs:
            record = self._log_record(request_ms, upstream_ms, size_in, status)
            if access_log is not None:
                access_log.add(record)
            if call is not None and logs:
                call.chain.log(call, record)  # the log phase (file-log, http-log)

    def _log_record(self, request_ms: float, upstream_ms: float, size_in: int,
                    status: int) -> LogRecord:
        """This request for the access log (built only when something logs it)."""
        head = self.head
        client = self.client
        server = self.server
        r = LogRecord()
        r.started_at = time.time() - (server.clock() - self.t0)
        r.client_ip = client.client_ip
        r.scheme = client.fwd.proto.decode("latin-1")
        r.host = (head.host or b"").decode("latin-1")
        r.port = client.port
        r.method = head.method
        r.target = head.target
        r.request_headers = head.headers
        r.request_size = size_in
        r.status = status
        r.response_head = self.sent_head
        r.response_size = self.bytes_out
        r.request_ms = request_ms
        r.upstream_ms = upstream_ms
        if self.t_head:
            r.receive_ms = (self.t_end - self.t_head) * 1000.0
            r.upstream_status = self.status
            r.source = "upstream"
        plan = self.plan
        hit = self.hit
        if plan is not None and hit is not None:
            r.route = plan.route
            r.service = plan.service
            ctx = self.ctx
            path = ctx.upstream_uri if ctx is not None and ctx.upstream_uri else \
                hit.upstream_path
            r.upstream_uri = path + head.query
        r.tries = [(t.host, t.port) for t in self.tried]
        call = self.call
        if call is not None:
            r.consumer = call.consumer  # identified by an auth plugin
        r.request_id = self._request_id()
        r.trace_id = self.trace_id
        return r
