"""Routes for https only (Kong's protocols and https_redirect_status_code), through the
exchange with recorded transports: what the client gets, and that nothing went upstream."""

from __future__ import annotations

from typing import Any

import pytest

from tests.support.transport import ProtocolHarness, atelier_config

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


def harness(protocols: list[str], status: int = 426, https: bool = False,
            **gateway: Any) -> ProtocolHarness:
    route = {"protocols": protocols, "https_redirect_status_code": status}
    return ProtocolHarness(atelier_config(route=route, **gateway), https=https)


def head_of(response: bytes) -> tuple[bytes, dict[bytes, list[bytes]], bytes]:
    head, _, body = response.partition(b"\r\n\r\n")
    status, *lines = head.split(b"\r\n")
    fields: dict[bytes, list[bytes]] = {}
    for line in lines:
        name, _, value = line.partition(b":")
        fields.setdefault(name.lower(), []).append(value.strip())
    return status, fields, body


GET = b"GET /api/atelier/x?a=1 HTTP/1.1\r\nHost: Api.Example.com:8000\r\n"


@pytest.mark.parametrize("status,line,location", [
    (301, b"HTTP/1.1 301 Moved Permanently", b"https://api.example.com/api/atelier/x?a=1"),
    (302, b"HTTP/1.1 302 Found", b"https://api.example.com/api/atelier/x?a=1"),
    (307, b"HTTP/1.1 307 Temporary Redirect", b"https://api.example.com/api/atelier/x?a=1"),
    (308, b"HTTP/1.1 308 Permanent Redirect", b"https://api.example.com/api/atelier/x?a=1"),
])
def test_redirect_codes(status: int, line: bytes, location: bytes) -> None:
    h = harness(["https"], status)
    h.send(GET + b"\r\n")
    first, fields, body = head_of(h.client_bytes())
    assert first == line
    assert fields[b"location"] == [location]
    assert fields[b"content-length"] == [b"0"] and body == b"" and b"content-type" not in fields
    assert h.upstream_bytes() == b""
    h.close()


def test_426_upgrade_required() -> None:
    h = harness(["https"])
    h.send(GET + b"\r\n")
    first, fields, body = head_of(h.client_bytes())
    assert first == b"HTTP/1.1 426 Upgrade Required"
    assert fields[b"upgrade"] == [b"TLS/1.2, HTTP/1.1"] and fields[b"connection"] == [b"Upgrade"]
    assert body.startswith(b'{"message":"Please use HTTPS protocol"')
    assert h.upstream_bytes() == b""
    # the connection stays usable: the next request gets its answer too
    h.send(GET + b"\r\n")
    assert h.client_bytes().startswith(b"HTTP/1.1 426 ")
    h.close()


@pytest.mark.parametrize("protocols,https,extra,proxied,proto", [
    (["https"], True, b"", True, b"https"),  # over TLS
    (["http", "https"], False, b"", True, b"http"),  # Kong's default protocols
    (["http"], True, b"", True, b"https"),  # Kong: http-only routes still match https
    (["https"], False, b"X-Forwarded-Proto: https\r\n", False, None),  # untrusted client
])
def test_what_is_proxied(protocols: list[str], https: bool, extra: bytes, proxied: bool,
                         proto: bytes | None) -> None:
    h = harness(protocols, https=https)
    h.send(GET + extra + b"\r\n")
    upstream = h.upstream_bytes()
    if proxied:
        assert b"X-Forwarded-Proto: " + proto + b"\r\n" in upstream  # type: ignore[operator]
        assert b"X-Forwarded-Port: " + (b"8443" if https else b"8000") + b"\r\n" in upstream
        h.reply(OK)
        assert h.client_bytes().startswith(b"HTTP/1.1 200 OK")
    else:
        assert upstream == b"" and h.client_bytes().startswith(b"HTTP/1.1 426 ")
    h.close()


def test_trusted_client_that_ended_tls_itself() -> None:
    h = harness(["https"], 301, trusted_ips=["0.0.0.0/0", "::/0"])
    h.send(GET + b"X-Forwarded-Proto: https\r\n\r\n")
    assert b"X-Forwarded-Proto: https\r\n" in h.upstream_bytes()
    h.reply(OK)
    h.client_bytes()
    # a trusted X-Forwarded-Host is where the redirect goes
    h.send(GET + b"X-Forwarded-Proto: httpsa\r\nX-Forwarded-Host: edge.example\r\n\r\n")
    _, fields, _ = head_of(h.client_bytes())
    assert fields[b"location"] == [b"https://edge.example/api/atelier/x?a=1"]
    assert h.upstream_bytes() == b""
    h.close()


def test_redirect_without_a_host_is_426() -> None:
    h = harness(["https"], 308)
    h.send(b"GET /api/atelier/ HTTP/1.0\r\n\r\n")
    assert h.client_bytes().startswith(b"HTTP/1.1 426 ")
    h.close()
