"""benchmarks/embeddings.py: the ranking helpers against brute force, and one corpus through every method (hamdex
through the CLI's own train command, cut to two epochs) with the JSON layout issue 21 asks for."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.helpers import short_cli_train


@pytest.fixture(scope="module")
def bench():
    from benchmarks import embeddings

    return embeddings


def test_hamming_top_orders_by_distance_then_row(bench):
    rng = np.random.default_rng(0)
    db, q = rng.random((50, 12)) < 0.5, rng.random((4, 12)) < 0.5
    top = bench.hamming_top(q, db, 50)
    dist = (q[:, None, :] != db[None, :, :]).sum(-1)  # (4, 50) brute force
    for row, order in zip(dist, top, strict=True):
        assert list(order) == sorted(range(50), key=lambda j: (row[j], j))


def test_rescoring_and_recall(bench):
    cand = np.array([[3, 1, 2, 0]])
    assert bench.rescored(cand, np.array([[0.1, 0.9, 0.5, 0.9]]), 3).tolist() == [[1, 0, 2]]  # stable on ties
    assert bench.recall(np.array([[1, 2, 3]]), np.array([[3, 4, 1]])) == pytest.approx(2 / 3)


def test_a_corpus_through_every_method(bench, monkeypatch, tmp_path):

    from benchmarks import embedding_data

    rng = np.random.default_rng(0)
    centres = rng.standard_normal((4, 32))
    unit = lambda x: (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)  # noqa: E731
    labels = np.repeat(np.arange(4), 60).astype(str)
    db = unit(centres[np.repeat(np.arange(4), 60)] + 0.5 * rng.standard_normal((240, 32)))
    q = unit(centres[np.arange(40) % 4] + 0.5 * rng.standard_normal((40, 32)))
    corpus = embedding_data.Corpus([""] * 240, labels, [""] * 40, (np.arange(40) % 4).astype(str))
    monkeypatch.setattr(embedding_data, "cached", lambda name: (corpus, db, q))
    seen = short_cli_train(monkeypatch)  # the defaults, but two epochs and a small encoder
    out = bench.main(["--corpora", "trec", "--widths", "16", "--featurizer-docs", "0", "--qps-items", "1000",
                      "--json", str(tmp_path / "e.json")])  # fmt: skip
    assert seen == [{"out": seen[0]["out"], "bits": 16, "device": "cpu"}]  # nothing else is set
    saved = json.loads((tmp_path / "e.json").read_text())
    assert set(saved["trec"]) == {"float_cosine", "hamdex", "sign_bq", "itq", "lsh_centered"}
    assert set(saved["trec"]["sign_bq"]) == {"32"} and set(saved["trec"]["itq"]) == {"16"}  # a bit per dimension
    for method in ("hamdex", "itq", "lsh_centered"):
        row = saved["trec"][method]["16"]
        assert {"recall@10", "recall@10_asym", "recall@10_rerank100", "p@100"} <= set(row)
        assert all(0 <= row[k] <= 1 for k in ("recall@10", "recall@10_asym", "recall@10_rerank100", "p@100"))
    bq = saved["trec"]["sign_bq"]["32"]
    assert bq["recall@10_rerank100"] >= bq["recall@10"]
    # an exact rerank of a longer shortlist never finds fewer of the true top 10
    assert bq["recall@10_rerank100"] <= bq["recall@10_rerank200"] <= bq["recall@10_rerank500"]
    assert bq["recall@10_rerank500"] <= bq["recall@10_rerank1000"]
    # 100 of the Hamming top 1,000 chosen by the asymmetric score: a subset of what the 1,000 rerank sees
    for row in (bq, saved["trec"]["itq"]["16"], saved["trec"]["hamdex"]["16"]):
        assert 0 < row["recall@10_asym1000_rerank100"] <= row["recall@10_rerank1000"]
    assert saved["search_qps_1m"] and out["trec"]["float_cosine"]["p@100"] > 0.5
