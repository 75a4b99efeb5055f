"""Row-wise formats: ``.jsonl`` and ``.csv``, parsed one :class:`Row` per record and assembled into blocks.

Records are parsed one at a time by small functions that raise per record. Given an ``on_error`` callback, a bad
record (malformed JSON, a wrong or ragged vector, NaN, non-string or undecodable text) is handed to it as a
:class:`DataFormatError` and skipped; without one the error is raised.
"""

from __future__ import annotations

import csv
import gzip
import itertools
import json
import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np
from hamdex.models.data import fields
from hamdex.models.data.block import Block, DataFormatError, _parse_label

LOG = logging.getLogger(__name__)
_TEXT_EXAMPLES = "'title', 'description', 'content', 'abstract'"  # for error messages; the rule: models.data.fields
OnError = Callable[[DataFormatError], None]


@dataclass(frozen=True)
class Row:
    """One parsed record of a row-wise format; ``where`` locates it for error messages ("f.jsonl:12")."""

    where: str
    id: str
    input: str | np.ndarray  # text, or float32 (d,) vector
    label: str | None
    metadata: dict


def _rows_to_blocks(rows: Iterator[Row], block_size: int, on_error: OnError | None = None) -> Iterator[Block]:
    """Assemble parsed rows into blocks; the first row fixes the kind (and the vector width) for the file."""
    buffer: list[Row] = []
    first: Row | None = None
    for row in rows:
        first = first or row
        try:
            _check_like(row, first)
        except DataFormatError as err:
            if on_error is None:
                raise
            on_error(err)
            continue
        buffer.append(row)
        if len(buffer) == block_size:
            yield _block_from_rows(buffer)
            buffer = []
    if buffer:
        yield _block_from_rows(buffer)


def _check_like(row: Row, first: Row) -> None:
    if isinstance(row.input, str) != isinstance(first.input, str):
        raise DataFormatError(f"{row.where}: mixes text and vector items (first item at {first.where})", "input_type")
    if isinstance(row.input, np.ndarray) and row.input.shape != first.input.shape:
        raise DataFormatError(
            f"{row.where}: ragged vectors: {row.input.shape[0]} values, "
            f"but the first vector ({first.where}) has {first.input.shape[0]}",
            "input_shape",
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
    record = _with_input(record, where)
    # "" counts as absent: a csv with both columns leaves one cell empty per row.
    if record.get("input") not in (None, ""):  # the HTTP row's field: a text, or a vector
        if record.get("text") not in (None, "") or record.get("vector") not in (None, ""):
            raise DataFormatError(f"{where}: item has 'input' and 'text' or 'vector'; give exactly one")
        given = record["input"]
        record = {**record, ("text" if isinstance(given, str) else "vector"): given}
    has_text, has_vector = record.get("text") not in (None, ""), record.get("vector") not in (None, "")
    if has_text == has_vector:
        problem = (
            "both 'text' and 'vector'"
            if has_text
            else f"neither a non-empty 'text' nor a 'vector' ({_TEXT_EXAMPLES} are text too)"
        )
        raise DataFormatError(f"{where}: item has {problem}; give exactly one")
    item = record["text"] if has_text else _parse_vector(record["vector"], where)
    if has_text and not isinstance(item, str):
        raise DataFormatError(f"{where}: 'text' must be a string, got {type(item).__name__}", "input_type")
    if has_text and _undecodable(item):
        raise DataFormatError(f"{where}: text is not valid UTF-8", "undecodable")
    label = _parse_label(record.get("label"))
    metadata = _parse_metadata(record, where)
    if label is not None:
        metadata["label"] = label
    raw_id = record.get("id")
    return Row(where, str(position) if raw_id in (None, "") else str(raw_id), item, label, metadata)


def _with_input(record: dict[str, Any], where: str) -> dict[str, Any]:
    """The record, its ``vector`` or ``text`` read from the fields that hold them under other names
    (models.data.fields) where it has no input field."""
    if not fields.INPUT_FIELDS.isdisjoint(record):
        return record  # the common case, one set test per record
    found = fields.input_fields(record)
    if found.vector is not None:
        return {**{k: v for k, v in record.items() if k != found.vector}, "vector": record[found.vector]}
    if not found.text:
        return record
    for name in found.text:
        if record[name] is not None and not isinstance(record[name], str):
            raise DataFormatError(f"{where}: {name!r} holds text, so must be a string", "input_type")
    text = fields.joined_text(record[name] for name in found.text)
    if not text:
        raise DataFormatError(f"{where}: item has no text: {fields.describe(found.text)} are empty", "input_type")
    return {**{k: v for k, v in record.items() if k not in found.text}, "text": text}


def _parse_metadata(record: dict[str, Any], where: str) -> dict:
    """Keys other than id/input/text/vector/label/metadata, then the ``metadata`` dict on top (it is explicit)."""
    extra = {k: v for k, v in record.items() if k not in ("id", "input", "text", "vector", "label", "metadata")}
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
        raise DataFormatError(f"{where}: 'vector' is not a list of numbers: {err}", "input_type") from err
    if vector.ndim != 1 or vector.size == 0:
        raise DataFormatError(
            f"{where}: 'vector' must be a non-empty flat list of numbers, got shape {vector.shape}", "input_shape"
        )
    if not np.isfinite(vector).all():
        raise DataFormatError(f"{where}: 'vector' has NaN or infinite values", "non_finite")
    return vector


def _loads(text: str, where: str, what: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise DataFormatError(f"{where}: {what} is not valid JSON: {err}") from err


def _iter_jsonl(path: Path, block_size: int, on_error: OnError | None = None) -> Iterator[Block]:
    yield from _rows_to_blocks(_jsonl_rows(path, on_error), block_size, on_error)


def _jsonl_rows(path: Path, on_error: OnError | None = None) -> Iterator[Row]:
    position, told = 0, False
    with _open_text(path) as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue  # blank lines (e.g. a trailing one) are not records
            where = f"{path}:{lineno}"
            try:
                if _undecodable(line):
                    raise DataFormatError(f"{where}: line is not valid UTF-8", "undecodable")
                record = _loads(line, where, "line")
                if not isinstance(record, dict):
                    raise DataFormatError(f"{where}: expected a JSON object, got {type(record).__name__}")
                if not told:  # the first record's layout, said once
                    told = _tell(path, fields.input_fields(record)) or True
                row = _row_from_record(record, position, where)
            except DataFormatError as err:
                if on_error is None:
                    raise
                on_error(err)
                row = None
            position += 1  # a skipped record keeps its position: later default ids do not shift
            if row is not None:
                yield row


def _iter_csv(
    path: Path, block_size: int, on_error: OnError | None = None, columns: Sequence[str] | None = None
) -> Iterator[Block]:
    yield from _rows_to_blocks(_csv_rows(path, on_error, columns), block_size, on_error)


def _csv_rows(path: Path, on_error: OnError | None = None, columns: Sequence[str] | None = None) -> Iterator[Row]:
    """Rows of a CSV file. Its columns are named by its header line, or by ``columns`` when it has none; a first
    line of numbers only is taken for data, not a header. Without a ``text`` or ``vector`` column every column but
    ``id`` and ``label`` is one number of the item's vector (pixel or feature columns, named or not)."""
    with _open_text(path, newline="") as f:  # newline="": the csv module handles quoted multi-line cells
        reader = csv.reader(f)
        first = next(reader, None)
        if first is None:
            return
        header = list(columns) if columns is not None else ([] if _all_numbers(first) else first)
        pending = [first] if header is not first else []
        wide = "text" not in header and "vector" not in header and not _tell(path, fields.input_fields(header))
        rows = itertools.chain(pending, reader)
        if wide:
            rows = _check_wide(path, header, rows)
            if not columns and header is not first:
                LOG.info("%s: no header line; every column is a vector value (name leading ones with columns)", path)
        for position, cells in enumerate(rows):
            where = f"{path}:{reader.line_num}"
            try:
                if any(_undecodable(v) for v in cells):
                    raise DataFormatError(f"{where}: row is not valid UTF-8", "undecodable")
                record = _wide_record(header, cells, where) if wide else _named_record(header, cells, where)
                row = _row_from_record(record, position, where)
            except DataFormatError as err:
                if on_error is None:
                    raise
                on_error(err)
                continue
            yield row


def _tell(path: Path, found: fields.Found) -> bool:
    """Whether items take their input from fields of other names (models.data.fields); logs which."""
    if found:
        LOG.info("%s: %s", path, found.describe())
    return bool(found)


def _check_wide(path: Path, header: list[str], rows: Iterator[list[str]]) -> Iterator[list[str]]:
    """The rows again, once the first shows that the columns besides id and label are numbers: a file of other
    columns is one error, not one skipped row per line."""
    first = next(rows, None)
    if first is None:
        return
    others = [c for i, c in enumerate(first) if i >= len(header) or header[i] not in ("id", "label")]
    if not others or not _all_numbers(others):
        raise DataFormatError(
            f"{path}: needs a 'text' or 'vector' column, text columns named like {_TEXT_EXAMPLES}, or numeric columns "
            f"besides 'id' and 'label' (one vector value each); found columns {header}. A file without a header "
            "line: name its columns (hamdex --columns, e.g. label,title,description)"
        )
    yield first
    yield from rows


def _all_numbers(cells: list[str]) -> bool:
    try:
        [float(c) for c in cells]
    except ValueError:
        return False
    return bool(cells)


def _named_record(header: list[str], cells: list[str], where: str) -> dict[str, Any]:
    if len(cells) > len(header):
        raise DataFormatError(f"{where}: row has more cells than the header has columns")
    return dict(zip(header, cells, strict=False))  # missing trailing cells are absent, as csv.DictReader has it


def _wide_record(header: list[str], cells: list[str], where: str) -> dict[str, Any]:
    """id and label from their columns, the vector from every other cell (those past the named columns too)."""
    names = header + [""] * (len(cells) - len(header))
    record: dict[str, Any] = {n: c for n, c in zip(names, cells, strict=False) if n in ("id", "label")}
    values = [(n, c) for n, c in zip(names, cells, strict=False) if n not in ("id", "label")]
    try:
        record["vector"] = [float(c) for _, c in values]
    except ValueError:
        name, cell = next((n, c) for n, c in values if not _all_numbers([c]))
        column = f"column {name!r}" if name else f"column {names.index(name) + 1}"
        raise DataFormatError(
            f"{where}: {column} holds {cell[:40]!r}, not a number; a CSV without a 'text' or 'vector' column is read "
            "as vectors, one number per column besides 'id' and 'label'",
            "input_type",
        ) from None
    return record


def _undecodable(text: str) -> bool:
    """Whether text read with ``errors="surrogateescape"`` held bytes that are not UTF-8 (lone surrogates)."""
    return any("\udc80" <= ch <= "\udcff" for ch in text) if not text.isascii() else False


def _open_text(path: Path, newline: str | None = None) -> IO[str]:
    # utf-8-sig: tolerate the byte-order mark that spreadsheet exports put at the start. surrogateescape: an
    # invalid byte becomes a lone surrogate, reported per record (``_undecodable``) rather than ending the read.
    if path.name.lower().endswith(".gz"):  # .jsonl.gz, .csv.gz: decompressed as they are read
        return gzip.open(path, "rt", encoding="utf-8-sig", newline=newline, errors="surrogateescape")
    return open(path, encoding="utf-8-sig", newline=newline, errors="surrogateescape")
