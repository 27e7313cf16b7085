"""Tests for the IRIS Atelier emulator (tests/support/iris.py), over real sockets against subprocesses."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import socket
import time
from collections.abc import Iterator

import pytest
import requests

from tests.support.iris import start_iris
from tests.support.procs import IrisProcess

pytestmark = pytest.mark.timeout(60)

T = 10.0  # per-socket-operation bound


@pytest.fixture(scope="module")
def iris() -> Iterator[IrisProcess]:
    with IrisProcess("A") as proc:
        yield proc


@pytest.fixture(scope="module")
def iris_auth() -> Iterator[IrisProcess]:
    with IrisProcess("B", user="_SYSTEM", password="SYS") as proc:
        yield proc


# -- raw HTTP/1.1 helpers -----------------------------------------------------------------------
def connect(p: IrisProcess) -> socket.socket:
    s = socket.create_connection((p.host, p.port), timeout=T)
    s.settimeout(T)
    return s


class Reader:
    """Reads Content-Length framed responses from a socket (enough for these tests)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = b""

    def _fill(self) -> bool:
        data = self.sock.recv(1 << 20)
        self.buf += data
        return bool(data)

    def response(self, head_request: bool = False) -> tuple[int, dict[str, str], bytes]:
        while b"\r\n\r\n" not in self.buf:
            if not self._fill():
                raise ConnectionError(f"EOF before headers, got {self.buf!r}")
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {}
        for line in lines[1:]:
            k, _, v = line.partition(":")
            headers[k.strip().lower()] = v.strip()
        n = 0 if head_request or status in (204, 304) else int(headers.get("content-length", 0))
        while len(self.buf) < n:
            if not self._fill():
                raise ConnectionError("EOF in body")
        body, self.buf = self.buf[:n], self.buf[n:]
        return status, headers, body

    def at_eof(self) -> bool:
        if self.buf:
            return False
        return not self._fill()


def req(path: str, method: str = "GET", extra: str = "", body: bytes = b"") -> bytes:
    cl = f"Content-Length: {len(body)}\r\n" if body else ""
    return f"{method} {path} HTTP/1.1\r\nHost: iris\r\n{extra}{cl}\r\n".encode() + body


# -- Atelier API -------------------------------------------------------------------------------
def test_getserver_shape(iris: IrisProcess) -> None:
    r = requests.get(iris.url + "/api/atelier/", timeout=T)
    assert r.status_code == 200
    assert r.headers["Content-Type"] == "application/json; charset=utf-8"
    assert r.headers["X-Iris-Id"] == "A"
    assert "CSPSESSIONID" in r.headers["Set-Cookie"] and "path=/api/atelier/" in r.headers[
        "Set-Cookie"]
    doc = r.json()
    assert doc["status"] == {"errors": [], "summary": ""} and doc["console"] == []
    content = doc["result"]["content"]
    assert content["id"] == "A" and content["api"] == 8
    assert content["version"].startswith("IRIS") and "A" in content["version"]
    assert content["namespaces"] == ["%SYS", "USER"]
    assert {f["name"] for f in content["features"]} >= {"DEEPSEE", "ENSEMBLE"}


def test_distinct_versions_per_instance(iris: IrisProcess) -> None:
    with IrisProcess("Z9", version="IRIS for UNIX 2024.1 (Build 267U) {id}") as other:
        a = requests.get(iris.url + "/api/atelier/", timeout=T).json()["result"]["content"]
        z = requests.get(other.url + "/api/atelier/", timeout=T).json()["result"]["content"]
    assert z["version"] == "IRIS for UNIX 2024.1 (Build 267U) Z9" and z["id"] == "Z9"
    assert a["version"] != z["version"]


def test_head_has_length_and_no_body(iris: IrisProcess) -> None:
    with connect(iris) as s:
        rd = Reader(s)
        s.sendall(req("/api/atelier/", "HEAD") + req("/api/atelier/"))
        st, h, body = rd.response(head_request=True)
        assert st == 200 and body == b"" and int(h["content-length"]) > 100
        # The next response starts right away: no body bytes leaked after the HEAD headers.
        st2, h2, body2 = rd.response()
        assert st2 == 200 and len(body2) == int(h["content-length"])


def test_namespace_docnames_jobs_query(iris: IrisProcess) -> None:
    ns = requests.get(iris.url + "/api/atelier/v1/%25SYS", timeout=T)
    assert ns.status_code == 200 and ns.json()["result"]["content"]["name"] == "%SYS"
    bad = requests.get(iris.url + "/api/atelier/v1/NOPE", timeout=T)
    assert bad.status_code == 404 and "NOPE" in bad.json()["status"]["summary"]
    names = requests.get(iris.url + "/api/atelier/v1/USER/docnames/RTN/mac", timeout=T).json()
    assert [d["name"] for d in names["result"]["content"]] == ["xyz.mac"]
    every = requests.get(iris.url + "/api/atelier/v1/USER/docnames", timeout=T).json()
    assert {"User.Person.cls", "xyz.mac"} <= {d["name"] for d in every["result"]["content"]}
    jobs = requests.get(iris.url + "/api/atelier/v1/%25SYS/jobs", timeout=T).json()
    assert {"pid", "namespace", "routine", "state", "device"} <= set(jobs["result"]["content"][0])
    q = requests.post(iris.url + "/api/atelier/v1/USER/action/query", timeout=T,
                      json={"query": "SELECT 1", "parameters": [7]})
    assert q.status_code == 200
    assert q.json()["result"]["content"] == [{"query": "SELECT 1", "parameters": [7]}]


def test_doc_put_get_etag_delete(iris: IrisProcess) -> None:
    url = iris.url + "/api/atelier/v1/USER/doc/Test.Demo.cls"
    assert requests.get(url, timeout=T).status_code == 404
    body = {"enc": False, "content": ["Class Test.Demo", "{", "}"]}
    created = requests.put(url, json=body, timeout=T)
    assert created.status_code == 201
    got = requests.get(url, timeout=T)
    assert got.status_code == 200
    result = got.json()["result"]  # the document itself, not result.content
    assert result["name"] == "Test.Demo.cls" and result["cat"] == "CLS"
    assert result["content"] == body["content"]
    etag = got.headers["ETag"]
    nm = requests.get(url, headers={"If-None-Match": etag}, timeout=T)
    assert nm.status_code == 304 and nm.content == b""
    body["content"].append("// changed")
    assert requests.put(url, json=body, timeout=T).status_code == 200
    assert requests.get(url, headers={"If-None-Match": etag}, timeout=T).status_code == 200
    assert requests.delete(url, timeout=T).status_code == 200
    missing = requests.get(url, timeout=T)
    assert missing.status_code == 404 and missing.json()["status"]["errors"]


def test_basic_auth(iris_auth: IrisProcess) -> None:
    url = iris_auth.url + "/api/atelier/"
    r = requests.get(url, timeout=T)
    assert r.status_code == 401 and r.headers["WWW-Authenticate"] == 'Basic realm="IRIS"'
    assert requests.get(url, auth=("_SYSTEM", "wrong"), timeout=T).status_code == 401
    ok = requests.get(url, auth=("_SYSTEM", "SYS"), timeout=T)
    assert ok.status_code == 200 and ok.json()["result"]["content"]["id"] == "B"
    # Test helpers are exempt from auth.
    assert requests.get(iris_auth.url + "/_emulator/stats", timeout=T).status_code == 200


def test_error_rate_one_gives_fail_status() -> None:
    with IrisProcess("E", error_rate=1.0, fail_status=503) as p:
        for _ in range(3):
            r = requests.get(p.url + "/api/atelier/", timeout=T)
            assert r.status_code == 503 and r.json()["status"]["summary"]
        assert requests.get(p.url + "/_emulator/stats", timeout=T).status_code == 200


def test_latency_injection() -> None:
    with IrisProcess("L", latency_ms=150) as p:
        t0 = time.monotonic()
        assert requests.get(p.url + "/api/atelier/", timeout=T).status_code == 200
        assert time.monotonic() - t0 >= 0.14


# -- HTTP/1.1 mechanics -----------------------------------------------------------------------
def test_keepalive_two_requests_one_socket(iris: IrisProcess) -> None:
    with connect(iris) as s:
        rd = Reader(s)
        for _ in range(2):
            s.sendall(req("/api/atelier/"))
            st, h, body = rd.response()
            assert st == 200 and json.loads(body)["result"]["content"]["id"] == "A"
            assert h["connection"] == "keep-alive"


def test_pipelining_in_order_even_when_first_is_delayed(iris: IrisProcess) -> None:
    with connect(iris) as s:
        rd = Reader(s)
        s.sendall(req("/_emulator/delay/200") + req("/api/atelier/") + req("/_emulator/status/204")
                  + req("/_emulator/echo?n=4"))
        st1, _, b1 = rd.response()
        assert st1 == 200 and json.loads(b1)["delay_ms"] == 200
        st2, _, b2 = rd.response()
        assert st2 == 200 and json.loads(b2)["result"]["content"]["id"] == "A"
        st3, _, b3 = rd.response()
        assert st3 == 204 and b3 == b""
        st4, _, b4 = rd.response()
        assert st4 == 200 and json.loads(b4)["path"] == "/_emulator/echo?n=4"


def test_connection_close_honoured(iris: IrisProcess) -> None:
    with connect(iris) as s:
        rd = Reader(s)
        s.sendall(req("/api/atelier/", extra="Connection: close\r\n") + req("/api/atelier/"))
        st, h, _ = rd.response()
        assert st == 200 and h["connection"] == "close"
        assert rd.at_eof()  # the pipelined second request is not answered


def test_http10_without_keepalive_closes(iris: IrisProcess) -> None:
    with connect(iris) as s:
        rd = Reader(s)
        s.sendall(b"GET /api/atelier/ HTTP/1.0\r\n\r\n")
        st, h, body = rd.response()
        assert st == 200 and body and h["connection"] == "close"
        assert rd.at_eof()


def test_malformed_request_400_and_server_survives(iris: IrisProcess) -> None:
    for junk in (b"\x00\x01garbage\r\n\r\n", b"GET / HTTP/1.1\r\nBad Header\r\n\r\n",
                 b"POST /_emulator/sink HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"):
        with connect(iris) as s:
            rd = Reader(s)
            s.sendall(junk)
            st, h, _ = rd.response()
            assert st == 400 and h["connection"] == "close"
            assert rd.at_eof()
    assert requests.get(iris.url + "/api/atelier/", timeout=T).status_code == 200


def test_oversized_url_and_headers(iris: IrisProcess) -> None:
    with connect(iris) as s:
        s.sendall(req("/" + "a" * 10_000))
        assert Reader(s).response()[0] == 414
    with connect(iris) as s:
        s.sendall(req("/api/atelier/", extra="".join(f"X-H{i}: {'v' * 1000}\r\n"
                                                     for i in range(80))))
        assert Reader(s).response()[0] == 431


def test_echo_reports_forwarded_request(iris: IrisProcess) -> None:
    r = requests.post(iris.url + "/_emulator/echo?a=1&b=%25", data=b"payload", timeout=T,
                      headers={"X-Test": "yes"})
    doc = r.json()
    assert doc["method"] == "POST" and doc["path"] == "/_emulator/echo?a=1&b=%25"
    assert ["X-Test", "yes"] in doc["headers"]
    assert doc["body_length"] == 7 and doc["body"] == "payload"


# -- streaming helpers ---------------------------------------------------------------------------
def test_bytes_streams_10mib(iris: IrisProcess) -> None:
    n = 10 * 1024 * 1024
    r = requests.get(iris.url + f"/_emulator/bytes?n={n}", stream=True, timeout=T)
    assert r.status_code == 200 and int(r.headers["Content-Length"]) == n
    digest = hashlib.sha256()
    total = 0
    for chunk in r.iter_content(1 << 20):
        digest.update(chunk)
        total += len(chunk)
    assert total == n
    pattern = bytes(range(256)) * 4096  # 1 MiB of the documented i % 256 pattern
    assert digest.hexdigest() == hashlib.sha256(pattern * 10).hexdigest()


def test_bytes_head_and_odd_size(iris: IrisProcess) -> None:
    with connect(iris) as s:
        rd = Reader(s)
        s.sendall(req("/_emulator/bytes?n=70000", "HEAD") + req("/_emulator/bytes?n=70001"))
        st, h, body = rd.response(head_request=True)
        assert st == 200 and h["content-length"] == "70000" and body == b""
        st, h, body = rd.response()
        assert len(body) == 70001 and body[65536:65540] == bytes([0, 1, 2, 3])


def test_sink_chunked_body(iris: IrisProcess) -> None:
    chunks = [b"x" * 100_000, b"y" * 3, b"z" * 65_536]
    payload = b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in chunks) + b"0\r\n\r\n"
    with connect(iris) as s:
        rd = Reader(s)
        s.sendall(b"POST /_emulator/sink HTTP/1.1\r\nHost: iris\r\n"
                  b"Transfer-Encoding: chunked\r\n\r\n" + payload + req("/api/atelier/"))
        st, _, body = rd.response()
        assert st == 200 and json.loads(body) == {"received": sum(map(len, chunks))}
        assert rd.response()[0] == 200  # keep-alive survives a chunked body


def test_sink_large_content_length(iris: IrisProcess) -> None:
    total = 64 << 20
    block = b"\xab" * (1 << 20)
    with connect(iris) as s:
        s.sendall(f"POST /_emulator/sink HTTP/1.1\r\nHost: iris\r\n"
                  f"Content-Length: {total}\r\n\r\n".encode())
        for _ in range(total // len(block)):
            s.sendall(block)
        st, _, body = Reader(s).response()
    assert st == 200 and json.loads(body) == {"received": total}


def test_expect_100_continue(iris: IrisProcess) -> None:
    with connect(iris) as s:
        rd = Reader(s)
        s.sendall(b"POST /_emulator/sink HTTP/1.1\r\nHost: iris\r\nContent-Length: 5\r\n"
                  b"Expect: 100-continue\r\n\r\n")
        assert rd.response(head_request=True)[0] == 100
        s.sendall(b"abcde")
        st, _, body = rd.response()
        assert st == 200 and json.loads(body) == {"received": 5}


def test_both_content_length_and_chunked_rejected(iris: IrisProcess) -> None:
    # Request smuggling vector: the parser must refuse rather than pick one framing.
    with connect(iris) as s:
        s.sendall(b"POST /_emulator/sink HTTP/1.1\r\nHost: iris\r\nContent-Length: 3\r\n"
                  b"Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n")
        assert Reader(s).response()[0] == 400


def test_status_endpoint(iris: IrisProcess) -> None:
    for code in (200, 404, 503):
        assert requests.get(iris.url + f"/_emulator/status/{code}", timeout=T).status_code == code
    with connect(iris) as s:
        rd = Reader(s)
        s.sendall(req("/_emulator/status/304") + req("/_emulator/status/418"))
        assert rd.response()[:3:2] == (304, b"")
        assert rd.response()[0] == 418


# -- WebSocket -------------------------------------------------------------------------------------
def test_websocket_echo(iris: IrisProcess) -> None:
    from websockets.sync.client import connect as ws_connect

    uri = f"ws://{iris.host}:{iris.port}/_emulator/ws"
    with ws_connect(uri, open_timeout=T, close_timeout=T, compression=None) as ws:
        ws.send("héllo")
        assert ws.recv(timeout=T) == "héllo"
        blob = bytes(range(256)) * 300  # > 64 KiB: 8-byte extended length
        ws.send(blob)
        assert ws.recv(timeout=T) == blob
        ws.send([b"frag", b"mented"])  # fragmented message -> one echoed message
        assert ws.recv(timeout=T) == b"fragmented"
        ws.ping(b"p").wait(T)


def test_websocket_handshake_accept_value(iris: IrisProcess) -> None:
    key = base64.b64encode(b"0123456789abcdef").decode()
    with connect(iris) as s:
        s.sendall(req("/_emulator/ws", extra=f"Connection: Upgrade\r\nUpgrade: websocket\r\n"
                                             f"Sec-WebSocket-Key: {key}\r\n"
                                             f"Sec-WebSocket-Version: 13\r\n"))
        st, h, _ = Reader(s).response(head_request=True)
    expect = base64.b64encode(hashlib.sha1(
        key.encode() + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest()).decode()
    assert st == 101 and h["sec-websocket-accept"] == expect
    assert requests.get(iris.url + "/_emulator/ws", timeout=T).status_code == 426


def _ws_open(iris: IrisProcess) -> tuple[socket.socket, Reader]:
    s = connect(iris)
    key = base64.b64encode(b"fedcba9876543210").decode()
    s.sendall(req("/_emulator/ws", extra=f"Connection: keep-alive, Upgrade\r\n"
                                         f"Upgrade: websocket\r\nSec-WebSocket-Key: {key}\r\n"
                                         f"Sec-WebSocket-Version: 13\r\n"))
    rd = Reader(s)
    assert rd.response(head_request=True)[0] == 101
    return s, rd


def _read_frame(rd: Reader) -> tuple[int, bytes]:
    while len(rd.buf) < 2:
        assert rd._fill()
    n = rd.buf[1] & 0x7F
    assert n < 126 and not rd.buf[1] & 0x80  # small test frames, unmasked from the server
    while len(rd.buf) < 2 + n:
        assert rd._fill()
    op, payload = rd.buf[0] & 0x0F, rd.buf[2:2 + n]
    rd.buf = rd.buf[2 + n:]
    return op, payload


def test_websocket_raw_ping_close_and_unmasked_rejected(iris: IrisProcess) -> None:
    mask = b"\x01\x02\x03\x04"

    def masked(op: int, payload: bytes) -> bytes:
        body = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        return bytes((0x80 | op, 0x80 | len(payload))) + mask + body

    s, rd = _ws_open(iris)
    with s:
        s.sendall(masked(0x9, b"hi") + masked(0x1, b"text") + masked(0x8, b"\x03\xe8bye"))
        assert _read_frame(rd) == (0xA, b"hi")
        assert _read_frame(rd) == (0x1, b"text")
        assert _read_frame(rd) == (0x8, b"\x03\xe8")  # close code 1000 echoed
        assert rd.at_eof()
    s, rd = _ws_open(iris)
    with s:
        s.sendall(bytes((0x81, 2)) + b"no")  # unmasked client frame: protocol error
        op, payload = _read_frame(rd)
        assert op == 0x8 and payload[:2] == (1002).to_bytes(2, "big")
        assert rd.at_eof()


def test_non_websocket_upgrade_answered_then_closed(iris: IrisProcess) -> None:
    with connect(iris) as s:
        rd = Reader(s)
        s.sendall(req("/api/atelier/", extra="Connection: Upgrade\r\nUpgrade: h2c\r\n"))
        st, h, body = rd.response()
        assert st == 200 and h["connection"] == "close" and body
        assert rd.at_eof()


# -- stats and in-process API ----------------------------------------------------------------------
def test_stats_count_accepted_connections(iris: IrisProcess) -> None:
    def stats() -> dict[str, int]:
        with requests.Session() as sess:
            return sess.get(iris.url + "/_emulator/stats", timeout=T).json()

    before = stats()
    with requests.Session() as sess:  # one pooled connection for 5 requests
        for _ in range(5):
            assert sess.get(iris.url + "/api/atelier/", timeout=T).status_code == 200
    for _ in range(3):  # three fresh connections
        with connect(iris) as s:
            s.sendall(req("/api/atelier/"))
            Reader(s).response()
    after = stats()
    assert after["id"] == "A"
    # +1 pooled session, +3 raw sockets, +1 for the second stats() call itself.
    assert after["connections_accepted"] - before["connections_accepted"] == 5
    assert after["requests"] - before["requests"] == 5 + 3 + 1


def test_in_process_start_iris() -> None:
    async def scenario() -> None:
        server = await start_iris(id="P", user="u", password="p")
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            auth = base64.b64encode(b"u:p").decode()
            writer.write(req("/api/atelier/", extra=f"Authorization: Basic {auth}\r\n"))
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), T)
            assert head.startswith(b"HTTP/1.1 200 ") and b"X-Iris-Id: P" in head
            writer.close()
            assert server.stats.connections_accepted == 1 and server.stats.requests == 1
        finally:
            await server.close()

    asyncio.run(asyncio.wait_for(scenario(), 20))


def test_sigterm_exits_zero() -> None:
    p = IrisProcess("S").start()
    try:
        assert p.proc is not None
        p.proc.terminate()
        assert p.proc.wait(5) == 0
    finally:
        p.stop()
