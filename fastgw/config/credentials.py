"""Consumers' credentials: key-auth keys, basic-auth passwords and ACL groups (pure).

Kong keeps them as entities of their own (``keyauth_credentials``,
``basicauth_credentials``, ``acls``; ``kong/plugins/*/daos.lua``) that reference a
consumer. fastgw stores them with their consumer (decK's nested style, the way they are
written in declarative files and dumped), so a consumer's whole identity moves as one
value through workspaces and snapshots; the Admin API still shows each one as Kong's
entity, with ``consumer: {"id": ...}``.

Basic-auth passwords are stored hashed the way Kong hashes them (``crypto.lua``: hex
SHA-1 of the password followed by the consumer id), so files exported by Kong or decK
carry over. A value that already is a 40-digit hex SHA-1 is taken as hashed (a stored
file loads back unchanged); the clear text is never stored or returned.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from dataclasses import dataclass, field, fields
from typing import Any, Mapping

from fastgw.config.model import new_id, now_s, tag_error, uuid_error
from fastgw.config.schema import Field

__all__ = ["KeyAuthCredential", "BasicAuthCredential", "AclGroup", "Credential",
           "CREDENTIAL_KINDS", "CredentialKind", "hash_password", "is_password_hash",
           "credential_to_dict", "make_credential"]


@dataclass(frozen=True, slots=True, kw_only=True)
class KeyAuthCredential:
    id: str = field(default_factory=new_id)
    key: str = field(default_factory=lambda: uuid.uuid4().hex)
    ttl: int | None = None
    tags: tuple[str, ...] | None = None
    created_at: int = field(default_factory=now_s)
    extra: dict[str, Any] = field(default_factory=dict, hash=False)


@dataclass(frozen=True, slots=True, kw_only=True)
class BasicAuthCredential:
    id: str = field(default_factory=new_id)
    username: str
    password: str  # hashed (hash_password)
    tags: tuple[str, ...] | None = None
    created_at: int = field(default_factory=now_s)
    extra: dict[str, Any] = field(default_factory=dict, hash=False)


@dataclass(frozen=True, slots=True, kw_only=True)
class AclGroup:
    id: str = field(default_factory=new_id)
    group: str
    tags: tuple[str, ...] | None = None
    created_at: int = field(default_factory=now_s)
    extra: dict[str, Any] = field(default_factory=dict, hash=False)


Credential = KeyAuthCredential | BasicAuthCredential | AclGroup

_SHA1_HEX = re.compile(r"[0-9a-f]{40}\Z")


def hash_password(consumer_id: str, password: str) -> str:
    """Kong's basic-auth hash: hex SHA-1 of password .. consumer id."""
    return hashlib.sha1((password + consumer_id).encode("utf-8")).hexdigest()


def is_password_hash(value: str) -> bool:
    return _SHA1_HEX.match(value) is not None


_TAGS = Field("set", elements=Field("string", validator=tag_error))
_ID = Field("string", validator=uuid_error)


@dataclass(frozen=True, slots=True)
class CredentialKind:
    """One credential collection: its names in Kong and how it is addressed."""

    collection: str  # consumer field and declarative key: keyauth_credentials
    endpoint: str  # /consumers/{c}/<endpoint>: key-auth
    top_endpoint: str  # /<top_endpoint>: key-auths
    endpoint_key: str  # addressable by this besides id: key, username, group
    cls: type
    fields: Mapping[str, Field]


CREDENTIAL_KINDS: dict[str, CredentialKind] = {k.collection: k for k in (
    CredentialKind("keyauth_credentials", "key-auth", "key-auths", "key", KeyAuthCredential, {
        "id": _ID, "created_at": Field("integer"), "consumer": Field("foreign"),
        "key": Field("string"), "ttl": Field("integer", between=(0, 100000000)),
        "tags": _TAGS}),
    CredentialKind("basicauth_credentials", "basic-auth", "basic-auths", "username",
                   BasicAuthCredential, {
        "id": _ID, "created_at": Field("integer"), "consumer": Field("foreign"),
        "username": Field("string", required=True), "password": Field("string", required=True),
        "tags": _TAGS}),
    CredentialKind("acls", "acls", "acls", "group", AclGroup, {
        "id": _ID, "created_at": Field("integer"), "consumer": Field("foreign"),
        "group": Field("string", required=True), "tags": _TAGS}),
)}


def make_credential(collection: str, consumer_id: str, data: Mapping[str, Any],
                    now: float | None = None) -> Credential:
    """A credential from validated fields; ids derived from the consumer and natural key
    when missing (stable across reloads of an unchanged file), passwords hashed."""
    kind = CREDENTIAL_KINDS[collection]
    names = {f.name for f in fields(kind.cls)}
    kw = {k: v for k, v in data.items() if k in names and v is not None}
    if kind.collection == "keyauth_credentials" and not kw.get("key"):
        kw["key"] = uuid.uuid4().hex
    if kind.collection == "basicauth_credentials":
        password = kw.get("password", "")
        if not is_password_hash(password):
            kw["password"] = hash_password(consumer_id, password)
    if "tags" in kw:
        kw["tags"] = tuple(kw["tags"])
    if not kw.get("id"):
        natural = kw.get(kind.endpoint_key)
        kw["id"] = str(uuid.uuid5(_NS, f"{collection}:{consumer_id}:{natural}")) if natural \
            else new_id()
    if kw.get("created_at") is None:
        kw["created_at"] = now_s() if now is None else int(now)
    made: Credential = kind.cls(**kw)
    return made


_NS = uuid.UUID("8a4d2f6e-3c1b-4e0a-9f57-6b2d1c0e9a33")


def credential_to_dict(cred: Credential, consumer_id: str | None) -> dict[str, Any]:
    """Kong's Admin API shape (``consumer`` as ``{"id": ...}``; None: nested in a dump)."""
    out: dict[str, Any] = {}
    for f in fields(cred):
        if f.name == "extra":
            continue
        v = getattr(cred, f.name)
        out[f.name] = list(v) if isinstance(v, tuple) else v
    if consumer_id is not None:
        out["consumer"] = {"id": consumer_id}
    out.update(cred.extra)
    return out
