"""Dependency aliases: routes reach the state loaded in the app's lifespan through these.

Everything but the health probes needs the model and the default collection loaded: :func:`get_ready_state`
answers 503 ``not_ready`` before that. A route that works on "a collection" takes :data:`TargetDep`: the
collection named by the path parameter ``name`` (``default`` on the foundation routes, which have none) and
its model, held open for the request (a drop waits for it).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Annotated, Any

import orjson
from fastapi import Depends, Path, Request
from hamdex.index import CollectionLike
from hamdex.index.registry import check_name
from hamdex.index.validation import metadata_problem
from hamdex.models.hasher import Hasher
from hamdex.service.auth import ApiKeys
from hamdex.service.errors import ApiError
from hamdex.service.hashers import DEFAULT
from hamdex.service.schemas import NAME_REGEX
from hamdex.service.settings import Settings
from hamdex.service.state import ServiceState
from starlette.concurrency import run_in_threadpool

# The cheap dependencies are ``async def``: FastAPI runs a sync one in its thread pool, a hop that cost ~30% of
# the event loop's time per search (benchmarks/http_bench.py). Those that may block (opening a collection, loading
# a named model) stay sync, off the event loop.


async def get_state(request: Request) -> ServiceState:
    return request.app.state.service


async def get_ready_state(state: Annotated[ServiceState, Depends(get_state)]) -> ServiceState:
    state.check_ready()
    return state


async def get_settings(state: Annotated[ServiceState, Depends(get_state)]) -> Settings:
    return state.settings


async def get_hasher(state: Annotated[ServiceState, Depends(get_ready_state)]) -> Hasher:
    return state.hashers.get(DEFAULT)  # loaded before the service is ready: a dictionary lookup


def get_collection(state: Annotated[ServiceState, Depends(get_ready_state)]) -> Iterator[CollectionLike]:
    with state.registry.use(DEFAULT) as collection:
        yield collection


@dataclass(frozen=True)
class Target:
    """A collection and the model its codes come from."""

    name: str
    collection: CollectionLike
    hasher: Hasher


async def get_target(
    request: Request, state: Annotated[ServiceState, Depends(get_ready_state)]
) -> AsyncIterator[Target]:
    """The collection held open for the request. An open collection with a loaded model is taken on the event loop
    (no waiting); otherwise opening it or loading its model, which may take seconds, happens in a worker thread."""
    name = request.path_params.get("name", DEFAULT)
    with state.registry.try_use(name) as collection:
        hasher = state.loaded_hasher_for(name, collection) if collection is not None else None
        if hasher is not None:
            yield Target(name, collection, hasher)
            return
    use = state.registry.use(name)
    collection = await run_in_threadpool(use.__enter__)
    try:
        yield Target(name, collection, await run_in_threadpool(state.hasher_for, name, collection))
    finally:
        await run_in_threadpool(use.__exit__, None, None, None)


async def get_loose_target(request: Request, state: Annotated[ServiceState, Depends(get_ready_state)]) -> Target:
    """The collection and its model as :func:`get_target` finds them, but not held past this call: for a request
    that may last long (a bulk upload), which holds the collection one step at a time so that a drop waits for one
    step, not for the whole request."""
    name = request.path_params.get("name", DEFAULT)

    def find() -> Target:
        with state.registry.use(name) as collection:
            return Target(name, collection, state.hasher_for(name, collection))

    return await run_in_threadpool(find)


async def collection_name(
    name: Annotated[str, Path(description="Collection name.", json_schema_extra={"pattern": NAME_REGEX})],
) -> str:
    return check_name(name)  # the document's pattern, checked here for its own error type


StateDep = Annotated[ServiceState, Depends(get_state)]
ReadyStateDep = Annotated[ServiceState, Depends(get_ready_state)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
HasherDep = Annotated[Hasher, Depends(get_hasher)]
CollectionDep = Annotated[CollectionLike, Depends(get_collection)]
TargetDep = Annotated[Target, Depends(get_target)]
LooseTargetDep = Annotated[Target, Depends(get_loose_target)]

# Where the collection routes (items, search) are mounted: the foundation's paths for the default collection, and
# the same routes under /v1/collections/{name} (whose dependency declares and checks the name).
COLLECTION_PREFIXES: list[tuple[str, list[Any]]] = [
    ("/v1", []),
    ("/v1/collections/{name}", [Depends(collection_name)]),
]


def check_batch(n: int, settings: Settings, what: str) -> None:
    """Empty or oversized batches are rejected before any work."""
    if n == 0:
        raise ApiError("empty_batch", f"'{what}' must hold at least one element")
    if n > settings.max_batch:
        raise ApiError("batch_too_large", f"'{what}' holds {n} elements; at most {settings.max_batch} per request")


# ---- API keys ---------------------------------------------------------------------------------------------------


Headers = list[tuple[bytes, bytes]]  # an ASGI scope's raw headers


@dataclass(frozen=True)
class Require:
    """The check behind :func:`require`; a class so that the API document can tell which scope a route needs
    (service.openapi_ops)."""

    scope: str
    open_read: bool = False

    async def __call__(self, request: Request) -> None:
        authorize(request.app.state.service, self.scope, request.scope["headers"], open_read=self.open_read)


def require(scope: str, *, open_read: bool = False) -> Any:
    """Dependency: the request carries ``Authorization: Bearer <key>`` for a key with ``scope`` (see service.auth).
    Open when no keys are configured; ``open_read``: also when HAMDEX_OPEN_READS is set (encode and search)."""
    return Depends(Require(scope, open_read))


READ, WRITE, ADMIN = require("read"), require("write"), require("admin")
OPEN_READ = require("read", open_read=True)  # the reads HAMDEX_OPEN_READS opens: encode and search


def authorize(state: ServiceState, scope: str, headers: Headers, *, open_read: bool = False) -> None:
    """Raise 400 ``invalid_header`` / 401 ``unauthorized`` / 403 ``forbidden`` unless the request's headers grant
    ``scope``. The routes and service.fast_search both call this, so they read the same header the same way."""
    if state.api_keys.enabled and not (open_read and state.settings.open_reads):
        check_key(state.api_keys, scope, headers)


def check_key(keys: ApiKeys, scope: str, headers: Headers) -> None:
    """Raise unless ``headers`` hold exactly one ``Authorization: Bearer <key>`` of a key with ``scope``."""
    token = bearer_token(headers)
    key = keys.authenticate(token)
    if key is None:
        message = "missing API key" if token is None else "unknown API key"
        raise ApiError("unauthorized", f"{message}: send 'Authorization: Bearer <key>'", {"WWW-Authenticate": "Bearer"})
    if scope not in key.scopes:
        raise ApiError("forbidden", f"this API key (id {key.name}) lacks the {scope!r} scope")


def bearer_token(headers: Headers) -> str | None:
    """The key of the request's one ``Authorization: Bearer`` header, or None. Two such headers are refused:
    proxies and frameworks disagree on which one counts (first, last, joined)."""
    values = [value for name, value in headers if name.lower() == b"authorization"]
    if len(values) > 1:
        raise ApiError("invalid_header", f"the request has {len(values)} Authorization headers; send one")
    text = values[0].decode("latin-1") if values else ""
    return text[7:].strip() if text[:7].lower() == "bearer " else None


# ---- size limits ------------------------------------------------------------------------------------------------


def check_texts(inputs: Any, settings: Settings, what: str) -> None:
    """Text inputs longer than HAMDEX_MAX_TEXT_CHARS are refused before any featurizing."""
    limit = settings.max_text_chars
    for i, value in enumerate(inputs):
        if isinstance(value, str) and len(value) > limit:
            raise ApiError("text_too_long", f"{what}[{i}] has {len(value)} characters; at most {limit}")


def check_metadata(metadata: Any, settings: Settings) -> None:
    """Metadata that would not read back as written (index.validation.metadata_problem: 422 invalid_metadata) or
    larger than HAMDEX_MAX_METADATA_BYTES as compact JSON (422 metadata_too_large) is refused before any write."""
    limit = settings.max_metadata_bytes
    for i, meta in enumerate(metadata):
        if meta is not None:
            problem = metadata_problem(meta)
            if problem is not None:
                raise ApiError("invalid_metadata", f"items[{i}].metadata {problem}")
            size = metadata_bytes(meta)
            if size > limit:
                raise ApiError("metadata_too_large", f"items[{i}].metadata is {size} bytes as JSON; at most {limit}")


def metadata_bytes(meta: Any) -> int:
    """The size of ``meta`` as compact JSON."""
    try:
        return len(orjson.dumps(meta, option=orjson.OPT_NON_STR_KEYS))
    except TypeError:  # an integer beyond 64 bits: valid JSON, and the collection stores it (json module)
        return len(json.dumps(meta, separators=(",", ":")))
