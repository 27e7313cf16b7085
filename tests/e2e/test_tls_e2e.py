"""TLS end to end: real fastgw processes, real TLS clients and backends, certificates made
on the fly (trustme). Issue 11's "Done when": SNI certificates and the default one,
certificates replaced through the Admin API without restart, 426 and the redirects,
X-Forwarded-Proto, https upstreams verified (or refused with Kong's 502 and a log
line), mutual TLS to the backend, https active health checks, the Admin API over TLS."""

from __future__ import annotations

import json
import socket
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import trustme
from cryptography import x509

from tests.conftest import require_tool
from tests.support.admin import admin_config, wait_ready, wait_until
from tests.support.certs import Pair, ca_pem, issue, write_pair
from tests.support.gateway import GatewayProcess, free_port
from tests.support.procs import REPO_ROOT, IrisProcess


def served_cert(port: int, server_name: str | None) -> x509.Certificate:
    """The certificate a TLS handshake with `server_name` (None: no SNI) gets."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, \
            ctx.wrap_socket(raw, server_hostname=server_name) as tls:
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der)


def exchange(sock: ssl.SSLSocket, path: str, host: str) -> bytes:
    """One keep-alive request on `sock`: the response's status line."""
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                  if line.lower().startswith(b"content-length:"))
    while len(body) < length:
        body += sock.recv(65536)
    return head.split(b"\r\n")[0]


def leaf(pair: Pair) -> x509.Certificate:
    return x509.load_pem_x509_certificate(pair.cert.encode())


def default_leaf(gw: GatewayProcess) -> x509.Certificate:
    return x509.load_pem_x509_certificate(gw.default_cert.read_bytes())


# --------------------------------------------------------------------------- the edge

@pytest.fixture(scope="module")
def edge() -> Iterator[tuple[GatewayProcess, IrisProcess]]:
    """A gateway with an ssl proxy listener and an ssl admin listener, one plain backend."""
    with IrisProcess("A") as iris:
        config = admin_config({
            "_format_version": "3.0",
            "services": [{"name": "echo", "url": f"http://127.0.0.1:{iris.port}/_emulator/echo",
                          "routes": [
                              {"name": "both", "paths": ["/both"]},
                              {"name": "tls-only", "paths": ["/secure"], "protocols": ["https"]},
                              {"name": "moved", "paths": ["/moved"], "protocols": ["https"],
                               "https_redirect_status_code": 308}]}]})
        tls_admin = free_port()
        config["gateway"]["admin_listen"] += f", 127.0.0.1:{tls_admin} ssl"
        with GatewayProcess(config, tls=True) as gw:
            gw.tls_admin_port = tls_admin  # type: ignore[attr-defined]
            wait_ready(gw, 1)
            yield gw, iris


def test_default_certificate_made_beside_the_config(edge: tuple[GatewayProcess, Any]) -> None:
    gw, _ = edge
    key = gw.default_cert.with_suffix(".key")
    assert gw.default_cert.exists() and key.stat().st_mode & 0o777 == 0o600
    # No SNI, or a name nobody configured: the default certificate (Kong's order).
    assert served_cert(gw.tls_port, None) == default_leaf(gw)
    assert served_cert(gw.tls_port, "unknown.example") == default_leaf(gw)
    # It is for localhost: a client that trusts it verifies the gateway as is.
    r = requests.get(gw.tls_url + "/both", verify=str(gw.default_cert), timeout=5)
    assert r.status_code == 200


def test_sni_certificates_and_hot_replacement(edge: tuple[GatewayProcess, Any]) -> None:
    gw, _ = edge
    api = gw.admin_url
    ca = trustme.CA()
    a, wild, star = issue(ca, "a.example"), issue(ca, "*.b.example"), issue(ca, "fallback")
    r = requests.post(api + "/certificates", json=a.entity("a.example"), timeout=5)
    assert r.status_code == 201, r.text
    cert_a = r.json()["id"]
    # multipart, as in Kong's docs: cert=@file key=@file snis[]=...
    r = requests.post(api + "/certificates", files={"cert": ("c.pem", wild.cert),
                                                    "key": ("k.pem", wild.key)},
                      data={"snis[]": ["*.b.example", "b.*"]}, timeout=5)
    assert r.status_code == 201 and r.json()["snis"] == ["*.b.example", "b.*"], r.text
    wait_ready(gw, 1)
    assert served_cert(gw.tls_port, "a.example") == leaf(a)
    assert served_cert(gw.tls_port, "x.b.example") == leaf(wild)  # *.b.example
    assert served_cert(gw.tls_port, "B.Example") == leaf(wild)  # b.*, any case
    assert served_cert(gw.tls_port, "y.x.b.example") == default_leaf(gw)  # one label deep
    # A client verifying against the CA gets through (the name matches), and this
    # keep-alive connection, made with the old certificate, goes on after a replacement.
    ctx = ssl.create_default_context(cadata=ca_pem(ca))
    raw = socket.create_connection(("127.0.0.1", gw.tls_port), timeout=5)
    held = ctx.wrap_socket(raw, server_hostname="a.example")
    assert exchange(held, "/both", "a.example") == b"HTTP/1.1 200 OK"
    replacement = issue(ca, "a.example")
    r = requests.patch(f"{api}/certificates/{cert_a}", json={"cert": replacement.cert,
                                                              "key": replacement.key}, timeout=5)
    assert r.status_code == 200 and r.json()["snis"] == ["a.example"], r.text
    wait_ready(gw, 1)
    assert served_cert(gw.tls_port, "a.example") == leaf(replacement)
    assert exchange(held, "/both", "a.example") == b"HTTP/1.1 200 OK"
    held.close()

    # A catch-all "*" SNI takes unknown names; a handshake without SNI still gets the default.
    r = requests.post(api + "/certificates", json=star.entity("*"), timeout=5)
    assert r.status_code == 201, r.text
    wait_ready(gw, 1)
    assert served_cert(gw.tls_port, "unknown.example") == leaf(star)
    assert served_cert(gw.tls_port, None) == default_leaf(gw)
    # Deleting a certificate takes its SNIs with it.
    assert requests.delete(f"{api}/certificates/{cert_a}", timeout=5).status_code == 204
    assert requests.get(f"{api}/snis/a.example", timeout=5).status_code == 404
    wait_ready(gw, 1)
    assert served_cert(gw.tls_port, "a.example") == leaf(star)
    requests.post(api + "/config", json={"_format_version": "3.0",
                                        "services": _services(gw)}, timeout=5)


def _services(gw: GatewayProcess) -> list[dict[str, Any]]:
    return gw.config["services"]  # type: ignore[no-any-return]


def test_private_keys_in_admin_api(edge: tuple[GatewayProcess, Any]) -> None:
    """Kong returns certificate keys to the Admin API (decK dumps need them); fastgw too,
    and never writes them to its log."""
    gw, _ = edge
    pair = issue(trustme.CA(), "k.example")
    r = requests.post(gw.admin_url + "/certificates", json=pair.entity("k.example"), timeout=5)
    assert r.status_code == 201 and r.json()["key"] == pair.key
    bad = requests.post(gw.admin_url + "/certificates",
                        json={"cert": pair.cert, "key": issue(trustme.CA(), "x").key}, timeout=5)
    assert bad.status_code == 400 and bad.json()["fields"] == {
        "@entity": ["certificate does not match key"]}
    config = requests.get(gw.admin_url + "/config", timeout=5).json()["config"]
    assert pair.key.replace("\n", "\\n") in config
    secret_line = pair.key.splitlines()[1]
    assert secret_line not in gw.log()
    requests.delete(f"{gw.admin_url}/certificates/{r.json()['id']}", timeout=5)


def test_admin_api_over_tls(edge: tuple[GatewayProcess, Any]) -> None:
    gw, _ = edge
    port = gw.tls_admin_port  # type: ignore[attr-defined]
    r = requests.get(f"https://localhost:{port}/status", verify=str(gw.default_cert), timeout=5)
    assert r.status_code == 200 and "config_version" in r.json()


@pytest.mark.parametrize("path,scheme,status,location", [
    ("/secure/x?q=1", "http", 426, None),
    ("/moved/x?q=1", "http", 308, "https://localhost/moved/x?q=1"),
    ("/secure/x?q=1", "https", 200, None),
    ("/both/x", "http", 200, None),
    ("/both/x", "https", 200, None),
])
def test_route_protocols_and_forwarded_proto(edge: tuple[GatewayProcess, Any], path: str,
                                             scheme: str, status: int,
                                             location: str | None) -> None:
    gw, _ = edge
    base = gw.tls_url if scheme == "https" else f"http://localhost:{gw.port}"
    r = requests.get(base + path, verify=str(gw.default_cert), allow_redirects=False, timeout=5)
    assert r.status_code == status, r.text
    if status == 426:
        assert r.json()["message"] == "Please use HTTPS protocol"
        assert r.headers["Upgrade"] == "TLS/1.2, HTTP/1.1"
    if location is not None:
        assert r.headers["Location"] == location and r.content == b""
    if status == 200:
        fields = {k.lower(): v for k, v in r.json()["headers"]}
        port = gw.tls_port if scheme == "https" else gw.port
        assert (fields["x-forwarded-proto"], fields["x-forwarded-port"]) == (scheme, str(port))
        assert fields["via"].startswith("1.1 ")


# --------------------------------------------------------------------------- backends

@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A backend CA and its server certificate, another CA, a client CA and its client."""
    d = tmp_path_factory.mktemp("pki")
    backend_ca, other_ca, client_ca = trustme.CA(), trustme.CA(), trustme.CA()
    server = issue(backend_ca, "backend.test", "127.0.0.1")
    cert, key = write_pair(server, d, "backend")
    (d / "client-ca.pem").write_text(ca_pem(client_ca))
    return {"backend_ca": ca_pem(backend_ca), "other_ca": ca_pem(other_ca),
            "server": (str(cert), str(key)), "client_ca": str(d / "client-ca.pem"),
            "client": issue(client_ca, "gateway.client", client=True), "dir": d}


def _upstream_doc(port: int, ca_id: str, other_id: str, client_id: str) -> dict[str, Any]:
    def svc(name: str, **fields: Any) -> dict[str, Any]:
        return {"name": name, "url": f"https://127.0.0.1:{port}/_emulator/echo", **fields,
                "routes": [{"name": name, "paths": [f"/{name}"]}]}
    return {"_format_version": "3.0",
            "ca_certificates": [{"id": ca_id, "cert": ""}, {"id": other_id, "cert": ""}],
            "certificates": [{"id": client_id}],
            "services": [svc("verified", tls_verify=True, ca_certificates=[ca_id]),
                         svc("wrong-ca", tls_verify=True, ca_certificates=[other_id]),
                         svc("unverified"),
                         svc("mtls", tls_verify=True, ca_certificates=[ca_id],
                             client_certificate={"id": client_id})]}


def _fill(doc: dict[str, Any], pki: dict[str, Any]) -> dict[str, Any]:
    doc["ca_certificates"][0]["cert"] = pki["backend_ca"]
    doc["ca_certificates"][1]["cert"] = pki["other_ca"]
    doc["certificates"][0].update(cert=pki["client"].cert, key=pki["client"].key)
    return doc


IDS = ("0b0e7a52-6c2f-4d35-9a51-000000000001", "0b0e7a52-6c2f-4d35-9a51-000000000002",
       "0b0e7a52-6c2f-4d35-9a51-000000000003")


def test_https_upstream_verification(pki: dict[str, Any]) -> None:
    with IrisProcess("S", tls=pki["server"]) as backend, \
            GatewayProcess(_fill(_upstream_doc(backend.port, *IDS), pki)) as gw:
        r = requests.get(gw.url + "/verified", timeout=10)
        assert r.status_code == 200, r.text
        echo = r.json()
        assert echo["tls"]["version"] in ("TLSv1.2", "TLSv1.3")
        assert echo["tls"]["sni"] is None  # an IP address is never sent as SNI
        assert requests.get(gw.url + "/unverified", timeout=10).status_code == 200
        r = requests.get(gw.url + "/wrong-ca", timeout=10)
        assert r.status_code == 502
        assert r.json()["message"] == "An invalid response was received from the upstream server"
        wait_until(lambda: "upstream SSL certificate verify error" in gw.log(), timeout=5)
        line = next(x for x in gw.log().splitlines() if "certificate verify error" in x)
        assert f"while SSL handshaking to upstream 127.0.0.1:{backend.port}" in line
        assert "unable to get local issuer certificate" in line


def test_mutual_tls_to_the_upstream(pki: dict[str, Any]) -> None:
    with IrisProcess("M", tls=pki["server"], tls_client_ca=pki["client_ca"]) as backend, \
            GatewayProcess(_fill(_upstream_doc(backend.port, *IDS), pki)) as gw:
        r = requests.get(gw.url + "/mtls", timeout=10)
        assert r.status_code == 200, r.text
        assert r.json()["tls"]["client_cert"] == "gateway.client"
        # the same backend without a client certificate: refused in the handshake
        assert requests.get(gw.url + "/verified", timeout=10).status_code == 502


def test_https_active_health_checks(pki: dict[str, Any]) -> None:
    """Probes speak TLS to https targets: a TLS backend is healthy, a plain one is not; with
    https_verify_certificate on, a certificate the node does not trust fails the probe."""
    with IrisProcess("T", tls=pki["server"]) as tls_backend, IrisProcess("P") as plain:
        def upstream(name: str, verify: bool) -> dict[str, Any]:
            return {"name": name, "healthchecks": {"active": {
                "type": "https", "https_verify_certificate": verify, "timeout": 1,
                "http_path": "/api/atelier/", "https_sni": "backend.test",
                "healthy": {"interval": 0.2, "successes": 1},
                "unhealthy": {"interval": 0.2, "tcp_failures": 1, "http_failures": 1,
                              "timeouts": 1}}},
                "targets": [{"target": f"127.0.0.1:{tls_backend.port}"},
                            {"target": f"127.0.0.1:{plain.port}"}]}
        config = admin_config({"_format_version": "3.0",
                               "upstreams": [upstream("lax", False), upstream("strict", True)]})
        with GatewayProcess(config) as gw:
            wait_ready(gw, 1)

            def health(name: str) -> dict[str, str]:
                data = requests.get(f"{gw.admin_url}/upstreams/{name}/health", timeout=5).json()
                return {t["target"]: t["health"] for t in data["data"]}

            want_lax = {f"127.0.0.1:{tls_backend.port}": "HEALTHY",
                        f"127.0.0.1:{plain.port}": "UNHEALTHY"}
            wait_until(lambda: health("lax") == want_lax, timeout=10)
            wait_until(lambda: set(health("strict").values()) == {"UNHEALTHY"}, timeout=10)


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3])
def test_sessions_resume_on_any_worker(version: ssl.TLSVersion) -> None:
    """Two workers share the supervisor's ticket keys: a session made on one resumes on
    the other (SO_REUSEPORT sends each new connection to either)."""
    with IrisProcess("R") as iris:
        config = admin_config({"_format_version": "3.0", "services": [
            {"url": f"http://127.0.0.1:{iris.port}/_emulator/echo", "routes": [{"paths": ["/"]}]}]})
        with GatewayProcess(config, workers=2, tls=True) as gw:
            wait_ready(gw, 2)
            ctx = ssl.create_default_context(cafile=str(gw.default_cert))
            ctx.minimum_version = ctx.maximum_version = version
            session, reused = None, 0
            for _ in range(16):
                with socket.create_connection(("127.0.0.1", gw.tls_port), timeout=5) as raw, \
                        ctx.wrap_socket(raw, server_hostname="localhost", session=session) as tls:
                    assert exchange(tls, "/", "localhost") == b"HTTP/1.1 200 OK"
                    assert tls.version() == version.name.replace("_", ".")
                    reused += tls.session_reused
                    session = tls.session
            assert reused == 15  # the first handshake is full, every other one resumed


def test_iam_walkthrough_over_https() -> None:
    """The README's walkthrough on the shipped config.json, over TLS with curl and the
    certificate fastgw made at first start (ports made ephemeral for the test)."""
    curl = require_tool("curl", "apt-get install curl")
    doc = json.loads((REPO_ROOT / "config.json").read_text())
    with IrisProcess("A") as a, IrisProcess("B") as b:
        doc["upstreams"][0]["targets"] = [{"target": f"127.0.0.1:{a.port}", "weight": 100},
                                          {"target": f"127.0.0.1:{b.port}", "weight": 100}]
        doc["gateway"].update(admin_listen="off", status_listen="off")
        with GatewayProcess(doc, tls=True) as gw:
            seen = set()
            for _ in range(2):
                out = subprocess.run([curl, "-sS", "--cacert", str(gw.default_cert),
                                      f"https://localhost:{gw.tls_port}/api/atelier/"],
                                     capture_output=True, text=True, timeout=10, check=False)
                assert out.returncode == 0, out.stderr
                seen.add(json.loads(out.stdout)["result"]["content"]["id"])
            assert seen == {"A", "B"}


@pytest.mark.parametrize("depth,status", [(0, 502), (1, 502), (2, 200)])
def test_tls_verify_depth(tmp_path: Path, depth: int, status: int) -> None:
    """A backend whose chain has two intermediates passes tls_verify_depth 2 only."""
    root = trustme.CA()
    issuer = root.create_child_ca().create_child_ca()
    server = issue(issuer, "127.0.0.1")  # the chain sent: leaf and both intermediates
    cert, key = write_pair(server, tmp_path, "deep")
    ca_id = "0b0e7a52-6c2f-4d35-9a51-000000000009"
    with IrisProcess("D", tls=(str(cert), str(key))) as backend:
        doc = {"_format_version": "3.0", "ca_certificates": [{"id": ca_id, "cert": ca_pem(root)}],
               "services": [{"url": f"https://127.0.0.1:{backend.port}/_emulator/echo",
                             "tls_verify": True, "tls_verify_depth": depth,
                             "ca_certificates": [ca_id], "retries": 0,
                             "routes": [{"paths": ["/"]}]}]}
        with GatewayProcess(doc) as gw:
            assert requests.get(gw.url + "/", timeout=10).status_code == status
            if status == 502:
                wait_until(lambda: "(22:certificate chain too long)" in gw.log(), timeout=5)
