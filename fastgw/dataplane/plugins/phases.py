"""Plugin phases on the exchange: the one place plugins hook into a request.

Theory of operation
-------------------
A route plan with plugins holds a `PluginChain` (built once per config snapshot by
``dataplane.plugins.registry``); a route without any has None, and the exchange then
does nothing more than test that attribute. For a request on a chain, the exchange
makes one `PluginCall` (the request's plugin state) and runs the phases:

  access         after routing, before a target is picked (after the body is read when a
                 plugin of the chain reads bodies). A plugin may answer the request
                 itself (`PluginReply`: 401, 403, 429, a CORS preflight...) or change what
                 goes upstream: fields (`upstream_fields`: lower-case name -> the complete
                 lines that replace the client's, b"" to remove them), the query string,
                 the path, the method, the body. These are inputs of the one upstream-head
                 builder (core.http.upstream_head rule U10), never byte edits.
  header_filter  the response head, before it goes to the client: fields set by name
                 (`response_fields`, same shape), lines added (`response_extra`), and
                 the `header_filter` of plugins that need the response's own fields.
                 Gateway answers made by plugins get the fields of the plugins that ran.
  body           a plugin that keeps the response (proxy-cache) sets `call.tee` (a
                 `BodyTee`) in access or header_filter: every body chunk is handed to it
                 as it goes to the client (decoded: never the chunked framing), then
                 `complete()` once the response was read whole.
                 A plugin that rewrites the body (response-transformer's JSON edits) sets
                 `call.rewrite` (a `BodyRewrite`) in header_filter: the exchange then holds
                 the head back, collects the body (bounded: over the bound it passes
                 unchanged), and sends the head with the new Content-Length and the
                 rewritten body; the tee sees the body the client gets.
  log            after the response, for plugins that report requests (`log_plugins`).

Consumers. An auth plugin sets `consumer` and `credential`; when the consumer has
plugins of its own on this route, the rest of the access phase continues on the chain
precomputed for that consumer (Kong re-runs its lookup once a consumer is known).

Plugins are `PhasePlugin` subclasses, one object per plugin instance, built with
everything derived from their config precomputed. Every container of a call is made on
first use: a request pays for what its plugins do, nothing more.
"""

from __future__ import annotations

from typing import Any, Final

import orjson

from fastgw.core.http.errors import DATE, DEFAULT_FIELDS, status_line
from fastgw.core.http.fields import SERVER_TOKEN
from fastgw.core.http.gateway_fields import GatewayFields
from fastgw.core.http.request import RequestHead

__all__ = ["BodyRewrite", "BodyTee", "PhasePlugin", "PluginCall", "PluginChain", "PluginReply",
           "render_reply"]

CRLF: Final = b"\r\n"


class PluginReply:
    """A plugin answers the request itself: status, a JSON ``message`` (Kong's
    ``kong.response.error`` shape) or a raw body, and response fields to add;
    ``length`` >= 0: the Content-Length to send instead of the body's (a cached answer to
    HEAD)."""

    def __init__(self, status: int, message: str | None = None,
                 lines: list[bytes] | None = None, body: bytes | None = None,
                 length: int = -1) -> None:
        self.status = status
        self.message = message
        self.body = body
        self.lines: list[bytes] = lines if lines is not None else []
        self.length = length


def render_reply(reply: PluginReply, extra: list[bytes], *, keep_alive: bool, head_only: bool,
                 request_id: bytes, fields: GatewayFields = DEFAULT_FIELDS,
                 latency_ms: float = -1.0) -> bytes:
    """The complete response of a plugin's answer (the same framing and gateway fields as
    the gateway's own error responses: core.http.errors)."""
    body = reply.body
    if body is None:
        body = orjson.dumps({"message": reply.message or "", "request_id":
                             request_id.decode("latin-1")}) if reply.message is not None else b""
    parts = [status_line(reply.status), DATE.value]
    if reply.message is not None:
        parts.append(b"Content-Type: application/json; charset=utf-8\r\n")
    parts.append(b"Content-Length: %d\r\n" % (len(body) if reply.length < 0 else reply.length))
    if fields.server:
        parts.append(b"Server: " + SERVER_TOKEN + CRLF)
    parts += reply.lines
    parts += extra
    parts.append(fields.response_id_lines(request_id))
    if fields.response_latency and latency_ms >= 0:
        parts.append(b"X-Kong-Response-Latency: %d\r\n" % latency_ms)
    if not keep_alive:
        parts.append(b"Connection: close\r\n")
    parts.append(CRLF)
    if not head_only:
        parts.append(body)
    return b"".join(parts)


class BodyTee:
    """Takes a copy of the response body as it is relayed (see ``body`` above)."""

    def feed(self, data: bytes) -> None:
        """A decoded body chunk, as it goes to the client."""

    def complete(self) -> None:
        """The response was read whole (never called for one cut short)."""


class BodyRewrite:
    """Rewrites a whole response body (see ``body`` above)."""

    def rewrite(self, body: bytes) -> bytes:
        """The body to send instead of ``body`` (the same object: unchanged)."""
        return body


class PluginCall:
    """One request's plugin state: who the client is, and what the plugins changed."""

    def __init__(self, head: RequestHead, peer_ip: str, client_ip: str, trusted: bool,
                 route_id: str, service_id: str, chain: PluginChain) -> None:
        self.head = head
        self.peer_ip = peer_ip
        self.client_ip = client_ip  # resolved through trusted_ips
        self.trusted = trusted
        self.route_id = route_id
        self.service_id = service_id
        self.consumer: Any = None  # fastgw.config.model.Consumer once identified
        self.credential: Any = None
        self.credential_id: str | None = None
        self.anonymous = False
        self.groups: list[str] | None = None
        # Upstream request changes (inputs of core.http.upstream_head, rule U10).
        self.upstream_fields: dict[bytes, bytes] | None = None
        self.fields_shared = False  # upstream_fields is an identity's: copy before a change
        self.query: bytes | None = None  # the new query string ("?..." or b"")
        self.path: bytes | None = None  # the new upstream path
        self.method: str | None = None
        self.body: bytes | None = None  # the request body as buffered (body plugins)
        # Response changes (header_filter).
        self.response_fields: dict[bytes, bytes] | None = None
        self.response_extra: list[bytes] | None = None
        self.tee: BodyTee | None = None  # keeps the response body (proxy-cache)
        self.rewrite: BodyRewrite | None = None  # rewrites it (response-transformer)
        self.ran: list[PhasePlugin] = []  # plugins whose access phase ran, in order
        self.chain = chain  # the consumer's chain once one is identified
        self.body_limit = 0  # request-size-limiting: bytes (0: the node's limit only)
        self.body_limit_hit = False
        self.received = 0  # request body bytes read when the access phase began

    def set_upstream_field(self, lname: bytes, lines: bytes) -> None:
        """Kong's ``kong.service.request.set_header`` (``lines`` b"": ``clear_header``):
        the client's fields of that name are replaced by ``lines``."""
        fields = self.upstream_fields
        if fields is None:
            self.upstream_fields = {lname: lines}
            return
        if self.fields_shared:
            fields = self.upstream_fields = dict(fields)
            self.fields_shared = False
        fields[lname] = lines

    def set_response_field(self, lname: bytes, lines: bytes) -> None:
        """Kong's ``kong.response.set_header``: the response's fields of that name are
        replaced by ``lines``."""
        fields = self.response_fields
        if fields is None:
            self.response_fields = {lname: lines}
        else:
            fields[lname] = lines

    def add_response_lines(self, lines: bytes) -> None:
        """Fields added to the response whatever it holds (the rate-limit counters)."""
        extra = self.response_extra
        if extra is None:
            self.response_extra = [lines]
        else:
            extra.append(lines)

    def reply_lines(self) -> list[bytes]:
        """What the plugins added for the client, for a gateway answer."""
        out: list[bytes] = []
        if self.response_fields is not None:
            out += self.response_fields.values()
        if self.response_extra is not None:
            out += self.response_extra
        return out


class PhasePlugin:
    """One plugin instance: override the phases it takes part in."""

    def __init__(self, name: str, priority: int, instance_id: str) -> None:
        self.name = name
        self.priority = priority
        self.instance_id = instance_id
        self.needs_body = False  # access reads the request body (it is buffered first)
        self.filters_response = False  # has a header_filter
        self.logs = False  # has a log phase

    def access(self, call: PluginCall) -> PluginReply | None:
        return None

    def header_filter(self, call: PluginCall, status: int,
                      fields: list[tuple[bytes, bytes]]) -> None:
        """``fields``: the response's (name, value) pairs as the backend sent them."""

    def reply_filter(self, call: PluginCall, reply: PluginReply) -> None:
        """A gateway answer made during access: add this plugin's response fields."""

    def log(self, call: PluginCall, record: Any) -> None:
        """The request is over (``record``: dataplane.logrecord.LogRecord)."""


class PluginChain:
    """A route's plugins in Kong's order, and its consumers' own chains."""

    def __init__(self, plugins: list[PhasePlugin],
                 by_consumer: dict[str, PluginChain] | None = None) -> None:
        self.plugins = plugins
        self.by_consumer = by_consumer
        chains = [self, *(by_consumer or {}).values()]
        self.needs_body = any(p.needs_body for c in chains for p in c.plugins)
        self.filters_response = any(p.filters_response for p in plugins)
        self.log_plugins = [p for p in plugins if p.logs]
        self.logs = any(c.log_plugins for c in chains)

    def access(self, call: PluginCall) -> PluginReply | None:
        """Run the access phase; a reply ends it (and the request)."""
        plugins = self.plugins
        by_consumer = self.by_consumer
        ran = call.ran
        i = 0
        while i < len(plugins):
            plugin = plugins[i]
            ran.append(plugin)
            reply = plugin.access(call)
            if reply is not None:
                for done in ran:
                    done.reply_filter(call, reply)
                return reply
            i += 1
            consumer = call.consumer
            if by_consumer is not None and consumer is not None:
                chain = by_consumer.get(consumer.id)
                if chain is not None and chain is not call.chain:
                    # Go on with the consumer's chain after the plugin that identified it.
                    call.chain = chain
                    plugins = chain.plugins
                    i = _after(plugins, plugin)
        return None

    def response_head(self, call: PluginCall, status: int, head: bytes) -> bytes:
        """The response head (status line and fields, CRLF-terminated) with the plugins'
        fields set and added."""
        if call.chain.filters_response:
            fields = _fields(head)
            for plugin in call.chain.plugins:
                if plugin.filters_response:
                    plugin.header_filter(call, status, fields)
        replaced = call.response_fields
        extra = call.response_extra
        if replaced is not None:
            lines = head.split(CRLF)
            kept = [lines[0]] + [ln for ln in lines[1:-1]
                                 if ln.split(b":", 1)[0].strip().lower() not in replaced]
            head = CRLF.join(kept) + CRLF + b"".join(replaced.values())
        if extra is not None:
            head += b"".join(extra)
        return head

    def log(self, call: PluginCall, record: Any) -> None:
        for plugin in call.chain.log_plugins:
            plugin.log(call, record)


def _after(plugins: list[PhasePlugin], plugin: PhasePlugin) -> int:
    """Where a consumer's chain goes on: after the plugin of the same name."""
    for i, p in enumerate(plugins):
        if p.name == plugin.name:
            return i + 1
    return 0


def _fields(head: bytes) -> list[tuple[bytes, bytes]]:
    out = []
    for line in head.split(CRLF)[1:]:
        if line:
            name, _, value = line.partition(b":")
            out.append((name.strip(), value.strip()))
    return out
