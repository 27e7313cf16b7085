"""nginx and HAProxy as anchors: the same two backends, round robin, one worker/thread.

Why anchors: absolute numbers on a shared 2-core box mean little; "fastgw costs X times what
nginx costs for the same job on the same box in the same minute" means a lot. The configs
follow reference/performance.md: upstream keep-alive on (nginx `keepalive 128` +
HTTP/1.1 + empty Connection header; HAProxy `http-reuse always`), one worker, no access log.

Both run in a temporary prefix directory, in the foreground (bench/server_process.py): nginx
gets `-p DIR -e DIR/error.log` (so it never touches /var/log/nginx, which a non-root user
cannot open) and every temp path inside DIR; as root, `user` is set to root's own account
because the default (`nobody`) could not write the temp dirs we created. Basic auth for real
backends needs no config line: the load generator sends the Authorization header and both
proxies forward it untouched.
"""

from __future__ import annotations

import grp
import os
import pwd
import resource
import shutil
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path

from bench.server_process import ServerProcess
from tests.support.gateway import free_port

__all__ = [
    "ANCHOR_EQUIVALENT_SETTINGS",
    "HAPROXY",
    "NGINX",
    "AnchorProcess",
    "haproxy_config",
    "nginx_args",
    "nginx_conf_text",
    "nginx_config",
    "nginx_main",
]

NGINX = "nginx"
HAPROXY = "haproxy"

# What the nginx anchor sets away from fastgw's defaults, as fastgw setting -> value; the
# bench gives fastgw the same (bench/load.py) so both do the same job.
ANCHOR_EQUIVALENT_SETTINGS = {
    "keepalive_requests": 1000000,  # nginx `keepalive_requests 1000000` (server side)
    "upstream_keepalive_pool_size": 128,  # nginx `upstream { keepalive 128; }`
    # nginx's `keepalive_requests` inside `upstream` is left at its default, 1000 since
    # nginx 1.19.10 (fastgw's default, Kong's, is 10000).
    "upstream_keepalive_max_requests": 1000,
}


def _user_line() -> str:
    if os.geteuid() != 0:
        return ""  # only a root master switches user; nginx warns if told to otherwise
    user = pwd.getpwuid(os.geteuid()).pw_name
    group = grp.getgrgid(os.getegid()).gr_name
    return f"user {user} {group};\n"


_NGINX_TEMP_DIRS = ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")


def nginx_main(prefix: str) -> str:
    """The config's start up to `http {`: one worker, every path inside `prefix`, no log.

    Creates the temp directories it names. `keepalive_requests 1000000`: a client connection
    is never closed by nginx for its request count during a run (nginx's default is 1000).
    """
    for sub in (*_NGINX_TEMP_DIRS, "logs"):  # logs/: where -p points nginx before -e applies
        Path(prefix, sub).mkdir(exist_ok=True)
    temp = "".join(f"    {sub}_temp_path {prefix}/{sub};\n" for sub in _NGINX_TEMP_DIRS)
    return f"""{_user_line()}worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
worker_rlimit_nofile 65536;
events {{
    worker_connections 16384;
}}
http {{
    access_log off;
{temp}    keepalive_requests {ANCHOR_EQUIVALENT_SETTINGS["keepalive_requests"]};
    keepalive_timeout 75s;
"""


def nginx_conf_text(prefix: str, title: str, http: str) -> str:
    """A whole nginx.conf from nginx_main: `http` is the rest of its http block."""
    return f"# {title}\n{nginx_main(prefix)}{http}}}\n"


def nginx_args(binary: str, prefix: str, config: Path) -> list[str]:
    return [binary, "-p", prefix, "-e", f"{prefix}/error.log", "-c", str(config),
            "-g", "daemon off;"]


def nginx_config(prefix: str, port: int, backends: Sequence[str]) -> str:
    """One worker, upstream keep-alive, round robin; request bodies buffered as fastgw does.

    Request buffering is nginx's default (on), as it is Kong's and fastgw's: the body is
    read whole (spooled to DIR/client_body past the memory buffer) before the request goes
    upstream. proxy_max_temp_file_size 0: responses larger than the memory buffers are
    relayed at the client's pace, never written to disk (fastgw streams responses too).
    client_max_body_size 0: no limit (nginx's default 1m would reject a body a header's
    worth over 1 MiB).
    """
    servers = "".join(f"        server {b};\n" for b in backends)
    pool = ANCHOR_EQUIVALENT_SETTINGS["upstream_keepalive_pool_size"]
    return f"""# fastgw bench anchor: nginx, one worker (written by bench/anchors.py)
{nginx_main(prefix)}    upstream iris {{
{servers}        keepalive {pool};
    }}
    server {{
        listen 127.0.0.1:{port};
        client_max_body_size 0;
        location / {{
            proxy_pass http://iris;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_max_temp_file_size 0;
        }}
    }}
}}
"""


def haproxy_config(prefix: str, port: int, backends: Sequence[str]) -> str:
    """One thread, `http-reuse always` (HAProxy's upstream keep-alive), round robin."""
    servers = "".join(f"    server b{i} {b}\n" for i, b in enumerate(backends))
    # HAProxy refuses to start when it cannot raise its fd limit to ~2 x maxconn, and a
    # non-root user cannot go past the hard limit: size maxconn from it.
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    maxconn = 20000 if hard == resource.RLIM_INFINITY else max(1024, min(20000, (hard - 200) // 2))
    return f"""# fastgw bench anchor: HAProxy, one thread (written by bench/anchors.py)
global
    nbthread 1
    maxconn {maxconn}
    pidfile {prefix}/haproxy.pid

defaults
    mode http
    timeout connect 5s
    timeout client 75s
    timeout server 75s
    timeout http-keep-alive 75s
    http-reuse always

frontend fe
    bind 127.0.0.1:{port}
    default_backend iris

backend iris
    balance roundrobin
{servers}"""


class AnchorProcess(ServerProcess):
    """nginx or HAProxy in the foreground on a free port, in a temp prefix directory."""

    def __init__(
        self, kind: str, backends: Sequence[str], *, startup_timeout: float = 10.0,
        taskset: str | None = None,
        nginx_conf: Callable[[str, int, Sequence[str]], str] = nginx_config,
    ) -> None:
        """`nginx_conf(prefix, port, backends)`: the nginx.conf to run (bench/edge_probe
        runs nginx with its limits instead of the load test's config)."""
        assert kind in (NGINX, HAPROXY)
        super().__init__(kind, [free_port()], startup_timeout=startup_timeout, taskset=taskset)
        self.kind = kind
        self.binary = shutil.which(kind) or f"/usr/sbin/{kind}"
        if kind == NGINX:
            path = self.write_config("nginx.conf", nginx_conf(self.prefix, self.port, backends))
            self.args = nginx_args(self.binary, self.prefix, path)
        else:
            path = self.write_config("haproxy.cfg",
                                     haproxy_config(self.prefix, self.port, backends))
            self.args = [self.binary, "-db", "-f", str(path)]

    def version(self) -> str:
        return binary_version(self.binary)


def binary_version(binary: str) -> str:
    """First line of `binary -v` (nginx prints it on stderr, HAProxy on stdout)."""
    out = subprocess.run([binary, "-v"], check=False, capture_output=True, text=True, timeout=5)
    text = (out.stdout + out.stderr).strip().splitlines()
    return text[0] if text else "?"
