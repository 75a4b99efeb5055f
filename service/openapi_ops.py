"""What each operation of the API document is called, which key it needs and which error statuses it may answer.

- Operation ids: set once for every route (``FastAPI(generate_unique_id_function=operation_id)``), from the route's
  name in camelCase (``search``, ``getItem``), with a few renamed where the function name says too little
  (``upsert`` -> ``upsertItems``); a route under ``/v1/collections/{name}/`` adds ``InCollection`` unless its
  name says ``Collection`` already (``searchInCollection``, but ``exportCollection``). Generated
  clients name their functions after these, so tests pin them.
- Security: one bearer scheme (an API key, service.auth); an operation guarded by :func:`service.deps.require`
  lists it with the scope as its role (OpenAPI 3.1 allows roles on any scheme). Open routes list none.
- Error statuses: derived from what the route depends on and what the middleware does, not one list for all:

  ============================================  ==========================================================
  every route                                   414 (service.middleware: URL too long), 504 (request timeout;
                                                a streaming upload's: a body idle too long), 422 (an unknown
                                                query parameter: service.query_check)
  an API key checked                            400 (two Authorization headers), 401, 403
  the service must be ready (get_ready_state)   503 (still loading, or a collection backend unreachable)
  a JSON body                                   400 (not JSON), 413 (too large, unless streaming), 422
  query or path parameters                      422
  a path parameter (a collection, item, job)    404
  a named collection (collection_name)          409 (locked in another process; the default one never is)
  ============================================  ==========================================================

  plus :data:`EXTRA` for what a handler itself raises.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute, iter_route_contexts
from hamdex.service.auth import ApiKeys
from hamdex.service.deps import Require, collection_name, get_ready_state
from hamdex.service.errors import ErrorBody
from hamdex.service.middleware import STREAMING_SUFFIX
from hamdex.service.settings import Settings

SCHEME = "bearerAuth"
ID_PATTERN = re.compile(r"^[a-z][A-Za-z0-9]*$")
IN_COLLECTION = "/v1/collections/{name}/"
# route names whose camelCase says too little about the operation
RENAMED = {
    "upsert": "upsertItems",
    "bulk_upsert": "bulkUpsertItems",
    "bulk_job": "getBulkJob",
    "metrics": "getMetrics",
    "info": "getInfo",
}
# what a handler raises itself, by route name
EXTRA: dict[str, set[int]] = {
    "readyz": {503},  # state.check_ready
    "health": {503},
    # it reads its body itself (JSON or binary: service.binary_body), unseen by FastAPI: a body route's 400 and
    # 413; 429: the encode micro-batcher's queue is full (service.engine)
    "encode": {400, 413, 429},
    "upsert": {409, 429},  # fingerprint_mismatch
    "search": {409, 429},  # query_id_not_found, unsupported_search_param
    "bulk_upsert": {409},  # fingerprint_mismatch
    "create_collection": {404, 409},  # model_not_found (a named model), collection_exists
    "reconstruct": {409},  # not_reconstructable, image_format_unsupported
    "generate_": {409},
    "add_index": {409},  # too_many_indexes
}
ERROR_REF = {"$ref": "#/components/schemas/ErrorBody"}


def operation_id(route: APIRoute) -> str:
    """``search``, ``getItem``, ``upsertItemsInCollection``: the route's name in camelCase (see :data:`RENAMED`)."""
    head, *rest = route.name.strip("_").split("_")
    base = RENAMED.get(route.name) or head + "".join(word.capitalize() for word in rest)
    scoped = route.path.startswith(IN_COLLECTION) and "Collection" not in base
    return base + ("InCollection" if scoped else "")


def _walk(dependant: Dependant) -> Iterator[Dependant]:
    """``dependant`` and everything it depends on."""
    yield dependant
    for sub in dependant.dependencies:
        yield from _walk(sub)


def _calls(dependant: Dependant) -> Iterator[Any]:
    return (sub.call for sub in _walk(dependant))


def _required(route: APIRoute) -> Require | None:
    return next((call for call in _calls(route.dependant) if isinstance(call, Require)), None)


def statuses(route: APIRoute, settings: Settings, keyed: bool) -> set[int]:
    """The error statuses ``route`` may answer (module docstring); ``keyed``: API keys are configured."""
    calls = set(_calls(route.dependant))
    path_params = any(sub.path_params for sub in _walk(route.dependant))
    query_params = any(sub.query_params for sub in _walk(route.dependant))
    streaming = route.path.endswith(STREAMING_SUFFIX)
    found = {414, 422, 504}  # 422: an unknown query parameter (service.query_check), on every route
    required = _required(route)
    if required is not None and keyed and not (required.open_read and settings.open_reads):
        found |= {400, 401, 403}
    if get_ready_state in calls:
        found.add(503)
    if route.body_field is not None:
        found |= {400, 422} if streaming else {400, 413, 422}
    if query_params or path_params:
        found.add(422)
    if path_params:
        found.add(404)
    if collection_name in calls:
        found.add(409)
    return found | EXTRA.get(route.name, set())


def describe_operations(document: dict[str, Any], app: FastAPI, settings: Settings) -> None:
    """Add the bearer scheme, each operation's security and its error statuses (module docstring) to ``document``
    in place. Error responses a route declares itself (e.g. the bulk upload's 422) are kept as declared."""
    keyed = ApiKeys.parse(settings.api_keys, settings.api_keys_file).enabled
    components = document.setdefault("components", {})
    components["securitySchemes"] = {
        SCHEME: {
            "type": "http",
            "scheme": "bearer",
            "description": "An API key (HAMDEX_API_KEYS). Roles are its scopes: read, write or admin, where admin "
            "implies write and write implies read.",
        }
    }
    schemas = components.setdefault("schemas", {})
    schemas.setdefault("ErrorBody", ErrorBody.model_json_schema(ref_template="#/components/schemas/{model}"))
    for route in iter_route_contexts(app.routes):  # as FastAPI builds the document: included routers' routes too
        if not isinstance(route.original_route, APIRoute) or not route.include_in_schema:
            continue
        for method in route.methods:
            _describe(document["paths"][route.path_format][method.lower()], route, settings, keyed)
    _drop_unused(schemas, document, ("HTTPValidationError", "ValidationError"))


def _describe(operation: dict[str, Any], route: Any, settings: Settings, keyed: bool) -> None:
    required = _required(route)
    if required is not None:
        operation["security"] = [{SCHEME: [required.scope]}]
        if not keyed or (required.open_read and settings.open_reads):
            operation["security"].append({})  # no key needed on this server
    declared = {str(status) for status in route.responses}
    wanted = {str(status) for status in statuses(route, settings, keyed)}
    responses = operation["responses"]
    for status in [s for s in responses if s[0] in "45" and s not in declared and s not in wanted]:
        del responses[status]
    for status in sorted(wanted - declared):
        responses[status] = {
            "description": HTTPStatus(int(status)).phrase,
            "content": {"application/json": {"schema": ERROR_REF}},
        }
    operation["responses"] = dict(sorted(responses.items()))


def _drop_unused(schemas: dict[str, Any], document: dict[str, Any], names: tuple[str, ...]) -> None:
    """Remove FastAPI's default validation-error schemas once no operation refers to them."""
    text = repr(document["paths"]) + repr({k: v for k, v in schemas.items() if k not in names})
    for name in names:
        if f"#/components/schemas/{name}" not in text:
            schemas.pop(name, None)
