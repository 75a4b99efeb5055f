"""One ASGI middleware around every HTTP request: request id, body-size limit, timeout, timing headers, metrics
and the structured access log. Plain ASGI (not Starlette's BaseHTTPMiddleware) to keep its cost per request small.

- ``X-Request-ID``: taken from the request when it is a sane token, else generated; returned on every response and
  written on every log line of the request.
- Body size: a ``Content-Length`` above ``max_body_bytes`` is refused before reading; a chunked body is counted
  while read. Either way: 413 ``body_too_large``.
- Timeout: a request still running after ``request_timeout_s`` gets 504 ``timeout`` (the work it started, such as
  a write, may still complete; a write is durable once acknowledged, and never half-applied).
- ``X-Queue-Ms``, ``X-Encode-Ms``, ``X-Search-Ms``: time in the micro-batchers' queues and in model / FAISS calls.
- Streaming routes, those whose path ends in ``:bulk`` (``POST .../items:bulk``, service.routes.bulk), are exempt
  from the body-size limit and the timeout: they take bodies of any size, block by block, and bound each line and
  the wait for each chunk themselves.
"""

from __future__ import annotations

import asyncio
import logging
import re
import secrets
import time
from typing import Any

import orjson
from starlette.exceptions import HTTPException

from service.engine import Timings
from service.metrics import Metrics
from service.settings import Settings

LOG = logging.getLogger("hamdex.access")
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
STREAMING_SUFFIX = ":bulk"  # paths exempt from the body-size limit and the timeout


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
        scope.setdefault("state", {}).update(request_id=request_id, timings=timings)
        state = {"status": 500, "started": False}
        id_header = [(b"x-request-id", request_id.encode())]

        async def send_with_headers(message: dict) -> None:
            if message["type"] == "http.response.start":
                state["status"], state["started"] = message["status"], True
                extra = [
                    (b"x-queue-ms", f"{timings.queue_s * 1000:.2f}".encode()),
                    (b"x-encode-ms", f"{timings.encode_s * 1000:.2f}".encode()),
                    (b"x-search-ms", f"{timings.search_s * 1000:.2f}".encode()),
                ]
                message["headers"] = [*message.get("headers", []), *id_header, *extra]
            await send(message)

        streaming = scope.get("path", "").endswith(STREAMING_SUFFIX)
        limit = None if streaming else self.settings.max_body_bytes
        timeout = None if streaming else self.settings.request_timeout_s
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
            self._account(scope, state["status"], time.perf_counter() - start, request_id)

    @staticmethod
    async def _fail(send: Any, state: dict, status: int, error_type: str, message: str, headers: list) -> None:
        if state["started"]:  # too late for an error response: the client sees a cut-off reply
            return
        state["status"] = status
        for msg in _error(status, error_type, message, headers):
            await send(msg)

    def _account(self, scope: dict, status: int, seconds: float, request_id: str) -> None:
        route = scope.get("route")
        template = getattr(route, "path", None) or "unmatched"
        method = scope.get("method", "")
        self.metrics.requests.labels(template, method, str(status)).inc()
        self.metrics.latency.labels(template, method).observe(seconds)
        LOG.info(
            "%s %s %d %.1fms",
            method,
            scope.get("path", ""),
            status,
            seconds * 1000,
            extra={"request_id": request_id, "route": template, "status": status, "ms": round(seconds * 1000, 2)},
        )
