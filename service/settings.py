"""Service settings, read from the environment with the prefix ``HAMDEX_`` (e.g. ``HAMDEX_MODEL_PATH``)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="HAMDEX_", protected_namespaces=())

    model_path: Path = Path("var/model")  # checkpoint directory (hamdex train --out)
    collection_path: Path = Path("var/collection")  # the default collection; created empty if missing
    collections_dir: Path = Path("var/collections")  # named collections (/v1/collections), one subdirectory each
    models_dir: Path = Path("var/models")  # named model checkpoints, one subdirectory each; "default" = model_path
    index_kind: str = "flat"  # index kind for a newly created collection
    snapshot_every: int = Field(100_000, ge=1)  # changed items between background index snapshots
    device: str = "auto"  # "auto" = CUDA when available, else CPU
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    max_batch: int = Field(1024, ge=1)  # most inputs / items / queries in one request
    max_k: int = Field(1000, ge=1)  # most hits per query
    log_level: str = "info"


@lru_cache
def get_settings() -> Settings:
    return Settings()
