"""Export and import a collection's items (ids, codes, metadata) as NDJSON or Parquet, streamed in blocks.

Both formats carry one shape: a row is ``{"id": str, "code": <hex, models.bits' byte order>, "metadata": {...}}``,
and the collection's settings travel with the rows as a :class:`Header` (n_bits, fingerprint, index kind and
parameters, model, count, seq): the first line of an NDJSON file (``{"header": {...}}``), or the Parquet schema's
metadata under ``hamdex``. Codes go in as they came out, never re-encoded, so an import refuses a file of another
fingerprint or code length (FingerprintMismatchError). The rows of an export are read in one SQLite read
transaction on a connection of their own: a consistent view as of the header's ``seq``, while writes go on.
Importing the rows into a fresh collection of the same kind, in the exported order, gives the same search results.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from hamdex.index.base import CollectionLike
from hamdex.index.errors import (
    CollectionError,
    FingerprintMismatchError,
    ImportFormatError,
    UnsupportedByBackendError,
)
from hamdex.index.store import DB_FILE
from hamdex.index.validation import check_id, metadata_problem

LOG = logging.getLogger(__name__)

EXPORT_VERSION = 1
PARQUET_KEY = b"hamdex"  # the Parquet schema metadata key holding the header
CHUNK = 10_000  # rows per block read, written or upserted
FORMATS = ("ndjson", "parquet")


@dataclass(frozen=True)
class Header:
    """What an export says about the collection it came from."""

    n_bits: int
    fingerprint: str
    index_kind: str = "flat"
    index_params: dict[str, int] = field(default_factory=dict)
    model: str | None = None
    count: int = 0  # rows that follow
    seq: int = 0  # the collection's sequence number the rows reflect
    version: int = EXPORT_VERSION

    @classmethod
    def from_dict(cls, raw: object) -> Header:
        if not isinstance(raw, dict):
            raise ImportFormatError("the header must be a JSON object")
        unknown = set(raw) - set(cls.__dataclass_fields__)
        if unknown:
            raise ImportFormatError(f"unknown header keys {sorted(unknown)}")
        try:
            header = cls(**raw)
        except TypeError as exc:
            raise ImportFormatError(f"bad header: {exc}") from exc
        ints = (header.n_bits, header.count, header.seq, header.version)
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in ints) or header.n_bits <= 0:
            raise ImportFormatError("header n_bits, count, seq and version must be integers, n_bits positive")
        if header.n_bits % 8 or not isinstance(header.fingerprint, str) or not isinstance(header.index_params, dict):
            raise ImportFormatError("header n_bits must be a multiple of 8, fingerprint a string")
        if header.version != EXPORT_VERSION:
            raise ImportFormatError(f"export version {header.version} is not {EXPORT_VERSION}")
        return header

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    def check_target(self, collection: CollectionLike) -> None:
        """Refuse to load these rows into ``collection`` unless its codes come from the same model and length."""
        if collection.fingerprint != self.fingerprint or collection.n_bits != self.n_bits:
            raise FingerprintMismatchError(
                collection.path,
                f"{collection.fingerprint} ({collection.n_bits} bits)",
                f"{self.fingerprint} ({self.n_bits} bits) in the file",
            )


class Rows(NamedTuple):
    """A block of rows: ids, codes uint8 (m, n_bytes), metadata as compact JSON texts."""

    ids: list[str]
    codes: np.ndarray
    metadata: list[str]


# ---- reading a collection -------------------------------------------------------------------------------------


class Export:
    """The header and the row blocks of a collection as of one read transaction. Use as a context manager (the
    read transaction, and the connection, end on exit) or read it to the end, which ends them too."""

    def __init__(self, collection: CollectionLike, chunk: int = CHUNK) -> None:
        if collection.backend != "faiss":
            raise UnsupportedByBackendError(
                f"export reads SQLite items; a {collection.backend} collection keeps them elsewhere"
            )
        self._conn = sqlite3.connect(Path(collection.path) / DB_FILE, isolation_level=None, check_same_thread=False)
        self._conn.execute("BEGIN")  # one snapshot of the database for the header and every row
        values = dict(self._conn.execute("SELECT key, value FROM settings WHERE key IN ('seq')"))
        count = self._conn.execute("SELECT count(*) FROM items WHERE deleted_seq IS NULL").fetchone()[0]
        s = collection.manifest
        self.header = Header(s.n_bits, s.fingerprint, s.index_kind, s.index_params, s.model, count, int(values["seq"]))
        self._chunk = chunk

    def blocks(self) -> Iterator[Rows]:
        start, n = time.perf_counter(), 0
        n_bytes = self.header.n_bits // 8
        try:
            cursor = self._conn.execute(
                "SELECT id, code, metadata FROM items WHERE deleted_seq IS NULL ORDER BY internal"
            )
            while rows := cursor.fetchmany(self._chunk):
                codes = np.frombuffer(b"".join(r[1] for r in rows), np.uint8).reshape(len(rows), n_bytes)
                n += len(rows)
                yield Rows([r[0] for r in rows], codes, [r[2] for r in rows])
        finally:
            self.close()
        LOG.info("exported %d items (seq %d) in %.3fs", n, self.header.seq, time.perf_counter() - start)

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> Export:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def ndjson_lines(export: Export) -> Iterator[bytes]:
    """The export as NDJSON: the header line, then blocks of row lines (bytes of many lines each)."""
    yield json.dumps({"header": asdict(export.header)}, separators=(",", ":")).encode() + b"\n"
    for rows in export.blocks():
        lines = [  # metadata is stored as compact JSON: spliced in as it is
            f'{{"id":{json.dumps(i)},"code":"{c.tobytes().hex()}","metadata":{m}}}\n'
            for i, c, m in zip(rows.ids, rows.codes, rows.metadata, strict=True)
        ]
        yield "".join(lines).encode()


class _Sink:
    """A write-only file for pyarrow that hands back what was written so far (to stream a Parquet file)."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []
        self.position = 0
        self.closed = False

    def write(self, data: Any) -> int:
        data = bytes(data)
        self.parts.append(data)
        self.position += len(data)
        return len(data)

    def tell(self) -> int:
        return self.position

    def flush(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True

    def take(self) -> bytes:
        out, self.parts = b"".join(self.parts), []
        return out


def parquet_bytes(export: Export) -> Iterator[bytes]:
    """The export as a Parquet file, one row group per block, streamed as it is written."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema(
        [("id", pa.string()), ("code", pa.string()), ("metadata", pa.string())],
        metadata={PARQUET_KEY: export.header.to_json().encode()},
    )
    sink = _Sink()
    writer = pq.ParquetWriter(sink, schema)
    try:
        for rows in export.blocks():
            codes = [c.tobytes().hex() for c in rows.codes]
            writer.write_table(pa.table([rows.ids, codes, rows.metadata], schema=schema))
            yield sink.take()
    finally:
        writer.close()
    yield sink.take()


def write_file(collection: CollectionLike, out: Path, fmt: str = "ndjson") -> Header:
    """Export ``collection`` into the file ``out`` (written beside it and renamed once complete)."""
    check_format(fmt)
    tmp = out.with_name(f".{out.name}.tmp")
    export = Export(collection)
    with export, open(tmp, "wb") as f:
        for data in (ndjson_lines if fmt == "ndjson" else parquet_bytes)(export):
            f.write(data)
    tmp.replace(out)
    return export.header


def check_format(fmt: str) -> str:
    if fmt not in FORMATS:
        raise ImportFormatError(f"format must be one of {list(FORMATS)}, got {fmt!r}")
    return fmt


# ---- reading a file -------------------------------------------------------------------------------------------


def parse_header_line(line: bytes) -> Header:
    record = _json(line, 1)
    if not isinstance(record, dict) or set(record) != {"header"}:
        raise ImportFormatError('line 1 must be the export header, {"header": {...}}')
    return Header.from_dict(record["header"])


def parse_row(line: bytes, n_bytes: int, line_no: int) -> tuple[str, bytes, dict]:
    """One row line -> (id, code bytes, metadata); ImportFormatError naming the line otherwise."""
    record = _json(line, line_no)
    if not isinstance(record, dict) or not {"id", "code"} <= set(record) <= {"id", "code", "metadata"}:
        raise ImportFormatError(f"line {line_no}: a row is an object of id, code and metadata")
    return _row(record["id"], record["code"], record.get("metadata"), n_bytes, line_no)


def _row(item_id: Any, code: Any, metadata: Any, n_bytes: int, where: int) -> tuple[str, bytes, dict]:
    try:
        check_id(item_id)
    except CollectionError as exc:
        raise ImportFormatError(f"line {where}: {exc}", "bad_id") from None
    try:
        raw = bytes.fromhex(code) if isinstance(code, str) else None
    except ValueError:
        raw = None
    if raw is None or len(raw) != n_bytes:
        raise ImportFormatError(f"line {where}: code must be {2 * n_bytes} hex digits, got {code!r:.80}", "code_format")
    if metadata is None:
        metadata = {}
    problem = "is not an object" if not isinstance(metadata, dict) else metadata_problem(metadata)
    if problem is not None:
        raise ImportFormatError(f"line {where}: metadata {problem}", "invalid_metadata")
    return item_id, raw, metadata


def _json(line: bytes, line_no: int) -> Any:
    try:
        return json.loads(line)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise ImportFormatError(f"line {line_no} is not JSON: {exc}") from None


def read_ndjson(lines: Iterable[bytes], chunk: int = CHUNK) -> tuple[Header, Iterator[list[tuple[str, bytes, dict]]]]:
    """(header, blocks of parsed rows) of an NDJSON export; blank lines are skipped."""
    numbered = ((n, line) for n, line in enumerate(lines, 1) if line.strip())
    first = next(numbered, None)
    if first is None:
        raise ImportFormatError("the file is empty: no export header")
    header = parse_header_line(first[1])

    def blocks() -> Iterator[list[tuple[str, bytes, dict]]]:
        block = []
        for n, line in numbered:
            block.append(parse_row(line, header.n_bits // 8, n))
            if len(block) >= chunk:
                yield block
                block = []
        if block:
            yield block

    return header, blocks()


def read_parquet(path: Path, chunk: int = CHUNK) -> tuple[Header, Iterator[list[tuple[str, bytes, dict]]]]:
    """(header, blocks of parsed rows) of a Parquet export, read one batch at a time."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        file = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as exc:
        raise ImportFormatError(f"{path} is not a Parquet file: {exc}") from None
    raw = (file.schema_arrow.metadata or {}).get(PARQUET_KEY)
    if raw is None or not {"id", "code"} <= set(file.schema_arrow.names):
        raise ImportFormatError(f"{path} is not a hamdex export (no {PARQUET_KEY.decode()} schema metadata)")
    header = Header.from_dict(_json(raw, 0))
    n_bytes = header.n_bits // 8

    def blocks() -> Iterator[list[tuple[str, bytes, dict]]]:
        row = 0
        for batch in file.iter_batches(batch_size=chunk):
            columns = batch.to_pydict()
            metas = columns.get("metadata") or [None] * batch.num_rows
            block = []
            for item_id, code, meta in zip(columns["id"], columns["code"], metas, strict=True):
                row += 1
                block.append(_row(item_id, code, _json(meta.encode(), row) if meta else None, n_bytes, row))
            yield block

    return header, blocks()


def read_file(path: Path, fmt: str | None = None) -> tuple[Header, Iterator[list[tuple[str, bytes, dict]]]]:
    """Open an export by format (default: .parquet files as Parquet, others as NDJSON)."""
    fmt = check_format(fmt or ("parquet" if path.suffix == ".parquet" else "ndjson"))
    if fmt == "parquet":
        return read_parquet(path)

    def lines() -> Iterator[bytes]:
        with open(path, "rb") as f:
            yield from f

    return read_ndjson(lines())


def load_block(collection: CollectionLike, block: list[tuple[str, bytes, dict]]) -> int:
    """Upsert a block of parsed rows (a later row of the same id wins, as two upserts would); rows written."""
    last = {item_id: i for i, (item_id, _, _) in enumerate(block)}
    rows = [block[i] for i in sorted(last.values())]
    codes = np.frombuffer(b"".join(r[1] for r in rows), np.uint8).reshape(len(rows), collection.n_bytes)
    collection.upsert([r[0] for r in rows], codes, [r[2] for r in rows])
    return len(block)


def load(collection: CollectionLike, header: Header, blocks: Iterable[list[tuple[str, bytes, dict]]]) -> int:
    """Import rows into ``collection`` block by block (each block one durable upsert); rows read."""
    header.check_target(collection)
    start, n = time.perf_counter(), 0
    for block in blocks:
        n += load_block(collection, block)
    LOG.info("imported %d rows into %s in %.3fs", n, collection.path, time.perf_counter() - start)
    return n
