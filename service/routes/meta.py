"""Probes and description: GET /livez, /readyz, /health (= /readyz) and /info."""

from __future__ import annotations

from fastapi import APIRouter

from models.checkpoint import library_versions
from service.deps import CollectionDep, HasherDep, StateDep
from service.schemas import Health, Info

router = APIRouter(tags=["meta"])


@router.get("/livez", response_model=Health)
def livez() -> Health:
    """The process answers; says nothing about the model or the collections (they may still be loading)."""
    return Health(status="ok")


@router.get("/readyz", response_model=Health)
@router.get("/health", response_model=Health)
def readyz(state: StateDep) -> Health:
    """200 once the model and the default collection are loaded; 503 not_ready (or load_failed) before."""
    state.check_ready()
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
