"""benchmarks/denoise.py: its measurement and table on the conftest pixel model (the training runs are the
benchmark's own; here only what it computes from a model)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from hamdex.models import checkpoint

from benchmarks import denoise
from tests.conftest import digit_images


def test_every_corruption_gets_a_row_with_its_baseline(pixel_model_dir: Path) -> None:
    hasher = checkpoint.load(pixel_model_dir, "cpu")
    rows = denoise.measure({"ae": hasher, "dae": hasher}, digit_images(40), seed=0)
    assert [r["corruption"] for r in rows] == ["clean", *(name for name, _, _ in denoise.CORRUPTIONS)]
    assert rows[0]["corrupted"] == 0 and all(r["corrupted"] > 0 for r in rows[1:])
    assert all(r["ae"] == r["dae"] > 0 for r in rows)  # the same model twice: the same error
    text = denoise.table(rows, "title")
    assert text.count("\n| ") == len(rows) + 1 and "| clean | 0.0000 |" in text


def test_a_missing_region_is_measured_from_the_known_pixels() -> None:
    clean = np.random.default_rng(0).random((5, 64)).astype(np.float32)
    x, masks, baseline = denoise.corrupted(clean, (8, 8), "region", "bottom", seed=0)
    assert masks.sum() == 5 * 32 and np.all(x[masks] == 0) and np.array_equal(x[~masks], clean[~masks])
    np.testing.assert_allclose(baseline[masks].reshape(5, 32), clean[:, :32].mean(axis=1, keepdims=True).repeat(32, 1))
    assert denoise.gain_db(0.1, 0.01) == 10.0
