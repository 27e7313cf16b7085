"""Request ids: one per request, the client's X-Request-Id when it is a plain token."""

from __future__ import annotations

from typing import Final

import os
import re
import sys
from array import array

__all__ = ["ID_BATCH", "RequestIds", "valid_request_id"]

ID_BATCH: Final = 1024  # ids formatted at a time

_REQUEST_ID: Final = re.compile(rb"[A-Za-z0-9._:@+/=-]{1,128}")


def valid_request_id(value: bytes) -> bool:
    """A client's X-Request-Id is kept only if it is a plain token (no spaces, no CR/LF)."""
    return _REQUEST_ID.fullmatch(value) is not None


class RequestIds:
    """Per-worker ids in Kong's shape (32 hex digits): 24 random, then an 8-digit counter.

    Formatted in batches: handing one out is a list index.
    """

    __slots__ = ("prefix", "start", "_ids", "_next")

    def __init__(self) -> None:
        self.prefix = os.urandom(12).hex().encode()
        self.start = 0
        self._ids: list[bytes] = []
        self._next = 0

    def new(self) -> bytes:
        i = self._next
        ids = self._ids
        if i < len(ids):
            self._next = i + 1
            return ids[i]
        return self._refill()

    def _refill(self) -> bytes:
        start = self.start
        if start + ID_BATCH > 0xFFFFFFFF:  # counter exhausted: a new prefix keeps ids unique
            self.prefix = os.urandom(12).hex().encode()
            start = 0
        self.start = start + ID_BATCH
        prefix = self.prefix
        # The batch's counters as one big-endian buffer, hexed at once: a slice per id
        # instead of a %-format per id (which cost more than the rest of the id's use).
        counters = array("I", range(start + 1, start + ID_BATCH + 1))
        if sys.byteorder == "little":
            counters.byteswap()
        digits = counters.tobytes().hex().encode()
        self._ids = [prefix + digits[i:i + 8] for i in range(0, 8 * ID_BATCH, 8)]
        self._next = 1
        return self._ids[0]
