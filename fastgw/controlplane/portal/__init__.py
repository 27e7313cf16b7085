"""The administration portal: a single-page app served by the admin listener at /portal/.

Plain HTML, CSS and JavaScript modules shipped in the package (``static/``): no build
step, nothing fetched from anywhere but this listener. The app talks only to the Admin
API and renders its forms from ``/schemas``; everything it shows from the API goes into
the page as text (``static/js/dom.js``), and the Content-Security-Policy below forbids
inline scripts and any other origin, so even a mistake there could not run a script.

The files themselves hold no configuration and are served to anyone who reaches the
admin listener; every call the app makes carries the Admin API's token
(``Kong-Admin-Token``, asked once and kept for the browser tab) and is checked like any
other Admin API call.
"""

from __future__ import annotations

import hashlib
import mimetypes
from dataclasses import dataclass
from pathlib import Path

from fastgw.controlplane.admin.http import Request, Response, json_response

__all__ = ["PortalFiles", "PORTAL_PREFIX"]

PORTAL_PREFIX = "/portal"
STATIC_ROOT = Path(__file__).resolve().parent / "static"
_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
          ".css": "text/css; charset=utf-8", ".svg": "image/svg+xml", ".png": "image/png"}
_ALLOW = "GET, HEAD, OPTIONS"
_SECURITY = [
    ("Content-Security-Policy", ("default-src 'none'; script-src 'self'; style-src 'self'; "
                                 "img-src 'self' data:; connect-src 'self'; base-uri 'none'; "
                                 "form-action 'none'; frame-ancestors 'none'")),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "no-referrer"),
    ("Cache-Control", "no-cache"),  # revalidate (ETag): an upgrade is seen at once
]


@dataclass(frozen=True, slots=True)
class _File:
    body: bytes
    content_type: str
    etag: str


def _load(root: Path) -> dict[str, _File]:
    """Every file under ``root`` by its URL path: only these are ever served."""
    files: dict[str, _File] = {}
    for path in sorted(root.rglob("*")):
        if not path.is_file():
            continue
        body = path.read_bytes()
        ctype = _TYPES.get(path.suffix) or mimetypes.guess_type(path.name)[0] or \
            "application/octet-stream"
        etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
        files["/" + path.relative_to(root).as_posix()] = _File(body, ctype, etag)
    return files


class PortalFiles:
    def __init__(self, root: Path = STATIC_ROOT) -> None:
        self.files = _load(root)

    def serve(self, req: Request) -> Response:
        """``GET|HEAD /portal/...``; ``/portal`` redirects to ``/portal/``."""
        if req.method == "OPTIONS":
            return Response(204, content_type=None, headers=[("Allow", _ALLOW)])
        if req.method not in ("GET", "HEAD"):
            return json_response(405, {"message": "Method not allowed"}, [("Allow", _ALLOW)])
        rel = req.path[len(PORTAL_PREFIX):]
        if rel == "":
            return Response(301, content_type=None, headers=[("Location", PORTAL_PREFIX + "/")])
        file = self.files.get("/index.html" if rel == "/" else rel)
        if file is None:
            return json_response(404, {"message": "Not found"})
        headers = [("ETag", file.etag), *_SECURITY]
        if req.headers.get("if-none-match") == file.etag:
            return Response(304, content_type=None, headers=headers)
        return Response(200, file.body, content_type=file.content_type, headers=headers)
