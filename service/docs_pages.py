"""/docs (Swagger UI) and /redoc (ReDoc) with their scripts served by the service itself, not from a CDN, so that the
pages work on an air-gapped host. The files come from the ``fastapi-offline`` package (Swagger UI 5, which reads
OpenAPI 3.1, and ReDoc's standalone bundle); only its static folder is used, not its FastAPI wrapper.

With API keys set, /openapi.json, /docs and /redoc need a read key unless HAMDEX_OPEN_DOCS; the scripts under
:data:`ASSETS` are the libraries' public files and need none.
"""

from __future__ import annotations

from importlib.resources import files
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from hamdex.service.auth import ApiKeys
from hamdex.service.deps import check_key

ASSETS = "/docs/assets"


def add_docs(app: FastAPI, keys: ApiKeys | None) -> None:
    """/openapi.json, /docs and /redoc; with ``keys``, each needs a read key (the app was built without FastAPI's
    own /openapi.json)."""
    app.mount(ASSETS, StaticFiles(directory=str(files("fastapi_offline") / "static")), name="docs-assets")
    keyed: dict[str, Any] = {"include_in_schema": False}
    if keys is not None:

        async def check(request: Request) -> None:
            check_key(keys, "read", request.scope["headers"])

        keyed["dependencies"] = [Depends(check)]

        @app.get("/openapi.json", **keyed)
        async def openapi() -> JSONResponse:
            return JSONResponse(app.openapi())

    @app.get("/docs", **keyed)
    async def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url="/openapi.json",
            title=f"{app.title} - Swagger UI",
            swagger_js_url=f"{ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{ASSETS}/favicon.png",
        )

    @app.get("/redoc", **keyed)
    async def redoc() -> HTMLResponse:
        return get_redoc_html(
            openapi_url="/openapi.json",
            title=f"{app.title} - ReDoc",
            redoc_js_url=f"{ASSETS}/redoc.standalone.js",
            redoc_favicon_url=f"{ASSETS}/favicon.png",
            with_google_fonts=False,
        )
