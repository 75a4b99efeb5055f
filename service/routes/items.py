"""Items: upsert a batch (from raw inputs or codes), get one, delete one. Writes are saved before the reply."""

from __future__ import annotations

import numpy as np
from fastapi import APIRouter

from models import bits
from service.deps import CollectionDep, HasherDep, SettingsDep, check_batch
from service.errors import ApiError
from service.schemas import CodeFormat, DeleteResponse, ItemOut, ItemsRequest, ItemsResponse

router = APIRouter(prefix="/v1/items", tags=["items"])


@router.post("", response_model=ItemsResponse)
def upsert(req: ItemsRequest, hasher: HasherDep, collection: CollectionDep, settings: SettingsDep) -> ItemsResponse:
    check_batch(len(req.items), settings, "items")
    codes = np.zeros((len(req.items), hasher.n_bits // 8), np.uint8)
    raw = [(i, it.input) for i, it in enumerate(req.items) if it.input is not None]
    if raw:
        codes[[i for i, _ in raw]] = hasher.encode([x for _, x in raw]).codes
    for i, it in enumerate(req.items):
        if it.code is not None:
            codes[i] = bits.from_wire(it.code, hasher.n_bits)
    result = collection.upsert([it.id for it in req.items], codes, [it.metadata for it in req.items])
    collection.save()
    return ItemsResponse(upserted=len(req.items), inserted=result.inserted, updated=result.updated)


@router.get("/{item_id:path}", response_model=ItemOut)
def get_item(item_id: str, collection: CollectionDep, format: CodeFormat = "hex") -> ItemOut:
    item = collection.get(item_id)
    if item is None:
        raise ApiError("item_not_found", f"no item with id {item_id!r}")
    return ItemOut(id=item.id, code=bits.to_wire(item.code, format), metadata=item.metadata)


@router.delete("/{item_id:path}", response_model=DeleteResponse)
def delete_item(item_id: str, collection: CollectionDep) -> DeleteResponse:
    if collection.delete([item_id]) == 0:
        raise ApiError("item_not_found", f"no item with id {item_id!r}")
    collection.save()
    return DeleteResponse(deleted=item_id)
