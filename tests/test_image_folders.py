"""Image files in label folders (models.data.images): read as images, never as text; trained and indexed like
an ``.npz`` of the same pixels."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hamdex.index import open_collection
from hamdex.models import checkpoint
from hamdex.models.data import DataFormatError, count_items, read_all
from hamdex.service.cli import app
from PIL import Image
from sklearn.datasets import load_digits
from typer.testing import CliRunner


def digit_folders(root: Path, per_class: int = 12) -> tuple[np.ndarray, list[str]]:
    """``per_class`` digits of each class as PNG files in one folder per class; (pixels in reading order, ids)."""
    d = load_digits()
    images, ids = [], []
    for digit in range(10):
        folder = root / f"digit{digit}"
        folder.mkdir(parents=True)
        for n, i in enumerate(np.flatnonzero(d.target == digit)[:per_class]):
            pixels = (d.images[i] * 255 / 16).astype(np.uint8)
            Image.fromarray(pixels).save(folder / f"{n:03d}.png")
            images.append(pixels)
            ids.append(f"digit{digit}/{n:03d}.png")
    return np.stack(images), ids


def test_png_folders_are_images_with_their_labels(tmp_path: Path):
    pixels, ids = digit_folders(tmp_path / "digits", per_class=3)
    (tmp_path / "digits" / "digit0" / "Thumbs.db").write_bytes(b"\x00windows thumbnail cache")  # not an item
    block = read_all(tmp_path / "digits")
    assert block.kind == "image" and block.inputs.dtype == np.uint8 and block.inputs.shape == (30, 8, 8)
    np.testing.assert_array_equal(block.inputs, pixels)  # PNG is lossless
    assert block.ids == ids and block.labels == [i.split("/")[0] for i in ids]
    assert block.metadata[0] == {"label": "digit0"} and count_items(tmp_path / "digits") == 30


def test_a_folder_of_images_alone_is_unlabelled_images(tmp_path: Path):
    for name, value in (("b.png", 7), ("a.png", 200)):
        Image.fromarray(np.full((3, 5), value, np.uint8)).save(tmp_path / name)
    block = read_all(tmp_path)
    assert block.kind == "image" and block.ids == ["a.png", "b.png"] and block.labels == [None, None]
    assert block.inputs[:, 0, 0].tolist() == [200, 7] and block.metadata == [{}, {}]


def test_colour_and_16_bit_images_are_read_as_grayscale(tmp_path: Path, caplog: pytest.LogCaptureFixture):
    (tmp_path / "a").mkdir()
    Image.new("RGB", (4, 3), (255, 0, 0)).save(tmp_path / "a" / "red.png")
    Image.fromarray(np.full((3, 4), 65535, np.uint16)).save(tmp_path / "a" / "white16.png")
    block = read_all(tmp_path)
    assert block.inputs.shape == (2, 3, 4)
    assert block.inputs[0, 0, 0] == 76 and block.inputs[1, 0, 0] == 255  # ITU-R 601 luma of red; 16-bit white
    assert "1 colour images were read as grayscale" in caplog.text


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ({"a/x.png": (8, 8), "a/y.png": (9, 8)}, r"y.png: 9x8 pixels, but .*x.png has 8x8"),
        ({"a/x.png": (8, 8), "b/notes.txt": "some text"}, "mix 1 images and 1 other files"),
        ({"a/x.png": b"not a png at all"}, "x.png: not a readable image"),
        ({"a/x.pdf": b"%PDF-1.4\x00\x01binary"}, "x.pdf: a binary file, not text"),
    ],
)
def test_bad_image_folders_raise(tmp_path: Path, files: dict, message: str):
    for name, content in files.items():
        path = tmp_path / name
        path.parent.mkdir(exist_ok=True)
        if isinstance(content, tuple):
            Image.fromarray(np.zeros(content[::-1], np.uint8)).save(path)
        else:
            path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(DataFormatError, match=message):
        read_all(tmp_path)


def test_train_and_index_a_png_folder(tmp_path: Path):
    """``hamdex train`` takes PNG folders for images (the pixel preset), and ``hamdex index`` gives the codes the
    model gives the same pixels."""
    pixels, ids = digit_folders(tmp_path / "digits")
    model, coll, runner = tmp_path / "m", tmp_path / "c", CliRunner()
    args = ["train", str(tmp_path / "digits"), "--out", str(model), "--bits", "16", "--epochs", "1", "--device", "cpu"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    meta = json.loads((model / "hamdex.json").read_text())
    assert meta["featurizer"]["kind"] == "pixels" and meta["featurizer"]["params"]["shape"] == [8, 8]
    result = runner.invoke(app, ["index", str(tmp_path / "digits"), "-m", str(model), "-c", str(coll)])
    assert result.exit_code == 0, result.output
    expected = checkpoint.load(model, "cpu").encode(pixels).codes
    with open_collection(coll) as collection:
        assert len(collection) == len(ids)
        for i in (0, 57, len(ids) - 1):
            item = collection.get(ids[i])
            assert item is not None and (item.code == expected[i]).all() and item.metadata["label"] == ids[i][:6]
