"""Collection tests: every distance against a brute-force XOR + popcount oracle, round trips through disk.

Index kinds are covered in ``test_index_kinds.py``, crash recovery in ``test_durability.py`` and threads in
``test_concurrency.py``; the helpers here (data, oracle) are shared with them.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import faiss
import numpy as np
import pytest
from hamdex.index import (
    SUPPORTED_INDEX_KINDS,
    CodeLengthError,
    Collection,
    CollectionError,
    CollectionExistsError,
    CollectionLockedError,
    CollectionNotFoundError,
    CorruptCollectionError,
    FingerprintMismatchError,
    Hit,
    InvalidItemsError,
    InvalidManifestError,
    InvalidQueryError,
    Manifest,
    UpsertResult,
)
from hamdex.index import errors as errors_module

N_BITS = (16, 64, 256)
FP = "model-a"
REPO = Path(__file__).resolve().parents[1]


# ---- data and oracle ---------------------------------------------------------------------------------------


def clustered_codes(rng: np.random.Generator, n: int, n_bits: int, n_centres: int = 4) -> np.ndarray:
    """uint8 (n, n_bits // 8): centres with 0-3 bits flipped, so small radii and exact duplicates occur."""
    centres = rng.integers(0, 256, (n_centres, n_bits // 8), dtype=np.uint8)
    codes = centres[rng.integers(0, n_centres, n)].copy()
    for row, n_flips in zip(codes, rng.integers(0, 4, n), strict=True):
        for bit in rng.choice(n_bits, n_flips, replace=False):
            row[bit // 8] ^= np.uint8(1 << (bit % 8))
    codes[1::5] = codes[0::5][: len(codes[1::5])]  # duplicates on purpose
    return codes


def flip_bits(rng: np.random.Generator, codes: np.ndarray, max_flips: int) -> np.ndarray:
    """A copy of ``codes`` (n, B) with 0..max_flips random distinct bits flipped in each row."""
    n_bits = codes.shape[1] * 8
    bits = np.unpackbits(codes, axis=1)
    for row, n_flips in zip(bits, rng.integers(0, max_flips + 1, len(codes)), strict=True):
        row[rng.choice(n_bits, n_flips, replace=False)] ^= 1
    return np.packbits(bits, axis=1)


def hamming(queries: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """The oracle: (q, B) x (n, B) -> int (q, n) popcount of XOR."""
    if len(codes) == 0:
        return np.zeros((len(queries), 0), dtype=np.int64)
    return np.bitwise_count(queries[:, None, :] ^ codes[None, :, :]).sum(axis=2, dtype=np.int64)


def state_arrays(state: dict[str, np.ndarray], n_bytes: int) -> tuple[list[str], np.ndarray]:
    ids = sorted(state)
    codes = np.stack([state[i] for i in ids]) if ids else np.zeros((0, n_bytes), dtype=np.uint8)
    return ids, codes


def check_hits(hits: list[Hit], query: np.ndarray, state: dict[str, np.ndarray]) -> None:
    """What every search result must satisfy on any kind: live ids only, each once, at its true distance, sorted."""
    assert len({h.id for h in hits}) == len(hits), f"an id returned twice: {[h.id for h in hits]}"
    for h in hits:
        assert h.id in state, f"{h.id} is not a live item"
        assert h.distance == int(np.bitwise_count(query ^ state[h.id]).sum()), f"{h.id} at a wrong distance"
    assert hits == sorted(hits, key=lambda h: (h.distance, h.id))


def check_search(coll: Collection, state: dict[str, np.ndarray], queries: np.ndarray, k: int, **kwargs) -> None:
    """Top-k: sorted distances equal the oracle's, each hit has its oracle distance, order is (d, id)."""
    ids, codes = state_arrays(state, coll.n_bytes)
    oracle = hamming(queries, codes)
    results = coll.search(queries, k, **kwargs)
    assert len(results) == len(queries)
    for query, row, hits in zip(queries, oracle, results, strict=True):
        assert len(hits) == min(k, len(ids))
        assert [h.distance for h in hits] == sorted(row.tolist())[:k]
        check_hits(hits, query, state)


def expected_range(state: dict[str, np.ndarray], queries: np.ndarray, radius: int, n_bytes: int) -> list:
    ids, codes = state_arrays(state, n_bytes)
    oracle = hamming(queries, codes)
    return [sorted((int(d), i) for i, d in zip(ids, row, strict=True) if d <= radius) for row in oracle]


def as_pairs(results: list[list[Hit]]) -> list[list[tuple[int, str]]]:
    return [[(h.distance, h.id) for h in hits] for hits in results]


def content(coll: Collection) -> dict[str, tuple[bytes, dict]]:
    """Everything a collection holds, by id: (code bytes, metadata)."""
    out = {}
    for item_id in coll.ids():
        item = coll.get(item_id)
        out[item_id] = (item.code.tobytes(), item.metadata)
    return out


# ---- fixtures ----------------------------------------------------------------------------------------------


class Opened:
    """Creates and opens collections under one directory and closes every one of them at teardown."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.collections: list[Collection] = []

    def keep(self, coll: Collection) -> Collection:
        self.collections.append(coll)
        return coll

    def create(self, name: str = "c", n_bits: int = 64, fingerprint: str = FP, *args, **kwargs) -> Collection:
        return self.keep(Collection.create(self.root / name, n_bits, fingerprint, *args, **kwargs))

    def open(self, name: str = "c", *args, **kwargs) -> Collection:
        return self.keep(Collection.open(self.root / name, *args, **kwargs))

    def make(self, n_bits: int, n: int, seed: int = 0, name: str = "coll") -> tuple[Collection, dict[str, np.ndarray]]:
        """A collection of ``n`` clustered codes with metadata {"i", "tag"}, snapshotted."""
        rng = np.random.default_rng(seed)
        codes = clustered_codes(rng, n, n_bits)
        ids = [f"item-{i:03d}" for i in range(n)]
        coll = self.create(name, n_bits)
        coll.upsert(ids, codes, [{"i": i, "tag": f"t{i % 3}"} for i in range(n)])
        coll.save()
        return coll, dict(zip(ids, codes, strict=True))

    def close_all(self) -> None:
        for coll in reversed(self.collections):
            coll.close()


@pytest.fixture
def opened(tmp_path: Path) -> Iterator[Opened]:
    colls = Opened(tmp_path)
    yield colls
    colls.close_all()


# ---- search, range search, bucket --------------------------------------------------------------------------


@pytest.mark.parametrize("n_bits", N_BITS)
def test_search_matches_oracle(opened: Opened, n_bits: int) -> None:
    n = 40
    coll, state = opened.make(n_bits, n)
    queries = np.concatenate([clustered_codes(np.random.default_rng(1), 6, n_bits), state["item-007"][None]])
    for k in (1, 5, n, n + 9):  # k < n, k == n, k > n
        check_search(coll, state, queries, k)


@pytest.mark.parametrize("n_bits", N_BITS)
def test_empty_collection_returns_empty_lists(opened: Opened, n_bits: int) -> None:
    coll = opened.create("c", n_bits)
    queries = np.zeros((3, n_bits // 8), dtype=np.uint8)
    assert coll.search(queries, 5) == [[], [], []]
    assert coll.range_search(queries, n_bits) == [[], [], []]
    assert coll.bucket(queries[0]) == []
    assert coll.search(queries[:0], 5) == []
    assert len(coll) == 0 and list(coll.ids()) == []


def test_k_larger_than_collection_has_no_sentinel(opened: Opened) -> None:
    coll = opened.create("c", 64)
    coll.upsert(["only"], np.full((1, 8), 7, dtype=np.uint8))
    (hits,) = coll.search(np.zeros((1, 8), dtype=np.uint8), 1000)
    assert hits == [Hit("only", 3 * 8, {})]


@pytest.mark.parametrize("n_bits", N_BITS)
def test_range_search_matches_oracle(opened: Opened, n_bits: int) -> None:
    coll, state = opened.make(n_bits, 40)
    queries = np.concatenate([clustered_codes(np.random.default_rng(2), 6, n_bits), state["item-011"][None]])
    for radius in (0, 1, 3, n_bits):
        got = coll.range_search(queries, radius)
        assert as_pairs(got) == expected_range(state, queries, radius, coll.n_bytes), radius
    assert all(len(hits) == len(state) for hits in got)  # radius n_bits: everything


@pytest.mark.parametrize("n_bits", N_BITS)
def test_radius_is_inclusive(opened: Opened, n_bits: int) -> None:
    """FAISS keeps d < radius; ours keeps d <= radius, up to the complement at distance n_bits."""
    query = np.zeros(n_bits // 8, dtype=np.uint8)
    codes = np.zeros((5, n_bits // 8), dtype=np.uint8)
    for d in range(1, 4):  # item d at distance d: its first d bits set
        codes[d, 0] = (1 << d) - 1
    codes[4] = 0xFF  # the complement: distance n_bits
    coll = opened.create("c", n_bits)
    coll.upsert(["d0", "d1", "d2", "d3", "dmax"], codes)
    for radius in range(4):
        hits = coll.range_search(query[None], radius)[0]
        assert [h.id for h in hits] == [f"d{d}" for d in range(radius + 1)]
    assert [h.distance for h in coll.range_search(query[None], n_bits - 1)[0]] == [0, 1, 2, 3]
    assert [h.distance for h in coll.range_search(query[None], n_bits)[0]] == [0, 1, 2, 3, n_bits]
    assert len(coll.range_search(query[None], 10**12)[0]) == 5  # a huge radius is clamped, not overflowed


@pytest.mark.parametrize("n_bits", N_BITS)
def test_bucket_matches_exact_duplicates(opened: Opened, n_bits: int) -> None:
    coll, state = opened.make(n_bits, 40)
    distinct = {code.tobytes() for code in state.values()}
    assert len(distinct) < len(state)  # the data does hold duplicates
    for raw in distinct:
        code = np.frombuffer(raw, dtype=np.uint8)
        expected = sorted(i for i, c in state.items() if c.tobytes() == raw)
        hits = coll.bucket(code)
        assert [h.id for h in hits] == expected
        assert all(h.distance == 0 for h in hits)
    absent = ~state["item-000"]
    expected = sorted(i for i, c in state.items() if np.array_equal(c, absent))
    assert [h.id for h in coll.bucket(absent)] == expected


def test_include_metadata_flag(opened: Opened) -> None:
    coll, state = opened.make(64, 10)
    query = state["item-003"][None]
    with_meta = coll.search(query, 3)[0]
    without = coll.search(query, 3, include_metadata=False)[0]
    assert [h.id for h in with_meta] == [h.id for h in without]
    assert all(h.metadata is None for h in without)
    i = int(with_meta[0].id[-3:])
    assert with_meta[0].metadata == {"i": i, "tag": f"t{i % 3}"}
    assert all(h.metadata is None for h in coll.range_search(query, 64, include_metadata=False)[0])
    assert all(h.metadata is None for h in coll.bucket(query[0], include_metadata=False))


# ---- mutation ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("n_bits", N_BITS)
def test_upsert_replaces_code_and_metadata(opened: Opened, n_bits: int) -> None:
    coll, state = opened.make(n_bits, 30)
    rng = np.random.default_rng(3)
    changed = ["item-002", "item-010", "new-1", "item-029"]
    codes = rng.integers(0, 256, (4, n_bits // 8), dtype=np.uint8)
    result = coll.upsert(changed, codes, [{"v": 2}, None, {"v": "n"}, {"nested": [1, {"a": None}]}])
    assert result == UpsertResult(inserted=1, updated=3)
    state.update(zip(changed, codes, strict=True))
    assert len(coll) == len(state) == 31
    item = coll.get("item-002")
    assert item is not None and item.metadata == {"v": 2} and item.code.dtype == np.uint8
    np.testing.assert_array_equal(item.code, codes[0])
    assert coll.get("item-010").metadata == {}  # None replaces the old metadata with {}
    assert coll.get("item-029").metadata == {"nested": [1, {"a": None}]}
    queries = np.concatenate([codes, clustered_codes(rng, 3, n_bits)])
    check_search(coll, state, queries, len(state))  # k == n: an id returned twice would show here
    expected = expected_range(state, queries, n_bits, coll.n_bytes)
    assert as_pairs(coll.range_search(queries, n_bits)) == expected
    assert coll.ids()[-4:] == changed  # an upsert moves an id to the end of the insertion order


@pytest.mark.parametrize("n_bits", N_BITS)
def test_delete_hides_immediately_and_reinsert_works(opened: Opened, n_bits: int) -> None:
    coll, state = opened.make(n_bits, 30)
    gone = ["item-000", "item-001", "item-017"]  # item-000 and item-001 share a code
    code0 = state["item-000"].copy()
    assert coll.delete([*gone, "unknown", "item-000"]) == 3
    for item_id in gone:
        del state[item_id]
        assert coll.get(item_id) is None and item_id not in coll
    assert coll.delete(["item-000"]) == 0
    assert "item-000" not in [h.id for h in coll.bucket(code0)]
    queries = np.stack([code0, state["item-005"]])
    check_search(coll, state, queries, 30)
    assert as_pairs(coll.range_search(queries, 3)) == expected_range(state, queries, 3, coll.n_bytes)
    assert coll.upsert(["item-000"], code0[None], [{"back": True}]) == UpsertResult(inserted=1, updated=0)
    state["item-000"] = code0
    assert coll.get("item-000").metadata == {"back": True}
    check_search(coll, state, queries, 30)
    assert coll.manifest.count == len(coll) == len(state) == 28


def test_repeated_upserts_of_one_id_return_it_once(opened: Opened) -> None:
    """Each upsert of an id replaces the previous row: a search for all items sees the id once, at its last code."""
    coll = opened.create("c", 64)
    rng = np.random.default_rng(7)
    base = rng.integers(0, 256, (20, 8), dtype=np.uint8)
    coll.upsert([f"b{i}" for i in range(20)], base)
    state = {f"b{i}": base[i] for i in range(20)}
    query = base[0]
    for step in range(10):  # "moving" lands near the query, then far away, then near again...
        code = flip_bits(rng, query[None], 2)[0] if step % 2 == 0 else ~query
        coll.upsert(["moving"], code[None], [{"step": step}])
        state["moving"] = code
        (hits,) = coll.search(query[None], 100)
        assert len(hits) == 21 and [h.id for h in hits].count("moving") == 1
        check_hits(hits, query, state)
        (in_range,) = coll.range_search(query[None], 64)
        assert [h.id for h in in_range].count("moving") == 1
    assert coll.get("moving").metadata == {"step": 9} and len(coll) == 21


def test_metadata_is_stored_as_json(opened: Opened) -> None:
    coll = opened.create("c", 16)
    meta = {"t": (1, 2), "s": "é\u2028", "n": None, "f": 0.5, "b": False}
    coll.upsert(["a"], np.zeros((1, 2), dtype=np.uint8), [meta])
    meta["t"] = "mutated after upsert"
    got = coll.get("a").metadata
    assert got == {"t": [1, 2], "s": "é\u2028", "n": None, "f": 0.5, "b": False}
    got["s"] = "mutated after get"
    assert coll.get("a").metadata["s"] == "é\u2028"
    assert coll.search(np.zeros((1, 2), dtype=np.uint8), 1)[0][0].metadata["t"] == [1, 2]


# ---- filters -----------------------------------------------------------------------------------------------


def test_filter_counts_are_exact(opened: Opened) -> None:
    """range_search(where=) returns exactly the matching items in range; search(where=) the oracle's top-k of them."""
    n = 200
    rng = np.random.default_rng(11)
    codes = clustered_codes(rng, n, 64)
    ids = [f"f{i:03d}" for i in range(n)]
    position = {item_id: j for j, item_id in enumerate(ids)}
    metas = [{"tag": f"t{i % 7}", "even": i % 2 == 0} for i in range(n)]
    coll = opened.create("c", 64)
    coll.upsert(ids, codes, metas)
    queries = clustered_codes(np.random.default_rng(12), 5, 64)
    oracle = hamming(queries, codes)
    for where in ({"tag": "t3"}, {"tag": "t3", "even": True}, {"even": False}, {"tag": "absent"}, {"nope": 1}):
        keep = [all(m.get(key, object()) == want for key, want in where.items()) for m in metas]
        for radius in (3, 64):
            got = coll.range_search(queries, radius, where=where)
            want = [sorted((int(d), ids[j]) for j, d in enumerate(row) if keep[j] and d <= radius) for row in oracle]
            assert as_pairs(got) == want
        for k in (1, 10, n):
            got = coll.search(queries, k, where=where, include_metadata=False)  # filtered even without metadata
            for row, hits in zip(oracle, got, strict=True):
                matching = sorted(int(d) for j, d in enumerate(row) if keep[j])
                assert [h.distance for h in hits] == matching[:k]
                assert all(keep[position[h.id]] and h.metadata is None for h in hits)
                assert len({h.id for h in hits}) == len(hits)


def test_filter_finds_k_matches_far_from_the_query(opened: Opened) -> None:
    """Matches that rank far beyond the first over-fetch are still found: k hits whenever k matches exist."""
    rng = np.random.default_rng(13)
    query = rng.integers(0, 256, 8, dtype=np.uint8)
    near = flip_bits(rng, np.repeat(query[None], 600, axis=0), 4)
    far = flip_bits(rng, np.repeat(~query[None], 12, axis=0), 4)  # distance >= 60: ranked last
    coll = opened.create("c", 64)
    coll.upsert([f"n{i}" for i in range(600)], near, [{"tag": "common"}] * 600)
    coll.upsert([f"r{i:02d}" for i in range(12)], far, [{"tag": "rare"}] * 12)
    (hits,) = coll.search(query[None], 10, where={"tag": "rare"})
    assert len(hits) == 10 and all(h.id.startswith("r") for h in hits)
    assert [h.distance for h in hits] == sorted(hamming(query[None], far)[0].tolist())[:10]
    (hits,) = coll.search(query[None], 50, where={"tag": "rare"})
    assert sorted(h.id for h in hits) == [f"r{i:02d}" for i in range(12)]  # fewer matches than k: all of them


def test_filter_types_are_strict(opened: Opened) -> None:
    """true is not 1, "1" is not 1, null is not missing."""
    coll = opened.create("c", 16)
    metas = [{"v": True}, {"v": 1}, {"v": "1"}, {"v": None}, {}, {"v": 0}, {"v": False}, {"v": [1]}]
    names = ["true", "one", "str", "null", "missing", "zero", "false", "list"]
    coll.upsert(names, np.zeros((len(names), 2), dtype=np.uint8), metas)
    query = np.zeros((1, 2), dtype=np.uint8)
    expected = [(True, ["true"]), (1, ["one"]), ("1", ["str"]), (None, ["null"]), (0, ["zero"]), (False, ["false"])]
    for value, want in expected:  # pairs, not a dict: True == 1 and False == 0 as dict keys
        assert [h.id for h in coll.search(query, 8, where={"v": value})[0]] == want, value
        assert [h.id for h in coll.range_search(query, 0, where={"v": value})[0]] == want, value
    for bad in ([1], {"v": [1]}, {"v": {"a": 1}}, {"": 1}, {3: 1}):
        with pytest.raises(InvalidQueryError):
            coll.search(query, 1, where=bad)
        with pytest.raises(InvalidQueryError):
            coll.range_search(query, 1, where=bad)


# ---- validation --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "bad",
    [
        np.zeros((2, 7), dtype=np.uint8),  # too few bytes
        np.zeros((2, 9), dtype=np.uint8),  # too many bytes
        np.zeros((2, 8), dtype=np.int64),  # wrong dtype
        np.zeros((2, 8), dtype=np.float32),
        np.zeros(16, dtype=np.uint8),  # not 2-d
        [[0] * 8, [0] * 8],  # not an array
    ],
    ids=["short", "long", "int64", "float32", "1d", "list"],
)
def test_wrong_code_length_or_dtype_refused(opened: Opened, bad: object) -> None:
    coll = opened.create("c", 64)
    with pytest.raises(CodeLengthError) as info:
        coll.upsert(["a", "b"], bad)
    assert info.value.error_type == "code_length" and isinstance(info.value, ValueError)
    with pytest.raises(CodeLengthError):
        coll.search(bad, 1)
    with pytest.raises(CodeLengthError):
        coll.range_search(bad, 1)
    with pytest.raises(CodeLengthError):
        coll.bucket(np.zeros(7, dtype=np.uint8))
    assert len(coll) == 0 and coll.seq == 0


@pytest.mark.parametrize(
    ("ids", "metadata"),
    [
        (["a", "a"], None),  # duplicate in one call
        (["a", ""], None),  # empty id
        (["a", 3], None),  # not a string
        (["a"], None),  # fewer ids than codes
        ("ab", None),  # a bare string is not a sequence of ids
        (["a", "b"], [{}, "x"]),  # metadata not a dict
        (["a", "b"], [{}, {"x": object()}]),  # not JSON-serialisable
        (["a", "b"], [{}, {"x": float("nan")}]),  # NaN is not JSON
        (["a", "b"], [{}]),  # metadata length mismatch
    ],
    ids=["dup", "empty", "int", "count", "bare-str", "meta-str", "meta-object", "meta-nan", "meta-count"],
)
def test_invalid_items_refused_without_changes(opened: Opened, ids: object, metadata: object) -> None:
    coll = opened.create("c", 16)
    coll.upsert(["a"], np.ones((1, 2), dtype=np.uint8), [{"keep": 1}])
    seq = coll.seq
    with pytest.raises(InvalidItemsError) as info:
        coll.upsert(ids, np.zeros((2, 2), dtype=np.uint8), metadata)
    assert info.value.error_type == "invalid_items" and isinstance(info.value, ValueError)
    assert list(coll.ids()) == ["a"] and coll.get("a").metadata == {"keep": 1} and len(coll) == 1
    np.testing.assert_array_equal(coll.get("a").code, [1, 1])
    assert coll.seq == seq  # nothing was written, not even an empty transaction
    assert [h.id for h in coll.search(np.zeros((1, 2), dtype=np.uint8), 5)[0]] == ["a"]


def test_invalid_query_refused(opened: Opened) -> None:
    coll, _ = opened.make(16, 5)
    query = np.zeros((1, 2), dtype=np.uint8)
    for k in (0, -1, True, 2.0, "3", None):
        with pytest.raises(InvalidQueryError):
            coll.search(query, k)
    for radius in (-1, 1.5, False):
        with pytest.raises(InvalidQueryError):
            coll.range_search(query, radius)
    with pytest.raises(InvalidQueryError):
        coll.search(query, 1, params={"nprobe": 4})  # flat takes no query parameters
    with pytest.raises(InvalidItemsError):
        coll.delete("item-000")
    assert len(coll) == 5


def test_closed_collection_refuses_writes(tmp_path: Path) -> None:
    coll = Collection.create(tmp_path / "c", 16, FP)
    coll.upsert(["a"], np.ones((1, 2), dtype=np.uint8))
    coll.close()
    coll.close()  # idempotent
    with pytest.raises(CollectionError):
        coll.upsert(["b"], np.ones((1, 2), dtype=np.uint8))
    with pytest.raises(CollectionError):
        coll.delete(["a"])
    with Collection.open(tmp_path / "c") as again:
        assert again.ids() == ["a"]


def test_closed_collection_refuses_reads(tmp_path: Path) -> None:
    coll = Collection.create(tmp_path / "c", 16, FP)
    coll.upsert(["a"], np.ones((1, 2), dtype=np.uint8))
    coll.close()
    outcomes: list[object] = []

    def read() -> None:
        for call in (lambda: coll.search(np.ones((1, 2), dtype=np.uint8), 1), lambda: coll.get("a")):
            try:
                outcomes.append(call())
            except Exception as exc:
                outcomes.append(exc)

    read()
    thread = threading.Thread(target=read)
    thread.start()
    thread.join()
    assert len(outcomes) == 4
    for outcome in outcomes:  # refused, as a closed collection, not reported as a corrupt file
        assert isinstance(outcome, CollectionError) and not isinstance(outcome, CorruptCollectionError), outcome


@pytest.mark.parametrize(
    "kwargs",
    [
        {"n_bits": 0},
        {"n_bits": 12},
        {"n_bits": -8},
        {"n_bits": True},
        {"fingerprint": ""},
        {"fingerprint": None},
        {"index_kind": "annoy"},
        {"index_kind": None},
        {"count": -1},
        {"count": 1.5},
        {"model": 3},
        {"format_version": 1},  # the old layout is migrated, never described by a Manifest
        {"created_at": "yesterday"},
        {"index_params": [("nlist", 4)]},
    ],
)
def test_manifest_validates_itself(kwargs: dict) -> None:
    with pytest.raises(InvalidManifestError):
        Manifest(**{"n_bits": 64, "fingerprint": FP, **kwargs})


BAD_PARAMS = {  # per kind: a parameter of another kind, and out-of-range or non-int values of its own
    "flat": [{"nlist": 4}, {"nprobe": 1}],
    "ivf": [{"m": 8}, {"nlist": 0}, {"nprobe": -1}, {"train_size_per_list": True}, {"nlist": 2.0}],
    "hnsw": [{"nprobe": 2}, {"m": 0}, {"ef_search": "64"}, {"ef_construction": None}],
    "hash": [{"nhash": 2}, {"b": 0}, {"nflip": False}],
    "multihash": [{"ef_search": 8}, {"nhash": -2}, {"b": 1.0}],
    "nested": [{"nprobe": 2}, {"prefix_bits": 12}, {"candidates": 0}, {"prefix_bits": 8.0}],
}


@pytest.mark.parametrize("kind", sorted(SUPPORTED_INDEX_KINDS))
def test_manifest_validates_index_params_per_kind(kind: str, tmp_path: Path) -> None:
    assert set(BAD_PARAMS) == set(SUPPORTED_INDEX_KINDS)
    defaults = Manifest(64, FP, kind).index_params
    assert all(isinstance(v, int) and v >= 1 for v in defaults.values())
    if defaults:  # a kind's own parameters are accepted and the rest filled in with defaults
        key = sorted(defaults)[0]
        assert Manifest(64, FP, kind, {key: 3}).index_params == {**defaults, key: 3}
    for params in BAD_PARAMS[kind]:
        with pytest.raises(InvalidManifestError):
            Manifest(64, FP, kind, params)
        with pytest.raises(InvalidManifestError):
            Collection.create(tmp_path / "c", 64, FP, kind, params)
        assert not (tmp_path / "c").exists()  # refused before anything was written


def test_manifest_from_dict_rejects_unknown_keys() -> None:
    raw = {"n_bits": 64, "fingerprint": FP}
    assert Manifest.from_dict(raw).n_bytes == 8
    assert Manifest.from_dict(Manifest(64, FP, "ivf", {"nlist": 4}).settings()).index_params["nlist"] == 4
    with pytest.raises(InvalidManifestError, match="unknown"):
        Manifest.from_dict({**raw, "colour": "red"})
    with pytest.raises(InvalidManifestError, match="unknown"):
        Manifest.from_dict({**raw, "next_id": 3})  # a format-1 key
    with pytest.raises(InvalidManifestError):
        Manifest.from_dict({"n_bits": 64})
    with pytest.raises(InvalidManifestError):
        Manifest.from_dict([64, FP])


def test_error_types_are_distinct_snake_case() -> None:
    classes = [c for c in vars(errors_module).values() if isinstance(c, type) and issubclass(c, CollectionError)]
    types = [c.error_type for c in classes]
    assert len(classes) >= 10 and len(set(types)) == len(types)
    assert all(t.isidentifier() and t == t.lower() for t in types)


# ---- the directory -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("n_bits", N_BITS)
def test_close_open_round_trip_is_exact(tmp_path: Path, n_bits: int) -> None:
    path = tmp_path / "coll"
    rng = np.random.default_rng(4)
    queries = clustered_codes(rng, 5, n_bits)
    with Collection.create(path, n_bits, FP, model="m1") as coll:
        codes = clustered_codes(np.random.default_rng(0), 30, n_bits)
        coll.upsert([f"item-{i:03d}" for i in range(30)], codes, [{"i": i} for i in range(30)])
        coll.snapshot()
        new_codes = rng.integers(0, 256, (2, n_bits // 8), dtype=np.uint8)
        coll.upsert(["item-004", "item-020"], new_codes, [{"u": 1}, {}])
        coll.delete(["item-001", "item-009"])
        before = {
            "manifest": coll.manifest,
            "ids": coll.ids(),
            "content": content(coll),
            "search": coll.search(queries, 7),
            "range": coll.range_search(queries, 3),
            "seq": coll.seq,
        }
    assert before["manifest"].count == 28 and before["manifest"].model == "m1"
    names = sorted(p.name for p in path.iterdir() if not p.name.startswith("items.sqlite-"))
    assert names == ["LOCK", "items.sqlite", "manifest.json", f"snapshot-{before['seq']:012d}.npz"]
    assert json.loads((path / "manifest.json").read_text())["snapshot"]["seq"] == before["seq"]

    with Collection.open(path, expected_fingerprint=FP) as again:
        assert again.manifest == before["manifest"]
        assert again.ids() == before["ids"] and content(again) == before["content"]
        assert again.seq == before["seq"] and len(again) == 28
        assert again.search(queries, 7) == before["search"]
        assert again.range_search(queries, 3) == before["range"]
        # internal ids are never reused after a reopen: new items must not collide with old ones
        again.upsert(["fresh"], queries[:1])
        assert again.get("fresh") is not None and len(again) == 29
        assert content(again)["item-004"] == before["content"]["item-004"]
        state = {i: np.frombuffer(code, np.uint8) for i, (code, _) in content(again).items()}
        check_search(again, state, queries, 29)


def test_writes_are_durable_without_close(tmp_path: Path) -> None:
    """A process killed (SIGKILL) right after its writes returned loses none of them."""
    path = tmp_path / "c"
    script = textwrap.dedent(
        f"""
        import os, signal
        import numpy as np
        from hamdex.index import Collection
        coll = Collection.create({str(path)!r}, 64, "fp")
        rng = np.random.default_rng(0)
        coll.upsert([f"a{{i}}" for i in range(50)], rng.integers(0, 256, (50, 8), dtype=np.uint8),
                    [{{"i": i}} for i in range(50)])
        coll.upsert(["a3", "b"], np.full((2, 8), 255, dtype=np.uint8), [{{"new": 1}}, None])
        coll.delete(["a7", "a8"])
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, timeout=60)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()
    assert "snapshot" not in json.loads((path / "manifest.json").read_text())  # nothing but the store to go on
    codes = np.random.default_rng(0).integers(0, 256, (50, 8), dtype=np.uint8)
    state = {f"a{i}": codes[i] for i in range(50) if i not in (7, 8)}
    state["a3"] = state["b"] = np.full(8, 255, dtype=np.uint8)
    with Collection.open(path, expected_fingerprint="fp") as coll:
        assert sorted(coll.ids()) == sorted(state) and len(coll) == 49
        assert coll.get("a3").metadata == {"new": 1} and coll.get("a0").metadata == {"i": 0}
        assert coll.get("a7") is None
        check_search(coll, state, np.concatenate([codes[:5], codes[7:9]]), 49)


def test_fingerprint_mismatch_refused(tmp_path: Path) -> None:
    Collection.create(tmp_path / "c", 64, "model-a").close()
    with pytest.raises(FingerprintMismatchError) as info:
        Collection.open(tmp_path / "c", expected_fingerprint="model-b")
    assert "model-a" in str(info.value) and "model-b" in str(info.value)
    assert info.value.error_type == "fingerprint_mismatch"
    with Collection.open(tmp_path / "c") as coll:  # the refused open released the lock
        assert coll.manifest.fingerprint == "model-a"
    with pytest.raises(FingerprintMismatchError):
        Collection.open_or_create(tmp_path / "c", 64, "model-b")
    with Collection.open_or_create(tmp_path / "c", 64, "model-a") as coll:
        assert coll.fingerprint == "model-a"


def test_create_on_existing_refused(opened: Opened) -> None:
    coll, _ = opened.make(64, 5)
    coll.close()
    with pytest.raises(CollectionExistsError) as info:
        Collection.create(coll.path, 64, FP)
    assert info.value.error_type == "collection_exists"
    with pytest.raises(CollectionExistsError):
        Collection.create(coll.path, 32, "other-model", "hnsw")
    with Collection.open_or_create(coll.path, 64, FP) as again:
        assert len(again) == 5  # the refused creates changed nothing
    with pytest.raises(CollectionExistsError):
        Collection.open_or_create(coll.path, 128, FP)
    with Collection.open_or_create(opened.root / "other", 32, FP, "hash", {"b": 8}) as fresh:
        assert len(fresh) == 0 and fresh.n_bytes == 4 and (fresh.path / "manifest.json").exists()
        assert fresh.manifest.index_kind == "hash" and fresh.manifest.index_params["b"] == 8


def test_open_missing_collection(tmp_path: Path) -> None:
    with pytest.raises(CollectionNotFoundError) as info:
        Collection.open(tmp_path / "nowhere")
    assert info.value.error_type == "collection_not_found" and isinstance(info.value, FileNotFoundError)
    (tmp_path / "empty").mkdir()
    with pytest.raises(CollectionNotFoundError):
        Collection.open(tmp_path / "empty")
    assert not (tmp_path / "nowhere").exists()


def test_second_open_is_refused_until_close(tmp_path: Path) -> None:
    path = tmp_path / "c"
    coll = Collection.create(path, 16, FP)
    try:
        with pytest.raises(CollectionLockedError) as info:
            Collection.open(path)
        assert info.value.error_type == "collection_locked"
        with pytest.raises(CollectionLockedError):
            Collection.open_or_create(path, 16, FP)
        with pytest.raises(CollectionLockedError):
            Collection.create(path, 16, FP)
        script = f"from hamdex.index import Collection; Collection.open({str(path)!r})"
        proc = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, timeout=60)
        assert proc.returncode == 1 and b"CollectionLockedError" in proc.stderr  # another process too
        coll.upsert(["a"], np.ones((1, 2), dtype=np.uint8))  # the refused opens did not disturb the holder
    finally:
        coll.close()
    with Collection.open(path) as again:
        assert again.ids() == ["a"]
    with Collection.open(path) as again:  # and again after that close
        assert len(again) == 1


# ---- migration of the format-1 layout ------------------------------------------------------------------------


def write_format1(path: Path, ids: list[str], codes: np.ndarray, metadata: list[dict]) -> None:
    """A collection as format 1 saved it: IndexBinaryIDMap2 + items.jsonl + manifest.json (format_version 1)."""
    path.mkdir(parents=True)
    n_bits = codes.shape[1] * 8
    internal = np.arange(len(ids), dtype=np.int64) * 3 + 5  # internal ids need not be 0..n-1
    index = faiss.IndexBinaryIDMap2(faiss.IndexBinaryFlat(n_bits))
    index.add_with_ids(codes, internal)
    faiss.write_index_binary(index, str(path / "index.faiss"))
    rows = [{"id": i, "internal_id": int(n), "metadata": m} for i, n, m in zip(ids, internal, metadata, strict=True)]
    (path / "items.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), "utf-8")
    manifest = {
        "n_bits": n_bits,
        "fingerprint": FP,
        "index_kind": "flat",
        "count": len(ids),
        "next_id": int(internal[-1]) + 1 if len(ids) else 0,
        "format_version": 1,
        "created_at": "2024-05-01T12:00:00+00:00",
    }
    (path / "manifest.json").write_text(json.dumps(manifest), "utf-8")


def test_format1_collection_is_migrated_on_open(tmp_path: Path) -> None:
    path = tmp_path / "old"
    rng = np.random.default_rng(21)
    codes = clustered_codes(rng, 40, 64)
    ids = [f"old-{i}" for i in range(40)]
    metadata = [{"i": i, "nested": {"t": [i, None]}} for i in range(40)]
    write_format1(path, ids, codes, metadata)
    state = dict(zip(ids, codes, strict=True))
    queries = clustered_codes(rng, 4, 64)

    with Collection.open(path, expected_fingerprint=FP) as coll:
        assert coll.ids() == ids and len(coll) == 40 and coll.manifest.format_version == 2
        assert coll.manifest.n_bits == 64 and coll.manifest.index_kind == "flat"
        for item_id, code, meta in zip(ids, codes, metadata, strict=True):
            item = coll.get(item_id)
            np.testing.assert_array_equal(item.code, code)
            assert item.metadata == meta
        check_search(coll, state, queries, 40)
        coll.upsert(["new"], codes[:1])  # the migrated collection takes writes
        state["new"] = codes[0]
    names = {p.name for p in path.iterdir()}
    assert {"index.faiss.format1", "items.jsonl.format1", "manifest.json.format1", "items.sqlite"} <= names
    assert not {"index.faiss", "items.jsonl"} & names
    with Collection.open(path) as coll:  # a second open is a plain open of the new format
        assert len(coll) == 41 and coll.get("old-7").metadata == metadata[7]
        check_search(coll, state, queries, 41)


def test_format1_migration_keeps_created_at(tmp_path: Path) -> None:
    write_format1(tmp_path / "old", ["a"], np.zeros((1, 8), dtype=np.uint8), [{}])
    with Collection.open(tmp_path / "old") as coll:
        assert coll.manifest.created_at == "2024-05-01T12:00:00+00:00"


MIGRATION_CRASH = """
import os, signal, sys
from hamdex.index.collection import Collection
Collection._write = lambda *args: os.kill(os.getpid(), signal.SIGKILL)  # the crash: right after create()
Collection.open(sys.argv[1])
"""


def test_format1_migration_interrupted_by_a_crash_is_resumed(tmp_path: Path) -> None:
    path = tmp_path / "old"
    codes = clustered_codes(np.random.default_rng(22), 20, 64)
    ids = [f"old-{i}" for i in range(20)]
    write_format1(path, ids, codes, [{"i": i} for i in range(20)])
    proc = subprocess.run([sys.executable, "-c", MIGRATION_CRASH, str(path)], cwd=REPO, capture_output=True, timeout=60)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-500:]  # killed in the middle of migrating
    with Collection.open(path) as coll:
        assert coll.ids() == ids and coll.get("old-3").metadata == {"i": 3}


def test_format1_with_another_fingerprint_is_refused_untouched(tmp_path: Path) -> None:
    path = tmp_path / "old"
    write_format1(path, ["a", "b"], np.zeros((2, 8), dtype=np.uint8), [{}, {"x": 1}])
    before = {p.name: p.read_bytes() for p in path.iterdir()}
    with pytest.raises(FingerprintMismatchError):
        Collection.open(path, expected_fingerprint="model-b")
    assert {p.name: p.read_bytes() for p in path.iterdir()} == before


# ---- threads (more in test_concurrency.py) -------------------------------------------------------------------


def test_concurrent_upserts_and_searches(opened: Opened) -> None:
    coll = opened.create("c", 64)
    rng = np.random.default_rng(5)
    codes = rng.integers(0, 256, (4, 50, 8), dtype=np.uint8)
    failures: list[BaseException] = []

    def guarded(fn: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            try:
                fn()
            except BaseException as exc:  # surfaced in the main thread below
                failures.append(exc)

        return run

    def writer(t: int) -> None:
        for i in range(50):
            coll.upsert([f"w{t}-{i}"], codes[t, i : i + 1])

    def reader() -> None:
        for _ in range(100):
            for hits in coll.search(codes[0, :3], 5):
                assert all(h.id.startswith("w") for h in hits)
                assert len({h.id for h in hits}) == len(hits)

    threads = [threading.Thread(target=guarded(lambda t=t: writer(t))) for t in range(4)]
    threads.append(threading.Thread(target=guarded(reader)))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not failures and len(coll) == 200
    state = {f"w{t}-{i}": codes[t, i] for t in range(4) for i in range(50)}
    check_search(coll, state, codes[:, 0], 10)
    assert coll.seq == 200  # one sequence number per write call
