"""TLS to backends: services with protocol https (and wss) connect over TLS.

A route plan to such a service gets an `UpstreamTLS`: its TLS profile (Kong's service
fields, each defaulting to a node setting) and, for every target its balancer can pick,
the pool of that target for that profile and server name. The exchange asks it for the
pool of the target it picked (`pool_for`); plans to plain-http services have none and
use the target's own pool, so plain HTTP pays one attribute test.

Kong's rules (kong.md §1; kong/runloop/upstream_ssl.lua, balancer):
- tls_verify (null: the node's upstream_tls_verify, off as in Kong) checks the chain and
  the name; tls_verify_depth (null: upstream_tls_verify_depth, 1 as nginx) bounds it;
  ca_certificates (ids of ca_certificates entities) are the CAs trusted, else the node's
  upstream_tls_trusted_certificate ("system": the OS store);
- client_certificate (the service's, else its upstream's) is presented for mutual TLS;
- the server name (SNI, and the name verified) is the host the upstream Host header
  names: the target's host (or the upstream's host_header), or with preserve_host the
  client's Host; IP addresses are verified against the certificate's IP SANs and never
  sent as SNI (RFC 6066 §3).
Pools are keyed by (host, port, profile, server name): TLS and plain connections, or
connections verified differently, never share a pool.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable
from typing import Any

from fastgw.config.certificates import is_reference
from fastgw.config.model import Config, Route, Service
from fastgw.core.http.fields import split_host_port
from fastgw.core.http.request import RequestHead
from fastgw.dataplane.balancing import CanaryBalancer, DirectRuntime, TargetRuntime, UpstreamRuntime
from fastgw.dataplane.pool import UpstreamPool
from fastgw.dataplane.tls import CertPair, ClientProfile, client_context

__all__ = ["TLS_PROTOCOLS", "UpstreamTLS", "client_profile", "plan_tls", "server_name"]

TLS_PROTOCOLS = frozenset({"https", "wss"})
GetPool = Callable[[tuple[str, int, str, str | None], ssl.SSLContext, int], UpstreamPool]


def server_name(host: bytes) -> str:
    """The TLS server name of a Host value: its host part, brackets off an IPv6 literal."""
    name = split_host_port(host)[0].decode("latin-1")
    return name[1:-1] if name.startswith("[") else name


class UpstreamTLS:
    """One plan's TLS to its backends: the pool of each target for its profile."""

    __slots__ = ("pools", "sni_from_client")

    def __init__(self, pools: dict[TargetRuntime, UpstreamPool], sni_from_client: bool) -> None:
        self.pools = pools
        self.sni_from_client = sni_from_client  # preserve_host: the client's Host is the SNI

    def pool_for(self, target: TargetRuntime, head: RequestHead) -> UpstreamPool:
        pool = self.pools[target]
        if self.sni_from_client and head.host is not None:
            return pool.for_server_name(server_name(head.host))
        return pool


def _pair(config: Config, cert_id: str | None) -> CertPair | None:
    for cert in config.certificates if cert_id else ():
        if cert.id == cert_id and not is_reference(cert.cert) and not is_reference(cert.key):
            return CertPair(cert.cert, cert.key)
    return None


def client_profile(config: Config, service: Service) -> ClientProfile:
    """The service's TLS profile, node settings filling its null fields."""
    settings = config.gateway
    verify = settings.upstream_tls_verify if service.tls_verify is None else service.tls_verify
    depth = settings.upstream_tls_verify_depth if service.tls_verify_depth is None \
        else service.tls_verify_depth
    wanted = set(service.ca_certificates or ())
    cas = tuple(ca.cert for ca in config.ca_certificates if ca.id in wanted)
    cert_id = service.client_certificate
    if cert_id is None:
        upstream = config.upstream(service.host)
        cert_id = upstream.client_certificate if upstream is not None else None
    return ClientProfile(verify, depth, cas, settings.upstream_tls_trusted_certificate,
                         _pair(config, cert_id))


def _targets(balancer: Any) -> list[TargetRuntime]:
    if isinstance(balancer, CanaryBalancer):
        return _targets(balancer.stable) + _targets(balancer.canary)
    if isinstance(balancer, UpstreamRuntime):
        return list(balancer.targets)
    if isinstance(balancer, DirectRuntime):
        return [balancer.target]
    return []


def plan_tls(config: Config, service: Service, route: Route, balancer: Any, get_pool: GetPool,
             contexts: dict[str, Any], used: set[tuple[Any, ...]]) -> UpstreamTLS | None:
    """The TLS of a route plan to `service` (None: plain HTTP). Contexts are built once
    per profile and kept in `contexts` (across snapshots); the pool keys go to `used`."""
    if service.protocol not in TLS_PROTOCOLS:
        return None
    profile = client_profile(config, service)
    key = profile.key
    context = contexts.get(key)
    if context is None:
        context = contexts[key] = client_context(profile)
    depth = profile.depth if profile.verify else -1
    pools: dict[TargetRuntime, UpstreamPool] = {}
    for target in _targets(balancer):
        pool_key = (target.host, target.port, key, server_name(target.host_header) or None)
        pools[target] = get_pool(pool_key, context, depth)
        used.add(pool_key)
    return UpstreamTLS(pools, route.preserve_host)
