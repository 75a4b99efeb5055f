"""The FastAPI app: assembles routers and error handlers. The lifespan makes the cheap start-up checks, then
loads the model and the default collection in a background thread (see service.state) and, on shutdown, closes
every collection."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from service.auth import ApiKeys
from service.engine import Engine
from service.errors import ErrorBody, install_handlers
from service.fast_search import FastSearch
from service.metrics import Metrics
from service.middleware import ServiceMiddleware
from service.routes import bulk, collections, encode, items, meta, search
from service.settings import Settings, get_settings
from service.state import ServiceState

LOG = logging.getLogger(__name__)
ERROR_RESPONSES = {status: {"model": ErrorBody} for status in (401, 403, 404, 409, 413, 422, 429, 503, 504)}


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

    app = FastAPI(
        title="hamdex",
        summary="Semantic hashing retrieval",
        version="0.1.0",
        lifespan=lifespan,
        responses=ERROR_RESPONSES,
    )
    app.state.metrics = metrics
    app.add_middleware(FastSearch, settings=settings)  # inside ServiceMiddleware: added first
    app.add_middleware(ServiceMiddleware, settings=settings, metrics=metrics)
    install_handlers(app)
    for module in (meta, encode, items, bulk, search, collections):
        app.include_router(module.router)
    return app


def _open_counts(app: FastAPI) -> dict[str, int]:
    state = getattr(app.state, "service", None)
    return state.registry.open_counts() if state is not None else {}


def wait_ready(app: FastAPI, timeout: float | None = None) -> None:
    """Block until the started ``app`` has loaded its model and default collection (for in-process clients);
    re-raises a loading error; TimeoutError after ``timeout`` seconds."""
    app.state.service.wait_ready(timeout)
