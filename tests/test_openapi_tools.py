"""The API document as tools read it (issue 23, part 2): pinned operation ids, a bearer scheme with each operation's
scope, ``error_type`` as an enum, per-route error statuses, Swagger UI and ReDoc served without a CDN, and a client
generated from /openapi.json by a standard generator (openapi-python-generator) that searches a real server."""

from __future__ import annotations

import importlib
import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from hamdex.service.app import create_app
from hamdex.service.errors import STATUS
from hamdex.service.openapi_ops import ID_PATTERN, SCHEME

from tests.conftest import settings_for, synthetic_texts
from tests.helpers import bearer, server_thread

ADMIN = "admin-key-0123456789"
# the operations generated clients are built from: renaming one breaks every client, so a change here is deliberate
PINNED = {
    ("get", "/livez"): "livez",
    ("get", "/readyz"): "readyz",
    ("get", "/health"): "health",
    ("get", "/metrics"): "getMetrics",
    ("get", "/info"): "getInfo",
    ("post", "/v1/encode"): "encode",
    ("post", "/v1/reconstruct"): "reconstruct",
    ("post", "/v1/generate"): "generate",
    ("post", "/v1/items"): "upsertItems",
    ("get", "/v1/items/{item_id}"): "getItem",
    ("delete", "/v1/items/{item_id}"): "deleteItem",
    ("post", "/v1/items:bulk"): "bulkUpsertItems",
    ("get", "/v1/items:bulk/{job}"): "getBulkJob",
    ("post", "/v1/search"): "search",
    ("get", "/v1/collections"): "listCollections",
    ("post", "/v1/collections"): "createCollection",
    ("get", "/v1/collections/{name}"): "getCollection",
    ("delete", "/v1/collections/{name}"): "dropCollection",
    ("post", "/v1/collections/{name}/items"): "upsertItemsInCollection",
    ("get", "/v1/collections/{name}/items/{item_id}"): "getItemInCollection",
    ("delete", "/v1/collections/{name}/items/{item_id}"): "deleteItemInCollection",
    ("post", "/v1/collections/{name}/items:bulk"): "bulkUpsertItemsInCollection",
    ("get", "/v1/collections/{name}/items:bulk/{job}"): "getBulkJobInCollection",
    ("post", "/v1/collections/{name}/search"): "searchInCollection",
}
OPEN = {"/livez", "/readyz", "/health"}


def _document(model_dir: Path, tmp_path: Path, **overrides: Any) -> dict[str, Any]:
    app = create_app(settings_for(model_dir, tmp_path, **overrides))
    return app.openapi()


def _operations(document: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            yield method, path, operation


@pytest.fixture(scope="module")
def document(text_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return _document(text_model_dir, tmp_path_factory.mktemp("doc"), api_keys=f"{ADMIN} admin")


def test_operation_ids_are_pinned_readable_and_unique(document: dict[str, Any]) -> None:
    ids = {(method, path): op["operationId"] for method, path, op in _operations(document)}
    assert {key: ids.get(key) for key in PINNED} == PINNED
    assert all(ID_PATTERN.match(op_id) for op_id in ids.values()), sorted(ids.values())  # routes added later too
    assert len(set(ids.values())) == len(ids)


def test_bearer_scheme_and_each_operations_scope(document: dict[str, Any]) -> None:
    assert document["components"]["securitySchemes"][SCHEME] == {
        "type": "http",
        "scheme": "bearer",
        "description": document["components"]["securitySchemes"][SCHEME]["description"],
    }
    security = {(method, path): op.get("security") for method, path, op in _operations(document)}
    for path in OPEN:
        assert security[("get", path)] is None
    assert security[("post", "/v1/search")] == [{SCHEME: ["read"]}]
    assert security[("post", "/v1/items")] == [{SCHEME: ["write"]}]
    assert security[("post", "/v1/collections")] == [{SCHEME: ["admin"]}]
    assert all(s is not None for (_, path), s in security.items() if path not in OPEN)


def test_without_keys_or_with_open_reads_no_key_is_needed(text_model_dir: Path, tmp_path: Path) -> None:
    open_doc = _document(text_model_dir, tmp_path / "a")
    search = open_doc["paths"]["/v1/search"]["post"]
    assert search["security"] == [{SCHEME: ["read"]}, {}]
    assert not {"401", "403"} & set(search["responses"])
    reads = _document(text_model_dir, tmp_path / "b", api_keys=f"{ADMIN} admin", open_reads=True)["paths"]
    assert reads["/v1/search"]["post"]["security"] == [{SCHEME: ["read"]}, {}]
    assert reads["/v1/items"]["post"]["security"] == [{SCHEME: ["write"]}]
    assert "401" in reads["/v1/items"]["post"]["responses"]


def test_error_type_is_an_enum_of_the_error_table(document: dict[str, Any]) -> None:
    schema = document["components"]["schemas"]["ErrorBody"]["properties"]["error_type"]
    assert schema["enum"] == list(STATUS)


def test_each_route_lists_the_statuses_it_can_answer(document: dict[str, Any]) -> None:
    for method, path, op in _operations(document):
        errors = {status for status in op["responses"] if status[0] in "45"}
        where = f"{method} {path}"
        assert {"414", "422"} <= errors, where  # the URL limit and the unknown-query check hold everywhere
        assert ("401" in errors) == ("403" in errors) == (path not in OPEN), where
        if "{" in path:  # a path that names a collection, item or job: 404 when there is none
            assert "404" in errors, where
        if "requestBody" not in op:
            assert "413" not in errors, where
        assert not (errors - {str(s) for s in STATUS.values()}), where
    assert set(document["paths"]["/livez"]["get"]["responses"]) == {"200", "414", "422", "504"}  # 422: ?unknown=
    assert "404" not in document["paths"]["/v1/search"]["post"]["responses"]  # the default collection is always there
    assert "429" in document["paths"]["/v1/search"]["post"]["responses"]
    assert "409" not in document["paths"]["/v1/items/{item_id}"]["get"]["responses"]  # the default: never locked
    assert "409" in document["paths"]["/v1/collections/{name}/items/{item_id}"]["get"]["responses"]
    assert "429" not in document["paths"]["/v1/collections"]["get"]["responses"]
    assert "HTTPValidationError" not in document["components"]["schemas"]


@pytest.mark.parametrize("keyed", [False, True])
def test_docs_pages_load_their_scripts_from_the_service(text_model_dir: Path, tmp_path: Path, keyed: bool) -> None:
    keys = {"api_keys": f"{ADMIN} admin"} if keyed else {}
    with TestClient(create_app(settings_for(text_model_dir, tmp_path, **keys))) as client:
        auth = bearer(ADMIN) if keyed else {}
        for page in ("/docs", "/redoc"):
            if keyed:
                assert client.get(page).status_code == 401
            html = client.get(page, headers=auth).text
            sources = re.findall(r'(?:src|href)="([^"]+)"', html)
            assert sources and all(src.startswith("/docs/assets/") for src in sources), sources
            for src in sources:  # the libraries' files: no key needed
                asset = client.get(src)
                assert asset.status_code == 200 and len(asset.content) > 1000, src
        assert "persistAuthorization" not in client.get("/docs", headers=auth).text


@pytest.fixture(scope="module")
def server(text_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    settings = settings_for(text_model_dir, tmp_path_factory.mktemp("server"), api_keys=f"{ADMIN} admin")
    with server_thread(create_app(settings)) as url:
        yield url


def test_a_generated_client_searches(server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """openapi-python-client builds a client from the served document; its ``search`` (named after the operation
    id) finds what was upserted, with the key the bearer scheme asks for; a wrong key is a typed 401."""
    generator = pytest.importorskip("openapi_python_client")  # installed by the Makefile (see there why --no-deps)
    from openapi_python_client.config import Config, ConfigFile, MetaType

    source = tmp_path / "openapi.json"
    source.write_text(json.dumps(httpx.get(f"{server}/openapi.json", headers=bearer(ADMIN)).json()))
    out = tmp_path / "gen" / "hamdex_api"
    config = Config.from_sources(ConfigFile(post_hooks=[]), MetaType.NONE, source, "utf-8", False, out)
    started = time.monotonic()
    problems = generator.generate(config=config)
    assert time.monotonic() - started < 60
    assert not [p for p in problems if p.level.name == "ERROR"], problems
    monkeypatch.syspath_prepend(str(out.parent))
    client_module = importlib.import_module("hamdex_api.client")
    models = importlib.import_module("hamdex_api.models")
    upsert = importlib.import_module("hamdex_api.api.items.upsert_items")
    search = importlib.import_module("hamdex_api.api.search.search")

    client = client_module.AuthenticatedClient(base_url=server, token=ADMIN)
    texts = synthetic_texts()[:6]
    items = [{"id": f"t{i}", "input": text} for i, text in enumerate(texts)]  # exactly-one-of: typed as Any
    assert upsert.sync(client=client, body=models.ItemsRequest(items=items)).upserted == len(texts)
    query = models.SearchRequest(queries=[{"input": texts[2]}], k=3)
    found = search.sync(client=client, body=query)
    assert isinstance(found, models.SearchResponse)
    hits = found.results[0]
    assert len(hits) == 3 and ("t2", 0) in [(hit.id, hit.distance) for hit in hits]  # ties at 0 come in any order
    wrong = client_module.AuthenticatedClient(base_url=server, token="wrong-key-0123456789")
    refused = search.sync_detailed(client=wrong, body=query)
    assert refused.status_code == 401 and refused.parsed.error_type.value == "unauthorized"
