"""Every index kind against the exact (flat, brute-force) oracle: recall, per-query parameters, deletes, snapshots.

The data are clusters (random centres, a few bits flipped per item) so that approximate kinds have near
neighbours to find; the recall bounds below were measured on this data and set with a margin.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import faiss
import numpy as np
import pytest
from hamdex.index import SUPPORTED_INDEX_KINDS, Collection, Hit, InvalidQueryError

from tests.test_collection import FP, as_pairs, check_hits, check_search, content, expected_range, flip_bits, hamming

KINDS = ("flat", "ivf", "hnsw", "hash", "multihash", "nested")
TOMBSTONE_KINDS = ("hnsw", "hash", "multihash")
RANGE_KINDS = ("flat", "ivf", "hash", "multihash", "nested")
PARAMS = {"ivf": {"nlist": 32, "nprobe": 4}}  # 5,000 items > 39 * 32: the IVF index is trained
N, N_BITS, K = 5_000, 64, 10
# recall@10 measured on this data (5,000 items, 500 centres, 0-6 flips; 200 queries): flat 1.0, ivf 0.91,
# hnsw 1.0, hash 0.76, multihash 0.85, nested 0.995 (its defaults); each bound leaves a margin for FAISS's
# multi-threaded builds
RECALL_BOUND = {"flat": 1.0, "ivf": 0.8, "hnsw": 0.95, "hash": 0.65, "multihash": 0.75, "nested": 0.95}
QUERY_PARAM = {"ivf": ("nprobe", (1, 2, 4, 32)), "hnsw": ("ef_search", (10, 16, 64, 256))}
EXHAUSTIVE = {"ivf": {"nprobe": 32}, "hnsw": {"ef_search": 512}}  # IVF: every list


def clusters(rng: np.random.Generator, n: int, n_centres: int, max_flips: int, n_bits: int = N_BITS) -> np.ndarray:
    centres = rng.integers(0, 256, (n_centres, n_bits // 8), dtype=np.uint8)
    return flip_bits(rng, centres[rng.integers(0, n_centres, n)], max_flips)


class Data(NamedTuple):
    ids: list[str]
    codes: np.ndarray  # (N, 8)
    near: np.ndarray  # queries drawn like the items
    uniform: np.ndarray  # queries drawn at random: harder for graph and list kinds
    state: dict[str, np.ndarray]


@pytest.fixture(scope="module")
def data() -> Data:
    rng = np.random.default_rng(0)
    centres = rng.integers(0, 256, (500, N_BITS // 8), dtype=np.uint8)
    codes = flip_bits(rng, centres[rng.integers(0, 500, N)], 6)
    near = flip_bits(rng, centres[rng.integers(0, 500, 200)], 6)
    uniform = rng.integers(0, 256, (100, N_BITS // 8), dtype=np.uint8)
    ids = [f"i{i:04d}" for i in range(N)]
    return Data(ids, codes, near, uniform, dict(zip(ids, codes, strict=True)))


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory, data: Data) -> Iterator[dict[str, Collection]]:
    """One read-only collection of the data per kind (built on first use), closed at the end of the module."""
    root = tmp_path_factory.mktemp("kinds")
    cache: dict[str, Collection] = {}

    class Lazy(dict):
        def __missing__(self, kind: str) -> Collection:
            coll = Collection.create(root / kind, N_BITS, FP, kind, PARAMS.get(kind))
            coll.upsert(data.ids, data.codes, [{"n": i % 5} for i in range(N)])
            cache[kind] = self[kind] = coll
            return coll

    yield Lazy()
    for coll in cache.values():
        coll.close()


def recall(results: list[list[Hit]], oracle: np.ndarray, k: int) -> float:
    """Tie-aware recall@k: the share of the k slots holding an item no farther than the oracle's k-th distance."""
    kth = np.sort(oracle, axis=1)[:, k - 1]
    return float(np.mean([sum(h.distance <= kth[j] for h in hits) / k for j, hits in enumerate(results)]))


# ---- recall --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_recall_at_10_against_flat_oracle(kind: str, built: dict[str, Collection], data: Data) -> None:
    assert set(KINDS) == set(SUPPORTED_INDEX_KINDS)
    coll = built[kind]
    oracle = hamming(data.near, data.codes)
    results = coll.search(data.near, K)
    for query, hits in zip(data.near, results, strict=True):
        check_hits(hits, query, data.state)  # approximate or not: live ids, once each, at their true distance
        assert len(hits) <= K
        if kind in ("flat", "ivf", "hnsw"):
            assert len(hits) == K
    measured = recall(results, oracle, K)
    print(f"recall@{K} {kind}: {measured:.3f} (bound {RECALL_BOUND[kind]})")
    assert measured >= RECALL_BOUND[kind]
    if kind == "flat":  # exact: the oracle's distances, and every strictly closer item than the k-th
        for row, hits in zip(oracle, results, strict=True):
            assert [h.distance for h in hits] == sorted(row.tolist())[:K]
            kth = hits[-1].distance
            closer = {data.ids[j] for j in np.flatnonzero(row < kth)}
            assert closer <= {h.id for h in hits}
        check_search(coll, data.state, data.uniform[:5], N)  # k == n: the whole collection, in order
    else:
        assert measured < 1.0 or kind == "hnsw"  # the approximate kinds do miss some on this data


@pytest.mark.parametrize("kind", ["flat", "ivf", "hash", "multihash"])
def test_bucket_is_exact_on_every_kind_with_radius_search(kind: str, built: dict[str, Collection], data: Data) -> None:
    """An identical code lands in the same hash bucket / inverted list, so radius 0 finds every duplicate."""
    coll = built[kind]
    for j in range(0, N, 97):
        raw = data.codes[j].tobytes()
        expected = [i for i in data.ids if data.state[i].tobytes() == raw]
        assert [h.id for h in coll.bucket(data.codes[j])] == expected


# ---- per-query parameters ------------------------------------------------------------------------------------


def stored_param(coll: Collection, kind: str) -> int:
    """The query parameter as the FAISS index holds it (what a racing query would otherwise change)."""
    if kind == "ivf":
        return faiss.downcast_IndexBinary(coll._index.index).nprobe
    return faiss.downcast_IndexBinary(coll._index.index.index).hnsw.efSearch


@pytest.mark.parametrize("kind", ["ivf", "hnsw"])
def test_query_params_change_results_not_defaults(kind: str, built: dict[str, Collection], data: Data) -> None:
    coll = built[kind]
    name, (low, *_, high) = QUERY_PARAM[kind]
    default = coll.manifest.index_params[name]
    assert stored_param(coll, kind) == default
    oracle = hamming(data.uniform, data.codes)
    before = coll.search(data.uniform, K)
    with_low = coll.search(data.uniform, K, params={name: low})
    with_high = coll.search(data.uniform, K, params={name: high})
    assert as_pairs(with_low) != as_pairs(with_high)
    assert recall(with_low, oracle, K) < recall(with_high, oracle, K)
    assert coll.search(data.uniform, K, params={name: default}) == before
    assert coll.search(data.uniform, K, params={name: None}) == before  # None means the default
    assert coll.search(data.uniform, K) == before
    if kind == "ivf":  # FAISS's IVF radius search reads nprobe from the index: it is set and put back
        default_range = coll.range_search(data.uniform[:20], 20)
        full_range = coll.range_search(data.uniform[:20], 20, params={name: high})
        assert as_pairs(full_range) == expected_range(data.state, data.uniform[:20], 20, coll.n_bytes)
        assert sum(map(len, default_range)) < sum(map(len, full_range))
        assert coll.range_search(data.uniform[:20], 20) == default_range
    assert stored_param(coll, kind) == default and coll.manifest.index_params[name] == default


@pytest.mark.parametrize("kind", ["ivf", "hnsw"])
def test_concurrent_searches_with_different_params_match_serial(
    kind: str, built: dict[str, Collection], data: Data
) -> None:
    coll = built[kind]
    name, values = QUERY_PARAM[kind]
    queries = data.uniform[:30]
    choices = [None, *values]
    serial = {v: coll.search(queries, K, params={name: v}) for v in choices}
    assert len({str(as_pairs(r)) for r in serial.values()}) >= 3  # the values do give different results
    mismatches: list[tuple[object, int]] = []
    errors: list[BaseException] = []
    start = threading.Barrier(4)

    def run(t: int) -> None:
        try:
            start.wait()
            for i in range(15):
                value = choices[(t + i) % len(choices)]
                if coll.search(queries, K, params={name: value}) != serial[value]:
                    mismatches.append((value, i))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(t,)) for t in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors and not mismatches
    assert stored_param(coll, kind) == coll.manifest.index_params[name]


def test_default_nprobe_range_search_unaffected_by_a_concurrent_one(tmp_path: Path) -> None:
    """The interleaving is forced: a non-default radius query is held inside FAISS while a default one runs.

    Whether the default query runs meanwhile (parameters passed per query) or waits (queries serialised), its
    result must be the one it gets alone.
    """
    rng = np.random.default_rng(3)
    codes = clusters(rng, 1_000, 50, 6)
    queries = rng.integers(0, 256, (20, 8), dtype=np.uint8)
    with Collection.create(tmp_path / "c", N_BITS, FP, "ivf", {"nlist": 16, "nprobe": 1}) as coll:
        coll.upsert([f"i{i}" for i in range(len(codes))], codes)
        expected = coll.range_search(queries, 24)  # nprobe 1
        assert expected != coll.range_search(queries, 24, params={"nprobe": 16})
        ivf = coll._index.index
        real_range_search = type(ivf).range_search
        held, release = threading.Event(), threading.Event()
        results: dict[str, object] = {}

        def range_search(*args):  # an instance attribute: only this index, only this test
            if threading.current_thread().name == "non-default":
                held.set()
                release.wait(10)
            return real_range_search(ivf, *args)

        def run(name: str, params: dict | None) -> None:
            results[name] = coll.range_search(queries, 24, params=params)

        ivf.range_search = range_search
        other = threading.Thread(target=run, args=("non-default", {"nprobe": 16}), name="non-default")
        default = threading.Thread(target=run, args=("default", None), name="default")
        try:
            other.start()
            assert held.wait(10)
            default.start()
            default.join(2)  # done by now unless it waits for the held query
        finally:
            release.set()
            other.join(10)
            default.join(10)
            del ivf.range_search
        assert set(results) == {"default", "non-default"}
        assert results["default"] == expected


@pytest.mark.parametrize("kind", KINDS)
def test_unsupported_params_refused(kind: str, built: dict[str, Collection], data: Data) -> None:
    coll = built[kind]
    query = data.near[:2]
    before = coll.search(query, K)
    own = {"ivf": "nprobe", "hnsw": "ef_search"}.get(kind)
    bad = [{"nprobe": 2}, {"ef_search": 2}, {"nlist": 4}, {"m": 4}, {"radius": 3}]
    bad = [p for p in bad if own not in p]
    if own:
        bad += [{own: 0}, {own: -1}, {own: True}, {own: 2.5}, {own: "8"}]
    for params in bad:
        with pytest.raises(InvalidQueryError):
            coll.search(query, K, params=params)
        if kind != "hnsw":
            with pytest.raises(InvalidQueryError):
                coll.range_search(query, 3, params=params)
    if kind == "hnsw":  # no radius search on a graph: refused whatever else is asked
        for kwargs in ({}, {"params": {"ef_search": 64}}, {"where": {"n": 1}}):
            with pytest.raises(InvalidQueryError, match="radius"):
                coll.range_search(query, 3, **kwargs)
        with pytest.raises(InvalidQueryError):
            coll.bucket(query[0])
    assert coll.search(query, K) == before and len(coll) == N


# ---- writes on every kind ------------------------------------------------------------------------------------


def mutate(coll: Collection, rng: np.random.Generator, codes: np.ndarray) -> tuple[dict[str, np.ndarray], set[str]]:
    """Deletes (15%), moves (10%), repeated upserts and a delete of a moved item; returns (live state, gone ids)."""
    n = len(codes)
    ids = [f"m{i:04d}" for i in range(n)]
    coll.upsert(ids, codes, [{"v": 0}] * n)
    state = dict(zip(ids, codes, strict=True))
    order = rng.permutation(n)
    gone = {ids[j] for j in order[: n * 15 // 100]}
    assert coll.delete(sorted(gone)) == len(gone)
    moved = [ids[j] for j in order[n * 15 // 100 : n * 25 // 100]]
    for round_ in range(3):  # the same ids, three times: each upsert replaces the previous row
        new = rng.integers(0, 256, (len(moved), codes.shape[1]), dtype=np.uint8)
        coll.upsert(moved, new, [{"v": round_ + 1}] * len(moved))
        state.update(zip(moved, new, strict=True))
    coll.delete(moved[:5])
    for item_id in moved[:5]:
        gone.add(item_id)
        del state[item_id]
    for item_id in gone:
        state.pop(item_id, None)
    return state, gone


def check_after_writes(coll: Collection, kind: str, state: dict, gone: set[str], queries: np.ndarray) -> None:
    assert len(coll) == len(state) and sorted(coll.ids()) == sorted(state)
    for params in ({}, EXHAUSTIVE.get(kind, {})):
        for query, hits in zip(queries, coll.search(queries, 30, params=params), strict=True):
            check_hits(hits, query, state)  # never a deleted id, never a stale code, never an id twice
            assert not gone & {h.id for h in hits}
    if kind in RANGE_KINDS:
        for query, hits in zip(queries, coll.range_search(queries, 12, params=EXHAUSTIVE.get(kind)), strict=True):
            check_hits(hits, query, state)
    if kind == "flat" or kind == "ivf":  # exact (IVF with every list probed)
        check_search(coll, state, queries, 30, params=EXHAUSTIVE.get(kind))
        expected = expected_range(state, queries, 12, coll.n_bytes)
        assert as_pairs(coll.range_search(queries, 12, params=EXHAUSTIVE.get(kind))) == expected
    live = sorted(state)[::25]  # every live item finds itself at distance 0
    own = np.stack([state[i] for i in live])
    for item_id, hits in zip(live, coll.search(own, 1, params=EXHAUSTIVE.get(kind)), strict=True):
        assert hits and hits[0].distance == 0, item_id


@pytest.mark.parametrize("kind", KINDS)
def test_deletes_and_upserts_never_return_stale_or_duplicate_ids(kind: str, tmp_path: Path) -> None:
    rng = np.random.default_rng(8)
    codes = clusters(rng, 1_500, 100, 4)
    params = {"nlist": 8, "nprobe": 2} if kind == "ivf" else None  # trained at 312 codes
    with Collection.create(tmp_path / "c", N_BITS, FP, kind, params) as coll:
        state, gone = mutate(coll, rng, codes)
        # queries: the deleted codes (their old neighbours are what a stale entry would show up as), the
        # moved items' new codes, and fresh ones
        queries = np.concatenate([codes[[int(i[1:]) for i in sorted(gone)][:40]], codes[:20], clusters(rng, 10, 5, 4)])
        check_after_writes(coll, kind, state, gone, queries)
        coll.snapshot()  # rebuilds the tombstone kinds (>10% dead)
        check_after_writes(coll, kind, state, gone, queries)
        coll.delete(sorted(state)[:7])
        for item_id in sorted(state)[:7]:
            gone.add(item_id)
            del state[item_id]
    with Collection.open(tmp_path / "c") as again:
        check_after_writes(again, kind, state, gone, queries)


@pytest.mark.parametrize("kind", KINDS)
def test_snapshot_reopen_round_trip(kind: str, tmp_path: Path) -> None:
    rng = np.random.default_rng(9)
    codes = clusters(rng, 800, 80, 4)
    queries = np.concatenate([codes[:15], clusters(rng, 15, 10, 4)])
    params = {"nlist": 8, "nprobe": 2} if kind == "ivf" else None
    with Collection.create(tmp_path / "c", N_BITS, FP, kind, params) as coll:
        coll.upsert([f"r{i}" for i in range(800)], codes, [{"i": i} for i in range(800)])
        coll.delete([f"r{i}" for i in range(0, 800, 20)])  # 5%: tombstones stay, no rebuild
        coll.upsert(["r1", "r2"], codes[-2:], [{"moved": True}] * 2)
        before = {
            "search": coll.search(queries, K),
            "range": coll.range_search(queries, 10) if kind in RANGE_KINDS else None,
            "content": content(coll),
            "ids": coll.ids(),
            "seq": coll.seq,
            "manifest": coll.manifest,
        }
    with Collection.open(tmp_path / "c") as again:
        assert again.search(queries, K) == before["search"]
        if kind in RANGE_KINDS:
            assert again.range_search(queries, 10) == before["range"]
        assert content(again) == before["content"] and again.ids() == before["ids"]
        assert again.seq == before["seq"] and again.manifest == before["manifest"]
        again.upsert(["after"], codes[:1])  # and it takes writes
        state = {i: np.frombuffer(c, np.uint8) for i, (c, _) in content(again).items()}
        for query, hits in zip(queries, again.search(queries, K), strict=True):
            check_hits(hits, query, state)


@pytest.mark.parametrize("kind", KINDS)
def test_tombstone_rebuild(kind: str, tmp_path: Path) -> None:
    rng = np.random.default_rng(10)
    codes = clusters(rng, 1_000, 100, 4)
    ids = [f"t{i}" for i in range(1_000)]
    queries = np.concatenate([codes[:30], clusters(rng, 10, 10, 4)])
    with Collection.create(tmp_path / "c", N_BITS, FP, kind) as coll:
        coll.upsert(ids, codes)
        index = coll._index
        coll.delete(ids[:50])  # 5%: below the rebuild threshold
        assert not index.wants_rebuild()
        coll.delete(ids[50:120])  # 12%
        state = dict(zip(ids[120:], codes[120:], strict=True))
        before = coll.search(queries, K)
        for query, hits in zip(queries, before, strict=True):
            check_hits(hits, query, state)
        if kind not in TOMBSTONE_KINDS:  # removed from the index itself: nothing to rebuild
            assert not index.wants_rebuild() and index.ntotal == 880
            return
        assert index.wants_rebuild() and len(index.tombstones) == 120 and index.ntotal == 1_000
        coll.snapshot()
        index = coll._index
        assert not index.wants_rebuild() and not index.tombstones and index.ntotal == len(coll) == 880
        after = coll.search(queries, K)
        for query, hits in zip(queries, after, strict=True):
            check_hits(hits, query, state)
        oracle = hamming(queries, np.stack(list(state.values())))
        if kind == "hnsw":  # a new graph: not the same hits, as good ones
            assert recall(after, oracle, K) >= RECALL_BOUND["hnsw"]
        else:  # the same buckets hold the same live codes: the same distances
            assert [[h.distance for h in hits] for hits in after] == [[h.distance for h in hits] for hits in before]
    with Collection.open(tmp_path / "c") as again:
        assert not again._index.tombstones and again._index.ntotal == 880
        assert again.search(queries, K) == after


# ---- IVF training ----------------------------------------------------------------------------------------------


def test_ivf_crossing_its_training_threshold_keeps_every_item(tmp_path: Path) -> None:
    rng = np.random.default_rng(11)
    codes = clusters(rng, 80, 8, 6)
    ids = [f"v{i:02d}" for i in range(80)]
    params = {"nlist": 4, "nprobe": 1, "train_size_per_list": 10}  # trained once it holds 40 codes
    full = {"nprobe": 4}
    queries = np.concatenate([codes[::8], rng.integers(0, 256, (5, 8), dtype=np.uint8)])
    with Collection.create(tmp_path / "c", N_BITS, FP, "ivf", params) as coll:
        coll.upsert(ids[:30], codes[:30])
        coll.delete(ids[:3])
        assert not coll._index.trained
        state = dict(zip(ids[3:30], codes[3:30], strict=True))
        check_search(coll, state, queries, 27)  # untrained: a flat index, exact at any nprobe
        coll.upsert(ids[30:60], codes[30:60])  # crosses 40 inside one call
        assert coll._index.trained
        coll.upsert(ids[60:], codes[60:])
        coll.upsert(ids[3:5], codes[:2])  # a move after training
        state.update(zip(ids[30:], codes[30:], strict=True))
        state.update(zip(ids[3:5], codes[:2], strict=True))
        assert len(coll) == 77 and sorted(coll.ids()) == sorted(state)
        check_search(coll, state, queries, 77, params=full)  # every list probed: every item, exactly once
        everything = coll.range_search(queries, N_BITS, params=full)
        assert all(sorted(h.id for h in hits) == sorted(state) for hits in everything)
        nprobe_1 = coll.search(queries, 77)
        assert any(len(hits) < 77 for hits in nprobe_1)  # one list of four: the index really is an IVF
    with Collection.open(tmp_path / "c") as again:
        assert again._index.trained and len(again) == 77
        check_search(again, state, queries, 77, params=full)
        assert again.search(queries, 77) == nprobe_1


# ---- filters on approximate kinds ------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_filtered_search_finds_k_matches_on_every_kind(kind: str, tmp_path: Path) -> None:
    rng = np.random.default_rng(12)
    query = rng.integers(0, 256, 8, dtype=np.uint8)
    near = flip_bits(rng, np.repeat(query[None], 400, axis=0), 5)
    far = flip_bits(rng, np.repeat(~query[None], 15, axis=0), 5)  # the only matches, far from the query
    params = {"nlist": 8, "nprobe": 1} if kind == "ivf" else None  # 415 codes: trained
    with Collection.create(tmp_path / "c", N_BITS, FP, kind, params) as coll:
        coll.upsert([f"n{i}" for i in range(400)], near, [{"tag": "common"}] * 400)
        coll.upsert([f"r{i}" for i in range(15)], far, [{"tag": "rare"}] * 15)
        (hits,) = coll.search(query[None], K, where={"tag": "rare"})
        assert all(h.id.startswith("r") for h in hits)
        assert len(hits) == K
        (every,) = coll.search(query[None], 100, where={"tag": "rare"})  # fewer matches than k: all of them
        assert sorted(h.id for h in every) == sorted(f"r{i}" for i in range(15))
