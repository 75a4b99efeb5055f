"""Unknown query parameters are refused on every route, as unknown body fields are (service.query_check)."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import MakeClient


def test_an_unknown_query_parameter_is_a_422_everywhere(make_client: MakeClient, text_model_dir: Path) -> None:
    client = make_client(text_model_dir)
    for method, path in [
        ("GET", "/v1/collections/default/export?foo=1"),
        ("GET", "/v1/collections/default/export?="),
        ("GET", "/v1/items?lmit=2"),  # a typo is not "no limit"
        ("GET", "/livez?probe=1"),
        ("POST", "/v1/search?k=3"),  # k belongs in the body; the fast path leaves a query string to the route
    ]:
        kwargs = {"json": {"queries": [{"code": "0f0f"}]}} if method == "POST" else {}
        resp = client.request(method, path, **kwargs)
        assert (resp.status_code, resp.json()["error_type"]) == (422, "validation_error"), (path, resp.text)
        assert "unknown query parameters" in resp.json()["error"]
    for path in ["/v1/collections/default/export?format=ndjson", "/v1/items?limit=2", '/v1/items?filter={"a":1}']:
        assert client.get(path).status_code == 200, path  # declared ones, and the filter the route reads by hand


def test_the_document_lists_422_on_every_operation(make_client: MakeClient, text_model_dir: Path) -> None:
    doc = make_client(text_model_dir).get("/openapi.json").json()
    for path, operations in doc["paths"].items():
        for method, operation in operations.items():
            assert "422" in operation["responses"], (method, path)
