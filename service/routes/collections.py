"""Named collections: list, create, describe, drop (GET/POST /v1/collections, GET/DELETE /v1/collections/{name}).
Their items and search routes are those of service.routes.items and service.routes.search."""

from __future__ import annotations

from fastapi import APIRouter, Depends
from hamdex.index import Manifest
from hamdex.index.errors import InvalidManifestError
from hamdex.index.kinds import KINDS
from hamdex.index.milvus import NO_PAYLOAD_INDEX, check_kind, check_uri, is_local
from hamdex.index.registry import check_name
from hamdex.models.rerank import keeps_vectors
from hamdex.service.deps import ADMIN, READ, ReadyStateDep, collection_name
from hamdex.service.errors import ApiError
from hamdex.service.schemas import (
    CollectionInfo,
    CollectionList,
    CreateCollectionRequest,
    DropResponse,
    UnavailableCollection,
)
from hamdex.service.settings import Settings

router = APIRouter(prefix="/v1/collections", tags=["collections"])
NAMED = [Depends(collection_name)]
MAX_INDEX_PARAM = 2**31 - 1


def _info(name: str, model: str, manifest: Manifest) -> CollectionInfo:
    return CollectionInfo(
        name=name,
        model=model,
        n_bits=manifest.n_bits,
        index_kind=manifest.index_kind,
        index_params=manifest.index_params,
        count=manifest.count,
        fingerprint=manifest.fingerprint,
        backend=manifest.backend,
        vectors=manifest.vectors,
        vector_dim=manifest.vector_dim,
    )


@router.get("", response_model=CollectionList, dependencies=[READ])
def list_collections(state: ReadyStateDep) -> CollectionList:
    """Every collection, opened if it was not yet; one that cannot be opened is listed under "unavailable"."""
    collections, unavailable = [], []
    for name, manifest, error in state.registry.list():
        if manifest is not None:
            collections.append(_info(name, state.model_name(name, manifest), manifest))
        else:
            error_type = getattr(error, "error_type", "internal")
            unavailable.append(UnavailableCollection(name=name, error=str(error), error_type=error_type))
    return CollectionList(collections=collections, unavailable=unavailable)


@router.post("", status_code=201, response_model=CollectionInfo, dependencies=[ADMIN])
def create_collection(req: CreateCollectionRequest, state: ReadyStateDep) -> CollectionInfo:
    check_name(req.name)
    if req.index_kind not in KINDS:
        raise ApiError("invalid_index_kind", f"index_kind must be one of {sorted(KINDS)}, got {req.index_kind!r}")
    if req.backend == "milvus":
        _check_milvus(req, state.settings)
    try:
        KINDS[req.index_kind].check_params(req.index_params)
    except InvalidManifestError as exc:
        raise ApiError("invalid_index_params", str(exc)) from exc
    too_large = sorted(key for key, value in req.index_params.items() if value > MAX_INDEX_PARAM)
    if too_large:  # FAISS takes C ints: a larger value would fail there, as a 500
        raise ApiError("invalid_index_params", f"index parameters {too_large} must be at most {MAX_INDEX_PARAM}")
    if req.name in state.registry:
        raise ApiError("collection_exists", f"a collection named {req.name!r} already exists")
    hasher = state.hashers.get(req.model)
    if req.vectors is not None:
        _check_vectors(req, hasher.featurizer)
    if req.indexed_fields and req.backend != "faiss":  # milvus; refused before anything is created
        raise ApiError("unsupported_by_backend", f"{NO_PAYLOAD_INDEX}; create the collection without indexed_fields")
    try:
        collection = state.registry.create(
            req.name,
            hasher.n_bits,
            hasher.fingerprint,
            req.index_kind,
            req.index_params,
            model=req.model,
            backend=req.backend,
            milvus_uri=req.milvus_uri,
            vectors=req.vectors,
        )
    except InvalidManifestError as exc:  # parameters that do not fit the model's code length (multihash nhash)
        raise ApiError("invalid_index_params", str(exc)) from exc
    if req.indexed_fields:  # an empty collection: declaring them reads no rows
        collection.index_fields(list(dict.fromkeys(req.indexed_fields)))
    return _info(req.name, req.model, collection.manifest)


def _check_vectors(req: CreateCollectionRequest, featurizer: object) -> None:
    """Stored vectors need the faiss backend and a model whose features map back to vectors (models.rerank)."""
    if req.backend != "faiss":
        raise ApiError("vectors_unsupported", f"backend {req.backend!r} keeps no vectors; create it without 'vectors'")
    if not keeps_vectors(featurizer):
        raise ApiError(
            "vectors_unsupported",
            f"model {req.model!r} has {getattr(featurizer, 'kind', '?')} features, which a collection does not keep "
            "(sparse TF-IDF); create it without 'vectors' (reranked searches then score the bits)",
        )


def _check_milvus(req: CreateCollectionRequest, settings: Settings) -> None:
    """The index kind milvus builds there, and a URI allowed here: a plain .db file name (milvus-lite, inside the
    collection's directory), or a server only where HAMDEX_MILVUS_REMOTE_URIS allows it."""
    try:
        check_kind(req.index_kind, req.milvus_uri)
    except InvalidManifestError as exc:
        raise ApiError("invalid_index_kind", str(exc)) from exc
    try:
        check_uri(req.milvus_uri)
    except InvalidManifestError as exc:
        raise ApiError("invalid_milvus_uri", str(exc)) from exc
    if not is_local(req.milvus_uri) and not settings.milvus_remote_uris:
        raise ApiError(
            "invalid_milvus_uri",
            f"milvus_uri {req.milvus_uri!r} names a Milvus server; this service takes only milvus-lite files "
            "(HAMDEX_MILVUS_REMOTE_URIS=true allows servers)",
        )


@router.get("/{name}", response_model=CollectionInfo, dependencies=[*NAMED, READ])
def get_collection(name: str, state: ReadyStateDep) -> CollectionInfo:
    with state.registry.use(name) as collection:
        manifest = collection.manifest
    return _info(name, state.model_name(name, manifest), manifest)


@router.delete("/{name}", response_model=DropResponse, dependencies=[*NAMED, ADMIN])
def drop_collection(name: str, state: ReadyStateDep) -> DropResponse:
    """Close and delete a collection; the default collection cannot be dropped (409 collection_protected)."""
    state.registry.drop(name)
    return DropResponse(dropped=name)
