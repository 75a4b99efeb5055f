"""Dependency aliases: routes reach the heavy state loaded in the app's lifespan through these."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from index import Collection
from models.hasher import Hasher
from service.errors import ApiError
from service.settings import Settings


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_hasher(request: Request) -> Hasher:
    return request.app.state.hasher


def get_collection(request: Request) -> Collection:
    return request.app.state.collection


SettingsDep = Annotated[Settings, Depends(get_settings)]
HasherDep = Annotated[Hasher, Depends(get_hasher)]
CollectionDep = Annotated[Collection, Depends(get_collection)]


def check_batch(n: int, settings: Settings, what: str) -> None:
    """Empty or oversized batches are rejected before any work."""
    if n == 0:
        raise ApiError("empty_batch", f"'{what}' must hold at least one element")
    if n > settings.max_batch:
        raise ApiError("batch_too_large", f"'{what}' holds {n} elements; at most {settings.max_batch} per request")
