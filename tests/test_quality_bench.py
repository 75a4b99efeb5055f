"""The retrieval-quality harness (benchmarks/quality.py) in quick mode, in-process, on a 20 Newsgroups subset.

Sanity bounds that can fail: the default model beats ITQ at 32 bits; every reported metric is a finite score in
[0, 1] (train seconds finite and >= 0); tie-aware and plain precision agree exactly when no distances tie.

The quick 20NG run trains only the default model (the other bottlenecks have their own unit tests, and each costs
another training); on 3,000 training posts, 10 epochs, it measured P@100 0.375 against ITQ's 0.333 (300 queries).
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch
from hamdex.evaluation import harness
from hamdex.evaluation.metrics import precision_at_k, precision_at_k_tie_aware
from hamdex.models import data
from hamdex.models.bits import pack
from hamdex.models.bottlenecks import BOTTLENECKS

MARGIN = 0.02  # P@100 points the default model must lead ITQ by (measured lead: 0.04)
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """On a busy 2-core machine two OpenMP threads contending with other work train 3-10x slower than one."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture(scope="module")
def quick_20ng(tmp_path_factory: pytest.TempPathFactory) -> tuple[harness.DatasetRun, list[Path]]:
    if data.demo_corpus_path() is None:
        pytest.skip("the 20news-bydate tarball is not at ../shared/data beside the repository")
    with torch_threads(1):
        run = harness.run_dataset(harness.DATASETS["20ng"], [32], quick=True, methods=["hamdex"], progress=False)
    return run, harness.write_plots("20ng", run, tmp_path_factory.mktemp("plots"))


def test_default_model_beats_itq(quick_20ng: tuple[harness.DatasetRun, list[Path]]) -> None:
    rows = quick_20ng[0].results[32]
    for metric in ("p@100", "p@100_tie_aware", "map"):
        assert rows["hamdex"][metric] > rows["itq"][metric] + MARGIN, (metric, rows["hamdex"], rows["itq"])


def test_every_reported_metric_is_a_score(quick_20ng: tuple[harness.DatasetRun, list[Path]]) -> None:
    rows = quick_20ng[0].results[32]
    assert set(rows) == {"hamdex", *harness.BASELINES, "float_cosine"}
    for method, metrics in rows.items():
        expected = {"p@100", "train_seconds"} if method == "float_cosine" else {*harness.SCORE_KEYS, "train_seconds"}
        assert set(metrics) == expected, method
        for key, value in metrics.items():
            assert isinstance(value, float) and math.isfinite(value), (method, key, value)
            assert value >= 0.0 and (key == "train_seconds" or value <= 1.0), (method, key, value)
    assert rows["hamdex"]["train_seconds"] > 0 and rows["lsh"]["train_seconds"] == 0.0


def test_outputs(quick_20ng: tuple[harness.DatasetRun, list[Path]], tmp_path: Path) -> None:
    run, plots = quick_20ng
    results = {"20ng": run.results}
    harness.write_json(results, tmp_path / "out.json")
    assert json.loads((tmp_path / "out.json").read_text()) == {"20ng": {"32": run.results[32]}}
    assert "| 32 | hamdex | " in harness.format_table(results)
    assert "| NASH-DN | 0.6225 |" in harness.format_published(run.results)
    assert set(run.curves) == set(run.results[32]) - {"float_cosine"}
    assert [p.name for p in plots] == [
        "20ng_precision_vs_bits.png",
        "20ng_precision_vs_k_32bits.png",
        "20ng_hamming_32bits.png",
    ]
    for path in plots:
        assert path.read_bytes()[:8] == PNG_SIGNATURE


# ----------------------------------------------------------------------------------------------------
# Tie-free codes: tie-aware and plain precision must agree
# ----------------------------------------------------------------------------------------------------


def staircase_codes(n_bits: int = 128) -> tuple[np.ndarray, np.ndarray]:
    """Queries all-zero and all-one; database item i has its first i bits set (i = 0..n_bits).

    Item i is then at distance i from the first query and n_bits - i from the second: no two items tie.
    """
    db_bits = np.arange(n_bits)[None, :] < np.arange(n_bits + 1)[:, None]  # (n_bits + 1, n_bits)
    q_bits = np.array([np.zeros(n_bits, bool), np.ones(n_bits, bool)])  # (2, n_bits)
    return pack(q_bits), pack(db_bits)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_tie_aware_equals_plain_without_ties(seed: int) -> None:
    q, db = staircase_codes()
    rng = np.random.default_rng(seed)
    q_labels, db_labels = rng.integers(0, 3, len(q)), rng.integers(0, 3, len(db))
    scores = harness.code_metrics(q, db, q_labels, db_labels)
    assert abs(scores["p@100"] - scores["p@100_tie_aware"]) < 1e-9
    for k in (1, 7, 64, 129):
        plain = precision_at_k(q, db, q_labels, db_labels, k=k, seed=seed)
        assert abs(plain - precision_at_k_tie_aware(q, db, q_labels, db_labels, k=k)) < 1e-9


def test_tie_aware_differs_from_plain_with_ties() -> None:
    """The check above can fail: with every distance tied, plain precision depends on the tie order."""
    q, db = pack(np.zeros((1, 8), bool)), pack(np.zeros((10, 8), bool))
    q_labels, db_labels = np.array([0]), np.array([0, 0, 0, 1, 1, 1, 1, 1, 1, 1])
    assert precision_at_k_tie_aware(q, db, q_labels, db_labels, k=1) == pytest.approx(0.3)
    assert {precision_at_k(q, db, q_labels, db_labels, k=1, seed=s) for s in range(20)} == {0.0, 1.0}


# ----------------------------------------------------------------------------------------------------
# Pieces of the harness that need no training
# ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("featurizer", ["text", "pixels", "dense"])
def test_model_variants_cover_every_bottleneck(featurizer: str) -> None:
    variants = harness.model_variants(featurizer)
    assert next(iter(variants)) == "hamdex"
    assert sorted(variants.values()) == sorted(BOTTLENECKS)
    assert all(name == "hamdex" or name == f"hamdex_{b}" for name, b in variants.items())


@pytest.mark.parametrize(
    ("method", "where"),
    [("hamdex_denoising", "model"), ("hamdex_adversarial", "train"), ("hamdex_feature_matching", "train")],
)
def test_named_variants_set_a_model_or_a_training_option(monkeypatch, method: str, where: str) -> None:
    """``--methods hamdex_denoising`` must reach ModelConfig (input_dropout), hamdex_adversarial and
    hamdex_feature_matching TrainConfig."""
    seen: dict[str, dict] = {}

    def fit_hasher(inputs, featurizer, model_over, cfg):
        seen.update(model=model_over, train=dataclasses.asdict(cfg))
        raise StopIteration  # what was asked for is all this test needs

    monkeypatch.setattr(harness, "fit_hasher", fit_hasher)
    options = harness.OBJECTIVE_VARIANTS[method]
    with pytest.raises(StopIteration):
        harness.train_model(["a post", "another"], "text", "bernoulli", 32, harness.DATASETS["20ng"].full, 0, options)
    ((key, value),) = options.items()
    assert seen[where][key] == value
    assert key not in seen["train" if where == "model" else "model"]


def test_class_balanced_and_random_subsets() -> None:
    labels = np.repeat(np.array(list("abcd")), [5, 6, 7, 8])
    idx = harness.class_balanced(labels, 8, seed=0)
    assert np.all(np.diff(idx) > 0) and sorted(np.unique(labels[idx], return_counts=True)[1]) == [2, 2, 2, 2]
    assert np.array_equal(idx, harness.class_balanced(labels, 8, seed=0))
    assert len(harness.class_balanced(labels, None, seed=0)) == len(labels)
    with pytest.raises(ValueError, match="fewer than"):
        harness.class_balanced(labels, 24, seed=0)
    sub = harness.random_subset(100, 10, seed=0)
    assert len(np.unique(sub)) == 10 and np.all(np.diff(sub) > 0)
    assert np.array_equal(harness.random_subset(5, None, seed=0), np.arange(5))


def test_fashion_mnist_smoke() -> None:
    """The IDX loader, class-balanced queries and precision@1000, on a cut of the quick scale (a few seconds)."""
    if not (harness.FASHION_DIR / "t10k-images-idx3-ubyte.gz").exists():
        pytest.skip("Fashion-MNIST is not installed (Debian package dataset-fashion-mnist)")
    tiny = harness.Scale(n_train=1200, n_queries=100, epochs=2, batch_size=64)
    dataset = dataclasses.replace(harness.DATASETS["fashion-mnist"], quick=tiny)
    with torch_threads(1):
        run = harness.run_dataset(dataset, [16], quick=True, methods=["hamdex"], progress=False)
    rows = run.results[16]
    assert set(rows["float_cosine"]) == {"p@100", "p@1000", "train_seconds"}
    assert set(rows["itq"]) == {*harness.SCORE_KEYS, "p@1000", "train_seconds"}
    for metrics in rows.values():
        assert all(0.0 <= v <= 1.0 for k, v in metrics.items() if k != "train_seconds")
    assert rows["itq"]["map"] > 0.3  # 10 classes: chance is 0.1


def test_write_json_refuses_nan(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="non-finite p@100"):
        harness.write_json({"20ng": {32: {"itq": {"p@100": math.nan}}}}, tmp_path / "x.json")


def _quality_script():
    from benchmarks import quality  # at first use, not at collection: a script may set OMP_* on import

    return quality


def test_cli(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """benchmarks/quality.py wiring, with the harness's run replaced by canned results."""
    script = _quality_script()
    args = script.parse_args(["--dataset", "20ng", "--bits", "16,32", "--quick"])
    assert (args.dataset, args.bits, args.quick, args.plots.name) == ("20ng", [16, 32], True, "out")
    for bad in ("12", "x", ""):
        with pytest.raises(SystemExit):
            script.parse_args(["--bits", bad])
    calls = []
    row = {"p@100": 0.5, "train_seconds": 1.0}

    def fake_run(names, bits, quick, plots_dir, methods=None):  # the real one's signature
        calls.append((names, bits, quick, plots_dir, methods))
        return {"20ng": {32: {"hamdex": row, "itq": row, "lsh": row}}}

    monkeypatch.setattr(harness, "run_benchmarks", fake_run)
    script.main(["--dataset", "20ng", "--quick", "--json", str(tmp_path / "r.json"), "--plots", str(tmp_path)])
    assert calls == [(["20ng"], None, True, tmp_path, None)]
    assert json.loads((tmp_path / "r.json").read_text())["20ng"]["32"]["hamdex"] == row
    out = capsys.readouterr().out
    assert "| 32 | hamdex | 0.5000 |" in out and "NASH-DN" in out
    script.main(["--dataset", "20ng", "--methods", "hamdex, hamdex_sign", "--plots", str(tmp_path)])
    assert calls[-1] == (["20ng"], None, False, tmp_path, ["hamdex", "hamdex_sign"])
