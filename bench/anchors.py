"""nginx and HAProxy as anchors: the same two backends, round robin, one worker/thread.

Why anchors: absolute numbers on a shared 2-core box mean little; "fastgw costs X times what
nginx costs for the same job on the same box in the same minute" means a lot. The configs
follow reference/performance.md: upstream keep-alive on (nginx `keepalive 128` +
HTTP/1.1 + empty Connection header; HAProxy `http-reuse always`), one worker, no access log.

Both run in a temporary prefix directory, in the foreground, so they work as root and as an
ordinary user and leave nothing behind: nginx gets `-p DIR -e DIR/error.log` (so it never
touches /var/log/nginx, which a non-root user cannot open) and every temp path inside DIR;
as root, `user` is set to root's own account because the default (`nobody`) could not write
the temp dirs we created. Basic auth for real backends needs no config line: the load
generator sends the Authorization header and both proxies forward it untouched.
"""

from __future__ import annotations

import grp
import os
import pwd
import resource
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Callable, Sequence

from tests.support.gateway import free_port, wait_port

__all__ = ["AnchorProcess", "nginx_config", "nginx_conf_text", "haproxy_config", "NGINX",
           "HAPROXY"]

NGINX = "nginx"
HAPROXY = "haproxy"


def _user_line() -> str:
    if os.geteuid() != 0:
        return ""  # only a root master switches user; nginx warns if told to otherwise
    user = pwd.getpwuid(os.geteuid()).pw_name
    group = grp.getgrgid(os.getegid()).gr_name
    return f"user {user} {group};\n"


def nginx_config(prefix: str, port: int, backends: Sequence[str]) -> str:
    """One worker, upstream keep-alive, round robin, streaming like fastgw does.

    proxy_request_buffering off: stream the 1 MiB POST to the backend as it arrives (as
    fastgw does) instead of spooling it to a temp file first. proxy_max_temp_file_size 0:
    responses larger than the memory buffers are relayed at the client's pace, never
    written to disk (fastgw never touches the disk either). client_max_body_size 0: no limit
    (nginx's default 1m would reject a body a header's worth over 1 MiB).
    """
    servers = "".join(f"        server {b};\n" for b in backends)
    return nginx_conf_text(prefix, "fastgw bench anchor: nginx, one worker (written by "
                           "bench/anchors.py)", f"""    keepalive_requests 1000000;
    keepalive_timeout 75s;
    upstream iris {{
{servers}        keepalive 128;
    }}
    server {{
        listen 127.0.0.1:{port};
        client_max_body_size 0;
        location / {{
            proxy_pass http://iris;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_request_buffering off;
            proxy_max_temp_file_size 0;
        }}
    }}
""")


def nginx_conf_text(prefix: str, title: str, http: str) -> str:
    """An nginx.conf that runs in the foreground from `prefix` as any user: one worker,
    pid, logs and every temp path inside `prefix`; `http` is the rest of its http block."""
    return f"""# {title}
{_user_line()}worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
worker_rlimit_nofile 65536;
events {{
    worker_connections 16384;
}}
http {{
    access_log off;
    client_body_temp_path {prefix}/client_body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
{http}}}
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


class AnchorProcess:
    """nginx or HAProxy in the foreground on a free port, in a temp prefix directory."""

    def __init__(
        self, kind: str, backends: Sequence[str], *, startup_timeout: float = 10.0,
        taskset: str | None = None,
        nginx_conf: Callable[[str, int, Sequence[str]], str] = nginx_config,
    ) -> None:
        """`nginx_conf(prefix, port, backends)`: the nginx.conf to run (bench/edge_probe
        runs nginx with request buffering and limits instead of the load test's config)."""
        assert kind in (NGINX, HAPROXY)
        self.kind = kind
        self.port = free_port()
        self._dir = tempfile.TemporaryDirectory(prefix=f"bench-{kind}-")
        self.prefix = self._dir.name
        self.startup_timeout = startup_timeout
        binary = shutil.which(kind) or f"/usr/sbin/{kind}"
        self.binary = binary
        if kind == NGINX:
            for sub in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi", "logs"):
                Path(self.prefix, sub).mkdir()
            self.config_text = nginx_conf(self.prefix, self.port, backends)
            self.config_path = Path(self.prefix, "nginx.conf")
            args = [binary, "-p", self.prefix, "-e", f"{self.prefix}/error.log",
                    "-c", str(self.config_path), "-g", "daemon off;"]
        else:
            self.config_text = haproxy_config(self.prefix, self.port, backends)
            self.config_path = Path(self.prefix, "haproxy.cfg")
            args = [binary, "-db", "-f", str(self.config_path)]
        self.config_path.write_text(self.config_text)
        if taskset:
            args = ["taskset", "-c", taskset, *args]
        self.args = args
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = Path(self.prefix, "stderr.log")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def version(self) -> str:
        out = subprocess.run([self.binary, "-v"], capture_output=True, text=True, timeout=5)
        text = (out.stdout + out.stderr).strip().splitlines()
        return text[0] if text else "?"

    def start(self) -> "AnchorProcess":
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            self.args, stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT,
            cwd=self.prefix,
        )
        deadline = time.monotonic() + self.startup_timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.kind} exited with {self.proc.returncode}:\n{self.log()}")
            try:
                wait_port("127.0.0.1", self.port, 0.2)
                return self
            except TimeoutError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise TimeoutError(f"{self.kind} did not listen:\n{self.log()}")

    def log(self) -> str:
        text = ""
        for name in ("stderr.log", "error.log"):
            try:
                text += Path(self.prefix, name).read_text(errors="replace")
            except OSError:
                pass
        return text

    def stop(self) -> int | None:
        proc, self.proc = self.proc, None
        if proc is None:
            return None
        if proc.poll() is None:
            proc.terminate()  # nginx: fast shutdown; haproxy -db: exits
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        self._log.close()
        return proc.returncode

    def __enter__(self) -> "AnchorProcess":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
        self._dir.cleanup()
