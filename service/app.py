"""The FastAPI app: assembles routers and error handlers. The lifespan makes the cheap start-up checks, then
loads the model and the default collection in a background thread (see service.state) and, on shutdown, closes
every collection."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from service.errors import ErrorBody, install_handlers
from service.routes import collections, encode, items, meta, search
from service.settings import Settings, get_settings
from service.state import ServiceState

LOG = logging.getLogger(__name__)
ERROR_RESPONSES = {status: {"model": ErrorBody} for status in (404, 409, 422, 503)}


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        state = ServiceState(settings)
        state.check_startup()  # a failure here stops the server from starting
        app.state.service = state
        state.start_loading()
        try:
            yield
        finally:
            await asyncio.to_thread(state.close)

    app = FastAPI(
        title="hamdex",
        summary="Semantic hashing retrieval",
        version="0.1.0",
        lifespan=lifespan,
        responses=ERROR_RESPONSES,
    )
    install_handlers(app)
    for module in (meta, encode, items, search, collections):
        app.include_router(module.router)
    return app


def wait_ready(app: FastAPI, timeout: float | None = None) -> None:
    """Block until the started ``app`` has loaded its model and default collection (for in-process clients);
    re-raises a loading error; TimeoutError after ``timeout`` seconds."""
    app.state.service.wait_ready(timeout)
