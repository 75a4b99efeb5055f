"""OpenAPI links (OpenAPI 3.1, "Link Object"): which values of one response the next requests take, so stateful
tools such as schemathesis chain create -> upsert -> get -> search -> delete -> drop instead of guessing names and
ids. FastAPI cannot declare links on a route; :func:`install_openapi` adds them to the document it generates, with
the server's limits (service.openapi_limits).

An upsert answers counts, not ids: its links read the ids from the request (``$request.body#/items/0/id``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI
from hamdex.service.openapi_limits import add_limits, served_specs
from hamdex.service.openapi_ops import describe_operations
from hamdex.service.schemas import EncodeRequest
from hamdex.service.settings import Settings

NAMED = "/v1/collections/{name}"
SAME_NAME = {"path.name": "$request.path.name"}


def _link(method: str, path: str, parameters: dict[str, str], body: Any = None) -> dict[str, Any]:
    """A link to the operation ``method path`` (resolved to its operationId when the document is built)."""
    link: dict[str, Any] = {"target": (method, path), "parameters": parameters}
    if body is not None:
        link["requestBody"] = body
    return link


def _item_links(prefix: str, scope: dict[str, str]) -> dict[tuple[str, str, str], dict[str, dict[str, Any]]]:
    """The links among the item routes mounted at ``prefix``; ``scope`` carries the collection name along."""
    items, one, search = f"{prefix}/items", f"{prefix}/items/{{item_id}}", f"{prefix}/search"
    upserted = {**scope, "path.item_id": "$request.body#/items/0/id"}
    return {
        ("post", items, "200"): {
            "GetUpserted": _link("get", one, upserted),
            "DeleteUpserted": _link("delete", one, upserted),
            "SearchByUpsertedId": _link("post", search, scope, {"queries": [{"id": "$request.body#/items/0/id"}]}),
        },
        ("get", one, "200"): {
            "DeleteItem": _link("delete", one, {**scope, "path.item_id": "$response.body#/id"}),
            "SearchByCode": _link("post", search, scope, {"queries": [{"code": "$response.body#/code"}]}),
        },
        ("delete", one, "200"): {  # the item is gone: a get answers 404
            "GetDeleted": _link("get", one, {**scope, "path.item_id": "$response.body#/deleted"}),
        },
        ("post", search, "200"): {
            "GetFirstHit": _link("get", one, {**scope, "path.item_id": "$response.body#/results/0/0/id"}),
        },
        ("post", f"{prefix}/items:bulk", "200"): {
            "GetBulkJob": _link("get", f"{prefix}/items:bulk/{{job}}", {**scope, "path.job": "$request.query.job"}),
        },
    }


def _collection_links() -> dict[tuple[str, str, str], dict[str, dict[str, Any]]]:
    created = {"path.name": "$response.body#/name"}
    return {
        ("post", "/v1/collections", "201"): {
            "GetCreated": _link("get", NAMED, created),
            "UpsertIntoCreated": _link("post", f"{NAMED}/items", created),
            "BulkIntoCreated": _link("post", f"{NAMED}/items:bulk", created),
            "SearchCreated": _link("post", f"{NAMED}/search", created),
            "DropCreated": _link("delete", NAMED, created),
        },
        ("post", f"{NAMED}/search", "200"): {"DropSearched": _link("delete", NAMED, SAME_NAME)},
        ("delete", NAMED, "200"): {  # the collection is gone: these answer 404
            "GetDropped": _link("get", NAMED, {"path.name": "$response.body#/dropped"}),
            "UpsertIntoDropped": _link("post", f"{NAMED}/items", {"path.name": "$response.body#/dropped"}),
        },
    }


def links() -> dict[tuple[str, str, str], dict[str, dict[str, Any]]]:
    """(method, path, status) of a response -> its links by name, each with its target as (method, path)."""
    table = _collection_links()
    for prefix, scope in (("/v1", {}), (NAMED, SAME_NAME)):
        for source, named in _item_links(prefix, scope).items():
            table.setdefault(source, {}).update(named)
    return table


def add_links(document: dict[str, Any]) -> dict[str, Any]:
    """Add :func:`links` to an OpenAPI document in place. A route named there but missing from the document is a
    KeyError: the table must follow the routes."""
    paths = document["paths"]
    for (method, path, status), named in links().items():
        response = paths[path][method]["responses"][status]
        for name, link in named.items():
            target_method, target_path = link["target"]
            resolved = {k: v for k, v in link.items() if k != "target"}
            response.setdefault("links", {})[name] = {
                "operationId": paths[target_path][target_method]["operationId"],
                **resolved,
            }
    return document


def add_body_schemas(document: dict[str, Any]) -> None:
    """The request models of routes that read their body themselves (service.routes.encode: JSON or binary), whose
    document refers to them by name: FastAPI adds only the models of declared body parameters."""
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    for model in (EncodeRequest,):
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        schemas.update(schema.pop("$defs", {}))
        schemas[model.__name__] = schema
    document["components"]["schemas"] = dict(sorted(schemas.items()))


def json_errors(document: dict[str, Any]) -> None:
    """Every error answer as JSON (service.errors): FastAPI documents a route's errors in the route's own media
    type, text/plain for /metrics, whose errors are JSON like any other."""
    for operations in document["paths"].values():
        for operation in operations.values():
            for status, response in operation["responses"].items():
                content = response.get("content", {})
                if status[0] in "45" and "application/json" not in content and content:
                    response["content"] = {"application/json": next(iter(content.values()))}


def install_openapi(app: FastAPI, settings: Settings) -> None:
    """Serve the app's OpenAPI document with ``settings``' limits (service.openapi_limits), each operation's key and
    error statuses (service.openapi_ops) and :func:`links` added:
    built once per app, from that app's settings, so a server with other limits publishes other numbers."""
    build: Callable[[], dict[str, Any]] = app.openapi
    done = False

    def openapi() -> dict[str, Any]:
        nonlocal done
        document = build()  # FastAPI's, cached on the app: edited in place once
        if not done:
            add_body_schemas(document)
            add_limits(document, settings, served_specs(settings))
            describe_operations(document, app, settings)
            add_links(document)
            json_errors(document)
            done = True
        return document

    app.openapi = openapi  # type: ignore[method-assign]
