"""IDX images (``*-images-idx3-ubyte[.gz]``, the MNIST / Fashion-MNIST format of LeCun et al.) and their labels."""

from __future__ import annotations

import gzip
import logging
from collections.abc import Iterator
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import IO

import numpy as np
from hamdex.models.data.block import Block, DataFormatError, _labelled_block

LOG = logging.getLogger(__name__)

IDX_IMAGES_MAGIC = 0x00000803  # unsigned byte, 3 dims
IDX_LABELS_MAGIC = 0x00000801  # unsigned byte, 1 dim


def _open_maybe_gzip(path: Path) -> IO[bytes]:
    return gzip.open(path, "rb") if path.suffix.lower() == ".gz" else open(path, "rb")


def _read_idx_header(path: Path, magic: int, f: IO[bytes] | None = None) -> tuple[int, tuple[int, ...]]:
    """(magic, dims) of an IDX file; reads from ``f`` when given (leaving it at the data)."""
    if f is None:
        with _open_maybe_gzip(path) as own:
            return _read_idx_header(path, magic, own)
    try:
        head = f.read(4)
    except (OSError, EOFError) as err:  # gzip.BadGzipFile is an OSError
        raise DataFormatError(f"{path}: cannot read IDX file: {err}") from err
    found = int.from_bytes(head, "big") if len(head) == 4 else None
    if found != magic:
        shown = "a truncated header" if found is None else f"0x{found:08x}"
        raise DataFormatError(f"{path}: bad IDX magic number {shown}, expected 0x{magic:08x}")
    n_dims = magic & 0xFF
    raw = f.read(4 * n_dims)
    if len(raw) != 4 * n_dims:
        raise DataFormatError(f"{path}: truncated IDX header")
    return found, tuple(int(d) for d in np.frombuffer(raw, dtype=">u4"))


def _idx_labels_path(images: Path) -> Path | None:
    for old, new in (("images-idx3", "labels-idx1"), ("images.idx3", "labels.idx1")):
        if old in images.name:
            candidate = images.with_name(images.name.replace(old, new))
            return candidate if candidate.exists() else None
    return None


def _read_exact(f: IO[bytes], n_bytes: int, path: Path) -> bytes:
    raw = f.read(n_bytes)
    if len(raw) != n_bytes:
        raise DataFormatError(f"{path}: truncated IDX data (wanted {n_bytes} more bytes, got {len(raw)})")
    return raw


def _iter_idx(path: Path, block_size: int) -> Iterator[Block]:
    labels_path = _idx_labels_path(path)
    if labels_path is None:
        LOG.info("%s: no labels file next to it; items will have no labels", path)
    with _open_maybe_gzip(path) as images, _open_labels(labels_path) as labels:
        _, (n, h, w) = _read_idx_header(path, IDX_IMAGES_MAGIC, images)
        if labels is not None:
            _, (n_labels,) = _read_idx_header(labels_path, IDX_LABELS_MAGIC, labels)
            if n_labels != n:
                raise DataFormatError(f"{labels_path}: has {n_labels} labels but {path} has {n} images")
        for start in range(0, n, block_size):
            m = min(block_size, n - start)
            pixels = np.frombuffer(_read_exact(images, m * h * w, path), dtype=np.uint8).reshape(m, h, w)
            block_labels: list[str | None] = [None] * m
            if labels is not None:
                block_labels = [str(x) for x in np.frombuffer(_read_exact(labels, m, labels_path), np.uint8)]
            yield _labelled_block([str(i) for i in range(start, start + m)], pixels.copy(), block_labels, "image")


def _open_labels(path: Path | None) -> AbstractContextManager[IO[bytes] | None]:
    return nullcontext() if path is None else _open_maybe_gzip(path)
