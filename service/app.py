"""The FastAPI app: assembles routers and error handlers. The lifespan makes the cheap start-up checks, then
loads the model and the default collection in a background thread (see service.state) and, on shutdown, closes
every collection. With API keys set, /openapi.json, /docs and /redoc need a read key unless HAMDEX_OPEN_DOCS."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import Depends, FastAPI
from hamdex.service.auth import ApiKeys
from hamdex.service.cors import install_cors
from hamdex.service.docs_pages import ASSETS, add_docs
from hamdex.service.engine import Engine
from hamdex.service.errors import error_response, install_handlers
from hamdex.service.fast_search import FastSearch
from hamdex.service.metrics import Metrics
from hamdex.service.middleware import BatchGuard, ServiceMiddleware
from hamdex.service.openapi import install_openapi
from hamdex.service.openapi_ops import operation_id
from hamdex.service.query_check import reject_unknown_query
from hamdex.service.routes import (
    bulk,
    collections,
    decode,
    encode,
    indexes,
    items,
    meta,
    scroll,
    search,
    transfer,
    ui,
)
from hamdex.service.settings import Settings, get_settings
from hamdex.service.state import ServiceState

LOG = logging.getLogger(__name__)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    api_keys = ApiKeys.parse(settings.api_keys, settings.api_keys_file)  # KeyConfigError: refuse to start
    metrics = Metrics(collection_counts=lambda: _open_counts(app))

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        state = ServiceState(settings, api_keys)
        state.check_startup()  # a failure here stops the server from starting
        app.state.service = state
        app.state.engine = Engine(settings, metrics)
        if not api_keys.enabled:
            LOG.warning("no API keys configured: every route is open (set HAMDEX_API_KEYS or HAMDEX_API_KEYS_FILE)")
        state.start_loading()
        try:
            yield
        finally:
            await app.state.engine.close()
            await asyncio.to_thread(state.close)

    keyed_docs = api_keys.enabled and not settings.open_docs
    app = FastAPI(
        title="hamdex",
        summary="Semantic hashing retrieval",
        version="0.1.0",
        lifespan=lifespan,
        generate_unique_id_function=operation_id,  # search, upsertItems, ...: the names generated clients use
        dependencies=[Depends(reject_unknown_query)],  # ?lmit=5 is a 422, as an unknown body field is
        docs_url=None,  # service.docs_pages serves /docs and /redoc with local scripts
        redoc_url=None,
        **({"openapi_url": None} if keyed_docs else {}),
    )
    app.state.metrics = metrics
    app.add_middleware(FastSearch, settings=settings)  # inside ServiceMiddleware: added first
    app.add_middleware(BatchGuard, settings=settings)  # between the two: FastSearch never sees an oversized batch
    if settings.encode_only:
        app.add_middleware(EncodeOnly)  # inside ServiceMiddleware: its refusals are counted and logged as any error
    app.add_middleware(ServiceMiddleware, settings=settings, metrics=metrics)
    install_cors(app, settings)  # outermost: preflights answered before any key check
    install_handlers(app)
    for module in (meta, encode, decode, items, scroll, bulk, search, collections, indexes, transfer, ui):
        app.include_router(module.router)
    install_openapi(app, settings)
    # keyed: a browser sends no key, so its /docs page cannot load the document: browse with HAMDEX_OPEN_DOCS=true,
    # or fetch /openapi.json with the key
    add_docs(app, api_keys if keyed_docs else None)
    return app


class EncodeOnly:
    """409 ``encode_only`` for every route that reaches a collection, on a server that opens none
    (HAMDEX_ENCODE_ONLY: the mode of several worker processes, since a collection has one writer). Answered before
    routing and keys: the refusal says only how the server was started."""

    OPEN = frozenset({"/livez", "/readyz", "/health", "/metrics", "/openapi.json", "/docs", "/redoc"})
    OPEN |= {"/v1/encode", "/v1/reconstruct", "/v1/generate"}

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or path in self.OPEN or path.startswith(ASSETS + "/"):
            await self.app(scope, receive, send)
            return
        message = f"{path}: this server encodes only (HAMDEX_ENCODE_ONLY, e.g. hamdex serve --workers): no collection"
        await error_response("encode_only", message)(scope, receive, send)


def _open_counts(app: FastAPI) -> dict[str, int]:
    state = getattr(app.state, "service", None)
    return state.registry.open_counts() if state is not None else {}


def wait_ready(app: FastAPI, timeout: float | None = None) -> None:
    """Block until the started ``app`` has loaded its model and default collection (for in-process clients);
    re-raises a loading error; TimeoutError after ``timeout`` seconds."""
    app.state.service.wait_ready(timeout)
