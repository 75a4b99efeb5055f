"""Items of a collection: upsert a batch (from raw inputs or codes), get one, delete one. Writes are durable
before the reply. Mounted at /v1/items (the default collection) and /v1/collections/{name}/items."""

from __future__ import annotations

from fastapi import APIRouter

from models import bits
from service.codes import codes_for
from service.deps import COLLECTION_PREFIXES, SettingsDep, TargetDep, check_batch
from service.errors import ApiError
from service.schemas import CodeFormat, DeleteResponse, ItemOut, ItemsRequest, ItemsResponse

router = APIRouter(tags=["items"])


def upsert(req: ItemsRequest, target: TargetDep, settings: SettingsDep) -> ItemsResponse:
    """Insert or replace items; with "fingerprint", codes of another model than the collection's are refused."""
    check_batch(len(req.items), settings, "items")
    collection = target.collection
    if req.fingerprint is not None and req.fingerprint != collection.fingerprint:
        raise ApiError(
            "fingerprint_mismatch",
            f"the codes come from model fingerprint {req.fingerprint!r}; collection {target.name!r} holds codes "
            f"of {collection.fingerprint!r}",
        )
    codes = codes_for(target.hasher, [it.input for it in req.items], [it.code for it in req.items])
    result = collection.upsert([it.id for it in req.items], codes, [it.metadata for it in req.items])
    return ItemsResponse(upserted=len(req.items), inserted=result.inserted, updated=result.updated)


def get_item(item_id: str, target: TargetDep, format: CodeFormat = "hex") -> ItemOut:
    item = target.collection.get(item_id)
    if item is None:
        raise ApiError("item_not_found", f"no item with id {item_id!r}")
    return ItemOut(id=item.id, code=bits.to_wire(item.code, format), metadata=item.metadata)


def delete_item(item_id: str, target: TargetDep) -> DeleteResponse:
    if target.collection.delete([item_id]) == 0:
        raise ApiError("item_not_found", f"no item with id {item_id!r}")
    return DeleteResponse(deleted=item_id)


for prefix, dependencies in COLLECTION_PREFIXES:
    route = router.add_api_route
    route(f"{prefix}/items", upsert, methods=["POST"], response_model=ItemsResponse, dependencies=dependencies)
    one = f"{prefix}/items/{{item_id:path}}"
    route(one, get_item, methods=["GET"], response_model=ItemOut, dependencies=dependencies)
    route(one, delete_item, methods=["DELETE"], response_model=DeleteResponse, dependencies=dependencies)
