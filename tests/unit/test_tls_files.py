"""Files that hold TLS secrets: the default certificate made at first start (and reused),
configured certificate files, and a config file holding private keys (owner-only)."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path

import pytest
import trustme
from cryptography import x509

from fastgw.config.model import Certificate
from fastgw.config.settings import load_settings
from fastgw.controlplane.default_cert import (
    CertificateFileError,
    default_certificate,
    listener_certificate,
)
from fastgw.controlplane.store import FileConfigStore
from tests.support.certs import issue, write_pair


def test_default_certificate_made_once_and_reused(tmp_path: Path) -> None:
    config = tmp_path / "config.json"
    first = default_certificate(load_settings({}), str(config))
    crt, key = tmp_path / "fastgw-default.crt", tmp_path / "fastgw-default.key"
    assert crt.read_text() == first.cert and key.read_text() == first.key
    assert key.stat().st_mode & 0o777 == 0o600 and crt.stat().st_mode & 0o777 == 0o644
    names = x509.load_pem_x509_certificate(first.cert.encode()).extensions.get_extension_for_class(
        x509.SubjectAlternativeName).value
    assert "localhost" in names.get_values_for_type(x509.DNSName)
    assert default_certificate(load_settings({}), str(config)) == first  # read, not remade


def test_configured_files_win(tmp_path: Path) -> None:
    pair = issue(trustme.CA(), "edge.example")
    cert, key = write_pair(pair, tmp_path, "edge")
    settings = load_settings({"ssl_cert": str(cert), "ssl_cert_key": str(key)})
    made = default_certificate(settings, str(tmp_path / "c.json"))
    assert (made.cert, made.key) == (pair.cert, pair.key)
    assert not (tmp_path / "fastgw-default.crt").exists()
    admin = issue(trustme.CA(), "admin.example")
    a_cert, a_key = write_pair(admin, tmp_path, "admin")
    settings = load_settings({"ssl_cert": str(cert), "ssl_cert_key": str(key),
                              "admin_ssl_cert": str(a_cert), "admin_ssl_cert_key": str(a_key)})
    default = default_certificate(settings, str(tmp_path / "c.json"))
    assert listener_certificate(settings, "admin", default).cert == admin.cert
    assert listener_certificate(settings, "status", default) == default


@pytest.mark.parametrize("mess,message", [
    ("missing", "cannot read"),
    ("mismatch", "certificate does not match key"),
    ("junk", "invalid certificate"),
])
def test_bad_certificate_files_refused(tmp_path: Path, mess: str, message: str) -> None:
    pair = issue(trustme.CA(), "edge.example")
    cert, key = write_pair(pair, tmp_path, "edge")
    if mess == "missing":
        key.unlink()
    elif mess == "mismatch":
        key.write_text(issue(trustme.CA(), "other").key)
    else:
        cert.write_text("junk")
    settings = load_settings({"ssl_cert": str(cert), "ssl_cert_key": str(key)})
    with pytest.raises(CertificateFileError, match=message) as exc:
        default_certificate(settings, str(tmp_path / "c.json"))
    assert pair.key.splitlines()[1] not in str(exc.value)


def test_a_config_holding_keys_is_written_owner_only(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_text('{"_format_version": "3.0"}')
    path.chmod(0o644)
    store = FileConfigStore.open(str(path), env={})
    pair = issue(trustme.CA(), "k.example")

    async def go() -> None:
        async with store.lock:
            state = store.state
            cfg = replace(state.configs["default"],
                          certificates=(Certificate(cert=pair.cert, key=pair.key),))
            await store.commit(state.workspaces, {"default": cfg})

    asyncio.run(go())
    assert path.stat().st_mode & 0o777 == 0o600
