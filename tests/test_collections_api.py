"""Several named collections per server through ``TestClient``: the /v1/collections endpoints, the items and search
routes under /v1/collections/{name} (the same handlers as the default collection's), search filters and per-kind
index parameters, the fingerprint guard on upserts, readiness while loading, and shutdown closing everything.
"""

from __future__ import annotations

import json
import shutil
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from hamdex.index import Collection, CorruptCollectionError
from hamdex.models import bits, checkpoint
from hamdex.service.app import wait_ready
from hamdex.service.errors import STATUS

from tests.conftest import MakeClient, synthetic_texts
from tests.helpers import oracle_hits, pairs, random_codes

KIND_PARAMS = {"flat": {}, "ivf": {"nprobe": 8}, "hnsw": {"ef_search": 64}, "hash": {}, "multihash": {}}


@pytest.fixture
def text_model(tmp_path: Path, text_model_dir: Path) -> str:
    """The text model installed under the name "text" in the clients' models_dir (tmp_path / "models")."""
    shutil.copytree(text_model_dir, tmp_path / "models" / "text")
    return "text"


@pytest.fixture
def client(make_client: MakeClient, dense_model_dir: Path) -> TestClient:
    """Default model: the 16-bit dense model (12-d vectors)."""
    return make_client(dense_model_dir)


def fingerprint(model_dir: Path) -> str:
    return checkpoint.read_meta(model_dir)["fingerprint"]


def create(client: TestClient, name: str, **body: Any) -> dict:
    resp = client.post("/v1/collections", json={"name": name, **body})
    assert resp.status_code == 201, resp.text
    return resp.json()


def put_codes(client: TestClient, base: str, ids: list[str], codes: np.ndarray, metadata: list[dict]) -> None:
    items = [
        {"id": i, "code": bits.to_wire(c, "hex"), "metadata": m} for i, c, m in zip(ids, codes, metadata, strict=True)
    ]
    resp = client.post(f"{base}/items", json={"items": items})
    assert resp.status_code == 200, resp.text


def search(client: TestClient, base: str, query: np.ndarray, **options: Any) -> Any:
    return client.post(f"{base}/search", json={"queries": [{"code": bits.to_wire(query, "hex")}], **options})


def error_of(resp: Any) -> tuple[int, str]:
    body = resp.json()
    assert set(body) == {"error", "error_type"} and body["error"], body
    assert STATUS[body["error_type"]] == resp.status_code  # the one table agrees with what was sent
    return resp.status_code, body["error_type"]


# ---- the collections endpoints ------------------------------------------------------------------------------


def test_default_collection_is_listed(client: TestClient, dense_model_dir: Path) -> None:
    body = client.get("/v1/collections").json()
    default = {
        "name": "default",
        "model": "default",
        "n_bits": 16,
        "index_kind": "flat",
        "index_params": {},
        "count": 0,
        "fingerprint": fingerprint(dense_model_dir),
        "backend": "faiss",
    }
    assert body == {"collections": [default], "unavailable": []}
    assert client.get("/v1/collections/default").json() == default


def test_create_describe_list_and_drop(
    client: TestClient, text_model: str, text_model_dir: Path, dense_model_dir: Path, tmp_path: Path
) -> None:
    made = create(client, "news", model=text_model, index_kind="ivf", index_params={"nlist": 4})
    expected = {
        "name": "news",
        "model": "text",
        "n_bits": 16,
        "index_kind": "ivf",
        "index_params": {"nlist": 4, "nprobe": 8, "train_size_per_list": 39},
        "count": 0,
        "fingerprint": fingerprint(text_model_dir),
        "backend": "faiss",
    }
    assert made == expected
    assert create(client, "vectors")["fingerprint"] == fingerprint(dense_model_dir)  # model "default", kind flat

    texts = synthetic_texts(n_per_topic=1, seed=2)
    items = [{"id": f"t{i}", "input": t} for i, t in enumerate(texts)]
    assert client.post("/v1/collections/news/items", json={"items": items}).json()["inserted"] == len(texts)
    encoded = checkpoint.load(text_model_dir, "cpu").encode(texts).codes  # the collection's model, not the default
    assert client.get("/v1/collections/news/items/t2").json()["code"] == bits.to_wire(encoded[2], "hex")

    assert client.get("/v1/collections/news").json() == {**expected, "count": len(texts)}
    listed = client.get("/v1/collections").json()
    assert [c["name"] for c in listed["collections"]] == ["default", "news", "vectors"]
    assert [c["count"] for c in listed["collections"]] == [0, len(texts), 0]

    assert client.delete("/v1/collections/news").json() == {"dropped": "news"}
    assert error_of(client.get("/v1/collections/news")) == (404, "collection_not_found")
    assert error_of(client.get("/v1/collections/news/items/t2")) == (404, "collection_not_found")
    assert error_of(client.post("/v1/collections/news/search", json={"queries": [{"code": "0000"}]})) == (
        404,
        "collection_not_found",
    )
    assert sorted(p.name for p in (tmp_path / "collections-0").iterdir()) == [".registry.lock", "vectors"]
    assert create(client, "news", model=text_model)["count"] == 0  # the name is free again


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"name": "../escape"}, (422, "invalid_collection_name")),
        ({"name": ".hidden"}, (422, "invalid_collection_name")),
        ({"name": "x" * 65}, (422, "invalid_collection_name")),
        ({"name": ""}, (422, "invalid_collection_name")),
        ({"name": "default"}, (409, "collection_exists")),
        ({"name": "taken"}, (409, "collection_exists")),
        ({"name": "a", "model": "nope"}, (404, "model_not_found")),
        ({"name": "a", "model": "../model"}, (404, "model_not_found")),
        ({"name": "a", "index_kind": "btree"}, (422, "invalid_index_kind")),
        ({"name": "a", "index_kind": "ivf", "index_params": {"nlist": 0}}, (422, "invalid_index_params")),
        ({"name": "a", "index_params": {"nlist": 4}}, (422, "invalid_index_params")),  # flat takes none
        ({"name": "a", "index_kind": "hnsw", "index_params": {"m": True}}, (422, "invalid_index_params")),
        ({"name": "a", "index_kind": "hnsw", "index_params": {"m": 2.5}}, (422, "invalid_index_params")),
        ({"name": "a", "shards": 2}, (422, "validation_error")),
        ({"name": "a", "indexed_fields": ["bad field"]}, (422, "validation_error")),
        ({"name": "a", "indexed_fields": [f"f{i}" for i in range(17)]}, (422, "validation_error")),  # 16 at most
        ({"name": "a", "indexed_fields": [3]}, (422, "validation_error")),
        ({"name": "a", "backend": "milvus", "indexed_fields": ["label"]}, (409, "unsupported_by_backend")),
        ({"model": "default"}, (422, "validation_error")),
    ],
)
def test_bad_creates_get_their_error(client: TestClient, body: dict, expected: tuple[int, str]) -> None:
    create(client, "taken")
    assert error_of(client.post("/v1/collections", json=body)) == expected
    names = [c["name"] for c in client.get("/v1/collections").json()["collections"]]
    assert names == ["default", "taken"]  # nothing was made


def test_payload_indexes_declared_at_creation(client: TestClient) -> None:
    create(client, "tagged", indexed_fields=["label", "year", "label"])  # a repeat is declared once
    assert client.get("/v1/collections/tagged/indexes").json()["fields"] == ["label", "year"]
    codes = np.array([[1, 1], [1, 2]], np.uint8)  # 16 bits: the model's
    put_codes(client, "/v1/collections/tagged", ["a", "b"], codes, [{"label": "x", "year": 2001}, {"year": 1999}])
    resp = search(client, "/v1/collections/tagged", codes[1], k=5, filter={"year": {"$gt": 2000}})
    assert [h["id"] for h in resp.json()["results"][0]] == ["a"], resp.text


@pytest.mark.parametrize(
    ("method", "path", "expected"),
    [
        ("GET", "/v1/collections/missing", (404, "collection_not_found")),
        ("DELETE", "/v1/collections/missing", (404, "collection_not_found")),
        ("GET", "/v1/collections/bad%20name", (422, "invalid_collection_name")),
        ("DELETE", "/v1/collections/.hidden", (422, "invalid_collection_name")),
        ("DELETE", "/v1/collections/default", (409, "collection_protected")),
        ("GET", "/v1/collections/missing/items/x", (404, "collection_not_found")),
        ("DELETE", "/v1/collections/missing/items/x", (404, "collection_not_found")),
        ("GET", "/v1/collections/bad%20name/items/x", (422, "invalid_collection_name")),
        ("PUT", "/v1/collections/default", (405, "method_not_allowed")),
    ],
)
def test_bad_collection_requests_get_their_error(
    client: TestClient, method: str, path: str, expected: tuple[int, str]
) -> None:
    assert error_of(client.request(method, path)) == expected
    assert client.get("/v1/collections/default").status_code == 200  # still there


def test_unknown_collection_in_writes_and_searches(client: TestClient) -> None:
    body = {"items": [{"id": "a", "code": "0000"}]}
    assert error_of(client.post("/v1/collections/missing/items", json=body)) == (404, "collection_not_found")
    assert error_of(client.post("/v1/collections/missing/search", json={"queries": [{"code": "0000"}]})) == (
        404,
        "collection_not_found",
    )
    assert error_of(client.post("/v1/collections/bad!name/items", json=body)) == (422, "invalid_collection_name")
    assert [c["name"] for c in client.get("/v1/collections").json()["collections"]] == ["default"]


# ---- the same routes under /v1 and /v1/collections/{name} ---------------------------------------------------


@pytest.mark.parametrize("base", ["/v1", "/v1/collections/default", "/v1/collections/other"])
def test_items_and_search_behave_the_same_on_every_path(client: TestClient, base: str) -> None:
    create(client, "other")
    ids = [f"i{n}" for n in range(12)]
    codes = random_codes(12, 16, seed=11)
    put_codes(client, base, ids, codes, [{"n": n} for n in range(12)])

    got = client.get(f"{base}/items/i3").json()
    assert got == {"id": "i3", "code": bits.to_wire(codes[3], "hex"), "metadata": {"n": 3}}
    hits = search(client, base, codes[0], k=12).json()["results"][0]
    assert pairs(hits) == oracle_hits(codes[0], ids, codes)
    by_id = client.post(f"{base}/search", json={"queries": [{"id": "i5"}], "k": 12}).json()["results"][0]
    assert pairs(by_id) == oracle_hits(codes[5], ids, codes)
    within = search(client, base, codes[1], k=100, radius=6).json()["results"][0]
    assert pairs(within) == [(d, i) for d, i in oracle_hits(codes[1], ids, codes) if d <= 6]
    assert client.delete(f"{base}/items/i3").json() == {"deleted": "i3"}
    assert error_of(client.get(f"{base}/items/i3")) == (404, "item_not_found")

    counts = {c["name"]: c["count"] for c in client.get("/v1/collections").json()["collections"]}
    in_default = base != "/v1/collections/other"  # /v1 and /v1/collections/default are one collection
    assert counts == {"default": 11 if in_default else 0, "other": 0 if in_default else 11}
    assert client.get("/info").json()["count"] == counts["default"]


def test_named_collection_encodes_with_its_own_model(client: TestClient, text_model: str, text_model_dir: Path) -> None:
    create(client, "news", model=text_model)
    texts = synthetic_texts(n_per_topic=2, seed=3)
    ids = [f"d{i}" for i in range(len(texts))]
    resp = client.post(
        "/v1/collections/news/items", json={"items": [{"id": i, "input": t} for i, t in zip(ids, texts, strict=True)]}
    )
    assert resp.status_code == 200, resp.text
    encoded = checkpoint.load(text_model_dir, "cpu").encode(texts).codes
    hits = client.post("/v1/collections/news/search", json={"queries": [{"input": texts[0]}], "k": 50}).json()
    assert pairs(hits["results"][0]) == oracle_hits(encoded[0], ids, encoded)
    # the default collection's model is the dense one: text is refused there
    resp = client.post("/v1/items", json={"items": [{"id": "x", "input": texts[0]}]})
    assert error_of(resp) == (422, "input_type")


# ---- search filters -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["flat", "ivf", "hnsw"])
def test_filter_returns_exactly_the_matching_items(client: TestClient, kind: str) -> None:
    create(client, "c", index_kind=kind)
    n = 30
    ids = [f"i{k:02d}" for k in range(n)]
    codes = random_codes(n, 16, seed=12)
    red = {"i04", "i17", "i25"}
    metadata = [{"tag": "red" if i in red else "blue", "n": k, "flag": k % 2 == 1} for k, i in enumerate(ids)]
    put_codes(client, "/v1/collections/c", ids, codes, metadata)
    query = codes[0]

    hits = search(client, "/v1/collections/c", query, k=5, filter={"tag": "red"}).json()["results"][0]
    assert {h["id"] for h in hits} == red  # k=5 but only 3 match: exactly those 3
    assert pairs(hits) == oracle_hits(query, sorted(red), codes[[ids.index(i) for i in sorted(red)]])
    assert all(h["metadata"]["tag"] == "red" for h in hits)

    blue = search(client, "/v1/collections/c", query, k=5, filter={"tag": "blue"}).json()["results"][0]
    blue_ids = [i for i in ids if i not in red]
    blue_oracle = oracle_hits(query, blue_ids, codes[[ids.index(i) for i in blue_ids]])
    assert len(blue) == 5 and all(h["id"] not in red for h in blue)
    assert [d for d, _ in pairs(blue)] == [d for d, _ in blue_oracle[:5]]  # which id fills a tie may vary
    assert set(pairs(blue)) <= set(blue_oracle)

    both = search(client, "/v1/collections/c", query, k=10, filter={"tag": "blue", "n": 7}).json()["results"][0]
    assert [h["id"] for h in both] == ["i07"]
    assert search(client, "/v1/collections/c", query, k=10, filter={"n": 7.5}).json()["results"] == [[]]
    assert search(client, "/v1/collections/c", query, k=10, filter={"missing": None}).json()["results"] == [[]]
    flags = search(client, "/v1/collections/c", query, k=30, filter={"flag": True}).json()["results"][0]
    assert {h["id"] for h in flags} == {i for k, i in enumerate(ids) if k % 2 == 1}
    ones = search(client, "/v1/collections/c", query, k=30, filter={"n": 1}).json()["results"][0]
    assert [h["id"] for h in ones] == ["i01"]  # 1 matches n=1, not flag=true


def test_filter_with_radius_and_on_the_default_routes(client: TestClient) -> None:
    ids = [f"i{k}" for k in range(20)]
    codes = random_codes(20, 16, seed=13)
    put_codes(client, "/v1", ids, codes, [{"even": k % 2 == 0} for k in range(20)])
    query, radius = codes[2], 7
    hits = search(client, "/v1", query, k=100, radius=radius, filter={"even": True}).json()["results"][0]
    expected = [(d, i) for d, i in oracle_hits(query, ids, codes) if d <= radius and int(i[1:]) % 2 == 0]
    assert pairs(hits) == expected and expected


@pytest.mark.parametrize(
    ("search_filter", "error_type"),
    [({"tag": ["red"]}, "validation_error"), ({"tag": {"a": 1}}, "validation_error"), ({"": 1}, "validation_error")],
)
def test_bad_filters_are_422(client: TestClient, search_filter: Any, error_type: str) -> None:
    resp = client.post("/v1/search", json={"queries": [{"code": "0000"}], "filter": search_filter})
    assert error_of(resp) == (422, error_type)


# ---- per-kind index parameters ------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", sorted(KIND_PARAMS))
def test_index_parameters_per_kind(client: TestClient, kind: str) -> None:
    create(client, "c", index_kind=kind)
    base = "/v1/collections/c"
    ids = [f"i{k}" for k in range(16)]
    codes = random_codes(16, 16, seed=14)
    put_codes(client, base, ids, codes, [{}] * 16)
    for param, value in (("nprobe", 4), ("ef_search", 32)):
        resp = search(client, base, codes[0], k=16, **{param: value})
        if param in KIND_PARAMS[kind]:
            assert resp.status_code == 200, resp.text
            assert pairs(resp.json()["results"][0]) == oracle_hits(codes[0], ids, codes)  # small: still exact
        else:
            assert error_of(resp) == (409, "unsupported_search_param")
            assert kind in resp.json()["error"] and param in resp.json()["error"]
    for param in ("nprobe", "ef_search"):
        assert error_of(search(client, base, codes[0], **{param: 0})) == (422, "validation_error")
    radius = search(client, base, codes[0], k=16, radius=16)
    if kind == "hnsw":
        assert error_of(radius) == (409, "unsupported_search_param")
    elif kind in ("flat", "ivf"):  # exact radius search
        assert pairs(radius.json()["results"][0]) == oracle_hits(codes[0], ids, codes)
    else:
        assert radius.status_code == 200


def test_nprobe_reaches_the_ivf_index(client: TestClient) -> None:
    # trained once it holds nlist * train_size_per_list codes; one list of four probed by default
    create(client, "c", index_kind="ivf", index_params={"nlist": 4, "nprobe": 1, "train_size_per_list": 10})
    base = "/v1/collections/c"
    n = 60
    ids = [f"i{k:02d}" for k in range(n)]
    codes = random_codes(n, 16, seed=15)
    put_codes(client, base, ids, codes, [{}] * n)
    narrow = search(client, base, codes[0], k=n).json()["results"][0]
    wide = search(client, base, codes[0], k=n, nprobe=4).json()["results"][0]
    assert len(narrow) < n  # only the items in the one list probed
    assert pairs(wide) == oracle_hits(codes[0], ids, codes)  # every list probed: exact


# ---- the fingerprint guard ----------------------------------------------------------------------------------


def test_upsert_with_a_fingerprint(
    client: TestClient, dense_model_dir: Path, text_model: str, text_model_dir: Path
) -> None:
    create(client, "news", model=text_model)
    item = {"id": "a", "code": "0f0f"}
    dense_fp, text_fp = fingerprint(dense_model_dir), fingerprint(text_model_dir)
    assert client.post("/v1/items", json={"items": [item], "fingerprint": dense_fp}).status_code == 200
    resp = client.post("/v1/items", json={"items": [{"id": "b", "code": "0f0f"}], "fingerprint": text_fp})
    assert error_of(resp) == (409, "fingerprint_mismatch")
    assert error_of(client.post("/v1/collections/news/items", json={"items": [item], "fingerprint": dense_fp})) == (
        409,
        "fingerprint_mismatch",
    )
    assert client.post("/v1/collections/news/items", json={"items": [item], "fingerprint": text_fp}).status_code == 200
    assert error_of(client.get("/v1/items/b")) == (404, "item_not_found")  # nothing written
    counts = {c["name"]: c["count"] for c in client.get("/v1/collections").json()["collections"]}
    assert counts == {"default": 1, "news": 1}


def test_collection_of_another_model_is_refused_at_request_time(
    make_client: MakeClient, dense_model_dir: Path, text_model: str, tmp_path: Path
) -> None:
    root = tmp_path / "named"
    Collection.create(root / "stale", 16, "an-old-fingerprint", model=text_model).close()
    Collection.create(root / "orphan", 16, "whatever", model="gone").close()
    Collection.create(root / "fine", 16, fingerprint(dense_model_dir), model="default").close()
    client = make_client(dense_model_dir, collections_dir=root)

    assert error_of(client.get("/v1/collections/stale")) == (409, "fingerprint_mismatch")
    assert error_of(client.post("/v1/collections/stale/search", json={"queries": [{"code": "0000"}]})) == (
        409,
        "fingerprint_mismatch",
    )
    assert error_of(client.get("/v1/collections/orphan/items/x")) == (404, "model_not_found")
    listed = client.get("/v1/collections").json()
    assert [c["name"] for c in listed["collections"]] == ["default", "fine"]
    assert {u["name"]: u["error_type"] for u in listed["unavailable"]} == {
        "orphan": "model_not_found",
        "stale": "fingerprint_mismatch",
    }
    assert client.delete("/v1/collections/stale").json() == {"dropped": "stale"}  # a refused one can be dropped


# ---- readiness ----------------------------------------------------------------------------------------------

NEEDS_LOADING = [
    ("GET", "/readyz", None),
    ("GET", "/health", None),
    ("GET", "/info", None),
    ("POST", "/v1/encode", {"inputs": [[0.5] * 12]}),
    ("POST", "/v1/items", {"items": [{"id": "a", "code": "0000"}]}),
    ("GET", "/v1/items/a", None),
    ("POST", "/v1/search", {"queries": [{"code": "0000"}]}),
    ("GET", "/v1/collections", None),
    ("POST", "/v1/collections", {"name": "early"}),
    ("GET", "/v1/collections/default/items/a", None),
]


@pytest.mark.parametrize("stage", ["model", "collection"])
def test_readyz_is_503_until_loaded(
    make_client: MakeClient, dense_model_dir: Path, monkeypatch: pytest.MonkeyPatch, stage: str
) -> None:
    gate, entered = threading.Event(), threading.Event()
    target, attr = (checkpoint, "load") if stage == "model" else (Collection, "open_or_create")
    real = getattr(target, attr)

    def slow(*args: Any, **kwargs: Any) -> Any:
        entered.set()
        assert gate.wait(30)
        return real(*args, **kwargs)

    monkeypatch.setattr(target, attr, slow)
    client = make_client(dense_model_dir, wait_ready=False)
    try:
        assert entered.wait(30)  # loading has begun and is blocked
        assert client.get("/livez").json() == {"status": "ok"}
        for method, path, body in NEEDS_LOADING:
            resp = client.request(method, path, json=body)
            assert error_of(resp) == (503, "not_ready"), (method, path)
            assert resp.headers["retry-after"] == "1"
    finally:
        gate.set()
    wait_ready(client.app, timeout=30)
    assert client.get("/readyz").json() == {"status": "ok"}
    assert client.get("/health").json() == {"status": "ok"}
    assert client.post("/v1/items", json={"items": [{"id": "a", "code": "0000"}]}).status_code == 200
    assert client.get("/v1/collections/default").json()["count"] == 1


def test_failed_load_keeps_readyz_503_with_the_cause(
    make_client: MakeClient, dense_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(path: Path, *args: Any, **kwargs: Any) -> Collection:
        raise CorruptCollectionError(path, "simulated damage")

    monkeypatch.setattr(Collection, "open_or_create", broken)
    client = make_client(dense_model_dir, wait_ready=False)
    with pytest.raises(CorruptCollectionError):
        wait_ready(client.app, timeout=30)
    assert client.get("/livez").status_code == 200
    resp = client.get("/readyz")
    assert error_of(resp) == (503, "load_failed") and "simulated damage" in resp.json()["error"]
    assert error_of(client.post("/v1/search", json={"queries": [{"code": "0000"}]})) == (503, "load_failed")


# ---- shutdown and restart -----------------------------------------------------------------------------------


def test_shutdown_closes_every_collection_and_restart_reopens_them(
    make_client: MakeClient, dense_model_dir: Path, tmp_path: Path
) -> None:
    root, default_path = tmp_path / "named", tmp_path / "default"
    first = make_client(dense_model_dir, collections_dir=root, collection_path=default_path)
    create(first, "a")
    create(first, "b", index_kind="hnsw")
    codes = random_codes(5, 16, seed=16)
    put_codes(first, "/v1/collections/a", list("vwxyz"), codes, [{"k": k} for k in range(5)])
    put_codes(first, "/v1", ["d"], codes[:1], [{}])
    first.__exit__(None, None, None)

    for path, count in ((root / "a", 5), (root / "b", 0), (default_path, 1)):
        with Collection.open(path) as closed:  # not locked any more: the app closed it
            assert len(closed) == count
            snapshot = json.loads((path / "manifest.json").read_text())["snapshot"]
            assert snapshot["seq"] == closed.seq  # snapshot taken on close: nothing left to replay

    second = make_client(dense_model_dir, collections_dir=root, collection_path=default_path)
    listed = {c["name"]: (c["count"], c["index_kind"]) for c in second.get("/v1/collections").json()["collections"]}
    assert listed == {"default": (1, "flat"), "a": (5, "flat"), "b": (0, "hnsw")}
    hits = search(second, "/v1/collections/a", codes[2], k=5).json()["results"][0]
    assert pairs(hits) == oracle_hits(codes[2], list("vwxyz"), codes)


def test_openapi_documents_the_collection_routes(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    for path in (
        "/v1/collections",
        "/v1/collections/{name}",
        "/v1/collections/{name}/items",
        "/v1/collections/{name}/items/{item_id}",
        "/v1/collections/{name}/search",
        "/v1/items",
        "/v1/search",
        "/livez",
        "/readyz",
    ):
        assert path in paths, path
    params = paths["/v1/collections/{name}/search"]["post"]["parameters"]
    assert [(p["name"], p["in"]) for p in params] == [("name", "path")]
    assert "parameters" not in paths["/v1/search"]["post"]
