"""Kong's `headers` / `headers_upstream` settings: tokens to fields (core.http.gateway_fields)."""

from __future__ import annotations

import pytest

from fastgw.config import ConfigError, load_settings
from fastgw.core.http.errors import error_response
from fastgw.core.http.gateway_fields import GatewayFields, parse_tokens


@pytest.mark.parametrize("headers,upstream,on,response_ids,upstream_ids", [
    # fastgw's defaults: Via and Server, X-Request-Id both ways
    (("server_tokens", "X-Request-Id"), ("X-Request-Id",), {"via", "server"},
     (b"X-Request-Id",), (b"X-Request-Id",)),
    # Kong 3.x's defaults
    (("server_tokens", "latency_tokens", "X-Kong-Request-Id"), ("X-Kong-Request-Id",),
     {"via", "server", "proxy_latency", "upstream_latency", "response_latency"},
     (b"X-Kong-Request-Id",), (b"X-Kong-Request-Id",)),
    (("Via", "X-Kong-Upstream-Status"), ("off",), {"via", "upstream_status"}, (), ()),
    (("off",), (), set(), (), ()),
    (("x-request-id", "X-KONG-REQUEST-ID"), ("X-Request-Id", "X-Kong-Request-Id"), set(),
     (b"X-Request-Id", b"X-Kong-Request-Id"), (b"X-Request-Id", b"X-Kong-Request-Id")),
])
def test_tokens(headers: tuple[str, ...], upstream: tuple[str, ...], on: set[str],
                response_ids: tuple[bytes, ...], upstream_ids: tuple[bytes, ...]) -> None:
    f = GatewayFields(headers, upstream)
    flags = {name for name in ("via", "server", "proxy_latency", "upstream_latency",
                               "response_latency", "upstream_status") if getattr(f, name)}
    assert flags == on
    assert (f.response_ids, f.upstream_ids) == (response_ids, upstream_ids)


def test_settings_parse_and_refuse_unknown_tokens() -> None:
    s = load_settings({"headers": "server_tokens, latency_tokens, X-Kong-Request-Id",
                       "headers_upstream": ["X-Kong-Request-Id"]})
    assert s.headers == ("server_tokens", "latency_tokens", "X-Kong-Request-Id")
    assert s.headers_upstream == ("X-Kong-Request-Id",)
    with pytest.raises(ConfigError) as err:
        load_settings({"headers": "server_tokens, X-Kong-Nonsense"})
    assert ("gateway.headers", ) == (err.value.errors[0][0],) and "X-Kong-Nonsense" in str(err.value)
    with pytest.raises(ValueError):
        parse_tokens("server_tokens", upstream=True)  # not an upstream token


def test_error_responses_follow_the_fields() -> None:
    kong = GatewayFields(("server_tokens", "latency_tokens", "X-Kong-Request-Id"), ())
    out = error_response(404, request_id="r1", fields=kong, latency_ms=3.7)
    assert b"\r\nServer: fastgw/" in out and b"\r\nX-Kong-Request-Id: r1\r\n" in out
    assert b"X-Request-Id" not in out and b"\r\nX-Kong-Response-Latency: 3\r\n" in out
    bare = error_response(404, request_id="r1", fields=GatewayFields(("off",), ()))
    assert b"Server:" not in bare and b"r1\r\n" not in bare.split(b"\r\n\r\n")[0]
