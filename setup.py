"""Builds the compiled hot path with mypyc when it can; the pure-Python modules otherwise.

The modules listed in COMPILED are compiled from the same typed sources that run as
pure Python (mypyc: mypy's compiler, as black and mypy ship themselves). Set
FASTGW_NO_EXTENSIONS=1 to skip compiling; without a C compiler the build warns and goes
on without them. At run time FASTGW_PURE_PYTHON=1 makes an installed compiled build use
the pure-Python sources instead (fastgw/build.py).
"""

from __future__ import annotations

import os
import sys

from setuptools import setup
from setuptools.command.build_ext import build_ext

# The request path: every module a proxied request runs through.
COMPILED = [
    "fastgw/core/http/errors.py",
    "fastgw/core/http/fields.py",
    "fastgw/core/http/gateway_fields.py",
    "fastgw/core/http/request.py",
    "fastgw/core/http/request_id.py",
    "fastgw/core/http/response.py",
    "fastgw/core/http/trace.py",
    "fastgw/core/http/upstream_head.py",
    "fastgw/core/balancer.py",
    "fastgw/core/paths.py",
    "fastgw/core/router.py",
    "fastgw/core/plugins/auth.py",
    "fastgw/core/plugins/cors.py",
    "fastgw/core/plugins/iprestriction.py",
    "fastgw/core/plugins/proxycache.py",
    "fastgw/core/plugins/ratelimit.py",
    "fastgw/core/plugins/transform.py",
    "fastgw/dataplane/balancing.py",
    "fastgw/dataplane/body.py",
    "fastgw/dataplane/context.py",
    "fastgw/dataplane/downstream.py",
    "fastgw/dataplane/exchange.py",
    "fastgw/dataplane/passive.py",
    "fastgw/dataplane/plugins/auth.py",
    "fastgw/dataplane/plugins/counters.py",
    "fastgw/dataplane/plugins/headers.py",
    "fastgw/dataplane/plugins/logs.py",
    "fastgw/dataplane/plugins/phases.py",
    "fastgw/dataplane/plugins/proxycache.py",
    "fastgw/dataplane/plugins/traffic.py",
    "fastgw/dataplane/pool.py",
    "fastgw/dataplane/server.py",
    "fastgw/dataplane/snapshot.py",
    "fastgw/dataplane/stats.py",
    "fastgw/dataplane/sweeper.py",
    "fastgw/dataplane/tunnel.py",
    "fastgw/dataplane/upstream.py",
]


class OptionalBuildExt(build_ext):
    """A failed compile (no C compiler, say) leaves the pure-Python build, with a warning."""

    def run(self) -> None:
        try:
            super().run()
        except Exception as exc:  # noqa: BLE001 - any compiler failure means "pure Python"
            self._skip(exc)

    def build_extension(self, ext) -> None:  # type: ignore[no-untyped-def]
        try:
            super().build_extension(ext)
        except Exception as exc:  # noqa: BLE001
            self._skip(exc)

    @staticmethod
    def _skip(exc: Exception) -> None:
        print(f"warning: fastgw's compiled modules were not built ({exc}); "
              "running the pure-Python modules", file=sys.stderr)


def extensions() -> list:
    if os.environ.get("FASTGW_NO_EXTENSIONS"):
        return []
    try:
        from mypyc.build import mypycify
    except ImportError:
        print("warning: mypyc is not installed; building the pure-Python modules only",
              file=sys.stderr)
        return []
    return mypycify(COMPILED, opt_level="3", debug_level="0")


setup(ext_modules=extensions(), cmdclass={"build_ext": OptionalBuildExt})
