"""The config store: the config file itself, written atomically on every accepted change.

``StoreState`` is one immutable version of everything the supervisor serves: workspaces,
each workspace's ``Config``, the user's own ``gateway`` section, a version counter and a
content ``etag``. ``FileConfigStore`` owns the current state and is the only writer:

- Writers are serialised by one ``asyncio.Lock``; each computes its new state from the
  current one while holding it, so there are no lost updates between Admin API calls.
  ``POST /config`` can also guard against a stale client with ``If-Match: <etag>``.
- Every write is validated before anything changes; a rejected write leaves state and
  file untouched. ``POST /config`` and reloads go through a full declarative dump/load
  round trip of each workspace plus the cross-workspace rules. An Admin API entity write
  (``commit``) does not: its entity was validated and checked for uniqueness and
  references by the Admin API, so only the whole-config rules are checked here
  (references, cross-workspace rules, canonical order), which keeps a write on a config
  of 10,000 services in the milliseconds (tests/unit/test_store_writes.py holds the two
  paths to the same result).
- The file is encoded incrementally (``fastgw.controlplane.document``): only the
  entities that changed are encoded again. The etag is a hash of the file's bytes.
- A file edited by hand is never overwritten silently: the store remembers what it
  loaded or last wrote (inode, size, mtime, content hash) and refuses a write with
  ``FileChangedOnDisk`` when the file is no longer that; ``reload_file`` (SIGHUP,
  ``POST /config/reload``) takes the edit in.
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
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import orjson

from fastgw.config.declarative import (
    grouped_by_parent,
    is_entity_key,
    load_declarative,
)
from fastgw.config.loader import decode_document, dump_yaml, is_yaml_path
from fastgw.config.model import Config
from fastgw.config.validate import ConfigError, Errors
from fastgw.controlplane.document import DocumentEncoder, StoreState, dump_document
from fastgw.config.workspaces import (
    DEFAULT_WORKSPACE,
    Workspace,
    build_workspace,
    cross_workspace_errors,
    default_workspace,
    merge_configs,
    seed_ids,
)

__all__ = ["StoreState", "FileConfigStore", "PreconditionFailed", "FileChangedOnDisk",
           "StoreWriteError",
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


class FileChangedOnDisk(Exception):
    """The config file is not what the store loaded or last wrote (edited by hand?)."""

    def __init__(self, path: str) -> None:
        super().__init__(
            f"{path} was changed on disk since fastgw loaded it, so this write was refused "
            "rather than overwrite that edit. Reload the file first (SIGHUP to the fastgw "
            "process, or POST /config/reload), then retry the write.")
        self.path = path


@dataclass(frozen=True, slots=True)
class FileFingerprint:
    """What the store knows the config file to be: a stat check first (cheap), the content
    itself when the stat differs (a ``touch`` or a chmod is not an edit). The content is
    kept as the pieces it was written from (the encoder holds them anyway), so a write
    never hashes the whole file."""

    inode: int
    size: int
    mtime_ns: int
    content: Sequence[bytes]  # the pieces as written (never changed afterwards)

    @classmethod
    def of(cls, stat: os.stat_result, content: Sequence[bytes]) -> "FileFingerprint":
        return cls(stat.st_ino, stat.st_size, stat.st_mtime_ns, content)

    def same_stat(self, stat: os.stat_result) -> bool:
        return (stat.st_ino, stat.st_size, stat.st_mtime_ns) == (self.inode, self.size,
                                                                 self.mtime_ns)

    def same_content(self, data: bytes) -> bool:
        return len(data) == sum(map(len, self.content)) and data == b"".join(self.content)


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def read_config_bytes(path: str) -> tuple[bytes, os.stat_result]:
    """The file's bytes and the stat of what was read. Raises ConfigError."""
    try:
        with open(path, "rb") as f:
            return f.read(), os.fstat(f.fileno())
    except OSError as e:
        raise ConfigError([("", f"cannot read {path}: {e.strerror or e}")]) from None


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
    return replace(cfg, gateway=default.gateway)


def content_etag(digest: str) -> str:
    """The etag of a state, from the digest of its file bytes (the same after a restart)."""
    return digest[:32]


def _write_all(fd: int, pieces: Sequence[bytes]) -> None:
    """Write ``pieces`` in order without joining them (a 13 MB copy saved)."""
    views: list[bytes | memoryview] = [p for p in pieces if p]
    first = 0
    while first < len(views):
        batch = views[first:first + _IOV_MAX]
        written = os.writev(fd, batch)
        if written == sum(map(len, batch)):  # a regular file takes it all
            first += len(batch)
            continue
        while written:  # a short write: skip what went out, keep the rest of a piece
            if written >= len(views[first]):
                written -= len(views[first])
                first += 1
            else:
                views[first] = memoryview(views[first])[written:]
                written = 0


_IOV_MAX = 1024  # pieces per writev (Linux's limit)


def atomic_write(path: str, data: bytes | Sequence[bytes], *,
                 private: bool = False) -> os.stat_result:
    """Replace ``path`` with ``data`` (bytes, or pieces to write in order) so that a crash
    leaves the old or the new file.
    Returns the stat of the new file (taken before the rename: it is ours for sure).
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
            _write_all(f.fileno(), [data] if isinstance(data, bytes) else data)
            os.fchmod(f.fileno(), mode)
            os.fsync(f.fileno())
            stat = os.fstat(f.fileno())
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
    return stat


_REFERENCES = (("routes", "service", "services"), ("targets", "upstream", "upstreams"),
               ("plugins", "service", "services"), ("plugins", "route", "routes"),
               ("plugins", "consumer", "consumers"), ("snis", "certificate", "certificates"),
               ("services", "client_certificate", "certificates"),
               ("upstreams", "client_certificate", "certificates"))


def _same_collections(cfg: Config, known: Config | None, *kinds: str) -> bool:
    return known is not None and all(getattr(cfg, k) is getattr(known, k) for k in kinds)


def _dangling_references(configs: Mapping[str, Config],
                         valid: Mapping[str, Config] | None = None) -> Errors:
    """Foreign keys to nothing. Checked before the dump, which nests children under their
    parents and would otherwise drop an orphan silently instead of refusing it.

    ``valid``: configs known to hold no dangling reference (the store's current state).
    A reference between two collections that are the very tuples ``valid`` holds cannot
    dangle, so it is not looked at: a target's weight change checks the targets only,
    not 10,000 routes."""
    errors: Errors = []
    for ws, cfg in configs.items():
        prefix = "" if ws == DEFAULT_WORKSPACE else f"workspaces.{ws}."
        known = valid.get(ws) if valid is not None else None
        ids: dict[str, set[Any]] = {}
        for kind, fk, target in _REFERENCES:
            if _same_collections(cfg, known, kind, target):
                continue
            if target not in ids:
                ids[target] = {e.id for e in getattr(cfg, target)}
            for i, e in enumerate(getattr(cfg, kind)):
                ref = getattr(e, fk)
                if ref is not None and ref not in ids[target]:
                    errors.append((f"{prefix}{kind}[{i}].{fk}", f"invalid reference '{fk}: {ref}' "
                                   f"(no such entry in '{target}')"))
        if _same_collections(cfg, known, "services", "ca_certificates"):
            continue
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
        self.encoder = DocumentEncoder()  # used under the lock (or before the loop runs)
        self.on_disk: FileFingerprint | None = None  # what the file was when read/written

    @classmethod
    def open(cls, path: str, env: Mapping[str, str] | None = None,
             overrides: Mapping[str, Any] | None = None) -> "FileConfigStore":
        store = cls(path, env, overrides)
        store._state, store.on_disk = store._read(version=1)
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

    def _read(self, version: int) -> tuple[StoreState, FileFingerprint]:
        raw, stat = read_config_bytes(self.path)
        doc = decode_document(raw, self.path)
        workspaces, configs, gateway = parse_document(doc, env=self.env, overrides=self.overrides)
        state = self._make_state(version, workspaces, configs, gateway)
        _, etag = self._file_pieces(state)
        return replace(state, etag=etag), FileFingerprint.of(stat, (raw,))

    def _make_state(self, version: int, workspaces: tuple[Workspace, ...],
                    configs: Mapping[str, Config], raw: Mapping[str, Any] | None) -> StoreState:
        """A state without its etag (set once the state is encoded)."""
        order = [w.name for w in workspaces]
        ordered = {n: configs[n] for n in order if n in configs}
        return StoreState(version=version, workspaces=workspaces, configs=ordered,
                          gateway_raw=raw, merged=merge_configs(ordered.values()))

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

    def check_write(self, workspaces: tuple[Workspace, ...],
                    configs: Mapping[str, Config]) -> StoreState:
        """The state an Admin API write makes, by local checks; raises ConfigError. Pure.

        The Admin API built the written entity with ``build_entity`` (the loader's own
        validation) and checked its uniqueness and references, so the round trip of
        ``validate`` would only re-check 10,000 unchanged entities. What is whole-config
        is checked here: no reference left dangling (cascades), the cross-workspace
        rules, and the canonical order a reload of the file gives.
        """
        cur = self.state
        dangling = _dangling_references(configs, valid=cur.configs)
        if dangling:
            raise ConfigError(dangling)
        if len(configs) > 1:
            cross = cross_workspace_errors(configs)
            if cross:
                raise ConfigError(cross)
        ordered = {name: _canonical(cfg, cur.configs.get(name))
                   for name, cfg in configs.items()}
        return self._make_state(cur.version + 1, workspaces, ordered, cur.gateway_raw)

    async def commit(self, workspaces: tuple[Workspace, ...],
                     configs: Mapping[str, Config]) -> StoreState:
        """Check, save and publish an Admin API write. Call with ``lock`` held. Raises
        ConfigError, or FileChangedOnDisk when the file was edited since it was read."""
        new = await self._save_and_publish(self.check_write(workspaces, configs))
        self.posted_hash = None
        return new

    async def replace_document(self, doc: Any, *, if_match: str | None = None,
                               body_hash: str | None = None) -> StoreState:
        """``POST /config``: replace every entity (node settings are kept)."""
        async with self.lock:
            # An invalid document is refused as such (400) whatever If-Match says.
            ws, cfgs, _ = parse_document(doc, env=self.env, overrides=self.overrides,
                                         gateway_raw=self.state.gateway_raw, keep_gateway=True)
            if if_match is not None and if_match.strip('"') not in ("*", self.state.etag):
                raise PreconditionFailed(self.state.etag)
            new = await self._save_and_publish(self.validate(ws, cfgs))
            self.posted_hash = body_hash
            return new

    async def reload_file(self) -> StoreState:
        """SIGHUP, ``POST /config/reload``: re-read the file (edited by hand). Raises
        ConfigError if invalid (the running state stays)."""
        async with self.lock:
            loop = asyncio.get_running_loop()
            new, self.on_disk = await loop.run_in_executor(None, self._read,
                                                           self.state.version + 1)
            self._publish(new)
            return new

    async def _save_and_publish(self, new: StoreState) -> StoreState:
        pieces, etag = self._file_pieces(new)
        loop = asyncio.get_running_loop()
        # Writing and fsync take milliseconds: off the admin/status loop.
        try:
            private = any(cfg.certificates for cfg in new.configs.values())
            self.on_disk = await loop.run_in_executor(None, self._write, pieces, private)
        except OSError as err:
            log.error("config store: cannot write %s: %s", self.path, err)
            raise StoreWriteError(self.path, err) from None
        new = replace(new, etag=etag)
        self._publish(new)
        return new

    def _write(self, pieces: list[bytes], private: bool = False) -> FileFingerprint:
        """Save (in a thread): refuse if the file is not what we last read or wrote."""
        self._check_unchanged()
        # A config holding private keys (certificates) is for its owner's eyes only.
        stat = atomic_write(self.path, pieces, private=private)
        return FileFingerprint.of(stat, pieces)

    def _check_unchanged(self) -> None:
        known = self.on_disk
        if known is None:
            return
        try:
            stat = os.stat(self.path)
        except FileNotFoundError:
            return  # deleted: writing it again loses nothing
        if known.same_stat(stat):
            return
        raw, stat = read_config_bytes(self.path)
        if not known.same_content(raw):  # (a file changed under the same stat is missed)
            log.error("refusing to overwrite %s: it was changed on disk since it was loaded; "
                      "reload it (SIGHUP or POST /config/reload)", self.path)
            raise FileChangedOnDisk(self.path)
        self.on_disk = FileFingerprint.of(stat, known.content)  # touched, not edited

    def _file_pieces(self, state: StoreState) -> tuple[list[bytes], str]:
        """The file's bytes for ``state`` and its etag: JSON encoded incrementally (only
        what changed since the last write, hashed likewise), YAML (``kong.yml``-style
        paths) from the whole document."""
        if is_yaml_path(self.path):
            data = self.encode(dump_document(state))
            return [data], content_etag(_digest(data))
        return [*self.encoder.encode(state), b"\n"], content_etag(self.encoder.digest)

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


def _canonical(cfg: Config, canonical: Config | None = None) -> Config:
    """``cfg`` in the order a reload of its file gives. ``canonical``: a config already in
    that order (the current state); children whose collections are its very tuples are
    in order already, and are not sorted again."""

    def grouped(kind: str, parents: str, fk: str) -> Any:
        items = getattr(cfg, kind)
        if canonical is not None and items is getattr(canonical, kind) and \
                getattr(cfg, parents) is getattr(canonical, parents):
            return items
        return grouped_by_parent(items, getattr(cfg, parents), fk)

    routes = grouped("routes", "services", "service")
    targets = grouped("targets", "upstreams", "upstream")
    snis = grouped("snis", "certificates", "certificate")
    if routes is cfg.routes and targets is cfg.targets and snis is cfg.snis:
        return cfg
    return replace(cfg, routes=routes, targets=targets, snis=snis)
