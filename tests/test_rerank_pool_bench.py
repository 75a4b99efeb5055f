"""benchmarks/rerank_pool.py on a small collection: every configuration runs through Collection.search, a rerank
over every item finds the exact cosine top 10, and the table holds each row with the baseline's ratio."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from hamdex.index import Collection

from benchmarks import rerank_pool
from benchmarks.embeddings import exact_top
from tests.helpers import random_codes


def test_measure_ranks_through_the_collection(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    n, n_bits, d = 300, 32, 16
    db, queries = rng.standard_normal((n, d)).astype(np.float32), rng.standard_normal((20, d)).astype(np.float32)
    db /= np.linalg.norm(db, axis=1, keepdims=True)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    ids = [f"d{i}" for i in range(n)]
    scores = rng.standard_normal((20, n_bits)).astype(np.float32)
    q_codes = np.packbits(scores > 0, axis=1, bitorder="little")
    truth = exact_top(queries, db.astype(np.float16).astype(np.float32), 10)
    with Collection.create(tmp_path / "c", n_bits, "fp", vectors="float16") as coll:
        coll.upsert(ids, random_codes(n, n_bits, seed=1), vectors=db)
        rows = rerank_pool.measure(coll, q_codes, queries, scores, truth, ids)
    assert set(rows) == set(rerank_pool.configurations())
    assert rows[f"rerank {rerank_pool.POOL}"]["recall@10"] == 1.0  # every item a candidate: the exact top 10
    assert rows["plain Hamming"]["recall@10"] < 0.5  # random codes know nothing of the vectors
    assert all(row["ms_per_query"] > 0 for row in rows.values())
    table = rerank_pool.format_markdown({"corpus": "toy", "bits": n_bits, "database": n, "queries": 20, "rows": rows})
    assert table.count("\n| ") == len(rows) + 1 and "| 1.00x |" in table
