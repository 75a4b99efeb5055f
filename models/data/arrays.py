"""Arrays: ``.npy`` (memory-mapped) and ``.npz``, handed out in blocks of rows.

A ``.npy`` file is mapped one block at a time (a window of rows, unmapped once copied), so a process reading a
file of any size holds about one block of it: a whole-file map would keep every page it touched resident.
"""

from __future__ import annotations

import zipfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO

import numpy as np
from hamdex.models.data.block import Block, DataFormatError, Kind, _check_finite, _labelled_block

NPZ_INPUT_KEYS = ("X", "vectors", "images", "x")
NPZ_LABEL_KEYS = ("labels", "y")


def _array_kind(array: np.ndarray, where: str) -> Kind:
    if array.ndim == 2 and (np.issubdtype(array.dtype, np.number) or array.dtype == bool):
        return "vector"
    if array.ndim == 3 and array.dtype == np.uint8:
        return "image"
    raise DataFormatError(
        f"{where}: expected a 2-d numeric array (vectors) or a 3-d uint8 array (images), "
        f"got {array.dtype} with shape {array.shape}{_image_hint(array)}"
    )


def _image_hint(array: np.ndarray) -> str:
    """What to do with arrays that look like images in another layout (for the error message)."""
    if array.ndim == 4 and array.shape[-1] == 1:
        return "; one channel: drop its axis (x[..., 0])"
    if array.ndim == 4 and array.shape[-1] in (3, 4):
        return "; colour images: give them as (n, h, w) grayscale, or as image files in label folders"
    if array.ndim == 3 and np.issubdtype(array.dtype, np.number):
        return "; images of other values: scale them to 0-255 uint8 (values in [0, 1]: np.round(x * 255))"
    return ""


def _array_inputs(array: np.ndarray, kind: Kind) -> np.ndarray:
    """Copy a slice out of a (possibly memory-mapped) array in the dtype the block holds."""
    return np.ascontiguousarray(array, dtype=np.float32 if kind == "vector" else np.uint8)


def _array_blocks(
    array: np.ndarray,
    block_size: int,
    where: str,
    ids: np.ndarray | None = None,
    labels: np.ndarray | None = None,
    check_finite: bool = True,
    first: int = 0,
) -> Iterator[Block]:
    """``first``: the row number of ``array[0]`` in the whole input (ids count from it)."""
    kind = _array_kind(array, where)
    for name, extra in (("ids", ids), ("labels", labels)):
        if extra is not None and len(extra) != len(array):
            raise DataFormatError(f"{where}: {name} has {len(extra)} entries but there are {len(array)} items")
    for start in range(0, len(array), block_size):
        stop = min(start + block_size, len(array))
        inputs = _array_inputs(array[start:stop], kind)
        if kind == "vector" and check_finite:
            _check_finite(inputs, f"{where} (rows {first + start}-{first + stop - 1})")
        block_ids = [str(first + i) for i in range(start, stop)] if ids is None else _strings(ids[start:stop])
        block_labels = [None] * len(block_ids) if labels is None else _strings(labels[start:stop])
        yield _labelled_block(block_ids, inputs, block_labels, kind)


def _strings(values: np.ndarray) -> list[str]:
    """Array entries as text; bytes (dtype "S") are decoded rather than shown as "b'...'"."""
    return [v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for v in values.tolist()]


def _iter_npy(path: Path, block_size: int, on_error: object = None) -> Iterator[Block]:
    """With ``on_error`` (lenient), NaN rows are passed through for the caller to find and skip per row."""
    array = _load_npy(path)
    if array.ndim < 1 or not array.flags.c_contiguous:  # Fortran order: rows are not contiguous on disk
        yield from _array_blocks(array, block_size, str(path), check_finite=on_error is None)
        return
    kind = _array_kind(array, str(path))  # checked before the first window is mapped
    shape, dtype, offset, row_bytes = array.shape, array.dtype, array.offset, array.strides[0]
    del array  # unmap the whole-file view; each block below maps only its own rows
    for start in range(0, shape[0], block_size):
        n = min(block_size, shape[0] - start)
        window = np.memmap(path, dtype, "r", offset=offset + start * row_bytes, shape=(n, *shape[1:]))
        blocks = _array_blocks(window, n, str(path), check_finite=on_error is None, first=start)
        block = next(blocks)
        del window, blocks
        assert block.kind == kind
        yield block


def _load_npy(path: Path) -> np.ndarray:
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except ValueError as err:  # object arrays, bad headers
        raise DataFormatError(f"{path}: cannot read as a .npy array: {err}") from err


def _count_npy(path: Path) -> int:
    array = _load_npy(path)
    return int(array.shape[0]) if array.ndim else 0


def _npz_key(keys: Iterable[str], wanted: tuple[str, ...]) -> str | None:
    keys = set(keys)
    return next((k for k in wanted if k in keys), None)


def _iter_npz(path: Path, block_size: int, on_error: object = None) -> Iterator[Block]:
    # np.load cannot memory-map members of a zip; each array is read whole, then handed out in blocks.
    try:
        archive = np.load(path, allow_pickle=False)
    except (ValueError, zipfile.BadZipFile) as err:
        raise DataFormatError(f"{path}: cannot read as a .npz archive: {err}") from err
    with archive:
        key = _npz_key(archive.files, NPZ_INPUT_KEYS)
        if key is None:
            raise DataFormatError(f"{path}: no input array; expected one of {NPZ_INPUT_KEYS}, found {archive.files}")
        label_key = _npz_key(archive.files, NPZ_LABEL_KEYS)
        ids = archive["ids"] if "ids" in archive.files else None
        labels = archive[label_key] if label_key else None
        yield from _array_blocks(archive[key], block_size, f"{path}[{key}]", ids, labels, check_finite=on_error is None)


def _npy_header_shape(f: IO[bytes]) -> tuple[int, ...]:
    version = np.lib.format.read_magic(f)
    if version == (1, 0):
        return np.lib.format.read_array_header_1_0(f)[0]
    return np.lib.format.read_array_header_2_0(f)[0]  # 2.0 and 3.0 share the header layout but the encoding


def _count_npz(path: Path) -> int:
    """Read only the .npy header of the input member, not its data."""
    try:
        with zipfile.ZipFile(path) as archive:
            members = {name.removesuffix(".npy"): name for name in archive.namelist()}
            key = _npz_key(members, NPZ_INPUT_KEYS)
            if key is None:
                raise DataFormatError(f"{path}: no input array; expected one of {NPZ_INPUT_KEYS}")
            with archive.open(members[key]) as f:
                shape = _npy_header_shape(f)
    except zipfile.BadZipFile as err:
        raise DataFormatError(f"{path}: cannot read as a .npz archive: {err}") from err
    return int(shape[0]) if shape else 0
