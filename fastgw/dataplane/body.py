"""Bodies the gateway holds: a request body read before it goes upstream, and a response
body read faster than the client takes it.

`RequestBody` (request_buffering, Kong's default): bytes stay in memory up to
`client_body_buffer_size` (nginx's and Kong's 8 KiB), then everything goes to a temp
file in `client_body_temp_path`, as nginx does. The body can be read from the start as
often as needed (a retry sends it again) and is removed when the exchange ends. With
request buffering off, the same object keeps only what a retry would need (REPLAY_LIMIT
bytes) and what arrives before the upstream connection is ready.

`ResponseSpool` (response_buffering, Kong's default): while the client's socket is full,
the backend's bytes keep coming into memory (up to a buffer size) and then into a temp
file, so a slow reader does not hold a backend connection; it is drained in order as the
client's socket empties. Over `limit` bytes the backend is paused after all.

Temp files are named `fastgw-<pid>-<n>` so that a worker can remove what a dead
predecessor left behind (`remove_stale_files`). File I/O is synchronous: these are writes
to the page cache of a local directory, which is what nginx does on its event loop too.
"""

from __future__ import annotations

import itertools
import os
from typing import Final, Iterator

__all__ = ["REPLAY_LIMIT", "RequestBody", "ResponseSpool", "TempDir", "remove_stale_files"]

REPLAY_LIMIT: Final = 65536  # streamed request bytes kept for a retry (request_buffering off)
READ_BLOCK: Final = 65536  # bytes per read from a temp file
_counter = itertools.count(1)


class TempDir:
    """Where bodies spill: a directory made on first use, with unique file names."""

    __slots__ = ("path", "_made")

    def __init__(self, path: str) -> None:
        self.path = path
        self._made = False

    def open(self) -> tuple[int, str]:
        if not self._made:
            os.makedirs(self.path, mode=0o700, exist_ok=True)
            self._made = True
        name = os.path.join(self.path, f"fastgw-{os.getpid()}-{next(_counter)}")
        fd = os.open(name, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        return fd, name


def remove_stale_files(path: str) -> int:
    """Remove body files of workers that no longer run (a crash leaves them behind)."""
    removed = 0
    try:
        names = os.listdir(path)
    except OSError:
        return 0
    for name in names:
        parts = name.split("-")
        if len(parts) != 3 or parts[0] != "fastgw" or not parts[1].isdigit():
            continue
        pid = int(parts[1])
        if pid == os.getpid() or _alive(pid):
            continue
        try:
            os.unlink(os.path.join(path, name))
            removed += 1
        except OSError:
            pass
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class _Spill:
    """An append-only temp file."""

    __slots__ = ("fd", "name", "size")

    def __init__(self, temp: TempDir) -> None:
        self.fd, self.name = temp.open()
        self.size = 0

    def write(self, data: bytes | memoryview) -> None:
        view = memoryview(data)
        while view:
            n = os.write(self.fd, view)
            view = view[n:]
            self.size += n

    def read(self, offset: int, n: int) -> bytes:
        return os.pread(self.fd, n, offset)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
            try:
                os.unlink(self.name)
            except OSError:
                pass


class RequestBody:
    """A request body as received (decoded when chunked), in memory then in a temp file.

    `keep_all`: request buffering (everything is kept until `close`). Otherwise (a
    streamed body) the exchange keeps bytes here only until they are sent, and beyond
    REPLAY_LIMIT bytes `replayable` turns false: such a request is never sent twice.
    """

    __slots__ = ("memory_limit", "temp", "keep_all", "chunks", "size", "spill", "replayable")

    def __init__(self, memory_limit: int, temp: TempDir, keep_all: bool) -> None:
        self.memory_limit = memory_limit
        self.temp = temp
        self.keep_all = keep_all
        self.chunks: list[bytes] = []
        self.size = 0  # bytes received
        self.spill: _Spill | None = None
        self.replayable = True

    def append(self, data: bytes) -> None:
        self.size += len(data)
        spill = self.spill
        if spill is not None:
            spill.write(data)
            return
        self.chunks.append(data)
        if self.keep_all:
            if self.size > self.memory_limit:
                self._spill()
        elif self.size > REPLAY_LIMIT:
            # Too big to send twice: no retry once sent. The bytes stay until they are
            # sent (the exchange pauses the client at REPLAY_LIMIT, so this is bounded).
            self.replayable = False

    def _spill(self) -> None:
        spill = self.spill = _Spill(self.temp)
        for chunk in self.chunks:
            spill.write(chunk)
        self.chunks = []

    @property
    def in_memory(self) -> bool:
        return self.spill is None

    def blocks(self, start: int = 0) -> Iterator[bytes]:
        """The kept bytes from `start`, in blocks (memory chunks, or READ_BLOCK file reads)."""
        spill = self.spill
        if spill is None:
            skip = start
            for chunk in self.chunks:
                if skip >= len(chunk):
                    skip -= len(chunk)
                    continue
                yield chunk[skip:] if skip else chunk
                skip = 0
            return
        offset = start
        while offset < spill.size:
            block = spill.read(offset, READ_BLOCK)
            if not block:
                return
            offset += len(block)
            yield block

    def forget(self) -> None:
        """Streaming: the bytes kept so far are no longer needed (sent, no retry left)."""
        if not self.keep_all:
            self.chunks = []

    def close(self) -> None:
        self.chunks = []
        if self.spill is not None:
            self.spill.close()
            self.spill = None


class ResponseSpool:
    """Response bytes waiting for a full client socket, in order: memory, then a file."""

    __slots__ = ("memory_limit", "limit", "temp", "chunks", "memory", "spill", "read_at")

    def __init__(self, memory_limit: int, limit: int, temp: TempDir) -> None:
        self.memory_limit = memory_limit
        self.limit = limit
        self.temp = temp
        self.chunks: list[bytes] = []
        self.memory = 0
        self.spill: _Spill | None = None
        self.read_at = 0  # file offset of the next unread byte

    def __len__(self) -> int:
        if self.spill is not None:
            return self.spill.size - self.read_at
        return self.memory

    @property
    def full(self) -> bool:
        return len(self) >= self.limit

    def append(self, data: bytes) -> None:
        spill = self.spill
        if spill is not None:
            spill.write(data)
            return
        self.chunks.append(data)
        self.memory += len(data)
        if self.memory > self.memory_limit:
            spill = self.spill = _Spill(self.temp)
            for chunk in self.chunks:
                spill.write(chunk)
            self.chunks = []
            self.memory = 0
            self.read_at = 0

    def take(self) -> bytes | list[bytes] | None:
        """The next bytes to write (None when empty): all of memory, or one file block."""
        spill = self.spill
        if spill is None:
            if not self.chunks:
                return None
            chunks = self.chunks
            self.chunks = []
            self.memory = 0
            return chunks
        block = spill.read(self.read_at, READ_BLOCK)
        self.read_at += len(block)
        if self.read_at >= spill.size:
            spill.close()  # drained: back to memory for what comes next
            self.spill = None
            self.read_at = 0
        return block or None

    def close(self) -> None:
        self.chunks = []
        self.memory = 0
        if self.spill is not None:
            self.spill.close()
            self.spill = None
