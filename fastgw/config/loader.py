"""Reading config files from disk: the only module of fastgw.config that does I/O.

A file named ``*.yml``/``*.yaml`` is YAML (Kong's ``kong.yml``), anything else JSON.
"""

from __future__ import annotations

import os
from typing import Any, Mapping

import orjson
import yaml  # type: ignore[import-untyped]

from fastgw.config.declarative import load_declarative
from fastgw.config.model import Config
from fastgw.config.validate import ConfigError

__all__ = ["load_config_file", "check_file", "read_json_file", "read_document", "is_yaml_path",
           "parse_yaml", "dump_yaml", "decode_document", "decode_json"]

_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_YAML_DUMPER = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


def is_yaml_path(path: str | os.PathLike[str]) -> bool:
    return os.fspath(path).lower().endswith((".yml", ".yaml"))


def parse_yaml(text: str | bytes, name: str = "document") -> Any:
    """A YAML document (JSON is YAML too); errors become ConfigError with line/column."""
    try:
        return yaml.load(text, Loader=_YAML_LOADER)  # noqa: S506 - a safe loader
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e)
        raise ConfigError([("", f"{name}: invalid YAML{where}: {problem}")]) from None


def dump_yaml(document: Any) -> bytes:
    """The document as block-style YAML, keys in their order."""
    text = yaml.dump(document, Dumper=_YAML_DUMPER, sort_keys=False, allow_unicode=True,
                     default_flow_style=False, width=100)
    return text.encode("utf-8")


def read_document(path: str | os.PathLike[str]) -> Any:
    """Read a declarative file: YAML for ``*.yml``/``*.yaml``, JSON otherwise."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise ConfigError([("", f"cannot read {os.fspath(path)}: {e.strerror or e}")]) from None
    return decode_document(raw, path)


def decode_document(raw: bytes, path: str | os.PathLike[str]) -> Any:
    """A declarative file's bytes, decoded as its name says (YAML or JSON)."""
    if is_yaml_path(path):
        return parse_yaml(raw, os.fspath(path))
    return decode_json(raw, path)


def _line_col(text: bytes, pos: int) -> tuple[int, int]:
    before = text[:pos]
    line = before.count(b"\n") + 1
    col = pos - (before.rfind(b"\n") + 1) + 1
    return line, col


def read_json_file(path: str | os.PathLike[str]) -> Any:
    """Read and decode a JSON file; errors become ConfigError (with line/column)."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise ConfigError([("", f"cannot read {os.fspath(path)}: {e.strerror or e}")]) from None
    return decode_json(raw, path)


def decode_json(raw: bytes, path: str | os.PathLike[str]) -> Any:
    """Decode a file's bytes; errors become ConfigError (with line/column)."""
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as e:
        # orjson reports a character offset (pos); recompute line/column from it so the
        # message is right even for multi-byte UTF-8 content.
        pos = getattr(e, "pos", 0) or 0
        try:
            text = raw.decode("utf-8")
            before = text[:pos]
            line, col = before.count("\n") + 1, pos - (before.rfind("\n") + 1) + 1
        except UnicodeDecodeError:
            line, col = _line_col(raw, pos)
        msg = getattr(e, "msg", str(e))
        raise ConfigError(
            [("", f"{os.fspath(path)}: invalid JSON at line {line}, column {col}: {msg}")]
        ) from None


def load_config_file(
    path: str | os.PathLike[str],
    env: Mapping[str, str] | None = os.environ,
    overrides: Mapping[str, Any] | None = None,
    *,
    now: float | None = None,
) -> Config:
    """Load, validate and build the Config in ``path``.

    Gateway settings precedence: ``overrides`` (CLI) > ``FASTGW_*`` in ``env`` > file >
    defaults. Raises ConfigError with every problem found.
    """
    return load_declarative(read_document(path), now=now, env=env, overrides=overrides)


def check_file(
    path: str | os.PathLike[str],
    env: Mapping[str, str] | None = os.environ,
    *,
    include_warnings: bool = False,
) -> list[str]:
    """Problems in ``path`` as ``"services[0].host: required field missing"`` lines.

    Empty list means valid. With ``include_warnings`` the unsupported-field warnings are
    appended as ``"warning: ..."`` lines (they do not make the file invalid).
    """
    try:
        cfg = load_config_file(path, env)
    except ConfigError as e:
        return e.lines()
    return [f"warning: {w}" for w in cfg.warnings] if include_warnings else []
