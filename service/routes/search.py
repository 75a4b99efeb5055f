"""Search a collection: Hamming neighbours of queries given as raw inputs, codes, or ids of stored items, with
an optional metadata filter and per-query index parameters. Mounted at /v1/search (the default collection) and
/v1/collections/{name}/search."""

from __future__ import annotations

import numpy as np
from fastapi import APIRouter

from index.kinds import KINDS
from service.codes import codes_for
from service.deps import COLLECTION_PREFIXES, SettingsDep, Target, TargetDep, check_batch
from service.errors import ApiError
from service.schemas import Hit, SearchRequest, SearchResponse

router = APIRouter(tags=["search"])


def _query_codes(req: SearchRequest, target: Target) -> np.ndarray:
    """Every query as a packed code (q, n_bits // 8); raw inputs are encoded in one batch."""
    codes = codes_for(target.hasher, [q.input for q in req.queries], [q.code for q in req.queries])
    for i, q in enumerate(req.queries):
        if q.id is not None:
            item = target.collection.get(q.id)
            if item is None:
                raise ApiError("item_not_found", f"query {i}: no item with id {q.id!r}")
            codes[i] = item.code
    return codes


def _index_params(req: SearchRequest, target: Target) -> dict[str, int]:
    """nprobe / ef_search as given; one the collection's index kind does not take is an error, not ignored."""
    params = {k: v for k, v in (("nprobe", req.nprobe), ("ef_search", req.ef_search)) if v is not None}
    kind = target.collection.manifest.index_kind
    unsupported = sorted(set(params) - KINDS[kind].query_params)
    if unsupported:
        takes = ", ".join(sorted(KINDS[kind].query_params)) or "none"
        raise ApiError(
            "unsupported_search_param",
            f"collection {target.name!r} has index kind {kind!r}, which takes query parameters: {takes}; "
            f"got {', '.join(unsupported)}",
        )
    return params


def search(req: SearchRequest, target: TargetDep, settings: SettingsDep) -> SearchResponse:
    check_batch(len(req.queries), settings, "queries")
    n_bits = target.collection.n_bits
    if not 1 <= req.k <= settings.max_k:
        raise ApiError("k_out_of_range", f"k must be between 1 and {settings.max_k}, got {req.k}")
    if req.radius is not None and not 0 <= req.radius <= n_bits:
        raise ApiError("radius_out_of_range", f"radius must be between 0 and {n_bits}, got {req.radius}")
    params = _index_params(req, target)
    codes = _query_codes(req, target)
    options = {"include_metadata": req.include_metadata, "where": req.filter, "params": params}
    if req.radius is None:
        found = target.collection.search(codes, req.k, **options)
    else:  # every item within the radius, nearest first, at most k
        found = [hits[: req.k] for hits in target.collection.range_search(codes, req.radius, **options)]
    return SearchResponse(
        results=[[Hit(id=h.id, distance=h.distance, metadata=h.metadata) for h in hits] for hits in found]
    )


for prefix, dependencies in COLLECTION_PREFIXES:
    router.add_api_route(
        f"{prefix}/search", search, methods=["POST"], response_model=SearchResponse, dependencies=dependencies
    )
