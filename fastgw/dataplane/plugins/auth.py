"""key-auth, basic-auth and acl on the phases (decisions in core.plugins.auth).

`Consumers` indexes the snapshot's consumers and credentials once per config, with the
upstream fields each identity sets already rendered, so an authentication is one dict
lookup and one dict update. Once a consumer is identified (or the anonymous one stands
in), the fields Kong sends upstream are set and the client's own copies dropped:
``X-Consumer-ID``, ``X-Consumer-Custom-ID``, ``X-Consumer-Username``,
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

__all__ = ["Consumers", "Identity", "KeyAuth", "BasicAuth", "Acl"]

_CONSUMER_FIELDS: Final = (b"x-consumer-id", b"x-consumer-custom-id", b"x-consumer-username",
                           b"x-credential-identifier", b"x-anonymous-consumer")


def _line(name: bytes, value: str) -> bytes:
    return name + b": " + value.encode("latin-1", "replace") + b"\r\n"


class Identity:
    """A consumer with one of its credentials (None: standing in as anonymous), and the
    upstream fields that say so (Kong's set_consumer), rendered once."""

    def __init__(self, consumer: Any, credential: Any, identifier: str | None) -> None:
        self.consumer = consumer
        self.credential = credential
        self.credential_id: str | None = None if credential is None else credential.id
        # ttl: the epoch second the credential expires at (None: never)
        self.expires: float | None = None
        if credential is not None and getattr(credential, "ttl", None) is not None:
            self.expires = float(credential.created_at + credential.ttl)
        fields = {lname: b"" for lname in _CONSUMER_FIELDS}
        fields[b"x-consumer-id"] = _line(b"X-Consumer-ID", consumer.id)
        if consumer.custom_id is not None:
            fields[b"x-consumer-custom-id"] = _line(b"X-Consumer-Custom-ID", consumer.custom_id)
        if consumer.username is not None:
            fields[b"x-consumer-username"] = _line(b"X-Consumer-Username", consumer.username)
        if identifier is not None:
            fields[b"x-credential-identifier"] = _line(b"X-Credential-Identifier", identifier)
        if credential is None:
            fields[b"x-anonymous-consumer"] = b"X-Anonymous-Consumer: true\r\n"
        self.fields = fields

    def apply(self, call: PluginCall) -> None:
        """kong.client.authenticate and the consumer fields upstream."""
        call.consumer = self.consumer
        call.credential = self.credential
        call.credential_id = self.credential_id
        call.anonymous = self.credential is None
        fields = call.upstream_fields
        if fields is None:
            call.upstream_fields = self.fields  # shared until a plugin adds to it
            call.fields_shared = True
        else:
            if call.fields_shared:
                fields = call.upstream_fields = dict(fields)
                call.fields_shared = False
            fields.update(self.fields)


class Consumers:
    """The snapshot's consumers, by id and username, and their credentials by key."""

    def __init__(self, consumers: Any) -> None:
        self.by_id: dict[str, Any] = {}
        self.by_username: dict[str, Any] = {}
        self.by_key: dict[bytes, Identity] = {}
        self.by_basic_user: dict[str, Identity] = {}
        self.groups: dict[str, list[str]] = {}
        self.anonymous: dict[str, Identity] = {}
        for consumer in consumers:
            self.by_id[consumer.id] = consumer
            if consumer.username is not None:
                self.by_username[consumer.username] = consumer
            for cred in consumer.keyauth_credentials:
                self.by_key[cred.key.encode("latin-1", "replace")] = Identity(
                    consumer, cred, cred.id)
            for cred in consumer.basicauth_credentials:
                self.by_basic_user[cred.username] = Identity(consumer, cred, cred.username)
            self.groups[consumer.id] = [acl.group for acl in consumer.acls]

    def anonymous_identity(self, key: str | None) -> Identity | None:
        """A plugin's ``anonymous`` consumer (by id or username) as an identity."""
        if key is None:
            return None
        consumer = self.by_id.get(key) or self.by_username.get(key)
        if consumer is None:
            return None
        found = self.anonymous.get(consumer.id)
        if found is None:
            found = self.anonymous[consumer.id] = Identity(consumer, None, None)
        return found


class _Auth(PhasePlugin):
    """What key-auth and basic-auth share: the anonymous fallback."""

    def __init__(self, name: str, priority: int, instance_id: str, config: Mapping[str, Any],
                 consumers: Consumers) -> None:
        super().__init__(name, priority, instance_id)
        self.consumers = consumers
        self.anonymous_key: str | None = config.get("anonymous")
        self.anonymous = consumers.anonymous_identity(self.anonymous_key)

    def failed(self, call: PluginCall, reply: PluginReply) -> PluginReply | None:
        """Authentication failed: the anonymous consumer if configured, else ``reply``."""
        if self.anonymous_key is None:
            return reply
        if self.anonymous is None:
            return PluginReply(500, "An unexpected error occurred")
        self.anonymous.apply(call)
        return None


class KeyAuth(_Auth):
    def __init__(self, name: str, priority: int, instance_id: str, config: Mapping[str, Any],
                 consumers: Consumers) -> None:
        super().__init__(name, priority, instance_id, config, consumers)
        self.key_names: list[str] = list(config["key_names"])
        self.hide = bool(config["hide_credentials"])
        self.in_header = bool(config["key_in_header"])
        self.in_query = bool(config["key_in_query"])
        self.in_body = bool(config["key_in_body"])
        self.on_preflight = bool(config["run_on_preflight"])
        self.needs_body = self.in_body
        # The common case, one name looked for in the fields first: one pass, no decoding.
        self.single: bytes | None = self.key_names[0].lower().encode("latin-1") \
            if len(self.key_names) == 1 and self.in_header else None

    def access(self, call: PluginCall) -> PluginReply | None:
        head = call.head
        if not self.on_preflight and head.method == "OPTIONS":
            return None
        if self.anonymous_key is not None and call.credential is not None:
            return None  # already authenticated by another plugin: logical OR
        single = self.single
        if single is not None:
            key: bytes | None = None
            seen = 0
            for lname, _, value in head.headers:
                if lname == single:
                    key = value
                    seen += 1
            if seen == 1 and key:
                found = self.consumers.by_key.get(key)
                if found is not None and found.expires is None:
                    found.apply(call)
                    if self.hide:
                        call.set_upstream_field(single, b"")
                    return None
        return self._general(call)

    def _general(self, call: PluginCall) -> PluginReply | None:
        head = call.head
        body = body_fields(head.field(b"content-type"), call.body or b"") \
            if self.in_body else None
        query = call.query if call.query is not None else head.query
        key, name, duplicate = find_api_key(self.key_names, head.headers, query, body,
                                            in_header=self.in_header, in_query=self.in_query)
        if duplicate:
            return self.failed(call, PluginReply(401, DUPLICATE_KEY))
        if not key:
            return self.failed(call, PluginReply(401, NO_KEY, [KEY_REALM]))
        found = self.consumers.by_key.get(key.encode("latin-1", "replace"))
        if found is not None and found.expires is not None and found.expires <= time.time():
            found = None  # expired (Kong: the credential's ttl)
        if found is None:
            return self.failed(call, PluginReply(401, INVALID_CREDENTIALS))
        if self.hide and name is not None:
            call.set_upstream_field(name.lower().encode("latin-1"), b"")
            call.query = remove_query_args(query, [name])
            if body is not None and name in body:
                edited = edit_body(head.field(b"content-type"), call.body or b"",
                                   {"remove": {"body": [name]}})
                if edited is not None:
                    call.body = edited
        found.apply(call)
        return None


class BasicAuth(_Auth):
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
        found: Identity | None = None
        password = ""
        for value in (proxy_auth, auth):
            parsed = parse_basic(value)
            if parsed is not None:
                found = self.consumers.by_basic_user.get(parsed[0])
                password = parsed[1]
                if found is not None:
                    break
        if self.hide:
            call.set_upstream_field(b"authorization", b"")
            call.set_upstream_field(b"proxy-authorization", b"")
        if found is None or not password_matches(found.credential.password,
                                                 found.consumer.id, password):
            return self.failed(call, PluginReply(401, INVALID_CREDENTIALS))
        found.apply(call)
        return None


class Acl(PhasePlugin):
    def __init__(self, name: str, priority: int, instance_id: str, config: Mapping[str, Any],
                 consumers: Consumers) -> None:
        super().__init__(name, priority, instance_id)
        self.allow: list[str] | None = config.get("allow")
        self.deny: list[str] | None = config.get("deny")
        self.hide_groups = bool(config["hide_groups_header"])
        self.consumers = consumers
        # Verdicts and the groups field, per consumer (the config and groups are fixed
        # for the snapshot's life).
        self.verdicts: dict[str, bytes | None] = {}

    def access(self, call: PluginCall) -> PluginReply | None:
        consumer = call.consumer
        if consumer is None:
            if call.credential is not None:
                return PluginReply(403, ACL_DENIED)
            return PluginReply(401, UNAUTHORIZED)
        groups = self.consumers.groups.get(consumer.id)
        if groups is None:
            groups = [a.group for a in consumer.acls]
        call.groups = groups
        line = self.verdicts.get(consumer.id, b"?")
        if line == b"?":
            line = None
            if acl_allows(self.allow, self.deny, groups):
                line = _line(b"X-Consumer-Groups", ", ".join(groups)) \
                    if groups and not self.hide_groups else b""
            self.verdicts[consumer.id] = line
        if line is None:
            return PluginReply(403, ACL_DENIED)
        if line:
            call.set_upstream_field(b"x-consumer-groups", line)
        return None
