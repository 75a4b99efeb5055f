"""A collection's stored vectors (optional, its ``vectors`` setting): each item's original vector, in one file
beside the store, read through a memory map, for rescoring Hamming candidates exactly (two-stage ranking).

Layout: ``vectors.bin``, row ``r`` is the item of internal id ``r`` (:mod:`index.store`: internal ids are never
reused, so a row is written once). A row is ``float16 (d,)`` (values clipped to +-65504), or for ``int8`` a
``float32`` scale then ``int8 (d,)`` (``x ~= scale * q``, ``scale = max|x| / 127``): ``2d`` or ``d + 4`` bytes per
item. An all-zero row is "no vector" (an item upserted by its code alone).

Durability, the same rule as the codes: an upsert writes its rows and fsyncs the file *inside* its SQLite
transaction, before the commit (:meth:`index.store.Store.upsert`'s ``before_commit``). A crash before the commit
leaves rows no committed item points to (the next upsert overwrites them: the counter did not move); after it,
they are on disk. Nothing here is derived data, so snapshots leave the file alone. A delete (or the upsert that
replaces an item) zeroes the old rows once committed; a crash just then leaves bytes no live item points to, which
nothing reads. The file is sparse where it was never written; it grows with the internal ids (every upsert writes
new rows), so heavy churn makes it longer on disk, by ``row_bytes`` per write of an item.
"""

from __future__ import annotations

import os
import shutil
import threading
from pathlib import Path

import numpy as np
from hamdex.index.errors import InvalidItemsError, InvalidQueryError

VECTORS_FILE = "vectors.bin"
VECTOR_DTYPES = ("float16", "int8")
_F16_MAX = 65504.0


class VectorFile:
    """Rows of vectors by internal id; writes under the collection's write mutex, reads from any thread."""

    def __init__(self, path: Path, dtype: str, dim: int | None) -> None:
        if dtype not in VECTOR_DTYPES:
            raise InvalidItemsError(f"vectors must be one of {list(VECTOR_DTYPES)}, got {dtype!r}")
        self.file = Path(path) / VECTORS_FILE
        self.dtype = dtype
        self.dim = dim
        self._fd = os.open(self.file, os.O_RDWR | os.O_CREAT, 0o644)
        self._map: np.ndarray | None = None  # np.memmap over the first _mapped rows, remapped as the file grows
        self._mapped = 0
        self._map_lock = threading.Lock()

    # ---- layout -------------------------------------------------------------------------------------------

    def row_dtype(self, dim: int) -> np.dtype:
        if self.dtype == "float16":
            return np.dtype(("<f2", (dim,)))
        return np.dtype([("scale", "<f4"), ("q", "i1", (dim,))])

    @property
    def row_bytes(self) -> int:
        return 0 if self.dim is None else self.row_dtype(self.dim).itemsize

    def check(self, vectors: object, n: int) -> np.ndarray:
        """An upsert's vectors as float32 (n, d), finite; d must be the collection's (when fixed)."""
        if not isinstance(vectors, np.ndarray) or vectors.ndim != 2 or vectors.shape[0] != n or vectors.shape[1] < 1:
            raise InvalidItemsError(f"vectors must be an array (n={n}, d), got {_describe(vectors)}")
        if not np.issubdtype(vectors.dtype, np.number) or np.issubdtype(vectors.dtype, np.complexfloating):
            raise InvalidItemsError(f"vectors must be real numbers, got dtype {vectors.dtype}")
        out = np.ascontiguousarray(vectors, dtype=np.float32)
        if self.dim is not None and out.shape[1] != self.dim:
            raise InvalidItemsError(f"vectors have {out.shape[1]} dimensions; this collection keeps {self.dim}")
        if not np.isfinite(out).all():
            raise InvalidItemsError("vectors must be finite (no NaN or infinity)")
        return out

    def encode(self, vectors: np.ndarray) -> np.ndarray:
        """float32 (n, d) -> the stored rows (n,) of row_dtype."""
        n, d = vectors.shape
        if self.dtype == "float16":
            return np.clip(vectors, -_F16_MAX, _F16_MAX).astype("<f2")
        rows = np.zeros(n, self.row_dtype(d))
        scale = np.abs(vectors).max(axis=1) / 127.0 if d else np.zeros(n, np.float32)  # (n,)
        safe = np.where(scale > 0, scale, 1.0)[:, None]
        rows["scale"] = scale
        rows["q"] = np.clip(np.rint(vectors / safe), -127, 127).astype(np.int8)
        return rows

    def decode(self, rows: np.ndarray) -> np.ndarray:
        """Stored rows -> float32 (n, d)."""
        if self.dtype == "float16":
            return np.asarray(rows).astype(np.float32)
        return rows["q"].astype(np.float32) * np.asarray(rows["scale"], np.float32)[:, None]

    # ---- writes (the collection's write mutex held) --------------------------------------------------------

    def write(self, internal: np.ndarray, vectors: np.ndarray, dim: int) -> None:
        """Write the rows of ``internal`` (consecutive, as an upsert assigns them) and fsync: durable on return.
        ``dim``: the collection's dimension (the caller sets :attr:`dim` once the upsert has committed)."""
        if not len(internal):
            return
        assert vectors.shape == (len(internal), dim), "vectors were checked against the dimension"
        data = self.encode(vectors).tobytes()
        start = int(internal[0])
        assert np.array_equal(internal, np.arange(start, start + len(internal))), "an upsert's rows are consecutive"
        os.pwrite(self._fd, data, start * self.row_dtype(dim).itemsize)
        os.fsync(self._fd)

    def clear(self, internal: np.ndarray) -> None:
        """Zero the rows of ``internal`` (removed items): their vectors are gone from the file, not only unreachable."""
        if not len(internal) or self.dim is None:
            return
        size = os.fstat(self._fd).st_size
        zeros = bytes(self.row_bytes)
        for i in np.unique(internal).tolist():
            if (i + 1) * self.row_bytes <= size:
                os.pwrite(self._fd, zeros, i * self.row_bytes)
        os.fsync(self._fd)

    # ---- reads --------------------------------------------------------------------------------------------

    def read(self, internal: np.ndarray) -> np.ndarray:
        """float32 (n, d): the rows of ``internal``; rows past the end of the file (none: an item's rows are
        written before it commits) read as zeros, "no vector"."""
        if self.dim is None or not len(internal):
            return np.zeros((len(internal), self.dim or 0), np.float32)
        internal = np.asarray(internal, dtype=np.int64)
        view = self._view(int(internal.max()) + 1 if len(internal) else 0)
        inside = internal < len(view)
        if inside.all():
            return self.decode(view[internal])
        rows = np.zeros(len(internal), self.row_dtype(self.dim))
        rows[inside] = view[internal[inside]]
        return self.decode(rows)

    def _view(self, rows: int) -> np.ndarray:
        """A memory map covering at least ``rows`` rows where the file has them (remapped when the file grew)."""
        with self._map_lock:
            if self._map is None or self._mapped < rows:
                n = os.fstat(self._fd).st_size // self.row_bytes
                self._map = np.memmap(self.file, self.row_dtype(self.dim), "r", shape=(n,)) if n else np.zeros(0)
                self._mapped = n
            return self._map

    def copy_to(self, directory: Path) -> None:
        """A copy for a backup, taken after the database copy: it holds every row that copy points to."""
        shutil.copyfile(self.file, Path(directory) / VECTORS_FILE)

    def close(self) -> None:
        with self._map_lock:
            self._map = None
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


# ---- scoring (numpy in, numpy out) --------------------------------------------------------------------------


def cosine(query: np.ndarray, vectors: np.ndarray) -> np.ndarray:
    """float64 (m,): the cosine of ``query`` (d,) with each row of ``vectors`` (m, d); 0 for a zero row."""
    q = np.asarray(query, np.float64)
    v = np.asarray(vectors, np.float64)
    norms = np.linalg.norm(v, axis=1) * np.linalg.norm(q)
    dots = v @ q
    return np.divide(dots, norms, out=np.zeros_like(dots), where=norms > 0)


def asymmetric(scores: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """float64 (m,): ``sum_b scores_b * (2 * bit_b - 1)`` for each packed code (m, n_bytes), bits in the order of
    models.bits (little-endian within each byte, as np.unpackbits(bitorder="little"))."""
    signs = np.unpackbits(codes, axis=1, bitorder="little").astype(np.float64) * 2 - 1  # (m, n_bits)
    return signs @ np.asarray(scores, np.float64)


def check_query_vectors(vectors: object, n: int, dim: int | None) -> np.ndarray:
    """Query vectors for a rerank, float32 (n, d), finite, of the collection's dimension (rows may be NaN: that
    query has no vector)."""
    if not isinstance(vectors, np.ndarray) or vectors.ndim != 2 or vectors.shape[0] != n:
        raise InvalidQueryError(f"query vectors must be an array (n={n}, d), got {_describe(vectors)}")
    if dim is not None and vectors.shape[1] != dim:
        raise InvalidQueryError(f"query vectors have {vectors.shape[1]} dimensions; the collection keeps {dim}")
    return np.asarray(vectors, dtype=np.float32)


def _describe(x: object) -> str:
    if isinstance(x, np.ndarray):
        return f"array of shape {x.shape} and dtype {x.dtype}"
    return type(x).__name__
