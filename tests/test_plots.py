"""Each plot writes a valid, non-empty PNG from small synthetic inputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hamdex.evaluation.metrics import DistanceHistograms
from hamdex.evaluation.plots import plot_distance_histograms, plot_precision_vs_bits, plot_precision_vs_k

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def assert_png(path: Path) -> None:
    raw = path.read_bytes()
    assert raw[:8] == PNG_SIGNATURE
    assert raw[12:16] == b"IHDR"  # the first chunk of every PNG
    width, height = int.from_bytes(raw[16:20], "big"), int.from_bytes(raw[20:24], "big")
    assert width > 100 and height > 100
    assert raw.endswith(b"IEND\xaeB`\x82")  # the closing chunk: the file was written in full


def synthetic_results(bits_as_str: bool) -> dict:
    """{dataset: {bits: {method: {metric: value}}}} as the harness returns it (or as read back from JSON)."""
    rng = np.random.default_rng(0)
    by_bits = {}
    for n_bits in (16, 32, 64):
        rows = {m: {"p@100": float(rng.uniform()), "map": float(rng.uniform())} for m in ("hamdex", "lsh", "itq")}
        rows["float_cosine"] = {"p@100": 0.4}  # no mAP: must be skipped, not fail
        by_bits[str(n_bits) if bits_as_str else n_bits] = rows
    return {"20ng": by_bits, "fashion-mnist": by_bits}


@pytest.mark.parametrize("dataset", ["20ng", "fashion-mnist"])
@pytest.mark.parametrize("bits_as_str", [False, True])
def test_precision_vs_bits(tmp_path: Path, dataset: str, bits_as_str: bool) -> None:
    path = plot_precision_vs_bits(synthetic_results(bits_as_str), dataset, tmp_path / "sub" / "bits.png")
    assert path == tmp_path / "sub" / "bits.png"
    assert_png(path)


def test_precision_vs_k(tmp_path: Path) -> None:
    ks = (1, 10, 100)
    curves = {"hamdex": dict(zip(ks, (0.9, 0.7, 0.5), strict=True)), "itq": dict(zip(ks, (0.8, 0.5, 0.3), strict=True))}
    assert_png(plot_precision_vs_k(curves, tmp_path / "k.png", title="precision@k at 32 bits"))


def test_distance_histograms(tmp_path: Path) -> None:
    n_bits = 16
    relevant = np.bincount(np.arange(9), minlength=n_bits + 1) / 9.0
    irrelevant = np.full(n_bits + 1, 1.0 / (n_bits + 1))
    assert_png(plot_distance_histograms(DistanceHistograms(relevant, irrelevant), n_bits, tmp_path / "hist.png"))
