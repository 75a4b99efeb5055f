"""Image files in label folders (the layout torchvision's ``ImageFolder`` reads): one sub-folder per label holding
PNG, JPEG and other image files, decoded with Pillow (the well-kept library every image stack uses; it comes with
matplotlib).

Images are read as 8-bit grayscale, the pixel featurizer's input; colour images are converted, and the reader says
so. All images of a folder tree must have one size: resizing would change what the codes mean, so a second size
is an error naming both files, not a silent resize.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from hamdex.models.data.block import Block, DataFormatError, _folder_item_id

LOG = logging.getLogger(__name__)

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".pgm", ".ppm"})
_GRAY_MODES = frozenset({"1", "L", "LA", "I", "F"})  # modes without colour (P may hold colour: converted, told)


def is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES


def image_blocks(folders: list[tuple[str | None, list[Path]]], block_size: int) -> Iterator[Block]:
    """(label, image files) per label folder -> uint8 (n, h, w) image blocks, ids ``label/file`` (label None:
    unlabelled, ids the file names)."""
    first: tuple[Path, tuple[int, ...]] | None = None
    coloured = 0
    buffer: list[tuple[str, np.ndarray, str | None]] = []
    for label, files in folders:
        for file in files:
            image, colour = _read(file)
            coloured += colour
            first = first or (file, image.shape)
            if image.shape != first[1]:
                raise DataFormatError(
                    f"{file}: {_size(image.shape)} pixels, but {first[0]} has {_size(first[1])}; the images of one "
                    "data set must have one size (resize them first)",
                    "input_shape",
                )
            buffer.append((_folder_item_id(label, file), image, label))
            if len(buffer) == block_size:
                yield _block(buffer)
                buffer = []
    if buffer:
        yield _block(buffer)
    if coloured:
        LOG.warning("%d colour images were read as grayscale (the pixel featurizer's input)", coloured)


def _read(file: Path) -> tuple[np.ndarray, bool]:
    """uint8 (h, w) grayscale pixels of one image file, and whether it had colour."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(file) as image:
            if image.mode.startswith("I;16"):  # 16-bit grayscale: the high byte (Pillow's "L" would clip at 255)
                return (np.asarray(image, dtype=np.uint16) >> 8).astype(np.uint8), False
            return np.asarray(image.convert("L"), dtype=np.uint8), image.mode not in _GRAY_MODES
    except (UnidentifiedImageError, OSError, ValueError) as err:
        raise DataFormatError(f"{file}: not a readable image: {err}", "input_type") from err


def _size(shape: tuple[int, ...]) -> str:
    return f"{shape[1]}x{shape[0]}"


def _block(items: list[tuple[str, np.ndarray, str | None]]) -> Block:
    ids = [item[0] for item in items]
    labels = [item[2] for item in items]
    metadata = [{} if label is None else {"label": label} for label in labels]
    return Block(ids, np.stack([item[1] for item in items]), labels, metadata, "image")
