"""Search a collection: Hamming neighbours of queries given as raw inputs, codes, or ids of stored items, with
an optional metadata filter and per-query index parameters. Mounted at /v1/search (the default collection) and
/v1/collections/{name}/search."""

from __future__ import annotations

from functools import partial

import numpy as np
from fastapi import APIRouter, Request
from hamdex.index import CollectionLike
from hamdex.index.kinds import KINDS
from hamdex.service.codes import codes_for
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
    return _index_params(req, name, collection)


def _index_params(req: SearchRequest, name: str, collection: CollectionLike) -> dict[str, int]:
    """nprobe / ef_search as given; one the collection's index kind does not take, or a radius on a kind without
    radius search, is an error (409: the collection's kind decides, which a request cannot know), not ignored."""
    params = {k: v for k, v in (("nprobe", req.nprobe), ("ef_search", req.ef_search)) if v is not None}
    kind = collection.manifest.index_kind
    if req.radius is not None and not KINDS[kind].supports_range:
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
    codes = await _query_codes(req, request, target)
    collection = target.collection
    engine, timings = request.app.state.engine, request.state.timings
    if req.is_plain:
        found = await engine.search(target.name, collection, codes, req.k, req.include_metadata, params, timings)
    else:  # the k nearest (within the radius, when given)
        options = {"include_metadata": req.include_metadata, "where": req.filter, "params": params}
        deadline = request.state.deadline  # set by service.middleware: the work stops at a 504
        if req.radius is None:
            work = partial(collection.search, codes, req.k, deadline=deadline, **options)
        else:
            work = partial(collection.range_search, codes, req.radius, k=req.k, deadline=deadline, **options)
        found = await engine.heavy_search(work, len(codes), timings)
    return SearchResponse(
        results=[[Hit(id=h.id, distance=h.distance, metadata=h.metadata) for h in hits] for hits in found]
    )


for prefix, dependencies in COLLECTION_PREFIXES:
    router.add_api_route(
        f"{prefix}/search",
        search,
        methods=["POST"],
        response_model=SearchResponse,
        dependencies=[*dependencies, OPEN_READ],
    )
