"""Items of a collection: upsert a batch (from raw inputs or codes), get one, delete one. Writes are durable
before the reply. Mounted at /v1/items (the default collection) and /v1/collections/{name}/items."""

from __future__ import annotations

from functools import partial
from typing import Annotated

from fastapi import APIRouter, Path, Request
from hamdex.models import bits
from hamdex.service.codes import codes_and_vectors, codes_for
from hamdex.service.deps import (
    COLLECTION_PREFIXES,
    READ,
    WRITE,
    SettingsDep,
    TargetDep,
    check_batch,
    check_metadata,
    check_texts,
)
from hamdex.service.errors import ApiError
from hamdex.service.schemas import (
    ID_PATTERN,
    MAX_ID_CHARS,
    NO_SURROGATES,
    CodeFormat,
    DeleteResponse,
    ItemOut,
    ItemsRequest,
    ItemsResponse,
    check_item_id,
)
from pydantic import AfterValidator
from starlette.concurrency import run_in_threadpool
from starlette.convertors import Convertor, register_url_convertor


class ItemIdConvertor(Convertor[str]):
    """The rest of the path, line breaks included. Starlette's ``path`` convertor (``.*``) stops at a line break
    and its ``$`` matches before a final one, so ``/items/victim%0A`` reached the item ``victim``."""

    regex = r"[\s\S]*"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("item_id", ItemIdConvertor())
router = APIRouter(tags=["items"])
# an id in the path: no U+0000 (%00), as in a body (a lone surrogate cannot come through URL decoding); a longer
# one than a body may hold names no item (404)
PathId = Annotated[
    str,
    Path(
        description=NO_SURROGATES, json_schema_extra={"minLength": 1, "maxLength": MAX_ID_CHARS, "pattern": ID_PATTERN}
    ),
    AfterValidator(check_item_id),
]


async def upsert(req: ItemsRequest, request: Request, target: TargetDep, settings: SettingsDep) -> ItemsResponse:
    """Insert or replace items, in order (an id given twice: the later item stays); with "fingerprint", codes of
    another model than the collection's are refused."""
    check_batch(len(req.items), settings, "items")
    check_texts([it.input for it in req.items], settings, "items.input")
    check_metadata([it.metadata for it in req.items], settings)
    collection = target.collection
    if req.fingerprint is not None and req.fingerprint != collection.fingerprint:
        raise ApiError(
            "fingerprint_mismatch",
            f"the codes come from model fingerprint {req.fingerprint!r}; collection {target.name!r} holds codes "
            f"of {collection.fingerprint!r}",
        )
    inputs, wire = [it.input for it in req.items], [it.code for it in req.items]
    vectors = None
    if getattr(collection, "vector_dtype", None):  # it keeps vectors: from the same featurization as the codes
        codes, vectors = await codes_and_vectors(request, target.hasher, inputs, wire)
    else:
        codes = await codes_for(request, target.hasher, inputs, wire)
    ids, metadata = [it.id for it in req.items], [it.metadata for it in req.items]
    last = {item_id: i for i, item_id in enumerate(ids)}
    repeats = len(ids) - len(last)
    if repeats:  # an id given twice: the later item replaces the earlier, as two upserts in turn would (and bulk)
        keep = sorted(last.values())
        ids, codes, metadata = [ids[i] for i in keep], codes[keep], [metadata[i] for i in keep]
        vectors = None if vectors is None else vectors[keep]
    options = {} if vectors is None else {"vectors": vectors}
    result = await run_in_threadpool(partial(collection.upsert, ids, codes, metadata, **options))  # durable (fsync)
    return ItemsResponse(upserted=len(req.items), inserted=result.inserted, updated=result.updated + repeats)


def get_item(item_id: PathId, target: TargetDep, format: CodeFormat = "hex") -> ItemOut:
    item = target.collection.get(item_id)
    if item is None:
        raise ApiError("item_not_found", f"no item with id {item_id!r}")
    return ItemOut(id=item.id, code=bits.to_wire(item.code, format), metadata=item.metadata)


def delete_item(item_id: PathId, target: TargetDep) -> DeleteResponse:
    if target.collection.delete([item_id]) == 0:
        raise ApiError("item_not_found", f"no item with id {item_id!r}")
    return DeleteResponse(deleted=item_id)


for prefix, dependencies in COLLECTION_PREFIXES:
    route = router.add_api_route
    writes, reads = [*dependencies, WRITE], [*dependencies, READ]
    route(f"{prefix}/items", upsert, methods=["POST"], response_model=ItemsResponse, dependencies=writes)
    one = f"{prefix}/items/{{item_id:item_id}}"
    route(one, get_item, methods=["GET"], response_model=ItemOut, dependencies=reads)
    route(one, delete_item, methods=["DELETE"], response_model=DeleteResponse, dependencies=writes)
