"""Two-stage ranking (issue 21 part 3): stored vectors are as durable as the codes (reopen, a killed writer, a
write that fails before its commit), deletes remove them; a rerank by stored vectors is the brute-force cosine
order of the Hamming candidates, one by per-bit scores the brute-force asymmetric order; the service's rerank
body, its limits and refusals."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from hamdex.index import Collection, InvalidItemsError, InvalidQueryError, ScoredHit, backup
from hamdex.index.deadline import Deadline
from hamdex.index.errors import SearchTimeoutError
from hamdex.index.vectors import VECTORS_FILE, VectorFile
from hamdex.models import checkpoint
from hamdex.models.bits import unpack
from hamdex.models.data.block import Block
from hamdex.models.rerank import query_scores, rerank_vectors
from hamdex.service.bulk.job import index_blocks

from benchmarks.servers import CLI, Server, free_port, serve_args, service_env
from tests.conftest import MakeClient, dense_vectors
from tests.helpers import assert_error, popcount_distances, random_codes

FP = "model-a"
DTYPES = ["float16", "int8"]


def stored(dtype: str, v: np.ndarray) -> np.ndarray:
    """What a collection gives back for ``v``: float16 rounding, or int8 with a per-row scale."""
    vf = VectorFile.__new__(VectorFile)
    vf.dtype = dtype
    return vf.decode(vf.encode(np.asarray(v, np.float32)))


def cosine(q: np.ndarray, v: np.ndarray) -> np.ndarray:
    q, v = np.asarray(q, np.float64), np.asarray(v, np.float64)
    return (v @ q) / (np.linalg.norm(v, axis=1) * np.linalg.norm(q))


def filled(path: Path, dtype: str, n: int = 60, d: int = 8, n_bits: int = 16, seed: int = 0):
    """A collection of n items with random codes, vectors and metadata {"even": bool}; (collection, ids, codes,
    vectors)."""
    rng = np.random.default_rng(seed)
    ids = [f"i{i:03d}" for i in range(n)]
    codes, vectors = random_codes(n, n_bits, seed), rng.standard_normal((n, d)).astype(np.float32)
    coll = Collection.create(path, n_bits, FP, vectors=dtype)
    coll.upsert(ids, codes, [{"even": i % 2 == 0} for i in range(n)], vectors=vectors)
    return coll, ids, codes, vectors


# ---- stored vectors: durable, consistent -------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
def test_vectors_round_trip_through_reopen(dtype: str, tmp_path: Path) -> None:
    coll, ids, codes, vectors = filled(tmp_path / "c", dtype)
    coll.upsert(["bare"], codes[:1])  # no vector
    before = coll.vectors([*ids, "bare", "unknown"])
    np.testing.assert_allclose(before[: len(ids)], stored(dtype, vectors), rtol=0, atol=0)
    assert not before[len(ids) :].any()
    assert coll.manifest.vectors == dtype and coll.manifest.vector_dim == 8
    coll.close()
    with Collection.open(tmp_path / "c") as again:
        assert again.manifest.vector_dim == 8 and again.vector_dtype == dtype
        np.testing.assert_array_equal(again.vectors([*ids, "bare", "unknown"]), before)
    assert (tmp_path / "c" / VECTORS_FILE).stat().st_size >= len(ids) * (16 if dtype == "float16" else 12)


def test_a_collection_without_vectors_refuses_them(tmp_path: Path) -> None:
    with Collection.create(tmp_path / "c", 16, FP) as coll:
        with pytest.raises(InvalidItemsError):
            coll.upsert(["a"], random_codes(1, 16), vectors=np.ones((1, 4), np.float32))
        with pytest.raises(InvalidQueryError):
            coll.vectors(["a"])
        assert not (tmp_path / "c" / VECTORS_FILE).exists()


@pytest.mark.parametrize(
    "bad",
    [
        np.ones((2, 4)),
        np.ones((1, 5)),
        np.full((1, 4), np.nan),
        np.ones(4),
        [[1.0, 2.0, 3.0, 4.0]],
        np.ones((1, 4), "c8"),
    ],
)
def test_bad_vectors_are_refused_before_any_change(bad, tmp_path: Path) -> None:
    with Collection.create(tmp_path / "c", 16, FP, vectors="float16") as coll:
        coll.upsert(["a"], random_codes(1, 16), vectors=np.ones((1, 4), np.float32))  # fixes d = 4
        with pytest.raises(InvalidItemsError):
            coll.upsert(["b"], random_codes(1, 16, seed=1), vectors=bad)
        assert coll.ids() == ["a"]


@pytest.mark.parametrize("dtype", DTYPES)
def test_deletes_and_replacements_remove_the_old_vectors(dtype: str, tmp_path: Path) -> None:
    coll, ids, codes, vectors = filled(tmp_path / "c", dtype, n=10)
    row_bytes = 16 if dtype == "float16" else 12
    coll.delete(["i000"])
    coll.upsert(["i001"], codes[1:2], vectors=-vectors[1:2])  # replaced: a new row, the old one zeroed
    assert coll.delete_where({"even": True}) == (4, True)  # i002, i004, i006, i008
    raw = (tmp_path / "c" / VECTORS_FILE).read_bytes()
    for internal in (0, 1, 2, 4, 6, 8):  # internal id = row: the first upsert wrote rows 0..9 in order
        assert raw[internal * row_bytes : (internal + 1) * row_bytes] == bytes(row_bytes)
    np.testing.assert_array_equal(coll.vectors(["i001"]), stored(dtype, -vectors[1:2]))
    assert not coll.vectors(["i000", "i002"]).any()
    coll.close()
    with Collection.open(tmp_path / "c") as again:
        assert not again.vectors(["i000", "i002"]).any()
        np.testing.assert_array_equal(again.vectors(["i001", "i003"]), stored(dtype, [-vectors[1], vectors[3]]))


def test_a_write_failing_before_its_commit_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    coll, ids, codes, vectors = filled(tmp_path / "c", "float16", n=4)
    real = VectorFile.write

    def write_then_fail(self, internal, rows, dim):
        real(self, internal, rows, dim)  # the rows are on disk, the transaction not committed
        raise OSError("disk full")

    monkeypatch.setattr(VectorFile, "write", write_then_fail)
    with pytest.raises(OSError):
        coll.upsert(["new"], codes[:1], vectors=np.full((1, 8), 7.0, np.float32))
    monkeypatch.setattr(VectorFile, "write", real)
    assert "new" not in coll and len(coll) == 4
    coll.upsert(["other"], codes[:1])  # reuses the rows: written as "no vector", not the failed write's
    assert not coll.vectors(["other"]).any()
    coll.close()
    with Collection.open(tmp_path / "c") as again:
        assert "new" not in again and not again.vectors(["other"]).any()
        np.testing.assert_array_equal(again.vectors(ids), stored("float16", vectors))


def test_a_backup_carries_the_vectors(tmp_path: Path) -> None:
    coll, ids, codes, vectors = filled(tmp_path / "c", "int8", n=20)
    coll.delete(["i005"])
    record = backup.create(coll, tmp_path / "backups")
    coll.close()
    backup.restore(tmp_path / "backups" / record["name"], tmp_path / "restored")
    with Collection.open(tmp_path / "restored") as again:
        assert "i005" not in again and again.vector_dim == 8
        rest = [i for i in ids if i != "i005"]
        np.testing.assert_array_equal(again.vectors(rest), stored("int8", vectors[[int(i[1:]) for i in rest]]))


_WRITER = textwrap.dedent(
    """
    import sys
    import numpy as np
    from hamdex.index import Collection

    path, dtype = sys.argv[1], sys.argv[2]
    coll = Collection.create(path, 16, "model-a", vectors=dtype, snapshot_every=7)
    for i in range(100000):
        rng = np.random.default_rng(i)
        ids = [f"b{i}-{j}" for j in range(3)]
        coll.upsert(ids, rng.integers(0, 256, (3, 2), dtype=np.uint8), vectors=rng.standard_normal((3, 5)))
        if i % 3 == 2:
            coll.delete([f"b{i - 1}-0"])
        print(i, flush=True)  # acknowledged: the upsert (and delete) returned
    """
)


def written(i: int) -> np.ndarray:
    """The vectors the writer's batch i upserted (its generator draws the codes first)."""
    rng = np.random.default_rng(i)
    rng.integers(0, 256, (3, 2), dtype=np.uint8)
    return rng.standard_normal((3, 5))


@pytest.mark.parametrize("dtype", DTYPES)
def test_acknowledged_vectors_survive_a_killed_writer(dtype: str, tmp_path: Path) -> None:
    """A real process writing (and snapshotting every 7 changes) killed with SIGKILL: every acknowledged batch's
    vectors come back exactly, deleted ones are gone, the batch in flight is wholly there or wholly absent."""
    path = tmp_path / "c"
    proc = subprocess.Popen(
        [sys.executable, "-c", _WRITER, str(path), dtype], stdout=subprocess.PIPE, text=True, start_new_session=True
    )
    acked, start = -1, time.monotonic()
    while acked < 40 and time.monotonic() - start < 120:
        line = proc.stdout.readline()
        if not line:
            break
        acked = int(line)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert acked >= 40, "the writer did not get far enough"
    with Collection.open(path) as coll:
        for i in range(acked + 1):
            expected = written(i)
            ids = [f"b{i}-{j}" for j in range(3)]
            deleted = i % 3 == 1 and i + 1 <= acked
            got = coll.vectors(ids)
            np.testing.assert_array_equal(got[1:], stored(dtype, expected[1:]))
            if i % 3 == 1 and i == acked and f"b{i}-0" not in coll:  # deleted by the batch in flight
                deleted = True
            if deleted:
                assert f"b{i}-0" not in coll and not got[0].any()
            else:
                np.testing.assert_array_equal(got[0], stored(dtype, expected[:1])[0])
        in_flight = [f"b{acked + 1}-{j}" for j in range(3)]
        assert sum(i in coll for i in in_flight) in (0, 3)
        if in_flight[0] in coll:
            expected = written(acked + 1)
            np.testing.assert_array_equal(coll.vectors(in_flight), stored(dtype, expected))


# ---- rerank in the collection ---------------------------------------------------------------------------------


def brute_cosine(coll, ids, codes, query_code, query_vector, n_cand, where=None, radius=None):
    """The exact answer: Hamming candidates by (distance, id), the first n_cand, by (-cosine, distance, id)."""
    d = popcount_distances(query_code, codes)
    keep = [
        i for i in range(len(ids)) if (where is None or (i % 2 == 0) == where) and (radius is None or d[i] <= radius)
    ]
    cand = sorted(keep, key=lambda i: (d[i], ids[i]))[:n_cand]
    s = cosine(query_vector, coll.vectors([ids[i] for i in cand]))
    return sorted(((-s[j], int(d[i]), ids[i]) for j, i in enumerate(cand)))


@pytest.mark.parametrize("dtype", DTYPES)
def test_rerank_by_stored_vectors_is_the_exact_cosine_order(dtype: str, tmp_path: Path) -> None:
    coll, ids, codes, vectors = filled(tmp_path / "c", dtype, n=80)
    rng = np.random.default_rng(5)
    queries, qv = random_codes(4, 16, seed=9), rng.standard_normal((4, 8)).astype(np.float32)
    found = coll.search(queries, 10, rerank=80, query_vectors=qv)  # every item a candidate: the set is exact
    for q, hits in enumerate(found):
        want = brute_cosine(coll, ids, codes, queries[q], qv[q], 80)[:10]
        assert [(h.distance, h.id) for h in hits] == [(d, i) for _, d, i in want]
        np.testing.assert_allclose([h.score for h in hits], [-s for s, _, _ in want], rtol=1e-9)
        assert all(isinstance(h, ScoredHit) and h.metadata == {"even": int(h.id[1:]) % 2 == 0} for h in hits)
    # fewer candidates: every hit is among the Hamming top 20 (its distance at most the 20th's)
    for q, hits in enumerate(coll.search(queries, 5, rerank=20, query_vectors=qv, include_metadata=False)):
        bound = np.sort(popcount_distances(queries[q], codes))[19]
        assert len(hits) == 5 and all(h.distance <= bound and h.metadata is None for h in hits)
        assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)


def test_rerank_keeps_filters_radius_and_k(tmp_path: Path) -> None:
    coll, ids, codes, vectors = filled(tmp_path / "c", "float16", n=80)
    q, qv = random_codes(1, 16, seed=3), np.random.default_rng(1).standard_normal((1, 8)).astype(np.float32)
    hits = coll.search(q, 7, where={"even": True}, rerank=80, query_vectors=qv)[0]
    want = brute_cosine(coll, ids, codes, q[0], qv[0], 80, where=True)[:7]
    assert [h.id for h in hits] == [i for _, _, i in want]
    hits = coll.range_search(q, 7, k=50, rerank=80, query_vectors=qv)[0]
    want = brute_cosine(coll, ids, codes, q[0], qv[0], 80, radius=7)[:50]
    assert [h.id for h in hits] == [i for _, _, i in want] and all(h.distance <= 7 for h in hits)
    with pytest.raises(InvalidQueryError):
        coll.range_search(q, 7, rerank=10, query_vectors=qv)  # a reranked radius search needs k
    with pytest.raises(InvalidQueryError):
        coll.search(q, 3, rerank=0, query_vectors=qv)
    with pytest.raises(InvalidQueryError):
        coll.search(q, 3, rerank=10, query_vectors=np.ones((1, 3), np.float32))  # not the collection's d
    # a query whose vector row is NaN keeps the Hamming order, score None
    hits = coll.search(q, 5, rerank=20, query_vectors=np.full((1, 8), np.nan, np.float32))[0]
    assert [(h.distance, h.id) for h in hits] == sorted((h.distance, h.id) for h in hits)
    assert all(h.score is None for h in hits)


def test_rerank_stops_at_the_deadline(tmp_path: Path) -> None:
    coll, ids, codes, vectors = filled(tmp_path / "c", "float16", n=20)
    expired = Deadline()
    expired.cancel()
    qv = np.ones((2, 8), np.float32)
    for where in (None, {"even": True}):
        with pytest.raises(SearchTimeoutError):
            coll.search(codes[:2], 3, rerank=10, query_vectors=qv, where=where, deadline=expired)
    with pytest.raises(SearchTimeoutError):
        coll.range_search(codes[:2], 8, k=3, rerank=10, query_vectors=qv, deadline=expired)
    coll.close()


def test_asymmetric_rescoring_orders_ties_by_the_query_scores(tmp_path: Path) -> None:
    n, n_bits = 120, 16
    ids, codes = [f"i{i:03d}" for i in range(n)], random_codes(n, n_bits, seed=4)
    scores = np.random.default_rng(2).standard_normal((3, n_bits)).astype(np.float32)
    queries = np.packbits(scores > 0, axis=1, bitorder="little")  # the bits the scores stand for
    with Collection.create(tmp_path / "c", n_bits, FP) as coll:
        coll.upsert(ids, codes)
        found = coll.search(queries, n, rerank=n, query_scores=scores)
        signs = unpack(codes).astype(np.float64) * 2 - 1  # (n, n_bits)
        for q, hits in enumerate(found):
            exact = signs @ scores[q].astype(np.float64)
            d = popcount_distances(queries[q], codes)
            want = sorted(range(n), key=lambda i: (-exact[i], d[i], ids[i]))
            assert [h.id for h in hits] == [ids[i] for i in want]
            np.testing.assert_allclose([h.score for h in hits], exact[want], rtol=1e-6)
            # inside each Hamming distance, the order is the score's, not the ids'
            for dist in set(d.tolist()):
                tied = [h for h in hits if h.distance == dist]
                assert [h.score for h in tied] == sorted((h.score for h in tied), reverse=True)
        # sign-only scores give Hamming order back: score = n_bits - 2 * distance
        plain = unpack(queries).astype(np.float32) * 2 - 1
        for hits in coll.search(queries, 10, rerank=n, query_scores=plain):
            assert [h.score for h in hits] == [n_bits - 2 * h.distance for h in hits]
        with pytest.raises(InvalidQueryError):
            coll.search(queries, 3, rerank=5, query_vectors=scores)  # no stored vectors here


def test_a_pool_orders_by_the_query_scores_then_rescores_the_first_n_by_cosine(tmp_path: Path) -> None:
    """rerank=N, pool=P: the P nearest by Hamming distance, cut to the N best by asymmetric score, those N by
    cosine with their stored vectors; only N vectors are read per query."""
    n, n_bits = 80, 16
    coll, ids, codes, vectors = filled(tmp_path / "c", "float16", n=n, n_bits=n_bits)
    rng = np.random.default_rng(6)
    scores = rng.standard_normal((3, n_bits)).astype(np.float32)
    queries = np.packbits(scores > 0, axis=1, bitorder="little")
    qv = rng.standard_normal((3, 8)).astype(np.float32)
    read = []
    original = coll._vectors.read
    coll._vectors.read = lambda internal: read.append(len(internal)) or original(internal)
    found = coll.search(queries, 5, rerank=12, pool=n, query_vectors=qv, query_scores=scores)
    assert read == [12, 12, 12]
    coll._vectors.read = original
    signs = unpack(codes).astype(np.float64) * 2 - 1
    for q, hits in enumerate(found):
        asym, d = signs @ scores[q].astype(np.float64), popcount_distances(queries[q], codes)
        first = sorted(range(n), key=lambda i: (-asym[i], d[i], i))[:12]  # internal id i: the i-th upserted
        cos = cosine(qv[q], coll.vectors([ids[i] for i in first]))
        want = sorted(range(12), key=lambda j: (-cos[j], d[first[j]], ids[first[j]]))[:5]
        assert [h.id for h in hits] == [ids[first[j]] for j in want]
        np.testing.assert_allclose([h.score for h in hits], cos[want], rtol=1e-6)
    # a query without scores (NaN) is cut by Hamming distance; one without a vector keeps the asymmetric order
    no_scores, no_vector = scores.copy(), qv.copy()
    no_scores[0], no_vector[1] = np.nan, np.nan
    found = coll.search(queries, 5, rerank=12, pool=n, query_vectors=no_vector, query_scores=no_scores)
    d0 = popcount_distances(queries[0], codes)
    nearest = {ids[i] for i in range(n) if d0[i] <= np.sort(d0)[11]}
    assert {h.id for h in found[0]} <= nearest
    asym1 = signs @ scores[1].astype(np.float64)
    assert [h.score for h in found[1]] == pytest.approx(np.sort(asym1)[::-1][:5].tolist())
    # a radius and a filter bound the pool as they bound the candidates
    hits = coll.range_search(queries[:1], 6, k=4, rerank=8, pool=n, query_vectors=qv[:1], query_scores=scores[:1])
    assert len(hits[0]) == 4 and all(h.distance <= 6 for h in hits[0])
    hits = coll.search(queries[:1], 4, where={"even": True}, rerank=8, pool=40, query_vectors=qv[:1])
    assert len(hits[0]) == 4 and all(int(h.id[1:]) % 2 == 0 for h in hits[0])
    for bad in ({"pool": 0}, {"pool": 2.5}, {"pool": "many"}):
        with pytest.raises(InvalidQueryError):
            coll.search(queries[:1], 3, rerank=5, query_vectors=qv[:1], **bad)
    with pytest.raises(InvalidQueryError):
        coll.search(queries[:1], 3, pool=20, query_vectors=qv[:1])  # a pool needs rerank's N
    with pytest.raises(InvalidQueryError):
        coll.search(queries[:1], 3, rerank=5, query_vectors=qv[:1], query_scores=scores[:1])  # both: with a pool
    coll.close()


# ---- models.rerank ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fixture", ["dense_model_dir", "pixel_model_dir", "text_model_dir"])
def test_query_scores_are_positive_exactly_where_the_bit_is_one(fixture: str, request) -> None:
    hasher = checkpoint.load(request.getfixturevalue(fixture), device="cpu")
    inputs = {
        "dense": dense_vectors(20, seed=3),
        "pixels": np.random.default_rng(0).integers(0, 256, (20, *hasher.featurizer.shape)).astype(np.float32)
        if hasattr(hasher.featurizer, "shape")
        else None,
        "text": ["apple banana", "car engine wheel", "space rocket moon"] * 4,
    }[hasher.featurizer.kind]
    if inputs is None:
        pytest.skip("pixel shape unknown")
    result = hasher.encode(inputs, latent=True)
    s = query_scores(hasher, result.latent)
    np.testing.assert_array_equal(s > 0, unpack(result.codes).astype(bool))
    vectors = rerank_vectors(hasher.featurizer, hasher.features(inputs))
    if hasher.featurizer.kind == "dense":
        np.testing.assert_allclose(vectors, inputs, rtol=1e-4, atol=1e-4)  # the standardisation undone
    elif hasher.featurizer.kind == "text":
        assert vectors is None


class _Gaussianish:
    kind = "sentence"
    mean = np.array([1.0, -2.0], np.float32)
    std = np.array([2.0, 0.5], np.float32)


def test_rerank_vectors_undo_the_standardisation_by_kind() -> None:
    feats = np.array([[0.0, 0.0], [1.0, 2.0]], np.float32)
    np.testing.assert_allclose(rerank_vectors(_Gaussianish(), feats), [[1.0, -2.0], [3.0, -1.0]])
    assert rerank_vectors(type("T", (), {"kind": "text"})(), feats) is None


# ---- the service ------------------------------------------------------------------------------------------------


def _create(client: TestClient, name: str, **body) -> dict:
    resp = client.post("/v1/collections", json={"name": name, **body})
    assert resp.status_code == 201, resp.text
    return resp.json()


def test_service_reranks_by_stored_vectors(make_client: MakeClient, dense_model_dir: Path) -> None:
    client = make_client(dense_model_dir)
    info = _create(client, "vec", vectors="float16")
    assert info["vectors"] == "float16" and "vector_dim" not in info  # fixed by the first upsert
    data = dense_vectors(60, seed=7)
    items = [{"id": f"v{i}", "input": row.tolist(), "metadata": {"even": i % 2 == 0}} for i, row in enumerate(data)]
    assert client.post("/v1/collections/vec/items", json={"items": items}).status_code == 200
    assert client.get("/v1/collections/vec").json()["vector_dim"] == 12
    query = dense_vectors(1, seed=8)[0]
    body = {"queries": [{"input": query.tolist()}, {"id": "v3"}], "k": 5, "rerank": {"candidates": 60}}
    results = client.post("/v1/collections/vec/search", json=body).json()["results"]
    exact = cosine(query.astype(np.float64), stored("float16", data).astype(np.float64))
    assert [h["id"] for h in results[0]] == [f"v{i}" for i in np.argsort(-exact, kind="stable")[:5]]
    np.testing.assert_allclose([h["score"] for h in results[0]], np.sort(exact)[::-1][:5], rtol=1e-3)
    assert results[1][0]["id"] == "v3" and results[1][0]["score"] == pytest.approx(1.0)  # by its stored vector
    # a code query keeps the Hamming order, without scores; filters and radius still apply
    code = client.get("/v1/collections/vec/items/v0").json()["code"]
    body = {"queries": [{"code": code}], "k": 3, "rerank": {}, "filter": {"even": True}, "radius": 16}
    hits = client.post("/v1/collections/vec/search", json=body).json()["results"][0]
    assert hits[0]["id"] == "v0" and all("score" not in h and int(h["id"][1:]) % 2 == 0 for h in hits)
    # a plain search is unchanged: no scores
    plain = client.post("/v1/collections/vec/search", json={"queries": [{"code": code}], "k": 3}).json()
    assert all("score" not in h for h in plain["results"][0])


def test_service_reranks_by_query_scores_without_vectors(make_client: MakeClient, text_model_dir: Path) -> None:
    client = make_client(text_model_dir)
    texts = ["apple banana fruit", "car engine wheel", "space rocket moon", "fruit salad apple", "moon landing"]
    items = [{"id": f"t{i}", "input": t} for i, t in enumerate(texts * 4)]
    items = [{**it, "id": f"{it['id']}-{j}"} for j, it in enumerate(items)]
    assert client.post("/v1/items", json={"items": items}).status_code == 200
    body = {"queries": [{"input": "apple fruit"}, {"id": items[0]["id"]}], "k": 20, "rerank": {"candidates": 20}}
    results = client.post("/v1/search", json=body).json()["results"]
    scores = [h["score"] for h in results[0]]
    assert len(scores) == 20 and scores == sorted(scores, reverse=True)
    assert all("score" not in h for h in results[1])  # an id without stored vectors: Hamming order
    assert [(h["distance"], h["id"]) for h in results[1]] == sorted((h["distance"], h["id"]) for h in results[1])
    assert_error(client.post("/v1/collections", json={"name": "v", "vectors": "int8"}), 409, "vectors_unsupported")


def test_service_pool_rescores_the_best_by_query_scores(make_client: MakeClient, dense_model_dir: Path) -> None:
    """rerank {"candidates": N, "pool": P} on a collection with vectors: the Hamming top P ordered by the input's
    per-bit scores, the first N by cosine; without stored vectors, the pool's asymmetric order."""
    client = make_client(dense_model_dir)
    _create(client, "vec", vectors="float16")
    data = dense_vectors(60, seed=7)
    items = [{"id": f"v{i:02d}", "input": row.tolist()} for i, row in enumerate(data)]
    assert client.post("/v1/collections/vec/items", json={"items": items}).status_code == 200
    assert client.post("/v1/items", json={"items": items}).status_code == 200  # the default keeps no vectors
    query = dense_vectors(1, seed=8)[0]
    hasher = checkpoint.load(dense_model_dir, device="cpu")
    q_out, db = hasher.encode(query[None], latent=True), hasher.encode(data)
    asym = (unpack(db.codes).astype(np.float64) * 2 - 1) @ query_scores(hasher, q_out.latent)[0].astype(np.float64)
    d = popcount_distances(q_out.codes[0], db.codes)
    first = sorted(range(60), key=lambda i: (-asym[i], d[i], i))[:6]  # the items' internal ids: upsert order
    exact = cosine(query, stored("float16", data[first]))
    want = [f"v{first[j]:02d}" for j in sorted(range(6), key=lambda j: (-exact[j], d[first[j]], first[j]))[:3]]
    body = {"queries": [{"input": query.tolist()}], "k": 3, "rerank": {"candidates": 6, "pool": 60}}
    hits = client.post("/v1/collections/vec/search", json=body).json()["results"][0]
    assert [h["id"] for h in hits] == want
    np.testing.assert_allclose([h["score"] for h in hits], np.sort(exact)[::-1][:3], rtol=1e-3)
    hits = client.post("/v1/search", json=body).json()["results"][0]  # no vectors: the pool's asymmetric order
    np.testing.assert_allclose([h["score"] for h in hits], np.sort(asym)[::-1][:3], rtol=1e-4)
    # a pool below the candidates is raised to them (as candidates below k are): a plain rerank of 60
    small = {**body, "rerank": {"candidates": 60, "pool": 6}}
    hits = client.post("/v1/collections/vec/search", json=small).json()["results"][0]
    np.testing.assert_allclose(
        [h["score"] for h in hits], np.sort(cosine(query, stored("float16", data)))[::-1][:3], rtol=1e-3
    )


@pytest.mark.parametrize(
    ("rerank", "error_type"),
    [
        ({"candidates": 0}, "rerank_out_of_range"),
        ({"candidates": 6}, "rerank_out_of_range"),  # above HAMDEX_MAX_RERANK_CANDIDATES=5
        ({"candidates": "many"}, "validation_error"),
        ({"candidates": 2.5}, "validation_error"),
        ({"depth": 3}, "validation_error"),
        ({"candidates": 3, "pool": 0}, "rerank_out_of_range"),
        ({"candidates": 3, "pool": 6}, "rerank_out_of_range"),  # above HAMDEX_MAX_RERANK_CANDIDATES=5
        ({"pool": "all"}, "validation_error"),
        (7, "validation_error"),
    ],
)
def test_bad_rerank_params_are_422(make_client: MakeClient, dense_model_dir: Path, rerank, error_type: str) -> None:
    client = make_client(dense_model_dir, max_rerank_candidates=5)
    body = {"queries": [{"input": dense_vectors(1)[0].tolist()}], "rerank": rerank}
    assert_error(client.post("/v1/search", json=body), 422, error_type)


def test_the_default_candidates_fit_the_limit_and_the_document_says_so(
    make_client: MakeClient, dense_model_dir: Path
) -> None:
    client = make_client(dense_model_dir, max_rerank_candidates=5)
    items = [{"id": f"a{i}", "input": row.tolist()} for i, row in enumerate(dense_vectors(10))]
    client.post("/v1/items", json={"items": items})
    body = {"queries": [{"input": dense_vectors(1)[0].tolist()}], "k": 3, "rerank": {}}
    assert len(client.post("/v1/search", json=body).json()["results"][0]) == 3
    schemas = client.get("/openapi.json").json()["components"]["schemas"]
    assert {"minimum": 1, "maximum": 5, "default": 5}.items() <= schemas["Rerank"]["properties"]["candidates"].items()
    assert {"type": "integer", "minimum": 1, "maximum": 5} in schemas["Rerank"]["properties"]["pool"]["anyOf"]


def test_bulk_writes_keep_the_vectors(make_client: MakeClient, dense_model_dir: Path, tmp_path: Path) -> None:
    """The HTTP bulk route and the bulk job (hamdex index) store each row's vector from its features."""
    client = make_client(dense_model_dir)
    _create(client, "vec", vectors="int8")
    data = dense_vectors(30, seed=11)
    lines = "\n".join(json.dumps({"id": f"r{i}", "input": row.tolist()}) for i, row in enumerate(data)) + "\n"
    resp = client.post(
        "/v1/collections/vec/items:bulk", content=lines.encode(), headers={"content-type": "application/x-ndjson"}
    )
    assert resp.status_code == 200, resp.text
    with client.app.state.service.registry.use("vec") as coll:
        np.testing.assert_allclose(coll.vectors([f"r{i}" for i in range(30)]), stored("int8", data), atol=1e-5)
    hasher = checkpoint.load(dense_model_dir, device="cpu")
    with Collection.create(tmp_path / "job", hasher.n_bits, hasher.fingerprint, vectors="float16") as coll:
        block = Block([f"j{i}" for i in range(30)], data, [None] * 30, [{} for _ in range(30)], "vector")
        index_blocks([block], hasher, coll, progress=False)
        np.testing.assert_allclose(coll.vectors([f"j{i}" for i in range(30)]), stored("float16", data), atol=1e-5)


@pytest.mark.milvus
def test_milvus_refuses_rerank_and_vectors(make_client: MakeClient, dense_model_dir: Path) -> None:
    pytest.importorskip("pymilvus", reason="the milvus extra is not installed: pip install 'hamdex[milvus]'")
    client = make_client(dense_model_dir)
    body = {"name": "mv", "backend": "milvus", "vectors": "float16"}
    assert_error(client.post("/v1/collections", json=body), 409, "vectors_unsupported")
    assert client.post("/v1/collections", json={"name": "m", "backend": "milvus"}).status_code == 201
    items = [{"id": f"x{i}", "input": row.tolist()} for i, row in enumerate(dense_vectors(5))]
    assert client.post("/v1/collections/m/items", json={"items": items}).status_code == 200
    search = {"queries": [{"id": "x0"}], "k": 3, "rerank": {"candidates": 5}}
    assert_error(client.post("/v1/collections/m/search", json=search), 409, "unsupported_search_param")


def test_a_killed_server_keeps_every_acknowledged_vector(dense_model_dir: Path, tmp_path: Path) -> None:
    """A real `hamdex serve` process SIGKILLed while a client streams upserts into a collection keeping vectors:
    after a restart, a rerank over every item (over HTTP) scores exactly the acknowledged vectors, the batch in
    flight is wholly there or wholly absent, and the files hold those vectors."""
    port = free_port()
    command = [*CLI, *serve_args(dense_model_dir, tmp_path / "default", port)]
    env = service_env(tmp_path, HAMDEX_SNAPSHOT_EVERY="20", HAMDEX_LOG_LEVEL="warning")
    server = Server.spawn(command, env, tmp_path / "server.log", port)
    server.wait_ready(120)
    acked: list[int] = []
    try:
        resp = httpx.post(server.url + "/v1/collections", json={"name": "vec", "vectors": "float16"}, timeout=30)
        assert resp.status_code == 201, resp.text

        def batch(b: int) -> list[dict]:
            rows = dense_vectors(4, seed=100 + b)
            return [{"id": f"b{b}-{j}", "input": row.tolist()} for j, row in enumerate(rows)]

        def stream() -> None:
            for b in range(1000):
                try:
                    r = httpx.post(server.url + "/v1/collections/vec/items", json={"items": batch(b)}, timeout=30)
                except httpx.HTTPError:
                    return
                if r.status_code != 200:
                    return
                acked.append(b)

        writer = threading.Thread(target=stream)
        writer.start()
        while len(acked) < 25 and writer.is_alive():
            time.sleep(0.01)
        server.kill()
        writer.join(30)
    finally:
        server.kill()
    assert len(acked) >= 25, server.log_tail()
    server = Server.spawn(command, env, tmp_path / "server.log", port)
    server.wait_ready(120)
    try:
        in_flight = acked[-1] + 1
        count = httpx.get(server.url + "/v1/collections/vec", timeout=30).json()["count"]
        assert count in (4 * len(acked), 4 * len(acked) + 4)
        batches = acked + ([in_flight] if count > 4 * len(acked) else [])
        expected = {
            f"b{b}-{j}": stored("float16", dense_vectors(4, seed=100 + b))[j] for b in batches for j in range(4)
        }
        body = {"queries": [{"id": "b0-0"}], "k": count, "rerank": {"candidates": count}, "include_metadata": False}
        hits = httpx.post(server.url + "/v1/collections/vec/search", json=body, timeout=30).json()["results"][0]
        assert {h["id"] for h in hits} == set(expected)
        ids = [h["id"] for h in hits]
        want = cosine(expected["b0-0"], np.stack([expected[i] for i in ids]))
        np.testing.assert_allclose([h["score"] for h in hits], want, rtol=1e-5, atol=1e-6)
    finally:
        server.stop()
    with Collection.open(tmp_path / "collections" / "vec") as coll:
        got = coll.vectors(list(expected))
        np.testing.assert_allclose(got, np.stack(list(expected.values())), rtol=0, atol=2e-3)
