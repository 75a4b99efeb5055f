"""One ASGI middleware around every HTTP request: request id, body-size limit, timeout, timing headers, metrics
and the structured access log. Plain ASGI (not Starlette's BaseHTTPMiddleware) to keep its cost per request small.

- ``X-Request-ID``: taken from the request when it is a sane token, else generated; returned on every response and
  written on every log line of the request.
- URL size: a path and query string longer than ``max_url_bytes``: 414 ``uri_too_long``.
- Body size: a ``Content-Length`` above ``max_body_bytes`` is refused before reading; a chunked body is counted
  while read. Either way: 413 ``body_too_large``.
- Timeout: a request still running after ``request_timeout_s`` gets 504 ``timeout`` (the work it started, such as
  a write, may still complete; a write is durable once acknowledged, and never half-applied). A search stops too:
  each request carries an :class:`index.deadline.Deadline` (``request.state.deadline``) that expires with the
  timeout and is cancelled whenever the request ends, and the collection checks it between blocks of work.
- ``X-Queue-Ms``, ``X-Encode-Ms``, ``X-Search-Ms``: time in the micro-batchers' queues and in model / FAISS calls.
- Batch size (:class:`BatchGuard`, just inside): a JSON body whose ``queries`` / ``items`` / ``inputs`` list holds
  more than ``max_batch`` elements gets 422 ``batch_too_large`` before it is parsed and validated (counting
  stops at max_batch + 1 elements; the answer comes before the API key is checked, as a 413 does).
- Streaming routes, those whose path ends in ``:bulk``, ``/import`` or ``/export`` (service.routes.bulk and
  .transfer), are exempt from the body-size limit and the timeout: they take bodies of any size, block by block,
  and bound each line and the wait for each chunk themselves.
"""

from __future__ import annotations

import asyncio
import codecs
import json
import logging
import re
import secrets
import time
from typing import Any, NamedTuple

import orjson
from hamdex.index.deadline import Deadline
from hamdex.service.engine import Timings
from hamdex.service.metrics import Metrics
from hamdex.service.settings import Settings
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

LOG = logging.getLogger("hamdex.access")
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
STREAMING_SUFFIX = (":bulk", "/import", "/export")  # paths exempt from the body-size limit and the timeout


class BodyTooLarge(HTTPException):
    """A Starlette HTTPException: FastAPI re-raises that from its body parsing (any other exception raised while it
    reads the body becomes 400 "error parsing the body"), and the app's handler renders it as 413 body_too_large."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"the request body exceeds {limit} bytes")


def _error(status: int, error_type: str, message: str, headers: list[tuple[bytes, bytes]]) -> list[dict[str, Any]]:
    body = orjson.dumps({"error": message, "error_type": error_type})
    head = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *headers]
    return [
        {"type": "http.response.start", "status": status, "headers": head},
        {"type": "http.response.body", "body": body},
    ]


def _error_type(body: bytes) -> str | None:
    """The ``error_type`` of an error body (service.errors: every error is ``{"error", "error_type"}``), for the
    error counter; None for a body that is not one (e.g. a streamed or non-JSON reply)."""
    if not body.startswith(b"{") or len(body) > 65536:
        return None
    try:
        value = orjson.loads(body).get("error_type")
    except (orjson.JSONDecodeError, AttributeError):
        return None
    return value if isinstance(value, str) else None


class ServiceMiddleware:
    def __init__(self, app: Any, settings: Settings, metrics: Metrics) -> None:
        self.app, self.settings, self.metrics = app, settings, metrics

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        headers = dict(scope.get("headers") or [])
        given = headers.get(b"x-request-id", b"").decode("latin-1")
        request_id = given if _REQUEST_ID.match(given) else secrets.token_hex(16)
        timings = Timings()
        streaming = scope.get("path", "").endswith(STREAMING_SUFFIX)
        limit = None if streaming else self.settings.max_body_bytes
        timeout = None if streaming else self.settings.request_timeout_s
        deadline = Deadline(timeout)
        scope.setdefault("state", {}).update(request_id=request_id, timings=timings, deadline=deadline)
        state: dict[str, Any] = {"status": 500, "started": False, "error_type": None}
        id_header = [(b"x-request-id", request_id.encode())]

        async def send_with_headers(message: dict) -> None:
            if message["type"] == "http.response.body" and state["status"] >= 400 and state["error_type"] is None:
                state["error_type"] = _error_type(message.get("body", b""))
            if message["type"] == "http.response.start":
                state["status"], state["started"] = message["status"], True
                extra = [
                    (b"x-queue-ms", f"{timings.queue_s * 1000:.2f}".encode()),
                    (b"x-encode-ms", f"{timings.encode_s * 1000:.2f}".encode()),
                    (b"x-search-ms", f"{timings.search_s * 1000:.2f}".encode()),
                ]
                message["headers"] = [*message.get("headers", []), *id_header, *extra]
            await send(message)

        received = 0

        async def counted_receive() -> dict:
            nonlocal received
            message = await receive()
            if limit is not None and message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit)
            return message

        try:
            url_bytes = len(scope.get("raw_path") or b"") + len(scope.get("query_string") or b"")
            if url_bytes > self.settings.max_url_bytes:  # uvicorn itself answers beyond ~64 KiB (plain text)
                message = f"the path and query string exceed {self.settings.max_url_bytes} bytes"
                await self._fail(send, state, 414, "uri_too_long", message, id_header)
                return
            length = headers.get(b"content-length")
            if limit is not None and length is not None and length.isdigit() and int(length) > limit:
                raise BodyTooLarge(limit)
            await asyncio.wait_for(self.app(scope, counted_receive, send_with_headers), timeout)
        except BodyTooLarge as exc:
            await self._fail(send, state, 413, "body_too_large", exc.detail, id_header)
        except TimeoutError:
            message = f"the request took longer than {self.settings.request_timeout_s} s"
            await self._fail(send, state, 504, "timeout", message, id_header)
        finally:
            deadline.cancel()  # answered, timed out or abandoned: work still running for it stops at its next check
            self._account(scope, state, time.perf_counter() - start, request_id)

    @staticmethod
    async def _fail(send: Any, state: dict, status: int, error_type: str, message: str, headers: list) -> None:
        if state["started"]:  # too late for an error response: the client sees a cut-off reply
            return
        state["status"], state["error_type"] = status, error_type
        for msg in _error(status, error_type, message, headers):
            await send(msg)

    def _account(self, scope: dict, state: dict, seconds: float, request_id: str) -> None:
        status = state["status"]
        route = scope.get("route")
        # the template without convertors: "/v1/items/{item_id}", not "{item_id:item_id}"
        template = getattr(route, "path_format", None) or getattr(route, "path", None) or "unmatched"
        method = scope.get("method", "")
        self.metrics.requests.labels(template, method, str(status)).inc()
        self.metrics.latency.labels(template, method).observe(seconds)
        if status >= 400:
            self.metrics.errors.labels(template, method, state["error_type"] or f"http_{status}").inc()
        LOG.info(
            "%s %s %d %.1fms",
            method,
            scope.get("path", ""),
            status,
            seconds * 1000,
            extra={"request_id": request_id, "route": template, "status": status, "ms": round(seconds * 1000, 2)},
        )


INLINE_COUNT_BYTES = 256 * 1024  # BatchGuard counts shorter bodies on the event loop (about a millisecond at most)
# POST routes whose JSON body is a batch, and the list that holds it (service.routes: search, items, encode, decode)
_BATCH_ROUTES = {
    re.compile(r"^/v1/search$"): ("queries", "/v1/search"),
    re.compile(r"^/v1/collections/[^/]+/search$"): ("queries", "/v1/collections/{name}/search"),
    re.compile(r"^/v1/items$"): ("items", "/v1/items"),
    re.compile(r"^/v1/collections/[^/]+/items$"): ("items", "/v1/collections/{name}/items"),
    re.compile(r"^/v1/encode$"): ("inputs", "/v1/encode"),
    re.compile(r"^/v1/reconstruct$"): ("items", "/v1/reconstruct"),
    re.compile(r"^/v1/generate$"): ("codes", "/v1/generate"),
}


class _Route(NamedTuple):
    path: str  # the route template, for the metrics' route label (ServiceMiddleware reads scope["route"].path)


class BatchGuard:
    """422 ``batch_too_large`` for a batch route's body that lists more than ``max_batch`` elements, decided by
    :func:`batch_exceeds` before FastAPI (or service.fast_search) parses and validates the whole body: an
    oversized body would otherwise be parsed and validated on the event loop, twice, before the route's own
    check. Every other request passes untouched (its body replayed)."""

    def __init__(self, app: Any, settings: Settings) -> None:
        self.app, self.settings = app, settings

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        route = _batch_route(scope)
        if route is None or not _json_body(scope):  # a binary body (encode: service.binary_body) holds no list
            await self.app(scope, receive, send)
            return
        key, template = route
        messages = await read_body(receive)
        body = b"".join(m.get("body", b"") for m in messages) if messages[-1]["type"] == "http.request" else b""
        limit = self.settings.max_batch
        if len(body) <= 2 * limit:  # too short to list limit + 1 elements
            over = False
        elif len(body) <= INLINE_COUNT_BYTES:
            over = batch_exceeds(body, key, limit)
        else:  # a long body within the limit is decoded whole: in a thread, one element per GIL slice at most
            over = await run_in_threadpool(batch_exceeds, body, key, limit)
        if over:
            scope["route"] = _Route(template)
            message = f"'{key}' holds more than {limit} elements; at most {limit} per request"
            for msg in _error(422, "batch_too_large", message, []):
                await send(msg)
            return
        await self.app(scope, replay(messages, receive), send)


def _json_body(scope: dict) -> bool:
    """Whether the request's body is one FastAPI parses as JSON: no Content-Type, or a JSON one."""
    types = [value for name, value in scope.get("headers", ()) if name == b"content-type"]
    media = types[0].split(b";", 1)[0].strip().lower() if types else b""
    return media in (b"", b"application/json") or media.endswith(b"+json")


def _batch_route(scope: dict) -> tuple[str, str] | None:
    if scope["type"] != "http" or scope.get("method") != "POST":
        return None
    path = scope.get("path", "")
    return next((route for pattern, route in _BATCH_ROUTES.items() if pattern.match(path)), None)


_DECODER = json.JSONDecoder()
_UTF8 = codecs.getincrementaldecoder("utf-8")  # keeps a character cut by the prefix's end for later: no error
_SPACE = re.compile(r"[ \t\n\r]*")


def batch_exceeds(body: bytes, key: str, limit: int) -> bool:
    """Whether ``body``, a JSON object, holds under ``key`` a list of more than ``limit`` elements. The list's
    elements are decoded one at a time (the json module's C scanner, which reads what FastAPI reads: NaN, integers
    of any size) and counting stops at limit + 1, on a prefix of the body 8x longer at each try, so the work is
    bounded by the limit, not by the body. A body that is not such an object answers False (the route answers it).
    """
    size = 1 << 16
    while True:
        try:
            return _exceeds(_UTF8().decode(memoryview(body)[:size]), key, limit)
        except RecursionError:  # nested past the json module's depth: the route refuses it
            return False
        except (ValueError, IndexError):  # cut short (or not UTF-8, or not JSON)
            if size >= len(body):
                return False
            if size == 1 << 16 and (counted := _orjson_count(body, key)) is not None:
                return counted > limit  # large elements (256 images as JSON: 70 ms in the scanner, 7 in orjson)
            size *= 8


def _orjson_count(body: bytes, key: str) -> int | None:
    """The length of the list under ``key`` of ``body`` parsed whole by orjson (0: no such list); None where
    orjson refuses what the json module may take (NaN, integers past 64 bits, deep nesting): the scanner decides."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    value = data.get(key) if isinstance(data, dict) else None
    return len(value) if isinstance(value, list) else 0


def _exceeds(text: str, key: str, limit: int) -> bool:
    pos = _skip(text, 0)
    if text[pos] != "{":
        return False
    pos = _skip(text, pos + 1)
    while text[pos] != "}":
        name, pos = _DECODER.raw_decode(text, pos)
        pos = _skip(text, pos)
        if not isinstance(name, str) or text[pos] != ":":
            return False
        pos = _skip(text, pos + 1)
        if name == key and text[pos] == "[":
            count, pos = _count(text, pos, limit)
            if count > limit:
                return True
        else:
            _, pos = _DECODER.raw_decode(text, pos)
        pos = _skip(text, pos)
        if text[pos] == ",":
            pos = _skip(text, pos + 1)
        elif text[pos] != "}":
            return False
    return False


def _count(text: str, pos: int, limit: int) -> tuple[int, int]:
    """Elements of the list that opens at ``text[pos]``, up to limit + 1, and where reading stopped."""
    pos, n = _skip(text, pos + 1), 0
    while text[pos] != "]":
        _, pos = _DECODER.raw_decode(text, pos)
        n += 1
        if n > limit:
            break
        pos = _skip(text, pos)
        if text[pos] == ",":
            pos = _skip(text, pos + 1)
        elif text[pos] != "]":
            raise ValueError("not a JSON list")
    else:
        pos += 1
    return n, pos


def _skip(text: str, pos: int) -> int:
    return _SPACE.match(text, pos).end()  # type: ignore[union-attr]  # matches the empty string at least


async def read_body(receive: Any) -> list[dict]:
    """The request's messages up to the end of the body (or the client's disconnect)."""
    messages = [await receive()]
    while messages[-1]["type"] == "http.request" and messages[-1].get("more_body", False):
        messages.append(await receive())
    return messages


def replay(messages: list[dict], receive: Any) -> Any:
    """A receive that gives the app the messages already read, then whatever the connection sends next."""
    pending = list(messages)

    async def replayed() -> dict:
        return pending.pop(0) if pending else await receive()

    return replayed
