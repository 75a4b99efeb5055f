"""Metadata filters (index.filters): seeded random filters against a brute-force evaluator written here, type
strictness, bounds, and payload indexes used by SQLite's planner."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hamdex.index import Collection
from hamdex.index.errors import InvalidQueryError
from hamdex.index.filters import MAX_FILTER_DEPTH, MAX_FILTER_TERMS, MAX_IN_VALUES, check_filter

N_BITS = 64
FIELDS = ["a", "b", "c", "é", 'q"k']
VALUES: list[Any] = [
    None, True, False, 0, 1, -1, 2, 1.0, 1.5, -2.5, 2**53 + 1, 2**63, -(2**63) - 1, 2**70, 1e300, 5e-324,
    "", "a", "ab", "a\x00b", "b", "é", "😀", "1", [1], {"x": 1},
]  # fmt: skip
SCALARS = [v for v in VALUES if not isinstance(v, (list, dict))]


def oracle(meta: dict[str, Any], where: dict[str, Any]) -> bool:
    """What a filter means, written independently of index.filters."""
    for key, cond in where.items():
        if key == "$and":
            ok = all(oracle(meta, w) for w in cond)
        elif key == "$or":
            ok = any(oracle(meta, w) for w in cond)
        else:
            ops = cond if isinstance(cond, dict) else {"$eq": cond}
            ok = all(holds(meta, key, op, arg) for op, arg in ops.items())
        if not ok:
            return False
    return True


def kind(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "number"
    return type(value).__name__


def equal(have: Any, want: Any) -> bool:
    return kind(have) == kind(want) and have == want


def holds(meta: dict[str, Any], key: str, op: str, arg: Any) -> bool:
    if op == "$exists":
        return (key in meta) == arg
    if op in ("$ne", "$nin"):
        return not holds(meta, key, op.replace("n", "", 1) if op == "$nin" else "$eq", arg)
    if key not in meta:
        return False
    have = meta[key]
    if op == "$eq":
        return equal(have, arg)
    if op == "$in":
        return any(equal(have, v) for v in arg)
    if kind(have) != kind(arg) or kind(arg) not in ("number", "str"):
        return False
    return {"$gt": have > arg, "$gte": have >= arg, "$lt": have < arg, "$lte": have <= arg}[op]


def random_metadata(rng: random.Random) -> dict[str, Any]:
    return {f: rng.choice(VALUES) for f in FIELDS if rng.random() < 0.8}


def random_condition(rng: random.Random) -> Any:
    op = rng.choice(["plain", "$eq", "$ne", "$in", "$nin", "$gt", "$gte", "$lt", "$lte", "$exists"])
    if op == "plain":
        return rng.choice(SCALARS)
    if op in ("$in", "$nin"):
        return {op: rng.sample(SCALARS, rng.randint(0, 4))}
    if op == "$exists":
        return {op: rng.random() < 0.5}
    if op.startswith(("$g", "$l")):
        return {op: rng.choice([v for v in SCALARS if kind(v) in ("number", "str")])}
    return {op: rng.choice(SCALARS)}


def random_filter(rng: random.Random, depth: int = 0) -> dict[str, Any]:
    where: dict[str, Any] = {}
    for _ in range(rng.randint(1, 2)):
        if depth < 3 and rng.random() < 0.3:
            where[rng.choice(["$and", "$or"])] = [random_filter(rng, depth + 1) for _ in range(rng.randint(1, 3))]
        else:
            where[rng.choice(FIELDS)] = random_condition(rng)
    return where


@pytest.fixture
def collection(tmp_path: Path):
    coll = Collection.create(tmp_path / "c", N_BITS, "fp")
    yield coll
    coll.close()


def fill(coll: Collection, metas: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    rng = np.random.default_rng(0)
    ids = [f"i{i:04d}" for i in range(len(metas))]
    coll.upsert(ids, rng.integers(0, 256, (len(ids), N_BITS // 8), dtype=np.uint8), metas)
    return dict(zip(ids, metas, strict=True))


@pytest.mark.parametrize("indexed", [False, True])
def test_random_filters_match_the_oracle(collection: Collection, indexed: bool) -> None:
    rng = random.Random(7)
    items = fill(collection, [random_metadata(rng) for _ in range(400)])
    gone = rng.sample(sorted(items), 40)  # removed rows stay in the store, marked: no filter may find them
    collection.delete(gone)
    items = {i: m for i, m in items.items() if i not in gone}
    if indexed:
        collection.index_fields(["a", "b"])
    query = np.zeros((1, N_BITS // 8), np.uint8)
    for _ in range(400):
        where = random_filter(rng)
        want = sorted(i for i, m in items.items() if oracle(m, where))
        got = sorted(h.id for h in collection.search(query, len(items), where=where, include_metadata=False)[0])
        assert got == want, where
        # the over-fetch path (FAISS hits described through the filter) agrees too
        few = collection.search(query, 3, where=where)[0]
        assert all(h.id in want for h in few) and len(few) == min(3, len(want)), where


@pytest.mark.parametrize(
    ("where", "ids"),
    [
        ({"x": 1}, ["int", "float"]),
        ({"x": {"$gt": 0}}, ["int", "float"]),
        ({"x": {"$gte": "0"}}, ["str"]),
        ({"x": True}, ["bool"]),
        ({"x": {"$ne": 1}}, ["bool", "str", "null", "none"]),
        ({"x": {"$in": [None, "1"]}}, ["str", "null"]),
        ({"x": {"$nin": [1, True]}}, ["str", "null", "none"]),
        ({"x": {"$exists": False}}, ["none"]),
        ({"x": {"$exists": True, "$lt": 2}}, ["int", "float"]),
        ({"$or": [{"x": True}, {"x": None}]}, ["bool", "null"]),
    ],
)
def test_type_strict(collection: Collection, where: dict[str, Any], ids: list[str]) -> None:
    metas = {"int": {"x": 1}, "float": {"x": 1.0}, "bool": {"x": True}, "str": {"x": "1"}, "null": {"x": None}}
    metas["none"] = {}
    query = np.zeros((1, N_BITS // 8), np.uint8)
    collection.upsert(list(metas), np.zeros((len(metas), N_BITS // 8), np.uint8), list(metas.values()))
    assert sorted(h.id for h in collection.search(query, 10, where=where)[0]) == sorted(ids)


@pytest.mark.parametrize(
    "where",
    [
        {"x": {"$gt": True}},
        {"x": {"$lt": None}},
        {"x": {"$in": 1}},
        {"x": {"$in": list(range(MAX_IN_VALUES + 1))}},
        {"x": {"$exists": 1}},
        {"x": {"$regex": "a"}},
        {"x": {}},
        {"x": [1]},
        {"x": {"$eq": [1]}},
        {"$not": {"x": 1}},
        {"$and": []},
        {"$or": {"x": 1}},
        {"": 1},
        {"x": float("nan")},
        {"x": "\ud800"},
        {f"f{i}": i for i in range(MAX_FILTER_TERMS + 1)},
    ],
)
def test_refused(where: dict[str, Any]) -> None:
    with pytest.raises(InvalidQueryError):
        check_filter(where)


def test_depth_bound() -> None:
    where: dict[str, Any] = {"x": 1}
    for _ in range(MAX_FILTER_DEPTH - 1):
        where = {"$and": [where]}
    check_filter(where)
    with pytest.raises(InvalidQueryError, match="deeper"):
        check_filter({"$or": [where]})


def test_payload_index_is_used_by_the_planner(collection: Collection) -> None:
    fill(collection, [{"price": i, "tag": str(i % 3)} for i in range(200)])
    collection.index_fields(["price"])
    assert collection.indexed_fields() == ["price"]
    plan = collection._store.query_plan({"price": {"$gte": 10, "$lt": 20}})
    assert "SEARCH items USING INDEX pf_" in plan, plan  # a range of the index, not a scan of every row
    plan = collection._store.query_plan({"tag": "1"})
    assert "SEARCH" not in plan, plan  # no index on tag: every live row is read
    # durable: the index and its declaration survive reopening
    path = collection.path
    collection.close()
    reopened = Collection.open(path)
    try:
        assert reopened.indexed_fields() == ["price"]
        assert "SEARCH items USING INDEX pf_" in reopened._store.query_plan({"price": {"$in": [3, 4]}})
        hits = reopened.search(np.zeros((1, N_BITS // 8), np.uint8), 50, where={"price": {"$gte": 10, "$lt": 20}})[0]
        assert sorted(h.id for h in hits) == [f"i{i:04d}" for i in range(10, 20)]
    finally:
        reopened.close()


@pytest.mark.parametrize("name", ["", "$x", 'a"b', "é", "a\x00", "x" * 65])
def test_payload_index_field_names_are_checked(collection: Collection, name: str) -> None:
    with pytest.raises(InvalidQueryError):
        collection.index_fields([name])


@pytest.mark.parametrize("backend", ["faiss", pytest.param("milvus", marks=pytest.mark.milvus)])
def test_both_backends_agree_with_the_oracle(tmp_path: Path, backend: str) -> None:
    """Milvus is sent what its filter language expresses exactly (top-level equality) and scans with the Python
    evaluator otherwise: the same results as FAISS, never wrong ones."""
    if backend == "milvus":
        pytest.importorskip("pymilvus", reason="the milvus extra is not installed")
    from hamdex.index import create_collection

    coll = create_collection(tmp_path / "b", N_BITS, "fp", backend=backend)
    try:
        rng = random.Random(11)
        items = fill(coll, [random_metadata(rng) for _ in range(120)])
        query = np.zeros((1, N_BITS // 8), np.uint8)
        for _ in range(40):
            where = random_filter(rng)
            want = sorted(i for i, m in items.items() if oracle(m, where))
            got = coll.search(query, len(items), where=where, include_metadata=False)[0]
            assert sorted(h.id for h in got) == want, where
    finally:
        coll.close()
