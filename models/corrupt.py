"""Corrupted copies of inputs, to show and measure denoising and inpainting (``hamdex reconstruct``,
benchmarks/denoise.py): noise on feature values and masks of missing regions. Values are features: pixels in
[0, 1], dense vectors standardised."""

from __future__ import annotations

import numpy as np

NOISES = ("gaussian", "salt_pepper", "dropout")
REGIONS = ("top", "bottom", "left", "right", "centre")


def add_noise(x: np.ndarray, kind: str, level: float, rng: np.random.Generator, *, pixels: bool) -> np.ndarray:
    """float32 (n, d) -> a noisy copy: ``gaussian`` adds N(0, level^2); ``salt_pepper`` sets a ``level`` fraction of
    values to 0 or 1 (pixels; dense: -3 or 3); ``dropout`` sets a ``level`` fraction to 0. Pixels stay in [0, 1]."""
    if kind not in NOISES:
        raise ValueError(f"unknown noise {kind!r}; choose one of {', '.join(NOISES)}")
    if level < 0 or (kind != "gaussian" and level > 1):
        raise ValueError(f"noise level must be >= 0 (a fraction <= 1 for {kind}), got {level}")
    x = np.array(x, dtype=np.float32)
    if kind == "gaussian":
        x += rng.normal(0.0, level, x.shape).astype(np.float32)
    else:
        hit = rng.random(x.shape) < level
        if kind == "dropout":
            x[hit] = 0.0
        else:
            high, low = (1.0, 0.0) if pixels else (3.0, -3.0)
            x[hit] = np.where(rng.random(x.shape) < 0.5, high, low)[hit]
    return np.clip(x, 0.0, 1.0) if pixels else x


def region_mask(shape: tuple[int, ...], region: str) -> np.ndarray:
    """A bool mask (True: missing) of one image of ``shape`` (h, w[, c]), flattened (h*w*c,): half of the image
    (top, bottom, left, right) or its central quarter (centre)."""
    if region not in REGIONS:
        raise ValueError(f"unknown region {region!r}; choose one of {', '.join(REGIONS)}")
    h, w = shape[:2]
    mask = np.zeros(shape, bool)
    rows = {"top": slice(0, h // 2), "bottom": slice(h // 2, h)}.get(region, slice(None))
    cols = {"left": slice(0, w // 2), "right": slice(w // 2, w)}.get(region, slice(None))
    if region == "centre":
        rows, cols = slice(h // 4, h - h // 4), slice(w // 4, w - w // 4)
    mask[rows, cols] = True
    return mask.reshape(-1)
