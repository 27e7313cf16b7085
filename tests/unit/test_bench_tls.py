"""The TLS benchmark's verdict lines and its reading of openssl s_time, table-driven."""

from __future__ import annotations

from typing import Any

import pytest

from bench.tls import _PROGRESS, _S_TIME, tls_verdicts


def summary(plain: tuple[float, float], tls: tuple[float, float],
            full: tuple[float, float]) -> dict[str, Any]:
    """(fastgw, nginx) CPU per request for plain and TLS, handshakes/s for full."""
    return {"plain_c64": {"fastgw1": {"cpu_us": plain[0]}, "nginx": {"cpu_us": plain[1]}},
            "tls_c64": {"fastgw1": {"cpu_us": tls[0]}, "nginx": {"cpu_us": tls[1]}},
            "tls_full": {"fastgw1": {"rps": full[0]}, "nginx": {"rps": full[1]}}}


@pytest.mark.parametrize("doc,keepalive,handshakes", [
    (summary((15, 8), (25, 13), (750, 900)), True, True),  # 1.92 <= 1.875 * 1.1; 0.83
    (summary((15, 8), (30, 13), (600, 900)), False, False),  # 2.31 > 2.06; 0.67
    (summary((10, 10), (11, 10), (700, 1000)), True, True),  # the bounds themselves
    (summary((10, 10), (11.1, 10), (699, 1000)), False, False),
    ({}, None, None),  # nothing measured: no verdict
])
def test_verdicts(doc: dict[str, Any], keepalive: bool | None, handshakes: bool | None) -> None:
    lines = tls_verdicts(doc)
    assert [line["pass"] for line in lines] == [keepalive, handshakes]


S_TIME_OUT = """Collecting connection statistics for 4 seconds
rrrrr*rrrr
rrr

2989 connections in 0.38s; 7865.79 connections/user sec, bytes read 430416
2989 connections in 5 real seconds, 144 bytes read per connection
"""


def test_s_time_output() -> None:
    m = _S_TIME.search(S_TIME_OUT)
    assert m is not None and m.group(1) == "2989"
    assert sum(line.count("r") for line in _PROGRESS.findall(S_TIME_OUT)) == 12
