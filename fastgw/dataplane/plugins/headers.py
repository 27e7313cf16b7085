"""cors, correlation-id, request-transformer and response-transformer on the phases
(decisions in core.plugins.cors and core.plugins.transform)."""

from __future__ import annotations

import itertools
import os
import uuid
from typing import Any, Mapping

from fastgw.core.plugins.cors import MANAGED_FIELDS, CorsPolicy
from fastgw.core.plugins.transform import (
    edit_body,
    edit_fields,
    edit_json_body,
    edit_query,
    has_json_edits,
    is_json_content_type,
)
from fastgw.dataplane.plugins.phases import BodyRewrite, PhasePlugin, PluginCall, PluginReply

__all__ = ["Cors", "CorrelationId", "RequestTransformer", "ResponseTransformer"]


def _text(value: bytes | None) -> str | None:
    return None if value is None else value.decode("latin-1")


class Cors(PhasePlugin):
    def __init__(self, name: str, priority: int, instance_id: str,
                 config: Mapping[str, Any]) -> None:
        super().__init__(name, priority, instance_id)
        self.policy = CorsPolicy(config)
        self.filters_response = True

    def access(self, call: PluginCall) -> PluginReply | None:
        head = call.head
        if head.method != "OPTIONS":
            return None
        origin = head.field(b"origin")
        if origin is None or head.field(b"access-control-request-method") is None:
            return None
        lines = self.policy.preflight(origin.decode("latin-1"),
                                      _text(head.field(b"access-control-request-headers")),
                                      _text(head.field(b"access-control-request-private-network")))
        if lines is None:
            return None  # preflight_continue: the backend answers
        return PluginReply(200, None, lines, b"")

    def _lines(self, call: PluginCall) -> list[bytes]:
        return self.policy.response_lines(_text(call.head.field(b"origin")))

    def header_filter(self, call: PluginCall, status: int,
                      fields: list[tuple[bytes, bytes]]) -> None:
        # The plugin's fields replace the backend's (Kong's set_header).
        for lname in MANAGED_FIELDS:
            call.set_response_field(lname, b"")
        call.set_response_field(b"access-control-allow-origin", b"".join(self._lines(call)))

    def reply_filter(self, call: PluginCall, reply: PluginReply) -> None:
        if reply.body == b"" and reply.status == 200 and call.ran[-1] is self:
            return  # this plugin's own preflight answer
        reply.lines += self._lines(call)


_WORKER_UUID = str(uuid.uuid4())
_COUNTER = itertools.count(1)


class CorrelationId(PhasePlugin):
    def __init__(self, name: str, priority: int, instance_id: str,
                 config: Mapping[str, Any]) -> None:
        super().__init__(name, priority, instance_id)
        header: str = config["header_name"]
        self.lname = header.lower().encode("latin-1")
        self.name_bytes = header.encode("latin-1")
        self.generator: str = config["generator"]
        self.echo = bool(config["echo_downstream"])

    def _generate(self, call: PluginCall) -> bytes:
        generator = self.generator
        if generator == "uuid":
            return str(uuid.uuid4()).encode()
        if generator == "uuid#counter":
            return f"{_WORKER_UUID}#{next(_COUNTER)}".encode()
        # tracker: where the request came in and which one it was on this worker
        return f"{call.peer_ip}-{os.getpid()}-{next(_COUNTER)}".encode()

    def access(self, call: PluginCall) -> PluginReply | None:
        value = call.head.field(self.lname)
        if value is None:
            value = self._generate(call)
            call.set_upstream_field(self.lname, self.name_bytes + b": " + value + b"\r\n")
        if self.echo:
            call.set_response_field(self.lname, self.name_bytes + b": " + value + b"\r\n")
        return None


class RequestTransformer(PhasePlugin):
    def __init__(self, name: str, priority: int, instance_id: str,
                 config: Mapping[str, Any]) -> None:
        super().__init__(name, priority, instance_id)
        self.config = config
        self.method: str | None = config.get("http_method")
        uri = config["replace"].get("uri")
        self.uri = uri.encode("latin-1") if uri else None
        self.needs_body = any(config[a].get("body") for a in
                              ("remove", "rename", "replace", "add", "append"))

    def access(self, call: PluginCall) -> PluginReply | None:
        config = self.config
        head = call.head
        if self.method is not None:
            call.method = self.method
        edit = edit_fields([(name, value) for _, name, value in head.headers], config)
        if edit is not None:
            for lname, lines in edit.by_name().items():
                call.set_upstream_field(lname, lines)
        query = edit_query(call.query if call.query is not None else head.query, config)
        if query is not None:
            call.query = query
        if self.uri is not None:
            call.path = self.uri
        if self.needs_body:
            body = edit_body(head.field(b"content-type"), call.body or b"", config)
            if body is not None:
                call.body = body
        return None


class ResponseTransformer(PhasePlugin):
    def __init__(self, name: str, priority: int, instance_id: str,
                 config: Mapping[str, Any]) -> None:
        super().__init__(name, priority, instance_id)
        self.config = config
        self.filters_response = True
        self.json_edits = JsonBodyEdits(config) if has_json_edits(config) else None

    def header_filter(self, call: PluginCall, status: int,
                      fields: list[tuple[bytes, bytes]]) -> None:
        ctype = next((v for n, v in fields if n.lower() == b"content-type"), None)
        edit = edit_fields(fields, self.config)
        if edit is not None:
            for lname, lines in edit.by_name().items():
                call.set_response_field(lname, lines)
                if lname == b"content-type":
                    ctype = lines.partition(b"\r\n")[0].partition(b":")[2].strip() or None
        # Kong's body_filter reads the Content-Type as the header edits left it.
        if self.json_edits is not None and is_json_content_type(ctype):
            call.rewrite = self.json_edits


class JsonBodyEdits(BodyRewrite):
    """response-transformer's remove/rename/replace/add/append ``json`` edits."""

    def __init__(self, config: Mapping[str, Any]) -> None:
        self.config = config

    def rewrite(self, body: bytes) -> bytes:
        edited = edit_json_body(self.config, body)
        return body if edited is None else edited
