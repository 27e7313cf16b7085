"""The config store: the config file itself, written atomically on every accepted change.

``StoreState`` is one immutable version of everything the supervisor serves: workspaces,
each workspace's ``Config``, the user's own ``gateway`` section, a version counter and a
content ``etag``. ``FileConfigStore`` owns the current state and is the only writer:

- Writers are serialised by one ``asyncio.Lock``; each computes its new state from the
  current one while holding it, so there are no lost updates between Admin API calls.
  ``POST /config`` can also guard against a stale client with ``If-Match: <etag>``.
- Every write is validated on the *whole resulting* config (each workspace through a
  full declarative dump/load round trip, plus the cross-workspace rules) before anything
  changes; a rejected write leaves state and file untouched.
- The file is replaced atomically: temp file in the same directory, fsync, rename, fsync
  of the directory. A crash at any point leaves the old file or the new one.
- The ``gateway`` section is written back exactly as the user wrote it: CLI flags and
  ``FASTGW_*`` variables are layered on top at load time and never persisted.

File layout: the default workspace is the top level (so a plain Kong declarative file
is a valid store); other workspaces are entries of a top-level ``workspaces`` list that
carry their own ``services``/``upstreams``/... collections.
"""

from __future__ import annotations

import asyncio
import errno
import hashlib
import logging
import os
import tempfile
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Callable, Mapping

import orjson

from fastgw.config.declarative import dump_declarative, is_entity_key, load_declarative
from fastgw.config.loader import dump_yaml, is_yaml_path, read_document
from fastgw.config.model import Config
from fastgw.config.validate import ConfigError, Errors
from fastgw.config.workspaces import (
    DEFAULT_WORKSPACE,
    Workspace,
    build_workspace,
    cross_workspace_errors,
    default_workspace,
    merge_configs,
    seed_ids,
    workspace_to_dict,
)

__all__ = ["StoreState", "FileConfigStore", "PreconditionFailed", "StoreWriteError",
           "parse_document", "dump_document", "atomic_write"]

log = logging.getLogger("fastgw.store")

_COLLECTIONS = ("services", "routes", "upstreams", "consumers", "plugins")


class PreconditionFailed(Exception):
    """``If-Match`` did not match the current etag (someone else wrote in between)."""

    def __init__(self, current_etag: str) -> None:
        super().__init__(f"the configuration changed (current etag {current_etag})")
        self.current_etag = current_etag


class StoreWriteError(Exception):
    """The file could not be saved (full disk, read-only file system, ...). Nothing changed:
    the running config and the file are both still the previous version."""

    def __init__(self, path: str, err: OSError) -> None:
        code = errno.errorcode.get(err.errno or 0, "")
        reason = f"{err.strerror or err}" + (f" ({code})" if code else "")
        super().__init__(f"cannot save the configuration to {path}: {reason}; "
                         "the change was not applied")
        self.errno = err.errno


@dataclass(frozen=True, slots=True)
class StoreState:
    version: int
    workspaces: tuple[Workspace, ...]  # default first
    configs: Mapping[str, Config]  # workspace name -> its entities (gateway = effective)
    gateway_raw: Mapping[str, Any] | None  # the file's section, verbatim
    etag: str = ""
    merged: Config = field(default_factory=Config)  # every workspace, for the data plane

    def workspace(self, key: str) -> Workspace | None:
        for ws in self.workspaces:
            if ws.id == key or ws.name == key:
                return ws
        return None

    def document(self, *, with_gateway: bool = True) -> dict[str, Any]:
        return dump_document(self, with_gateway=with_gateway)

    def snapshot(self) -> dict[str, Any]:
        """Per-workspace declarative dicts: what a worker needs to rebuild the merged config."""
        return {name: dump_declarative(cfg) for name, cfg in self.configs.items()}


# --------------------------------------------------------------------------- document <-> state

def parse_document(
    doc: Any,
    *,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
    gateway_raw: Mapping[str, Any] | None = None,
    keep_gateway: bool = False,
) -> tuple[tuple[Workspace, ...], dict[str, Config], Mapping[str, Any] | None]:
    """Validate a whole store document. Raises ConfigError with every problem found.

    ``keep_gateway``: ignore the document's ``gateway`` key and use ``gateway_raw``
    (``POST /config`` replaces entities, never node settings).
    """
    if not isinstance(doc, dict):
        raise ConfigError([("", "expected a record")])
    doc = dict(doc)
    raw_ws = doc.pop("workspaces", None)
    if keep_gateway:
        doc.pop("gateway", None)
        if gateway_raw is not None:
            doc["gateway"] = gateway_raw
    section = doc.get("gateway")
    errors: Errors = []
    configs: dict[str, Config] = {}
    try:
        configs[DEFAULT_WORKSPACE] = load_declarative(doc, env=env, overrides=overrides)
    except ConfigError as e:
        errors += e.errors
    workspaces: list[Workspace] = []
    if raw_ws is not None and not isinstance(raw_ws, list):
        errors.append(("workspaces", "expected an array"))
        raw_ws = []
    for i, item in enumerate(raw_ws or []):
        path = f"workspaces[{i}]"
        try:
            ws = build_workspace(item, path=path)
        except ConfigError as e:
            errors += e.errors
            continue
        if any(w.name == ws.name for w in workspaces):
            errors.append((f"{path}.name", f"workspace '{ws.name}' is declared twice"))
            continue
        workspaces.append(ws)
        entity_keys = [k for k in item if is_entity_key(k)]
        if ws.name == DEFAULT_WORKSPACE:
            if entity_keys:
                errors.append((path, "the default workspace's entities belong at the top level"))
            continue
        sub = {"_format_version": doc.get("_format_version", "3.0")}
        sub.update({k: item[k] for k in entity_keys})
        try:
            cfg = load_declarative(seed_ids(sub, ws.name))
        except ConfigError as e:
            errors += [(f"{path}.{p}" if p else path, m) for p, m in e.errors]
            continue
        configs[ws.name] = cfg
    if errors:
        raise ConfigError(errors)
    default = configs[DEFAULT_WORKSPACE]
    # Every workspace shares the node's settings.
    configs = {n: (c if n == DEFAULT_WORKSPACE else _with_gateway(c, default)) for n, c in
               configs.items()}
    if not any(w.name == DEFAULT_WORKSPACE for w in workspaces):
        workspaces.insert(0, default_workspace())
    else:  # default first, always
        workspaces.sort(key=lambda w: w.name != DEFAULT_WORKSPACE)
    cross = cross_workspace_errors(configs)
    if cross:
        raise ConfigError(cross)
    return tuple(workspaces), configs, section if isinstance(section, Mapping) else None


def _with_gateway(cfg: Config, default: Config) -> Config:
    from dataclasses import replace

    return replace(cfg, gateway=default.gateway)


def dump_document(state: StoreState, *, with_gateway: bool = True) -> dict[str, Any]:
    out = dump_declarative(state.configs[DEFAULT_WORKSPACE])
    out.pop("gateway", None)
    if with_gateway and state.gateway_raw is not None:
        out["gateway"] = dict(state.gateway_raw)
    wss = []
    for ws in state.workspaces:
        item = workspace_to_dict(ws)
        if ws.name != DEFAULT_WORKSPACE:
            sub = dump_declarative(state.configs[ws.name])
            item.update({k: v for k, v in sub.items() if is_entity_key(k)})
        wss.append(item)
    out["workspaces"] = wss
    return out


def content_etag(document: Mapping[str, Any]) -> str:
    blob = orjson.dumps(document, option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(blob).hexdigest()[:32]


def atomic_write(path: str, data: bytes, *, private: bool = False) -> None:
    """Replace ``path`` with ``data`` so that a crash leaves the old or the new file.
    ``private``: readable by its owner only, whatever the file's mode was (private keys)."""
    directory = os.path.dirname(os.path.abspath(path)) or "."
    try:
        mode = os.stat(path).st_mode & 0o777
    except FileNotFoundError:
        mode = 0o600  # the file may hold admin_token: private by default
    if private:
        mode &= 0o600
    fd, tmp = tempfile.mkstemp(prefix=".config-", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fchmod(f.fileno(), mode)
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    # The rename itself is only durable once the directory entry is on disk.
    dfd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def _dangling_references(configs: Mapping[str, Config]) -> Errors:
    """Foreign keys to nothing. Checked before the dump, which nests children under their
    parents and would otherwise drop an orphan silently instead of refusing it."""
    errors: Errors = []
    for ws, cfg in configs.items():
        prefix = "" if ws == DEFAULT_WORKSPACE else f"workspaces.{ws}."
        ids = {k: {e.id for e in getattr(cfg, k)} for k in ("services", "routes", "upstreams",
                                                            "consumers", "certificates")}
        refs = [("routes", "service", "services"), ("targets", "upstream", "upstreams"),
                ("plugins", "service", "services"), ("plugins", "route", "routes"),
                ("plugins", "consumer", "consumers"), ("snis", "certificate", "certificates"),
                ("services", "client_certificate", "certificates"),
                ("upstreams", "client_certificate", "certificates")]
        for kind, fk, target in refs:
            for i, e in enumerate(getattr(cfg, kind)):
                ref = getattr(e, fk)
                if ref is not None and ref not in ids[target]:
                    errors.append((f"{prefix}{kind}[{i}].{fk}", f"invalid reference '{fk}: {ref}' "
                                   f"(no such entry in '{target}')"))
        cas = {c.id for c in cfg.ca_certificates}
        for i, service in enumerate(cfg.services):
            for ref in service.ca_certificates or ():
                if ref not in cas:
                    errors.append((f"{prefix}services[{i}].ca_certificates",
                                   f"invalid reference 'ca_certificates: {ref}' "
                                   "(no such entry in 'ca_certificates')"))
    return errors


# --------------------------------------------------------------------------- the store

Listener = Callable[[StoreState], None]


class FileConfigStore:
    """The embedded default store (see module doc). Create with ``open()``."""

    def __init__(self, path: str, env: Mapping[str, str] | None,
                 overrides: Mapping[str, Any] | None) -> None:
        self.path = path
        self.env = env
        self.overrides = overrides
        self._state: StoreState | None = None
        self._lock: asyncio.Lock | None = None
        self._listeners: list[Listener] = []
        self.posted_hash: str | None = None  # hash of the last POST /config body

    @classmethod
    def open(cls, path: str, env: Mapping[str, str] | None = None,
             overrides: Mapping[str, Any] | None = None) -> "FileConfigStore":
        store = cls(path, env, overrides)
        store._state = store._read(version=1)
        return store

    @property
    def state(self) -> StoreState:
        assert self._state is not None, "store not opened"
        return self._state

    @property
    def lock(self) -> asyncio.Lock:
        if self._lock is None:  # created on the loop that uses it
            self._lock = asyncio.Lock()
        return self._lock

    def subscribe(self, listener: Listener) -> None:
        """``listener(state)`` runs after every accepted change (in the writer's task)."""
        self._listeners.append(listener)

    def _read(self, version: int) -> StoreState:
        doc = read_document(self.path)
        workspaces, configs, raw = parse_document(doc, env=self.env, overrides=self.overrides)
        return self._make_state(version, workspaces, configs, raw)

    def _make_state(self, version: int, workspaces: tuple[Workspace, ...],
                    configs: Mapping[str, Config], raw: Mapping[str, Any] | None) -> StoreState:
        order = [w.name for w in workspaces]
        ordered = {n: configs[n] for n in order if n in configs}
        st = StoreState(version=version, workspaces=workspaces, configs=ordered,
                        gateway_raw=raw, merged=merge_configs(ordered.values()))
        etag = content_etag(dump_document(st))
        return StoreState(version, workspaces, ordered, raw, etag, st.merged)

    def validate(self, workspaces: tuple[Workspace, ...],
                 configs: Mapping[str, Config]) -> StoreState:
        """The state these would make, validated as a whole; raises ConfigError. Pure."""
        cur = self.state
        dangling = _dangling_references(configs)
        if dangling:
            raise ConfigError(dangling)
        draft = StoreState(cur.version, workspaces, dict(configs), cur.gateway_raw)
        # Round-trip through the very path a restart takes, so what is accepted now is
        # exactly what the file will load as (canonical order, derived fields).
        doc = dump_document(draft)
        ws, cfgs, raw = parse_document(doc, env=self.env, overrides=self.overrides)
        return self._make_state(cur.version + 1, ws, cfgs, raw)

    async def commit(self, workspaces: tuple[Workspace, ...],
                     configs: Mapping[str, Config]) -> StoreState:
        """Validate, save and publish. Call with ``lock`` held. Raises ConfigError."""
        new = self.validate(workspaces, configs)
        await self._save_and_publish(new)
        self.posted_hash = None
        return new

    async def replace_document(self, doc: Any, *, if_match: str | None = None,
                               body_hash: str | None = None) -> StoreState:
        """``POST /config``: replace every entity (node settings are kept)."""
        async with self.lock:
            if if_match is not None and if_match.strip('"') not in ("*", self.state.etag):
                raise PreconditionFailed(self.state.etag)
            ws, cfgs, _ = parse_document(doc, env=self.env, overrides=self.overrides,
                                         gateway_raw=self.state.gateway_raw, keep_gateway=True)
            new = self.validate(ws, cfgs)
            await self._save_and_publish(new)
            self.posted_hash = body_hash
            return new

    async def reload_file(self) -> StoreState:
        """SIGHUP: re-read the file (edited by hand). Raises ConfigError if invalid."""
        async with self.lock:
            loop = asyncio.get_running_loop()
            new = await loop.run_in_executor(None, self._read, self.state.version + 1)
            self._publish(new)
            return new

    async def _save_and_publish(self, new: StoreState) -> None:
        data = self.encode(dump_document(new))
        loop = asyncio.get_running_loop()
        # fsync can take tens of ms: keep the admin/status loop responsive meanwhile.
        # A config holding private keys (certificates) is for its owner's eyes only.
        private = any(cfg.certificates for cfg in new.configs.values())
        try:
            await loop.run_in_executor(None, partial(atomic_write, self.path, data,
                                                     private=private))
        except OSError as err:
            log.error("config store: cannot write %s: %s", self.path, err)
            raise StoreWriteError(self.path, err) from None
        self._publish(new)

    def encode(self, document: Mapping[str, Any]) -> bytes:
        """The file's bytes: YAML for a ``kong.yml``-style path, JSON otherwise."""
        if is_yaml_path(self.path):
            return dump_yaml(document)
        return orjson.dumps(document, option=orjson.OPT_INDENT_2) + b"\n"

    def _publish(self, new: StoreState) -> None:
        self._state = new
        for listener in self._listeners:
            try:
                listener(new)
            except Exception:  # a broken listener must not undo an accepted write
                log.exception("config listener failed")
