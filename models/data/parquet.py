"""``.parquet``: read batch by batch with Arrow (pyarrow is imported only when a parquet file is read)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from hamdex.models.data import fields
from hamdex.models.data.block import Block, DataFormatError, _check_finite, _parse_label
from hamdex.models.data.rows import OnError

LOG = logging.getLogger(__name__)

# Parquet is columnar: parse whole batches with Arrow rather than row by row, and name the row on error.


def _iter_parquet(path: Path, block_size: int, on_error: OnError | None = None) -> Iterator[Block]:
    """With ``on_error`` (lenient), bad rows (null id, text or vector; a vector of another width than the first;
    nulls inside a vector) are handed to it and dropped, and NaN vectors are passed through for the caller to find
    per row; without it the first bad row raises."""
    parquet = _open_parquet(path)
    columns = parquet.schema_arrow.names
    found = fields.input_fields(columns)
    vector_column, text_columns = found
    if found:
        LOG.info("%s: %s", path, found.describe())
    has_text, has_vector = "text" in columns or bool(text_columns), "vector" in columns or vector_column is not None
    if has_text == has_vector:
        problem = "both 'text' and 'vector' columns" if has_text else "neither a 'text' nor a 'vector' column"
        raise DataFormatError(
            f"{path}: has {problem} (nor a text column such as 'title' or 'content'); found columns {columns}"
        )
    start, width = 0, None
    for batch in parquet.iter_batches(batch_size=block_size):
        if vector_column is not None:
            batch = batch.rename_columns(["vector" if name == vector_column else name for name in batch.schema.names])
        elif text_columns:
            batch = _with_text(batch, text_columns, str(path))
        n, rows = batch.num_rows, np.arange(start, start + batch.num_rows)
        if on_error is not None and n:
            batch, rows, width = _drop_bad_rows(batch, rows, str(path), width, on_error)
        if batch.num_rows:
            yield _parquet_block(batch, rows, str(path), check_finite=on_error is None)
        start += n


def _drop_bad_rows(batch, rows: np.ndarray, where: str, width: int | None, on_error: OnError):
    """(batch without its bad rows, their row numbers, the file's vector width); each bad row goes to
    ``on_error``."""
    import pyarrow as pa
    import pyarrow.compute as pc

    names = batch.schema.names
    bad: dict[int, DataFormatError] = {}

    def flag(mask: np.ndarray, message: str, reason: str) -> None:
        for i in np.flatnonzero(mask).tolist():
            bad.setdefault(i, DataFormatError(f"{where}: row {rows[i]}: {message}", reason))

    if "id" in names:
        flag(_nulls(batch.column("id")), "'id' is null", "bad_id")
    if "text" in names:
        column = batch.column("text")
        _check_text_type(column, where)
        flag(_nulls(column), "'text' is null", "input_type")
    else:
        column = batch.column("vector")
        _check_list_type(column, where)
        null = _nulls(column)
        flag(null, "'vector' is null", "input_type")
        inner = np.zeros(len(column), bool)
        if column.flatten().null_count:  # rare: find the rows with nulls inside their vector
            inner = np.array([v is not None and None in v for v in column.to_pylist()])
        flag(inner, "'vector' has null values", "input_type")
        lengths = pc.list_value_length(column).fill_null(0).to_numpy(zero_copy_only=False)
        good = ~null & ~inner & (lengths > 0)
        if width is None and good.any():
            width = int(lengths[np.flatnonzero(good)[0]])
        flag(~null & (lengths != width), f"vector width differs from the file's first ({width} values)", "input_shape")
    if not bad:
        return batch, rows, width
    for i in sorted(bad):
        on_error(bad[i])
    keep = np.ones(batch.num_rows, bool)
    keep[list(bad)] = False
    return batch.filter(pa.array(keep)), rows[keep], width


def _with_text(batch, names: list[str], where: str):
    """The batch with a ``text`` column joined from its text columns (models.data.fields), which it loses; null
    where all of them are empty."""
    import pyarrow as pa

    for name in names:
        column = batch.column(name)
        if not (
            pa.types.is_string(column.type) or pa.types.is_large_string(column.type) or pa.types.is_null(column.type)
        ):
            raise DataFormatError(f"{where}: {name!r} holds text, so must be a string column, got {column.type}")
    values = zip(*(batch.column(name).to_pylist() for name in names), strict=True)
    texts = pa.array([fields.joined_text(v) or None for v in values], pa.string())
    return batch.drop_columns(names).append_column("text", texts)


def _nulls(column) -> np.ndarray:
    return column.is_null().to_numpy(zero_copy_only=False)


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


def _parquet_block(batch, rows: np.ndarray, where: str, check_finite: bool = True) -> Block:
    """``rows``: the row number in the file of each of the batch's rows (default ids, error messages)."""
    n, names = batch.num_rows, batch.schema.names
    start = int(rows[0])
    span = f"{where} (rows {start}-{int(rows[-1])})"
    ids = _parquet_ids(batch, start, span) if "id" in names else [str(i) for i in rows.tolist()]
    labels = [_parse_label(x) for x in batch.column("label").to_pylist()] if "label" in names else [None] * n
    if "text" in names:
        inputs: list[str] | np.ndarray = _parquet_texts(batch.column("text"), start, where)
    else:
        inputs = _parquet_vectors(batch.column("vector"), start, where, check_finite)
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
    _check_text_type(column, where)
    if column.null_count:
        raise DataFormatError(f"{where}: 'text' is null at row {_first_null(column, start)}")
    return column.to_pylist()


def _check_text_type(column, where: str) -> None:
    import pyarrow as pa

    if not (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)):
        raise DataFormatError(f"{where}: 'text' column must hold strings, got {column.type}")


def _check_list_type(column, where: str) -> None:
    import pyarrow as pa

    list_types = (pa.types.is_list, pa.types.is_large_list, pa.types.is_fixed_size_list)
    if not any(is_list(column.type) for is_list in list_types):
        raise DataFormatError(f"{where}: 'vector' column must be a list of floats, got {column.type}")


def _parquet_vectors(column, start: int, where: str, check_finite: bool = True) -> np.ndarray:
    """list<float> column -> float32 (n, d), checking nulls and raggedness with Arrow, not per Python row."""
    import pyarrow.compute as pc

    _check_list_type(column, where)
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
    if check_finite:
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
