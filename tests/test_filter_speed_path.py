"""The selective-filter path of a filtered search (issue 22 part 3): the matching rows' internal ids from the payload
index, their codes from the index's memory, kept per filter until the next write. Every result is compared with a
brute force written here (popcount of XOR over the items the filter matches, sorted by (distance, id)), with many
ties, external ids whose order is not the write order, after deletes and upserts, and on every index kind."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hamdex.index import Collection
from hamdex.index import collection as collection_module
from hamdex.index import store as store_module
from hamdex.index.filters import matches, nul_sensitive
from hamdex.index.scan import gather, index_codes
from hamdex.index.store import Store

N_BITS = 16  # short codes: many items at each distance, so ties at the k-th place are the rule
KS = (1, 3, 10, 40)


def item_id(j: int) -> str:
    """External ids ordered unlike the write order (and unlike internal ids): ties must follow these."""
    return f"id-{(j * 7919) % 10007:05d}"


def meta(j: int) -> dict[str, Any]:
    return {"price": j, "tag": f"t{j % 5}", "half": j % 2 == 0}


class Mirror:
    """What the collection should hold: id -> (code, metadata)."""

    def __init__(self) -> None:
        self.items: dict[str, tuple[np.ndarray, dict[str, Any]]] = {}

    def top(self, query: np.ndarray, k: int, where: dict[str, Any], radius: int | None = None) -> list[tuple]:
        rows = []
        for i, (code, m) in self.items.items():
            d = int(np.bitwise_count(code ^ query).sum())
            if matches(m, where) and (radius is None or d <= radius):
                rows.append((d, i))
        return sorted(rows)[:k]


def build(path: Path, n: int, kind: str = "flat", seed: int = 0) -> tuple[Collection, Mirror, np.ndarray]:
    rng = np.random.default_rng(seed)
    codes = rng.integers(0, 4, (n, N_BITS // 8), dtype=np.uint8)  # 2 bits of 16 vary: distances 0-4, ties
    params = {"nlist": 4} if kind == "ivf" else None
    coll = Collection.create(path, N_BITS, "f", index_kind=kind, index_params=params)
    ids = [item_id(j) for j in range(n)]
    coll.upsert(ids, codes, [meta(j) for j in range(n)])
    coll.index_fields(["price"])
    mirror = Mirror()
    mirror.items = {i: (c, meta(j)) for j, (i, c) in enumerate(zip(ids, codes, strict=True))}
    return coll, mirror, rng.integers(0, 4, (6, N_BITS // 8), dtype=np.uint8)


def pairs(hits: list) -> list[tuple[int, str]]:
    return [(h.distance, h.id) for h in hits]


FILTERS: list[dict[str, Any]] = [
    {"price": {"$gte": 100, "$lt": 160}},  # selective, from the payload index
    {"price": {"$gt": 99.5, "$lte": 130}},  # bounds between integers
    {"price": {"$in": [3, 50, 51, 52, 700, 10_000]}},
    {"tag": "t3", "price": {"$lt": 300}},  # an unindexed field too
    {"$or": [{"price": {"$lt": 20}}, {"tag": {"$in": ["t1"]}, "half": False}]},
    {"tag": {"$ne": "t0"}, "price": {"$gte": 500}},  # a negation
    {"price": {"$gte": 10_000}},  # nothing
    {"half": True},  # broad: half of the items
]


def agree(got: list[tuple[int, str]], want: list[tuple[int, str]]) -> bool:
    """Equal distances, and equal ids wherever the k-th distance is not tied (over-fetching through FAISS keeps
    FAISS's choice among items tied at the k-th place; the exact scan of a selection keeps the smallest ids)."""
    last = want[-1][0] if want else 0
    same = {p for p in got if p[0] < last} == {p for p in want if p[0] < last}
    return [d for d, _ in got] == [d for d, _ in want] and same and got == sorted(got)


@pytest.mark.parametrize("scan_max", [50_000, 200])  # 200: the broad filters go through over-fetching
def test_equal_to_brute_force_at_several_k(tmp_path: Path, scan_max: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(collection_module, "FILTER_SCAN_MAX", scan_max)
    coll, mirror, queries = build(tmp_path / "c", 1000)
    for where in FILTERS:
        exact = coll.count_matching(where) <= scan_max  # the exact scan of the selection: ties by id too
        for k in KS:
            want = [mirror.top(q, k, where) for q in queries]
            for _ in range(2):  # the second time from what the first kept
                got = [pairs(h) for h in coll.search(queries, k, where=where)]
                assert got == want if exact else all(map(agree, got, want)), (where, k)
            one = [coll.search(q[None], k, where=where, include_metadata=False)[0] for q in queries]
            assert [pairs(h) for h in one] == want if exact else all(map(agree, map(pairs, one), want))
            assert all(h.metadata is None for hits in one for h in hits)
    coll.close()


def test_metadata_and_radius(tmp_path: Path) -> None:
    coll, mirror, queries = build(tmp_path / "c", 600)
    where = {"price": {"$gte": 200, "$lt": 260}}
    for hits in coll.search(queries, 10, where=where):
        assert all(h.metadata == mirror.items[h.id][1] for h in hits)
    for radius in (0, 1, 3):
        for k in (1, 10, 100):
            got = coll.range_search(queries, radius, k=k, where=where)
            assert [pairs(h) for h in got] == [mirror.top(q, k, where, radius) for q in queries]
    coll.close()


def test_writes_empty_what_was_kept(tmp_path: Path) -> None:
    """A filter's rows are kept until the next write: deletes, upserts that move items in or out of the filter or
    change their codes, and a delete by filter are all seen by the next search."""
    coll, mirror, queries = build(tmp_path / "c", 800, seed=3)
    where = {"price": {"$gte": 100, "$lt": 200}}
    rng = random.Random(1)

    def check() -> None:
        for k in (1, 10, 40):
            for _ in range(2):
                got = coll.search(queries, k, where=where)
                assert [pairs(h) for h in got] == [mirror.top(q, k, where) for q in queries]

    check()
    gone = [item_id(j) for j in range(100, 200, 3)]
    coll.delete(gone)
    for i in gone:
        del mirror.items[i]
    check()
    moved = [item_id(j) for j in rng.sample(range(800), 60)]  # new codes, and prices in or out of the range
    codes = np.zeros((len(moved), N_BITS // 8), np.uint8)  # distance = the query's weight: close to every query
    metas = [{"price": rng.randrange(50, 250), "tag": "m"} for _ in moved]
    coll.upsert(moved, codes, metas)
    for i, c, m in zip(moved, codes, metas, strict=True):
        mirror.items[i] = (c, m)
    check()
    deleted, complete = coll.delete_where({"price": {"$gte": 150, "$lt": 170}})
    assert complete and deleted == sum(150 <= m["price"] < 170 for _, m in mirror.items.values())
    mirror.items = {i: v for i, v in mirror.items.items() if not 150 <= v[1]["price"] < 170}
    check()
    coll.close()
    with Collection.open(tmp_path / "c") as again:  # reopened: from the snapshot and the store
        for k in (1, 10):
            assert [pairs(h) for h in again.search(queries, k, where=where)] == [
                mirror.top(q, k, where) for q in queries
            ]


@pytest.mark.parametrize("kind", ["flat", "hnsw", "ivf", "hash"])
def test_every_kind_is_exact(tmp_path: Path, kind: str) -> None:
    """Codes from the index's memory (flat, hnsw, tombstones included) or from the store (ivf, hash)."""
    coll, mirror, queries = build(tmp_path / "c", 500, kind)
    gone = [item_id(j) for j in range(0, 500, 4)]
    coll.delete(gone)  # hnsw and hash keep tombstones
    for i in gone:
        del mirror.items[i]
    for where in FILTERS[:6]:
        for k in (1, 10):
            got = coll.search(queries, k, where=where)
            assert [pairs(h) for h in got] == [mirror.top(q, k, where) for q in queries], (kind, where)
    coll.close()


def test_rows_not_in_the_index_yet_are_read_from_the_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A write committed to the store and not yet applied to the index (a write in flight): its rows' codes come
    from the store."""
    coll, mirror, queries = build(tmp_path / "c", 300)
    where = {"price": {"$gte": 1000}}
    new = [f"new-{j}" for j in range(20)]
    codes = np.random.default_rng(5).integers(0, 4, (20, N_BITS // 8), dtype=np.uint8)
    coll._store.upsert(new, codes, [f'{{"price": {1000 + j}}}' for j in range(20)])  # the store only
    for i, c, j in zip(new, codes, range(20), strict=True):
        mirror.items[i] = (c, {"price": 1000 + j})
    got = coll.search(queries, 5, where=where)
    assert [pairs(h) for h in got] == [mirror.top(q, 5, where) for q in queries]
    coll.close()


def test_gather_checks_every_place() -> None:
    from hamdex.index.kinds import make_hamming_index

    index = make_hamming_index("flat", 64)
    codes = np.random.default_rng(0).integers(0, 256, (50, 8), dtype=np.uint8)
    index.add(codes, np.arange(50, dtype=np.int64) * 3)
    for removed in ([], [0, 9, 147]):
        index.remove(np.asarray(removed, np.int64))
        ids, held = index_codes(index.index)
        wanted = np.asarray([3, 4, 0, 147, 144, 150, -1, 6], np.int64)
        got, found = gather(ids, held, wanted)
        live = {3 * j: codes[j] for j in range(50) if 3 * j not in removed}
        assert found.tolist() == [int(w) in live for w in wanted]
        for w, row, ok in zip(wanted.tolist(), got, found.tolist(), strict=True):
            assert (row == (live[w] if ok else 0)).all()
    assert index_codes(make_hamming_index("hash", 64).index) is None
    hnsw = make_hamming_index("hnsw", 64)  # its graph's storage is a flat array too, reloaded from a snapshot
    hnsw.add(codes, np.arange(50, dtype=np.int64))
    again = make_hamming_index("hnsw", 64)
    again.load_arrays(hnsw.to_arrays())
    ids, held = index_codes(again.index)
    assert ids.tolist() == list(range(50)) and (held == codes).all()


def test_index_only_selection(tmp_path: Path) -> None:
    """A range on an indexed number reads no row's metadata (SQLite reads the indexed values from the index):
    only rows within a hair of a bound are re-checked."""
    coll, _, _ = build(tmp_path / "c", 400)
    store: Store = coll._store
    where = {"price": {"$gte": 10, "$lt": 20}}
    plan = store.query_plan(where, selection=True)
    assert "SEARCH items USING INDEX pf_" in plan, plan
    sql, params = store_module._selection_sql(where, 100)
    ops = store._query("EXPLAIN " + sql, params)  # (addr, opcode, p1, p2, ...)
    root = store._query("SELECT rootpage FROM sqlite_master WHERE name = 'items'")[0][0]
    table = [op[2] for op in ops if op[1] == "OpenRead" and op[3] == root]  # the cursor on the table itself
    assert not [op for op in ops if op[1] == "Column" and op[2] in table], "a column read from the table"
    got = store.matching_internal(where, 1000)
    assert got is not None and got.tolist() == sorted(got.tolist()) and len(got) == 10
    assert store.matching_internal(where, 9) is None
    coll.close()


def test_nul_sensitive() -> None:
    assert not nul_sensitive({"price": {"$gte": 1, "$lt": 2}, "flag": True, "x": None, "y": {"$exists": False}})
    assert not nul_sensitive({"$or": [{"a": 1}, {"b": {"$in": [1, 2.5]}}]})
    assert nul_sensitive({"a": "x"})
    assert nul_sensitive({"a": {"$in": [1, "x"]}})
    assert nul_sensitive({"$and": [{"a": 1}, {"b": {"$ne": 2}}]})
    assert nul_sensitive({"a": {"$nin": [1]}})
    assert nul_sensitive({"a": {"$gt": "m"}})


def test_nul_strings_still_decided_exactly(tmp_path: Path) -> None:
    coll = Collection.create(tmp_path / "c", N_BITS, "f")
    values = ["a", "a\x00b", "a\x00", "b", 1, None]
    coll.upsert([f"i{j}" for j in range(len(values))], np.zeros((len(values), 2), np.uint8), [{"s": v} for v in values])
    coll.index_fields(["s"])
    q = np.zeros((1, 2), np.uint8)
    for where, want in [
        ({"s": "a"}, ["i0"]),
        ({"s": "a\x00b"}, ["i1"]),
        ({"s": {"$ne": "a"}}, ["i1", "i2", "i3", "i4", "i5"]),
        ({"s": {"$gt": "a"}}, ["i1", "i2", "i3"]),
        ({"s": {"$lte": "a"}}, ["i0"]),
    ]:
        assert [h.id for h in coll.search(q, 10, where=where)[0]] == want, where
    coll.close()
