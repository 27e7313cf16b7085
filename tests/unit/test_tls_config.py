"""TLS configuration, table-driven: listen syntax, TLS node settings, and Kong's checks of
the certificates, snis and ca_certificates entities (declarative load and dump)."""

from __future__ import annotations

from typing import Any

import pytest
import trustme

from fastgw.config import ConfigError, load_declarative
from fastgw.config.declarative import dump_declarative
from fastgw.config.listeners import ListenAddress, parse_listeners
from fastgw.config.settings import load_settings
from tests.support.certs import ca_pem, expired_ca_pem, issue

CA = trustme.CA()
GOOD = issue(CA, "a.example")
OTHER = issue(trustme.CA(), "b.example")
RSA = issue(CA, "a.example", rsa=True)


def doc(**collections: Any) -> dict[str, Any]:
    return {"_format_version": "3.0", **collections}


# --------------------------------------------------------------------------- listen syntax

@pytest.mark.parametrize("value,expected", [
    ("0.0.0.0:8000", [ListenAddress("0.0.0.0", 8000)]),
    ("0.0.0.0:8000, 0.0.0.0:8443 ssl",
     [ListenAddress("0.0.0.0", 8000), ListenAddress("0.0.0.0", 8443, ssl=True)]),
    ("[::1]:8443 http2 ssl reuseport backlog=16384",
     [ListenAddress("::1", 8443, ssl=True, backlog=16384, http2=True)]),
    ("127.0.0.1:1 bind deferred", [ListenAddress("127.0.0.1", 1)]),
    ("off", []),
])
def test_listeners(value: str, expected: list[ListenAddress]) -> None:
    assert list(parse_listeners(value)) == expected


@pytest.mark.parametrize("value,message", [
    ("0.0.0.0:8000 proxy_protocol", "listen flag 'proxy_protocol' is not supported"),
    ("0.0.0.0:8000 so_keepalive=on", "listen flag 'so_keepalive=on' is not supported"),
    ("0.0.0.0:8000 backlog=x", "invalid backlog"),
    ("0.0.0.0:8000,", "empty entry"),
    ("0.0.0.0:8000, 0.0.0.0:8000 ssl", "listed twice"),
    ("8443 ssl", "invalid listen address '8443'"),
])
def test_listeners_refused(value: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_listeners(value)


# --------------------------------------------------------------------------- TLS settings

@pytest.mark.parametrize("section,field,expected", [
    ({}, "tls_versions", ("TLSv1.2", "TLSv1.3")),
    ({"ssl_protocols": "TLSv1.3"}, "tls_versions", ("TLSv1.3",)),
    ({"ssl_protocols": "TLSv1.3 TLSv1.2"}, "ssl_protocols", "TLSv1.2 TLSv1.3"),
    ({"ssl_cipher_suite": "modern"}, "tls_versions", ("TLSv1.3",)),
    ({"ssl_cipher_suite": "custom", "ssl_ciphers": "ECDHE-RSA-AES128-GCM-SHA256"},
     "ssl_ciphers", "ECDHE-RSA-AES128-GCM-SHA256"),
    ({"ssl_cert": "/c", "ssl_cert_key": "/k"}, "ssl_cert", "/c"),
    ({"upstream_tls_verify": "on"}, "upstream_tls_verify", True),
])
def test_tls_settings(section: dict[str, Any], field: str, expected: Any) -> None:
    assert getattr(load_settings(section), field) == expected


@pytest.mark.parametrize("section,error", [
    ({"ssl_protocols": "TLSv1.1 TLSv1.2"}, ("gateway.ssl_protocols", ("'TLSv1.1' is not supported: "
     "fastgw speaks TLSv1.2 and TLSv1.3 (older versions are deprecated, RFC 8996)"))),
    ({"ssl_protocols": ""}, ("gateway.ssl_protocols",
                             "expected TLS versions separated by spaces (TLSv1.2 TLSv1.3)")),
    ({"ssl_cipher_suite": "old"}, ("gateway.ssl_cipher_suite",
                                   "expected one of: modern, intermediate, custom")),
    ({"ssl_cipher_suite": "custom"}, ("gateway.ssl_ciphers",
                                      "required when ssl_cipher_suite is 'custom'")),
    ({"ssl_cert": "/c"}, ("gateway.ssl_cert_key", "required when ssl_cert is set")),
    ({"admin_ssl_cert_key": "/k"}, ("gateway.admin_ssl_cert",
                                    "required when admin_ssl_cert_key is set")),
    ({"upstream_tls_verify_depth": 65}, ("gateway.upstream_tls_verify_depth",
                                         "value should be between 0 and 64")),
    ({"proxy_listen": "0.0.0.0:8443 ssl proxy_protocol"}, ("gateway.proxy_listen",
     ("listen flag 'proxy_protocol' is not supported (fastgw supports ssl and backlog=N; "
     "reuseport, bind, deferred and http2 are accepted and change nothing)"))),
])
def test_tls_settings_refused(section: dict[str, Any], error: tuple[str, str]) -> None:
    with pytest.raises(ConfigError) as exc:
        load_settings(section)
    assert error in exc.value.errors


# --------------------------------------------------------------------------- entities

@pytest.mark.parametrize("document,error", [
    (doc(certificates=[{"cert": GOOD.cert, "key": OTHER.key}]),
     ("certificates[0].@entity", "certificate does not match key")),
    (doc(certificates=[{"cert": "junk", "key": GOOD.key}]),
     ("certificates[0].cert", "invalid certificate: Unable to load PEM file. MalformedFraming")),
    (doc(certificates=[{"cert": GOOD.cert, "key": "junk"}]),
     ("certificates[0].key", "invalid key: Unable to load PEM file. MalformedFraming")),
    (doc(certificates=[{"cert": GOOD.cert}]), ("certificates[0].key", "required field missing")),
    (doc(certificates=[{"cert": GOOD.cert, "key": GOOD.key, "cert_alt": RSA.cert}]),
     ("certificates[0].@entity", ("all or none of these fields must be set: 'cert_alt', "
                                 "'key_alt'"))),
    (doc(certificates=[{"cert": GOOD.cert, "key": GOOD.key, "cert_alt": RSA.cert,
                        "key_alt": GOOD.key}]),
     ("certificates[0].@entity", "alternative certificate does not match key")),
    (doc(certificates=[{"cert": GOOD.cert, "key": GOOD.key, "cert_alt": OTHER.cert,
                        "key_alt": OTHER.key}]),
     ("certificates[0].@entity", ("certificate and alternative certificate need to have "
      "different type (e.g. RSA and ECDSA), the provided certificates were both of the same "
      "type"))),
    (doc(ca_certificates=[{"cert": GOOD.cert}]),
     ("ca_certificates[0].@entity", ('certificate does not appear to be a CA because it is '
                                    'missing the "CA" basic constraint'))),
    (doc(ca_certificates=[{"cert": ca_pem(CA) + ca_pem(CA)}]),
     ("ca_certificates[0].@entity", "please submit only one certificate at a time")),
    (doc(ca_certificates=[{"cert": ca_pem(CA)}, {"cert": ca_pem(CA)}]),
     ("ca_certificates[1].cert_digest", "uniqueness violation: 'ca_certificates' entity with "
      "cert_digest set to '" + load_declarative(doc(ca_certificates=[{"cert": ca_pem(CA)}]))
      .ca_certificates[0].cert_digest + "' already declared")),  # type: ignore[operator]
    (doc(certificates=[{"cert": GOOD.cert, "key": GOOD.key, "snis": [{"name": "a.example"}]},
                       {"cert": OTHER.cert, "key": OTHER.key, "snis": [{"name": "a.example"}]}]),
     ("certificates[1].snis[0].name", ("uniqueness violation: 'snis' entity with name set to "
                                      "'a.example' already declared"))),
    (doc(certificates=[{"cert": GOOD.cert, "key": GOOD.key, "snis": [{"name": "a.*.example"}]}]),
     ("certificates[0].snis[0].name", "wildcard must be leftmost or rightmost character")),
    (doc(certificates=[{"cert": GOOD.cert, "key": GOOD.key, "snis": [{"name": "*.a.*"}]}]),
     ("certificates[0].snis[0].name", "only one wildcard must be specified")),
    (doc(certificates=[{"cert": GOOD.cert, "key": GOOD.key, "snis": [{"name": "10.0.0.1"}]}]),
     ("certificates[0].snis[0].name", "must not be an IP")),
    (doc(certificates=[{"cert": GOOD.cert, "key": GOOD.key, "snis": [{"name": "a.example:8443"}]}]),
     ("certificates[0].snis[0].name", "must not have a port")),
    (doc(snis=[{"name": "a.example",
                "certificate": {"id": "7f0a1b2c-0000-4000-8000-000000000001"}}]),
     ("snis[0].certificate", ("invalid reference 'certificate: 7f0a1b2c-0000-4000-8000-"
                             "000000000001' (no such entry in 'certificates')"))),
    (doc(services=[{"host": "h", "protocol": "https",
                    "client_certificate": {"id": "7f0a1b2c-0000-4000-8000-000000000002"}}]),
     ("services[0].client_certificate", ("invalid reference 'client_certificate: 7f0a1b2c-0000-"
                                        "4000-8000-000000000002' (no such entry in "
                                        "'certificates')"))),
    (doc(services=[{"host": "h", "protocol": "https",
                    "ca_certificates": ["7f0a1b2c-0000-4000-8000-000000000003"]}]),
     ("services[0].ca_certificates[0]",
      ("invalid reference 'ca_certificates: 7f0a1b2c-0000-4000-8000-000000000003' "
       "(no such entry in 'ca_certificates')"))),
    (doc(services=[{"host": "h", "protocol": "http", "tls_verify": True}]),
     ("services[0].tls_verify", "value must be null")),
])
def test_entity_checks(document: dict[str, Any], error: tuple[str, str]) -> None:
    with pytest.raises(ConfigError) as exc:
        load_declarative(document, env={})
    assert error in exc.value.errors


def test_no_error_quotes_a_private_key() -> None:
    key_body = GOOD.key.splitlines()[1]
    with pytest.raises(ConfigError) as exc:
        load_declarative(doc(certificates=[{"cert": OTHER.cert, "key": GOOD.key},
                                           {"cert": GOOD.key, "key": GOOD.key[:-40]}]))
    assert key_body not in str(exc.value) and key_body not in repr(exc.value.errors)


def test_certificates_round_trip_with_nested_snis_and_references() -> None:
    ca = load_declarative(doc(ca_certificates=[{"cert": ca_pem(CA)}])).ca_certificates[0]
    document = doc(
        certificates=[{"cert": GOOD.cert, "key": GOOD.key, "cert_alt": RSA.cert,
                       "key_alt": RSA.key, "snis": [{"name": "a.example"}, {"name": "*.b.example"}],
                       "tags": ["edge"]}],
        ca_certificates=[{"id": ca.id, "cert": ca_pem(CA)}],
        services=[{"name": "s", "url": "https://backend.internal:8443", "tls_verify": True,
                   "tls_verify_depth": 2, "ca_certificates": [ca.id]}])
    config = load_declarative(document)
    cert = config.certificates[0]
    assert [(s.name, s.certificate) for s in config.snis] == [("a.example", cert.id),
                                                              ("*.b.example", cert.id)]
    assert config.ca_certificates[0].cert_digest == ca.cert_digest
    assert len(ca.cert_digest or "") == 64
    assert config.services[0].ca_certificates == (ca.id,) and config.warnings == ()
    dumped = dump_declarative(config)
    assert [s["name"] for s in dumped["certificates"][0]["snis"]] == ["a.example", "*.b.example"]
    assert "snis" not in dumped and "certificate" not in dumped["certificates"][0]["snis"][0]
    assert load_declarative(dumped) == config
    # Ids derived from the PEM: reloading a hand-written file keeps them.
    assert load_declarative(document).certificates[0].id == cert.id


def test_configs_without_tls_entities_dump_as_before() -> None:
    dumped = dump_declarative(load_declarative(doc(services=[{"host": "h"}])))
    assert not {"certificates", "snis", "ca_certificates"} & set(dumped)


@pytest.mark.parametrize("document,warning", [
    (doc(ca_certificates=[{"cert": expired_ca_pem()}]),
     'ca_certificates[0].cert: certificate expired, "Not After" time is in the past'),
    (doc(certificates=[{"cert": "{vault://env/cert}", "key": "{vault://env/key}",
                        "snis": [{"name": "v.example"}]}]),
     ("certificates[0].cert: vault references are not supported yet, kept but the certificate "
     "is not used")),
])
def test_kept_with_a_warning(document: dict[str, Any], warning: str) -> None:
    config = load_declarative(document)
    assert warning in config.warnings
    assert load_declarative(dump_declarative(config)) == config
