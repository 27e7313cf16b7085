"""Request-path normalization and Kong's upstream path joining.

Two pure functions, both on the per-request path:

``normalize_path(raw)``
    What Kong's router does to the request path before matching
    (``kong/tools/uri.lua:normalize(uri, true)``):

    1. percent-encoded triplets are case-normalized to upper-case hex, and
       triplets of *unreserved* characters (RFC 3986 2.3: ALPHA DIGIT - . _ ~)
       are decoded (``%7e`` -> ``~``, ``%2f`` -> ``%2F``);
    2. dot segments are removed (RFC 3986 5.2.4; ``%2E`` counts as a dot
       because decoding runs first);
    3. runs of ``/`` are merged into one.

    Deviation from Kong, on purpose: Kong decodes every triplet that is not a
    reserved character (``%20`` becomes a raw space) and re-escapes later when
    building the upstream request line. We only decode unreserved characters,
    so the normalized path is always safe to forward verbatim.

    Most request paths contain none of ``%``, ``/.`` or ``//``; those are
    returned unchanged (same object) after three substring scans.

``join_upstream_path(service_path, prefix, request_path, strip_path, path_handling)``
    Kong's ``get_upstream_uri_v0`` (``kong/router/utils.lua``) and the v1
    branch of ``kong/router/traditional.lua``, transcribed branch for branch.
    ``prefix`` is the part of the (normalized) request path that the route
    matched: the plain route path, or the whole regex match; ``None`` for
    routes matched without a path (host/method/header-only), which Kong treats
    as a prefix of ``/``.
"""

from __future__ import annotations

from typing import Final

import re

__all__ = ["normalize_path", "join_upstream_path", "sanitize_uri_postfix"]

_PCT_RE: Final = re.compile(r"%([0-9A-Fa-f]{2})")
_UNRESERVED: Final = frozenset(
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~"
)


def _pct_repl(m: re.Match[str]) -> str:
    hexpair = m.group(1)
    ch = chr(int(hexpair, 16))
    if ch in _UNRESERVED:
        return ch
    return "%" + hexpair.upper()


def _remove_dot_segments(path: str) -> str:
    # Segment-wise rewrite of Kong's normalize loop: every kept segment is
    # emitted with its trailing "/", so a trailing slash survives and "//"
    # (empty segments) disappear.
    absolute = path.startswith("/")
    parts = path.split("/")
    if absolute:
        parts = parts[1:]
    last = parts.pop()
    out: list[str] = []
    for seg in parts:
        if seg == "" or seg == ".":
            continue
        if seg == "..":
            if out:
                out.pop()
            continue
        out.append(seg + "/")
    if last == "..":
        if out:
            out.pop()
    elif last != "." and last != "":
        out.append(last)
    return ("/" if absolute else "") + "".join(out)


def normalize_path(raw: str) -> str:
    """Normalize a raw request path (no query string) the way Kong routes it."""
    # Fast path: nothing to decode, no dot segment, no empty segment.
    if "%" not in raw and "/." not in raw and "//" not in raw and raw[:1] != ".":
        return raw
    if "%" in raw:
        raw = _PCT_RE.sub(_pct_repl, raw)
        if "/." not in raw and "//" not in raw and raw[:1] != ".":
            return raw
    return _remove_dot_segments(raw)


def sanitize_uri_postfix(postfix: str) -> str:
    """Kong's ``sanitize_uri_postfix``: drop a leading ``./`` or ``../``."""
    if not postfix:
        return postfix
    if postfix == "." or postfix == "..":
        return ""
    if postfix.startswith("./"):
        return postfix[2:]
    if postfix.startswith("../"):
        return postfix[3:]
    return postfix


def join_upstream_path(
    service_path: str | None,
    prefix: str | None,
    request_path: str,
    strip_path: bool,
    path_handling: str = "v0",
) -> str:
    """Build the upstream path from the service path and the request path.

    ``request_path`` must already be normalized (what the router matched on).
    """
    base = service_path or "/"
    # Kong: prefix = match_t.prefix or "/"; postfix = req_uri:sub(#prefix + 1).
    plen = 1 if prefix is None else len(prefix)
    postfix = sanitize_uri_postfix(request_path[plen:])

    if path_handling == "v1":
        if strip_path:
            if base[-1] == "/" and postfix[:1] == "/":
                return base[:-1] + postfix  # double "/", drop one
            return base + postfix
        return base + request_path[1:]

    # v0 (default)
    if base[-1] == "/":
        if strip_path:
            if postfix == "":
                if base == "/":
                    return "/"
                if request_path[-1:] == "/":
                    return base
                return base[:-1]
            if postfix[0] == "/":
                return base[:-1] + postfix
            return base + postfix
        return base + request_path[1:]

    if strip_path:
        if postfix == "":
            if len(request_path) > 1 and request_path[-1] == "/":
                return base + "/"
            return base
        if postfix[0] == "/":
            return base + postfix
        return base + "/" + postfix
    if request_path == "/":
        return base
    return base + request_path
