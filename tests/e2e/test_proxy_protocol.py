"""Protocol-level end-to-end tests of the proxy: real fastgw process, real emulator, real sockets.

Byte-exact cases use raw sockets (`RawClient`); the rest use requests, curl or websockets.
Two gateways are shared per module (starting one costs ~0.5 s): `gw` with default limits and
no trusted proxies, `gw_limits` with small limits and `trusted_ips: ["127.0.0.1"]`.
"""

from __future__ import annotations

import asyncio
import json
import re
import socket
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from tests.support.gateway import GatewayProcess, reserve_port
from tests.support.procs import IrisProcess
from fastgw import __version__

pytestmark = pytest.mark.timeout(60)

T = 10.0  # bound of every socket operation
VIA = f"1.1 fastgw/{__version__}"
REQUEST_ID = re.compile(r"^[0-9a-f]{32}$")
PATTERN = bytes(range(256)) * 1024  # byte i of every emulator body is i % 256


def pattern(n: int) -> bytes:
    return (PATTERN * (n // len(PATTERN) + 1))[:n]


# -- raw HTTP/1.x client ----------------------------------------------------------------------


class Response:
    def __init__(self, version: str, status: int, headers: list[tuple[str, str]], body: bytes,
                 framing: str) -> None:
        self.version = version
        self.status = status
        self.headers = headers  # (lower-case name, value), in order
        self.body = body
        self.framing = framing  # "none", "length", "chunked" or "close"

    def header(self, name: str) -> str | None:
        for n, v in self.headers:
            if n == name:
                return v
        return None

    def all(self, name: str) -> list[str]:
        return [v for n, v in self.headers if n == name]

    def keeps_alive(self) -> bool:
        """No Connection field, or exactly one `keep-alive` (a backend's plain keep-alive
        is passed on: it states the gateway's own keep-alive, as nginx's responses do)."""
        return [v.lower() for v in self.all("connection")] in ([], ["keep-alive"])

    def json(self) -> Any:
        return json.loads(self.body)

    def __repr__(self) -> str:
        return f"<Response {self.status} {self.headers} {self.body[:200]!r}>"


class RawClient:
    """A socket plus a read buffer, with just enough HTTP/1.1 response parsing."""

    def __init__(self, port: int, timeout: float = T) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.sock.settimeout(timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""

    def __enter__(self) -> RawClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.sock.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _fill(self) -> bool:
        data = self.sock.recv(1 << 20)
        self.buf += data
        return bool(data)

    def _until(self, marker: bytes) -> bytes:
        while marker not in self.buf:
            if not self._fill():
                raise EOFError(f"EOF waiting for {marker!r}; got {self.buf[:300]!r}")
        i = self.buf.index(marker) + len(marker)
        out, self.buf = self.buf[:i], self.buf[i:]
        return out

    def _exact(self, n: int) -> bytes:
        while len(self.buf) < n:
            if not self._fill():
                raise EOFError(f"EOF after {len(self.buf)} of {n} bytes")
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def _to_eof(self) -> bytes:
        while self._fill():
            pass
        out, self.buf = self.buf, b""
        return out

    def response(self, method: str = "GET") -> Response:
        head = self._until(b"\r\n\r\n").decode("latin-1")
        lines = head[:-4].split("\r\n")
        version, status, *_ = lines[0].split(" ", 2)
        headers = []
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers.append((name.strip().lower(), value.strip()))
        resp = Response(version, int(status), headers, b"", "none")
        code = resp.status
        if method == "HEAD" or code < 200 or code in (204, 304):
            return resp
        te = resp.header("transfer-encoding")
        if te is not None and te.lower() == "chunked":
            resp.framing = "chunked"
            parts = []
            while True:
                size = int(self._until(b"\r\n")[:-2].split(b";")[0], 16)
                if size == 0:
                    self._until(b"\r\n")  # no trailers from us
                    break
                parts.append(self._exact(size))
                assert self._exact(2) == b"\r\n"
            resp.body = b"".join(parts)
        elif resp.header("content-length") is not None:
            resp.framing = "length"
            resp.body = self._exact(int(resp.header("content-length")))  # type: ignore[arg-type]
        else:
            resp.framing = "close"
            resp.body = self._to_eof()
        return resp

    def closed(self, timeout: float = 3.0) -> bool:
        """True when the peer closes with nothing more to read (within `timeout`)."""
        if self.buf:
            return False
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(65536)
        except socket.timeout:
            return False
        except ConnectionResetError:
            return True
        finally:
            self.sock.settimeout(T)
        self.buf += data
        return not data

    def silent(self, timeout: float = 0.3) -> bool:
        """True when nothing arrives within `timeout` and the connection stays open."""
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(65536)
        except socket.timeout:
            return True
        finally:
            self.sock.settimeout(T)
        self.buf += data
        return False


def get(path: str, host: str = "gw.test", extra: str = "", version: str = "1.1") -> bytes:
    return f"GET {path} HTTP/{version}\r\nHost: {host}\r\n{extra}\r\n".encode()


def echo_headers(resp: Response) -> dict[str, list[str]]:
    """Headers the backend received, from an /_emulator/echo body (lower-case names)."""
    out: dict[str, list[str]] = {}
    for name, value in resp.json()["headers"]:
        out.setdefault(name.lower(), []).append(value)
    return out


# -- fixtures ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def iris() -> Iterator[IrisProcess]:
    with IrisProcess("A") as proc:
        yield proc


@pytest.fixture(scope="module")
def dead_port() -> Iterator[int]:
    """A port bound by nobody else and listened on by nobody: connecting is refused."""
    sock = reserve_port()
    yield sock.getsockname()[1]
    sock.close()


def proxy_config(iris_port: int, dead_port: int, gateway: dict[str, Any] | None = None
                 ) -> dict[str, Any]:
    target = f"127.0.0.1:{iris_port}"
    dead = f"127.0.0.1:{dead_port}"

    def service(name: str, routes: list[dict[str, Any]], **kw: Any) -> dict[str, Any]:
        return {"name": name, "host": "iris", "port": 80, "protocol": "http", **kw,
                "routes": [{"name": f"{name}-{i}", **r} for i, r in enumerate(routes)]}

    return {
        "_format_version": "3.0",
        "upstreams": [
            {"name": "iris", "targets": [{"target": target}]},
            {"name": "iris-hh", "host_header": "backend.internal", "targets": [{"target": target}]},
            {"name": "nobody", "targets": [{"target": target, "weight": 0}]},
            {"name": "dead", "targets": [{"target": dead}]},
        ],
        "services": [
            service("emulator", [{"paths": ["/_emulator"], "strip_path": False}]),
            service("strip", [{"paths": ["/strip"], "strip_path": True}], path="/_emulator/echo"),
            service("nostrip", [{"paths": ["/nostrip"], "strip_path": False}],
                    path="/_emulator/echo"),
            service("slash", [{"paths": ["/slash"], "strip_path": True}], path="/_emulator/echo/"),
            service("slashns", [{"paths": ["/slashns"], "strip_path": False}],
                    path="/_emulator/echo/"),
            service("preserve", [{"paths": ["/preserve"], "preserve_host": True}],
                    path="/_emulator/echo"),
            service("hh", [{"paths": ["/hh"]}], host="iris-hh", path="/_emulator/echo"),
            service("byhost", [{"hosts": ["example.test"]}], path="/_emulator/echo/host"),
            service("bymethod", [{"paths": ["/onlypost"], "methods": ["POST"]}],
                    path="/_emulator/echo"),
            service("byheader", [{"paths": ["/hdr"], "headers": {"x-version": ["v2"]}}],
                    path="/_emulator/echo"),
            service("byregex", [{"paths": [r"~/api/v(?<ver>\d+)/"], "strip_path": False}],
                    path="/_emulator/echo"),
            service("nobody", [{"paths": ["/zero"]}], host="nobody"),
            service("dead", [{"paths": ["/dead"]}], host="dead", retries=1,
                    connect_timeout=2000),
            service("slow", [{"paths": ["/slow"]}], path="/_emulator/delay", read_timeout=300,
                    retries=0),
        ],
        "gateway": {"workers": 1, **(gateway or {})},
    }


@pytest.fixture(scope="module")
def gw(iris: IrisProcess, dead_port: int) -> Iterator[GatewayProcess]:
    with GatewayProcess(proxy_config(iris.port, dead_port)) as proc:
        yield proc


LIMITS = {"max_request_line_size": 1024, "max_header_size": 2048, "max_body_size": 1000,
          "trusted_ips": ["127.0.0.1"]}


@pytest.fixture(scope="module")
def gw_limits(iris: IrisProcess, dead_port: int) -> Iterator[GatewayProcess]:
    with GatewayProcess(proxy_config(iris.port, dead_port, LIMITS)) as proc:
        yield proc


def assert_serves(gateway: GatewayProcess) -> None:
    """A new connection gets a normal answer (the gateway survived what came before)."""
    with RawClient(gateway.port) as c:
        c.send(get("/_emulator/echo?alive=1"))
        r = c.response()
        assert r.status == 200
        assert r.json()["path"] == "/_emulator/echo?alive=1"


def assert_kong_error(r: Response, status: int, message: str) -> None:
    assert r.status == status
    assert r.header("content-type") == "application/json; charset=utf-8"
    body = r.json()
    assert set(body) == {"message", "request_id"}
    assert body["message"] == message
    assert REQUEST_ID.match(body["request_id"])
    assert r.header("content-length") == str(len(r.body))


# -- framing: fragmented and pipelined requests -----------------------------------------------


def test_fragmented_request(gw: GatewayProcess) -> None:
    body = b"hello, fragmented world" * 3
    data = (b"POST /_emulator/echo?frag=1 HTTP/1.1\r\nHost: gw.test\r\nX-Test: split\r\n"
            b"Content-Length: %d\r\n\r\n" % len(body)) + body
    with RawClient(gw.port) as c:
        for i in range(0, len(data), 3):
            c.send(data[i:i + 3])
            time.sleep(0.002)
        r = c.response()
    assert r.status == 200
    doc = r.json()
    assert doc["method"] == "POST"
    assert doc["path"] == "/_emulator/echo?frag=1"
    assert doc["body"] == body.decode()
    assert doc["body_length"] == len(body)
    assert echo_headers(r)["x-test"] == ["split"]


def test_pipelined_gets(gw: GatewayProcess) -> None:
    with RawClient(gw.port) as c:
        c.send(b"".join(get(f"/_emulator/echo?i={i}") for i in range(5)))
        for i in range(5):
            r = c.response()
            assert r.status == 200
            assert r.json()["path"] == f"/_emulator/echo?i={i}"
        assert c.silent()  # keep-alive: nothing more, still open


def test_pipelined_with_bodies(gw: GatewayProcess) -> None:
    data = (get("/_emulator/echo?i=0")
            + b"POST /_emulator/echo?i=1 HTTP/1.1\r\nHost: gw.test\r\nContent-Length: 3\r\n\r\nabc"
            + get("/_emulator/echo?i=2")
            + b"POST /_emulator/echo?i=3 HTTP/1.1\r\nHost: gw.test\r\n"
              b"Transfer-Encoding: chunked\r\n\r\n2\r\nxy\r\n1\r\nz\r\n0\r\n\r\n"
            + get("/_emulator/echo?i=4"))
    with RawClient(gw.port) as c:
        c.send(data)
        docs = [c.response().json() for _ in range(5)]
    assert [d["path"] for d in docs] == [f"/_emulator/echo?i={i}" for i in range(5)]
    assert [d["method"] for d in docs] == ["GET", "POST", "GET", "POST", "GET"]
    assert docs[1]["body"] == "abc"
    assert docs[3]["body"] == "xyz"
    assert [d["body_length"] for d in docs] == [0, 3, 0, 3, 0]


def test_half_close_after_request(gw: GatewayProcess) -> None:
    """A client that shuts down its sending side still gets its answer, then EOF."""
    with RawClient(gw.port) as c:
        c.send(get("/_emulator/echo?half=1") + get("/_emulator/echo?half=2"))
        c.sock.shutdown(socket.SHUT_WR)
        assert c.response().json()["path"] == "/_emulator/echo?half=1"
        assert c.response().json()["path"] == "/_emulator/echo?half=2"
        assert c.closed()


# -- malformed requests ------------------------------------------------------------------------

MALFORMED = {
    "garbage": b"\x00\x01\x02garbage\r\n\r\n",
    "bad_method": b"FOO@ /_emulator/echo HTTP/1.1\r\nHost: gw.test\r\n\r\n",
    "bad_header_char": b"GET /_emulator/echo HTTP/1.1\r\nHost: gw.test\r\nBad Name: v\r\n\r\n",
    "bad_header_value": b"GET /_emulator/echo HTTP/1.1\r\nHost: gw.test\r\nX-A: a\x00b\r\n\r\n",
    "cl_and_te": b"POST /_emulator/sink HTTP/1.1\r\nHost: gw.test\r\nContent-Length: 5\r\n"
                 b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "bad_chunk_size": b"POST /_emulator/sink HTTP/1.1\r\nHost: gw.test\r\n"
                      b"Transfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
    "bad_version": b"GET /_emulator/echo HTTP/9.x\r\nHost: gw.test\r\n\r\n",
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_request(gw: GatewayProcess, case: str) -> None:
    with RawClient(gw.port) as c:
        c.send(MALFORMED[case])
        r = c.response()
        assert_kong_error(r, 400, "Bad request")
        assert r.header("connection") == "close"
        assert c.closed()
    assert_serves(gw)


def test_malformed_after_pipelined_good_request(gw: GatewayProcess) -> None:
    """The good request is answered first, then the 400, then the connection closes."""
    with RawClient(gw.port) as c:
        c.send(get("/_emulator/delay/100?first") + MALFORMED["bad_header_char"])
        r = c.response()
        assert r.status == 200 and r.json()["delay_ms"] == 100
        r = c.response()
        assert_kong_error(r, 400, "Bad request")
        assert c.closed()
    assert_serves(gw)


# -- limits ------------------------------------------------------------------------------------


def test_uri_too_long(gw_limits: GatewayProcess) -> None:
    with RawClient(gw_limits.port) as c:
        c.send(get("/_emulator/echo?q=" + "a" * 1100))
        r = c.response()
        assert_kong_error(r, 414, "Request-URI Too Large")
        assert c.closed()
    assert_serves(gw_limits)


def test_uri_at_limit_is_fine(gw_limits: GatewayProcess) -> None:
    path = "/_emulator/echo?q="
    path += "a" * (1024 - len(path))
    with RawClient(gw_limits.port) as c:
        c.send(get(path))
        r = c.response()
        assert r.status == 200 and r.json()["path"] == path


def test_headers_too_large(gw_limits: GatewayProcess) -> None:
    extra = "".join(f"X-Filler-{i}: {'v' * 100}\r\n" for i in range(30))
    with RawClient(gw_limits.port) as c:
        c.send(get("/_emulator/echo", extra=extra))
        r = c.response()
        assert_kong_error(r, 431, "Request Header Fields Too Large")
        assert c.closed()
    assert_serves(gw_limits)


def test_content_length_too_large(gw_limits: GatewayProcess) -> None:
    with RawClient(gw_limits.port) as c:
        c.send(b"POST /_emulator/sink HTTP/1.1\r\nHost: gw.test\r\nContent-Length: 1001\r\n\r\n")
        r = c.response()
        assert_kong_error(r, 413, "Request Entity Too Large")
        assert r.header("connection") == "close"
        assert c.closed()
    with RawClient(gw_limits.port) as c:  # exactly at the limit passes
        c.send(b"POST /_emulator/sink HTTP/1.1\r\nHost: gw.test\r\nContent-Length: 1000\r\n\r\n"
               + b"x" * 1000)
        assert c.response().json() == {"received": 1000}


def test_chunked_body_too_large(gw_limits: GatewayProcess) -> None:
    with RawClient(gw_limits.port) as c:
        c.send(b"POST /_emulator/sink HTTP/1.1\r\nHost: gw.test\r\n"
               b"Transfer-Encoding: chunked\r\n\r\n")
        r = None
        for _ in range(4):
            try:
                c.send(b"1f4\r\n" + b"x" * 500 + b"\r\n")
            except (BrokenPipeError, ConnectionResetError):
                break
            time.sleep(0.05)
        r = c.response()
        assert_kong_error(r, 413, "Request Entity Too Large")
        assert r.header("connection") == "close"
        assert c.closed()
    assert_serves(gw_limits)


# -- bodiless responses ------------------------------------------------------------------------


def test_head_keeps_content_length_and_connection(gw: GatewayProcess) -> None:
    with RawClient(gw.port) as c:
        c.send(b"HEAD /_emulator/bytes?n=12345 HTTP/1.1\r\nHost: gw.test\r\n\r\n")
        r = c.response("HEAD")
        assert r.status == 200
        assert r.header("content-length") == "12345"
        assert r.header("transfer-encoding") is None
        assert c.buf == b""
        c.send(get("/_emulator/echo?after=head"))
        r = c.response()
        assert r.status == 200 and r.json()["path"] == "/_emulator/echo?after=head"
        # HEAD of a chunked and of a close-delimited resource: no body either
        for what in ("chunked?n=1000", "eof?n=1000"):
            c.send(f"HEAD /_emulator/{what} HTTP/1.1\r\nHost: gw.test\r\n\r\n".encode())
            r = c.response("HEAD")
            assert r.status == 200
            c.send(get(f"/_emulator/echo?after={what[:3]}"))
            assert c.response().json()["path"] == f"/_emulator/echo?after={what[:3]}"


@pytest.mark.parametrize("code", [204, 304])
def test_no_body_statuses(gw: GatewayProcess, code: int) -> None:
    with RawClient(gw.port) as c:
        c.send(get(f"/_emulator/status/{code}"))
        r = c.response()
        assert r.status == code
        assert r.header("transfer-encoding") is None
        assert r.header("content-length") is None
        assert r.keeps_alive()
        c.send(get("/_emulator/echo?after=%d" % code))
        r = c.response()
        assert r.status == 200 and r.json()["path"] == "/_emulator/echo?after=%d" % code


# -- request bodies ----------------------------------------------------------------------------


def test_chunked_request_body(gw: GatewayProcess) -> None:
    sizes = [1, 10, 4096, 70000, 3]
    with RawClient(gw.port) as c:
        c.send(b"POST /_emulator/sink HTTP/1.1\r\nHost: gw.test\r\n"
               b"Transfer-Encoding: chunked\r\n\r\n")
        for n in sizes:
            c.send(b"%x\r\n" % n + b"y" * n + b"\r\n")
            time.sleep(0.01)
        c.send(b"0\r\n\r\n")
        r = c.response()
        assert r.status == 200 and r.json() == {"received": sum(sizes)}
        c.send(get("/_emulator/echo?after=chunked"))  # the connection is still in sync
        assert c.response().json()["path"] == "/_emulator/echo?after=chunked"


def test_content_length_upload(gw: GatewayProcess) -> None:
    n = 3 * 1024 * 1024 + 7
    r = requests.post(gw.url + "/_emulator/sink", data=b"z" * n, timeout=T)
    assert r.status_code == 200 and r.json() == {"received": n}


def test_expect_100_continue_raw(gw: GatewayProcess) -> None:
    with RawClient(gw.port) as c:
        c.send(b"POST /_emulator/echo?expect=1 HTTP/1.1\r\nHost: gw.test\r\n"
               b"Expect: 100-continue\r\nContent-Length: 5\r\n\r\n")
        interim = c.response()
        assert interim.status == 100 and interim.headers == []
        assert c.silent(0.2)  # nothing else before the body is sent
        c.send(b"hello")
        r = c.response()
        assert r.status == 200
        doc = r.json()
        assert doc["body"] == "hello"
        assert "expect" not in echo_headers(r)  # handled by the gateway, not forwarded
        c.send(get("/_emulator/echo?after=expect"))
        assert c.response().json()["path"] == "/_emulator/echo?after=expect"


def test_expect_100_continue_curl(gw: GatewayProcess, tmp_path: Any) -> None:
    curl = "curl"
    payload = tmp_path / "payload.bin"
    payload.write_bytes(b"q" * 200_000)
    started = time.monotonic()
    out = subprocess.run(
        [curl, "-sS", "-v", "--max-time", "10", "--expect100-timeout", "8",
         "-H", "Expect: 100-continue", "--data-binary", f"@{payload}",
         gw.url + "/_emulator/sink"],
        capture_output=True, timeout=15, check=True)
    elapsed = time.monotonic() - started
    assert json.loads(out.stdout) == {"received": 200_000}
    assert out.stderr.count(b"< HTTP/1.1 100 Continue") == 1
    assert elapsed < 5  # curl got its 100 and did not sit out the expect timeout


# -- chunked and close-delimited responses -----------------------------------------------------


@pytest.mark.parametrize("what", ["chunked?n=300000&size=1000", "chunked?n=70000&size=65536",
                                  "chunked?n=0", "eof?n=300000", "eof?n=0"])
def test_streamed_response_http11(gw: GatewayProcess, what: str) -> None:
    n = int(re.search(r"n=(\d+)", what).group(1))  # type: ignore[union-attr]
    with RawClient(gw.port) as c:
        c.send(get(f"/_emulator/{what}"))
        r = c.response()
        assert r.status == 200
        assert r.framing == "chunked"  # re-chunked for an HTTP/1.1 client
        assert r.header("content-length") is None
        assert r.keeps_alive()
        assert len(r.body) == n and r.body == pattern(n)
        c.send(get("/_emulator/echo?after=stream"))  # and keep-alive goes on
        assert c.response().json()["path"] == "/_emulator/echo?after=stream"


@pytest.mark.parametrize("what", ["chunked?n=300000&size=1000", "eof?n=300000", "eof?n=0"])
def test_streamed_response_http10(gw: GatewayProcess, what: str) -> None:
    n = int(re.search(r"n=(\d+)", what).group(1))  # type: ignore[union-attr]
    for extra in ("", "Connection: keep-alive\r\n"):
        with RawClient(gw.port) as c:
            c.send(get(f"/_emulator/{what}", extra=extra, version="1.0"))
            r = c.response()
            assert r.status == 200
            assert r.framing == "close"  # an HTTP/1.0 client cannot read chunked
            assert r.header("transfer-encoding") is None
            assert r.header("connection") == "close"
            assert r.body == pattern(n)


def test_large_chunked_response_with_requests(gw: GatewayProcess) -> None:
    n = 5 * 1024 * 1024 + 3
    r = requests.get(gw.url + f"/_emulator/chunked?n={n}&size=16384", timeout=T)
    assert r.status_code == 200 and r.headers["Transfer-Encoding"] == "chunked"
    assert len(r.content) == n and r.content == pattern(n)


# -- HTTP/1.0 clients --------------------------------------------------------------------------


def test_http10_without_keep_alive(gw: GatewayProcess) -> None:
    with RawClient(gw.port) as c:
        c.send(get("/_emulator/echo?v=10", version="1.0"))
        r = c.response()
        assert r.status == 200
        assert r.json()["path"] == "/_emulator/echo?v=10"
        assert r.header("connection") == "close"
        assert r.framing == "length"
        assert c.closed()


def test_http10_with_keep_alive(gw: GatewayProcess) -> None:
    with RawClient(gw.port) as c:
        for i in range(3):
            c.send(get(f"/_emulator/echo?ka={i}", extra="Connection: keep-alive\r\n",
                       version="1.0"))
            r = c.response()
            assert r.status == 200
            assert r.json()["path"] == f"/_emulator/echo?ka={i}"
            assert [v.lower() for v in r.all("connection")] == ["keep-alive"]  # exactly one
            assert r.framing == "length"
        c.send(get("/_emulator/echo?ka=last", version="1.0"))
        assert c.response().header("connection") == "close"
        assert c.closed()


# -- error statuses produced by the gateway ----------------------------------------------------


def test_no_route_404(gw: GatewayProcess) -> None:
    with RawClient(gw.port) as c:
        c.send(get("/nothing/here?x=1"))
        r = c.response()
        assert_kong_error(r, 404, "no Route matched with those values")
        assert r.body.startswith(b'{"message":"no Route matched with those values","request_id":"')
        assert r.keeps_alive()
        c.send(get("/_emulator/echo?after=404"))  # keep-alive continues
        assert c.response().status == 200


def test_head_no_route_404_has_no_body(gw: GatewayProcess) -> None:
    with RawClient(gw.port) as c:
        c.send(b"HEAD /nothing HTTP/1.1\r\nHost: gw.test\r\n\r\n")
        r = c.response("HEAD")
        assert r.status == 404 and int(r.header("content-length")) > 0  # type: ignore[arg-type]
        c.send(get("/_emulator/echo?after=head404"))
        assert c.response().json()["path"] == "/_emulator/echo?after=head404"


def test_all_weights_zero_503(gw: GatewayProcess) -> None:
    with RawClient(gw.port) as c:
        c.send(get("/zero"))
        assert_kong_error(c.response(), 503, "failure to get a peer from the ring-balancer")


def test_closed_port_502(gw: GatewayProcess) -> None:
    with RawClient(gw.port) as c:
        c.send(get("/dead"))
        assert_kong_error(c.response(), 502,
                          "An invalid response was received from the upstream server")
        c.send(get("/_emulator/echo?after=502"))
        assert c.response().status == 200


def test_read_timeout_504(gw: GatewayProcess) -> None:
    with RawClient(gw.port) as c:
        started = time.monotonic()
        c.send(get("/slow/2000"))
        r = c.response()
        elapsed = time.monotonic() - started
        assert_kong_error(r, 504, "The upstream server is timing out")
        assert 0.25 <= elapsed < 1.5
        c.send(get("/_emulator/echo?after=504"))
        assert c.response().json()["path"] == "/_emulator/echo?after=504"


# -- WebSocket ---------------------------------------------------------------------------------


def test_websocket_echo(gw: GatewayProcess) -> None:
    from websockets.asyncio.client import connect

    async def run() -> tuple[Any, ...]:
        async with connect(f"ws://127.0.0.1:{gw.port}/_emulator/ws", open_timeout=T,
                           close_timeout=T) as ws:
            await ws.send("hello gateway")
            text = await asyncio.wait_for(ws.recv(), T)
            await ws.send(b"\x00\x01\x02\xff" * 1000)
            binary = await asyncio.wait_for(ws.recv(), T)
            await ws.send("x" * 100_000)
            big = await asyncio.wait_for(ws.recv(), T)
            headers = ws.response.headers
        return text, binary, big, headers, ws.close_code

    text, binary, big, headers, code = asyncio.run(asyncio.wait_for(run(), 30))
    assert text == "hello gateway"
    assert binary == b"\x00\x01\x02\xff" * 1000
    assert big == "x" * 100_000
    assert headers["Upgrade"].lower() == "websocket"
    assert code == 1000
    assert_serves(gw)


def test_upgrade_refused_is_relayed_and_closed(gw: GatewayProcess) -> None:
    # No Sec-WebSocket-Key: the emulator answers 400 instead of 101.
    with RawClient(gw.port) as c:
        c.send(get("/_emulator/ws", extra="Connection: Upgrade\r\nUpgrade: websocket\r\n"
                                          "Sec-WebSocket-Version: 13\r\n"))
        r = c.response()
        assert r.status == 400
        assert r.header("x-iris-id") == "A"
        assert r.header("connection") == "close"
        assert c.closed()
    # An upgrade to a resource that answers as plain HTTP: relayed, then closed.
    with RawClient(gw.port) as c:
        c.send(get("/_emulator/echo?up=1", extra="Connection: Upgrade\r\nUpgrade: websocket\r\n"
                                                 "Sec-WebSocket-Version: 13\r\n"
                                                 "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"))
        r = c.response()
        assert r.status == 200 and r.json()["path"] == "/_emulator/echo?up=1"
        assert r.header("connection") == "close"
        assert c.closed()


# -- router, end to end ------------------------------------------------------------------------


def test_host_route(gw: GatewayProcess) -> None:
    with RawClient(gw.port) as c:
        c.send(get("/route/", host="example.test"))
        r = c.response()
        assert r.status == 200 and r.json()["path"] == "/_emulator/echo/host/route/"
        c.send(get("/route/", host="EXAMPLE.test:8000"))
        assert c.response().json()["path"] == "/_emulator/echo/host/route/"
        c.send(get("/route/", host="other.test"))
        assert_kong_error(c.response(), 404, "no Route matched with those values")


def test_method_route(gw: GatewayProcess) -> None:
    with RawClient(gw.port) as c:
        c.send(b"POST /onlypost HTTP/1.1\r\nHost: gw.test\r\nContent-Length: 2\r\n\r\nok")
        r = c.response()
        assert r.status == 200 and r.json()["method"] == "POST"
        c.send(get("/onlypost"))  # Kong: a method mismatch is "no route", not 405
        assert_kong_error(c.response(), 404, "no Route matched with those values")


def test_header_route(gw: GatewayProcess) -> None:
    with RawClient(gw.port) as c:
        c.send(get("/hdr/x", extra="X-Version: v2\r\n"))
        r = c.response()
        assert r.status == 200 and r.json()["path"] == "/_emulator/echo/x"
        c.send(get("/hdr/x", extra="X-Version: V2\r\n"))  # values compare case-insensitively
        assert c.response().status == 200
        c.send(get("/hdr/x", extra="X-Version: v3\r\n"))
        assert_kong_error(c.response(), 404, "no Route matched with those values")
        c.send(get("/hdr/x"))
        assert_kong_error(c.response(), 404, "no Route matched with those values")


def test_regex_route(gw: GatewayProcess) -> None:
    with RawClient(gw.port) as c:
        c.send(get("/api/v12/things?a=1"))
        r = c.response()
        assert r.status == 200 and r.json()["path"] == "/_emulator/echo/api/v12/things?a=1"
        c.send(get("/api/vx/things"))
        assert_kong_error(c.response(), 404, "no Route matched with those values")
        c.send(get("/x/api/v1/"))  # anchored at the start of the path
        assert_kong_error(c.response(), 404, "no Route matched with those values")


# -- more framing edge cases -------------------------------------------------------------------


def test_pipelined_mixed_outcomes_stay_in_order(gw: GatewayProcess) -> None:
    """Gateway-made answers (404, 502) and relayed ones leave in request order."""
    with RawClient(gw.port) as c:
        c.send(get("/_emulator/delay/50?i=0") + get("/nothing?i=1") + get("/dead?i=2")
               + b"HEAD /_emulator/bytes?n=100 HTTP/1.1\r\nHost: gw.test\r\n\r\n"
               + get("/_emulator/status/204") + get("/_emulator/chunked?n=5000&size=999")
               + get("/_emulator/echo?i=6"))
        assert c.response().json()["delay_ms"] == 50
        assert_kong_error(c.response(), 404, "no Route matched with those values")
        assert c.response().status == 502
        r = c.response("HEAD")
        assert r.status == 200 and r.header("content-length") == "100"
        assert c.response().status == 204
        assert c.response().body == pattern(5000)
        assert c.response().json()["path"] == "/_emulator/echo?i=6"
        assert c.silent()


def test_many_pipelined_requests(gw: GatewayProcess) -> None:
    """More requests than the pipeline queue holds: reading pauses, nothing is lost."""
    n = 60
    with RawClient(gw.port) as c:
        c.send(b"".join(get(f"/_emulator/echo?n={i}") for i in range(n)))
        for i in range(n):
            assert c.response().json()["path"] == f"/_emulator/echo?n={i}"


def test_pipelined_large_bodies_behind_slow_request(gw: GatewayProcess) -> None:
    big = 300_000
    with RawClient(gw.port) as c:
        c.send(get("/_emulator/delay/200")
               + b"POST /_emulator/sink?a HTTP/1.1\r\nHost: gw.test\r\nContent-Length: %d\r\n\r\n"
               % big + b"a" * big
               + b"POST /_emulator/sink?b HTTP/1.1\r\nHost: gw.test\r\n"
                 b"Transfer-Encoding: chunked\r\n\r\n" + b"%x\r\n" % big + b"b" * big
               + b"\r\n0\r\n\r\n" + get("/_emulator/echo?last"))
        assert c.response().json()["delay_ms"] == 200
        assert c.response().json() == {"received": big}
        assert c.response().json() == {"received": big}
        assert c.response().json()["path"] == "/_emulator/echo?last"


def test_request_after_connection_close_is_not_answered(gw: GatewayProcess) -> None:
    with RawClient(gw.port) as c:
        c.send(get("/_emulator/echo?i=1", extra="Connection: close\r\n")
               + get("/_emulator/echo?i=2"))
        r = c.response()
        assert r.json()["path"] == "/_emulator/echo?i=1"
        assert r.header("connection") == "close"
        assert c.closed()


def test_body_of_unrouted_request_is_skipped(gw: GatewayProcess) -> None:
    with RawClient(gw.port) as c:
        c.send(b"POST /nothing HTTP/1.1\r\nHost: gw.test\r\nContent-Length: 5\r\n\r\nhello"
               + b"POST /nothing HTTP/1.1\r\nHost: gw.test\r\nTransfer-Encoding: chunked\r\n\r\n"
                 b"3\r\nabc\r\n0\r\n\r\n" + get("/_emulator/echo?after=skip"))
        assert c.response().status == 404
        assert c.response().status == 404
        assert c.response().json()["path"] == "/_emulator/echo?after=skip"


def test_chunked_request_extensions_trailers_fragmented(gw: GatewayProcess) -> None:
    data = (b"POST /_emulator/echo?ext=1 HTTP/1.1\r\nHost: gw.test\r\nTransfer-Encoding: chunked"
            b"\r\n\r\n5;name=value\r\nhello\r\n1\r\n \r\n5\r\nworld\r\n0\r\nX-Trailer: t\r\n\r\n")
    with RawClient(gw.port) as c:
        for i in range(0, len(data), 4):
            c.send(data[i:i + 4])
            time.sleep(0.002)
        r = c.response()
        assert r.json()["body"] == "hello world"
        assert r.json()["body_length"] == 11
        c.send(get("/_emulator/echo?after=ext"))
        assert c.response().json()["path"] == "/_emulator/echo?after=ext"


def test_expect_100_continue_unrouted(gw: GatewayProcess) -> None:
    """No route: the final status comes at once, without a 100, and the body is not awaited."""
    with RawClient(gw.port) as c:
        c.send(b"POST /nothing HTTP/1.1\r\nHost: gw.test\r\nExpect: 100-continue\r\n"
               b"Content-Length: 100000\r\n\r\n")
        r = c.response()
        assert_kong_error(r, 404, "no Route matched with those values")
        assert r.header("connection") == "close"
        assert c.closed()


def test_upstream_connections_are_reused(gw: GatewayProcess, iris: IrisProcess) -> None:
    def accepted() -> int:
        return requests.get(iris.url + "/_emulator/stats", timeout=T).json()[
            "connections_accepted"]

    requests.get(gw.url + "/_emulator/echo?warm", timeout=T)
    before = accepted()
    with RawClient(gw.port) as c:
        for i in range(10):
            c.send(get(f"/_emulator/echo?seq={i}"))
            assert c.response().status == 200
            c.send(b"HEAD /_emulator/bytes?n=10 HTTP/1.1\r\nHost: gw.test\r\n\r\n")
            assert c.response("HEAD").status == 200
            c.send(get("/_emulator/status/304"))
            assert c.response().status == 304
            c.send(get("/_emulator/chunked?n=3000&size=1000"))
            assert len(c.response().body) == 3000
    assert accepted() - before <= 1


def test_duplicate_host_header_rejected(gw: GatewayProcess) -> None:
    with RawClient(gw.port) as c:
        c.send(b"GET /_emulator/echo HTTP/1.1\r\nHost: a.test\r\nHost: example.test\r\n\r\n")
        r = c.response()
        assert_kong_error(r, 400, "Bad request")
        assert c.closed()


@pytest.mark.parametrize("head", [
    b"POST /_emulator/sink HTTP/1.1\r\nHost: gw.test\r\nContent-Length: 3\r\n"
    b"Content-Length: 4\r\n\r\nabcd",
    b"POST /_emulator/sink HTTP/1.1\r\nHost: gw.test\r\nContent-Length: abc\r\n\r\n",
    b"POST /_emulator/sink HTTP/1.1\r\nHost: gw.test\r\nContent-Length: -1\r\n\r\n",
    b"GET /a b HTTP/1.1\r\nHost: gw.test\r\n\r\n",
    b"GET /_emulator/echo HTTP/1.1\r\nHost: gw.test\r\nX-A: a\r\n folded\r\n\r\n",
], ids=["two_cl", "cl_text", "cl_negative", "space_in_url", "obs_fold"])
def test_more_malformed(gw: GatewayProcess, head: bytes) -> None:
    with RawClient(gw.port) as c:
        c.send(head)
        assert_kong_error(c.response(), 400, "Bad request")
        assert c.closed()
    assert_serves(gw)


def test_client_gone_mid_request_and_mid_response(gw: GatewayProcess) -> None:
    with RawClient(gw.port) as c:
        c.send(get("/_emulator/delay/300"))
    with RawClient(gw.port) as c:
        c.send(get("/_emulator/bytes?n=50000000"))
        c.sock.recv(1000)
    with RawClient(gw.port) as c:
        c.send(b"POST /_emulator/sink HTTP/1.1\r\nHost: gw.test\r\nContent-Length: 1000000\r\n"
               b"\r\n" + b"x" * 1000)
    time.sleep(0.5)
    assert_serves(gw)


def test_slow_reader_gets_every_byte(gw: GatewayProcess) -> None:
    n = 8 * 1024 * 1024
    with RawClient(gw.port) as c:
        c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
        c.send(get(f"/_emulator/bytes?n={n}"))
        time.sleep(0.5)  # let every buffer on the way fill up
        r = c.response()
        assert r.framing == "length" and len(r.body) == n and r.body == pattern(n)
        c.send(get("/_emulator/echo?after=slow"))
        assert c.response().json()["path"] == "/_emulator/echo?after=slow"


def _rss(pid: int) -> int:
    """Resident bytes of a process and its children (the supervisor and its workers)."""
    total = 0
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                total += int(line.split()[1]) * 1024
    children = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True,
                              timeout=5).stdout.split()
    return total + sum(_rss(int(child)) for child in children)


def test_pipelined_response_to_slow_reader_is_not_buffered(gw: GatewayProcess) -> None:
    """Back-pressure holds across responses: when a response ends while the client's socket
    is full, the *next* pipelined response must not be read from its backend unthrottled."""
    small, big = 200_000, 96 * 1024 * 1024
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connect: tiny window
    sock.settimeout(T)
    sock.connect(("127.0.0.1", gw.port))
    c = RawClient.__new__(RawClient)
    c.sock, c.buf = sock, b""
    with c:
        before = _rss(gw.pid)
        c.send(get(f"/_emulator/bytes?n={small}") + get(f"/_emulator/bytes?n={big}"))
        time.sleep(1.5)
        grown = _rss(gw.pid) - before
        assert grown < 40 * 1024 * 1024, f"gateway grew by {grown >> 20} MiB"
        assert len(c.response().body) == small
        head = c._until(b"\r\n\r\n")
        assert b"Content-Length: %d\r\n" % big in head
        left = big - len(c.buf)
        c.buf = b""
        while left > 0:
            data = c.sock.recv(1 << 20)
            assert data, "EOF inside the body"
            left -= len(data)
        assert left == 0
