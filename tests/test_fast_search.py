"""The fast path for plain top-k searches by code (service.fast_search): it answers byte for byte as the FastAPI
route does, and every other request (other query kinds, bad input, auth failures, unknown collections) reaches the
route, which answers it. Two services on the same items, one with HAMDEX_FAST_SEARCH off, are compared."""

from __future__ import annotations

import base64
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from hamdex.service.routes import search as search_route

from tests.conftest import MakeClient
from tests.helpers import ADMIN, KEYS, READER, WRITER, bearer, metric

N_ITEMS = 40
META: list[Any] = [{"i": 1, "f": 0.1, "s": "tëxt ✓", "b": True, "n": None, "l": [1, "x", {"y": 2}]}, {}, {"z": -3}]


def items(n: int = N_ITEMS) -> list[dict[str, Any]]:
    codes = np.random.default_rng(7).integers(0, 256, (n, 2), dtype=np.uint8)
    return [{"id": f"doc/{i}", "code": c.tobytes().hex(), "metadata": META[i % len(META)]} for i, c in enumerate(codes)]


@pytest.fixture
def route_calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """One entry per search the FastAPI route handled (it checks every request; the fast path holds its own
    reference to the same check, which is not counted)."""
    calls: list[int] = []
    original = search_route.check_search

    def counted(*args: Any) -> Any:
        calls.append(1)
        return original(*args)

    monkeypatch.setattr(search_route, "check_search", counted)
    return calls


@pytest.fixture
def pair(make_client: MakeClient, dense_model_dir: Path) -> Callable[..., tuple[TestClient, TestClient]]:
    """(fast, route-only) services with the same items in the default collection and in a collection 'named'."""

    def make(**settings: Any) -> tuple[TestClient, TestClient]:
        out = []
        for fast in (True, False):
            client = make_client(dense_model_dir, fast_search=fast, **settings)
            headers = bearer(WRITER) if settings.get("api_keys") else {}
            admin = bearer(ADMIN) if settings.get("api_keys") else {}
            assert client.post("/v1/items", json={"items": items()}, headers=headers).status_code == 200
            assert client.post("/v1/collections", json={"name": "named"}, headers=admin).status_code in (200, 201)
            resp = client.post("/v1/collections/named/items", json={"items": items(10)}, headers=headers)
            assert resp.status_code == 200
            out.append(client)
        return out[0], out[1]

    return make


def code(i: int, fmt: str = "hex") -> Any:
    raw = items()[i]["code"]
    if fmt == "hex":
        return raw
    if fmt == "base64":
        return base64.b64encode(bytes.fromhex(raw)).decode()
    return [int(b) for b in np.unpackbits(np.frombuffer(bytes.fromhex(raw), np.uint8), bitorder="little")]


PLAIN = [
    ("/v1/search", {"queries": [{"code": code(0)}]}),
    ("/v1/search", {"queries": [{"code": code(1)}, {"code": code(2, "base64")}, {"code": code(3, "bits")}], "k": 7}),
    ("/v1/search", {"queries": [{"code": code(4)}], "k": 1000, "include_metadata": False}),
    ("/v1/search", {"queries": [{"code": code(5)}], "k": 3, "include_metadata": True}),
    ("/v1/collections/named/search", {"queries": [{"code": code(6)}, {"code": code(7)}], "k": 5}),
]


@pytest.mark.parametrize(("path", "body"), PLAIN)
def test_fast_path_answers_as_the_route_does(pair: Callable, route_calls: list[int], path: str, body: dict) -> None:
    fast, slow = pair()
    before = len(route_calls)
    got = fast.post(path, json=body)
    assert got.status_code == 200 and len(route_calls) == before  # answered without the route
    want = slow.post(path, json=body)
    assert len(route_calls) == before + 1
    assert got.content == want.content
    assert got.headers["content-type"] == want.headers["content-type"] == "application/json"
    for header in ("x-request-id", "x-queue-ms", "x-search-ms"):
        assert header in got.headers
    results = got.json()["results"]
    assert len(results) == len(body["queries"]) and all(results)
    assert [r[0]["distance"] for r in results] == [0] * len(results)  # each query's own item comes first


FALL_THROUGH = [  # (path, body, status, error_type or None for success)
    ("/v1/search", b"{not json", 422, "validation_error"),
    ("/v1/search", {"queries": []}, 422, "empty_batch"),
    ("/v1/search", {"queries": [{"code": "abc"}]}, 422, "code_format"),
    ("/v1/search", {"queries": [{"code": code(0) + "00"}]}, 422, "code_format"),
    ("/v1/search", {"queries": [{"code": code(0)}], "k": 0}, 422, "k_out_of_range"),
    ("/v1/search", {"queries": [{"code": code(0)}], "extra": 1}, 422, "validation_error"),
    ("/v1/search", {"queries": [{"code": code(0)}], "nprobe": 4}, 409, "unsupported_search_param"),
    ("/v1/search", {"queries": [{"id": "doc/3"}], "k": 4}, 200, None),
    ("/v1/search", {"queries": [{"id": "doc/none"}]}, 409, "query_id_not_found"),
    ("/v1/search", {"queries": [{"code": code(0)}], "radius": 3}, 200, None),
    ("/v1/search", {"queries": [{"code": code(0)}], "filter": {"z": -3}}, 200, None),
    ("/v1/collections/nope/search", {"queries": [{"code": code(0)}]}, 404, "collection_not_found"),
    ("/v1/collections/-bad/search", {"queries": [{"code": code(0)}]}, 422, "invalid_collection_name"),
]


@pytest.mark.parametrize(("path", "body", "status", "error_type"), FALL_THROUGH)
def test_everything_else_reaches_the_route(
    pair: Callable, route_calls: list[int], path: str, body: Any, status: int, error_type: str | None
) -> None:
    fast, slow = pair()
    send = {"content": body} if isinstance(body, bytes) else {"json": body}
    got, want = fast.post(path, **send), slow.post(path, **send)
    assert got.status_code == want.status_code == status, got.text
    assert got.content == want.content
    if error_type is not None:
        assert got.json()["error_type"] == error_type
    if status == 200 or error_type in ("unsupported_search_param", "query_id_not_found"):
        assert len(route_calls) == 2  # the route ran for both services


def test_auth_is_checked_on_the_fast_path(pair: Callable, route_calls: list[int]) -> None:
    fast, slow = pair(api_keys=KEYS)
    body = {"queries": [{"code": code(0)}]}
    wrong = bearer("wrong-key-0123456789")
    for headers, status in (({}, 401), (wrong, 401), (bearer(READER), 200)):
        got, want = (
            fast.post("/v1/search", json=body, headers=headers),
            slow.post("/v1/search", json=body, headers=headers),
        )
        assert got.status_code == want.status_code == status
        assert got.content == want.content
        assert got.headers.get("www-authenticate") == want.headers.get("www-authenticate")
    assert len(route_calls) == 1  # only the route-only service's reader search; the refusals never got that far


def test_fast_searches_count_under_the_route_template(pair: Callable) -> None:
    fast, _ = pair()
    fast.post("/v1/search", json={"queries": [{"code": code(0)}]})
    fast.post("/v1/collections/named/search", json={"queries": [{"code": code(0)}]})
    fast.post("/v1/collections/named/search", json={"queries": [{"code": code(0)}]})
    text = fast.get("/metrics").text
    requests = "hamdex_http_requests_total"
    assert metric(text, requests, route="/v1/search", method="POST", status="200") == 1
    assert metric(text, requests, route="/v1/collections/{name}/search", method="POST", status="200") == 2
    assert metric(text, "hamdex_queue_wait_seconds_count", batcher="search") == 3


def test_the_body_size_limit_holds_on_the_fast_path(make_client: MakeClient, dense_model_dir: Path) -> None:
    client = make_client(dense_model_dir, max_body_bytes=1024)
    body = {"queries": [{"code": code(0)}] * 100}
    resp = client.post("/v1/search", json=body)
    assert resp.status_code == 413 and resp.json()["error_type"] == "body_too_large"
