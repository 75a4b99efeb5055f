"""The entry points: pick a reader by suffix or directory layout, and stream, read or count the items."""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from hamdex.models.data.arrays import _count_npy, _count_npz, _iter_npy, _iter_npz
from hamdex.models.data.block import Block, DataFormatError, _existing, concat_blocks
from hamdex.models.data.idx import IDX_IMAGES_MAGIC, _iter_idx, _read_idx_header
from hamdex.models.data.newsgroups import TAR_SUFFIXES, _iter_20ng_tar
from hamdex.models.data.parquet import _count_parquet, _iter_parquet
from hamdex.models.data.rows import OnError, _iter_csv, _iter_jsonl
from hamdex.models.data.text import _iter_label_folder, _label_folder_files

LOG = logging.getLogger(__name__)


_LENIENT_READERS = (_iter_jsonl, _iter_csv, _iter_npy, _iter_npz, _iter_parquet)


def iter_blocks(
    path: str | Path,
    block_size: int = 4096,
    *,
    limit: int | None = None,
    on_error: OnError | None = None,
    columns: Sequence[str] | None = None,
) -> Iterator[Block]:
    """Stream the items of ``path`` in blocks of at most ``block_size``, stopping after ``limit`` items.

    ``on_error`` (lenient reading): jsonl/csv hand each bad record to it as a DataFormatError and skip it, and
    .npy/.npz pass NaN rows through for the caller to validate per row; other formats still raise. ``columns``:
    the column names of a CSV file without a header line (its first line is then data)."""
    if block_size < 1:
        raise ValueError(f"block_size must be >= 1, got {block_size}")
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be >= 0, got {limit}")
    path = _existing(path)
    reader = _reader_for(path)
    if on_error is not None and reader in _LENIENT_READERS:
        reader = functools.partial(reader, on_error=on_error)
    if columns is not None:
        if _suffix(path) != ".csv":
            raise DataFormatError(f"{path}: column names are for CSV files without a header line")
        reader = functools.partial(reader, columns=list(columns))
    if limit is not None:
        block_size = max(1, min(block_size, limit))  # don't read a big block to keep a few items
    start, n = time.perf_counter(), 0
    for block in _take(reader(path, block_size), limit):
        n += len(block)
        yield block
    LOG.info("read %d items from %s in %.2f s", n, path, time.perf_counter() - start)


def read_all(path: str | Path, *, limit: int | None = None, columns: Sequence[str] | None = None) -> Block:
    """All items of ``path`` (up to ``limit``) in one block; ``columns`` as for :func:`iter_blocks`."""
    blocks = list(iter_blocks(path, limit=limit, columns=columns))
    if not blocks:
        raise DataFormatError(f"{path}: no items")
    return concat_blocks(blocks)


def count_items(path: str | Path) -> int | None:
    """The number of items without reading them, where the format allows (else None: e.g. jsonl, csv)."""
    path = _existing(path)
    counter = _counter_for(path)
    return None if counter is None else counter(path)


def _take(blocks: Iterator[Block], limit: int | None) -> Iterator[Block]:
    """Pass blocks through until ``limit`` items; closing the reader as soon as we stop."""
    left = limit
    for block in blocks:
        if left is not None and len(block) >= left:
            if left:
                yield block.head(left)
            return
        if left is not None:
            left -= len(block)
        if len(block):
            yield block


Reader = Callable[[Path, int], Iterator[Block]]
ItemCounter = Callable[[Path], int]


def _reader_for(path: Path) -> Reader:
    if path.is_dir():
        return _iter_label_folder
    name = path.name.lower()
    if "idx3-ubyte" in name:
        return _iter_idx
    if name.endswith(TAR_SUFFIXES):
        return _iter_20ng_tar
    readers: dict[str, Reader] = {
        ".npy": _iter_npy,
        ".npz": _iter_npz,
        ".parquet": _iter_parquet,
        ".jsonl": _iter_jsonl,
        ".csv": _iter_csv,
    }
    reader = readers.get(_suffix(path))
    if reader is None or (path.name.lower().endswith(".gz") and reader not in (_iter_jsonl, _iter_csv)):
        raise DataFormatError(_unsupported(path))
    return reader


def _suffix(path: Path) -> str:
    """The format's suffix: ``.jsonl`` for ``x.jsonl`` and for gzip-compressed ``x.jsonl.gz``."""
    name = path.name.lower()
    return Path(name.removesuffix(".gz")).suffix


def _counter_for(path: Path) -> ItemCounter | None:
    if path.is_dir():
        return lambda p: sum(len(files) for _, files in _label_folder_files(p))
    name = path.name.lower()
    if "idx3-ubyte" in name:
        return lambda p: _read_idx_header(p, IDX_IMAGES_MAGIC)[1][0]
    counters: dict[str, ItemCounter] = {".npy": _count_npy, ".npz": _count_npz, ".parquet": _count_parquet}
    if path.suffix.lower() in counters:  # not _suffix: a compressed array has no header to read the count from
        return counters[path.suffix.lower()]
    _reader_for(path)  # unsupported formats raise here, as they would when read
    return None


def _unsupported(path: Path) -> str:
    hint = ""
    if "idx1-ubyte" in path.name.lower():
        hint = " (this is an IDX labels file: pass the matching *-images-idx3-ubyte file instead)"
    return (
        f"{path}: unsupported data format{hint}; expected .npy, .npz, .parquet, .jsonl[.gz], .csv[.gz], "
        f"a folder of label sub-folders, *-images-idx3-ubyte[.gz] or a 20news-bydate tarball"
    )
