"""Consumers' credentials on the Admin API, as Kong's plugins serve them.

- ``/consumers/{c}/key-auth``, ``/consumers/{c}/basic-auth``, ``/consumers/{c}/acls``:
  list and create (POST), and ``/{id or key|username|group}``: GET, PUT, PATCH, DELETE;
- ``/key-auths``, ``/basic-auths``, ``/acls``: every consumer's, with
  ``/{id or key|username|group}`` and ``/{...}/consumer``.

Credentials are kept with their consumer (fastgw.config.credentials); each write builds
the new consumer and commits the whole config through the store like any other write.
Kong's rules: a key-auth key and a basic-auth username are unique in the workspace, a
group once per consumer (409); a missing key is generated; a basic-auth password is
stored hashed and only the hash is ever returned.
"""

from __future__ import annotations

from dataclasses import replace
from functools import partial
from typing import Any, Awaitable, Callable

from fastgw.config import ConfigError
from fastgw.config.credentials import (
    CREDENTIAL_KINDS,
    Credential,
    CredentialKind,
    credential_to_dict,
    make_credential,
)
from fastgw.config.model import Config, Consumer
from fastgw.config.schema import check_record
from fastgw.controlplane.admin import crud
from fastgw.controlplane.admin import entities as E
from fastgw.controlplane.admin.forms import parse_body
from fastgw.controlplane.admin.http import HTTPError, Response, json_response

__all__ = ["CREDENTIAL_ROUTES", "CREDENTIAL_ROOTS"]

Handler = Callable[[crud.Call], Awaitable[Response]]
CREDENTIAL_ROOTS = frozenset(k.top_endpoint for k in CREDENTIAL_KINDS.values())


def _all(cfg: Config, kind: CredentialKind) -> list[tuple[Consumer, Credential]]:
    return [(c, cred) for c in cfg.consumers for cred in getattr(c, kind.collection)]


def _find(cfg: Config, kind: CredentialKind, key: str,
          consumer: Consumer | None = None) -> tuple[Consumer, Credential] | None:
    pairs = [(c, cred) for c, cred in _all(cfg, kind) if consumer is None or c.id == consumer.id]
    for pair in pairs:
        if pair[1].id == key:
            return pair
    for pair in pairs:
        if getattr(pair[1], kind.endpoint_key) == key:
            return pair
    return None


def _consumer(call: crud.Call, cfg: Config | None = None) -> Consumer:
    found = E.find(cfg or call.config, "consumers", call.params["c"])
    if not isinstance(found, Consumer):
        raise E.not_found()
    return found


def _validate(kind: CredentialKind, body: dict[str, Any], consumer: Consumer) -> Credential:
    errors: list[tuple[str, str]] = []
    fields = {k: f for k, f in kind.fields.items() if k != "consumer"}
    body = {k: v for k, v in body.items() if k not in ("consumer", "created_at")}
    data = check_record(fields, body, "", errors)
    if errors:
        raise E.schema_error(ConfigError(errors))
    return make_credential(kind.collection, consumer.id, data)


def _unique(cfg: Config, kind: CredentialKind, consumer: Consumer, cred: Credential) -> None:
    for owner, other in _all(cfg, kind):
        if other.id == cred.id:
            continue
        if kind.collection == "acls":
            if owner.id == consumer.id and getattr(other, "group") == getattr(cred, "group"):
                raise E._unique_error({"consumer": {"id": consumer.id},
                                       "group": getattr(cred, "group")})
        elif getattr(other, kind.endpoint_key) == getattr(cred, kind.endpoint_key):
            raise E._unique_error({kind.endpoint_key: getattr(cred, kind.endpoint_key)})


def _with(cfg: Config, consumer: Consumer, kind: CredentialKind,
          creds: tuple[Credential, ...]) -> Config:
    changes: dict[str, Any] = {kind.collection: creds}
    updated = replace(consumer, **changes)
    return replace(cfg, consumers=tuple(updated if c.id == consumer.id else c
                                        for c in cfg.consumers))


def _save(cfg: Config, consumer: Consumer, kind: CredentialKind, cred: Credential) -> Config:
    _unique(cfg, kind, consumer, cred)
    held: tuple[Credential, ...] = getattr(consumer, kind.collection)
    if any(c.id == cred.id for c in held):
        creds = tuple(cred if c.id == cred.id else c for c in held)
    else:
        creds = (*held, cred)
    return _with(cfg, consumer, kind, creds)


def _body(call: crud.Call, kind: CredentialKind) -> dict[str, Any]:
    return parse_body(call.req, kind.fields)


def _render(consumer: Consumer, cred: Credential) -> dict[str, Any]:
    return credential_to_dict(cred, consumer.id)


# --------------------------------------------------------------------------- handlers

async def _list(call: crud.Call, kind: CredentialKind, nested: bool) -> Response:
    consumer = _consumer(call) if nested else None
    pairs = [p for p in _all(call.config, kind) if consumer is None or p[0].id == consumer.id]
    page = crud.paginate(call.req, [_Row(c, cred) for c, cred in pairs], _Row.render)
    return json_response(200, page)


class _Row:
    """A credential with its consumer, as paginate() wants items (with an ``id``)."""

    __slots__ = ("consumer", "cred", "id", "tags")

    def __init__(self, consumer: Consumer, cred: Credential) -> None:
        self.consumer, self.cred, self.id = consumer, cred, cred.id
        self.tags = cred.tags

    def render(self) -> dict[str, Any]:
        return _render(self.consumer, self.cred)


async def _create(call: crud.Call, kind: CredentialKind) -> Response:
    body = _body(call, kind)

    def change(cfg: Config) -> tuple[Config, str]:
        consumer = _consumer(call, cfg)
        cred = _validate(kind, body, consumer)
        _unique(cfg, kind, consumer, replace(cred, id=""))
        if _find(cfg, kind, cred.id) is not None:
            raise HTTPError(400, {"code": 3, "name": "primary key violation",
                                  "message": f"primary key violation on key "
                                             f"'{E.lua_table({'id': cred.id})}'",
                                  "fields": {"id": cred.id}})
        return _save(cfg, consumer, kind, cred), cred.id

    cred_id = await crud.commit(call, change)
    return json_response(201, _render(*_stored(call, kind, cred_id)))


def _stored(call: crud.Call, kind: CredentialKind, cred_id: str) -> tuple[Consumer, Credential]:
    found = _find(call.config, kind, cred_id)
    assert found is not None
    return found


def _target(call: crud.Call, cfg: Config, kind: CredentialKind,
            nested: bool) -> tuple[Consumer, Credential]:
    found = _find(cfg, kind, call.params["id"], _consumer(call, cfg) if nested else None)
    if found is None:
        raise E.not_found()
    return found


async def _get(call: crud.Call, kind: CredentialKind, nested: bool) -> Response:
    return json_response(200, _render(*_target(call, call.config, kind, nested)))


async def _get_consumer(call: crud.Call, kind: CredentialKind) -> Response:
    consumer, _ = _target(call, call.config, kind, False)
    return json_response(200, E.to_dict(consumer))


async def _update(call: crud.Call, kind: CredentialKind, nested: bool, merge: bool) -> Response:
    body = _body(call, kind)
    E.check_body_id(body)  # the URL's credential is updated; a body id is still checked

    def change(cfg: Config) -> tuple[Config, str]:
        found = _find(cfg, kind, call.params["id"], _consumer(call, cfg) if nested else None)
        if found is None:
            if merge or not nested:
                raise E.not_found()
            consumer = _consumer(call, cfg)  # PUT creates at the key given
            key = call.params["id"]
            seed = {"id": key} if E._is_uuid(key) else {kind.endpoint_key: key}
            cred = _validate(kind, {**seed, **body}, consumer)
            return _save(cfg, consumer, kind, cred), cred.id
        consumer, old = found
        base = credential_to_dict(old, None) if merge else {kind.endpoint_key: getattr(
            old, kind.endpoint_key)}
        data = {**base, **body, "id": old.id}
        if kind.collection == "basicauth_credentials" and "password" not in body and merge:
            data["password"] = getattr(old, "password")  # already hashed: kept as is
        cred = _validate(kind, data, consumer)
        cred = replace(cred, created_at=old.created_at)
        return _save(cfg, consumer, kind, cred), cred.id

    cred_id = await crud.commit(call, change)
    return json_response(200, _render(*_stored(call, kind, cred_id)))


async def _delete(call: crud.Call, kind: CredentialKind, nested: bool) -> Response:
    def change(cfg: Config) -> tuple[Config, None]:
        found = _find(cfg, kind, call.params["id"], _consumer(call, cfg) if nested else None)
        if found is None:
            raise E.not_found()
        consumer, cred = found
        held: tuple[Credential, ...] = getattr(consumer, kind.collection)
        return _with(cfg, consumer, kind, tuple(c for c in held if c.id != cred.id)), None

    await crud.commit(call, change)
    return Response(204, content_type=None)


def _routes() -> list[tuple[tuple[str, ...], dict[str, Handler]]]:
    out: list[tuple[tuple[str, ...], dict[str, Handler]]] = []
    for kind in CREDENTIAL_KINDS.values():
        nested = ("consumers", "{c}", kind.endpoint)
        out.append((nested, {"GET": partial(_list, kind=kind, nested=True),
                             "POST": partial(_create, kind=kind)}))
        out.append(((*nested, "{id}"), {
            "GET": partial(_get, kind=kind, nested=True),
            "PUT": partial(_update, kind=kind, nested=True, merge=False),
            "PATCH": partial(_update, kind=kind, nested=True, merge=True),
            "DELETE": partial(_delete, kind=kind, nested=True)}))
        top = (kind.top_endpoint,)
        out.append((top, {"GET": partial(_list, kind=kind, nested=False)}))
        out.append(((*top, "{id}"), {
            "GET": partial(_get, kind=kind, nested=False),
            "PATCH": partial(_update, kind=kind, nested=False, merge=True),
            "DELETE": partial(_delete, kind=kind, nested=False)}))
        out.append(((*top, "{id}", "consumer"), {"GET": partial(_get_consumer, kind=kind)}))
    return out


CREDENTIAL_ROUTES = _routes()
