"""Kong declarative configuration (``kong.yml`` as JSON) <-> ``Config``. Pure, no I/O.

Loading validates every entity (collecting all errors), resolves foreign references by
name or id, checks uniqueness, fills ids/timestamps, and reports fields Kong knows but
fastgw does not implement in ``Config.warnings`` instead of silently dropping them.

``dump_declarative`` writes the nested style (routes under services, targets under
upstreams; plugins top level with id references so their order is preserved), format
3.0, plus the ``gateway`` section. ``load_declarative(dump_declarative(c)) == c``.
"""

from __future__ import annotations

import copy
import hashlib
import re
import time
import uuid
from dataclasses import fields
from typing import Any, Iterable, Mapping

from fastgw.config.credentials import CREDENTIAL_KINDS, credential_to_dict, make_credential
from fastgw.config.model import (
    CREDENTIAL_FIELDS,
    SNI,
    CACertificate,
    Certificate,
    Config,
    Consumer,
    Plugin,
    Route,
    Service,
    Target,
    Upstream,
    entity_to_dict,
)
from fastgw.config.plugins import BUNDLED, PLUGINS
from fastgw.config.settings import GatewaySettings, load_settings, settings_to_dict
from fastgw.config.validate import NOT_ENFORCED, ConfigError, Errors, join, validate_entity

__all__ = ["load_declarative", "dump_declarative", "build_entity", "grouped_by_parent",
           "FORMAT_VERSIONS", "SUPPORTED_PLUGINS", "enabled_plugins", "entity_document",
           "is_entity_key"]

FORMAT_VERSIONS = ("1.1", "2.1", "3.0")
# Plugins fastgw executes; any other plugin is refused (fastgw.config.plugins).
SUPPORTED_PLUGINS: frozenset[str] = frozenset(PLUGINS)


def enabled_plugins(gateway: GatewaySettings) -> frozenset[str]:
    """The plugins a node runs: ``gateway.plugins`` resolved (``bundled`` = all of
    fastgw's), as Kong resolves its ``plugins`` property."""
    names: set[str] = set()
    for item in gateway.plugins:
        if item == "bundled":
            names.update(BUNDLED)
        elif item != "off":
            names.add(item)
    return frozenset(names)

_COLLECTIONS = ("services", "routes", "upstreams", "targets", "consumers", "plugins",
                "certificates", "snis", "ca_certificates")
_TOP_META = {"_format_version", "gateway"}
# Kong entity collections a declarative file may hold (Kong 3.x and Kong Enterprise's
# declarative schema, decK's dumps) that fastgw does not implement: kept verbatim in
# ``Config.extra`` and reported. Keys starting with "_" (decK's `_info`, `_konnect`,
# `_comment`, `_ignore`, `_transform`, `_workspace`, `_plugin_configs`) are kept silently.
_TOP_UNSUPPORTED = frozenset({
    "vaults", "consumer_groups",
    "consumer_group_consumers", "consumer_group_plugins", "keys", "key_sets", "partials",
    "filter_chains", "parameters", "licenses", "custom_plugins", "event_hooks", "jwt_secrets",
    "hmacauth_credentials", "oauth2_credentials", "oauth2_authorization_codes",
    "oauth2_tokens", "mtls_auth_credentials", "keyauth_enc_credentials",
    "degraphql_routes", "graphql_ratelimiting_advanced_cost_decorations", "jwt_signer_jwks",
    "vault_auth_vaults", "developers", "document_objects", "files", "rbac_users",
    "rbac_roles", "rbac_role_entities", "rbac_role_endpoints", "rbac_user_roles", "admins",
    "workspaces_meta", "sm_vaults", "credentials", "applications", "application_instances",
})
_CLASSES: dict[str, type] = {
    "services": Service, "routes": Route, "upstreams": Upstream,
    "targets": Target, "consumers": Consumer, "plugins": Plugin,
    "certificates": Certificate, "snis": SNI, "ca_certificates": CACertificate,
}
_FK_TARGET = {"service": "services", "route": "routes", "consumer": "consumers",
              "upstream": "upstreams", "certificate": "certificates",
              "client_certificate": "certificates"}
# Kinds whose foreign keys are resolved (by name or id) once everything is read.
_REFERRING = ("routes", "targets", "plugins", "snis", "services", "upstreams")
_NAME_KEY = {"services": "name", "routes": "name", "upstreams": "name",
             "consumers": "username", "plugins": "instance_name", "snis": "name",
             "ca_certificates": "cert_digest"}
# 2.x guessed regexes from metacharacters; 3.0 requires "~". Kong's own migration rule.
_LEGACY_REGEX_RE = re.compile(r"[^a-zA-Z0-9._~/%-]")


def is_entity_key(key: Any) -> bool:
    """Whether a top-level key of a declarative document holds entities or metadata that
    belong to a workspace (as opposed to fastgw's `gateway` and `workspaces`)."""
    return key in _COLLECTIONS or key in _TOP_UNSUPPORTED or (
        isinstance(key, str) and key.startswith("_") and key != "_format_version")


class _Item:
    """One validated entity awaiting reference resolution."""

    __slots__ = ("kind", "path", "data", "parent_fk", "parent")

    def __init__(self, kind: str, path: str, data: dict[str, Any],
                 parent_fk: str | None = None, parent: "_Item | None" = None) -> None:
        self.kind, self.path, self.data = kind, path, data
        self.parent_fk, self.parent = parent_fk, parent


class _Loader:
    def __init__(self, fmt: str, now: float, supported_plugins: Iterable[str]) -> None:
        self.fmt = fmt
        self.now = now
        self.enabled = frozenset(supported_plugins)
        self.errors: Errors = []
        self.warnings: list[str] = []
        self.items: dict[str, list[_Item]] = {k: [] for k in _COLLECTIONS}

    # -- walking -----------------------------------------------------------------------
    def array(self, value: Any, path: str) -> list[Any]:
        if value is None:
            return []
        if not isinstance(value, list):
            self.errors.append((path, "expected an array"))
            return []
        return value

    def entity(self, kind: str, raw: Any, path: str, *, parent: _Item | None = None,
               parent_fk: str | None = None, nested: Iterable[str] = ()) -> _Item | None:
        nested = tuple(nested)
        if kind == "routes" and isinstance(raw, dict):
            raw = self._migrate_paths(raw, path)
        data = validate_entity(kind, raw, path, self.errors, self.warnings,
                               nested_in=parent_fk, ignore=nested,
                               enabled_plugins=self.enabled)
        item = None
        if data is not None:
            item = _Item(kind, path, data, parent_fk, parent)
            self.items[kind].append(item)
        # Children are validated even when the parent is invalid: report everything.
        if isinstance(raw, dict):
            for child_kind, fk in (("routes", "service"), ("targets", "upstream"),
                                   ("plugins", kind[:-1]), ("snis", "certificate")):
                if child_kind in nested:
                    for i, c in enumerate(self.array(raw.get(child_kind), join(path, child_kind))):
                        cpath = join(join(path, child_kind), i)
                        self.entity(child_kind, c, cpath, parent=item, parent_fk=fk,
                                    nested=("plugins",) if child_kind == "routes" else ())
        return item

    def _migrate_paths(self, raw: dict[str, Any], path: str) -> dict[str, Any]:
        paths = raw.get("paths")
        if self.fmt == "3.0" or not isinstance(paths, list):
            return raw
        new = []
        for i, p in enumerate(paths):
            if isinstance(p, str) and not p.startswith("~") and _LEGACY_REGEX_RE.search(p):
                self.warnings.append(f"{join(join(path, 'paths'), i)}: _format_version "
                                     f"{self.fmt} regex path '{p}' converted to '~{p}'")
                p = "~" + p
            new.append(p)
        return {**raw, "paths": new}

    # -- ids, uniqueness, references ------------------------------------------------------
    def assign_ids(self, kinds: Iterable[str]) -> None:
        """Fill ids and timestamps. Like Kong's declarative loader, a missing id is derived
        (uuid5) from the entity's unique key when it has one, so reloading an unchanged
        file keeps ids stable (balancer/health state is keyed by id); uuid4 otherwise."""
        for kind in kinds:
            used = {it.data["id"] for it in self.items[kind] if it.data.get("id")}
            for it in self.items[kind]:
                d = it.data
                if d.get("id") is None:
                    key = _natural_key(kind, d)
                    new = str(uuid.uuid5(_NS, f"{kind}:{key}")) if key else None
                    # A duplicate key is reported by check_unique; don't double-report it.
                    d["id"] = new if new and new not in used else str(uuid.uuid4())
                    used.add(d["id"])
                ts = round(self.now, 3) if kind == "targets" else int(self.now)
                if d.get("created_at") is None:
                    d["created_at"] = ts
                if d.get("updated_at") is None:
                    d["updated_at"] = d["created_at"]

    def check_ids(self) -> None:
        for kind, items in self.items.items():
            seen: set[str] = set()
            for it in items:
                if it.data["id"] in seen:
                    self.errors.append((join(it.path, "id"), f"uniqueness violation: '{kind}' "
                                        f"entity with primary key set to '{it.data['id']}' "
                                        "already declared"))
                seen.add(it.data["id"])

    def check_unique(self) -> None:
        for kind, key in _NAME_KEY.items():
            keys = (key, "custom_id") if kind == "consumers" else (key,)
            for k in keys:
                seen: set[Any] = set()
                for it in self.items[kind]:
                    v = it.data.get(k)
                    if v is None:
                        continue
                    if v in seen:
                        self.errors.append((join(it.path, k), f"uniqueness violation: '{kind}' "
                                            f"entity with {k} set to '{v}' already declared"))
                    seen.add(v)

    def check_credentials(self) -> None:
        """Kong's unique keys: a key-auth key and a basic-auth username once per node
        (workspace), an ACL group once per consumer."""
        keys: set[Any] = set()
        users: set[Any] = set()
        for it in self.items["consumers"]:
            for collection, seen, field in (("keyauth_credentials", keys, "key"),
                                            ("basicauth_credentials", users, "username")):
                for i, cred in enumerate(it.data.get(collection) or ()):
                    v = cred.get(field)
                    if v is None:
                        continue
                    if v in seen:
                        self.errors.append((join(join(join(it.path, collection), i), field),
                                            f"uniqueness violation: '{collection}' entity with "
                                            f"{field} set to '{v}' already declared"))
                    seen.add(v)
            groups: set[Any] = set()
            for i, acl in enumerate(it.data.get("acls") or ()):
                if acl.get("group") in groups:
                    self.errors.append((join(join(join(it.path, "acls"), i), "group"),
                                        f"uniqueness violation: 'acls' entity with group set "
                                        f"to '{acl['group']}' already declared"))
                groups.add(acl.get("group"))

    def resolve(self) -> None:
        index: dict[str, tuple[dict[str, _Item], dict[str, _Item]]] = {}
        for kind in _COLLECTIONS:
            by_id = {it.data["id"]: it for it in self.items[kind]}
            nk = _NAME_KEY.get(kind)
            by_name = {it.data[nk]: it for it in self.items[kind] if nk and it.data.get(nk)}
            index[kind] = (by_id, by_name)
        for kind in _REFERRING:
            for it in self.items[kind]:
                if kind == "services":
                    self._resolve_ca_certificates(it, index["ca_certificates"][0])
                for fk, target_kind in _FK_TARGET.items():
                    if fk not in it.data and it.parent_fk != fk:
                        continue
                    if it.parent_fk == fk:
                        parent = it.parent
                        it.data[fk] = parent.data["id"] if parent is not None else None
                        continue
                    ref = it.data.get(fk)
                    if ref is None:
                        continue
                    by_id, by_name = index[target_kind]
                    (how, val), = ref.items()
                    hit = by_id.get(val) if how in ("id", "key") else None
                    if hit is None and how in ("name", "key"):
                        hit = by_name.get(val)
                    if hit is None:
                        self.errors.append((join(it.path, fk), f"invalid reference '{fk}: {val}' "
                                            f"(no such entry in '{target_kind}')"))
                        it.data[fk] = None
                    else:
                        it.data[fk] = hit.data["id"]
        # SNI names are unique (checked with the other unique keys); (upstream, target)
        # pairs and plugin cache keys are unique.
        seen_t: set[tuple[Any, Any]] = set()
        for it in self.items["targets"]:
            key = (it.data.get("upstream"), it.data.get("target"))
            if key[0] is not None and key in seen_t:
                self.errors.append((join(it.path, "target"), "uniqueness violation: 'targets' "
                                    f"entity with target set to '{key[1]}' already declared"))
            seen_t.add(key)
        seen_p: set[tuple[Any, ...]] = set()
        for it in self.items["plugins"]:
            d = it.data
            pkey = (d["name"], d.get("route"), d.get("service"), d.get("consumer"))
            if pkey in seen_p:
                self.errors.append((it.path, f"uniqueness violation: 'plugins' entity with "
                                    f"name set to '{d['name']}' already declared on this scope"))
            seen_p.add(pkey)

    def _resolve_ca_certificates(self, it: _Item, by_id: dict[str, _Item]) -> None:
        """A service's ``ca_certificates`` are ids of ``ca_certificates`` entities."""
        for i, ref in enumerate(it.data.get("ca_certificates") or ()):
            if ref not in by_id:
                self.errors.append((join(join(it.path, "ca_certificates"), i),
                                    f"invalid reference 'ca_certificates: {ref}' "
                                    "(no such entry in 'ca_certificates')"))

    # -- building ------------------------------------------------------------------------
    def build(self) -> dict[str, tuple[Any, ...]]:
        out: dict[str, tuple[Any, ...]] = {}
        for kind in _COLLECTIONS:
            out[kind] = tuple(_make(kind, it.data) for it in self.items[kind])
        # Canonical order (so dump/load round-trips): see grouped_by_parent.
        out["routes"] = grouped_by_parent(out["routes"], out["services"], "service")
        out["targets"] = grouped_by_parent(out["targets"], out["upstreams"], "upstream")
        out["snis"] = grouped_by_parent(out["snis"], out["certificates"], "certificate")
        return out


def grouped_by_parent(items: tuple[Any, ...], parents: tuple[Any, ...], fk: str) -> tuple[Any, ...]:
    """``items`` in the order a load of the dumped document gives them: grouped by their
    parent's position (routes under services, targets under upstreams), stable within a
    group, items without a parent last. The same tuple when it is in that order already
    (so a write that changed nothing here keeps the collection's identity)."""
    position = {p.id: i for i, p in enumerate(parents)}
    last = len(position)
    keys = [position.get(getattr(e, fk), last) for e in items]
    if all(a <= b for a, b in zip(keys, keys[1:])):
        return items
    order = sorted(range(len(items)), key=keys.__getitem__)
    return tuple(items[i] for i in order)


_NS = uuid.UUID("5d1d0b3e-6a0c-4f53-9a43-2f1e0c6a7b11")  # fastgw declarative namespace


def _natural_key(kind: str, d: Mapping[str, Any]) -> str | None:
    if kind in ("certificates", "ca_certificates"):  # no name: the PEM itself
        return hashlib.sha256(str(d.get("cert")).encode()).hexdigest()
    if kind == "targets":
        return f"{d.get('upstream')}:{d.get('target')}" if d.get("upstream") else None
    if kind == "plugins":
        return ":".join(str(d.get(k)) for k in ("name", "route", "service", "consumer"))
    if kind == "consumers":
        return d.get("username") or (d.get("custom_id") and "custom_id:" + d["custom_id"])
    return d.get("name")


def _tuples(v: Any) -> Any:
    return tuple(v) if isinstance(v, list) else v


def _make(kind: str, d: Mapping[str, Any]) -> Any:
    """Build a model entity from a validated, resolved field dict."""
    cls = _CLASSES[kind]
    names = {f.name for f in fields(cls)}
    kw = {k: v for k, v in d.items() if k in names}
    for k, v in kw.items():
        if k in CREDENTIAL_FIELDS:
            kw[k] = tuple(c if not isinstance(c, dict) else
                          make_credential(k, d["id"], c, d.get("created_at")) for c in v or ())
        elif k == "headers" and v is not None:
            kw[k] = {name: tuple(vals) for name, vals in v.items()}
        elif isinstance(v, dict) and set(v) <= {"id", "key", "name"} and len(v) == 1 \
                and k in ("client_certificate", "consumer_group", "certificate"):
            kw[k] = next(iter(v.values()))  # a foreign key not resolved here: keep its id
        elif k not in ("healthchecks", "config"):
            kw[k] = _tuples(v)
    return cls(**kw)


def build_entity(kind: str, data: Mapping[str, Any], *, now: float | None = None,
                 path: str = "", enabled_plugins: Iterable[str] | None = None,
                 ) -> tuple[Any, list[str]]:
    """Validate one Admin-API style entity body and build it (foreign keys must be
    ``{"id": ...}`` or bare ids; existence is the caller's job). Raises ConfigError.

    ``kind`` is the collection name: services, routes, upstreams, targets, consumers,
    plugins. Returns ``(entity, warnings)``.
    """
    errors: Errors = []
    warnings: list[str] = []
    d = validate_entity(kind, dict(data), path, errors, warnings,
                        enabled_plugins=None if enabled_plugins is None
                        else frozenset(enabled_plugins))
    if d is None:
        raise ConfigError(errors)
    t = time.time() if now is None else now
    d.setdefault("id", None)
    if d.get("id") is None:
        d["id"] = str(uuid.uuid4())
    ts = round(t, 3) if kind == "targets" else int(t)
    d["created_at"] = d.get("created_at") if d.get("created_at") is not None else ts
    d["updated_at"] = d.get("updated_at") if d.get("updated_at") is not None else ts
    for fk in _FK_TARGET:
        ref = d.get(fk)
        if isinstance(ref, dict):
            d[fk] = next(iter(ref.values()))
    return _make(kind, d), warnings


def load_declarative(
    data: Any,
    *,
    now: float | None = None,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
    supported_plugins: Iterable[str] = SUPPORTED_PLUGINS,
) -> Config:
    """Parse a Kong declarative document (already JSON-decoded) into a Config.

    ``env``/``overrides`` feed the ``gateway`` section (see settings.load_settings).
    Raises ConfigError carrying every problem found.
    """
    if not isinstance(data, dict):
        raise ConfigError([("", "expected a record")])
    errors: Errors = []
    warnings: list[str] = []
    fmt = data.get("_format_version")
    if fmt is None:
        errors.append(("_format_version", "required field missing"))
    elif fmt not in FORMAT_VERSIONS:
        errors.append(("_format_version", "expected one of: " + ", ".join(FORMAT_VERSIONS)))
    if "_transform" in data and not isinstance(data["_transform"], bool):
        errors.append(("_transform", "expected a boolean"))
    if "_comment" in data and not isinstance(data["_comment"], str):
        errors.append(("_comment", "expected a string"))
    if data.get("_workspace") is not None:
        warnings.append(f"_workspace: {NOT_ENFORCED} (fastgw workspaces are in 'workspaces')")
    gateway = GatewaySettings()
    try:
        gateway = load_settings(data.get("gateway"), env, overrides)
    except ConfigError as e:
        errors += e.errors
    enabled = enabled_plugins(gateway) & frozenset(supported_plugins)
    for name in sorted(enabled_plugins(gateway) - frozenset(PLUGINS)):
        errors.append(("gateway.plugins", f"plugin '{name}' is not a plugin fastgw runs "
                       f"(available: {', '.join(BUNDLED)})"))
    data = _fold_credentials(data, errors)
    extra: dict[str, Any] = {}
    for k in data:
        if k in _TOP_UNSUPPORTED:
            if data[k]:
                warnings.append(f"{k}: {NOT_ENFORCED}")
            extra[k] = copy.deepcopy(data[k])
        elif isinstance(k, str) and k.startswith("_") and k != "_format_version":
            extra[k] = copy.deepcopy(data[k])
        elif k not in _TOP_META and k not in _COLLECTIONS:
            errors.append((k, "unknown field"))

    ld = _Loader(fmt if fmt in FORMAT_VERSIONS else "3.0",
                 time.time() if now is None else now, enabled)
    ld.errors, ld.warnings = errors, warnings
    nested = {"services": ("routes", "plugins"), "routes": ("plugins",),
              "upstreams": ("targets",), "consumers": ("plugins",),
              "certificates": ("snis",)}
    for kind in _COLLECTIONS:
        for i, raw in enumerate(ld.array(data.get(kind), kind)):
            ld.entity(kind, raw, f"{kind}[{i}]", nested=nested.get(kind, ()))

    ld.check_credentials()
    ld.assign_ids(("services", "routes", "upstreams", "consumers", "certificates", "snis",
                   "ca_certificates"))
    ld.check_unique()
    ld.resolve()  # targets/plugins reference others; their derived ids need resolved keys
    ld.assign_ids(("targets", "plugins"))
    ld.check_ids()
    if errors:
        raise ConfigError(errors)
    built = ld.build()
    return Config(format_version=str(fmt), gateway=gateway, warnings=tuple(warnings), extra=extra,
                  **built)


def _fold_credentials(data: dict[str, Any], errors: Errors) -> dict[str, Any]:
    """Top-level credential collections (each item names its ``consumer`` by id or
    username) moved under their consumer, where fastgw keeps them."""
    if not any(data.get(c) for c in CREDENTIAL_KINDS):
        return data
    data = dict(data)
    consumers = [dict(c) if isinstance(c, dict) else c for c in data.get("consumers") or []]
    data["consumers"] = consumers
    for collection in CREDENTIAL_KINDS:
        items = data.pop(collection, None)
        if not items:
            continue
        if not isinstance(items, list):
            errors.append((collection, "expected an array"))
            continue
        for i, item in enumerate(items):
            path = f"{collection}[{i}]"
            ref = item.get("consumer") if isinstance(item, dict) else None
            if isinstance(ref, dict):
                ref = ref.get("id") or ref.get("username") or ref.get("name")
            owner = next((c for c in consumers if isinstance(c, dict) and ref is not None
                          and ref in (c.get("id"), c.get("username"), c.get("custom_id"))),
                         None)
            if owner is None:
                errors.append((join(path, "consumer"), f"invalid reference 'consumer: {ref}' "
                               "(no such entry in 'consumers')"))
                continue
            nested = {k: v for k, v in item.items() if k != "consumer"}
            owner[collection] = [*(owner.get(collection) or []), nested]
    return data


def _strip(d: dict[str, Any], *drop: str) -> dict[str, Any]:
    return {k: v for k, v in d.items() if k not in drop}


def entity_document(entity: Any) -> dict[str, Any]:
    """An entity as the declarative format holds it: ``entity_to_dict``, and a
    consumer's credentials nested under it (they are not Admin API fields of the
    consumer, but are part of it in a file, a dump or a delta)."""
    out = entity_to_dict(entity)
    if isinstance(entity, Consumer):
        for collection in CREDENTIAL_FIELDS:
            creds = getattr(entity, collection)
            if creds:
                out[collection] = [credential_to_dict(c, None) for c in creds]
    return out


def dump_declarative(config: Config) -> dict[str, Any]:
    """Config -> Kong declarative document (format 3.0, nested style, plus ``gateway``)."""
    by_service: dict[str, list[dict[str, Any]]] = {}
    loose_routes = []
    for r in config.routes:
        d = entity_to_dict(r)
        if r.service is None:
            loose_routes.append(d)
        else:
            by_service.setdefault(r.service, []).append(_strip(d, "service"))
    by_upstream: dict[str, list[dict[str, Any]]] = {}
    for t in config.targets:
        by_upstream.setdefault(t.upstream, []).append(_strip(entity_to_dict(t), "upstream"))
    out: dict[str, Any] = {"_format_version": "3.0"}
    out["services"] = [{**entity_to_dict(s), "routes": by_service.get(s.id, [])}
                       for s in config.services]
    if loose_routes:
        out["routes"] = loose_routes
    out["upstreams"] = [{**entity_to_dict(u), "targets": by_upstream.get(u.id, [])}
                        for u in config.upstreams]
    out["consumers"] = [entity_document(c) for c in config.consumers]
    out["plugins"] = [entity_to_dict(p) for p in config.plugins]
    # Certificates with their SNIs nested (as decK writes them); written only when there
    # are some, so configurations without TLS entities dump as before.
    by_cert: dict[str, list[dict[str, Any]]] = {}
    loose_snis = []
    cert_ids = {c.id for c in config.certificates}
    for sni in config.snis:
        if sni.certificate in cert_ids:
            by_cert.setdefault(sni.certificate, []).append(_strip(entity_to_dict(sni),
                                                                   "certificate"))
        else:
            loose_snis.append(entity_to_dict(sni))
    if config.certificates:
        out["certificates"] = [{**entity_to_dict(c), "snis": by_cert.get(c.id, [])}
                               for c in config.certificates]
    if loose_snis:
        out["snis"] = loose_snis
    if config.ca_certificates:
        out["ca_certificates"] = [entity_to_dict(c) for c in config.ca_certificates]
    out.update(copy.deepcopy(config.extra))
    out["gateway"] = settings_to_dict(config.gateway)
    return out
