"""Kong-compatible HTTP router (``traditional_compatible`` flavor semantics).

Theory of operation
===================

A route matches a request when *all* of its configured fields match (methods,
hosts, headers, paths); inside one field any value may match. Among the routes
that match, the one with the highest Kong priority wins. This module compiles
the route list once into a structure where a lookup touches only the handful
of routes that *could* match the request path, so the per-request cost does
not grow with the number of routes.

Priority
--------
Kong 3.x (``kong/router/transform.lua:get_priority``) first splits every route
into one matcher per path group: all regex paths form one group, plain paths
are grouped by length. Each group gets a 64-bit priority, compared as::

    match_weight      number of fields set (methods, hosts, headers, paths)
    PLAIN_HOST_ONLY   hosts set and none of them has a "*"
    headers_count     number of header names
    REGEX_URL         the group is the regex group
    regex_priority    only counts for the regex group
    max_length        length of the (plain) paths in the group

We keep that order as a tuple and append ``created_at`` (older first), ``id``
and configuration order so that equal priorities resolve deterministically.
All groups of all routes are sorted once by that key and each gets an integer
*rank* (0 = best). During matching only ranks are compared.

Path trie
---------
Every (group, path) pair becomes an ``_Entry`` hung on a node of a radix tree
(compressed prefix trie over path characters). Kong's plain paths are *string*
prefixes ("/route" matches "/routereq"), which is exactly "the request path
walks through the node where the route path ends". The key of an entry is:

* plain path: the normalized path itself;
* regex path: its literal prefix (``~/version/\\d+`` -> "/version/"), found with
  the stdlib regex parser; the regex is anchored at the start of the path so
  the request can only match if it begins with that literal. Regexes without
  a usable literal prefix hang on the root and are tested for every request;
* no path (host/method/header-only routes): the root node.

Each node keeps the entries whose key ends there in two places, both sorted by
rank: ``entries`` (routes without hosts, or with wildcard hosts, which carry a
host check) and ``by_host`` (exact host, or "host:port" -> entries; the host
condition is satisfied by the dictionary lookup itself).

Matching walks the trie along the normalized request path (one dict lookup and
one ``startswith`` per node), collecting the candidate lists of the visited
nodes plus their ``by_host`` lists for the request host. Each list is scanned
in rank order and abandoned as soon as its rank cannot beat the best match
found so far; conditions (method, wildcard host, headers) and regexes are only
evaluated for entries that would win. So a lookup costs O(len(path)) node hops
plus the few candidates that share a prefix with the request.
"""

from __future__ import annotations

import re
import re._constants as _sre_c  # type: ignore[import-not-found]
import re._parser as _sre_parse  # type: ignore[import-not-found]
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final, Protocol

from fastgw.core.paths import join_upstream_path, normalize_path

__all__ = ["Router", "RouteMatch", "RouteLike"]

_MAX_HEADER_COUNT: Final = 255  # Kong caps headers_count at 8 bits
PAUSE_MASK: Final = 255  # a builder's pause() runs once every 256 routes
_NO_RANK: Final = 1 << 62
# PCRE named groups "(?<name>...)" -> Python "(?P<name>...)" (not lookbehinds).
_PCRE_NAMED_GROUP: Final = re.compile(r"\(\?<(?=[A-Za-z_])")


class RouteLike(Protocol):
    """The Kong Route attributes the router reads (duck-typed)."""

    @property
    def id(self) -> Any: ...
    @property
    def paths(self) -> Sequence[str] | None: ...
    @property
    def hosts(self) -> Sequence[str] | None: ...
    @property
    def methods(self) -> Sequence[str] | None: ...
    @property
    def headers(self) -> Mapping[str, Sequence[str]] | None: ...
    @property
    def regex_priority(self) -> int: ...
    @property
    def created_at(self) -> Any: ...
    @property
    def strip_path(self) -> bool: ...
    @property
    def path_handling(self) -> str: ...


class RouteMatch:
    """Result of a successful match.

    ``prefix`` is the part of the normalized path the route matched (the plain
    route path, or the whole regex match), ``None`` for path-less routes.
    ``captures`` holds Kong's ``uri_captures`` (0 = whole match, then
    positional and named groups) or ``None`` when the regex has no capture.
    ``path`` is the normalized request path.
    """

    __slots__ = ("route", "prefix", "captures", "path")

    def __init__(
        self, route: Any, prefix: str | None, captures: dict[Any, str] | None, path: str
    ) -> None:
        self.route = route
        self.prefix = prefix
        self.captures = captures
        self.path = path

    @property
    def stripped_prefix(self) -> str | None:
        """The prefix removed upstream (for X-Forwarded-Prefix), else ``None``."""
        return self.prefix if self.route.strip_path else None

    def upstream_path(self, service_path: str | None) -> str:
        """Upstream path per Kong's v0/v1 joining rules (query not included)."""
        route = self.route
        return join_upstream_path(
            service_path, self.prefix, self.path, route.strip_path,
            getattr(route, "path_handling", None) or "v0",
        )

    def __repr__(self) -> str:
        return f"RouteMatch(route={getattr(self.route, 'id', self.route)!r}, prefix={self.prefix!r})"


class _Entry:
    """One (route, path group, path) matcher; ``plain`` = nothing to check."""

    __slots__ = ("rank", "route", "prefix", "regex", "need", "methods", "wild", "headers",
                 "plain", "extra")

    def __init__(self, rank: int, route: Any, prefix: str | None, regex: re.Pattern[str] | None,
                 need: str | None, methods: frozenset[str] | None,
                 wild: tuple[tuple[bool, str, str | None], ...] | None,
                 headers: tuple[tuple[str, frozenset[str], tuple[re.Pattern[str], ...]], ...] | None
                 ) -> None:
        self.rank = rank
        self.route = route
        self.prefix = prefix
        self.regex = regex
        self.need = need  # literal the path must contain for the regex to match
        self.methods = methods
        self.wild = wild
        self.headers = headers
        self.extra = wild is not None or headers is not None  # needs _extra_ok()
        self.plain = methods is None and not self.extra


class _Node:
    # ``check`` is the label minus its first char (already matched by the
    # children dict key), or None when there is nothing left to compare.
    __slots__ = ("label", "check", "size", "children", "entries", "by_host")

    def __init__(self, label: str) -> None:
        self.label = label
        self.check: str | None = None
        self.size = 0
        self.children: dict[str, _Node] | None = None
        self.entries: list[_Entry] | None = None
        self.by_host: dict[str, list[_Entry]] | None = None


def _insert(root: _Node, key: str) -> _Node:
    """Return the node where ``key`` ends, splitting edges as needed."""
    node, i, n = root, 0, len(key)
    while i < n:
        children = node.children
        if children is None:
            children = node.children = {}
        child = children.get(key[i])
        if child is None:
            leaf = children[key[i]] = _Node(key[i:])
            return leaf
        label = child.label
        m = min(len(label), n - i)
        j = 1  # first char is equal by construction of the dict key
        while j < m and label[j] == key[i + j]:
            j += 1
        if j == len(label):
            node, i = child, i + j
            continue
        mid = _Node(label[:j])  # split the edge at the divergence point
        child.label = label[j:]
        mid.children = {child.label[0]: child}
        children[key[i]] = mid
        i += j
        if i == n:
            return mid
        leaf = mid.children[key[i]] = _Node(key[i:])
        return leaf
    return node


def _finalize(node: _Node, pause: Callable[[], None] | None = None) -> None:
    stack = [node]
    count = 0
    while stack:
        count += 1
        if pause is not None and count & PAUSE_MASK == PAUSE_MASK:
            pause()
        nd = stack.pop()
        nd.size = len(nd.label)
        nd.check = nd.label[1:] or None
        if nd.children:
            stack.extend(nd.children.values())


def _split_host_port(host: str) -> tuple[str, str | None]:
    i = host.rfind(":")
    if i > host.rfind("]") and host[i + 1:].isdigit():
        return host[:i], host[i + 1:]
    return host, None


def _literals(pattern: str) -> tuple[str, str | None]:
    """(literal prefix, longest other required literal) of an anchored regex.

    Every top-level LITERAL of the parsed pattern must appear in a match, in
    order; the leading run is a prefix of any match (used as the trie key),
    later runs are required substrings (a cheap pre-check before the regex).
    """
    try:
        parsed = _sre_parse.parse(pattern, 0)
    except Exception:
        return "", None
    if parsed.state.flags & re.IGNORECASE:
        return "", None
    runs: list[list[str]] = [[]]
    for idx, (op, av) in enumerate(parsed.data):
        if op is _sre_c.LITERAL:
            runs[-1].append(chr(av))
        elif idx == 0 and op is _sre_c.AT and av in (_sre_c.AT_BEGINNING,
                                                     _sre_c.AT_BEGINNING_STRING):
            continue
        elif runs[-1]:
            runs.append([])
        elif len(runs) == 1:
            runs.append([])  # no literal prefix at all
    prefix = "".join(runs[0])
    rest = ["".join(r) for r in runs[1:] if len(r) > 1]
    return prefix, max(rest, key=len) if rest else None


def sorted_in_slices(items: list[Any], pause: Callable[[], None] | None) -> list[Any]:
    """``items`` sorted by their first element (all distinct: the sort is stable either
    way). With a ``pause``, a merge sort that calls it every 256 items: one ``list.sort``
    of 10,000 priority keys holds the GIL for ~8 ms, which a proxy loop waiting for it
    would add to a request's latency. The same comparisons, in slices."""
    if pause is None or len(items) <= PAUSE_MASK + 1:
        return sorted(items, key=_first)
    runs: list[list[Any]] = []
    for start in range(0, len(items), PAUSE_MASK + 1):
        runs.append(sorted(items[start:start + PAUSE_MASK + 1], key=_first))
        pause()
    count = 0
    while len(runs) > 1:
        merged: list[list[Any]] = []
        for k in range(0, len(runs) - 1, 2):
            left, right = runs[k], runs[k + 1]
            out: list[Any] = []
            i = j = 0
            while i < len(left) and j < len(right):
                count += 1
                if count & PAUSE_MASK == PAUSE_MASK:
                    pause()
                if right[j][0] < left[i][0]:
                    out.append(right[j])
                    j += 1
                else:
                    out.append(left[i])
                    i += 1
            out.extend(left[i:])
            out.extend(right[j:])
            merged.append(out)
        if len(runs) % 2:
            merged.append(runs[-1])
        runs = merged
    return runs[0]


def _first(item: Any) -> Any:
    return item[0]


def _sortable_time(value: Any) -> float:
    # created_at may be an epoch number, None, or something else entirely.
    try:
        return float(value or 0)
    except (TypeError, ValueError):
        return 0.0


def _captures(m: re.Match[str]) -> dict[Any, str] | None:
    if m.re.groups == 0:
        return None
    caps: dict[Any, str] = {0: m.group(0)}
    for i, g in enumerate(m.groups(), 1):
        if g is not None:
            caps[i] = g
    for k, v in m.groupdict().items():
        if v is not None:
            caps[k] = v
    return caps if len(caps) > 1 else None  # Kong: only when there is a real capture


def _extra_ok(e: _Entry, hname: str | None, port: str | None,
              headers: Mapping[str, str] | None) -> bool:
    """Wildcard-host and header conditions (methods are checked inline)."""
    wild = e.wild
    if wild is not None:
        if hname is None:
            return False
        for is_suffix, text, wport in wild:
            if wport is not None and wport != port:
                continue
            if hname.endswith(text) if is_suffix else hname.startswith(text):
                break
        else:
            return False
    hdrs = e.headers
    if hdrs is not None:
        if headers is None:
            return False
        for name, values, regexes in hdrs:
            v = headers.get(name)
            if v is None:
                return False
            v = v.lower()
            if v in values:
                continue
            for rx in regexes:
                if rx.search(v) is not None:
                    break
            else:
                return False
    return True


class Router:
    """Compiled, immutable route table. Build with :meth:`Router.compile`."""

    __slots__ = ("_root", "_has_hosts", "_port_hosts", "_order", "uses_headers", "uses_methods",
                 "routes")

    def __init__(self) -> None:
        self._root = _Node("")
        self._has_hosts = False
        self._port_hosts = False
        self._order: tuple[tuple[Any, tuple[str, ...] | None], ...] = ()
        self.uses_headers = False
        self.uses_methods = False  # some route has a methods condition
        self.routes: tuple[Any, ...] = ()

    @property
    def uses_hosts(self) -> bool:
        """Some route has a hosts condition (else a request's host never matters)."""
        return self._has_hosts

    @classmethod
    def compile(cls, routes: Sequence[RouteLike],
                pause: Callable[[], None] | None = None) -> Router:
        """``pause``: called every few hundred routes, so a build in a thread can hand the
        GIL to the proxy loop (compiled code never gives it up on its own)."""
        self = cls()
        self.routes = tuple(routes)
        # 1. Split each route into Kong path groups and compute their priority keys.
        groups: list[tuple[tuple[Any, ...], Any, tuple[str, ...] | None, bool]] = []
        for order, route in enumerate(self.routes):
            if pause is not None and order & PAUSE_MASK == PAUSE_MASK:
                pause()
            methods, hosts, headers = route.methods, route.hosts, route.headers
            paths = route.paths
            if methods:
                self.uses_methods = True
            weight = (1 if methods else 0) + (1 if hosts else 0) + (1 if headers else 0) \
                + (1 if paths else 0)
            plain_host_only = 1 if hosts and not any("*" in h for h in hosts) else 0
            hcount = min(len(headers), _MAX_HEADER_COUNT) if headers else 0
            created = _sortable_time(route.created_at)
            rid = str(route.id or "")
            by_kind: dict[Any, list[str]] = {}
            if paths:
                for p in paths:
                    if p.startswith("~"):
                        by_kind.setdefault(True, []).append(p)
                    else:
                        p = normalize_path(p)
                        by_kind.setdefault(len(p), []).append(p)
            else:
                by_kind[0] = []
            for kind, plist in by_kind.items():
                is_rx = kind is True
                rp = (route.regex_priority or 0) if is_rx else 0
                length = 0 if is_rx else kind
                key = (-weight, -plain_host_only, -hcount, -int(is_rx), -rp, -length,
                       created, rid, order)
                groups.append((key, route, tuple(plist) if plist else None, is_rx))
        groups = sorted_in_slices(groups, pause)
        self._order = tuple((g[1], g[2]) for g in groups)

        # 2. Hang one entry per (group, path) on the trie; rank = sorted position.
        root = self._root
        for rank, (_key, route, group_paths, is_rx) in enumerate(groups):
            if pause is not None and rank & PAUSE_MASK == PAUSE_MASK:
                pause()
            methods_fs = frozenset(route.methods) if route.methods else None
            hdrs = self._compile_headers(route.headers) if route.headers else None
            exact: list[str] = []
            wild: list[tuple[bool, str, str | None]] = []
            for h in route.hosts or ():
                h = h.lower()
                name, port = _split_host_port(h)
                if port is not None:
                    self._port_hosts = True
                if name.startswith("*"):
                    wild.append((True, name[1:], port))
                elif name.endswith("*"):
                    wild.append((False, name[:-1], port))
                else:
                    exact.append(h)
            if exact or wild:
                self._has_hosts = True
            if hdrs is not None:
                self.uses_headers = True
            for path in group_paths or (None,):
                rx: re.Pattern[str] | None = None
                need: str | None = None
                if path is None:
                    key_str = ""
                elif is_rx:
                    pattern = _PCRE_NAMED_GROUP.sub("(?P<", path[1:])
                    try:
                        rx = re.compile(pattern)
                    except re.error as exc:
                        raise ValueError(
                            f"route {route.id!r}: invalid regex path {path!r}: {exc}") from None
                    key_str, need = _literals(pattern)
                else:
                    key_str = path
                node = _insert(root, key_str)
                prefix = None if is_rx else path
                if exact:
                    entry = _Entry(rank, route, prefix, rx, need, methods_fs, None, hdrs)
                    by_host = node.by_host
                    if by_host is None:
                        by_host = node.by_host = {}
                    for h in exact:
                        lst = by_host.setdefault(h, [])
                        if not lst or lst[-1] is not entry:
                            lst.append(entry)
                if wild or not exact:
                    entry = _Entry(rank, route, prefix, rx, need, methods_fs,
                                   tuple(wild) if wild else None, hdrs)
                    if node.entries is None:
                        node.entries = []
                    node.entries.append(entry)
        # Entries were appended in rank order, so every list is already sorted.
        _finalize(root, pause)
        return self

    def dismantle(self, pause: Callable[[], None]) -> None:
        """Take the trie apart a slice at a time (then the router matches nothing). Freed
        at once, a 10,000-route trie is one deallocation cascade of ~4 ms that no thread
        can interrupt; a replaced router is dismantled by the worker's builder thread."""
        stack = [self._root]
        self._root = _Node("")
        self._order = ()
        self.routes = ()
        count = 0
        while stack:
            node = stack.pop()
            if node.children is not None:
                stack.extend(node.children.values())
                node.children = None
            node.entries = None
            node.by_host = None
            count += 1
            if count & PAUSE_MASK == PAUSE_MASK:
                pause()

    @staticmethod
    def _compile_headers(
        headers: Mapping[str, Sequence[str]],
    ) -> tuple[tuple[str, frozenset[str], tuple[re.Pattern[str], ...]], ...]:
        out = []
        for name, values in headers.items():
            if isinstance(values, str):
                values = (values,)
            plain = frozenset(v.lower() for v in values if not v.startswith("~*"))
            # Kong: "~*value" is a case-insensitive regex on the header value.
            try:
                regexes = tuple(re.compile(v[2:].lower()) for v in values if v.startswith("~*"))
            except re.error as exc:
                raise ValueError(f"invalid header regex for {name!r}: {exc}") from None
            out.append((name.lower(), plain, regexes))
        return tuple(out)

    def evaluation_order(self) -> list[tuple[Any, tuple[str, ...] | None]]:
        """(route, paths of the group) from highest to lowest priority (debugging)."""
        return list(self._order)

    def match(self, method: str, host: str | None, path: str,
              headers: Mapping[str, str] | None = None,
              default_port: int | str | None = None) -> RouteMatch | None:
        """Return the best matching route for the request, or ``None``.

        ``path`` is the raw path without query string; ``host`` the raw Host
        header (port allowed, any case). ``headers`` (lower-case names) is only
        read when :attr:`uses_headers` is true. ``default_port`` is the port
        assumed when the Host header carries none (for routes whose host pins
        a port); without it such routes need an explicit port in Host.
        """
        if "%" in path or "/." in path or "//" in path:
            path = normalize_path(path)

        hname = hfull = port = None
        if host and self._has_hosts:
            host = host.lower()
            i = host.rfind(":") if ":" in host else -1
            if i > 0 and i > host.rfind("]"):
                hname, port, hfull = host[:i], host[i + 1:], host
            else:
                hname = hfull = host
                if default_port is not None and self._port_hosts:
                    port = str(default_port)
                    hfull = f"{host}:{port}"

        # Walk the radix tree, collecting the candidate lists along the way.
        lists: list[list[_Entry]] = []
        node = self._root
        i, n = 0, len(path)
        while True:
            lst = node.entries
            if lst is not None:
                lists.append(lst)
            if hname is not None:
                by_host = node.by_host
                if by_host is not None:
                    lst = by_host.get(hname)
                    if lst is not None:
                        lists.append(lst)
                    if hfull is not hname:
                        lst = by_host.get(hfull)  # type: ignore[arg-type]
                        if lst is not None:
                            lists.append(lst)
            children = node.children
            if children is None or i >= n:
                break
            child = children.get(path[i])
            if child is None:
                break
            check = child.check
            if check is not None and not path.startswith(check, i + 1):
                break
            i += child.size
            node = child

        # Pick the best-ranked candidate whose conditions hold. Deeper lists
        # (longer prefixes) usually win, so scan them first to prune earlier.
        best: _Entry | None = None
        best_rank = _NO_RANK
        best_m: re.Match[str] | None = None
        for lst in reversed(lists):
            for e in lst:
                if e.rank >= best_rank:
                    break
                if not e.plain:
                    methods = e.methods
                    if methods is not None and method not in methods:
                        continue
                    if e.extra and not _extra_ok(e, hname, port, headers):
                        continue
                rx = e.regex
                if rx is not None:
                    need = e.need
                    if need is not None and need not in path:
                        continue
                    m = rx.match(path)
                    if m is None:
                        continue
                    best_m = m
                else:
                    best_m = None
                best, best_rank = e, e.rank
                break
        if best is None:
            return None
        if best_m is not None:
            return RouteMatch(best.route, best_m.group(0), _captures(best_m), path)
        return RouteMatch(best.route, best.prefix, None, path)
