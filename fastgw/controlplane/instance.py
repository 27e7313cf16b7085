"""One fastgw per proxy port.

Workers listen with SO_REUSEPORT, and the kernel lets any socket of the same user with that
option join: a second ``fastgw run`` (another config, another admin port) used to start
cleanly on the same proxy port, and the traffic split between the two configs. At start-up
the supervisor now

1. takes a lock named after the proxy address: an abstract Unix socket
   ``@fastgw-proxy HOST:PORT``, bound and listening for the supervisor's whole life, which
   the kernel releases however the process ends (no stale lock file). A second instance
   finds the name taken and asks the holder who it is (SO_PEERCRED gives its pid);
2. binds the address without SO_REUSEPORT (and closes it again): that fails while anything
   listens there, fastgw or not, on that address or a wildcard one. The pid of such a
   listener is looked up in /proc when this user may see it.

Either way the second instance exits 1 with a message naming the port and, when known, the
other process's pid.
"""

from __future__ import annotations

import errno
import os
import socket
import struct
from typing import Any

from fastgw.config.listeners import ListenAddress, parse_listen

__all__ = ["StartupError", "claim_proxy_address", "listener_pids"]


class StartupError(Exception):
    """A reason to refuse to start, meant for the operator as is."""


def claim_proxy_address(listen: str | ListenAddress) -> socket.socket:
    """Make this process the one fastgw on ``listen`` (one proxy_listen entry); returns
    the lock socket, to keep open as long as the process serves. Raises StartupError."""
    if isinstance(listen, str):
        host, port = parse_listen(listen)
    else:
        host, port = listen.host, listen.port
    name = f"\0fastgw-proxy {host}:{port}"
    lock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    if not _bind(lock, name):
        pid = _lock_holder(name)
        who = f"another fastgw (pid {pid})" if pid else "another fastgw"
        raise StartupError(f"proxy_listen {listen}: port {port} is already served by {who}; "
                           "stop it first, or give this one another proxy_listen")
    lock.set_inheritable(False)
    probe = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT is no owner
    try:
        free = _bind(probe, (host, port))
    except OSError:
        lock.close()
        raise
    finally:
        probe.close()
    if not free:
        lock.close()
        pids = listener_pids(port)
        who = f"process {', '.join(map(str, pids))}" if pids else "another process"
        raise StartupError(f"proxy_listen {listen}: port {port} is already in use by {who}")
    return lock


def _bind(sock: socket.socket, address: Any) -> bool:
    """Bind and listen; False (socket closed) when the address is taken."""
    try:
        sock.bind(address)
        sock.listen(8)
    except OSError as exc:
        sock.close()
        if exc.errno != errno.EADDRINUSE:
            raise
        return False
    return True


def _lock_holder(name: str) -> int | None:
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(0.5)
    try:
        probe.connect(name)
        creds = probe.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        pid, _, _ = struct.unpack("3i", creds)
        return pid or None
    except OSError:
        return None
    finally:
        probe.close()


def listener_pids(port: int) -> list[int]:
    """Pids of processes with a TCP socket listening on ``port`` (those /proc shows us)."""
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                next(f, None)
                for line in f:
                    fields = line.split()
                    # local_address is HEXIP:HEXPORT; state 0A is LISTEN
                    if len(fields) > 9 and fields[3] == "0A" and \
                            int(fields[1].rsplit(":", 1)[1], 16) == port:
                        inodes.add(fields[9])
        except OSError:
            continue
    if not inodes:
        return []
    wanted = {f"socket:[{inode}]" for inode in inodes}
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            fds = os.listdir(f"/proc/{entry}/fd")
            if any(os.readlink(f"/proc/{entry}/fd/{fd}") in wanted for fd in fds):
                pids.append(int(entry))
        except OSError:
            continue
    return sorted(pids)
