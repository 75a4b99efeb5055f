"""The one error table: every error type the API can answer with, its HTTP status, and the handlers that render
every error as ``{"error": <message>, "error_type": <type>}``.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from hamdex.index.errors import CollectionError
from hamdex.models.bits import CodeFormatError
from hamdex.models.featurizers import InputError
from hamdex.service.batcher import QueueFull
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

LOG = logging.getLogger(__name__)

STATUS: dict[str, int] = {
    "validation_error": 422,  # the request body does not match the schema
    "empty_batch": 422,
    "batch_too_large": 422,
    "k_out_of_range": 422,
    "radius_out_of_range": 422,
    "rerank_out_of_range": 422,  # rerank.candidates outside 1..HAMDEX_MAX_RERANK_CANDIDATES
    "invalid_input": 422,
    "input_type": 422,  # e.g. a vector sent to a text model
    "input_shape": 422,  # wrong vector length or image shape
    "input_range": 422,  # pixel values outside [0, 255]
    "non_finite": 422,  # NaN or infinite values
    "input_dtype": 422,  # a binary body's dtype other than float32, float16 or uint8 (service.binary_body)
    "code_format": 422,  # malformed code, or a code of the wrong length
    "code_length": 422,
    "invalid_items": 422,  # e.g. metadata that is not JSON (NaN)
    "invalid_query": 422,  # e.g. a filter field that is an empty string
    "invalid_collection_name": 422,
    "invalid_index_kind": 422,
    "invalid_index_params": 422,
    "invalid_milvus_uri": 422,  # not a plain .db file name, or a server URI while HAMDEX_MILVUS_REMOTE_URIS is off
    "invalid_metadata": 422,  # metadata that would not read back: a lone surrogate, nesting deeper than 64
    "item_not_found": 404,
    # a query by id naming no item: the URL's collection exists (a 404 would say it does not), its content does not
    # hold the item
    "query_id_not_found": 409,
    "collection_not_found": 404,
    "model_not_found": 404,
    "not_found": 404,
    "method_not_allowed": 405,
    "fingerprint_mismatch": 409,  # codes of another model than the collection's
    # nprobe / ef_search / radius on a collection whose index kind does not take it: the collection decides, so a
    # request the API document calls valid may meet it (a conflict with the collection's state, as above)
    "unsupported_search_param": 409,
    "collection_exists": 409,
    "too_many_indexes": 409,  # a payload index past a collection's 16: its indexes so far decide, not the request
    # /v1/reconstruct and /v1/generate on a model whose decoder rebuilds other features than its inputs (scattering)
    "not_reconstructable": 409,
    "image_format_unsupported": 409,  # images whose channels a PNG cannot hold: ask image_format array
    "collection_protected": 409,  # the default collection cannot be dropped
    "collection_locked": 409,  # open in another process
    "encode_only": 409,  # a collection route on a server started with HAMDEX_ENCODE_ONLY (service.app.EncodeOnly)
    # a collection keeping vectors for a model whose features are not kept (text: sparse TF-IDF), or on milvus
    "vectors_unsupported": 409,
    "backend_unavailable": 501,  # a collection backend whose client library is not installed (pymilvus)
    "backend_unreachable": 503,  # a collection backend's server does not answer (a Milvus URI)
    "text_too_long": 422,  # a text input longer than HAMDEX_MAX_TEXT_CHARS
    "metadata_too_large": 422,  # an item's metadata larger than HAMDEX_MAX_METADATA_BYTES as JSON
    # bad rows of a bulk body (service.routes.bulk): skipped and counted under these, or 422 with ?strict=true
    "data_format": 422,  # a line that is not a JSON object of the row fields
    "bad_id": 422,  # a missing, empty or too long id, or one holding U+0000 or a lone surrogate
    "undecodable": 422,  # a line that is not UTF-8
    "line_too_long": 422,  # a line longer than HAMDEX_MAX_BULK_LINE_BYTES
    "rows_skipped": 422,  # bad rows of a bulk body skipped (not strict): the others written; the body is the report
    "job_not_found": 404,  # no bulk job of that key in the collection
    "unsupported_by_backend": 409,  # export or backup of a collection whose backend does not offer it (milvus)
    "snapshot_not_found": 404,  # no backup of that name (hamdex restore: no backup at the path)
    "corrupt_snapshot": 500,  # a backup whose files do not match its record's checksums
    "invalid_header": 400,  # e.g. two Authorization headers (which one counts would be a guess)
    "uri_too_long": 414,  # a path and query longer than HAMDEX_MAX_URL_BYTES
    "unauthorized": 401,  # no API key, or an unknown one
    "forbidden": 403,  # a valid key without the scope the route needs
    "body_too_large": 413,  # larger than HAMDEX_MAX_BODY_BYTES (sent by service.middleware)
    "queue_full": 429,  # the micro-batcher's queue is full: retry after Retry-After seconds
    "timeout": 504,  # slower than HAMDEX_REQUEST_TIMEOUT_S (sent by service.middleware)
    "client_closed": 499,  # the client went away during a bulk upload (for logs and metrics: nobody reads it)
    "not_ready": 503,  # the model and default collection are still loading
    "load_failed": 503,  # loading them failed (the cause is in the message and the log)
    "corrupt_collection": 500,
    "invalid_manifest": 500,
    "collection_error": 500,
    "model_error": 500,  # a named model's checkpoint cannot be loaded
    "internal": 500,
}


# Starlette / FastAPI HTTPExceptions by status. 400 is FastAPI's "error parsing the body" (e.g. not UTF-8): the
# same error as a body that is not JSON. 413 is service.middleware.BodyTooLarge raised while the body is read.
_HTTP_ERROR_TYPES = {400: "validation_error", 404: "not_found", 405: "method_not_allowed", 413: "body_too_large"}


class ErrorBody(BaseModel):
    error: str
    error_type: str = Field(json_schema_extra={"enum": list(STATUS)})  # the document lists every type


class ApiError(Exception):
    def __init__(self, error_type: str, message: str, headers: dict[str, str] | None = None) -> None:
        assert error_type in STATUS, error_type
        super().__init__(message)
        self.error_type = error_type
        self.headers = headers or {}


def error_response(error_type: str, message: str) -> JSONResponse:
    if not message.isascii():  # a message quoting a lone surrogate of the request must still encode as UTF-8
        message = message.encode("utf-8", "backslashreplace").decode("utf-8")
    return JSONResponse({"error": message, "error_type": error_type}, status_code=STATUS.get(error_type, 500))


def _validation_message(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors()[:5]:
        loc = ".".join(str(p) for p in err.get("loc", ()) if p != "body")
        parts.append(f"{loc}: {err.get('msg')}" if loc else str(err.get("msg")))
    return "; ".join(parts) or "invalid request"


HTTP_METHODS = ("DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT")


def allowed_methods(request: Request) -> str:
    """The ``Allow`` header of a 405: each method some route takes on the request's path. (Starlette's names only
    the methods of the first route that matched the path: ``GET`` for /v1/collections, which takes POST too.)"""
    routes = request.app.router.routes
    allowed = [
        method
        for method in HTTP_METHODS
        if any(route.matches({**request.scope, "method": method})[0] is Match.FULL for route in routes)
    ]
    return ", ".join(allowed)


def install_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api(_: Request, exc: ApiError) -> JSONResponse:
        resp = error_response(exc.error_type, str(exc))
        if exc.error_type == "not_ready":
            resp.headers["Retry-After"] = "1"
        resp.headers.update(exc.headers)
        return resp

    @app.exception_handler(QueueFull)
    async def _queue_full(_: Request, exc: QueueFull) -> JSONResponse:
        resp = error_response("queue_full", str(exc))
        resp.headers["Retry-After"] = str(max(1, round(exc.retry_after)))
        return resp

    @app.exception_handler(CollectionError)
    async def _collection(_: Request, exc: CollectionError) -> JSONResponse:
        return error_response(exc.error_type, str(exc))

    @app.exception_handler(InputError)
    async def _input(_: Request, exc: InputError) -> JSONResponse:
        return error_response(exc.error_type, str(exc))

    @app.exception_handler(CodeFormatError)
    async def _code(_: Request, exc: CodeFormatError) -> JSONResponse:
        return error_response("code_format", str(exc))

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response("validation_error", _validation_message(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        error_type = _HTTP_ERROR_TYPES.get(exc.status_code)
        resp = error_response(error_type or "invalid_input", str(exc.detail))
        if error_type is None:  # a status the table does not know keeps Starlette's code
            resp.status_code = exc.status_code
        resp.headers.update(exc.headers or {})
        if exc.status_code == 405:
            resp.headers["Allow"] = allowed_methods(request)
        return resp

    @app.exception_handler(Exception)
    async def _internal(_: Request, exc: Exception) -> JSONResponse:
        LOG.exception("unhandled error")
        return error_response("internal", "internal error; see the server log")
