"""Input-shape sanity (issue 18): flat rows of pixels are recognised as images, CSV files without a header or with
one column per value are read, and gzip-compressed jsonl / csv too."""

from __future__ import annotations

import csv
import gzip
import json

import numpy as np
import pytest
from hamdex.models import checkpoint
from hamdex.models.data import DataFormatError, read_all
from hamdex.models.featurizers import infer_image_shape
from hamdex.service.cli import app
from sklearn.datasets import load_digits
from typer.testing import CliRunner


@pytest.fixture(scope="module")
def flat_digits() -> tuple[np.ndarray, np.ndarray]:
    """120 digits as float32 rows (n, 64) of integers 0..255 (what a CSV or .npy of pixels holds), and labels."""
    d = load_digits()
    return np.round(d.images[:120].reshape(120, -1) * (255 / 16)).astype(np.float32), d.target[:120]


def test_square_rows_of_integers_0_to_255_look_like_images(flat_digits):
    rows, _ = flat_digits
    assert infer_image_shape(rows) == (8, 8)
    assert infer_image_shape(np.zeros((3, 784)) + 7) == (28, 28)


@pytest.mark.parametrize(
    "rows",
    [
        np.full((4, 64), 0.5),  # not integers
        np.ones((4, 64)),  # 0/1 values: binary features (or binarised pixels the pixels featurizer would darken)
        np.full((4, 64), 300.0),  # beyond 255
        np.full((4, 64), -2.0),
        np.full((4, 65), 9.0),  # not a square
        np.full((4, 49), 9.0),  # a square under 8 x 8
        np.zeros((0, 64)),
    ],
)
def test_other_rows_are_not_taken_for_images(rows):
    assert infer_image_shape(rows) is None


def _train(path, out, *extra):
    args = ["train", str(path), "--out", str(out), "--bits", "16", "--hidden", "16", "--epochs", "1"]
    return CliRunner().invoke(app, [*args, "--neighbours", "0", "--device", "cpu", *extra])


def test_flat_pixel_rows_train_the_pixels_featurizer_and_say_so(flat_digits, tmp_path):
    np.save(tmp_path / "flat.npy", flat_digits[0])
    result = _train(tmp_path / "flat.npy", tmp_path / "m")
    assert result.exit_code == 0, result.output
    assert "look like 8x8 grayscale images" in result.output
    assert "--featurizer dense" in result.output and "--image-shape" in result.output
    meta = checkpoint.read_meta(tmp_path / "m")
    assert meta["featurizer"] == {"kind": "pixels", "params": {"shape": [8, 8]}}
    hasher = checkpoint.load(tmp_path / "m", "cpu")  # the model takes the flat rows as they are
    assert hasher.encode(flat_digits[0][:5]).codes.shape == (5, 2)


def test_dense_featurizer_and_image_shape_flags(flat_digits, tmp_path):
    np.save(tmp_path / "flat.npy", flat_digits[0])
    dense = _train(tmp_path / "flat.npy", tmp_path / "d", "--featurizer", "dense")
    assert dense.exit_code == 0 and "look like" not in dense.output
    assert checkpoint.read_meta(tmp_path / "d")["featurizer"]["kind"] == "dense"
    shaped = _train(tmp_path / "flat.npy", tmp_path / "s", "--image-shape", "8x8", "--featurizer", "pixels")
    assert shaped.exit_code == 0 and "look like" not in shaped.output, shaped.output  # asked for: no note
    assert checkpoint.read_meta(tmp_path / "s")["featurizer"]["params"]["shape"] == [8, 8]
    for bad, message in (("7x7", "holds 49 values, the rows have 64"), ("8by8", "must look like 28x28")):
        result = _train(tmp_path / "flat.npy", tmp_path / "x", "--image-shape", bad)
        assert result.exit_code == 2 and message in result.output, result.output


def test_image_shape_refuses_rows_that_are_not_pixels(tmp_path):
    np.save(tmp_path / "v.npy", np.full((40, 64), 0.5, np.float32))
    result = _train(tmp_path / "v.npy", tmp_path / "x", "--image-shape", "8x8")
    assert result.exit_code == 2 and "integer pixel values in 0-255" in result.output


def _write_csv(path, rows, header=None, opener=open):
    with opener(path, "wt", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        if header:
            writer.writerow(header)
        writer.writerows(rows)


def test_headerless_csv_with_named_leading_column_trains_and_evaluates(flat_digits, tmp_path):
    rows, labels = flat_digits
    path = tmp_path / "digits.csv"
    _write_csv(path, [[int(lab), *map(int, r)] for lab, r in zip(labels, rows, strict=True)])
    block = read_all(path, columns=["label"])
    assert block.inputs.shape == (120, 64) and block.labels[:3] == [str(v) for v in labels[:3]]
    assert read_all(path).inputs.shape == (120, 65)  # unnamed: every column is a value
    result = _train(path, tmp_path / "m", "--columns", "label")
    assert result.exit_code == 0 and "8x8" in result.output, result.output
    args = ["eval", "-m", str(tmp_path / "m"), "--database", str(path), "--queries", str(path), "--columns", "label"]
    evaluated = CliRunner().invoke(app, [*args, "--k", "10", "--baselines", "itq", "--device", "cpu"])
    assert evaluated.exit_code == 0 and "code health of the database codes" in evaluated.output, evaluated.output


def test_csv_with_one_column_per_pixel_and_a_header(flat_digits, tmp_path):
    rows, labels = flat_digits
    path = tmp_path / "kaggle.csv.gz"  # the layout of Kaggle's mnist_train.csv, compressed
    header = ["label", *(f"pixel{i}" for i in range(64))]
    _write_csv(path, [[int(lab), *map(int, r)] for lab, r in zip(labels, rows, strict=True)], header, gzip.open)
    block = read_all(path)
    assert block.kind == "vector" and block.inputs.shape == (120, 64)
    np.testing.assert_array_equal(block.inputs, rows)
    assert block.labels[0] == str(labels[0])


def test_csv_of_other_columns_is_one_clear_error(tmp_path):
    (tmp_path / "t.csv").write_text("id,name,year\n1,hello,2020\n2,world,2021\n", encoding="utf-8")
    with pytest.raises(DataFormatError, match="needs a 'text' or 'vector' column, text columns named like"):
        read_all(tmp_path / "t.csv")
    (tmp_path / "m.csv").write_text("id,a,b\n1,0.5,2\n2,x,3\n", encoding="utf-8")
    with pytest.raises(DataFormatError, match=r"m.csv:3: column 'a' holds 'x', not a number"):
        read_all(tmp_path / "m.csv")


def test_gzipped_jsonl_and_column_names_only_for_csv(tmp_path):
    path = tmp_path / "t.jsonl.gz"
    with gzip.open(path, "wt", encoding="utf-8") as f:
        f.write("\n".join(json.dumps({"text": f"note {i}", "label": "a"}) for i in range(3)))
    assert read_all(path).inputs == ["note 0", "note 1", "note 2"]
    with pytest.raises(DataFormatError, match="column names are for CSV files"):
        read_all(path, columns=["text"])
    (tmp_path / "x.npy.gz").write_bytes(b"")
    with pytest.raises(DataFormatError, match="unsupported data format"):
        read_all(tmp_path / "x.npy.gz")
