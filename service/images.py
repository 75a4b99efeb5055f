"""Images out of the service and the CLI: PNG bytes (Pillow, which matplotlib depends on) and grids of images."""

from __future__ import annotations

import base64
import io
import math
from pathlib import Path

import numpy as np
from PIL import Image

MODES = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}  # channels -> PNG colour type


def png_writable(shape: tuple[int, ...]) -> bool:
    """Whether images of ``shape`` (h, w[, c]) can be a PNG: 1 to 4 channels."""
    return len(shape) == 2 or (len(shape) == 3 and shape[2] in MODES)


def png_bytes(image: np.ndarray) -> bytes:
    """uint8 (h, w) or (h, w, c) with 1 to 4 channels -> PNG bytes."""
    image = np.asarray(image, dtype=np.uint8)
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    out = io.BytesIO()
    Image.fromarray(image, MODES[1 if image.ndim == 2 else image.shape[2]]).save(out, format="PNG")
    return out.getvalue()


def png_base64(image: np.ndarray) -> str:
    return base64.b64encode(png_bytes(image)).decode("ascii")


def grid(images: np.ndarray, columns: int = 8, pad: int = 1) -> np.ndarray:
    """uint8 (n, h, w[, c]) -> one uint8 image of them in rows of ``columns``, ``pad`` black pixels apart."""
    n, h, w = images.shape[:3]
    columns = max(1, min(columns, n))
    rows = math.ceil(n / columns)
    sheet = np.zeros((rows * (h + pad) + pad, columns * (w + pad) + pad, *images.shape[3:]), np.uint8)
    for i, image in enumerate(images):
        top, left = pad + (i // columns) * (h + pad), pad + (i % columns) * (w + pad)
        sheet[top : top + h, left : left + w] = image
    return sheet


def save_grid(images: np.ndarray, path: Path, columns: int = 8) -> None:
    Path(path).write_bytes(png_bytes(grid(images, columns)))
