"""A collection's data in and out (index.transfer, index.backup):

- ``GET /v1/collections/{name}/export?format=ndjson|parquet`` (read scope) streams every item as
  ``{id, code (hex), metadata}`` behind the collection's header (n_bits, fingerprint, index kind: the first NDJSON
  line, or the Parquet schema metadata), read block by block from one SQLite read transaction.
- ``POST /v1/collections/{name}/import`` (write scope) takes such an NDJSON body, block by block: codes, not inputs,
  so a header of another fingerprint or code length is refused (409 fingerprint_mismatch). The first bad line
  answers 422 with its error type; the blocks before it stay written.
- ``POST /v1/collections/{name}/snapshots`` (admin scope) makes an online backup into HAMDEX_BACKUPS_DIR while
  writes go on; ``GET`` lists them. ``hamdex restore`` brings one back into a folder that is not open.

Import and export are exempt from the body-size limit and the request timeout (service.middleware), as the bulk
route is: each line is bounded by HAMDEX_MAX_BULK_LINE_BYTES, and a body that sends nothing for
HAMDEX_REQUEST_TIMEOUT_S gets 504.
"""

from __future__ import annotations

import time
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import StreamingResponse
from hamdex.index import backup, transfer
from hamdex.index.base import CollectionLike
from hamdex.index.errors import CollectionNotFoundError, ImportFormatError
from hamdex.service.bulk.ndjson import MEDIA_TYPE, split_lines
from hamdex.service.deps import ADMIN, READ, WRITE, ReadyStateDep, SettingsDep, collection_name, metadata_bytes
from hamdex.service.errors import ApiError
from hamdex.service.routes.bulk import body_chunks
from hamdex.service.schemas import MAX_ID_CHARS, ImportResponse, SnapshotInfo, SnapshotList
from hamdex.service.settings import Settings
from starlette.concurrency import iterate_in_threadpool, run_in_threadpool

router = APIRouter(prefix="/v1/collections", tags=["transfer"])
NAMED = [Depends(collection_name)]
PARQUET = "application/vnd.apache.parquet"
EXPORT_RESPONSE = {
    200: {
        "description": "The export: an NDJSON header line and one row per line, or a Parquet file.",
        "content": {MEDIA_TYPE: {"schema": {"type": "string"}}, PARQUET: {"schema": {"type": "string"}}},
    }
}
# the body's schema (a header, then rows) is written by service.openapi_limits
IMPORT_BODY = {"requestBody": {"required": True, "content": {MEDIA_TYPE: {"schema": {"type": "array"}}}}}


@router.get("/{name}/export", dependencies=[*NAMED, READ], response_class=StreamingResponse, responses=EXPORT_RESPONSE)
async def export_collection(
    name: str,
    state: ReadyStateDep,
    format: Annotated[Literal["ndjson", "parquet"], Query(description="ndjson or parquet.")] = "ndjson",
) -> StreamingResponse:
    """Every item of the collection as of one moment, streamed (see the module docstring)."""

    def start() -> transfer.Export:
        with state.registry.use(name) as collection:
            return transfer.Export(collection)

    export = await run_in_threadpool(start)
    stream = transfer.ndjson_lines(export) if format == "ndjson" else transfer.parquet_bytes(export)
    media = MEDIA_TYPE if format == "ndjson" else PARQUET
    disposition = f'attachment; filename="{name}.{format}"'
    return StreamingResponse(
        iterate_in_threadpool(stream), media_type=media, headers={"Content-Disposition": disposition}
    )


@router.post("/{name}/import", response_model=ImportResponse, dependencies=[*NAMED, WRITE], openapi_extra=IMPORT_BODY)
async def import_collection(name: str, request: Request, state: ReadyStateDep, settings: SettingsDep) -> ImportResponse:
    """Upsert the rows of an NDJSON export, block by block (see the module docstring)."""
    t0, header, block, items, line_no = time.perf_counter(), None, [], 0, 0
    try:
        async for lines in split_lines(body_chunks(request, settings.request_timeout_s), settings.max_bulk_line_bytes):
            for line in lines:
                line_no += 1
                if line is None:
                    raise ImportFormatError(
                        f"line {line_no} is longer than {settings.max_bulk_line_bytes} bytes", "line_too_long"
                    )
                if header is None:
                    header = transfer.parse_header_line(line)
                    target = await run_in_threadpool(_check_target, state, name, header)
                    continue
                block.append((line_no, line))
                if len(block) >= settings.max_batch:
                    items += await run_in_threadpool(_load, state, name, target, header, block, settings)
                    block = []
        if header is None:
            raise ImportFormatError("the body is empty: an export starts with its header line")
        items += await run_in_threadpool(_load, state, name, target, header, block, settings) if block else 0
    except ImportFormatError as exc:
        raise ApiError(exc.error_type, f"{exc}; {items} rows before it were written") from exc

    def count() -> int:
        with state.registry.use(name) as collection:
            return len(collection)

    seconds = time.perf_counter() - t0
    return ImportResponse(items=items, collection_count=await run_in_threadpool(count), seq=header.seq, seconds=seconds)


def _check_target(state: ReadyStateDep, name: str, header: transfer.Header) -> CollectionLike:
    """The collection the import writes to, if the header's codes fit it."""
    with state.registry.use(name) as collection:
        header.check_target(collection)
        return collection


def _load(
    state: ReadyStateDep, name: str, target: CollectionLike, header: transfer.Header, block: list, settings: Settings
) -> int:
    """Parse and check a block of lines, then upsert it (one durable write); rows written."""
    n_bytes, rows = header.n_bits // 8, []
    for line_no, line in block:
        item_id, code, metadata = transfer.parse_row(line, n_bytes, line_no)
        if len(item_id) > MAX_ID_CHARS:
            raise ImportFormatError(
                f"line {line_no}: id has {len(item_id)} characters; at most {MAX_ID_CHARS}", "bad_id"
            )
        if metadata_bytes(metadata) > settings.max_metadata_bytes:
            message = f"line {line_no}: metadata is larger than {settings.max_metadata_bytes} bytes as JSON"
            raise ApiError("metadata_too_large", message)
        rows.append((item_id, code, metadata))
    with state.registry.use(name) as collection:  # held one block at a time: a drop waits for one block at most
        if collection is not target:  # dropped, and created again, since the import began
            raise CollectionNotFoundError(f"collection {name!r} was dropped during the import")
        return transfer.load_block(collection, rows)


@router.post("/{name}/snapshots", status_code=201, response_model=SnapshotInfo, dependencies=[*NAMED, ADMIN])
def create_snapshot(name: str, state: ReadyStateDep) -> SnapshotInfo:
    """Back the collection up (SQLite's backup API and a snapshot of its index) while writes go on."""
    with state.registry.use(name) as collection:
        record = backup.create(collection, state.settings.backups_root / name)
    return SnapshotInfo(**{key: record[key] for key in SnapshotInfo.model_fields})


@router.get("/{name}/snapshots", response_model=SnapshotList, dependencies=[*NAMED, ADMIN])
def list_snapshots(name: str, state: ReadyStateDep) -> SnapshotList:
    """The collection's complete backups, oldest first."""
    with state.registry.use(name):  # 404 for a collection that does not exist
        pass
    records = backup.list_backups(state.settings.backups_root / name)
    return SnapshotList(snapshots=[SnapshotInfo(**{k: r[k] for k in SnapshotInfo.model_fields}) for r in records])
