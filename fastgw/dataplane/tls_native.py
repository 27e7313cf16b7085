"""Two OpenSSL settings Python's ``ssl`` does not expose: session ticket keys and the
session timeout. Used so that every worker encrypts session tickets with the same keys
(the supervisor makes them; a client resumes its session whichever worker SO_REUSEPORT
hands its next connection to), and so that ``ssl_session_timeout`` applies.

How, and why it is safe enough to do:
- the functions are OpenSSL's own (``SSL_CTX_ctrl``, ``SSL_CTX_set_timeout``), looked up
  through the ``_ssl`` extension module's handle, so they are the very libssl Python's
  ``ssl`` uses, never another copy on the system;
- the ``SSL_CTX *`` of a Python ``SSLContext`` is the first field after the object header
  (CPython's PySSLContext, unchanged since 3.x began): read only on CPython with the GIL,
  64-bit pointers, and then checked: OpenSSL must report for it exactly the options and
  verify mode Python reports for the context, else nothing is touched;
- any doubt (another interpreter, a missing symbol, a failed check, OpenSSL refusing the
  keys) returns False: the caller logs it and goes on with per-worker tickets, which
  only makes resumption less frequent across workers.
"""

from __future__ import annotations

import ctypes
import logging
import ssl
import sys
from typing import Any

__all__ = ["TICKET_KEYS_SIZE", "available", "set_session_timeout", "set_ticket_keys"]

log = logging.getLogger("fastgw.tls")

TICKET_KEYS_SIZE = 80  # key name 16 + HMAC secret 32 + AES key 32 (OpenSSL >= 1.1.0)
_SSL_CTRL_SET_TLSEXT_TICKET_KEYS = 59
_HEADER = ctypes.sizeof(ctypes.c_ssize_t) + ctypes.sizeof(ctypes.c_void_p)  # PyObject_HEAD
# Python's verify modes as OpenSSL's SSL_VERIFY_* flags (PEER 1, FAIL_IF_NO_PEER_CERT 2).
_VERIFY_FLAGS = {ssl.CERT_NONE: 0, ssl.CERT_OPTIONAL: 1, ssl.CERT_REQUIRED: 3}


def _library() -> Any | None:
    if sys.implementation.name != "cpython" or ctypes.sizeof(ctypes.c_void_p) != 8 \
            or getattr(sys, "_is_gil_enabled", lambda: True)() is False:
        return None
    try:
        import _ssl

        lib = ctypes.CDLL(_ssl.__file__)
        lib.SSL_CTX_ctrl.restype = ctypes.c_long
        lib.SSL_CTX_ctrl.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_long,
                                     ctypes.c_void_p]
        lib.SSL_CTX_set_timeout.restype = ctypes.c_long
        lib.SSL_CTX_set_timeout.argtypes = [ctypes.c_void_p, ctypes.c_long]
        lib.SSL_CTX_get_options.restype = ctypes.c_uint64
        lib.SSL_CTX_get_options.argtypes = [ctypes.c_void_p]
        lib.SSL_CTX_get_verify_mode.restype = ctypes.c_int
        lib.SSL_CTX_get_verify_mode.argtypes = [ctypes.c_void_p]
    except (ImportError, OSError, AttributeError):
        return None
    return lib


_LIB = _library()


def available() -> bool:
    return _LIB is not None


def _ctx_pointer(ctx: ssl.SSLContext) -> int | None:
    """The context's SSL_CTX pointer, if OpenSSL confirms it is that context's."""
    if _LIB is None or type(ctx).__basicsize__ < _HEADER + 8:
        return None
    pointer = ctypes.c_void_p.from_address(id(ctx) + _HEADER).value
    if not pointer or pointer % 8:
        return None
    if _LIB.SSL_CTX_get_options(pointer) != int(ctx.options) \
            or _LIB.SSL_CTX_get_verify_mode(pointer) != _VERIFY_FLAGS[ctx.verify_mode]:
        return None
    return int(pointer)


def set_ticket_keys(ctx: ssl.SSLContext, keys: bytes) -> bool:
    """Encrypt this context's session tickets with `keys` (TICKET_KEYS_SIZE bytes)."""
    pointer = _ctx_pointer(ctx)
    if pointer is None or len(keys) != TICKET_KEYS_SIZE:
        return False
    buffer = ctypes.create_string_buffer(keys, len(keys))
    assert _LIB is not None
    return _LIB.SSL_CTX_ctrl(pointer, _SSL_CTRL_SET_TLSEXT_TICKET_KEYS, len(keys), buffer) == 1


def set_session_timeout(ctx: ssl.SSLContext, seconds: int) -> bool:
    """How long a session (cached, or in a ticket) may be resumed."""
    pointer = _ctx_pointer(ctx)
    if pointer is None:
        return False
    assert _LIB is not None
    _LIB.SSL_CTX_set_timeout(pointer, seconds)
    return True
