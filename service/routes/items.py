"""Items: upsert a batch (from raw inputs or codes), get one, delete one. Writes are durable before the reply."""

from __future__ import annotations

from fastapi import APIRouter

from models import bits
from service.codes import codes_for
from service.deps import CollectionDep, HasherDep, SettingsDep, check_batch
from service.errors import ApiError
from service.schemas import CodeFormat, DeleteResponse, ItemOut, ItemsRequest, ItemsResponse

router = APIRouter(prefix="/v1/items", tags=["items"])


@router.post("", response_model=ItemsResponse)
def upsert(req: ItemsRequest, hasher: HasherDep, collection: CollectionDep, settings: SettingsDep) -> ItemsResponse:
    check_batch(len(req.items), settings, "items")
    codes = codes_for(hasher, [it.input for it in req.items], [it.code for it in req.items])
    result = collection.upsert([it.id for it in req.items], codes, [it.metadata for it in req.items])
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
    return DeleteResponse(deleted=item_id)
