"""Every item of a collection, page by page, and counting and deleting by filter (issue 22). Mounted at /v1/items
(the default collection) and /v1/collections/{name}/items, beside the item routes (service.routes.items).

- ``GET .../items?cursor=&limit=&filter=``: a page of items in write order and the cursor of the next page (null
  at the end). The filter is JSON in the query string (the URL is bounded by HAMDEX_MAX_URL_BYTES). The cursor is
  opaque (its form is in the document); it holds a position (faiss: an internal id; milvus: the item's write
  sequence number less an origin; never reused either way), so it stays valid under concurrent writes: an item
  not written meanwhile comes exactly once; one rewritten during the scroll comes in its new version (again, if
  the scroll had passed the old one); one deleted before the scroll reaches it not. A page may hold fewer than
  ``limit`` items and still have a next one.
- ``POST .../items:count {filter}``: how many items match.
- ``POST .../items:delete {filter}`` (write scope): deletes the matching items in durable chunks for at most
  DELETE_BUDGET_S (and within the request's deadline); ``complete: false`` says to send it again for the rest.

All three work alike on every backend (faiss and milvus: index.collection and index.milvus give them the same
semantics).
"""

from __future__ import annotations

import json
from typing import Annotated

from fastapi import APIRouter, Query, Request
from hamdex.index.deadline import Deadline
from hamdex.index.filters import check_filter
from hamdex.models import bits
from hamdex.service.deps import COLLECTION_PREFIXES, READ, WRITE, TargetDep
from hamdex.service.errors import ApiError
from hamdex.service.filter_schema import DESCRIPTION, Filter, filter_schema
from hamdex.service.schemas import CodeFormat, ItemOut
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

MAX_PAGE = 1000  # items per page
DELETE_BUDGET_S = 2.0  # work per delete request, well inside the request timeout
CURSOR_PATTERN = "^c[0-9a-f]{1,15}$"  # every string of this form is a position: the document says what is valid
# the filter, JSON in the query string: declared here as a JSON parameter of the filter's schema (FastAPI would
# call it any string, and every string is not a filter)
FILTER_PARAMETER = {
    "name": "filter",
    "in": "query",
    "required": False,
    "description": "A filter, as JSON. " + DESCRIPTION,
    "content": {"application/json": {"schema": filter_schema()}},
}

router = APIRouter(tags=["items"])


class ItemsPage(BaseModel):
    items: list[ItemOut]
    next_cursor: str | None = Field(..., description="Pass as `cursor` for the next page; null: this was the last.")


class FilterRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    filter: Filter = Field(..., description="The items to count or delete ({} : all of them).")


class CountResponse(BaseModel):
    count: int


class DeleteByFilterResponse(BaseModel):
    deleted: int = Field(..., description="Items this request deleted.")
    complete: bool = Field(..., description="No matching item is left; false: send the request again for the rest.")


def encode_cursor(position: int) -> str:
    return f"c{position:x}"


def decode_cursor(cursor: str) -> int:
    """The position a cursor names (the route's pattern has checked its form)."""
    return int(cursor[1:], 16)


def parse_filter(text: str | None) -> dict:
    if text is None:
        return {}
    try:
        where = json.loads(text)
    except ValueError as exc:
        raise ApiError("invalid_query", f"filter is not JSON: {exc}") from None
    return check_filter(where)


async def scroll_items(
    target: TargetDep,
    request: Request,
    cursor: Annotated[
        str | None,
        Query(pattern=CURSOR_PATTERN, description="From the previous page's next_cursor (opaque); none: the start."),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE, description="Most items in the page.")] = 100,
    format: CodeFormat = "hex",
) -> ItemsPage:
    """A page of the collection's items in write order (see the module docstring for what a cursor promises)."""
    after = -1 if cursor is None else decode_cursor(cursor)
    where = parse_filter(request.query_params.get("filter"))
    deadline = request.state.deadline
    items, last = await run_in_threadpool(target.collection.scroll, after, limit, where, deadline)
    page = [ItemOut(id=it.id, code=bits.to_wire(it.code, format), metadata=it.metadata) for it in items]
    return ItemsPage(items=page, next_cursor=None if last is None else encode_cursor(last))


async def count_items(req: FilterRequest, target: TargetDep, request: Request) -> CountResponse:
    """How many items match the filter."""
    deadline = request.state.deadline
    return CountResponse(count=await run_in_threadpool(target.collection.count_matching, req.filter, deadline))


async def delete_items(req: FilterRequest, target: TargetDep, request: Request) -> DeleteByFilterResponse:
    """Delete the items matching the filter, in durable chunks, for a bounded time per request."""
    budget = Deadline(DELETE_BUDGET_S)
    outer: Deadline = request.state.deadline
    if outer.at is not None and budget.at is not None:
        budget.at = min(budget.at, outer.at - 0.5)
    deleted, complete = await run_in_threadpool(target.collection.delete_where, req.filter, budget)
    return DeleteByFilterResponse(deleted=deleted, complete=complete)


for prefix, dependencies in COLLECTION_PREFIXES:
    route = router.add_api_route
    writes, reads = [*dependencies, WRITE], [*dependencies, READ]
    route(
        f"{prefix}/items",
        scroll_items,
        methods=["GET"],
        response_model=ItemsPage,
        dependencies=reads,
        openapi_extra={"parameters": [FILTER_PARAMETER]},
    )
    route(f"{prefix}/items:count", count_items, methods=["POST"], response_model=CountResponse, dependencies=reads)
    route(
        f"{prefix}/items:delete",
        delete_items,
        methods=["POST"],
        response_model=DeleteByFilterResponse,
        dependencies=writes,
    )
