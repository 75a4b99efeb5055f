"""GET /health and GET /info."""

from __future__ import annotations

from fastapi import APIRouter

from models.checkpoint import library_versions
from service.deps import CollectionDep, HasherDep
from service.schemas import Health, Info

router = APIRouter(tags=["meta"])


@router.get("/health", response_model=Health)
def health() -> Health:
    return Health(status="ok")


@router.get("/info", response_model=Info)
def info(hasher: HasherDep, collection: CollectionDep) -> Info:
    cfg = hasher.model.config
    return Info(
        fingerprint=hasher.fingerprint,
        n_bits=cfg.n_bits,
        bottleneck=cfg.bottleneck,
        featurizer=hasher.featurizer.kind,
        input_dim=cfg.input_dim,
        index_kind=collection.manifest.index_kind,
        count=len(collection),
        device=str(hasher.device),
        versions=library_versions(),
    )
