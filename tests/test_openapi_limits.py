"""The OpenAPI document tells the truth (issue 25): what it calls a valid request the server takes, what it calls
invalid the server refuses, with numbers from the app's own settings and model; and the behaviour that needed
(explicit nulls, integers written 5.0, an id twice in one upsert, bulk bodies, 405's Allow, 409 for what depends
on a collection's state)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from fastapi.testclient import TestClient
from hamdex.index.errors import InvalidCollectionNameError
from hamdex.index.registry import check_name
from hamdex.service.app import create_app
from hamdex.service.bulk import client as bulk_client
from hamdex.service.schemas import ID_PATTERN
from hamdex.service.settings import Settings

from tests.conftest import MakeClient
from tests.schemathesis_hooks import ndjson_lines

NDJSON = {"content-type": "application/x-ndjson"}
LIMITS = {"max_batch": 4, "max_k": 50, "max_text_chars": 30}
CODE = "0f0f"  # the text fixture's 16-bit codes


def document(model_dir: Path, tmp_path: Path, **settings: Any) -> dict[str, Any]:
    """The OpenAPI document of an app with these settings (built without starting it)."""
    values = {"model_path": model_dir, "models_dir": tmp_path / "models", "api_keys": None, **settings}
    return create_app(Settings(**values)).openapi()


def validator(doc: dict[str, Any], schema: dict[str, Any]) -> jsonschema.Draft202012Validator:
    """A JSON Schema validator of ``schema``, whose $refs (``#/components/...``) point into ``doc``."""
    return jsonschema.Draft202012Validator({**schema, "components": doc["components"]})


def body_schema(doc: dict[str, Any], path: str, media: str = "application/json") -> dict[str, Any]:
    return doc["paths"][path]["post"]["requestBody"]["content"][media]["schema"]


def test_the_numbers_are_the_apps_own(text_model_dir: Path, dense_model_dir: Path, tmp_path: Path) -> None:
    small = document(text_model_dir, tmp_path, **LIMITS)["components"]["schemas"]
    assert small["SearchRequest"]["properties"]["queries"]["maxItems"] == 4
    assert {"minimum": 1, "maximum": 50}.items() <= small["SearchRequest"]["properties"]["k"].items()
    assert (
        document(text_model_dir, tmp_path, max_k=3)["components"]["schemas"]["SearchRequest"]["properties"]["k"][
            "default"
        ]
        == 3
    )  # and the server takes an omitted k as 3 (test_the_default_k_fits_max_k)
    assert small["SearchRequest"]["properties"]["radius"]["anyOf"][0]["maximum"] == 16  # the model's n_bits
    assert {"minItems": 1, "maxItems": 4}.items() <= small["ItemsRequest"]["properties"]["items"].items()
    assert small["EncodeRequest"]["properties"]["inputs"]["items"] == {"type": "string", "maxLength": 30}
    assert "inputs_b64" not in small["EncodeRequest"]["properties"]  # a text model refuses vectors
    default = document(text_model_dir, tmp_path)["components"]["schemas"]
    assert default["SearchRequest"]["properties"]["k"]["maximum"] == Settings().max_k
    assert default["ItemIn"]["properties"]["input"]["maxLength"] == Settings().max_text_chars
    dense = document(dense_model_dir, tmp_path)["components"]["schemas"]
    vector = dense["ItemIn"]["properties"]["input"]
    assert vector["type"] == "array" and vector["minItems"] == vector["maxItems"] == 12
    assert "inputs_b64" in dense["EncodeRequest"]["properties"]


def test_names_and_ids_carry_the_patterns_the_server_checks(text_model_dir: Path, tmp_path: Path) -> None:
    doc = document(text_model_dir, tmp_path)
    params = [p for ops in doc["paths"].values() for op in ops.values() for p in op.get("parameters", [])]
    names = {p["schema"]["pattern"] for p in params if p["name"] == "name"}
    create = doc["components"]["schemas"]["CreateCollectionRequest"]["properties"]["name"]["pattern"]
    assert len(names) == 1 and names == {create}
    assert {p["schema"]["pattern"] for p in params if p["name"] == "item_id"} == {ID_PATTERN}
    for name in ["a", "A-1", "x" * 64, "x" * 65, "-a", ".a", "a/b", "a b", "ü", "", "a.b_c-d"]:
        try:
            taken = check_name(name) == name
        except InvalidCollectionNameError:
            taken = False
        assert validator(doc, {"type": "string", "pattern": create}).is_valid(name) == taken, name


def test_the_document_and_the_server_agree(make_client: MakeClient, text_model_dir: Path) -> None:
    """Each request: valid by the document <=> the server takes it (2xx, or 404 / 409 when the collection's
    contents decide)."""
    client = make_client(text_model_dir, **LIMITS)
    doc = client.get("/openapi.json").json()
    item = {"id": "a", "code": CODE}
    cases: list[tuple[str, Any]] = [
        ("/v1/items", {"items": [item]}),
        ("/v1/items", {"items": []}),
        ("/v1/items", {"items": [item] * 5}),
        ("/v1/items", {"items": [item, {"id": "a", "input": "goal"}]}),  # the same id twice
        ("/v1/items", {"items": [{"id": "a", "input": "x" * 30}]}),
        ("/v1/items", {"items": [{"id": "a", "input": "x" * 31}]}),
        ("/v1/items", {"items": [{"id": "a", "input": [1.0, 2.0]}]}),  # a vector to a text model
        ("/v1/items", {"items": [{"id": "a", "code": "AAA="}]}),
        ("/v1/items", {"items": [{"id": "a", "code": "0f0"}]}),
        ("/v1/items", {"items": [{"id": "a", "code": [1.0] + [0] * 15}]}),
        ("/v1/items", {"items": [{"id": "a", "code": [True] + [0] * 15}]}),
        ("/v1/items", {"items": [{"id": "a", "code": [1] * 15}]}),
        ("/v1/items", {"items": [{"id": "a", "code": CODE, "input": None}]}),
        ("/v1/items", {"items": [{"id": "a"}]}),
        ("/v1/items", {"items": [{"id": "", "code": CODE}]}),
        ("/v1/items", {"items": [{"id": "a\x00", "code": CODE}]}),
        ("/v1/items", {"items": [{"id": " ", "code": CODE, "metadata": None}], "fingerprint": None}),
        ("/v1/search", {"queries": [{"code": CODE}]}),
        ("/v1/search", {"queries": [{"code": CODE}], "k": 50}),
        ("/v1/search", {"queries": [{"code": CODE}], "k": 51}),
        ("/v1/search", {"queries": [{"code": CODE}], "k": 0}),
        ("/v1/search", {"queries": [{"code": CODE}], "k": 5.0}),
        ("/v1/search", {"queries": [{"code": CODE}], "k": 5.5}),
        ("/v1/search", {"queries": [{"code": CODE}], "k": True}),
        ("/v1/search", {"queries": [{"code": CODE}], "radius": 16}),
        ("/v1/search", {"queries": [{"code": CODE}], "radius": 17}),
        ("/v1/search", {"queries": [{"code": CODE}], "radius": -1}),
        ("/v1/search", {"queries": [{"code": CODE}], "nprobe": 4}),  # 409: the default collection is flat
        ("/v1/search", {"queries": [{"id": "nobody"}]}),  # 409: no such item
        ("/v1/search", {"queries": [{"input": "goal", "code": CODE}]}),
        ("/v1/search", {"queries": [{"code": CODE, "id": None}]}),
        ("/v1/search", {"queries": [{}]}),
        ("/v1/search", {"queries": [{"code": CODE}], "filter": {"a": 1, "b": None}}),
        ("/v1/search", {"queries": [{"code": CODE}], "filter": {"": 1}}),
        ("/v1/search", {"queries": [{"code": CODE}], "filter": {"a": [1]}}),
        ("/v1/encode", {"inputs": ["goal"]}),
        ("/v1/encode", {"inputs": []}),
        ("/v1/encode", {"inputs": ["goal"], "inputs_b64": None}),
        ("/v1/encode", {"inputs_b64": {"data": "AACAPw==", "shape": [1, 1]}}),
        ("/v1/collections", {"name": "ok"}),
        ("/v1/collections", {"name": "-bad"}),
        ("/v1/collections", {"name": "h", "index_kind": "hnsw", "index_params": {"m": 2}}),
        ("/v1/collections", {"name": "h2", "index_kind": "hnsw", "index_params": {"m": 1}}),
        ("/v1/collections", {"name": "h3", "index_kind": "hnsw", "index_params": {"nprobe": 2}}),
        ("/v1/collections", {"name": "m", "index_kind": "multihash", "index_params": {"nhash": 16}}),
        ("/v1/collections", {"name": "m2", "index_kind": "multihash", "index_params": {"nhash": 17}}),
        ("/v1/collections", {"name": "f", "milvus_uri": "a.db"}),  # a milvus-lite file for backend faiss
        ("/v1/collections", {"name": "f2", "backend": "milvus", "index_kind": "ivf"}),  # milvus-lite: flat only
    ]
    for path, body in cases:
        valid = validator(doc, body_schema(doc, path)).is_valid(body)
        resp = client.post(path, json=body)
        taken = resp.is_success or resp.status_code in (404, 409)
        assert taken == valid, (path, body, valid, resp.status_code, resp.text[:200])


def test_bulk_bodies_agree_with_the_document(make_client: MakeClient, text_model_dir: Path) -> None:
    """The bulk body is documented as the array of rows its lines hold: a body with a line that is not a row is
    not 2xx (the good rows are written all the same: 422 rows_skipped with the report), one without rows 422."""
    client = make_client(text_model_dir, **LIMITS)
    doc = client.get("/openapi.json").json()
    check = validator(doc, body_schema(doc, "/v1/items:bulk", "application/x-ndjson"))
    cases: list[tuple[Any, int, str | None]] = [
        ([{"id": "b1", "input": "goal"}, {"id": "b 0", "input": "team", "metadata": None}], 200, None),
        ([{"id": " \t", "input": "goal"}], 422, "rows_skipped"),  # blanks only: bad_id, as in a file's rows
        ([], 422, "empty_batch"),
        (1000, 422, "rows_skipped"),  # used to be 200, nothing written
        ([None, []], 422, "rows_skipped"),
        ([{"id": "b2", "input": "goal", "input_b64": None}], 422, "rows_skipped"),  # null is not "absent"
        ([{"id": "b3", "input": "goal"}, {"input": "goal"}], 422, "rows_skipped"),
    ]
    for rows, status, error_type in cases:
        resp = client.post("/v1/items:bulk", content=ndjson_lines(rows) if rows != [] else b"", headers=NDJSON)
        assert (resp.status_code, resp.json().get("error_type")) == (status, error_type), resp.text
        assert check.is_valid(rows) == (status == 200), rows
    assert client.get("/v1/items/b3").status_code == 200  # the good row of a body with a bad one
    assert client.get("/v1/items/b2").status_code == 404


def test_an_id_twice_in_one_upsert_keeps_the_later_item(make_client: MakeClient, text_model_dir: Path) -> None:
    client = make_client(text_model_dir)
    items = [{"id": "a", "code": "0000"}, {"id": "b", "code": "00ff"}, {"id": "a", "code": "ffff", "metadata": {}}]
    resp = client.post("/v1/items", json={"items": items})
    assert resp.json() == {"upserted": 3, "inserted": 2, "updated": 1}, resp.text  # used to be 422
    assert client.get("/v1/items/a").json() == {"id": "a", "code": "ffff", "metadata": {}}


def test_405_allows_each_method_of_the_path(make_client: MakeClient, text_model_dir: Path) -> None:
    client = make_client(text_model_dir)
    for method, path, allow in [
        ("OPTIONS", "/v1/collections", "GET, POST"),  # used to be GET only: the first route's
        ("PATCH", "/v1/collections/c", "DELETE, GET"),
        ("PUT", "/v1/items/a%2Fb", "DELETE, GET"),
        ("GET", "/v1/items:bulk", "POST"),
    ]:
        resp = client.request(method, path)
        assert (resp.status_code, resp.headers["allow"]) == (405, allow), (method, path)


def test_what_the_collection_decides_is_409(make_client: MakeClient, text_model_dir: Path) -> None:
    """The document cannot know a collection's index kind or items: a request valid there that they refuse gets
    409 (a 404 would say the collection is missing, a 422 that the request is malformed)."""
    client = make_client(text_model_dir)
    assert client.post("/v1/collections", json={"name": "g", "index_kind": "hnsw"}).status_code == 201
    query = {"queries": [{"code": CODE}]}
    for path, body, error_type in [
        ("/v1/collections/g/search", {**query, "radius": 2}, "unsupported_search_param"),
        ("/v1/collections/g/search", {**query, "nprobe": 2}, "unsupported_search_param"),
        ("/v1/search", {"queries": [{"id": "nobody"}]}, "query_id_not_found"),
    ]:
        resp = client.post(path, json=body)
        assert (resp.status_code, resp.json()["error_type"]) == (409, error_type), resp.text


def test_the_ndjson_serializer_writes_one_value_per_line() -> None:
    assert ndjson_lines([{"id": "a\nb"}, 2]) == b'{"id": "a\\nb"}\n2\n'
    assert ndjson_lines({"id": "a"}) == b'{"id": "a"}\n'
    assert [json.loads(line) for line in ndjson_lines(["\ud800", None]).splitlines()] == ["\ud800", None]


@pytest.mark.parametrize("remote", [False, True])
def test_milvus_uris_follow_the_setting(text_model_dir: Path, tmp_path: Path, remote: bool) -> None:
    doc = document(text_model_dir, tmp_path, milvus_remote_uris=remote)
    check = validator(doc, doc["components"]["schemas"]["CreateCollectionRequest"])
    server = {"name": "s", "backend": "milvus", "index_kind": "ivf", "milvus_uri": "http://milvus:19530"}
    assert check.is_valid(server) == remote
    assert check.is_valid({"name": "s", "backend": "milvus", "milvus_uri": "data.db"})
    assert not check.is_valid({"name": "s", "backend": "milvus", "milvus_uri": "../data.db"})


def test_the_document_needs_no_checkpoint(tmp_path: Path) -> None:
    """Without a readable model the inputs and codes stay generic, and the rest is stated."""
    app = create_app(Settings(model_path=tmp_path / "none", models_dir=tmp_path / "models", api_keys=None))
    doc = TestClient(app).get("/openapi.json").json()
    assert "anyOf" in doc["components"]["schemas"]["ItemIn"]["properties"]["input"]
    assert doc["components"]["schemas"]["SearchRequest"]["properties"]["k"]["maximum"] == Settings().max_k


def test_the_bulk_client_sends_no_empty_body() -> None:
    """The server refuses a body with no rows (422 empty_batch): the rest of a resumed job that holds none, or a
    file whose rows the reader skipped, is not sent."""

    class Client:
        def collection(self) -> dict[str, Any]:
            return {"count": 7, "fingerprint": "f"}

        def send(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
            raise AssertionError("an empty body was sent")

    summary = bulk_client.index_blocks(iter([]), Client(), progress=False, start=5)  # type: ignore[arg-type]
    assert (summary.items, summary.collection_count, summary.resumed_from) == (0, 7, 5)


def test_the_default_k_fits_max_k(make_client: MakeClient, text_model_dir: Path) -> None:
    client = make_client(text_model_dir, max_k=3)
    client.post("/v1/items", json={"items": [{"id": str(i), "code": f"{i:04x}"} for i in range(5)]})
    resp = client.post("/v1/search", json={"queries": [{"code": CODE}]})  # used to be 422: the default k, 10 > 3
    assert resp.status_code == 200 and len(resp.json()["results"][0]) == 3, resp.text
