"""Search a collection: Hamming neighbours of queries given as raw inputs, codes, or ids of stored items, with
an optional metadata filter and per-query index parameters. Mounted at /v1/search (the default collection) and
/v1/collections/{name}/search."""

from __future__ import annotations

from functools import partial
from typing import Any

import numpy as np
from fastapi import APIRouter, Request
from hamdex.index import CollectionLike
from hamdex.index.kinds import KINDS
from hamdex.models.rerank import query_scores, rerank_vectors
from hamdex.service.codes import codes_and_features, codes_for
from hamdex.service.deps import COLLECTION_PREFIXES, OPEN_READ, SettingsDep, Target, TargetDep, check_batch, check_texts
from hamdex.service.errors import ApiError
from hamdex.service.schemas import Hit, SearchRequest, SearchResponse
from hamdex.service.settings import Settings

router = APIRouter(tags=["search"])


async def _query_codes(req: SearchRequest, request: Request, target: Target) -> np.ndarray:
    """Every query as a packed code (q, n_bits // 8); raw inputs are encoded in one batch."""
    codes = await codes_for(request, target.hasher, [q.input for q in req.queries], [q.code for q in req.queries])
    for i, q in enumerate(req.queries):
        if q.id is not None:
            item = target.collection.get(q.id)
            if item is None:
                raise ApiError("query_id_not_found", f"query {i}: no item with id {q.id!r}")
            codes[i] = item.code
    return codes


def check_search(req: SearchRequest, settings: Settings, name: str, collection: CollectionLike) -> dict[str, int]:
    """Every limit of a search request checked against ``settings`` and collection ``name`` (ApiError otherwise;
    an unset k becomes at most HAMDEX_MAX_K); the index parameters to search with. The route and the fast path
    (service.fast_search) both check with this, on the request parsed once."""
    check_batch(len(req.queries), settings, "queries")
    check_texts([q.input for q in req.queries], settings, "queries.input")
    if "k" not in req.model_fields_set:  # the default, 10, is at most HAMDEX_MAX_K (as the API document says)
        req.k = min(req.k, settings.max_k)
    if not 1 <= req.k <= settings.max_k:
        raise ApiError("k_out_of_range", f"k must be between 1 and {settings.max_k}, got {req.k}")
    if req.radius is not None and not 0 <= req.radius <= collection.n_bits:
        raise ApiError("radius_out_of_range", f"radius must be between 0 and {collection.n_bits}, got {req.radius}")
    if req.rerank is not None:
        _check_rerank(req, settings, name, collection)
    if req.bits is not None:
        _check_bits(req, name, collection)
    params = _index_params(req, name, collection)
    if req.bits is not None and params:
        raise ApiError(
            "unsupported_search_param",
            f"a prefix search (bits {req.bits} < {collection.n_bits}) is an exact scan: it takes no "
            f"{', '.join(sorted(params))}",
        )
    return params


def _check_bits(req: SearchRequest, name: str, collection: CollectionLike) -> None:
    """A prefix width the collection's codes have (422 invalid_query), on a backend that searches by prefix and
    without index parameters (409 unsupported_search_param: the collection decides); the full width is an
    ordinary search (``req.bits`` becomes None, so it may be micro-batched)."""
    if not 8 <= req.bits <= collection.n_bits or req.bits % 8:
        raise ApiError(
            "invalid_query", f"bits must be a multiple of 8 between 8 and {collection.n_bits}, got {req.bits}"
        )
    if req.bits == collection.n_bits:
        req.bits = None
        return
    if collection.backend != "faiss":
        raise ApiError(
            "unsupported_search_param",
            f"collection {name!r} is on backend {collection.backend!r}, which has no prefix search; search without "
            "bits",
        )


def _check_rerank(req: SearchRequest, settings: Settings, name: str, collection: CollectionLike) -> None:
    limit = settings.max_rerank_candidates
    if req.rerank is not None and "candidates" not in req.rerank.model_fields_set:  # the default fits, as k's
        req.rerank.candidates = min(req.rerank.candidates, limit)
    if req.rerank is not None and not 1 <= req.rerank.candidates <= limit:
        raise ApiError(
            "rerank_out_of_range", f"rerank.candidates must be between 1 and {limit}, got {req.rerank.candidates}"
        )
    pool = req.rerank.pool if req.rerank is not None else None
    if pool is not None and not 1 <= pool <= limit:  # below the candidates it is raised to them, as they to k
        raise ApiError("rerank_out_of_range", f"rerank.pool must be between 1 and {limit}, got {pool}")
    if collection.backend != "faiss":
        raise ApiError(
            "unsupported_search_param",
            f"collection {name!r} is on backend {collection.backend!r}, which does not rerank; search without it",
        )


async def _rerank_queries(
    req: SearchRequest, request: Request, target: Target
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Codes, and what rescores each query's candidates: with stored vectors, the query's vector (an input's
    features mapped back, or a query_id's stored vector); else, and also with a pool, its per-bit scores (an
    input's latent). A row of NaN, for a query given as a code (or an id without a vector, or any id for the
    per-bit scores): that query keeps the Hamming order at that stage (docs/rerank.md)."""
    collection, hasher = target.collection, target.hasher
    keeps = getattr(collection, "vector_dtype", None) is not None
    asymmetric = not keeps or req.rerank.pool is not None
    inputs, wire = [q.input for q in req.queries], [q.code for q in req.queries]
    codes, raw, features, latents = await codes_and_features(request, hasher, inputs, wire, asymmetric)
    ids = [(i, q.id) for i, q in enumerate(req.queries) if q.id is not None]
    for i, item_id in ids:
        item = collection.get(item_id)
        if item is None:
            raise ApiError("query_id_not_found", f"query {i}: no item with id {item_id!r}")
        codes[i] = item.code
    rescore: dict[str, np.ndarray] = {}
    if asymmetric:
        scores = np.full((len(codes), collection.n_bits), np.nan, np.float32)
        if raw:
            scores[raw] = query_scores(hasher, latents)
        rescore["query_scores"] = scores
    if keeps:
        vectors = _query_vectors(collection, hasher, raw, features, ids, len(codes))
        if vectors is not None:
            rescore["query_vectors"] = vectors
    return codes, rescore


def _query_vectors(
    collection: CollectionLike, hasher: Any, raw: list[int], features: Any, ids: list[tuple[int, str]], n: int
) -> np.ndarray | None:
    """Each query's vector for the cosine stage, float32 (n, d), NaN rows for queries without one; None when
    neither the collection nor the queries have a vector yet."""
    kept = rerank_vectors(hasher.featurizer, features) if raw else None
    dim = collection.vector_dim or (None if kept is None else kept.shape[1])
    if dim is None:
        return None
    vectors = np.full((n, dim), np.nan, np.float32)
    if kept is not None:
        if kept.shape[1] != dim:
            raise ApiError(
                "invalid_query", f"the model's vectors have {kept.shape[1]} dimensions, the collection's {dim}"
            )
        vectors[raw] = kept
    if ids:
        stored = collection.vectors([item_id for _, item_id in ids])
        if stored.shape[1] == dim:
            has = np.abs(stored).sum(axis=1) > 0  # an all-zero row: stored without a vector
            vectors[[i for i, _ in ids]] = np.where(has[:, None], stored, np.nan)
    return vectors


def _index_params(req: SearchRequest, name: str, collection: CollectionLike) -> dict[str, int]:
    """nprobe / ef_search / candidates as given; one the collection's index kind does not take, or a radius on a kind
    without radius search (but for a prefix search, a scan), is an error (409: the collection's kind decides, which
    a request cannot know), not ignored."""
    given = (("nprobe", req.nprobe), ("ef_search", req.ef_search), ("candidates", req.candidates))
    params = {k: v for k, v in given if v is not None}
    kind = collection.manifest.index_kind
    if req.radius is not None and req.bits is None and not KINDS[kind].supports_range:
        raise ApiError(
            "unsupported_search_param",
            f"collection {name!r} has index kind {kind!r}, which has no radius search; use k alone",
        )
    unsupported = sorted(set(params) - KINDS[kind].query_params)
    if unsupported:
        takes = ", ".join(sorted(KINDS[kind].query_params)) or "none"
        raise ApiError(
            "unsupported_search_param",
            f"collection {name!r} has index kind {kind!r}, which takes query parameters: {takes}; "
            f"got {', '.join(unsupported)}",
        )
    return params


async def search(req: SearchRequest, request: Request, target: TargetDep, settings: SettingsDep) -> SearchResponse:
    """Plain top-k queries go through the search micro-batcher; filtered and radius queries through the engine's
    heavy-search queue (bounded: 429 beyond it), stopping at the request's deadline."""
    params = check_search(req, settings, target.name, target.collection)
    rescore: dict[str, Any] = {}
    if req.rerank is not None:
        codes, rescore = await _rerank_queries(req, request, target)
        rescore["rerank"] = req.rerank.candidates
        if req.rerank.pool is not None:
            rescore["pool"] = req.rerank.pool
    else:
        codes = await _query_codes(req, request, target)
    collection = target.collection
    engine, timings = request.app.state.engine, request.state.timings
    if req.is_plain:
        found = await engine.search(target.name, collection, codes, req.k, req.include_metadata, params, timings)
    else:  # the k nearest (within the radius, when given)
        options = {"include_metadata": req.include_metadata, "where": req.filter, "params": params, **rescore}
        if req.bits is not None:  # a prefix (check_search: faiss only): other backends take no such argument
            options["bits"] = req.bits
        deadline = request.state.deadline  # set by service.middleware: the work stops at a 504
        if req.radius is None:
            work = partial(collection.search, codes, req.k, deadline=deadline, **options)
        else:
            work = partial(collection.range_search, codes, req.radius, k=req.k, deadline=deadline, **options)
        found = await engine.heavy_search(work, len(codes), timings)
    return SearchResponse(
        results=[
            [Hit(id=h.id, distance=h.distance, metadata=h.metadata, score=getattr(h, "score", None)) for h in hits]
            for hits in found
        ]
    )


for prefix, dependencies in COLLECTION_PREFIXES:
    router.add_api_route(
        f"{prefix}/search",
        search,
        methods=["POST"],
        response_model=SearchResponse,
        dependencies=[*dependencies, OPEN_READ],
    )
