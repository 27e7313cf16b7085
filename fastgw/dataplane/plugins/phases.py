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
                 goes upstream: fields to drop and add, the query string, the path, the
                 method, the body. These are inputs of the one upstream-head builder
                 (core.http.upstream_head rule U9), never byte edits.
  header_filter  the response head, before it goes to the client: fields to drop and
                 add (`response_drop`, `response_add`, and plugins' `header_filter`).
                 Gateway answers made by plugins get the fields of the plugins that ran.
  log            after the response (plugins that count or report).

Consumers. An auth plugin sets `consumer` and `credential`; when the consumer has
plugins of its own on this route, the rest of the access phase continues on the chain
precomputed for that consumer (Kong re-runs its lookup once a consumer is known).

Plugins are `PhasePlugin` subclasses, one object per plugin instance and route, built
with everything derived from their config precomputed.
"""

from __future__ import annotations

from typing import Any, Final

import orjson

from fastgw.core.http.errors import DATE, DEFAULT_FIELDS, status_line
from fastgw.core.http.fields import SERVER_TOKEN
from fastgw.core.http.gateway_fields import GatewayFields
from fastgw.core.http.request import RequestHead

__all__ = ["PhasePlugin", "PluginCall", "PluginChain", "PluginReply", "render_reply"]

CRLF: Final = b"\r\n"


class PluginReply:
    """A plugin answers the request itself: status, a JSON ``message`` (Kong's
    ``kong.response.error`` shape) or a raw body, and response fields to add."""

    __slots__ = ("status", "message", "body", "lines")

    def __init__(self, status: int, message: str | None = None, lines: list[bytes] | None = None,
                 body: bytes | None = None) -> None:
        self.status = status
        self.message = message
        self.body = body
        self.lines = lines if lines is not None else []


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
    parts.append(b"Content-Length: %d\r\n" % len(body))
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


class PluginCall:
    """One request's plugin state: who the client is, and what the plugins changed."""

    __slots__ = ("head", "client_ip", "peer_ip", "trusted", "route_id", "service_id",
                 "consumer", "credential", "credential_id", "anonymous", "groups",
                 "upstream_drop", "upstream_add", "query", "path", "method", "body",
                 "content_type", "response_drop", "response_add", "ran", "chain",
                 "body_limit", "body_limit_hit", "received", "state")

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
        # Upstream request changes (inputs of core.http.upstream_head, rule U9).
        self.upstream_drop: set[bytes] = set()
        self.upstream_add: list[bytes] = []
        self.query: bytes | None = None  # the new query string ("?..." or b"")
        self.path: bytes | None = None  # the new upstream path
        self.method: str | None = None
        self.body: bytes | None = None  # the request body as buffered (body plugins)
        self.content_type = head.field(b"content-type")
        # Response changes (header_filter).
        self.response_drop: set[bytes] = set()
        self.response_add: list[bytes] = []
        self.ran: list[PhasePlugin] = []  # plugins whose access phase ran, in order
        self.chain = chain  # the consumer's chain once one is identified
        self.body_limit = 0  # request-size-limiting: bytes (0: the node's limit only)
        self.body_limit_hit = False
        self.received = 0  # request body bytes read when the access phase began
        self.state: dict[str, Any] | None = None  # per-plugin scratch (rare)

    def set_upstream_field(self, lname: bytes, line: bytes | None) -> None:
        """Kong's ``kong.service.request.set_header`` (line None: ``clear_header``)."""
        self.upstream_drop.add(lname)
        self.upstream_add = [x for x in self.upstream_add
                             if x.split(b":", 1)[0].lower() != lname]
        if line is not None:
            self.upstream_add.append(line)

    def set_response_field(self, lname: bytes, line: bytes) -> None:
        """Kong's ``kong.response.set_header`` for a field of the gateway's choosing."""
        self.response_drop.add(lname)
        self.response_add.append(line)


class PhasePlugin:
    """One plugin instance on one route: override the phases it takes part in."""

    __slots__ = ("name", "priority", "instance_id", "needs_body", "filters_response")

    def __init__(self, name: str, priority: int, instance_id: str) -> None:
        self.name = name
        self.priority = priority
        self.instance_id = instance_id
        self.needs_body = False  # access reads the request body (it is buffered first)
        self.filters_response = False  # has a header_filter

    def access(self, call: PluginCall) -> PluginReply | None:
        return None

    def header_filter(self, call: PluginCall, status: int,
                      fields: list[tuple[bytes, bytes]]) -> None:
        """``fields``: the response's (name, value) pairs as the client would get them."""

    def reply_filter(self, call: PluginCall, reply: PluginReply) -> None:
        """A gateway answer made during access: add this plugin's response fields."""


class PluginChain:
    """A route's plugins in Kong's order, and its consumers' own chains."""

    __slots__ = ("plugins", "by_consumer", "needs_body", "filters_response")

    def __init__(self, plugins: list[PhasePlugin],
                 by_consumer: dict[str, PluginChain] | None = None) -> None:
        self.plugins = plugins
        self.by_consumer = by_consumer
        chains = [self, *(by_consumer or {}).values()]
        self.needs_body = any(p.needs_body for c in chains for p in c.plugins)
        self.filters_response = any(p.filters_response for c in chains for p in c.plugins)

    def access(self, call: PluginCall) -> PluginReply | None:
        """Run the access phase; a reply ends it (and the request)."""
        plugins = self.plugins
        i = 0
        consumer = None
        while i < len(plugins):
            plugin = plugins[i]
            call.ran.append(plugin)
            reply = plugin.access(call)
            if reply is not None:
                for done in call.ran:
                    done.reply_filter(call, reply)
                return reply
            i += 1
            if call.consumer is not consumer:
                consumer = call.consumer
                chain = self.by_consumer.get(consumer.id) if (
                    self.by_consumer is not None and consumer is not None) else None
                if chain is not None and chain.plugins is not plugins:
                    # Go on with the consumer's chain after the plugin that identified it.
                    call.chain = chain
                    plugins = chain.plugins
                    names = [p.name for p in plugins]
                    i = names.index(plugin.name) + 1 if plugin.name in names else 0
        return None

    def response_head(self, call: PluginCall, status: int, head: bytes) -> bytes:
        """The response head (status line and fields, CRLF-terminated) with the plugins'
        fields dropped and added."""
        drop = call.response_drop
        add = call.response_add
        if call.chain.filters_response:
            fields = _fields(head)
            for plugin in call.chain.plugins:
                if plugin.filters_response and plugin in call.ran:
                    plugin.header_filter(call, status, fields)
        if not drop and not add:
            return head
        if drop:
            lines = head.split(CRLF)
            kept = [lines[0]] + [ln for ln in lines[1:-1]
                                 if ln.split(b":", 1)[0].strip().lower() not in drop]
            head = CRLF.join(kept) + CRLF
        return head + b"".join(add)


def _fields(head: bytes) -> list[tuple[bytes, bytes]]:
    out = []
    for line in head.split(CRLF)[1:]:
        if line:
            name, _, value = line.partition(b":")
            out.append((name.strip(), value.strip()))
    return out
