"""Streaming bulk upsert: ``POST {prefix}/items:bulk`` takes an NDJSON body (rows as in service.bulk.ndjson) of any
size, and ``GET {prefix}/items:bulk/{job}`` tells how far a resumable job got. Mounted at /v1 (the default
collection) and /v1/collections/{name}; write scope.

The body is read as it arrives and cut into blocks of HAMDEX_MAX_BATCH lines (fewer when they reach
HAMDEX_MAX_BODY_BYTES). Each block is parsed, featurized, encoded and upserted in a worker thread, and is durable
before the next one is read. Bad rows are skipped and counted by reason, as in the file bulk job (service.bulk.job),
and the answer is then 422 ``rows_skipped`` whose body is the report (the good rows are written): 2xx means every
row was written. With ``strict=true`` the first bad row answers 422 with its reason instead: earlier blocks stay
committed, nothing of its block is written. A body with no rows answers 422 ``empty_batch``. The route is exempt
from the body-size limit and the request timeout (service.middleware): lines are bounded by
HAMDEX_MAX_BULK_LINE_BYTES, and a body that sends nothing for HAMDEX_REQUEST_TIMEOUT_S gets 504.

The collection is held (``Registry.use``) only while a block is written, not for the whole body: a drop during a
slow upload waits for one block at most, and the upload then stops with 404 ``collection_not_found``, even if a
collection of the same name was created meanwhile.

Resumable: with ``job=<key>`` each block's upsert stores ``{"items": start + lines consumed}`` under ``bulk:<key>``
in the same SQLite transaction as its items, and the end of the body ``{"items": n, "done": true}``. A client that
was cut off asks the GET route how far it got, and sends the rest with ``start=<items>``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import JSONResponse
from hamdex.index.backends import AnyCollection
from hamdex.index.errors import CollectionNotFoundError
from hamdex.index.registry import Registry
from hamdex.models.rerank import rerank_vectors
from hamdex.service.bulk.job import BadRowError, SkipReport, good_rows
from hamdex.service.bulk.ndjson import MEDIA_TYPE, BadLine, parse_line, split_lines
from hamdex.service.deps import (
    COLLECTION_PREFIXES,
    WRITE,
    LooseTargetDep,
    ReadyStateDep,
    SettingsDep,
    Target,
    TargetDep,
)
from hamdex.service.errors import ApiError, ErrorBody, error_response
from hamdex.service.schemas import BulkJob, BulkResponse, BulkRowsSkipped
from hamdex.service.settings import Settings
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect

router = APIRouter(tags=["items"])
LOG = logging.getLogger(__name__)
JOB = r"^[A-Za-z0-9_-]{1,64}$"
JOB_PREFIX = "bulk:"  # the collection's progress records of local bulk jobs have no prefix
# the body's schema, an array of rows (one per line), is the app's own: service.openapi_limits writes it
NDJSON_BODY = {"requestBody": {"required": True, "content": {MEDIA_TYPE: {"schema": {"type": "array"}}}}}
RawBlock = list[bytes | None]  # a block's lines as received; None: a line too long
MAX_START = 2**53  # rows: past any real body, and still exact as a JSON number in every client


@dataclass(frozen=True)
class _Upload:
    """Where a bulk upload writes: ``target``'s collection, held one block at a time (see the module docstring)."""

    registry: Registry
    target: Target

    @contextmanager
    def hold(self) -> Iterator[AnyCollection]:
        with self.registry.use(self.target.name) as collection:
            if collection is not self.target.collection:  # dropped, and created again, since the upload began
                raise CollectionNotFoundError(f"collection {self.target.name!r} was dropped during the upload")
            yield collection


async def bulk_upsert(
    request: Request,
    target: LooseTargetDep,
    state: ReadyStateDep,
    settings: SettingsDep,
    strict: Annotated[
        bool, Query(description="Stop with 422 at the first bad row, instead of writing the good rows first.")
    ] = False,
    job: Annotated[str | None, Query(pattern=JOB, description="Record progress under this key (resumable).")] = None,
    start: Annotated[
        int, Query(ge=0, le=MAX_START, description="Rows the client already sent in earlier requests.")
    ] = 0,
) -> Any:
    """Upsert the rows of an NDJSON body, block by block (see the module docstring)."""
    t0 = time.perf_counter()
    upload = _Upload(state.registry, target)
    report, key = SkipReport(strict=strict), None if job is None else JOB_PREFIX + job
    items, done = 0, start  # items written; rows consumed, start included
    try:
        async for block in _blocks(request, settings):
            record = None if key is None else (key, {"items": done + len(block)})
            items += await run_in_threadpool(_write_block, block, done, upload, settings, report, record)
            done += len(block)
        if done == start:  # nothing happened: the job, if any, is not marked done
            raise ApiError("empty_batch", "the body holds no rows; send one JSON object per line")
        count = await run_in_threadpool(_finish, upload, key, done)
    except BadRowError as exc:
        kept = _kept(items, start, done)
        raise ApiError(exc.error_type, f"{exc}; nothing of its block was written (strict); {kept}") from exc
    except CollectionNotFoundError as exc:
        raise ApiError("collection_not_found", f"{exc}; rows from {done} on were not written") from exc
    except ClientDisconnect:
        LOG.warning("bulk upload into %r cut off by the client; %s", target.name, _kept(items, start, done))
        return error_response("client_closed", "the client closed the connection during the upload")
    summary = BulkResponse(
        items=items,
        skipped=report.skipped,
        reasons=dict(report.reasons),
        examples=report.examples,
        seconds=time.perf_counter() - t0,
        collection_count=count,
        resumed_from=start,
    )
    if not report.skipped:
        return summary
    # a bad row makes the body one the API document calls invalid: never a 2xx, though the good rows are written
    message = f"{report.skipped} of {done - start} rows were bad and skipped; the other {items} are written"
    return JSONResponse({"error": message, "error_type": "rows_skipped", **summary.model_dump()}, status_code=422)


def _finish(upload: _Upload, key: str | None, done: int) -> int:
    """Mark the job done (with ``key``); the collection's count."""
    with upload.hold() as collection:
        if key is not None:
            collection.set_progress(key, {"items": done, "done": True})
        return len(collection)


def bulk_job(job: Annotated[str, Path(pattern=JOB)], target: TargetDep) -> BulkJob:
    """How far a bulk job got: rows consumed (start included), and whether its last request finished."""
    record = target.collection.progress(JOB_PREFIX + job)
    if not isinstance(record, dict):
        raise ApiError("job_not_found", f"no bulk job {job!r} in collection {target.name!r}")
    return BulkJob(job=job, items=int(record.get("items", 0)), done=bool(record.get("done", False)))


def _kept(items: int, start: int, done: int) -> str:
    if done == start:
        return "no earlier block of this request was committed"
    return f"the earlier blocks of this request (rows {start} to {done - 1}, {items} items) stay committed"


async def _blocks(request: Request, settings: Settings) -> AsyncIterator[RawBlock]:
    block: RawBlock = []
    size = 0
    async for lines in split_lines(body_chunks(request, settings.request_timeout_s), settings.max_bulk_line_bytes):
        for line in lines:
            block.append(line)
            size += 0 if line is None else len(line)
            if len(block) >= settings.max_batch or size >= settings.max_body_bytes:
                yield block
                block, size = [], 0
    if block:
        yield block


async def body_chunks(request: Request, idle_s: float) -> AsyncIterator[bytes]:
    """The body's chunks; 504 when none comes for ``idle_s`` seconds (the bulk and import routes' streamed bodies)."""
    stream = request.stream()
    while True:
        try:
            chunk = await asyncio.wait_for(anext(stream), idle_s)
        except StopAsyncIteration:
            return
        except TimeoutError as exc:
            raise ApiError("timeout", f"the body sent nothing for {idle_s} s") from exc
        yield chunk


def _write_block(
    lines: RawBlock, first_row: int, upload: _Upload, settings: Settings, report: SkipReport, record: Any
) -> int:
    """Parse, check, encode and upsert one block (in a worker thread); the number of rows written."""
    target = upload.target
    ids, inputs, metadata, rows, bad = [], [], [], [], _BadRows()
    for i, line in enumerate(lines):
        try:
            row = parse_line(line, settings)
        except BadLine as exc:
            bad.add(exc.reason, str(exc), first_row + i, exc.id)
            continue
        ids.append(row.id)
        inputs.append(row.input)
        metadata.append(row.metadata)
        rows.append(first_row + i)
    good, features = good_rows(ids, inputs, rows, target.hasher, bad)
    bad.report_to(report)  # strict: raises at the block's first bad row
    if not len(good):
        with upload.hold() as collection:
            if record is not None:
                collection.set_progress(*record)
        return 0
    codes = target.hasher.encode_features(features).codes  # (m, n_bits // 8)
    keeps = getattr(target.collection, "vector_dtype", None) is not None  # vectors from the same features
    vectors = rerank_vectors(target.hasher.featurizer, features) if keeps else None  # (m, d)
    ids, metadata = [ids[i] for i in good], [metadata[i] for i in good]
    last = {item_id: i for i, item_id in enumerate(ids)}
    if len(last) < len(ids):  # the same id twice: the later row replaces the earlier one, as two upserts would
        keep = sorted(last.values())
        ids, codes, metadata = [ids[i] for i in keep], codes[keep], [metadata[i] for i in keep]
        vectors = None if vectors is None else vectors[keep]
    options = {} if vectors is None else {"vectors": vectors}
    with upload.hold() as collection:
        collection.upsert(ids, codes, metadata, progress=record, **options)
    return len(good)


@dataclass
class _BadRows:
    """A block's bad rows, found by parsing and by featurizing, to report in row order."""

    found: list[tuple[int, str, str, str | None]] = field(default_factory=list)

    def add(self, error_type: str, message: str, row: int | None = None, id: str | None = None) -> None:
        assert row is not None
        self.found.append((row, error_type, message, id))

    def report_to(self, report: SkipReport) -> None:
        for row, error_type, message, item_id in sorted(self.found, key=lambda bad: bad[0]):
            report.add(error_type, message, row, item_id)


for prefix, dependencies in COLLECTION_PREFIXES:
    writes = [*dependencies, WRITE]
    router.add_api_route(
        f"{prefix}/items:bulk",
        bulk_upsert,
        methods=["POST"],
        response_model=BulkResponse,
        dependencies=writes,
        openapi_extra=NDJSON_BODY,
        responses={422: {"model": BulkRowsSkipped | ErrorBody, "description": "Bad rows (or a bad request)"}},
    )
    router.add_api_route(
        f"{prefix}/items:bulk/{{job}}", bulk_job, methods=["GET"], response_model=BulkJob, dependencies=writes
    )
