"""CORS for browser clients on other origins (Starlette's CORSMiddleware), off unless ``HAMDEX_CORS_ORIGINS`` names
some. Outermost, so that preflight requests are answered before the API key is asked for (a browser sends none on
a preflight), and every response, errors included, carries the headers a browser needs to read it."""

from __future__ import annotations

from fastapi import FastAPI
from hamdex.service.settings import Settings
from starlette.middleware.cors import CORSMiddleware

# what a browser client sends (the key, JSON bodies, its own request id) and may read back (service.middleware)
ALLOW_HEADERS = ["Authorization", "Content-Type", "X-Request-ID"]
EXPOSE_HEADERS = ["X-Request-ID", "X-Queue-Ms", "X-Encode-Ms", "X-Search-Ms", "Retry-After"]
ALLOW_METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE"]


def cors_origins(settings: Settings) -> list[str]:
    """``HAMDEX_CORS_ORIGINS``: comma-separated origins (``https://app.example``), or ``*`` for any."""
    return [o.strip().rstrip("/") for o in (settings.cors_origins or "").split(",") if o.strip()]


def install_cors(app: FastAPI, settings: Settings) -> None:
    """Add the middleware when origins are configured; call after every other middleware (it must be outermost)."""
    origins = cors_origins(settings)
    if not origins:
        return
    app.add_middleware(
        CORSMiddleware,
        allow_origins=origins,
        allow_methods=ALLOW_METHODS,
        allow_headers=ALLOW_HEADERS,
        expose_headers=EXPOSE_HEADERS,
        allow_credentials=settings.cors_allow_credentials,
        max_age=settings.cors_max_age,
    )
