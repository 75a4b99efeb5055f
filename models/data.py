"""Readers that turn a user's data into blocks of records, streamed.

Every format yields :class:`Block` s of at most ``block_size`` items, so memory stays flat however large
the input: ``.npy`` is memory-mapped, parquet read batch by batch, jsonl/csv line by line, IDX files in
chunks of bytes, label folders and tarballs file by file. ``read_all`` concatenates the blocks for training.

Formats (dispatched on suffix or directory layout):

- ``.npy``: 2-d numeric -> float32 vectors, 3-d uint8 -> images; ids are row numbers.
- ``.npz``: ``X`` (or ``vectors`` / ``images`` / ``x``), optional ``ids``, optional ``labels`` / ``y``.
- ``.parquet``: ``id`` (optional), ``text`` or ``vector`` (list of floats), optional ``label``; other
  columns -> metadata.
- ``.jsonl``: objects with ``id`` (optional), ``text`` or ``vector``, optional ``label``, optional
  ``metadata`` dict; other keys are merged into metadata.
- ``.csv``: like jsonl; a vector cell is a JSON list (``"[0.1, 0.2]"``) or space-separated floats.
- a directory with one sub-folder per label holding text files (the 20 Newsgroups layout).
- IDX images (``*-images-idx3-ubyte[.gz]``, the MNIST / Fashion-MNIST format of LeCun et al.) with their
  ``*-labels-idx1-ubyte[.gz]`` next to them.
- the 20 Newsgroups "bydate" tarball (``20news-bydate.tar.xz``, Jason Rennie's split):
  members ``<split>/<group>/<file>``.

Missing ids default to the item's position ("0", "1", ...) in every format.

Text files are decoded as UTF-8 when they are valid UTF-8, else as latin-1 (which never fails). No
20 Newsgroups post with non-ASCII bytes is valid UTF-8, so the demo corpus decodes exactly as
scikit-learn's ``fetch_20newsgroups`` (latin-1) does, while users' UTF-8 folders still decode correctly.

Bad input raises :class:`DataFormatError` naming the file (and the line or row) and the problem. Records
are parsed one at a time by small functions that raise per record, so skip-and-report can later be added
where they are called (``_jsonl_rows``, ``_csv_rows``).
"""

from __future__ import annotations

import csv
import gzip
import json
import logging
import os
import tarfile
import time
import zipfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Literal

import numpy as np

LOG = logging.getLogger(__name__)

Kind = Literal["text", "vector", "image"]
Subset = Literal["train", "test"]

DEMO_CORPUS_ENV = "HAMDEX_DEMO_CORPUS"
DEMO_CORPUS_RELPATH = Path("shared/data/20news-bydate.tar.xz")
NPZ_INPUT_KEYS = ("X", "vectors", "images", "x")
NPZ_LABEL_KEYS = ("labels", "y")
IDX_IMAGES_MAGIC = 0x00000803  # unsigned byte, 3 dims
IDX_LABELS_MAGIC = 0x00000801  # unsigned byte, 1 dim
TAR_SUFFIXES = (".tar.xz", ".tar.gz", ".tgz", ".tar")


class DataFormatError(ValueError):
    """The input data is malformed or in a format we do not read."""

    error_type = "data_format"


class DataNotFoundError(FileNotFoundError):
    """The input data (or the demo corpus) does not exist where we were told to look."""

    error_type = "data_not_found"


@dataclass(frozen=True, eq=False)  # eq=False: ndarray fields make the generated __eq__ ambiguous
class Block:
    """A block of items: external ids, inputs, optional labels and per-item JSON metadata."""

    ids: list[str]
    inputs: list[str] | np.ndarray  # texts, float32 (n, d) vectors or uint8 (n, h, w) images
    labels: list[str | None]
    metadata: list[dict]  # "label" included when the item has one
    kind: Kind

    def __post_init__(self) -> None:
        n = len(self.ids)
        if not (len(self.inputs) == len(self.labels) == len(self.metadata) == n):
            raise ValueError(
                f"block fields differ in length: ids {n}, inputs {len(self.inputs)}, "
                f"labels {len(self.labels)}, metadata {len(self.metadata)}"
            )
        if not _inputs_fit(self.inputs, self.kind):
            got = getattr(self.inputs, "dtype", type(self.inputs).__name__), getattr(self.inputs, "shape", "")
            raise ValueError(f"kind {self.kind!r} needs {KIND_INPUTS.get(self.kind, 'a known kind')}, got {got}")

    def __len__(self) -> int:
        return len(self.ids)

    def head(self, n: int) -> Block:
        """The first ``n`` items."""
        return Block(self.ids[:n], self.inputs[:n], self.labels[:n], self.metadata[:n], self.kind)


KIND_INPUTS = {
    "text": "a list of texts",
    "vector": "float32 (n, d) vectors",
    "image": "uint8 (n, h, w) images",
}


def _inputs_fit(inputs: object, kind: str) -> bool:
    if kind == "text":
        return isinstance(inputs, list)
    dtype, ndim = {"vector": (np.float32, 2), "image": (np.uint8, 3)}.get(kind, (None, None))
    return isinstance(inputs, np.ndarray) and inputs.dtype == dtype and inputs.ndim == ndim


@dataclass(frozen=True)
class Row:
    """One parsed record of a row-wise format; ``where`` locates it for error messages ("f.jsonl:12")."""

    where: str
    id: str
    input: str | np.ndarray  # text, or float32 (d,) vector
    label: str | None
    metadata: dict


# --- Public entry points ---


def iter_blocks(path: str | Path, block_size: int = 4096, *, limit: int | None = None) -> Iterator[Block]:
    """Stream the items of ``path`` in blocks of at most ``block_size``, stopping after ``limit`` items."""
    if block_size < 1:
        raise ValueError(f"block_size must be >= 1, got {block_size}")
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be >= 0, got {limit}")
    path = _existing(path)
    reader = _reader_for(path)
    if limit is not None:
        block_size = max(1, min(block_size, limit))  # don't read a big block to keep a few items
    start, n = time.perf_counter(), 0
    for block in _take(reader(path, block_size), limit):
        n += len(block)
        yield block
    LOG.info("read %d items from %s in %.2f s", n, path, time.perf_counter() - start)


def read_all(path: str | Path, *, limit: int | None = None) -> Block:
    """All items of ``path`` (up to ``limit``) in one block."""
    blocks = list(iter_blocks(path, limit=limit))
    if not blocks:
        raise DataFormatError(f"{path}: no items")
    return concat_blocks(blocks)


def count_items(path: str | Path) -> int | None:
    """The number of items without reading them, where the format allows (else None: e.g. jsonl, csv)."""
    path = _existing(path)
    counter = _counter_for(path)
    return None if counter is None else counter(path)


def concat_blocks(blocks: Iterable[Block]) -> Block:
    """Concatenate blocks of one kind (and one vector/image shape) into one."""
    blocks = list(blocks)
    if not blocks:
        raise ValueError("no blocks to concatenate")
    kinds = {b.kind for b in blocks}
    if len(kinds) > 1:
        raise DataFormatError(f"cannot concatenate blocks of different kinds: {sorted(kinds)}")
    kind = blocks[0].kind
    if kind == "text":
        inputs: list[str] | np.ndarray = [t for b in blocks for t in b.inputs]
    else:
        shapes = {b.inputs.shape[1:] for b in blocks}
        if len(shapes) > 1:
            raise DataFormatError(f"cannot concatenate {kind} blocks of different shapes: {sorted(shapes)}")
        inputs = np.concatenate([b.inputs for b in blocks])
    return Block(
        ids=[i for b in blocks for i in b.ids],
        inputs=inputs,
        labels=[lab for b in blocks for lab in b.labels],
        metadata=[m for b in blocks for m in b.metadata],
        kind=kind,
    )


def _existing(path: str | Path) -> Path:
    path = Path(path)
    if not path.exists():
        raise DataNotFoundError(f"{path}: no such file or directory")
    return path


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


# --- Dispatch ---

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
    reader = readers.get(path.suffix.lower())
    if reader is None:
        raise DataFormatError(_unsupported(path))
    return reader


def _counter_for(path: Path) -> ItemCounter | None:
    if path.is_dir():
        return lambda p: sum(len(files) for _, files in _label_folder_files(p))
    name = path.name.lower()
    if "idx3-ubyte" in name:
        return lambda p: _read_idx_header(p, IDX_IMAGES_MAGIC)[1][0]
    counters: dict[str, ItemCounter] = {".npy": _count_npy, ".npz": _count_npz, ".parquet": _count_parquet}
    if path.suffix.lower() in counters:
        return counters[path.suffix.lower()]
    _reader_for(path)  # unsupported formats raise here, as they would when read
    return None


def _unsupported(path: Path) -> str:
    hint = ""
    if "idx1-ubyte" in path.name.lower():
        hint = " (this is an IDX labels file: pass the matching *-images-idx3-ubyte file instead)"
    return (
        f"{path}: unsupported data format{hint}; expected .npy, .npz, .parquet, .jsonl, .csv, "
        f"a folder of label sub-folders, *-images-idx3-ubyte[.gz] or a 20news-bydate tarball"
    )


# --- Arrays: .npy, .npz ---


def _array_kind(array: np.ndarray, where: str) -> Kind:
    if array.ndim == 2 and (np.issubdtype(array.dtype, np.number) or array.dtype == bool):
        return "vector"
    if array.ndim == 3 and array.dtype == np.uint8:
        return "image"
    raise DataFormatError(
        f"{where}: expected a 2-d numeric array (vectors) or a 3-d uint8 array (images), "
        f"got {array.dtype} with shape {array.shape}"
    )


def _array_inputs(array: np.ndarray, kind: Kind) -> np.ndarray:
    """Copy a slice out of a (possibly memory-mapped) array in the dtype the block holds."""
    return np.ascontiguousarray(array, dtype=np.float32 if kind == "vector" else np.uint8)


def _check_finite(vectors: np.ndarray, where: str) -> None:
    if not np.isfinite(vectors).all():
        row = int(np.flatnonzero(~np.isfinite(vectors).all(axis=1))[0])
        raise DataFormatError(f"{where}: vector at row {row} has NaN or infinite values")


def _array_blocks(
    array: np.ndarray,
    block_size: int,
    where: str,
    ids: np.ndarray | None = None,
    labels: np.ndarray | None = None,
) -> Iterator[Block]:
    kind = _array_kind(array, where)
    for name, extra in (("ids", ids), ("labels", labels)):
        if extra is not None and len(extra) != len(array):
            raise DataFormatError(f"{where}: {name} has {len(extra)} entries but there are {len(array)} items")
    for start in range(0, len(array), block_size):
        stop = min(start + block_size, len(array))
        inputs = _array_inputs(array[start:stop], kind)
        if kind == "vector":
            _check_finite(inputs, f"{where} (rows {start}-{stop - 1})")
        block_ids = [str(i) for i in range(start, stop)] if ids is None else _strings(ids[start:stop])
        block_labels = [None] * len(block_ids) if labels is None else _strings(labels[start:stop])
        yield _labelled_block(block_ids, inputs, block_labels, kind)


def _strings(values: np.ndarray) -> list[str]:
    """Array entries as text; bytes (dtype "S") are decoded rather than shown as "b'...'"."""
    return [v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for v in values.tolist()]


def _labelled_block(ids: list[str], inputs: list[str] | np.ndarray, labels: list[str | None], kind: Kind) -> Block:
    metadata = [{} if label is None else {"label": label} for label in labels]
    return Block(ids, inputs, labels, metadata, kind)


def _iter_npy(path: Path, block_size: int) -> Iterator[Block]:
    array = _load_npy(path)
    yield from _array_blocks(array, block_size, str(path))


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


def _iter_npz(path: Path, block_size: int) -> Iterator[Block]:
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
        yield from _array_blocks(archive[key], block_size, f"{path}[{key}]", ids, labels)


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


# --- Row-wise formats: .jsonl, .csv, .parquet (one Row per record, assembled into blocks) ---


def _rows_to_blocks(rows: Iterator[Row], block_size: int) -> Iterator[Block]:
    """Assemble parsed rows into blocks; the first row fixes the kind (and the vector width) for the file."""
    buffer: list[Row] = []
    first: Row | None = None
    for row in rows:
        first = first or row
        _check_like(row, first)
        buffer.append(row)
        if len(buffer) == block_size:
            yield _block_from_rows(buffer)
            buffer = []
    if buffer:
        yield _block_from_rows(buffer)


def _check_like(row: Row, first: Row) -> None:
    if isinstance(row.input, str) != isinstance(first.input, str):
        raise DataFormatError(f"{row.where}: mixes text and vector items (first item at {first.where})")
    if isinstance(row.input, np.ndarray) and row.input.shape != first.input.shape:
        raise DataFormatError(
            f"{row.where}: ragged vectors: {row.input.shape[0]} values, "
            f"but the first vector ({first.where}) has {first.input.shape[0]}"
        )


def _block_from_rows(rows: list[Row]) -> Block:
    is_text = isinstance(rows[0].input, str)
    inputs = [r.input for r in rows] if is_text else np.stack([r.input for r in rows])  # (n, d) float32
    return Block(
        ids=[r.id for r in rows],
        inputs=inputs,
        labels=[r.label for r in rows],
        metadata=[r.metadata for r in rows],
        kind="text" if is_text else "vector",
    )


def _row_from_record(record: dict[str, Any], position: int, where: str) -> Row:
    """One record (jsonl object or csv row) -> Row. ``position`` (0-based item number) is the default id."""
    # "" counts as absent: a csv with both columns leaves one cell empty per row.
    has_text, has_vector = record.get("text") not in (None, ""), record.get("vector") not in (None, "")
    if has_text == has_vector:
        problem = "both 'text' and 'vector'" if has_text else "neither a non-empty 'text' nor a 'vector'"
        raise DataFormatError(f"{where}: item has {problem}; give exactly one")
    item = record["text"] if has_text else _parse_vector(record["vector"], where)
    if has_text and not isinstance(item, str):
        raise DataFormatError(f"{where}: 'text' must be a string, got {type(item).__name__}")
    label = _parse_label(record.get("label"))
    metadata = _parse_metadata(record, where)
    if label is not None:
        metadata["label"] = label
    raw_id = record.get("id")
    return Row(where, str(position) if raw_id in (None, "") else str(raw_id), item, label, metadata)


def _parse_label(value: Any) -> str | None:
    # csv cannot say null: an empty cell means "no label".
    return None if value is None or value == "" else str(value)


def _parse_metadata(record: dict[str, Any], where: str) -> dict:
    """Keys other than id/text/vector/label/metadata, then the ``metadata`` dict on top (it is explicit)."""
    extra = {k: v for k, v in record.items() if k not in ("id", "text", "vector", "label", "metadata")}
    nested = record.get("metadata")
    if nested in (None, ""):
        return extra
    if isinstance(nested, str):  # csv: a JSON object in a cell
        nested = _loads(nested, where, "metadata")
    if not isinstance(nested, dict):
        raise DataFormatError(f"{where}: 'metadata' must be an object, got {type(nested).__name__}")
    return {**extra, **nested}


def _parse_vector(value: Any, where: str) -> np.ndarray:
    """A vector given as a list of numbers, a JSON list string or space-separated floats -> float32 (d,)."""
    if isinstance(value, str):
        text = value.strip()
        value = _loads(text, where, "vector") if text.startswith("[") else text.split()
    try:
        vector = np.asarray(value, dtype=np.float32)
    except (TypeError, ValueError) as err:
        raise DataFormatError(f"{where}: 'vector' is not a list of numbers: {err}") from err
    if vector.ndim != 1 or vector.size == 0:
        raise DataFormatError(f"{where}: 'vector' must be a non-empty flat list of numbers, got shape {vector.shape}")
    if not np.isfinite(vector).all():
        raise DataFormatError(f"{where}: 'vector' has NaN or infinite values")
    return vector


def _loads(text: str, where: str, what: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise DataFormatError(f"{where}: {what} is not valid JSON: {err}") from err


def _iter_jsonl(path: Path, block_size: int) -> Iterator[Block]:
    yield from _rows_to_blocks(_jsonl_rows(path), block_size)


def _jsonl_rows(path: Path) -> Iterator[Row]:
    position = 0
    with _open_text(path) as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue  # blank lines (e.g. a trailing one) are not records
            where = f"{path}:{lineno}"
            record = _loads(line, where, "line")
            if not isinstance(record, dict):
                raise DataFormatError(f"{where}: expected a JSON object, got {type(record).__name__}")
            yield _row_from_record(record, position, where)
            position += 1


def _iter_csv(path: Path, block_size: int) -> Iterator[Block]:
    yield from _rows_to_blocks(_csv_rows(path), block_size)


def _csv_rows(path: Path) -> Iterator[Row]:
    with _open_text(path, newline="") as f:  # newline="": the csv module handles quoted multi-line cells
        reader = csv.DictReader(f)
        fields = reader.fieldnames or []
        if "text" not in fields and "vector" not in fields:
            raise DataFormatError(f"{path}: needs a 'text' or 'vector' column, found columns {fields}")
        for position, record in enumerate(reader):
            where = f"{path}:{reader.line_num}"
            if None in record:  # DictReader puts surplus cells under the key None
                raise DataFormatError(f"{where}: row has more cells than the header has columns")
            yield _row_from_record(record, position, where)


def _open_text(path: Path, newline: str | None = None) -> IO[str]:
    # utf-8-sig: tolerate the byte-order mark that spreadsheet exports put at the start.
    return open(path, encoding="utf-8-sig", newline=newline)


# Parquet is columnar: parse whole batches with Arrow rather than row by row, and name the row on error.


def _iter_parquet(path: Path, block_size: int) -> Iterator[Block]:
    parquet = _open_parquet(path)
    columns = parquet.schema_arrow.names
    has_text, has_vector = "text" in columns, "vector" in columns
    if has_text == has_vector:
        problem = "both 'text' and 'vector' columns" if has_text else "neither a 'text' nor a 'vector' column"
        raise DataFormatError(f"{path}: has {problem}; found columns {columns}")
    start = 0
    for batch in parquet.iter_batches(batch_size=block_size):
        if batch.num_rows:
            yield _parquet_block(batch, start, str(path))
            start += batch.num_rows


def _parquet_module():  # pyarrow is heavy: import it only when reading parquet
    import pyarrow.parquet as pq

    return pq


def _open_parquet(path: Path):
    import pyarrow as pa

    try:
        return _parquet_module().ParquetFile(path)
    except (pa.ArrowInvalid, OSError) as err:
        raise DataFormatError(f"{path}: cannot read as parquet: {err}") from err


def _count_parquet(path: Path) -> int:
    return int(_open_parquet(path).metadata.num_rows)


def _parquet_block(batch, start: int, where: str) -> Block:
    n, names = batch.num_rows, batch.schema.names
    rows = f"{where} (rows {start}-{start + n - 1})"
    ids = _parquet_ids(batch, start, rows) if "id" in names else [str(i) for i in range(start, start + n)]
    labels = [_parse_label(x) for x in batch.column("label").to_pylist()] if "label" in names else [None] * n
    if "text" in names:
        inputs: list[str] | np.ndarray = _parquet_texts(batch.column("text"), start, where)
    else:
        inputs = _parquet_vectors(batch.column("vector"), start, where)
    metadata = _parquet_metadata(batch, [c for c in names if c not in ("id", "text", "vector", "label")])
    for meta, label in zip(metadata, labels, strict=True):
        if label is not None:
            meta["label"] = label
    return Block(ids, inputs, labels, metadata, "text" if "text" in names else "vector")


def _first_null(column, start: int) -> int:
    return start + int(np.flatnonzero(column.is_null().to_numpy(zero_copy_only=False))[0])


def _parquet_ids(batch, start: int, where: str) -> list[str]:
    column = batch.column("id")
    if column.null_count:
        raise DataFormatError(f"{where}: 'id' is null at row {_first_null(column, start)}")
    return [str(x) for x in column.to_pylist()]


def _parquet_texts(column, start: int, where: str) -> list[str]:
    import pyarrow as pa

    if not (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)):
        raise DataFormatError(f"{where}: 'text' column must hold strings, got {column.type}")
    if column.null_count:
        raise DataFormatError(f"{where}: 'text' is null at row {_first_null(column, start)}")
    return column.to_pylist()


def _parquet_vectors(column, start: int, where: str) -> np.ndarray:
    """list<float> column -> float32 (n, d), checking nulls and raggedness with Arrow, not per Python row."""
    import pyarrow as pa
    import pyarrow.compute as pc

    list_types = (pa.types.is_list, pa.types.is_large_list, pa.types.is_fixed_size_list)
    if not any(is_list(column.type) for is_list in list_types):
        raise DataFormatError(f"{where}: 'vector' column must be a list of floats, got {column.type}")
    if column.null_count:
        raise DataFormatError(f"{where}: 'vector' is null at row {_first_null(column, start)}")
    lengths = pc.list_value_length(column).to_numpy()
    if len(lengths) and (lengths != lengths[0]).any():
        row = start + int(np.flatnonzero(lengths != lengths[0])[0])
        raise DataFormatError(
            f"{where}: ragged vectors: row {row} has {lengths[row - start]} values, row {start} has {lengths[0]}"
        )
    values = column.flatten()
    if values.null_count:
        raise DataFormatError(f"{where}: 'vector' column has null values inside vectors")
    vectors = values.to_numpy(zero_copy_only=False).astype(np.float32).reshape(len(column), -1)  # (n, d)
    if vectors.shape[1] == 0:
        raise DataFormatError(f"{where}: 'vector' column holds empty vectors")
    _check_finite(vectors, where)
    return vectors


def _parquet_metadata(batch, names: list[str]) -> list[dict]:
    import pyarrow as pa

    columns = {}
    for name in names:
        column = batch.column(name)
        if pa.types.is_temporal(column.type):  # dates and times are not JSON: keep their ISO text
            column = column.cast(pa.string())
        columns[name] = column.to_pylist()
    return [{name: values[i] for name, values in columns.items()} for i in range(batch.num_rows)]


# --- Text: label folders and the 20 Newsgroups tarball ---


def decode_text(raw: bytes) -> str:
    """UTF-8 when the bytes are valid UTF-8, else latin-1 (see the module docstring)."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def subject_of(text: str) -> str | None:
    """The ``Subject:`` header of a news post (raw, trimmed), looked for in the header lines only."""
    for line in text.splitlines():
        if not line.strip():
            return None  # end of the headers
        if line[:8].lower() == "subject:":
            return line[8:].strip()
    return None


def _text_metadata(label: str, text: str) -> dict:
    subject = subject_of(text)
    return {"label": label} if subject is None else {"label": label, "subject": subject}


def _visible(name: str) -> bool:
    return not name.startswith(".")  # .DS_Store, editor swap files


def _label_folder_files(root: Path) -> list[tuple[str, list[Path]]]:
    """(label, files) per sub-folder, sorted by name like scikit-learn's ``load_files``."""
    entries = sorted(p for p in root.iterdir() if _visible(p.name))
    stray = [p.name for p in entries if not p.is_dir()]
    if stray or not entries:
        found = f"files at the top level: {stray[:5]}" if stray else "nothing"
        raise DataFormatError(f"{root}: expected one sub-folder per label holding text files, found {found}")
    out = []
    for folder in entries:
        files = sorted(p for p in folder.iterdir() if _visible(p.name))
        nested = [p.name for p in files if not p.is_file()]
        if nested:
            raise DataFormatError(f"{folder}: label folders must hold only files, found folders {nested[:5]}")
        out.append((folder.name, files))
    return out


def _iter_label_folder(root: Path, block_size: int) -> Iterator[Block]:
    yield from _text_blocks(_label_folder_items(root), block_size)


def _label_folder_items(root: Path) -> Iterator[tuple[str, str, str, dict]]:
    for label, files in _label_folder_files(root):
        for file in files:
            text = decode_text(file.read_bytes())
            yield f"{label}/{file.name}", text, label, _text_metadata(label, text)


def _text_blocks(items: Iterator[tuple[str, str, str, dict]], block_size: int) -> Iterator[Block]:
    """(id, text, label, metadata) items -> text blocks."""
    buffer: list[tuple[str, str, str, dict]] = []
    for item in items:
        buffer.append(item)
        if len(buffer) == block_size:
            yield _text_block(buffer)
            buffer = []
    if buffer:
        yield _text_block(buffer)


def _text_block(items: list[tuple[str, str, str, dict]]) -> Block:
    ids, texts, labels, metadata = (list(column) for column in zip(*items, strict=True))
    return Block(ids, texts, labels, metadata, "text")


def _iter_20ng_tar(path: Path, block_size: int) -> Iterator[Block]:
    yield from _text_blocks(_tar_items(path, subset=None), block_size)


def _tar_items(path: Path, subset: str | None) -> Iterator[tuple[str, str, str, dict]]:
    """Stream ``<split>/<group>/<file>`` members in one pass ("r|*": no seeking, no index of members).

    ``subset`` keeps only ``*-<subset>`` splits (metadata {"label", "subject"}); None keeps all and adds
    ``"split"`` to the metadata, since ids alone do not say which split an item came from.
    """
    try:
        with tarfile.open(path, mode="r|*") as tar:
            for member in tar:
                item = _tar_item(tar, member, path, subset)
                if item is not None:
                    yield item
    except (tarfile.TarError, EOFError, OSError) as err:
        raise DataFormatError(f"{path}: cannot read as a tar archive: {err}") from err


def _tar_item(tar: tarfile.TarFile, member: tarfile.TarInfo, path: Path, subset: str | None):
    if not member.isfile() or not all(_visible(part) for part in member.name.split("/")):
        return None
    parts = member.name.strip("/").split("/")
    if len(parts) != 3:
        raise DataFormatError(f"{path}: member {member.name!r} is not <split>/<group>/<file> as in 20news-bydate")
    split, group, filename = parts
    split_name = split.rsplit("-", 1)[-1]  # "20news-bydate-train" -> "train"
    if subset is not None and split_name != subset:
        return None
    handle = tar.extractfile(member)
    assert handle is not None  # isfile() members always have data
    text = decode_text(handle.read())
    metadata = _text_metadata(group, text)
    if subset is None:
        metadata["split"] = split_name
    return f"{group}/{filename}", text, group, metadata


def load_20newsgroups(path: str | Path, subset: Subset) -> Block:
    """One split of the 20news-bydate tarball, sorted by (group, file name) whatever the tar order.

    ids "<group>/<file>", labels the group, metadata {"label", "subject"}.
    """
    if subset not in ("train", "test"):
        raise ValueError(f"subset must be 'train' or 'test', got {subset!r}")
    path = _existing(path)
    start = time.perf_counter()
    items = sorted(_tar_items(path, subset), key=lambda item: _group_file_key(item[0]))
    if not items:
        raise DataFormatError(f"{path}: no members in a '*-{subset}' split")
    LOG.info("read %d %s posts from %s in %.2f s", len(items), subset, path, time.perf_counter() - start)
    return _text_block(items)


def _group_file_key(item_id: str) -> tuple[str, str]:
    group, _, filename = item_id.partition("/")
    return group, filename


# --- IDX images (MNIST / Fashion-MNIST) ---


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


# --- The demo corpus ---


def demo_corpus_path() -> Path | None:
    """The 20news-bydate tarball: $HAMDEX_DEMO_CORPUS, else ../shared/data beside the repo or the cwd."""
    env = os.environ.get(DEMO_CORPUS_ENV)
    if env:
        path = Path(env).expanduser()
        if not path.exists():
            raise DataNotFoundError(f"{DEMO_CORPUS_ENV}={env}: no such file")
        return path
    repo_root = Path(__file__).resolve().parents[1]
    for base in (repo_root.parent, Path.cwd().parent):
        if (base / DEMO_CORPUS_RELPATH).exists():
            return base / DEMO_CORPUS_RELPATH
    return None


def load_demo_corpus(subset: Subset) -> Block:
    """The 20 Newsgroups split from the local tarball, else downloaded by scikit-learn."""
    path = demo_corpus_path()
    if path is not None:
        return load_20newsgroups(path, subset)
    LOG.info("no local 20news-bydate tarball; asking scikit-learn to fetch 20 Newsgroups (%s)", subset)
    try:
        from sklearn.datasets import fetch_20newsgroups

        bunch = fetch_20newsgroups(subset=subset, remove=(), shuffle=False)
    except Exception as err:  # no network, no sklearn, a broken cache: all mean "no demo corpus"
        raise DataNotFoundError(
            f"20 Newsgroups is not available: no local tarball (set {DEMO_CORPUS_ENV} to a "
            f"20news-bydate.tar.xz, or put it at ../{DEMO_CORPUS_RELPATH} next to the repository) "
            f"and scikit-learn could not fetch it: "
            f"{type(err).__name__}: {err}"
        ) from err
    return _block_from_sklearn(bunch)


def _block_from_sklearn(bunch: Any) -> Block:
    """Map a ``fetch_20newsgroups`` bunch to a Block, with ids "<group>/<file>" as the tarball gives them."""
    filenames = getattr(bunch, "filenames", None)
    items = []
    for index, (text, target) in enumerate(zip(bunch.data, bunch.target, strict=True)):
        group = bunch.target_names[int(target)]
        # The file name (the post number) matches the tarball's ids; the index is the fallback if absent.
        name = Path(str(filenames[index])).name if filenames is not None else str(index)
        items.append((f"{group}/{name}", text, group, _text_metadata(group, text)))
    return _text_block(items)
