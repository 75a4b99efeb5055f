"""The FastAPI app: assembles routers and error handlers; the model and collection load in the lifespan."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from index import Collection
from models import checkpoint
from service.errors import ErrorBody, install_handlers
from service.routes import encode, items, meta, search
from service.settings import Settings, get_settings

LOG = logging.getLogger(__name__)
ERROR_RESPONSES = {status: {"model": ErrorBody} for status in (404, 409, 422)}


def load_state(app: FastAPI, settings: Settings) -> None:
    hasher = checkpoint.load(settings.model_path, settings.device)
    collection = Collection.open_or_create(
        settings.collection_path, hasher.n_bits, hasher.fingerprint, settings.index_kind
    )
    LOG.info(
        "serving model %s (%d bits) on %s, collection %s with %d items",
        hasher.fingerprint,
        hasher.n_bits,
        hasher.device,
        settings.collection_path,
        len(collection),
    )
    app.state.settings, app.state.hasher, app.state.collection = settings, hasher, collection


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        load_state(app, settings)
        try:
            yield
        finally:
            app.state.collection.close()

    app = FastAPI(
        title="hamdex",
        summary="Semantic hashing retrieval",
        version="0.1.0",
        lifespan=lifespan,
        responses=ERROR_RESPONSES,
    )
    install_handlers(app)
    for module in (meta, encode, items, search):
        app.include_router(module.router)
    return app
