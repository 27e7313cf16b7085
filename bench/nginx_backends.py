"""Two backends served by one nginx (one worker): the cheapest backends this box can have.

Why: the speed targets compare proxies' CPU per request and added latency. A Python backend
(the IRIS emulator) costs more CPU than the proxies under test and shares their two cores;
nginx answering `return 200 '<small JSON>'` from memory costs ~6 us per request
(reference/performance.md), so more of the box goes to the proxy under test and less noise
comes from the backend. Each backend answers a different body (its `id`), so round robin
can be checked from the client. `keepalive_requests` is raised like the anchor's, so a
backend never closes a proxy's keep-alive connection because of its request count.

The emulator's `/_emulator/` endpoints do not exist here (every path answers the same
body): workloads that need them are skipped with these backends.
"""

from __future__ import annotations

import shutil

from bench.anchors import NGINX, binary_version, nginx_args, nginx_main
from bench.server_process import ServerProcess
from tests.support.gateway import free_port

__all__ = ["NginxBackends", "backend_body", "nginx_backends_config"]


def backend_body(ident: str) -> str:
    """~120 bytes of JSON, shaped like the emulator's answer (result.content.id)."""
    return ('{"status":{"errors":[],"summary":""},"console":[],"result":{"content":'
            f'{{"id":"{ident}","api":8,"version":"nginx bench backend {ident}"}}}}}}')


def nginx_backends_config(prefix: str, ports: dict[str, int]) -> str:
    servers = "".join(f"""    server {{
        listen 127.0.0.1:{port};
        location / {{
            default_type application/json;
            return 200 '{backend_body(ident)}';
        }}
    }}
""" for ident, port in ports.items())
    return f"""# fastgw bench backends: one nginx worker, one server per backend (bench/nginx_backends.py)
{nginx_main(prefix)}{servers}}}
"""


class NginxBackends(ServerProcess):
    """Backends `A` and `B` on two free ports; `addresses` are their host:port."""

    def __init__(self, idents: tuple[str, ...] = ("A", "B"), *, taskset: str | None = None,
                 startup_timeout: float = 10.0) -> None:
        ports = {ident: free_port() for ident in idents}
        super().__init__("nginx-backends", list(ports.values()), taskset=taskset,
                         startup_timeout=startup_timeout)
        self.binary = shutil.which(NGINX) or f"/usr/sbin/{NGINX}"
        path = self.write_config("nginx.conf", nginx_backends_config(self.prefix, ports))
        self.args = nginx_args(self.binary, self.prefix, path)
        self.addresses = [f"127.0.0.1:{port}" for port in ports.values()]

    def version(self) -> str:
        return binary_version(self.binary)
