"""One behavioural suite over both collection backends (FAISS and Milvus through a real milvus-lite): upserts
replace, deletes are invisible to the next search, an id comes back once, metadata round-trips, filters are
type-strict, radius search is inclusive, results agree with the FAISS flat backend (tie-aware: the same distances,
and the same ids below the last distance) and with a popcount oracle, and everything survives a reopen.
Milvus-only tests cover its cap on hits per query, a Milvus server URI, and the service's routes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hamdex.index import (
    Collection,
    CollectionError,
    Hit,
    InvalidItemsError,
    InvalidManifestError,
    UpsertResult,
    create_collection,
    open_collection,
)
from hamdex.index.registry import Registry

from tests.helpers import oracle_hits, random_codes

FP = "model-a"
N_BITS = 32
milvus = pytest.mark.milvus


def _needs_pymilvus() -> None:
    pytest.importorskip("pymilvus", reason="the milvus extra is not installed: pip install 'hamdex[milvus]'")


BACKENDS = [pytest.param("faiss", id="faiss"), pytest.param("milvus", id="milvus", marks=milvus)]
Make = Callable[..., Any]


@pytest.fixture(params=BACKENDS)
def make(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Make]:
    """``make(name="c", n_bits=N_BITS, **kwargs)`` -> a new collection of the backend under test, closed at the end."""
    backend = request.param
    if backend == "milvus":
        _needs_pymilvus()
    opened: list[Any] = []

    def factory(name: str = "c", n_bits: int = N_BITS, **kwargs: Any) -> Any:
        collection = create_collection(tmp_path / name, n_bits, FP, backend=backend, **kwargs)
        opened.append(collection)
        return collection

    yield factory
    for collection in opened:
        collection.close()


def reopen(collection: Any) -> Any:
    collection.close()
    return open_collection(collection.path)


def pairs(hits: list[Hit]) -> list[tuple[int, str]]:
    return [(h.distance, h.id) for h in hits]


def assert_same_topk(got: list[Hit], want: list[Hit]) -> None:
    """Tie-aware: equal distances in order, and equal ids wherever the distance is below the last one (at the last
    distance each backend may pick any of the tied items); both sorted by (distance, id)."""
    assert [h.distance for h in got] == [h.distance for h in want]
    assert pairs(got) == sorted(pairs(got))
    if got:
        last = got[-1].distance
        assert [p for p in pairs(got) if p[0] < last] == [p for p in pairs(want) if p[0] < last]


def data(n: int = 300, seed: int = 0) -> tuple[list[str], np.ndarray, list[dict]]:
    ids = [f"item-{i}" for i in range(n)]
    meta = [{"n": i, "mod": i % 3, "odd": bool(i % 2), "tag": f"t{i % 4}"} for i in range(n)]
    return ids, random_codes(n, N_BITS, seed), meta


# ---- the behaviour both backends share ----------------------------------------------------------------------------


def test_search_matches_the_oracle_and_faiss(make: Make, tmp_path: Path) -> None:
    ids, codes, meta = data()
    collection = make()
    assert collection.upsert(ids, codes, meta) == UpsertResult(300, 0)
    reference = Collection.create(tmp_path / "reference", N_BITS, FP)
    reference.upsert(ids, codes, meta)
    queries = np.concatenate([codes[:5], random_codes(5, N_BITS, seed=9)])
    got, want = collection.search(queries, 10), reference.search(queries, 10)
    for query, g, w in zip(queries, got, want, strict=True):
        assert_same_topk(g, w)
        oracle = oracle_hits(query, ids, codes)
        assert [h.distance for h in g] == [d for d, _ in oracle[:10]]
        assert all(h.metadata == meta[int(h.id.split("-")[1])] for h in g)
    assert collection.range_search(queries, 12) == reference.range_search(queries, 12)  # radius: every hit
    reference.close()


def test_upsert_replaces_code_and_metadata(make: Make) -> None:
    ids, codes, meta = data(20)
    collection = make()
    collection.upsert(ids, codes, meta)
    new_code = (~codes[3])[None, :]
    assert collection.upsert(["item-3", "fresh"], np.concatenate([new_code, codes[:1]]), [{"v": 2}, None]) == (
        UpsertResult(inserted=1, updated=1)
    )
    assert len(collection) == 21
    item = collection.get("item-3")
    assert item.metadata == {"v": 2} and np.array_equal(item.code, new_code[0])
    assert collection.get("fresh").metadata == {}
    hits = collection.search(new_code, 3)[0]
    assert pairs(hits)[0] == (0, "item-3")
    assert [h.id for h in collection.search(codes[3:4], 21)[0]].count("item-3") == 1  # never twice


def test_delete_is_invisible_to_the_next_search(make: Make) -> None:
    ids, codes, meta = data(50)
    collection = make()
    collection.upsert(ids, codes, meta)
    assert collection.delete(["item-0", "item-1", "missing", "item-0"]) == 2
    assert collection.delete([]) == 0 and len(collection) == 48
    found = {h.id for h in collection.search(codes[:1], 50)[0]}
    assert "item-0" not in found and "item-1" not in found and len(found) == 48
    assert collection.get("item-0") is None and "item-0" not in collection and "item-2" in collection
    assert all(h.id not in ("item-0", "item-1") for h in collection.range_search(codes[:1], N_BITS)[0])


def test_ids_len_and_insertion_order(make: Make) -> None:
    ids, codes, meta = data(10)
    collection = make()
    assert len(collection) == 0 and collection.ids() == [] and collection.search(codes[:1], 5) == [[]]
    collection.upsert(ids, codes, meta)
    collection.upsert(["item-2"], codes[:1])  # an upsert moves the id to the end
    assert collection.ids() == [i for i in ids if i != "item-2"] + ["item-2"]
    assert len(collection) == 10 and collection.manifest.count == 10


def test_metadata_round_trip_and_odd_ids(make: Make) -> None:
    odd_ids = ["a'b", 'q"uote', "back\\slash", "new\nline", "per%cent", "é✓", "tab\t", "%27"]
    metas = [
        {"nested": {"list": [1, 2.5, None, "x"]}},
        {"float_one": 1.0, "int_one": 1},
        {"big": 2**64, "neg": -(2**63)},
        {"text": "line\nbreak 'quoted' \"double\""},
        {},
        {"unicode": "日本語"},
        {"t": True, "f": False, "null": None},
        {"e": 1e-300},
    ]
    codes = random_codes(len(odd_ids), N_BITS, seed=3)
    collection = make()
    collection.upsert(odd_ids, codes, metas)
    collection = reopen(collection)
    for item_id, code, meta in zip(odd_ids, codes, metas, strict=True):
        item = collection.get(item_id)
        assert item.id == item_id and np.array_equal(item.code, code) and item.metadata == meta
        assert repr(item.metadata) == repr(meta)  # 1.0 stays a float, 2**64 an int
    assert sorted(collection.ids()) == sorted(odd_ids)
    assert {h.id for h in collection.search(codes, len(odd_ids))[0]} == set(odd_ids)
    assert collection.delete(["a'b", "new\nline"]) == 2 and len(collection) == len(odd_ids) - 2


@pytest.mark.parametrize("bad", ["victim\x00zzz", "\ud800"])
def test_ids_with_nul_or_lone_surrogates_touch_no_other_item(make: Make, bad: str) -> None:
    """A NUL cuts strings in SQLite's and Milvus's expression parsers: such an id must never reach them."""
    collection = make()
    collection.upsert(["victim"], random_codes(1, N_BITS, seed=4))
    for call in (
        lambda: collection.delete([bad]),
        lambda: collection.get(bad),
        lambda: collection.upsert([bad], random_codes(1, N_BITS)),
    ):
        with pytest.raises(InvalidItemsError):
            call()
    assert collection.ids() == ["victim"]


FILTER_CASES = [  # (where, the ids it selects); one collection for all of them keeps the Milvus runs short
    ({"v": 1}, {"int", "float"}),  # 1 == 1.0, as in JSON numbers
    ({"v": 1.0}, {"int", "float"}),
    ({"v": True}, {"true"}),  # true is not 1
    ({"v": "1"}, {"string"}),  # "1" is not 1
    ({"v": None}, {"null"}),  # null is not a missing field (Milvus: scanned)
    ({"v": 0}, {"zero"}),
    ({"v": False}, {"false"}),
    ({"s": "new\nline"}, {"string"}),  # a control character (Milvus: scanned)
    ({"s": "q\"u\\o'te"}, {"float"}),
    ({"v": 1, "s": "x"}, {"int"}),  # every field must match
    ({"v": 2**70}, set()),
    ({"absent": 1}, set()),
]


def test_filters_are_type_strict(make: Make) -> None:
    rows = {
        "int": {"v": 1, "s": "x"},
        "float": {"v": 1.0, "s": "q\"u\\o'te"},
        "true": {"v": True},
        "string": {"v": "1", "s": "new\nline"},
        "null": {"v": None},
        "missing": {},
        "zero": {"v": 0},
        "false": {"v": False},
    }
    codes = random_codes(len(rows), N_BITS, seed=4)
    collection = make()
    collection.upsert(list(rows), codes, list(rows.values()))
    for where, expected in FILTER_CASES:
        assert {h.id for h in collection.search(codes[:2], 8, where=where)[0]} == expected, where
        assert {h.id for h in collection.range_search(codes[:1], N_BITS, where=where)[0]} == expected, where


def test_filtered_search_finds_k_matches_like_faiss(make: Make, tmp_path: Path) -> None:
    ids, codes, meta = data(400, seed=5)
    collection = make()
    collection.upsert(ids, codes, meta)
    reference = Collection.create(tmp_path / "reference", N_BITS, FP)
    reference.upsert(ids, codes, meta)
    queries = codes[:4]
    for where in ({"mod": 1}, {"tag": "t2", "odd": False}, {"odd": True}):
        got, want = collection.search(queries, 7, where=where), reference.search(queries, 7, where=where)
        for g, w in zip(got, want, strict=True):
            assert len(g) == 7 and all(all(h.metadata[f] == v for f, v in where.items()) for h in g)
            assert_same_topk(g, w)
    reference.close()


def test_radius_is_inclusive_and_bucket(make: Make) -> None:
    codes = np.zeros((4, N_BITS // 8), np.uint8)
    codes[1, 0], codes[2, 0], codes[3] = 0b1, 0b11, 0xFF  # distances 0, 1, 2, 32 from codes[0]
    collection = make()
    collection.upsert(["zero", "one", "two", "far"], codes)
    assert pairs(collection.range_search(codes[:1], 1)[0]) == [(0, "zero"), (1, "one")]
    assert pairs(collection.range_search(codes[:1], 0)[0]) == [(0, "zero")]
    assert len(collection.range_search(codes[:1], 10**6)[0]) == 4  # beyond n_bits: everything
    assert [h.id for h in collection.bucket(codes[0])] == ["zero"]
    hits = collection.range_search(codes[:1], 2, include_metadata=False)[0]
    assert pairs(hits) == [(0, "zero"), (1, "one"), (2, "two")] and all(h.metadata is None for h in hits)


def test_reopen_keeps_items_metadata_order_and_progress(make: Make) -> None:
    ids, codes, meta = data(60)
    collection = make()
    collection.upsert(ids[:40], codes[:40], meta[:40], progress=("job-1", {"items": 40}))
    collection.upsert(ids[40:], codes[40:], meta[40:])
    collection.delete(["item-7"])
    before = collection.search(codes[:3], 12)
    collection = reopen(collection)
    assert len(collection) == 59 and collection.ids() == [i for i in ids if i != "item-7"]
    assert collection.search(codes[:3], 12) == before
    assert collection.progress("job-1") == {"items": 40} and collection.progress("other") is None
    collection.set_progress("job-1", {"items": 60, "done": True})
    collection.save()
    collection = reopen(collection)
    assert collection.progress("job-1") == {"items": 60, "done": True}
    assert collection.manifest.backend == collection.backend and collection.fingerprint == FP


def test_large_k_and_empty_queries(make: Make) -> None:
    ids, codes, meta = data(30)
    collection = make()
    collection.upsert(ids, codes, meta)
    assert len(collection.search(codes[:2], 1000)[0]) == 30
    assert collection.search(codes[:0], 5) == []


# ---- Milvus only -----------------------------------------------------------------------------------------------


@milvus
def test_milvus_pages_past_its_cap_on_hits(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With the cap lowered to 8, radius search and a large k page through distance bands, and a distance holding
    more than the cap is scanned: the same hits as FAISS."""
    _needs_pymilvus()
    from hamdex.index import milvus as milvus_module

    ids, codes, meta = data(200, seed=6)
    codes[100:140] = codes[0]  # 41 items at distance 0 from codes[0]: more than the cap
    collection = create_collection(tmp_path / "m", N_BITS, FP, backend="milvus")
    reference = Collection.create(tmp_path / "f", N_BITS, FP)
    for c in (collection, reference):
        c.upsert(ids, codes, meta)
    monkeypatch.setattr(milvus_module, "TOPK_MAX", 8)
    queries = codes[:3]
    assert collection.range_search(queries, 14) == reference.range_search(queries, 14)
    assert collection.range_search(queries, 14, where={"mod": 2}) == reference.range_search(
        queries, 14, where={"mod": 2}
    )
    for g, w in zip(collection.search(queries, 60), reference.search(queries, 60), strict=True):
        assert_same_topk(g, w)
    collection.close()
    reference.close()


@milvus
def test_milvus_server_uri_and_registry(tmp_path: Path) -> None:
    """A Milvus server (here milvus-lite serving on a socket): collections get their own Milvus collection, the
    registry creates, reopens and drops them, and dropping removes the server's collection."""
    _needs_pymilvus()
    from milvus_lite.server import Server
    from pymilvus import MilvusClient

    server = Server(str(tmp_path / "server.db"))
    assert server.init() and server.start()
    try:
        admin = MilvusClient(server.uds_path, alias="test-admin")
        with Registry(tmp_path / "collections") as registry:
            a = registry.create("a", N_BITS, FP, backend="milvus", milvus_uri=server.uds_path)
            registry.create("b", N_BITS, FP, backend="milvus", milvus_uri=server.uds_path)
            ids, codes, meta = data(20)
            a.upsert(ids, codes, meta)
            assert len(admin.list_collections()) == 2
            registry.drop("b")
            assert len(admin.list_collections()) == 1
        with Registry(tmp_path / "collections") as registry:  # reopened from its directory
            assert registry.names() == ["a"] and len(registry.get("a")) == 20
            assert registry.get("a").manifest.milvus_uri == server.uds_path
        admin.close()
    finally:
        server.stop()


@milvus
def test_dispatch_and_refusals(tmp_path: Path) -> None:
    _needs_pymilvus()
    create_collection(tmp_path / "m", 16, FP, backend="milvus").close()
    with pytest.raises(CollectionError, match="open_collection"):
        Collection.open(tmp_path / "m")
    with open_collection(tmp_path / "m", FP) as collection:
        assert collection.backend == "milvus" and collection.n_bits == 16
    with pytest.raises(InvalidManifestError, match="flat"):
        create_collection(tmp_path / "ivf", 16, FP, "ivf", backend="milvus")  # milvus-lite: BIN_FLAT only
    with pytest.raises(InvalidManifestError, match="index kinds"):
        create_collection(tmp_path / "hnsw", 16, FP, "hnsw", backend="milvus", milvus_uri="http://localhost:1")
    with pytest.raises(InvalidManifestError):
        create_collection(tmp_path / "f", 16, FP, backend="faiss", milvus_uri="http://localhost:1")


# ---- the service on a Milvus collection ------------------------------------------------------------------------


@milvus
def test_api_milvus_collection(make_client: Any, dense_model_dir: Path) -> None:
    """POST /v1/collections with backend milvus, then the items and search routes: the same answers as on a
    FAISS collection with the same items."""
    _needs_pymilvus()
    from hamdex.models import bits
    from hamdex.service.errors import STATUS

    client = make_client(dense_model_dir)  # a 16-bit model
    for name, backend in (("m", "milvus"), ("f", "faiss")):
        resp = client.post("/v1/collections", json={"name": name, "backend": backend})
        assert resp.status_code == 201, resp.text
        assert resp.json()["backend"] == backend and resp.json()["index_kind"] == "flat"
    codes = random_codes(40, 16, seed=7)
    items = [{"id": f"x{i}", "code": bits.to_wire(c, "hex"), "metadata": {"g": i % 2}} for i, c in enumerate(codes)]
    answers = {}
    for name in ("m", "f"):
        base = f"/v1/collections/{name}"
        assert client.post(f"{base}/items", json={"items": items}).json()["inserted"] == 40
        assert client.delete(f"{base}/items/x1").status_code == 200
        assert client.get(f"{base}/items/x1").status_code == 404
        assert client.get(f"{base}/items/x2").json()["metadata"] == {"g": 0}
        queries = [{"code": bits.to_wire(codes[0], "hex")}, {"id": "x3"}]
        answers[name] = [
            client.post(f"{base}/search", json={"queries": queries, "k": 5, **options}).json()["results"]
            for options in ({}, {"filter": {"g": 1}}, {"radius": 6, "k": 100})
        ]
    for got, want in zip(answers["m"][:2], answers["f"][:2], strict=True):  # plain and filtered: tie-aware
        for g, w in zip(got, want, strict=True):
            assert_same_topk([Hit(**h) for h in g], [Hit(**h) for h in w])
    assert answers["m"][2] == answers["f"][2]  # radius search returns every hit: identical
    listed = {c["name"]: c for c in client.get("/v1/collections").json()["collections"]}
    assert listed["m"]["backend"] == "milvus" and listed["m"]["count"] == 39 and listed["default"]["backend"] == "faiss"
    refused = [
        client.post("/v1/collections", json={"name": "h", "backend": "milvus", "index_kind": "hnsw"}),
        client.post("/v1/collections", json={"name": "i", "backend": "milvus", "index_kind": "ivf"}),
        client.post("/v1/collections", json={"name": "u", "milvus_uri": "http://localhost:19530"}),
        client.post("/v1/collections", json={"name": "b", "backend": "lancedb"}),
    ]
    assert [(r.status_code, r.json()["error_type"]) for r in refused] == [
        (422, "invalid_index_kind"),
        (422, "invalid_index_kind"),
        (422, "validation_error"),
        (422, "validation_error"),
    ]
    assert STATUS["backend_unavailable"] == 501
    assert client.delete("/v1/collections/m").status_code == 200
    assert client.get("/v1/collections/m").status_code == 404


@milvus
def test_api_default_collection_on_milvus(make_client: Any, dense_model_dir: Path, tmp_path: Path) -> None:
    """HAMDEX_BACKEND=milvus: the default collection is created in milvus-lite, and reopened after a restart."""
    _needs_pymilvus()
    from hamdex.models import bits

    path = tmp_path / "default-milvus"
    client = make_client(dense_model_dir, backend="milvus", collection_path=path)
    code = bits.to_wire(random_codes(1, 16)[0], "hex")
    assert client.post("/v1/items", json={"items": [{"id": "a", "code": code}]}).status_code == 200
    assert client.get("/info").json()["count"] == 1
    client.__exit__(None, None, None)
    client = make_client(dense_model_dir, collection_path=path)  # the manifest, not the setting, picks the backend
    hits = client.post("/v1/search", json={"queries": [{"code": code}], "k": 3}).json()["results"][0]
    assert hits == [{"id": "a", "distance": 0, "metadata": {}}]
    assert client.get("/v1/collections/default").json()["backend"] == "milvus"
