"""Scroll, count and delete by filter on the Milvus backend (index.milvus, through a real milvus-lite), compared
with the FAISS collection holding the same items and with brute force over the metadata (index.filters.matches):
every item comes exactly once in write order, with and without a filter, also when a seq window must be narrowed;
counts equal brute force; a delete by filter removes exactly the matching items, which search no longer returns;
bad filters are the same errors; and the same through the HTTP routes."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from hamdex.index import InvalidQueryError, create_collection
from hamdex.index.deadline import Deadline
from hamdex.index.errors import UnsupportedByBackendError
from hamdex.index.filters import matches
from hamdex.models import bits

from tests.helpers import assert_error, random_codes

pytestmark = pytest.mark.milvus
pytest.importorskip("pymilvus", reason="the milvus extra is not installed: pip install 'hamdex[milvus]'")

N = 120
IDS = [f"i{i:03d}" for i in range(N)]
META = [
    {"n": i, "odd": i % 2 == 1, "tag": ["a", "b", "c"][i % 3]} | ({"x": None} if i % 10 == 0 else {}) for i in range(N)
]
FILTERS = [
    {},
    {"odd": True},  # an exact Milvus expression
    {"tag": "b", "odd": False},
    {"n": {"$lt": 30}, "odd": True},  # operators: Milvus scans, Python decides
    {"$or": [{"n": {"$lt": 5}}, {"tag": {"$in": ["c"]}}]},
    {"x": None},  # null: no Milvus expression
    {"odd": 1},  # type-strict: true is not 1
    {"n": 7.0},  # 7 and 7.0 are one number
    {"n": "7"},
    {"missing": {"$exists": False}},
]


def fill(collection: Any) -> Any:
    collection.upsert(IDS, random_codes(N, 16, seed=3), META)
    return collection


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """Read-only: a milvus and a faiss collection with the same items, written in the same order."""
    root = tmp_path_factory.mktemp("pair")
    both = {
        backend: fill(create_collection(root / backend, 16, "fp", backend=backend)) for backend in ("milvus", "faiss")
    }
    yield both
    for collection in both.values():
        collection.close()


@pytest.fixture
def milvus(tmp_path: Path) -> Iterator[Any]:
    collection = fill(create_collection(tmp_path / "m", 16, "fp", backend="milvus"))
    yield collection
    collection.close()


def scroll_all(collection: Any, limit: int, where: dict | None = None) -> list[str]:
    out, after = [], -1
    while True:
        items, last = collection.scroll(after, limit, where)
        out += [it.id for it in items]
        if last is None:
            return out
        after = last


def brute(where: dict) -> list[str]:
    return [i for i, meta in zip(IDS, META, strict=True) if matches(meta, where)]


@pytest.mark.parametrize("limit", [1, 7, 64, 1000])
def test_scroll_visits_every_item_once_in_write_order(pair: dict[str, Any], limit: int) -> None:
    for where in FILTERS if limit in (7, 1000) else FILTERS[:4]:
        got = scroll_all(pair["milvus"], limit, where)
        assert got == brute(where) == scroll_all(pair["faiss"], limit, where), where


def test_scroll_pages_items_and_positions(pair: dict[str, Any]) -> None:
    items, last = pair["milvus"].scroll(-1, 3)
    assert [(it.id, it.metadata) for it in items] == list(zip(IDS[:3], META[:3], strict=True))
    assert all(it.code.dtype == np.uint8 and it.code.shape == (2,) for it in items)
    np.testing.assert_array_equal(np.stack([it.code for it in items]), random_codes(N, 16, seed=3)[:3])
    assert isinstance(last, int) and 0 <= last < 2**60  # fits the HTTP cursor's 15 hex digits
    following, _ = pair["milvus"].scroll(last, 2)
    assert [it.id for it in following] == IDS[3:5]
    assert pair["milvus"].scroll(2**60 - 1, 5) == ([], None)  # past every position: the end


def test_scroll_narrows_its_seq_windows(pair: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    """Windows that hold more rows than one Milvus query returns are narrowed (here forced: 5 rows a window and
    a first guess spanning every item), and no item is lost or repeated."""
    from hamdex.index import milvus as milvus_module

    monkeypatch.setattr(milvus_module, "WINDOW_ROWS", 5)
    monkeypatch.setattr(pair["milvus"], "_spacing", 2.0**60)
    for limit in (1, 2, 3):
        assert scroll_all(pair["milvus"], limit) == IDS
        assert scroll_all(pair["milvus"], limit, {"odd": True}) == brute({"odd": True})


def test_a_page_is_not_cut_inside_a_shared_seq() -> None:
    from hamdex.index.milvus import _first

    found = [(1, "a"), (2, "b"), (2, "c"), (3, "d")]
    assert _first(found, 2) == [(1, "a")]  # the next page starts after seq 1 and gets b and c
    assert _first(found, 3) == found[:3]
    assert _first([(2, "b"), (2, "c"), (3, "d")], 1) == [(2, "b"), (2, "c")]  # one shared seq alone: whole


def test_scroll_under_concurrent_writes(milvus: Any) -> None:
    """Items not written during the scroll come exactly once; a rewritten one comes again in its new version."""
    items, after = milvus.scroll(-1, 50)
    milvus.upsert(["i000", "new"], random_codes(2, 16, seed=4), [{"n": -1}, {"n": -2}])  # i000 already seen
    milvus.delete(["i100"])  # not yet seen: gone
    seen = [it.id for it in items]
    while after is not None:
        page, after = milvus.scroll(after, 50)
        seen += [it.id for it in page]
    assert seen == [i for i in IDS if i != "i100"] + ["i000", "new"]
    assert scroll_all(milvus, 7) == [i for i in IDS if i not in ("i000", "i100")] + ["i000", "new"]


def test_count_matching_equals_brute_force(pair: dict[str, Any]) -> None:
    for where in FILTERS:
        assert pair["milvus"].count_matching(where) == len(brute(where)) == pair["faiss"].count_matching(where)
    assert pair["milvus"].count_matching(None) == N


def test_delete_where_removes_exactly_the_matching_items(milvus: Any) -> None:
    where = {"$or": [{"tag": "a"}, {"n": {"$gte": 100}}]}
    doomed = set(brute(where))
    assert milvus.delete_where(where, chunk=8) == (len(doomed), True)
    assert len(milvus) == N - len(doomed) == milvus.count_matching({})
    assert milvus.count_matching(where) == 0 and all(milvus.get(i) is None for i in doomed)
    assert scroll_all(milvus, 32) == [i for i in IDS if i not in doomed]
    hits = milvus.search(np.zeros((1, 2), np.uint8), N)[0]
    assert sorted(h.id for h in hits) == sorted(set(IDS) - doomed)
    assert not doomed & {h.id for h in milvus.range_search(np.zeros((1, 2), np.uint8), 16)[0]}
    odd = set(brute({"odd": True}))
    assert milvus.delete_where({"odd": True}) == (len(odd - doomed), True)
    left = len(milvus)
    assert milvus.delete_where({}) == (left, True) and len(milvus) == 0 and milvus.ids() == []


def test_delete_where_stops_at_its_deadline(milvus: Any) -> None:
    assert milvus.delete_where({"odd": True}, Deadline(0), chunk=10) == (0, False)
    assert len(milvus) == N


def test_delete_where_spares_an_item_rewritten_meanwhile(milvus: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Only the version seen matching is deleted: an item rewritten between the page and the delete stays."""
    real_page = type(milvus)._page

    def page_then_rewrite(self, *args: Any) -> Any:
        rows, last = real_page(self, *args)
        if any(row["id"] == "i001" for row in rows):
            self.upsert(["i001"], random_codes(1, 16, seed=5), [{"odd": True, "n": 1}])
        return rows, last

    monkeypatch.setattr(type(milvus), "_page", page_then_rewrite)
    deleted, complete = milvus.delete_where({"odd": True}, chunk=1000)
    assert (deleted, complete) == (N // 2 - 1, True)
    assert milvus.ids() == [i for i in IDS if int(i[1:]) % 2 == 0] + ["i001"]


@pytest.mark.parametrize(
    "where", [{"n": {"$regex": "x"}}, {"$nor": []}, {"n": {"$gt": True}}, {"": 1}, [1], {"n": float("nan")}]
)
def test_bad_filters_are_the_same_errors(pair: dict[str, Any], where: Any) -> None:
    for collection in pair.values():
        for method, args in (("scroll", (-1, 5, where)), ("count_matching", (where,)), ("delete_where", (where,))):
            with pytest.raises(InvalidQueryError):
                getattr(collection, method)(*args)


def test_payload_indexes_are_refused_with_the_reason(milvus: Any) -> None:
    assert milvus.indexed_fields() == []
    with pytest.raises(UnsupportedByBackendError, match="JSON field"):
        milvus.index_fields(["n"])


# ---- over HTTP ----------------------------------------------------------------------------------------------


@pytest.fixture
def client(make_client: Any, dense_model_dir: Path) -> TestClient:
    """Two named collections, m (milvus) and f (faiss), holding the same items (a 16-bit model)."""
    client = make_client(dense_model_dir)
    rows = [
        {"id": i, "code": bits.to_wire(c, "hex"), "metadata": meta}
        for i, c, meta in zip(IDS, random_codes(N, 16, seed=3), META, strict=True)
    ]
    for name, backend in (("m", "milvus"), ("f", "faiss")):
        assert client.post("/v1/collections", json={"name": name, "backend": backend}).status_code == 201
        assert client.post(f"/v1/collections/{name}/items", json={"items": rows}).status_code == 200
    return client


def http_scroll(client: TestClient, base: str, **params: Any) -> list[str]:
    out, cursor = [], None
    while True:
        body = client.get(f"{base}/items", params={**params, **({"cursor": cursor} if cursor else {})}).json()
        out += [it["id"] for it in body["items"]]
        cursor = body["next_cursor"]
        if cursor is None:
            return out


def test_http_scroll_count_delete_as_on_faiss(client: TestClient) -> None:
    where = {"n": {"$gte": 10, "$lt": 20}}
    for name in ("m", "f"):
        base = f"/v1/collections/{name}"
        assert http_scroll(client, base, limit=16) == IDS
        assert http_scroll(client, base, limit=3, filter=json.dumps(where)) == IDS[10:20]
        assert http_scroll(client, base, limit=5, filter=json.dumps({"odd": True})) == brute({"odd": True})
    pages = {
        name: client.get(f"/v1/collections/{name}/items", params={"limit": 4, "format": "bits"}).json() for name in "mf"
    }
    assert pages["m"]["items"] == pages["f"]["items"] and len(pages["m"]["items"][0]["code"]) == 16
    for name in ("m", "f"):
        base = f"/v1/collections/{name}"
        for flt in FILTERS:
            assert client.post(f"{base}/items:count", json={"filter": flt}).json() == {"count": len(brute(flt))}
        assert client.post(f"{base}/items:delete", json={"filter": where}).json() == {"deleted": 10, "complete": True}
        assert client.post(f"{base}/items:count", json={"filter": {}}).json() == {"count": N - 10}
        assert client.get(f"{base}/items/i015").status_code == 404
        body = client.post(f"{base}/search", json={"queries": [{"code": "0000"}], "k": N}).json()
        assert sorted(h["id"] for h in body["results"][0]) == IDS[:10] + IDS[20:]


@pytest.mark.parametrize(
    ("method", "path", "kwargs"),
    [
        ("get", "items", {"params": {"cursor": "nonsense"}}),
        ("get", "items", {"params": {"cursor": "c" + "f" * 16}}),
        ("get", "items", {"params": {"filter": "{not json"}}),
        ("get", "items", {"params": {"filter": json.dumps({"n": {"$gt": True}})}}),
        ("get", "items", {"params": {"limit": 0}}),
        ("post", "items:count", {"json": {"filter": {"n": {"$regex": "x"}}}}),
        ("post", "items:delete", {"json": {"filter": {"$or": []}}}),
        ("post", "items:delete", {"json": {}}),
    ],
)
def test_http_bad_requests_answer_as_on_faiss(client: TestClient, method: str, path: str, kwargs: dict) -> None:
    answers = [getattr(client, method)(f"/v1/collections/{name}/{path}", **kwargs) for name in ("m", "f")]
    assert [(r.status_code, r.json()["error_type"]) for r in answers][0] == (
        answers[1].status_code,
        answers[1].json()["error_type"],
    )
    assert answers[0].status_code == 422, answers[0].text


def test_http_payload_indexes_on_milvus_are_a_clear_conflict(client: TestClient) -> None:
    body = assert_error(
        client.post("/v1/collections", json={"name": "p", "backend": "milvus", "indexed_fields": ["n"]}),
        409,
        "unsupported_by_backend",
    )
    assert "JSON field" in body["error"] and "without indexed_fields" in body["error"]
    assert client.get("/v1/collections/p").status_code == 404  # nothing was created
    assert_error(client.put("/v1/collections/m/indexes/n"), 409, "unsupported_by_backend")


def test_http_default_collection_on_milvus(make_client: Any, dense_model_dir: Path, tmp_path: Path) -> None:
    client = make_client(dense_model_dir, backend="milvus", collection_path=tmp_path / "default-milvus")
    rows = [{"id": i, "code": "00ff", "metadata": {"n": k}} for k, i in enumerate(IDS[:9])]
    assert client.post("/v1/items", json={"items": rows}).status_code == 200
    assert http_scroll(client, "/v1", limit=2, filter=json.dumps({"n": {"$gte": 3}})) == IDS[3:9]
    assert client.post("/v1/items:count", json={"filter": {"n": {"$lt": 3}}}).json() == {"count": 3}
    assert client.post("/v1/items:delete", json={"filter": {"n": {"$lt": 3}}}).json() == {
        "deleted": 3,
        "complete": True,
    }
    assert client.get("/info").json()["count"] == 6


def test_milvus_searches_the_whole_code_only(milvus: Any) -> None:
    query = random_codes(1, 16, seed=3)
    whole = milvus.search(query, 5, bits=16)  # the full width is an ordinary search
    assert [h.id for h in whole[0]] == [h.id for h in milvus.search(query, 5)[0]]
    with pytest.raises(InvalidQueryError, match="whole 16-bit code"):
        milvus.search(query, 5, bits=8)
    with pytest.raises(InvalidQueryError, match="whole 16-bit code"):
        milvus.range_search(query, 3, bits=8)
