"""Nested codes (issue 20, docs/nested.md): prefix search (``bits``) against a brute-force popcount of the prefix,
with filters and radius, on every index kind; the ``nested`` index kind against brute force when its candidates
cover the collection, across a reopen; and both through the HTTP API, bad values answered with typed 4xx.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from hamdex.index import Collection, InvalidQueryError
from hamdex.index.errors import InvalidIndexParamsError
from hamdex.index.kinds import KINDS, make_hamming_index
from hamdex.models import bits as packing
from hamdex.service.errors import STATUS

from tests.conftest import MakeClient
from tests.helpers import oracle_hits, pairs, random_codes

N, N_BITS, K = 200, 32, 7
IDS = [f"item-{i:03d}" for i in range(N)]  # sorted as inserted: internal and external id order agree
META = [{"group": i % 3} for i in range(N)]


def expected(query: np.ndarray, codes: np.ndarray, bits: int, k: int | None, where=None, radius=None) -> list:
    """Brute force on the first ``bits`` bits: (distance, id) sorted, filtered, within the radius, first k."""
    nb = bits // 8
    keep = [i for i, m in enumerate(META) if where is None or m == where]
    hits = oracle_hits(query[:nb], [IDS[i] for i in keep], codes[keep, :nb])
    hits = [h for h in hits if radius is None or h[0] <= radius]
    return hits if k is None else hits[:k]


def got(hits: list) -> list[tuple[int, str]]:
    return [(h.distance, h.id) for h in hits]


@pytest.fixture
def codes() -> np.ndarray:
    return random_codes(N, N_BITS, seed=1)  # (N, 4), duplicates included: ties occur


def filled(path: Path, codes: np.ndarray, kind: str, params: dict[str, int] | None = None) -> Collection:
    coll = Collection.create(path, N_BITS, "fp", kind, params)
    coll.upsert(IDS, codes, META)
    return coll


# ---- prefix search (bits) -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", sorted(KINDS))
@pytest.mark.parametrize("bits", [8, 16, 24])
@pytest.mark.parametrize("where", [None, {"group": 1}])
@pytest.mark.parametrize("radius", [None, 3])
def test_prefix_search_is_brute_force_on_the_prefix(tmp_path, codes, kind, bits, where, radius) -> None:
    queries = random_codes(5, N_BITS, seed=2)
    queries[0] = codes[3]  # an exact match of a stored item
    with filled(tmp_path / "c", codes, kind) as coll:
        if radius is None:
            found = coll.search(queries, K, bits=bits, where=where)
        else:
            found = coll.range_search(queries, radius, k=K, bits=bits, where=where)
        for query, hits in zip(queries, found, strict=True):
            assert got(hits) == expected(query, codes, bits, K, where, radius)


@pytest.mark.parametrize("kind", ["flat", "hnsw", "nested"])
def test_prefix_radius_without_k_and_after_deletes(tmp_path, codes, kind) -> None:
    """Every item within the prefix radius; deleted items (tombstones on hnsw) never come back."""
    with filled(tmp_path / "c", codes, kind) as coll:
        coll.delete(IDS[:20])
        query = codes[25]
        found = coll.range_search(query[None, :], 1, bits=8)[0]
        want = [h for h in expected(query, codes, 8, None, radius=1) if h[1] not in IDS[:20]]
        assert got(found) == want and want


def test_full_width_bits_is_an_ordinary_search(tmp_path, codes) -> None:
    with filled(tmp_path / "c", codes, "flat") as coll:
        queries = random_codes(3, N_BITS, seed=3)
        assert coll.search(queries, K, bits=N_BITS) == coll.search(queries, K)


@pytest.mark.parametrize("bits", [0, 4, 12, 40, -8, 8.5, True, "8"])
def test_bad_bits_are_typed_errors(tmp_path, codes, bits) -> None:
    with filled(tmp_path / "c", codes, "flat") as coll, pytest.raises(InvalidQueryError, match="bits"):
        coll.search(codes[:1], K, bits=bits)


def test_prefix_search_refuses_what_it_cannot_combine(tmp_path, codes) -> None:
    with filled(tmp_path / "c", codes, "ivf") as coll:
        with pytest.raises(InvalidQueryError, match="rerank"):
            coll.search(codes[:1], K, bits=8, rerank=10)
        with pytest.raises(InvalidQueryError, match="query parameters"):
            coll.search(codes[:1], K, bits=8, params={"nprobe": 4})


# ---- the nested kind ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("prefix_bits", [8, 16, 24, 32, 64])  # 32 and 64: cut to half the code
def test_nested_kind_is_exact_when_candidates_cover_all(tmp_path, codes, prefix_bits) -> None:
    queries = random_codes(6, N_BITS, seed=4)
    params = {"prefix_bits": prefix_bits, "candidates": N}
    path = tmp_path / "c"
    with filled(path, codes, "nested", params) as coll:
        for query, hits in zip(queries, coll.search(queries, K), strict=True):
            assert got(hits) == expected(query, codes, N_BITS, K)
        small = coll.search(queries, K, params={"candidates": 1})  # fewer candidates than k: still k hits
        assert all(len(hits) == K for hits in small)
        coll.delete(IDS[:50])
    with Collection.open(path) as coll:  # reopened from its snapshot
        assert coll.manifest.index_kind == "nested" and coll.manifest.index_params == params
        live = [i for i in range(N) if i >= 50]
        for query, hits in zip(queries, coll.search(queries, K, params={"candidates": N}), strict=True):
            want = oracle_hits(query, [IDS[i] for i in live], codes[live])[:K]
            assert got(hits) == want
        for query, hits in zip(queries, coll.range_search(queries, 12), strict=True):  # exact, as flat
            assert got(hits) == [h for h in oracle_hits(query, [IDS[i] for i in live], codes[live]) if h[0] <= 12]


def test_nested_kind_finds_groups_nearest_first() -> None:
    """With few candidates, the hits come from the prefixes nearest the query's: the items sharing its prefix."""
    index = make_hamming_index("nested", 16, {"prefix_bits": 8, "candidates": 2})
    codes = np.array([[0b0000_0000, 0xFF], [0b0000_0001, 0x00], [0b1111_1111, 0x00], [0b0000_0000, 0x0F]], np.uint8)
    index.add(codes, np.arange(4, dtype=np.int64))
    distances, labels = index.search(np.array([[0, 0]], np.uint8), 2, {})
    assert labels.tolist() == [[3, 0]] and distances.tolist() == [[4, 8]]  # group 0x00 only, by full distance
    distances, labels = index.search(np.array([[0, 0]], np.uint8), 2, {"candidates": 3})
    assert labels.tolist() == [[1, 3]] and distances.tolist() == [[1, 4]]  # then group 0x01


@pytest.mark.parametrize(("n_bits", "given", "used"), [(64, None, 32), (256, None, 32), (32, None, 16), (16, 16, 8)])
def test_nested_prefix_bits_default_and_cut(n_bits: int, given: int | None, used: int) -> None:
    """32 (one ensemble member) by default; at or past the code length, half the code."""
    params = {} if given is None else {"prefix_bits": given}
    assert make_hamming_index("nested", n_bits, params).prefix_bits == used


@pytest.mark.parametrize(
    ("n_bits", "params"),
    [(32, {"prefix_bits": 12}), (32, {"prefix_bits": 0}), (32, {"candidates": 0}), (32, {"nprobe": 2})],
)
def test_nested_kind_refuses_bad_params(tmp_path, n_bits, params) -> None:
    with pytest.raises(InvalidIndexParamsError):
        Collection.create(tmp_path / "c", n_bits, "fp", "nested", params)


# ---- through the HTTP API ------------------------------------------------------------------------------------
# the dense test model has 16-bit codes


@pytest.fixture
def client(make_client: MakeClient, dense_model_dir: Path) -> TestClient:
    return make_client(dense_model_dir)


def post_search(client: TestClient, base: str, queries: np.ndarray, **options: Any):
    body = {"queries": [{"code": packing.to_wire(q, "hex")} for q in queries], **options}
    return client.post(f"{base}/search", json=body)


def fill(client: TestClient, base: str, codes: np.ndarray) -> None:
    rows = zip(IDS, codes, META, strict=True)
    items = [{"id": i, "code": packing.to_wire(c, "hex"), "metadata": m} for i, c, m in rows]
    assert client.post(f"{base}/items", json={"items": items}).status_code == 200


def error_type(resp, status: int) -> str:
    assert resp.status_code == status, resp.text
    assert STATUS[resp.json()["error_type"]] == status
    return resp.json()["error_type"]


def test_http_prefix_search(client: TestClient) -> None:
    codes = random_codes(N, 16, seed=5)
    fill(client, "/v1", codes)
    queries = random_codes(3, 16, seed=6)
    for options in ({}, {"filter": {"group": 2}}, {"radius": 2}, {"include_metadata": False}):
        where = options.get("filter")
        resp = post_search(client, "/v1", queries, k=K, bits=8, **options)
        assert resp.status_code == 200, resp.text
        for query, hits in zip(queries, resp.json()["results"], strict=True):
            assert pairs(hits) == expected(query, codes, 8, K, where, options.get("radius"))
            with_metadata = options.get("include_metadata", True)
            assert all((h.get("metadata") is not None) == with_metadata for h in hits)
    full = post_search(client, "/v1", queries, k=K, bits=16).json()
    assert full == post_search(client, "/v1", queries, k=K).json()


@pytest.mark.parametrize(
    ("options", "status", "kind"),
    [
        ({"bits": 12}, 422, "invalid_query"),
        ({"bits": 0}, 422, "invalid_query"),
        ({"bits": 24}, 422, "invalid_query"),  # wider than the collection's 16-bit codes
        ({"bits": -8}, 422, "invalid_query"),
        ({"bits": "8"}, 422, "validation_error"),
        ({"bits": 8, "rerank": {"candidates": 20}}, 422, "validation_error"),
        ({"bits": 8, "nprobe": 2}, 409, "unsupported_search_param"),
    ],
)
def test_http_bad_bits(client: TestClient, options: dict, status: int, kind: str) -> None:
    fill(client, "/v1", random_codes(N, 16, seed=5))
    assert error_type(post_search(client, "/v1", random_codes(1, 16), **options), status) == kind


def test_http_nested_collection(client: TestClient) -> None:
    resp = client.post(
        "/v1/collections", json={"name": "nest", "index_kind": "nested", "index_params": {"prefix_bits": 8}}
    )
    assert resp.status_code == 201, resp.text
    assert resp.json()["index_params"] == {"prefix_bits": 8, "candidates": KINDS["nested"].defaults["candidates"]}
    base = "/v1/collections/nest"
    codes = random_codes(N, 16, seed=7)
    fill(client, base, codes)
    queries = random_codes(4, 16, seed=8)
    resp = post_search(client, base, queries, k=K, candidates=N)
    assert resp.status_code == 200, resp.text
    for query, hits in zip(queries, resp.json()["results"], strict=True):
        assert pairs(hits) == oracle_hits(query, IDS, codes)[:K]
    assert post_search(client, base, queries, k=K, candidates=3).status_code == 200
    assert error_type(post_search(client, base, queries, candidates=0), 422) == "validation_error"
    assert error_type(post_search(client, base, queries, ef_search=8), 409) == "unsupported_search_param"
    assert error_type(post_search(client, "/v1", queries, candidates=8), 409) == "unsupported_search_param"  # flat


@pytest.mark.parametrize(
    "params", [{"prefix_bits": 12}, {"prefix_bits": 264}, {"candidates": 0}, {"candidates": 1 << 20}, {"m": 4}]
)
def test_http_nested_collection_bad_params(client: TestClient, params: dict) -> None:
    body = {"name": "bad", "index_kind": "nested", "index_params": params}
    assert error_type(client.post("/v1/collections", json=body), 422) == "invalid_index_params"


# ---- the benchmark (benchmarks/store.py --nested) ---------------------------------------------------------------


def test_nested_benchmark_smoke(tmp_path: Path) -> None:
    from benchmarks import store

    if not (Path(store.NestedConfig.data) / "t10k-images-idx3-ubyte.gz").exists():
        pytest.skip("Fashion-MNIST is not installed (Debian package dataset-fashion-mnist)")
    argv = ["--nested", "--items", "20000", "--queries", "50", "--prefix-bits", "16", "--candidates", "64,20000"]
    results = store.main([*argv, "--reps", "1", "--json", str(tmp_path / "n.json"), "--no-progress"])
    exact = results["nested"][-1]  # candidates >= items: the nested kind is exact
    assert exact["recall@10"] == 1.0 and results["flat"]["recall@10"] == 1.0
    assert all(row["qps"] > 0 and row["flat_qps"] > 0 for row in results["nested"])
    assert "| nested | 16 |" in store.format_nested(results)
