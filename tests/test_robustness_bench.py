"""benchmarks/robustness.py wiring: cell selection, one real cell through the CLI's own train command (cut to two
epochs here), the JSON layout, the markdown table and the plot."""

from __future__ import annotations

import inspect
import json
from pathlib import Path

import numpy as np
import pytest
from hamdex.models import data
from sklearn.datasets import load_digits

from tests.helpers import short_cli_train

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def bench():
    from benchmarks import robustness  # at first use, not at collection: a script may set OMP_* on import

    return robustness


def test_cells_are_selected_by_pattern_in_matrix_order(bench):
    assert bench.select_cells(["trec-32", "digits-*"]) == ["digits-16", "digits-32", "digits-64", "trec-32"]
    assert "fashion-5k-flat-64" in bench.select_cells(["fashion-5k-*"])
    assert len(bench.all_cells()) == len(bench.DATASETS) * 3
    with pytest.raises(SystemExit, match="no cell matches 'mnist-\\*'"):
        bench.select_cells(["mnist-*"])


def test_short_texts_keep_the_first_words_of_the_body(bench):

    posts = [
        "From: a@b\nSubject: cars\n\nI drive a red car every day to work\n> a quoted line\nand back home at night",
        "From: c@d\nSubject: hi\n\ntoo short to keep",
    ]
    block = data.Block(["x/1", "x/2"], posts, ["autos", "misc"], [{"label": "autos"}, {"label": "misc"}], "text")
    short = bench._shortened(block, words=12)
    assert short.ids == ["x/1"] and short.labels == ["autos"]  # fewer than 10 body words: left out
    assert short.inputs == ["I drive a red car every day to work and back home"]  # no headers, no quotes


def _tiny_digits(bench, flat: bool = False):
    d = load_digits()
    images, labels = np.round(d.images[:240] * (255 / 16)).astype(np.uint8), d.target[:240]
    inputs, kind = (images.reshape(240, -1).astype(np.float32), "vector") if flat else (images, "image")
    return bench.Split(bench._block(inputs[:200], labels[:200], kind), bench._block(inputs[200:], labels[200:], kind))


def test_a_cell_trains_through_the_cli_and_scores_against_the_baselines(bench, monkeypatch, tmp_path):
    seen = short_cli_train(monkeypatch)  # the defaults, but two epochs and a small encoder
    monkeypatch.setitem(bench.DATASETS, "digits", lambda: _tiny_digits(bench, flat=True))
    results = bench.run(["digits-16"], tmp_path / "r.json")
    assert seen == [{"out": seen[0]["out"], "bits": 16, "device": "cpu"}]  # nothing else is set per cell
    cell = json.loads((tmp_path / "r.json").read_text())["digits-16"]
    assert set(cell) == {"hamdex", "itq", "lsh_centered"}
    for method in cell.values():
        assert {"p@100", "map", "distinct_code_fraction", "train_seconds"} <= set(method)
        assert all(0 <= method[k] <= 1 for k in ("p@100", "map", "distinct_code_fraction"))
    assert cell["hamdex"]["featurizer"] == "pixels"  # the flat rows were taken for 8x8 images
    assert cell["hamdex"]["safeguard"] == "unchecked"  # 20 held out: too few to judge
    assert cell["hamdex"]["judged_by"] == "loss"
    assert results["digits-16"] == cell


def test_markdown_and_plot(bench, tmp_path):
    row = {"p@100": 0.5, "map": 0.4, "distinct_code_fraction": 0.9, "train_seconds": 3.0}
    results = {
        "digits-16": {"hamdex": {**row, "map": 0.5, "safeguard": "kept"}, "itq": row, "lsh_centered": row},
        "trec-16": {"hamdex": {**row, "safeguard": "itq fallback"}, "itq": row, "lsh_centered": row},
    }
    table = bench.format_markdown(results)
    assert "| digits-16 | 0.500 | 0.500 | 0.500 | 0.500 | 0.400 | 1.25 x | 90.0% | kept | 3 | met |" in table
    assert "| trec-16 |" in table and "| 1.00 x |" in table and table.rstrip().endswith("missed |")
    path = bench.plot(results, tmp_path / "ratios.png")
    assert Path(path).read_bytes().startswith(PNG_SIGNATURE)


def test_each_cell_trains_once_per_bottleneck_asked_for(bench, monkeypatch, tmp_path):
    from hamdex.service import cli

    real_train = cli.train
    seen = []
    assert bench.cli_default_bottleneck() == inspect.signature(cli.train).parameters["bottleneck"].default

    def short_train(data_spec, **options):
        seen.append(options)
        return real_train(data_spec, epochs=2, hidden="16", **options)

    monkeypatch.setattr(cli, "train", short_train)
    monkeypatch.setitem(bench.DATASETS, "digits", lambda: _tiny_digits(bench, flat=True))
    assert set(bench.run(["digits-16"], None, ["vq"])["digits-16"]) == {"hamdex_vq", "itq", "lsh_centered"}
    seen.clear()
    cell = bench.run(["digits-16"], None, ["bernoulli", "vq"])["digits-16"]
    assert [o.get("bottleneck") for o in seen] == ["bernoulli", "vq"]
    assert set(cell) == {"hamdex", "hamdex_vq", "itq", "lsh_centered"}  # the CLI's default keeps its name
    assert (cell["hamdex"]["bottleneck"], cell["hamdex_vq"]["bottleneck"]) == ("bernoulli", "vq")
    table = bench.format_bottlenecks({"digits-16": cell})
    assert "| bernoulli P@100 | bernoulli mAP | bernoulli safeguard | vq P@100 | vq mAP | vq safeguard |" in table
    assert table.splitlines()[-1].startswith("| digits-16 | ")


@pytest.mark.parametrize(("flat", "suffix", "labelled"), [(False, ".npz", True), (True, ".npy", False)])
def test_the_cli_gets_the_labels_a_users_file_would_carry(bench, tmp_path, flat, suffix, labelled):
    """Images go to the CLI as .npz with their labels (which then judge the model: models.train.can_judge), the
    flat-rows cell as a bare .npy, so that the matrix trains both ways."""
    train = _tiny_digits(bench, flat).train
    path = bench._save_for_cli(train, tmp_path)
    assert path.suffix == suffix
    block = data.read_all(path)
    assert len(block.ids) == 200
    assert (block.labels == train.labels) is labelled


def test_a_dense_variant_of_the_flat_rows_cell_reads_the_query_images_as_rows(bench, monkeypatch, tmp_path):
    from hamdex.service import cli

    real_train = cli.train
    monkeypatch.setattr(cli, "train", lambda data_spec, **o: real_train(data_spec, epochs=2, hidden="16", **o))
    flat = _tiny_digits(bench, flat=True).train
    images = _tiny_digits(bench, flat=False).queries  # as fashion-5k-flat: flat training rows, image queries
    monkeypatch.setitem(bench.DATASETS, "digits", lambda: bench.Split(flat, images))
    cell = bench.run(["digits-16"], None, variants={"dense": {"featurizer": "dense"}})["digits-16"]
    assert (cell["hamdex"]["featurizer"], cell["hamdex_dense"]["featurizer"]) == ("pixels", "dense")
    assert 0 <= cell["hamdex_dense"]["map"] <= 1
