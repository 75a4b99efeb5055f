"""Scrolling every item with a cursor, counting and deleting by filter (service.routes.scroll, index.collection)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from hamdex.index import Collection
from hamdex.index.deadline import Deadline
from hamdex.models import bits

N = 250


@pytest.fixture
def collection(tmp_path: Path):
    coll = Collection.create(tmp_path / "c", 16, "fp")
    coll.upsert([f"i{i:03d}" for i in range(N)], codes(N), [{"n": i, "odd": i % 2 == 1} for i in range(N)])
    yield coll
    coll.close()


def codes(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 2), dtype=np.uint8)


def scroll_all(coll: Collection, limit: int, where: dict | None = None) -> list[str]:
    out, after = [], -1
    while True:
        items, last = coll.scroll(after, limit, where)
        out += [it.id for it in items]
        if last is None:
            return out
        after = last


@pytest.mark.parametrize("limit", [1, 7, 100, 1000])
def test_scroll_visits_every_item_once(collection: Collection, limit: int) -> None:
    assert scroll_all(collection, limit) == [f"i{i:03d}" for i in range(N)]
    assert scroll_all(collection, limit, {"n": {"$lt": 30}, "odd": True}) == [f"i{i:03d}" for i in range(1, 30, 2)]


def test_scroll_under_concurrent_writes(collection: Collection) -> None:
    """Items not written during the scroll come exactly once; a rewritten one comes again in its new version."""
    items, after = collection.scroll(-1, 100)
    collection.upsert(["i000", "new"], codes(2, 1), [{"n": -1}, {"n": -2}])  # i000 already seen; a new item
    collection.delete(["i200"])  # not yet seen: gone
    seen = [it.id for it in items]
    while after is not None:
        page, after = collection.scroll(after, 100)
        seen += [it.id for it in page]
    assert sorted(seen) == sorted([f"i{i:03d}" for i in range(N) if i != 200] + ["i000", "new"])


def test_count_and_delete_where(collection: Collection) -> None:
    assert collection.count_matching({"odd": True}) == N // 2
    assert collection.count_matching({"$or": [{"n": {"$lt": 10}}, {"n": {"$gte": 240}}]}) == 20
    assert collection.count_matching({}) == N
    assert collection.delete_where({"n": {"$gte": 100}}, chunk=32) == (N - 100, True)
    assert len(collection) == 100 and collection.count_matching(None) == 100
    hits = collection.search(np.zeros((1, 2), np.uint8), N)[0]
    assert sorted(h.id for h in hits) == [f"i{i:03d}" for i in range(100)]


def test_delete_where_stops_at_its_deadline(collection: Collection) -> None:
    expired = Deadline(0)
    assert collection.delete_where({"odd": True}, expired, chunk=10) == (0, False)
    assert len(collection) == N


# ---- over HTTP ----------------------------------------------------------------------------------------------


@pytest.fixture
def client(make_client, dense_model_dir: Path) -> TestClient:
    client = make_client(dense_model_dir)
    rows = [
        {"id": f"i{i:03d}", "code": bits.to_wire(c, "hex"), "metadata": {"n": i, "odd": i % 2 == 1}}
        for i, c in enumerate(codes(N))
    ]
    for start in range(0, N, 100):
        assert client.post("/v1/items", json={"items": rows[start : start + 100]}).status_code == 200
    return client


def http_scroll(client: TestClient, base: str, **params: Any) -> list[str]:
    out, cursor = [], None
    while True:
        query = {**params, **({"cursor": cursor} if cursor else {})}
        body = client.get(f"{base}/items", params=query).json()
        out += [it["id"] for it in body["items"]]
        cursor = body["next_cursor"]
        if cursor is None:
            return out


@pytest.mark.parametrize("base", ["/v1", "/v1/collections/default"])
def test_http_scroll_count_delete(client: TestClient, base: str) -> None:
    assert http_scroll(client, base, limit=64) == [f"i{i:03d}" for i in range(N)]
    where = {"n": {"$gte": 10, "$lt": 20}}
    assert http_scroll(client, base, limit=3, filter=json.dumps(where)) == [f"i{i:03d}" for i in range(10, 20)]
    page = client.get(f"{base}/items", params={"limit": 1, "format": "bits"}).json()
    assert page["items"][0]["metadata"] == {"n": 0, "odd": False} and len(page["items"][0]["code"]) == 16
    assert client.post(f"{base}/items:count", json={"filter": {"odd": True}}).json() == {"count": N // 2}
    assert client.post(f"{base}/items:delete", json={"filter": where}).json() == {"deleted": 10, "complete": True}
    assert client.post(f"{base}/items:count", json={"filter": {}}).json() == {"count": N - 10}
    assert client.get(f"{base}/items/i015").status_code == 404


@pytest.mark.parametrize(
    ("method", "path", "kwargs"),
    [
        ("get", "/v1/items", {"params": {"cursor": "nonsense"}}),
        ("get", "/v1/items", {"params": {"cursor": "c" + "f" * 16}}),
        ("get", "/v1/items", {"params": {"filter": "{not json"}}),
        ("get", "/v1/items", {"params": {"filter": json.dumps({"n": {"$gt": True}})}}),
        ("get", "/v1/items", {"params": {"limit": 0}}),
        ("post", "/v1/items:count", {"json": {"filter": {"n": {"$regex": "x"}}}}),
        ("post", "/v1/items:delete", {"json": {}}),
    ],
)
def test_http_bad_requests_are_422(client: TestClient, method: str, path: str, kwargs: dict) -> None:
    response = getattr(client, method)(path, **kwargs)
    assert response.status_code == 422, response.text
    assert response.json()["error_type"] in ("invalid_query", "validation_error")


@pytest.mark.parametrize("base", ["/v1", "/v1/collections/default"])
def test_http_payload_indexes(client: TestClient, base: str) -> None:
    assert client.get(f"{base}/indexes").json() == {"fields": []}
    assert client.put(f"{base}/indexes/n").json() == {"fields": ["n"]}
    assert client.put(f"{base}/indexes/n").json() == {"fields": ["n"]}  # idempotent
    assert client.get(f"{base}/indexes").json() == {"fields": ["n"]}
    assert client.put(f"{base}/indexes/$n").status_code == 422
    where = {"n": {"$gte": 10, "$lt": 20}}
    assert http_scroll(client, base, limit=4, filter=json.dumps(where)) == [f"i{i:03d}" for i in range(10, 20)]
    body = client.post(f"{base}/search", json={"queries": [{"code": "0000"}], "k": 50, "filter": where}).json()
    assert sorted(h["id"] for h in body["results"][0]) == [f"i{i:03d}" for i in range(10, 20)]


def test_a_payload_index_past_the_limit_is_a_conflict(client: TestClient) -> None:
    """The 17th field is refused with 409: the collection's indexes so far decide, not the request (a request the
    API document calls valid is never a 422)."""
    from hamdex.index.store import MAX_INDEXED_FIELDS

    for i in range(MAX_INDEXED_FIELDS):
        assert client.put(f"/v1/indexes/f{i}").status_code == 200
    response = client.put("/v1/indexes/one_more")
    assert (response.status_code, response.json()["error_type"]) == (409, "too_many_indexes"), response.text
    assert len(client.get("/v1/indexes").json()["fields"]) == MAX_INDEXED_FIELDS
