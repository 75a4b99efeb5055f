"""Payload indexes of a collection (issue 22): the top-level metadata fields whose filters SQLite answers from an
index rather than by reading every row (index.store.Store.index_fields). Mounted at /v1/indexes (the default
collection) and /v1/collections/{name}/indexes. Adding one is an admin operation: building reads every item."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path
from hamdex.index.milvus import NO_PAYLOAD_INDEX
from hamdex.index.store import MAX_INDEXED_FIELDS
from hamdex.service.deps import ADMIN, COLLECTION_PREFIXES, READ, TargetDep
from hamdex.service.errors import ApiError
from hamdex.service.schemas import INDEX_FIELD_PATTERN
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

router = APIRouter(tags=["collections"])
FIELD_PATTERN = INDEX_FIELD_PATTERN  # over HTTP: names a path segment carries unchanged
FieldName = Annotated[
    str, Path(pattern=FIELD_PATTERN, description="A top-level metadata field: letters, digits, '_', '.', '-'.")
]


class IndexedFields(BaseModel):
    fields: list[str] = Field(..., description=f"Payload-indexed fields, at most {MAX_INDEXED_FIELDS}.")


def list_indexes(target: TargetDep) -> IndexedFields:
    return IndexedFields(fields=_checked(target).indexed_fields())


async def add_index(field: FieldName, target: TargetDep) -> IndexedFields:
    """Index a metadata field (idempotent); filters on it then search the index."""
    return IndexedFields(fields=await run_in_threadpool(_checked(target).index_fields, [field]))


def _checked(target):
    if target.collection.backend != "faiss":
        raise ApiError("unsupported_by_backend", NO_PAYLOAD_INDEX)
    return target.collection


for prefix, dependencies in COLLECTION_PREFIXES:
    route = router.add_api_route
    route(
        f"{prefix}/indexes",
        list_indexes,
        methods=["GET"],
        response_model=IndexedFields,
        dependencies=[*dependencies, READ],
    )
    route(
        f"{prefix}/indexes/{{field}}",
        add_index,
        methods=["PUT"],
        response_model=IndexedFields,
        dependencies=[*dependencies, ADMIN],
    )
