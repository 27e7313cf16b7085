"""End-to-end header and path rules of the proxy: hop-by-hop, X-Forwarded-*, Via, Host, paths.

The backend is the emulator's /_emulator/echo, which returns the request line and headers it
received, so every assertion is about what really went over the upstream socket.
"""

from __future__ import annotations

import pytest

from tests.support.gateway import GatewayProcess
from tests.e2e.test_proxy_protocol import (  # noqa: F401  (fixtures are used by name)
    VIA,
    RawClient,
    dead_port,
    echo_headers,
    get,
    gw,
    gw_limits,
    iris,
)

pytestmark = pytest.mark.timeout(60)


def test_hop_by_hop_request_headers_removed(gw: GatewayProcess) -> None:
    extra = ("Connection: keep-alive, X-Foo, Upgrade\r\n"
             "Keep-Alive: timeout=5\r\n"
             "TE: trailers\r\n"
             "Trailer: X-Checksum\r\n"
             "Upgrade: h2c\r\n"
             "Proxy-Authorization: Basic dXNlcjpwdw==\r\n"
             "Proxy-Connection: keep-alive\r\n"
             "X-Foo: dropped because Connection names it\r\n"
             "X-Keep: end-to-end\r\n"
             "Authorization: Bearer kept\r\n"
             "Cookie: a=1\r\n")
    with RawClient(gw.port) as c:
        c.send(get("/_emulator/echo?hop=1", extra=extra) + get("/_emulator/echo?hop=2"))
        r = c.response()
        assert r.status == 200
        seen = echo_headers(r)
        for name in ("keep-alive", "te", "trailer", "upgrade", "proxy-authorization",
                     "proxy-connection", "x-foo"):
            assert name not in seen, name
        assert seen.get("connection", ["keep-alive"]) == ["keep-alive"]
        assert seen["x-keep"] == ["end-to-end"]
        assert seen["authorization"] == ["Bearer kept"]
        assert seen["cookie"] == ["a=1"]
        # the (ignored) h2c upgrade did not derail the connection: the pipelined one follows
        assert c.response().json()["path"] == "/_emulator/echo?hop=2"


def test_hop_by_hop_response_headers_removed(gw: GatewayProcess) -> None:
    """The emulator's `Keep-Alive` never reaches the client; its plain `Connection:
    keep-alive` may, once, since it says what the gateway says (see clean_response_head)."""
    with RawClient(gw.port) as c:
        c.send(get("/_emulator/echo?resp=1"))
        r = c.response()
        assert r.status == 200
        assert r.keeps_alive()
        assert r.header("keep-alive") is None
        assert r.header("x-iris-id") == "A"  # end-to-end headers pass
        assert r.header("content-type") == "application/json; charset=utf-8"
        assert r.header("date") is not None
        assert r.all("via") == [VIA]


def test_forwarded_headers_untrusted_client(gw: GatewayProcess) -> None:
    extra = ("X-Forwarded-For: 1.2.3.4\r\nX-Forwarded-Proto: https\r\n"
             "X-Forwarded-Host: evil.test\r\nX-Forwarded-Port: 443\r\n"
             "X-Real-IP: 1.2.3.4\r\nX-Forwarded-Prefix: /evil\r\n")
    with RawClient(gw.port) as c:
        c.send(get("/_emulator/echo", host="api.example.test:9999", extra=extra))
        seen = echo_headers(c.response())
    assert seen["x-forwarded-for"] == ["127.0.0.1"]
    assert seen["x-forwarded-proto"] == ["http"]
    assert seen["x-forwarded-host"] == ["api.example.test"]
    assert seen["x-forwarded-port"] == [str(gw.port)]
    assert seen["x-real-ip"] == ["127.0.0.1"]
    assert "x-forwarded-prefix" not in seen  # not stripped, and the client's is dropped
    assert seen["via"] == [VIA]


def test_forwarded_headers_trusted_client(gw_limits: GatewayProcess) -> None:
    extra = ("X-Forwarded-For: 1.2.3.4, 10.0.0.1\r\nX-Forwarded-Proto: https\r\n"
             "X-Forwarded-Host: front.test\r\nX-Forwarded-Port: 443\r\n"
             "X-Real-IP: 1.2.3.4\r\n")
    with RawClient(gw_limits.port) as c:
        c.send(get("/_emulator/echo", host="api.example.test", extra=extra))
        seen = echo_headers(c.response())
    assert seen["x-forwarded-for"] == ["1.2.3.4, 10.0.0.1, 127.0.0.1"]
    assert seen["x-forwarded-proto"] == ["https"]
    assert seen["x-forwarded-host"] == ["front.test"]
    assert seen["x-forwarded-port"] == ["443"]
    assert seen["x-real-ip"] == ["1.2.3.4"]


def test_trusted_client_without_forwarded_headers(gw_limits: GatewayProcess) -> None:
    with RawClient(gw_limits.port) as c:
        c.send(get("/_emulator/echo", host="plain.test"))
        seen = echo_headers(c.response())
    assert seen["x-forwarded-for"] == ["127.0.0.1"]
    assert seen["x-forwarded-proto"] == ["http"]
    assert seen["x-forwarded-host"] == ["plain.test"]
    assert seen["x-forwarded-port"] == [str(gw_limits.port)]
    assert seen["x-real-ip"] == ["127.0.0.1"]


def test_x_forwarded_prefix_when_stripped(gw: GatewayProcess) -> None:
    with RawClient(gw.port) as c:
        c.send(get("/strip/a"))
        r = c.response()
        assert r.json()["path"] == "/_emulator/echo/a"
        assert echo_headers(r)["x-forwarded-prefix"] == ["/strip"]
        c.send(get("/nostrip/a"))
        r = c.response()
        assert r.json()["path"] == "/_emulator/echo/nostrip/a"
        assert "x-forwarded-prefix" not in echo_headers(r)


def test_via_both_ways(gw: GatewayProcess) -> None:
    with RawClient(gw.port) as c:
        c.send(get("/_emulator/echo", extra="Via: 1.0 client-proxy\r\n"))
        r = c.response()
        assert echo_headers(r)["via"] == ["1.0 client-proxy", VIA]
        assert r.all("via") == [VIA]


def test_host_header_default_is_target(gw: GatewayProcess, iris) -> None:  # noqa: F811
    with RawClient(gw.port) as c:
        c.send(get("/strip", host="client.test"))
        assert echo_headers(c.response())["host"] == [f"127.0.0.1:{iris.port}"]


def test_host_header_preserved(gw: GatewayProcess) -> None:
    with RawClient(gw.port) as c:
        c.send(get("/preserve/x", host="Client.Test:8443"))
        r = c.response()
        assert r.json()["path"] == "/_emulator/echo/x"
        assert echo_headers(r)["host"] == ["Client.Test:8443"]


def test_host_header_from_upstream_host_header(gw: GatewayProcess) -> None:
    with RawClient(gw.port) as c:
        c.send(get("/hh", host="client.test"))
        assert echo_headers(c.response())["host"] == ["backend.internal"]


# (request, upstream path): rows of reference/kong.md §2 with the service path under
# /_emulator/echo so the emulator echoes the joined path.
PATH_ROWS = [
    # service /_emulator/echo, route /strip, strip_path true
    ("/strip", "/_emulator/echo"),
    ("/strip/", "/_emulator/echo/"),
    ("/stripreq", "/_emulator/echo/req"),
    ("/strip/a/b", "/_emulator/echo/a/b"),
    # service /_emulator/echo, route /nostrip, strip_path false
    ("/nostrip", "/_emulator/echo/nostrip"),
    ("/nostripreq", "/_emulator/echo/nostripreq"),
    # service /_emulator/echo/, route /slash, strip_path true
    ("/slash", "/_emulator/echo"),
    ("/slash/", "/_emulator/echo/"),
    ("/slash/req", "/_emulator/echo/req"),
    # service /_emulator/echo/, route /slashns, strip_path false
    ("/slashns/x", "/_emulator/echo/slashns/x"),
    # query strings pass unchanged
    ("/strip/q?b=%25&a=1&a=2&empty=&flag&sp=a+b",
     "/_emulator/echo/q?b=%25&a=1&a=2&empty=&flag&sp=a+b"),
    # percent-encoding: unreserved characters decoded, the rest kept (upper-cased)
    ("/strip/a%20b/%7euser/%2f", "/_emulator/echo/a%20b/~user/%2F"),
    # dot segments and doubled slashes are normalized before matching and joining
    ("/strip/a/../b//c", "/_emulator/echo/b/c"),
]


@pytest.mark.parametrize(("request_path", "upstream"), PATH_ROWS)
def test_path_joining(gw: GatewayProcess, request_path: str, upstream: str) -> None:
    with RawClient(gw.port) as c:
        c.send(get(request_path))
        r = c.response()
        assert r.status == 200, r
        assert r.json()["path"] == upstream


def test_absolute_form_request_target(gw: GatewayProcess) -> None:
    with RawClient(gw.port) as c:
        c.send(get("http://gw.test/strip/abs?x=1"))
        r = c.response()
        assert r.status == 200 and r.json()["path"] == "/_emulator/echo/abs?x=1"
