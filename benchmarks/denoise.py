"""Denoising and inpainting gain (issue 20, part 5): how much closer to the clean images the model's reconstruction
of a corrupted image is than the corrupted image itself.

Two pixel models are trained on the same images (``--target-features input``: the decoder rebuilds pixels): a
plain autoencoder and a denoising one (input dropout, NASH-DN style). For each corruption of the held-out test
images, the table gives the mean squared error per pixel (pixels in [0, 1]) against the clean images of:

- ``corrupted``: the corrupted input itself (the baseline: doing nothing); for a missing region, the region
  filled with the mean of the image's known pixels (the inpainting's starting point);
- each model's reconstruction of it (models.generate.reconstruct; with a region mask: inpainted, known pixels
  kept), and the gain ``10 log10(corrupted / model)`` in dB (> 0: the model helps).

The ``clean`` row is the models' reconstruction of the clean images: their floor, what a 32-bit code keeps.

    python benchmarks/denoise.py                        # Fashion-MNIST: 20k training images, 1,000 test images
    python benchmarks/denoise.py --quick --json var/denoise.json   # scikit-learn digits, seconds
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `python benchmarks/denoise.py` from the root

from hamdex.evaluation.harness import FASHION_DIR, class_balanced, random_subset  # noqa: E402
from hamdex.models import corrupt, data, generate  # noqa: E402
from hamdex.models.hasher import Hasher  # noqa: E402
from hamdex.models.train import TrainConfig, fit_hasher  # noqa: E402

from benchmarks.report import publish, setup_logging  # noqa: E402

# (name, noise kind, level) or (name, "region", region)
CORRUPTIONS: tuple[tuple[str, str, Any], ...] = (
    ("gaussian 0.1", "gaussian", 0.1),
    ("gaussian 0.3", "gaussian", 0.3),
    ("gaussian 0.5", "gaussian", 0.5),
    ("salt & pepper 10%", "salt_pepper", 0.1),
    ("salt & pepper 30%", "salt_pepper", 0.3),
    ("dropout 50%", "dropout", 0.5),
    ("missing bottom half", "region", "bottom"),
    ("missing centre", "region", "centre"),
)
MODELS = {"ae": 0.0, "dae": 0.3}  # name -> input dropout in training


def load(quick: bool, n_train: int, seed: int) -> tuple[np.ndarray, np.ndarray, str]:
    """(training images uint8 (n, h, w), test images uint8 (m, h, w), the data set's name)."""
    if quick:
        from sklearn.datasets import load_digits

        images = np.round(load_digits().images * (255 / 16)).astype(np.uint8)  # (1797, 8, 8)
        order = np.random.default_rng(seed).permutation(len(images))
        return images[order[300:]], images[order[:300]], "digits"
    train = data.read_all(FASHION_DIR / "train-images-idx3-ubyte.gz")
    test = data.read_all(FASHION_DIR / "t10k-images-idx3-ubyte.gz")
    queries = class_balanced(np.asarray(test.labels), 1000, seed)
    return train.inputs[random_subset(len(train), n_train, seed)], test.inputs[queries], "fashion-mnist"


def train(images: np.ndarray, bits: int, input_dropout: float, epochs: int, seed: int) -> Hasher:
    model = {"n_bits": bits, "hidden": (512,), "input_dropout": input_dropout}
    cfg = TrainConfig(epochs=epochs, batch_size=128, lr=1e-3, seed=seed, progress=False, device="cpu")
    return fit_hasher(images, "pixels", model, cfg)[0]


def corrupted(clean: np.ndarray, shape: tuple[int, ...], kind: str, level: Any, seed: int) -> tuple:
    """(the corrupted features (n, d), the missing mask bool (n, d) or None, the baseline's features)."""
    if kind != "region":
        noisy = corrupt.add_noise(clean, kind, level, np.random.default_rng(seed), pixels=True)
        return noisy, None, noisy
    masks = np.tile(corrupt.region_mask(shape, level), (len(clean), 1))
    known = np.where(masks, 0.0, clean)
    mean = known.sum(axis=1, keepdims=True) / (~masks).sum(axis=1, keepdims=True)  # (n, 1)
    return known.astype(np.float32), masks, np.where(masks, mean, clean)


def mse(a: np.ndarray, b: np.ndarray) -> float:
    return float(((a - b) ** 2).mean())


def measure(hashers: dict[str, Hasher], test: np.ndarray, seed: int) -> list[dict[str, Any]]:
    first = next(iter(hashers.values()))
    clean = first.features(test)  # (n, d) in [0, 1]
    rows = [
        {
            "corruption": "clean",
            "corrupted": 0.0,
            **{m: mse(_rebuild(h, clean, None), clean) for m, h in hashers.items()},
        }
    ]
    for name, kind, level in CORRUPTIONS:
        x, masks, baseline = corrupted(clean, first.featurizer.shape, kind, level, seed)
        row = {"corruption": name, "corrupted": mse(baseline, clean)}
        row.update({m: mse(_rebuild(h, x, masks), clean) for m, h in hashers.items()})
        rows.append(row)
    return rows


def _rebuild(hasher: Hasher, x: np.ndarray, masks: np.ndarray | None) -> np.ndarray:
    return generate.reconstruct(hasher, x, masks).outputs


def gain_db(baseline: float, value: float) -> float:
    return 10 * math.log10(baseline / value) if baseline > 0 and value > 0 else float("nan")


def table(rows: list[dict[str, Any]], title: str) -> str:
    models = list(MODELS)
    head = "| corruption | corrupted (baseline) | " + " | ".join(f"{m} | {m} gain (dB)" for m in models) + " |"
    lines = [f"\n{title}\n", head, "|" + "---|" * (2 + 2 * len(models))]
    for row in rows:
        cells = [f"{row[m]:.4f} | {gain_db(row['corrupted'], row[m]):+.1f}" for m in models]
        lines.append(f"| {row['corruption']} | {row['corrupted']:.4f} | " + " | ".join(cells) + " |")
    return "\n".join(lines).replace("| +nan", "| -")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="scikit-learn digits instead of Fashion-MNIST")
    parser.add_argument("--bits", type=int, default=32)
    parser.add_argument("--train", type=int, default=20_000, help="Fashion-MNIST training images")
    parser.add_argument("--epochs", type=int, default=None, help="default: 20 (quick: 60)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None, help="write the numbers here")
    parser.add_argument("--md", type=Path, default=None, help="write the table here")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    setup_logging("hamdex.models.train")
    train_images, test_images, name = load(args.quick, args.train, args.seed)
    epochs = args.epochs or (60 if args.quick else 20)
    start = time.perf_counter()
    hashers = {m: train(train_images, args.bits, dropout, epochs, args.seed) for m, dropout in MODELS.items()}
    trained_s = time.perf_counter() - start
    rows = measure(hashers, test_images, args.seed)
    results = {
        "dataset": name,
        "bits": args.bits,
        "train_images": len(train_images),
        "test_images": len(test_images),
        "epochs": epochs,
        "input_dropout": MODELS,
        "train_seconds": round(trained_s, 1),
        "mse": rows,
    }
    title = (
        f"{name}, {args.bits} bits, {len(train_images)} training / {len(test_images)} test images: mean squared "
        "error per pixel against the clean images ([0, 1] pixels; ae: plain autoencoder, dae: input dropout 0.3)"
    )
    publish(results, table(rows, title), args.json, args.md)
    return results


if __name__ == "__main__":
    main()
