"""Plugin phases on the exchange, byte for byte, through recording transports: what a
plugin answers itself, what it changes upstream (through the head builder), what it
adds to the response, the consumer chain after authentication, body plugins, the log
phase."""

from __future__ import annotations

import base64
import time
from pathlib import Path
from typing import Any, Iterator

import orjson
import pytest

from tests.support.transport import ProtocolHarness, atelier_config

BODY = b'{"id":"A"}'
RESPONSE = (b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nX-Iris-Id: A\r\n"
            b"Access-Control-Allow-Origin: http://backend\r\n\r\n%s" % (len(BODY), BODY))
CONSUMERS = [
    {"username": "alice", "custom_id": "A-1", "keyauth_credentials": [{"key": "alice-key"}],
     "basicauth_credentials": [{"username": "alice", "password": "pw"}],
     "acls": [{"group": "gold"}]},
    {"username": "bob", "keyauth_credentials": [{"key": "bob-key", "ttl": 1,
                                                 "created_at": 1}]},
    {"username": "carol", "keyauth_credentials": [{"key": "carol-key"}]},
]


def harness(*plugins: dict[str, Any], route: dict[str, Any] | None = None,
            **extra: Any) -> ProtocolHarness:
    document = atelier_config(route={**(route or {}), "plugins": list(plugins)})
    document["consumers"] = CONSUMERS
    document.update(extra)
    return ProtocolHarness(document)


def get(fields: bytes = b"", target: bytes = b"/api/atelier/", method: bytes = b"GET") -> bytes:
    return method + b" " + target + b" HTTP/1.1\r\nHost: gw.test\r\n" + fields + b"\r\n"


@pytest.fixture
def cleanup() -> Iterator[list[ProtocolHarness]]:
    made: list[ProtocolHarness] = []
    yield made
    for h in made:
        h.close()


def run(made: list[ProtocolHarness], h: ProtocolHarness, request: bytes,
        reply: bytes | None = RESPONSE) -> tuple[bytes, bytes]:
    """(what went upstream, what the client got)."""
    made.append(h)
    h.send(request)
    up = h.upstream_bytes()
    if up and reply is not None:
        h.reply(reply)
    return up, h.client_bytes()


def test_key_auth_answers_401_and_sets_consumer_fields(cleanup: list[ProtocolHarness]) -> None:
    h = harness({"name": "key-auth", "config": {"hide_credentials": True}})
    up, out = run(cleanup, h, get())
    assert up == b"" and out.startswith(b"HTTP/1.1 401 Unauthorized\r\n")
    assert b'WWW-Authenticate: Key realm="kong"\r\n' in out
    assert b'"message":"No API key found in request"' in out
    up, out = run(cleanup, h, get(b"apikey: alice-key\r\nX-Consumer-ID: forged\r\n"))
    assert b"X-Consumer-Username: alice\r\n" in up and b"X-Consumer-Custom-ID: A-1\r\n" in up
    assert b"forged" not in up and b"apikey" not in up.lower()
    assert out.startswith(b"HTTP/1.1 200 OK")
    _, out = run(cleanup, h, get(b"apikey: bob-key\r\n"))  # expired (ttl)
    assert b'"message":"Invalid authentication credentials"' in out
    _, out = run(cleanup, h, get(b"apikey: a\r\napikey: b\r\n"))
    assert b'"message":"Duplicate API key found"' in out
    up, _ = run(cleanup, h, get(target=b"/api/atelier/?apikey=carol-key&x=1"))
    assert up.startswith(b"GET /api/atelier/?x=1 HTTP/1.1\r\n")


def test_key_auth_in_body_reads_the_buffered_body(cleanup: list[ProtocolHarness]) -> None:
    h = harness({"name": "key-auth", "config": {"key_in_body": True, "hide_credentials": True}})
    body = b'{"apikey": "alice-key", "n": 1}'
    up, _ = run(cleanup, h, get(b"Content-Type: application/json\r\nContent-Length: %d\r\n"
                                % len(body), method=b"POST") + body)
    assert b"X-Consumer-Username: alice\r\n" in up and up.endswith(b'{"n":1}')
    assert b"Content-Length: 7\r\n" in up


def test_basic_auth_and_anonymous(cleanup: list[ProtocolHarness]) -> None:
    h = harness({"name": "basic-auth", "config": {"anonymous": "carol"}})
    auth = base64.b64encode(b"alice:pw")
    up, _ = run(cleanup, h, get(b"Authorization: Basic " + auth + b"\r\n"))
    assert b"X-Credential-Identifier: alice\r\n" in up
    up, _ = run(cleanup, h, get(b"Authorization: Basic " + base64.b64encode(b"alice:no")
                                + b"\r\n"))
    assert b"X-Anonymous-Consumer: true\r\n" in up and b"X-Consumer-Username: carol\r\n" in up


def test_acl_after_auth_and_the_consumer_chain(cleanup: list[ProtocolHarness]) -> None:
    h = harness({"name": "key-auth"}, {"name": "acl", "config": {"allow": ["gold"]}},
                plugins=[{"name": "request-transformer", "consumer": "alice",
                          "config": {"add": {"headers": ["X-Alice:1"]}}}])
    up, _ = run(cleanup, h, get(b"apikey: alice-key\r\n"))
    assert b"X-Consumer-Groups: gold\r\n" in up and b"X-Alice: 1\r\n" in up
    up, out = run(cleanup, h, get(b"apikey: carol-key\r\n"))
    assert up == b"" and b'"message":"You cannot consume this service"' in out


def test_rate_limiting_fields_and_429(cleanup: list[ProtocolHarness]) -> None:
    h = harness({"name": "rate-limiting", "config": {"hour": 2, "minute": 2,
                                                     "limit_by": "ip"}})
    _, first = run(cleanup, h, get())
    assert b"X-RateLimit-Remaining-Hour: 1\r\n" in first
    assert b"X-RateLimit-Remaining-Minute: 1\r\n" in first
    run(cleanup, h, get())
    up, out = run(cleanup, h, get())
    assert up == b"" and out.startswith(b"HTTP/1.1 429 Too Many Requests\r\n")
    assert b"Retry-After: " in out and b'"message":"API rate limit exceeded"' in out


def test_ip_restriction_and_size_limit(cleanup: list[ProtocolHarness]) -> None:
    h = harness({"name": "ip-restriction", "config": {"deny": ["127.0.0.0/8"]}})
    up, out = run(cleanup, h, get())
    assert up == b"" and b'"message":"Your IP address is not allowed"' in out
    h = harness({"name": "request-size-limiting",
                 "config": {"allowed_payload_size": 10, "size_unit": "bytes"}})
    up, out = run(cleanup, h, get(b"Content-Length: 11\r\n", method=b"POST") + b"x" * 11)
    assert up == b"" and out.startswith(b"HTTP/1.1 413")
    chunked = get(b"Transfer-Encoding: chunked\r\n", method=b"POST")
    up, out = run(cleanup, h, chunked + b"5\r\nxxxxx\r\n")
    assert up == b""
    h.send(b"8\r\nxxxxxxxx\r\n0\r\n\r\n")
    assert b'"message":"Request size limit exceeded"' in h.client_bytes()


def test_cors_preflight_and_response_fields(cleanup: list[ProtocolHarness]) -> None:
    h = harness({"name": "key-auth"}, {"name": "cors", "config": {
        "origins": ["http://app.example"], "exposed_headers": ["X-Iris-Id"]}})
    up, out = run(cleanup, h, get(b"Origin: http://app.example\r\n"
                                  b"Access-Control-Request-Method: GET\r\n", method=b"OPTIONS"))
    assert up == b"" and out.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"Content-Length: 0\r\n" in out and b"Access-Control-Allow-Methods: GET," in out
    _, out = run(cleanup, h, get(b"Origin: http://app.example\r\n"))  # 401 gets CORS fields
    assert b"401" in out.split(b"\r\n")[0]
    assert b"Access-Control-Allow-Origin: http://app.example\r\n" in out
    _, out = run(cleanup, h, get(b"Origin: http://app.example\r\napikey: alice-key\r\n"))
    assert b"Access-Control-Allow-Origin: http://backend" not in out  # replaced
    assert b"Access-Control-Expose-Headers: X-Iris-Id\r\n" in out


def test_transformers_and_correlation_id(cleanup: list[ProtocolHarness]) -> None:
    h = harness({"name": "correlation-id", "config": {"echo_downstream": True,
                                                      "generator": "tracker"}},
                {"name": "request-transformer", "config": {
                    "http_method": "PUT", "replace": {"uri": "/other"},
                    "remove": {"headers": ["x-drop"], "querystring": ["q"]},
                    "append": {"body": ["tag:gw"]}}},
                {"name": "response-transformer", "config": {
                    "rename": {"headers": ["X-Iris-Id:X-Backend"]}}})
    body = b"a=1"
    up, out = run(cleanup, h, get(b"X-Drop: 1\r\nContent-Type: application/x-www-form-urlencoded"
                                  b"\r\nContent-Length: 3\r\n", b"/api/atelier/?q=1&k=2",
                                  b"POST") + body)
    assert up.startswith(b"PUT /other?k=2 HTTP/1.1\r\n") and up.endswith(b"a=1&tag=gw")
    assert b"x-drop" not in up.lower() and b"Kong-Request-ID: 127.0.0.1-" in up
    assert b"X-Backend: A\r\n" in out and b"X-Iris-Id" not in out
    assert b"Kong-Request-ID: 127.0.0.1-" in out


def test_file_log_phase(cleanup: list[ProtocolHarness], tmp_path: Path) -> None:
    path = tmp_path / "f.log"
    h = harness({"name": "key-auth"}, {"name": "file-log", "config": {"path": str(path)}})
    run(cleanup, h, get(b"apikey: alice-key\r\n"))
    h.server.plugin_runtime.close()  # flush and stop the writer
    deadline = time.monotonic() + 5
    while not path.exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    entry = orjson.loads(path.read_bytes().splitlines()[0])
    assert entry["consumer"]["username"] == "alice" and entry["response"]["status"] == 200


def test_http_log_queues_off_the_request_path(cleanup: list[ProtocolHarness]) -> None:
    h = harness({"name": "http-log", "config": {"http_endpoint": "http://127.0.0.1:9/x",
                                                "queue": {"max_entries": 2}}})
    for _ in range(3):
        run(cleanup, h, get())
    queue = next(iter(h.server.plugin_runtime.queues.values()))
    assert len(queue.entries) + queue.dropped >= 3 and queue.task is not None
    assert queue.entries[0]["request"]["uri"] == "/api/atelier/"


JSON_EDITS = {"name": "response-transformer", "config": {
    "remove": {"json": ["secret"]}, "add": {"json": ["gw:fastgw"]},
    "rename": {"headers": ["X-Iris-Id:X-Backend"]}}}
EDITED = b'{"id":"A","gw":"fastgw"}'


def _json_reply(framing: bytes, body: bytes, ctype: bytes = b"application/json") -> bytes:
    return (b"HTTP/1.1 200 OK\r\nContent-Type: " + ctype + b"\r\nX-Iris-Id: A\r\n" + framing
            + b"\r\n" + body)


@pytest.mark.parametrize("reply", [
    _json_reply(b"Content-Length: 28\r\n", b'{"id":"A","secret":"s3cr3t"}'),
    _json_reply(b"Transfer-Encoding: chunked\r\n",
                b'5\r\n{"id"\r\n17\r\n:"A","secret":"s3cr3t"}\r\n0\r\n\r\n'),
], ids=["content-length", "chunked"])
def test_json_body_rewritten_with_its_new_length(cleanup: list[ProtocolHarness],
                                                  reply: bytes) -> None:
    h = harness(JSON_EDITS)
    _, out = run(cleanup, h, get(), reply)
    head, _, body = out.partition(b"\r\n\r\n")
    assert body == EDITED
    assert b"\r\nContent-Length: %d\r\n" % len(EDITED) in head + b"\r\n"
    assert b"Transfer-Encoding" not in head and head.count(b"Content-Length") == 1
    assert b"X-Backend: A" in head
    _, again = run(cleanup, h, get(), reply)  # the connection is still usable
    assert again.endswith(EDITED)


@pytest.mark.parametrize("request_,reply,expected", [
    (get(), _json_reply(b"Content-Length: 8\r\n", b"not json"), b"not json"),
    (get(), _json_reply(b"Content-Length: 12\r\n", b'{"secret":1}', b"text/plain"),
     b'{"secret":1}'),
    (get(method=b"HEAD"), _json_reply(b"Content-Length: 12\r\n", b""), b""),
    (get(), b"HTTP/1.1 204 No Content\r\nContent-Type: application/json\r\n\r\n", b""),
], ids=["invalid-json", "not-json", "head", "204"])
def test_json_edits_leave_these_alone(cleanup: list[ProtocolHarness], request_: bytes,
                                      reply: bytes, expected: bytes) -> None:
    h = harness(JSON_EDITS)
    _, out = run(cleanup, h, request_, reply)
    head, _, body = out.partition(b"\r\n\r\n")
    assert body == expected
    if b"HEAD" in request_ or b"not json" in reply or b"text/plain" in reply:
        assert b"Content-Length: " + str(len(reply.partition(b"\r\n\r\n")[2]) or 12).encode() \
            in head


def test_json_body_over_the_bound_is_relayed_chunked_unchanged(
        cleanup: list[ProtocolHarness]) -> None:
    from fastgw.dataplane.exchange import REWRITE_LIMIT
    h = harness(JSON_EDITS)
    cleanup.append(h)
    h.send(get())
    conn = h.busy_backend()
    conn.data_received(_json_reply(b"Transfer-Encoding: chunked\r\n", b""))
    big = b"x" * (REWRITE_LIMIT // 2)
    for _ in range(3):
        conn.data_received(b"%x\r\n%s\r\n" % (len(big), big))
    conn.data_received(b"0\r\n\r\n")
    out = h.client_bytes()
    head, _, body = out.partition(b"\r\n\r\n")
    assert b"Transfer-Encoding: chunked" in head and b"Content-Length" not in head
    assert body.endswith(b"0\r\n\r\n")
    decoded = body.replace(b"%x\r\n" % len(big), b"").replace(b"\r\n", b"")[:-1]
    assert decoded == big * 3


def _collecting(cleanup: list[ProtocolHarness]) -> tuple[ProtocolHarness, Any]:
    """A JSON response held back with part of its body in: (harness, backend connection)."""
    h = harness(JSON_EDITS)
    cleanup.append(h)
    h.send(get())
    conn = h.busy_backend()
    conn.data_received(_json_reply(b"Content-Length: 100\r\n", b'{"id":'))
    return h, conn


def test_backend_cut_while_collecting_gets_a_502(cleanup: list[ProtocolHarness]) -> None:
    h, conn = _collecting(cleanup)
    conn.connection_lost(None)
    out = h.client_bytes()
    assert out.startswith(b"HTTP/1.1 502 ") and b'"id":' not in out


def test_client_gone_while_collecting_frees_the_backend(cleanup: list[ProtocolHarness]) -> None:
    h, conn = _collecting(cleanup)
    h.client.connection_lost(None)
    assert h.client_bytes() == b"" and conn.exchange is None and conn.closed


def test_proxy_cache_keeps_the_rewritten_body(cleanup: list[ProtocolHarness]) -> None:
    h = harness(JSON_EDITS, {"name": "proxy-cache", "config": {"strategy": "memory"}})
    reply = _json_reply(b"Content-Length: 28\r\n", b'{"id":"A","secret":"s3cr3t"}')
    _, miss = run(cleanup, h, get(), reply)
    _, hit = run(cleanup, h, get(), None)  # answered from the cache: no backend
    assert b"X-Cache-Status: Miss" in miss and b"X-Cache-Status: Hit" in hit
    assert miss.endswith(b"\r\n\r\n" + EDITED) and hit.endswith(b"\r\n\r\n" + EDITED)
    assert b"Content-Length: %d\r\n" % len(EDITED) in hit
