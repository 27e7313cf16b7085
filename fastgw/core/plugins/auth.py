"""Authentication and authorization decisions: key-auth, basic-auth, acl (Kong 3.x).

key-auth (``kong/plugins/key-auth/handler.lua``): for each of ``key_names`` in order, the
key is looked for in the request's fields (``key_in_header``), its query string
(``key_in_query``) and its body (``key_in_body``: form or JSON); a name given twice is
401 "Duplicate API key found"; no key is 401 "No API key found in request" with
``WWW-Authenticate: Key realm="kong"``; an unknown key is 401 "Invalid authentication
credentials".

basic-auth (``access.lua``): ``Proxy-Authorization`` then ``Authorization``,
``Basic base64(username:password)``; neither field is 401 "Unauthorized" with
``WWW-Authenticate: Basic realm="kong"``; a wrong username or password is 401 "Invalid
authentication credentials" (Kong 3.x; 2.x answered 403).

acl (``handler.lua``): no consumer is 401 "Unauthorized" (403 "You cannot consume this
service" when a credential was found but no consumer); an ``allow`` list admits consumers
in one of its groups, a ``deny`` list refuses them; the consumer's groups go upstream in
``X-Consumer-Groups`` unless ``hide_groups_header``.
"""

from __future__ import annotations

import binascii
import hmac
import re
from base64 import b64decode
from typing import Any, Sequence
from urllib.parse import parse_qsl, unquote_plus

import orjson

from fastgw.config.credentials import hash_password

__all__ = ["DUPLICATE_KEY", "NO_KEY", "INVALID_CREDENTIALS", "UNAUTHORIZED", "ACL_DENIED",
           "KEY_REALM", "BASIC_REALM", "find_api_key", "remove_query_args", "parse_basic",
           "password_matches", "acl_allows", "body_fields"]

DUPLICATE_KEY = "Duplicate API key found"
NO_KEY = "No API key found in request"
INVALID_CREDENTIALS = "Invalid authentication credentials"
UNAUTHORIZED = "Unauthorized"
ACL_DENIED = "You cannot consume this service"
KEY_REALM = b'WWW-Authenticate: Key realm="kong"\r\n'
BASIC_REALM = b'WWW-Authenticate: Basic realm="kong"\r\n'

Fields = Sequence[tuple[bytes, bytes, bytes]]  # (lower name, name, value), as RequestHead


def body_fields(content_type: bytes | None, body: bytes) -> dict[str, Any]:
    """A request body's top-level fields (form-urlencoded or a JSON object), else {}."""
    kind = (content_type or b"").split(b";", 1)[0].strip().lower()
    try:
        if kind == b"application/x-www-form-urlencoded":
            out: dict[str, Any] = {}
            for k, v in parse_qsl(body.decode("utf-8"), keep_blank_values=True):
                out[k] = [out[k], v] if k in out and not isinstance(out[k], list) else (
                    out[k] + [v] if k in out else v)
            return out
        if kind == b"application/json" or kind.endswith(b"+json"):
            data = orjson.loads(body)
            return data if isinstance(data, dict) else {}
    except (UnicodeDecodeError, orjson.JSONDecodeError):
        return {}
    return {}


def _query_values(query: bytes, name: str) -> list[str]:
    if not query or len(query) < 2:
        return []
    return [v for k, v in parse_qsl(query[1:].decode("latin-1"), keep_blank_values=True)
            if k == name]


def find_api_key(key_names: Sequence[str], headers: Fields, query: bytes,
                 body: dict[str, Any] | None, *, in_header: bool = True, in_query: bool = True,
                 ) -> tuple[str | None, str | None, bool]:
    """(key, the key name it was found under, duplicate). ``query`` keeps its "?";
    ``body`` is ``body_fields(...)`` when ``key_in_body``, else None."""
    for name in key_names:
        lname = name.lower().encode("latin-1")
        values: list[str] = []
        if in_header:
            values = [v.decode("latin-1") for ln, _, v in headers if ln == lname]
        if not values and in_query:
            values = _query_values(query, name)
        if not values and body is not None and name in body:
            found = body[name]
            values = found if isinstance(found, list) else [found]
        if len(values) > 1:
            return None, name, True
        if values and isinstance(values[0], str):
            return values[0], name, False
    return None, None, False


def remove_query_args(query: bytes, names: Sequence[str]) -> bytes:
    """The query string (with its "?") without the arguments named (hide_credentials);
    the other arguments are kept byte for byte."""
    if len(query) < 2:
        return query
    kept = [part for part in query[1:].split(b"&")
            if unquote_plus(part.split(b"=", 1)[0].decode("latin-1")) not in names]
    return b"?" + b"&".join(kept) if kept else b""


_BASIC_RE = re.compile(rb"\s*[Bb]asic\s*(.+)")


def parse_basic(value: bytes | None) -> tuple[str, str] | None:
    """``Basic base64(user:password)`` -> (user, password); None when unreadable."""
    if value is None:
        return None
    m = _BASIC_RE.match(value)
    if m is None:
        return None
    try:
        decoded = b64decode(m.group(1).strip(), validate=False).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None
    user, sep, password = decoded.partition(":")
    if not sep or not user:
        return None
    return user, password


def password_matches(stored_hash: str, consumer_id: str, password: str) -> bool:
    """Kong's basic-auth check, in constant time (fastgw.config.credentials.hash_password)."""
    return hmac.compare_digest(stored_hash, hash_password(consumer_id, password))


def acl_allows(allow: Sequence[str] | None, deny: Sequence[str] | None,
               groups: Sequence[str]) -> bool:
    """Whether a consumer with ``groups`` passes an allow (or deny) list."""
    if allow:
        return any(g in allow for g in groups)
    if deny:
        return not any(g in deny for g in groups)
    return True
