"""Collection tests: every distance against a brute-force XOR + popcount oracle, round trips through disk."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import pytest

from index import (
    CodeLengthError,
    Collection,
    CollectionError,
    CollectionExistsError,
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
from index import errors as errors_module

N_BITS = (16, 64, 256)
FP = "model-a"


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


def hamming(queries: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """The oracle: (q, B) x (n, B) -> int (q, n) popcount of XOR."""
    if len(codes) == 0:
        return np.zeros((len(queries), 0), dtype=np.int64)
    return np.bitwise_count(queries[:, None, :] ^ codes[None, :, :]).sum(axis=2, dtype=np.int64)


def make(tmp_path: Path, n_bits: int, n: int, seed: int = 0) -> tuple[Collection, dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    codes = clustered_codes(rng, n, n_bits)
    ids = [f"item-{i:03d}" for i in range(n)]
    coll = Collection.create(tmp_path / "coll", n_bits, FP)
    coll.upsert(ids, codes, [{"i": i, "tag": f"t{i % 3}"} for i in range(n)])
    coll.save()
    return coll, dict(zip(ids, codes, strict=True))


def state_arrays(state: dict[str, np.ndarray], n_bytes: int) -> tuple[list[str], np.ndarray]:
    ids = sorted(state)
    codes = np.stack([state[i] for i in ids]) if ids else np.zeros((0, n_bytes), dtype=np.uint8)
    return ids, codes


def check_search(coll: Collection, state: dict[str, np.ndarray], queries: np.ndarray, k: int) -> None:
    """Top-k: sorted distances equal the oracle's, each hit has its oracle distance, order is (d, id)."""
    ids, codes = state_arrays(state, coll.n_bytes)
    oracle = hamming(queries, codes)
    position = {item_id: j for j, item_id in enumerate(ids)}
    results = coll.search(queries, k)
    assert len(results) == len(queries)
    for row, hits in zip(oracle, results, strict=True):
        assert len(hits) == min(k, len(ids))
        assert [h.distance for h in hits] == sorted(row.tolist())[:k]
        assert all(h.id in position and row[position[h.id]] == h.distance for h in hits)  # no -1 id leaks
        assert len({h.id for h in hits}) == len(hits)
        assert hits == sorted(hits, key=lambda h: (h.distance, h.id))


def expected_range(state: dict[str, np.ndarray], queries: np.ndarray, radius: int, n_bytes: int) -> list:
    ids, codes = state_arrays(state, n_bytes)
    oracle = hamming(queries, codes)
    return [sorted((int(d), i) for i, d in zip(ids, row, strict=True) if d <= radius) for row in oracle]


def as_pairs(results: list[list[Hit]]) -> list[list[tuple[int, str]]]:
    return [[(h.distance, h.id) for h in hits] for hits in results]


# ---- search, range search, bucket --------------------------------------------------------------------------


@pytest.mark.parametrize("k_case", ["k<n", "k==n", "k>n"])
@pytest.mark.parametrize("n_bits", N_BITS)
def test_search_matches_oracle(tmp_path: Path, n_bits: int, k_case: str) -> None:
    n = 40
    coll, state = make(tmp_path, n_bits, n)
    queries = np.concatenate([clustered_codes(np.random.default_rng(1), 6, n_bits), state["item-007"][None]])
    k = {"k<n": 5, "k==n": n, "k>n": n + 9}[k_case]
    check_search(coll, state, queries, k)


@pytest.mark.parametrize("n_bits", N_BITS)
def test_empty_collection_returns_empty_lists(tmp_path: Path, n_bits: int) -> None:
    coll = Collection.create(tmp_path / "c", n_bits, FP)
    queries = np.zeros((3, n_bits // 8), dtype=np.uint8)
    assert coll.search(queries, 5) == [[], [], []]
    assert coll.range_search(queries, n_bits) == [[], [], []]
    assert coll.bucket(queries[0]) == []
    assert coll.search(queries[:0], 5) == []
    assert len(coll) == 0 and list(coll.ids()) == []


def test_k_larger_than_collection_has_no_sentinel(tmp_path: Path) -> None:
    coll = Collection.create(tmp_path / "c", 64, FP)
    coll.upsert(["only"], np.full((1, 8), 7, dtype=np.uint8))
    (hits,) = coll.search(np.zeros((1, 8), dtype=np.uint8), 1000)
    assert hits == [Hit("only", 3 * 8, {})]


@pytest.mark.parametrize("radius", [0, 1, 3, "all"])
@pytest.mark.parametrize("n_bits", N_BITS)
def test_range_search_matches_oracle(tmp_path: Path, n_bits: int, radius: int | str) -> None:
    coll, state = make(tmp_path, n_bits, 40)
    queries = np.concatenate([clustered_codes(np.random.default_rng(2), 6, n_bits), state["item-011"][None]])
    r = n_bits if radius == "all" else int(radius)
    got = coll.range_search(queries, r)
    assert as_pairs(got) == expected_range(state, queries, r, coll.n_bytes)
    if radius == "all":
        assert all(len(hits) == len(state) for hits in got)


@pytest.mark.parametrize("n_bits", N_BITS)
def test_radius_is_inclusive(tmp_path: Path, n_bits: int) -> None:
    """FAISS keeps d < radius; ours keeps d <= radius, up to the complement at distance n_bits."""
    query = np.zeros(n_bits // 8, dtype=np.uint8)
    codes = np.zeros((5, n_bits // 8), dtype=np.uint8)
    for d in range(1, 4):  # item d at distance d: its first d bits set
        codes[d, 0] = (1 << d) - 1
    codes[4] = 0xFF  # the complement: distance n_bits
    coll = Collection.create(tmp_path / "c", n_bits, FP)
    coll.upsert(["d0", "d1", "d2", "d3", "dmax"], codes)
    for radius in range(4):
        hits = coll.range_search(query[None], radius)[0]
        assert [h.id for h in hits] == [f"d{d}" for d in range(radius + 1)]
    assert [h.distance for h in coll.range_search(query[None], n_bits - 1)[0]] == [0, 1, 2, 3]
    assert [h.distance for h in coll.range_search(query[None], n_bits)[0]] == [0, 1, 2, 3, n_bits]
    assert len(coll.range_search(query[None], 10**12)[0]) == 5  # a huge radius is clamped, not overflowed


@pytest.mark.parametrize("n_bits", N_BITS)
def test_bucket_matches_exact_duplicates(tmp_path: Path, n_bits: int) -> None:
    coll, state = make(tmp_path, n_bits, 40)
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


def test_include_metadata_flag(tmp_path: Path) -> None:
    coll, state = make(tmp_path, 64, 10)
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
def test_upsert_replaces_code_and_metadata(tmp_path: Path, n_bits: int) -> None:
    coll, state = make(tmp_path, n_bits, 30)
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


@pytest.mark.parametrize("n_bits", N_BITS)
def test_delete_hides_immediately_and_reinsert_works(tmp_path: Path, n_bits: int) -> None:
    coll, state = make(tmp_path, n_bits, 30)
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


def test_metadata_is_stored_as_json(tmp_path: Path) -> None:
    coll = Collection.create(tmp_path / "c", 16, FP)
    meta = {"t": (1, 2), "s": "é\u2028"}
    coll.upsert(["a"], np.zeros((1, 2), dtype=np.uint8), [meta])
    meta["t"] = "mutated after upsert"
    got = coll.get("a").metadata
    assert got == {"t": [1, 2], "s": "é\u2028"}
    got["s"] = "mutated after get"
    assert coll.get("a").metadata["s"] == "é\u2028"


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
def test_wrong_code_length_or_dtype_refused(tmp_path: Path, bad: object) -> None:
    coll = Collection.create(tmp_path / "c", 64, FP)
    with pytest.raises(CodeLengthError) as info:
        coll.upsert(["a", "b"], bad)
    assert info.value.error_type == "code_length" and isinstance(info.value, ValueError)
    with pytest.raises(CodeLengthError):
        coll.search(bad, 1)
    with pytest.raises(CodeLengthError):
        coll.range_search(bad, 1)
    with pytest.raises(CodeLengthError):
        coll.bucket(np.zeros(7, dtype=np.uint8))
    assert len(coll) == 0


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
def test_invalid_items_refused_without_changes(tmp_path: Path, ids: object, metadata: object) -> None:
    coll = Collection.create(tmp_path / "c", 16, FP)
    coll.upsert(["a"], np.ones((1, 2), dtype=np.uint8), [{"keep": 1}])
    with pytest.raises(InvalidItemsError) as info:
        coll.upsert(ids, np.zeros((2, 2), dtype=np.uint8), metadata)
    assert info.value.error_type == "invalid_items" and isinstance(info.value, ValueError)
    assert list(coll.ids()) == ["a"] and coll.get("a").metadata == {"keep": 1}
    np.testing.assert_array_equal(coll.get("a").code, [1, 1])


def test_invalid_query_refused(tmp_path: Path) -> None:
    coll, _ = make(tmp_path, 16, 5)
    query = np.zeros((1, 2), dtype=np.uint8)
    for k in (0, -1, True, 2.0):
        with pytest.raises(InvalidQueryError):
            coll.search(query, k)
    with pytest.raises(InvalidQueryError):
        coll.range_search(query, -1)
    with pytest.raises(InvalidItemsError):
        coll.delete("item-000")


@pytest.mark.parametrize(
    "kwargs",
    [
        {"n_bits": 0},
        {"n_bits": 12},
        {"n_bits": -8},
        {"fingerprint": ""},
        {"index_kind": "ivf"},  # not yet supported
        {"count": -1},
        {"count": 3, "next_id": 2},  # fewer internal ids than items
    ],
)
def test_manifest_validates_itself(kwargs: dict) -> None:
    with pytest.raises(InvalidManifestError):
        Manifest(**{"n_bits": 64, "fingerprint": FP, **kwargs})


def test_manifest_from_dict_rejects_unknown_keys() -> None:
    raw = {"n_bits": 64, "fingerprint": FP}
    assert Manifest.from_dict(raw).n_bytes == 8
    with pytest.raises(InvalidManifestError, match="unknown"):
        Manifest.from_dict({**raw, "colour": "red"})


def test_error_types_are_distinct_snake_case() -> None:
    classes = [c for c in vars(errors_module).values() if isinstance(c, type) and issubclass(c, CollectionError)]
    types = [c.error_type for c in classes]
    assert len(classes) >= 9 and len(set(types)) == len(types)
    assert all(t.isidentifier() and t == t.lower() for t in types)


# ---- the directory -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("n_bits", N_BITS)
def test_save_open_round_trip_is_exact(tmp_path: Path, n_bits: int) -> None:
    coll, state = make(tmp_path, n_bits, 30)
    rng = np.random.default_rng(4)
    new_codes = rng.integers(0, 256, (2, n_bits // 8), dtype=np.uint8)
    coll.upsert(["item-004", "item-020"], new_codes, [{"u": 1}, {}])
    coll.delete(["item-001", "item-009"])
    coll.save()
    assert sorted(p.name for p in coll.path.iterdir()) == ["index.faiss", "items.jsonl", "manifest.json"]

    again = Collection.open(coll.path, expected_fingerprint=FP)
    assert again.manifest == coll.manifest and again.manifest.count == 28
    assert list(again.ids()) == list(coll.ids())
    for item_id in coll.ids():
        a, b = coll.get(item_id), again.get(item_id)
        assert a.metadata == b.metadata and a.id == b.id
        np.testing.assert_array_equal(a.code, b.code)
    queries = np.concatenate([clustered_codes(rng, 5, n_bits), coll.get("item-004").code[None]])
    assert again.search(queries, 7) == coll.search(queries, 7)
    assert again.range_search(queries, 3) == coll.range_search(queries, 3)

    # internal ids are never reused after a reopen: new items must not collide with old ones
    again.upsert(["fresh"], queries[:1])
    assert again.get("fresh") is not None and len(again) == 29
    np.testing.assert_array_equal(again.get("item-004").code, coll.get("item-004").code)


def test_fingerprint_mismatch_refused(tmp_path: Path) -> None:
    Collection.create(tmp_path / "c", 64, "model-a")
    with pytest.raises(FingerprintMismatchError) as info:
        Collection.open(tmp_path / "c", expected_fingerprint="model-b")
    assert "model-a" in str(info.value) and "model-b" in str(info.value)
    assert info.value.error_type == "fingerprint_mismatch"
    assert Collection.open(tmp_path / "c").manifest.fingerprint == "model-a"
    with pytest.raises(FingerprintMismatchError):
        Collection.open_or_create(tmp_path / "c", 64, "model-b")


def test_create_on_existing_refused(tmp_path: Path) -> None:
    coll, _ = make(tmp_path, 64, 5)
    with pytest.raises(CollectionExistsError) as info:
        Collection.create(coll.path, 64, FP)
    assert info.value.error_type == "collection_exists"
    assert len(Collection.open_or_create(coll.path, 64, FP)) == 5
    with pytest.raises(CollectionExistsError):
        Collection.open_or_create(coll.path, 128, FP)
    fresh = Collection.open_or_create(tmp_path / "other", 32, FP)
    assert len(fresh) == 0 and fresh.n_bytes == 4 and (fresh.path / "manifest.json").exists()


def test_open_missing_collection(tmp_path: Path) -> None:
    with pytest.raises(CollectionNotFoundError) as info:
        Collection.open(tmp_path / "nowhere")
    assert info.value.error_type == "collection_not_found" and isinstance(info.value, FileNotFoundError)


@pytest.mark.parametrize("name", ["manifest.json", "index.faiss", "items.jsonl"])
@pytest.mark.parametrize("damage", ["garbage", "truncate", "remove"])
def test_corrupt_file_named(tmp_path: Path, name: str, damage: str) -> None:
    coll, _ = make(tmp_path, 64, 5)
    file = coll.path / name
    if damage == "garbage":
        file.write_bytes(b"\xff\x00 not what was written")
    elif damage == "truncate":
        file.write_bytes(file.read_bytes()[: len(file.read_bytes()) // 2])
    else:
        file.unlink()
    no_manifest = (name, damage) == ("manifest.json", "remove")
    expected = CollectionNotFoundError if no_manifest else CorruptCollectionError
    with pytest.raises(expected) as info:
        Collection.open(coll.path)
    if expected is CorruptCollectionError:
        assert name in str(info.value) and info.value.error_type == "corrupt_collection"


def test_items_inconsistent_with_index_is_corrupt(tmp_path: Path) -> None:
    coll, _ = make(tmp_path, 64, 5)
    items = coll.path / "items.jsonl"
    lines = items.read_text().splitlines()
    row = json.loads(lines[0])
    lines[0] = json.dumps({**row, "internal_id": 999})
    items.write_text("\n".join(lines) + "\n")
    with pytest.raises(CorruptCollectionError, match="items.jsonl"):
        Collection.open(coll.path)


def test_concurrent_upserts_and_searches(tmp_path: Path) -> None:
    coll = Collection.create(tmp_path / "c", 64, FP)
    rng = np.random.default_rng(5)
    codes = rng.integers(0, 256, (4, 50, 8), dtype=np.uint8)
    failures: list[BaseException] = []

    def writer(t: int) -> None:
        try:
            for i in range(50):
                coll.upsert([f"w{t}-{i}"], codes[t, i : i + 1])
        except BaseException as exc:  # surfaced in the main thread below
            failures.append(exc)

    def reader() -> None:
        try:
            for _ in range(100):
                for hits in coll.search(codes[0, :3], 5):
                    assert all(h.id.startswith("w") for h in hits)
        except BaseException as exc:  # surfaced in the main thread below
            failures.append(exc)

    threads = [threading.Thread(target=writer, args=(t,)) for t in range(4)]
    threads.append(threading.Thread(target=reader))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not failures and len(coll) == 200
    state = {f"w{t}-{i}": codes[t, i] for t in range(4) for i in range(50)}
    check_search(coll, state, codes[:, 0], 10)
