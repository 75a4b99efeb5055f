"""The service's hottest request, a plain top-k search by code, answered without FastAPI's per-request machinery.

``POST /v1/search`` and ``POST /v1/collections/{name}/search`` whose body is a valid request where every query is a
code, with no filter or radius (``SearchRequest.is_plain``), from a caller the route would let in, on an open
collection with its model loaded: this ASGI middleware validates the body with the route's own schema
(``SearchRequest``) and checks it with the route's own checks (``routes.search.check_search``), runs the same
batched search (``Engine.search``) and writes the same JSON the route would. Anything else, and any error on the
way, is handed untouched to the FastAPI route (the body is replayed), which answers it, errors included, as it
answers every request; a search is read-only, so trying it twice is harmless.

Why: on two cores the event loop was the bottleneck of the search benchmark, and FastAPI's routing, dependency
resolution and response validation were about four fifths of its time per search (py-spy, benchmarks/http_bench.py).
It sits inside service.middleware, so request ids, limits, timeouts, timing headers, metrics and logs are unchanged.
``HAMDEX_FAST_SEARCH=false`` turns it off.
"""

from __future__ import annotations

import re
from typing import Any, NamedTuple

import numpy as np
import orjson
from hamdex.index.registry import check_name
from hamdex.models import bits
from hamdex.service.deps import authorize
from hamdex.service.hashers import DEFAULT
from hamdex.service.middleware import read_body, replay
from hamdex.service.routes.search import check_search
from hamdex.service.schemas import SearchRequest
from hamdex.service.settings import Settings

_PATH = re.compile(r"^/v1(?:/collections/([^/]+))?/search$")


class _Route(NamedTuple):
    """What service.middleware reads from ``scope["route"]`` for the metrics' route label."""

    path: str


_ROUTES = {False: _Route("/v1/search"), True: _Route("/v1/collections/{name}/search")}


class FastSearch:
    def __init__(self, app: Any, settings: Settings) -> None:
        self.app, self.settings = app, settings

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        match = _PATH.match(scope.get("path", "")) if scope["type"] == "http" and scope["method"] == "POST" else None
        if match is None or not self.settings.fast_search or scope.get("query_string"):  # a query: the route's 422
            await self.app(scope, receive, send)
            return
        messages = await read_body(receive)  # the body-size limit (service.middleware) applies as it is read
        try:
            complete = messages[-1]["type"] == "http.request"
            body = b"".join(m.get("body", b"") for m in messages) if complete else None
            response = None if body is None else await self._search(scope, match.group(1), body)
        except Exception:  # noqa: BLE001 - the route answers it, with its own error if it fails again
            response = None
        if response is None:
            await self.app(scope, replay(messages, receive), send)
            return
        scope["route"] = _ROUTES[match.group(1) is not None]
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(response)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": response})

    async def _search(self, scope: dict, name: str | None, body: bytes) -> bytes | None:
        """The response body, or None for a request this path leaves to the route."""
        app = scope["app"]
        state = app.state.service
        state.check_ready()
        authorize(state, "read", scope["headers"], open_read=True)
        name = DEFAULT if name is None else check_name(name)
        req = SearchRequest.model_validate_json(body)
        if not req.is_plain or any(q.code is None for q in req.queries):
            return None
        with state.registry.try_use(name) as collection:
            hasher = state.loaded_hasher_for(name, collection) if collection is not None else None
            if hasher is None:  # not open, or its model not loaded: the route opens or loads it off the event loop
                return None
            params = check_search(req, self.settings, name, collection)  # an error: the route answers it
            codes = np.stack([bits.from_wire(q.code, hasher.n_bits) for q in req.queries])
            found = await app.state.engine.search(
                name, collection, codes, req.k, req.include_metadata, params, scope["state"]["timings"]
            )
        results = [[{"id": h.id, "distance": h.distance, "metadata": h.metadata} for h in hits] for hits in found]
        return orjson.dumps({"results": results})
