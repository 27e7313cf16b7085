"""Routes that accept https only, and Kong's answer to such a request over plain http.

Kong (kong/runloop/handler.lua): a route whose ``protocols`` has ``https`` but not
``http`` matches a plain-http request as usual, and then answers it instead of proxying,
with the route's ``https_redirect_status_code``:
  426  ``{"message":"Please use HTTPS protocol"}`` with ``Upgrade: TLS/1.2, HTTP/1.1`` and
       ``Connection: Upgrade`` (RFC 9110 §15.5.22)
  301, 302, 307, 308  ``Location: https://<host><path and query as received>``, no body.
       The host is the request's, without its port (nginx's $host), or a trusted
       client's X-Forwarded-Host; like Kong, no port is added: the https listener is
       expected on 443 (behind a load balancer, say).
A request that came over plain http from a trusted client (``trusted_ips``) that sent
``X-Forwarded-Proto: https`` counts as https: TLS ended before it reached the gateway.
Pure: decisions on a RequestHead.
"""

from __future__ import annotations

from typing import Final

from fastgw.core.http.fields import split_host_port
from fastgw.core.http.request import RequestHead

__all__ = ["HTTPS_MESSAGE", "UPGRADE_FIELDS", "forwarded_https", "https_only", "location_field"]

HTTPS_MESSAGE: Final = "Please use HTTPS protocol"
UPGRADE_FIELDS: Final = b"Upgrade: TLS/1.2, HTTP/1.1\r\nConnection: Upgrade\r\n"


def https_only(protocols: tuple[str, ...]) -> bool:
    """Whether a route refuses plain http (Kong: https without http)."""
    return "https" in protocols and "http" not in protocols


def forwarded_https(head: RequestHead, trusted: bool) -> bool:
    """A trusted client says TLS ended before the gateway (``X-Forwarded-Proto: https``)."""
    return trusted and head.field(b"x-forwarded-proto") == b"https"


def location_field(head: RequestHead, trusted: bool) -> bytes | None:
    """The redirect's ``Location`` field line, or None without a host to send it to."""
    host = head.field(b"x-forwarded-host") if trusted else None
    if host is None:
        if head.host is None:
            return None
        host = split_host_port(head.host)[0].lower()
    return b"Location: https://" + host + head.path + head.query + b"\r\n"
