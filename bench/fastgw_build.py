"""Which fastgw build a benchmark target ran: compiled (mypyc) or pure Python.

A speed figure means little without the build it came from, and the two builds are one
source: `fastgw.build.describe()` says which modules are compiled, and the environment
variable FASTGW_PURE_PYTHON=1 forces the pure-Python modules (inherited by the workers).

Where the answer comes from, best first:
1. the gateway's own start-up log line `fastgw build: ...` (what that process loaded);
2. a Python started exactly like the gateway (same interpreter, checkout, cwd and
   environment) asked `fastgw.build.describe()`;
3. "unknown", for a checkout without fastgw/build.py (never an error: older checkouts and
   `--baseline` runs must still benchmark).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

__all__ = [
    "PURE_PYTHON_ENV",
    "UNKNOWN",
    "build_from_log",
    "describe_build",
    "is_pure_python",
    "probe_build",
]

PURE_PYTHON_ENV = {"FASTGW_PURE_PYTHON": "1"}
UNKNOWN = "unknown"
_LOG_LINE = re.compile(r"fastgw build: (.+?)\s*$", re.MULTILINE)
_PROBE = "import fastgw.build as b; print(b.describe())"


def build_from_log(log: str) -> str | None:
    """The description in the first `fastgw build: ...` line of a gateway log, if any."""
    found = _LOG_LINE.search(log)
    return found.group(1).strip() if found else None


def probe_build(root: Path, env: Mapping[str, str], timeout: float = 30.0) -> str:
    """Ask `fastgw.build.describe()` in the gateway's environment; UNKNOWN if it cannot say."""
    full = dict(os.environ)
    full["PYTHONPATH"] = os.pathsep.join(filter(None, [str(root), full.get("PYTHONPATH")]))
    full.update(env)
    try:
        # -S: no site-packages, so an installed (editable) fastgw cannot answer for the
        # checkout; fastgw/build.py needs nothing but the standard library.
        out = subprocess.run([sys.executable, "-S", "-c", _PROBE], check=False, cwd=root, env=full,
                             capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired):
        return UNKNOWN
    lines = out.stdout.strip().splitlines()
    return lines[-1] if out.returncode == 0 and lines else UNKNOWN


def describe_build(log: str, root: Path, env: Mapping[str, str]) -> str:
    return build_from_log(log) or probe_build(root, env)


def is_pure_python(description: str) -> bool | None:
    """True/False when the description says; None for UNKNOWN."""
    if description == UNKNOWN:
        return None
    return "pure" in description.lower()
