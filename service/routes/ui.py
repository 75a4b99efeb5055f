"""The search page at /ui: a static shell (``service/ui/``, installed as package data) that calls the API from the
browser with fetch. Nothing is loaded from another origin, so the page works on an air-gapped host; the
Content-Security-Policy below says so to the browser as well.

The shell needs no key (it holds no data): the page asks for one when the API answers 401 and sends it as
``Authorization: Bearer`` on every call. Only the files of :data:`FILES` are served, by name, so no path reaches
the file system. The routes are left out of the API document (not part of the public API).
"""

from __future__ import annotations

from functools import cache
from importlib.resources import files

from fastapi import APIRouter
from fastapi.responses import Response
from hamdex.service.errors import ApiError

router = APIRouter(include_in_schema=False)

FILES = {  # the allow-list: file name -> content type
    "index.html": "text/html; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
    "icon.svg": "image/svg+xml",
}
# Same origin only: scripts and styles from /ui, API calls to this server, images from the page itself (data: for
# the icon and the image preview, blob: for a dropped file). No inline script, no eval, no framing.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; connect-src 'self'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",  # revalidate: a new version of the package serves its own page at once
}


@cache
def _read(name: str) -> bytes:
    return (files("hamdex.service") / "ui" / name).read_bytes()


def _serve(name: str) -> Response:
    return Response(_read(name), media_type=FILES[name], headers=HEADERS)


@router.get("/ui")
def page() -> Response:
    return _serve("index.html")


@router.get("/ui/{file}")
def asset(file: str) -> Response:
    if file not in FILES:
        raise ApiError("not_found", f"no file {file!r} in /ui")
    return _serve(file)
