"""POST /v1/search: Hamming neighbours of queries given as raw inputs, codes, or ids of stored items."""

from __future__ import annotations

import numpy as np
from fastapi import APIRouter

from service.codes import codes_for
from service.deps import CollectionDep, HasherDep, SettingsDep, check_batch
from service.errors import ApiError
from service.schemas import Hit, SearchRequest, SearchResponse

router = APIRouter(prefix="/v1", tags=["search"])


def _query_codes(req: SearchRequest, hasher: HasherDep, collection: CollectionDep) -> np.ndarray:
    """Every query as a packed code (q, n_bits // 8); raw inputs are encoded in one batch."""
    codes = codes_for(hasher, [q.input for q in req.queries], [q.code for q in req.queries])
    for i, q in enumerate(req.queries):
        if q.id is not None:
            item = collection.get(q.id)
            if item is None:
                raise ApiError("item_not_found", f"query {i}: no item with id {q.id!r}")
            codes[i] = item.code
    return codes


@router.post("/search", response_model=SearchResponse)
def search(req: SearchRequest, hasher: HasherDep, collection: CollectionDep, settings: SettingsDep) -> SearchResponse:
    check_batch(len(req.queries), settings, "queries")
    if not 1 <= req.k <= settings.max_k:
        raise ApiError("k_out_of_range", f"k must be between 1 and {settings.max_k}, got {req.k}")
    if req.radius is not None and not 0 <= req.radius <= hasher.n_bits:
        raise ApiError("radius_out_of_range", f"radius must be between 0 and {hasher.n_bits}, got {req.radius}")
    codes = _query_codes(req, hasher, collection)
    if req.radius is None:
        found = collection.search(codes, req.k, include_metadata=req.include_metadata)
    else:  # every item within the radius, nearest first, at most k
        found = [
            hits[: req.k] for hits in collection.range_search(codes, req.radius, include_metadata=req.include_metadata)
        ]
    return SearchResponse(
        results=[[Hit(id=h.id, distance=h.distance, metadata=h.metadata) for h in hits] for hits in found]
    )
