"""Reading config.json from disk: the only module of fastgw.config that does I/O."""

from __future__ import annotations

import os
from typing import Any, Mapping

import orjson

from fastgw.config.declarative import load_declarative
from fastgw.config.model import Config
from fastgw.config.validate import ConfigError

__all__ = ["load_config_file", "check_file", "read_json_file", "decode_json"]


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
    return load_declarative(read_json_file(path), now=now, env=env, overrides=overrides)


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
