"""Probes and description: GET /livez, /readyz, /health (= /readyz), /info and /metrics."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import PlainTextResponse
from hamdex.models.checkpoint import library_versions
from hamdex.service.deps import READ, CollectionDep, HasherDep, StateDep
from hamdex.service.schemas import Health, Info
from prometheus_client import CONTENT_TYPE_LATEST

router = APIRouter(tags=["meta"])


@router.get("/livez", response_model=Health)
def livez() -> Health:
    """The process answers; says nothing about the model or the collections (they may still be loading)."""
    return Health(status="ok")


@router.get("/readyz", response_model=Health)
@router.get("/health", response_model=Health, name="health")
def readyz(state: StateDep) -> Health:
    """200 once the model and the default collection are loaded; 503 not_ready (or load_failed) before."""
    state.check_ready()
    return Health(status="ok")


@router.get("/metrics", dependencies=[READ], response_class=PlainTextResponse)
def metrics(request: Request) -> PlainTextResponse:
    """Prometheus text format: requests, latency, batching, encode/search time, items per collection, memory."""
    return PlainTextResponse(request.app.state.metrics.render(), media_type=CONTENT_TYPE_LATEST)


@router.get("/info", response_model=Info, dependencies=[READ])
def info(hasher: HasherDep, collection: CollectionDep) -> Info:
    cfg = hasher.model.config
    return Info(
        fingerprint=hasher.fingerprint,
        n_bits=cfg.n_bits,
        bottleneck=cfg.bottleneck,
        members=cfg.members,
        nested=list(cfg.nested),
        readout_from=cfg.readout_from,
        featurizer=hasher.featurizer.kind,
        input_dim=cfg.input_dim,
        index_kind=collection.manifest.index_kind,
        count=len(collection),
        device=str(hasher.device),
        versions=library_versions(),
        training=hasher.info.get("report"),
    )
