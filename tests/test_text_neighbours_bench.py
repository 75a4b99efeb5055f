"""benchmarks/text_neighbours.py wiring on a tiny corpus: the purity of each neighbour space, and one model
trained as the text preset resolves it (cut to a few steps), scored with both read-outs beside ITQ."""

from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import synthetic_texts


@pytest.fixture
def bench(monkeypatch):
    from benchmarks import robustness, text_neighbours

    texts = synthetic_texts()
    labels = [str(i // 10) for i in range(len(texts))]  # synthetic_texts: four topics of ten texts each
    db, q = [i for i in range(len(texts)) if i % 5], [i for i in range(len(texts)) if not i % 5]
    split = robustness.Split(
        robustness._block([texts[i] for i in db], [labels[i] for i in db], "text"),
        robustness._block([texts[i] for i in q], [labels[i] for i in q], "text"),
    )
    monkeypatch.setitem(text_neighbours.DATASETS, "tiny", lambda: split)
    return text_neighbours


def test_purity_of_each_space(bench):
    shares = bench.purity("tiny", k=3)
    assert set(shares) == {"input_tfidf", "bm25", "lsa50", "bm25+lsa_0.5", "bm25+lsa_1"}
    assert all(0.0 <= v <= 1.0 for v in shares.values())
    assert shares["bm25+lsa_0.5"] > 0.5  # four topics: chance is 0.25


def test_train_scores_both_read_outs_beside_itq(bench, monkeypatch):
    from hamdex.models import presets

    resolve = presets.resolve
    monkeypatch.setattr(  # a few steps and a small encoder: this tests the wiring, not the quality
        presets,
        "resolve",
        lambda kind, n, model, train: resolve(kind, n, {**model, "hidden": (32,)}, {**train, "epochs": 2}),
    )
    out = bench.main(["train", "--corpora", "tiny", "--bits", "16", "--settings", "before,now"])
    assert set(out) == {"tiny-16:before", "tiny-16:now"}
    for row in out.values():
        assert set(row) >= {"threshold", "itq", "itq_baseline", "steps"}
        assert all(0.0 <= row[m]["map"] <= 1.0 for m in ("threshold", "itq", "itq_baseline"))
    np.testing.assert_equal(out["tiny-16:before"]["itq_baseline"], out["tiny-16:now"]["itq_baseline"])
