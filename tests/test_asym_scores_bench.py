"""benchmarks/asym_scores.py: every way of scoring a query against a candidate's bits, on a small synthetic corpus
through the CLI's own train command (cut to two epochs); the service's way agrees with the embeddings benchmark."""

from __future__ import annotations

import numpy as np

from tests.helpers import short_cli_train


def test_every_scoring_on_a_small_corpus(monkeypatch):
    from benchmarks import asym_scores, embedding_data, embeddings

    rng = np.random.default_rng(0)
    centres = rng.standard_normal((4, 32))
    unit = lambda x: (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)  # noqa: E731
    db = unit(centres[np.repeat(np.arange(4), 60)] + 0.5 * rng.standard_normal((240, 32)))
    q = unit(centres[np.arange(40) % 4] + 0.5 * rng.standard_normal((40, 32)))
    labels = np.repeat(np.arange(4), 60).astype(str)
    corpus = embedding_data.Corpus([""] * 240, labels, [""] * 40, (np.arange(40) % 4).astype(str))
    monkeypatch.setattr(embedding_data, "cached", lambda name: (corpus, db, q))
    seen = short_cli_train(monkeypatch)
    captured = {}
    real = asym_scores.scores_table

    def keep_hasher(hasher, *args):
        captured["hasher"] = hasher
        return real(hasher, *args)

    monkeypatch.setattr(asym_scores, "scores_table", keep_hasher)
    table = asym_scores.main(["--corpus", "trec", "--bits", "16"])
    assert seen == [{"out": seen[0]["out"], "bits": 16, "device": "cpu"}]  # the defaults
    assert list(table)[:2] == ["plain Hamming", "clipped logit (the service's)"] and len(table) == 7
    assert all(0 <= v <= 1 for v in table.values())
    # the service's scoring here is the embeddings benchmark's recall@10_asym, and plain Hamming its recall@10
    from hamdex.models.bits import unpack
    from hamdex.models.rerank import query_scores

    hasher = captured["hasher"]
    db_out, q_out = hasher.encode(db), hasher.encode(q, latent=True)
    codes = embeddings.Codes(
        unpack(db_out.codes).astype(bool), unpack(q_out.codes).astype(bool), query_scores(hasher, q_out.latent)
    )
    row = embeddings.score_codes(codes, db, q, (corpus.query_labels, corpus.db_labels), embeddings.exact_top(q, db, 10))
    assert table["plain Hamming"] == row["recall@10"]
    assert table["clipped logit (the service's)"] == row["recall@10_asym"]
