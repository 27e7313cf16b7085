"""Which build of fastgw runs: the compiled hot path (mypyc) or the pure-Python modules.

setup.py compiles the request path's modules with mypyc when it can; the compiled
extension sits beside each `.py` and Python's import system prefers it. Setting
FASTGW_PURE_PYTHON=1 in the environment (before fastgw is imported; worker processes
inherit it) installs `PurePythonFinder`, which loads fastgw's `.py` sources instead: the
same code, interpreted, for tests of the fallback and for before/after measurements.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import os
import sys
from importlib.machinery import ModuleSpec
from types import ModuleType
from typing import Sequence

__all__ = ["PURE_PYTHON_ENV", "PurePythonFinder", "compiled_modules", "describe"]

PURE_PYTHON_ENV = "FASTGW_PURE_PYTHON"


class PurePythonFinder:
    """A meta-path finder that turns a compiled fastgw module's spec into its source's."""

    @classmethod
    def find_spec(cls, name: str, path: Sequence[str] | None = None,
                  target: ModuleType | None = None) -> ModuleSpec | None:
        if not name.startswith("fastgw.") or path is None:
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None or spec.origin is None or not spec.origin.endswith(
                tuple(importlib.machinery.EXTENSION_SUFFIXES)):
            return None
        source = spec.origin.split(".", 1)[0] + ".py"
        if not os.path.exists(source):
            return None
        return importlib.util.spec_from_file_location(name, source)


def install_pure_python_finder() -> None:
    if not any(f is PurePythonFinder for f in sys.meta_path):
        sys.meta_path.insert(0, PurePythonFinder)


def compiled_modules() -> list[str]:
    """The fastgw modules installed as compiled extensions (beside their sources)."""
    package = os.path.dirname(os.path.abspath(__file__))
    suffixes = tuple(importlib.machinery.EXTENSION_SUFFIXES)
    found = []
    for folder, _, files in os.walk(package):
        for name in files:
            if name.endswith(suffixes) and os.path.exists(
                    os.path.join(folder, name.split(".", 1)[0] + ".py")):
                relative = os.path.relpath(os.path.join(folder, name.split(".", 1)[0]), package)
                found.append("fastgw." + relative.replace(os.sep, "."))
    return sorted(found)


def describe() -> str:
    """e.g. "compiled (mypyc), 22 modules" or "pure Python"."""
    if os.environ.get(PURE_PYTHON_ENV):
        return f"pure Python ({PURE_PYTHON_ENV}=1)"
    names = compiled_modules()
    return f"compiled (mypyc), {len(names)} modules" if names else "pure Python"
