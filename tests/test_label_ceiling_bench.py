"""benchmarks/label_ceiling.py: the exact-cosine label scores against a brute-force count, and the table."""

from __future__ import annotations

import numpy as np

from benchmarks import label_ceiling


def test_float_scores_match_a_brute_force_ranking() -> None:
    rng = np.random.default_rng(0)
    db, q = rng.standard_normal((300, 6)), rng.standard_normal((40, 6))
    db_labels, q_labels = rng.integers(0, 3, 300), rng.integers(0, 3, 40)
    got = label_ceiling.float_scores(q, db, q_labels, db_labels, k=100)
    cos = (q / np.linalg.norm(q, axis=1, keepdims=True)) @ (db / np.linalg.norm(db, axis=1, keepdims=True)).T
    aps, p100 = [], []
    for i in range(40):
        rel = db_labels[np.argsort(-cos[i])] == q_labels[i]
        ranks = np.flatnonzero(rel) + 1
        aps.append(np.mean(np.arange(1, len(ranks) + 1) / ranks))
        p100.append(rel[:100].mean())
    assert abs(got["map"] - np.mean(aps)) < 1e-9
    assert abs(got["p@100"] - np.mean(p100)) < 1e-9
    # labels that follow the first coordinate's sign: the cosine ranking puts them first, chance does not
    signed = (db[:, 0] > 0).astype(int), (q[:, 0] > 0).astype(int)
    assert label_ceiling.float_scores(q, db, signed[1], signed[0])["map"] > got["map"] + 0.1


def test_the_table_has_a_row_per_similarity_and_a_column_per_cell() -> None:
    cell = {"tfidf cosine": {"map": 0.5, "p@100": 0.6}, "itq 16": {"map": 0.4, "p@100": 0.5}, "goal 16": {"map": 0.44}}
    table = label_ceiling.format_markdown({"a": cell, "b": cell})
    assert "| tfidf cosine | 0.500 / 0.600 | 0.500 / 0.600 |" in table and "| goal 16 | 0.440 | 0.440 |" in table
