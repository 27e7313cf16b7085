"""key-auth, basic-auth and acl on the phases (decisions in core.plugins.auth).

`Consumers` indexes the snapshot's consumers and credentials once per config, so an
authentication is one dict lookup. Once a consumer is identified (or the anonymous one
stands in), the headers Kong sends upstream are set and the client's own copies of them
dropped: ``X-Consumer-ID``, ``X-Consumer-Custom-ID``, ``X-Consumer-Username``,
``X-Credential-Identifier``, ``X-Anonymous-Consumer`` (and ``X-Consumer-Groups`` by acl).
"""

from __future__ import annotations

import time
from typing import Any, Final, Mapping

from fastgw.core.plugins.auth import (
    ACL_DENIED,
    BASIC_REALM,
    DUPLICATE_KEY,
    INVALID_CREDENTIALS,
    KEY_REALM,
    NO_KEY,
    UNAUTHORIZED,
    acl_allows,
    body_fields,
    find_api_key,
    parse_basic,
    password_matches,
    remove_query_args,
)
from fastgw.core.plugins.transform import edit_body
from fastgw.dataplane.plugins.phases import PhasePlugin, PluginCall, PluginReply

__all__ = ["Consumers", "KeyAuth", "BasicAuth", "Acl"]

_CONSUMER_FIELDS: Final = (b"x-consumer-id", b"x-consumer-custom-id", b"x-consumer-username",
                           b"x-credential-identifier", b"x-anonymous-consumer")


class Consumers:
    """The snapshot's consumers, by id and username, and their credentials by key."""

    __slots__ = ("by_id", "by_username", "by_key", "by_basic_user", "groups")

    def __init__(self, consumers: Any) -> None:
        self.by_id: dict[str, Any] = {}
        self.by_username: dict[str, Any] = {}
        self.by_key: dict[str, tuple[Any, Any]] = {}
        self.by_basic_user: dict[str, tuple[Any, Any]] = {}
        self.groups: dict[str, list[str]] = {}
        for consumer in consumers:
            self.by_id[consumer.id] = consumer
            if consumer.username is not None:
                self.by_username[consumer.username] = consumer
            for cred in consumer.keyauth_credentials:
                self.by_key[cred.key] = (consumer, cred)
            for cred in consumer.basicauth_credentials:
                self.by_basic_user[cred.username] = (consumer, cred)
            self.groups[consumer.id] = [acl.group for acl in consumer.acls]

    def find(self, key: str | None) -> Any:
        """A consumer by id or username (a plugin's ``anonymous``)."""
        if key is None:
            return None
        return self.by_id.get(key) or self.by_username.get(key)


def _line(name: bytes, value: str) -> bytes:
    return name + b": " + value.encode("latin-1", "replace") + b"\r\n"


def identify(call: PluginCall, consumer: Any, credential: Any, identifier: str | None) -> None:
    """kong.client.authenticate and the upstream consumer headers (set_consumer)."""
    call.consumer = consumer
    call.credential = credential
    call.credential_id = None if credential is None else credential.id
    call.anonymous = credential is None
    for lname in _CONSUMER_FIELDS:
        call.set_upstream_field(lname, None)
    if consumer is not None:
        call.set_upstream_field(b"x-consumer-id", _line(b"X-Consumer-ID", consumer.id))
        if consumer.custom_id is not None:
            call.set_upstream_field(b"x-consumer-custom-id",
                                    _line(b"X-Consumer-Custom-ID", consumer.custom_id))
        if consumer.username is not None:
            call.set_upstream_field(b"x-consumer-username",
                                    _line(b"X-Consumer-Username", consumer.username))
    if identifier is not None:
        call.set_upstream_field(b"x-credential-identifier",
                                _line(b"X-Credential-Identifier", identifier))
    if credential is None:
        call.set_upstream_field(b"x-anonymous-consumer", b"X-Anonymous-Consumer: true\r\n")


class _Auth(PhasePlugin):
    """What key-auth and basic-auth share: the anonymous fallback."""

    __slots__ = ("consumers", "anonymous", "anonymous_key")

    def __init__(self, name: str, priority: int, instance_id: str, config: Mapping[str, Any],
                 consumers: Consumers) -> None:
        super().__init__(name, priority, instance_id)
        self.consumers = consumers
        self.anonymous_key: str | None = config.get("anonymous")
        self.anonymous = consumers.find(self.anonymous_key)

    def failed(self, call: PluginCall, reply: PluginReply) -> PluginReply | None:
        """Authentication failed: the anonymous consumer if configured, else ``reply``."""
        if self.anonymous_key is None:
            return reply
        if self.anonymous is None:
            return PluginReply(500, "An unexpected error occurred")
        identify(call, self.anonymous, None, None)
        return None


class KeyAuth(_Auth):
    __slots__ = ("key_names", "hide", "in_header", "in_query", "in_body", "on_preflight")

    def __init__(self, name: str, priority: int, instance_id: str, config: Mapping[str, Any],
                 consumers: Consumers) -> None:
        super().__init__(name, priority, instance_id, config, consumers)
        self.key_names = list(config["key_names"])
        self.hide = bool(config["hide_credentials"])
        self.in_header = bool(config["key_in_header"])
        self.in_query = bool(config["key_in_query"])
        self.in_body = bool(config["key_in_body"])
        self.on_preflight = bool(config["run_on_preflight"])
        self.needs_body = self.in_body

    def access(self, call: PluginCall) -> PluginReply | None:
        head = call.head
        if not self.on_preflight and head.method == "OPTIONS":
            return None
        if self.anonymous_key is not None and call.credential is not None:
            return None  # already authenticated by another plugin: logical OR
        body = body_fields(call.content_type, call.body or b"") if self.in_body else None
        query = call.query if call.query is not None else head.query
        key, name, duplicate = find_api_key(self.key_names, head.headers, query, body,
                                            in_header=self.in_header, in_query=self.in_query)
        if duplicate:
            return self.failed(call, PluginReply(401, DUPLICATE_KEY))
        if not key:
            return self.failed(call, PluginReply(401, NO_KEY, [KEY_REALM]))
        found = self.consumers.by_key.get(key)
        if found is not None:
            cred = found[1]
            if cred.ttl is not None and cred.created_at + cred.ttl <= time.time():
                found = None  # expired (Kong: the credential's TTL)
        if found is None:
            return self.failed(call, PluginReply(401, INVALID_CREDENTIALS))
        if self.hide and name is not None:
            call.set_upstream_field(name.lower().encode("latin-1"), None)
            call.query = remove_query_args(query, [name])
            if body is not None and name in body:
                edited = edit_body(call.content_type, call.body or b"",
                                   {"remove": {"body": [name]}})
                if edited is not None:
                    call.body = edited
        identify(call, found[0], found[1], found[1].id)
        return None


class BasicAuth(_Auth):
    __slots__ = ("hide",)

    def __init__(self, name: str, priority: int, instance_id: str, config: Mapping[str, Any],
                 consumers: Consumers) -> None:
        super().__init__(name, priority, instance_id, config, consumers)
        self.hide = bool(config["hide_credentials"])

    def access(self, call: PluginCall) -> PluginReply | None:
        if self.anonymous_key is not None and call.credential is not None:
            return None
        head = call.head
        proxy_auth = head.field(b"proxy-authorization")
        auth = head.field(b"authorization")
        if proxy_auth is None and auth is None:
            return self.failed(call, PluginReply(401, UNAUTHORIZED, [BASIC_REALM]))
        found = None
        password = ""
        for value in (proxy_auth, auth):
            parsed = parse_basic(value)
            if parsed is not None:
                found = self.consumers.by_basic_user.get(parsed[0])
                password = parsed[1]
                if found is not None:
                    break
        if self.hide:
            call.set_upstream_field(b"authorization", None)
            call.set_upstream_field(b"proxy-authorization", None)
        if found is None or not password_matches(found[1].password, found[0].id, password):
            return self.failed(call, PluginReply(401, INVALID_CREDENTIALS))
        identify(call, found[0], found[1], found[1].username)
        return None


class Acl(PhasePlugin):
    __slots__ = ("allow", "deny", "hide_groups", "consumers")

    def __init__(self, name: str, priority: int, instance_id: str, config: Mapping[str, Any],
                 consumers: Consumers) -> None:
        super().__init__(name, priority, instance_id)
        self.allow = config.get("allow")
        self.deny = config.get("deny")
        self.hide_groups = bool(config["hide_groups_header"])
        self.consumers = consumers

    def access(self, call: PluginCall) -> PluginReply | None:
        consumer = call.consumer
        if consumer is None:
            if call.credential is not None:
                return PluginReply(403, ACL_DENIED)
            return PluginReply(401, UNAUTHORIZED)
        groups = self.consumers.groups.get(consumer.id, [])
        if not acl_allows(self.allow, self.deny, groups):
            return PluginReply(403, ACL_DENIED)
        call.groups = groups
        if not self.hide_groups and groups:
            call.set_upstream_field(b"x-consumer-groups",
                                    _line(b"X-Consumer-Groups", ", ".join(groups)))
        return None
