"""The durable half of a collection: every item, its code and metadata in one SQLite database (``items.sqlite``).

SQLite runs in WAL mode with ``synchronous=FULL``, so a committed transaction is on disk before ``commit``
returns, and a torn tail of the write-ahead log (a crash mid-write) is detected by SQLite's frame checksums and
rolled back on the next open. Each write call (an upsert or delete batch) is one transaction and gets the next
sequence number ``seq``; the FAISS index is derived from this table and records the ``seq`` it reflects.

Rows are never updated in place. An upsert inserts a row under a fresh internal id and marks the row it replaces
with ``deleted_seq``; a delete only marks. Marked rows stay until a snapshot of the index covers their removal
(:meth:`Store.prune`), which is what makes replay possible: after loading a snapshot taken at sequence S, the
index removes the internal ids marked after S and adds the live rows written after S. Internal ids are never
reused (``next_internal`` is a counter), so the order of those two steps does not matter.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from index.errors import CorruptCollectionError
from index.validation import matches

DB_FILE = "items.sqlite"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS settings (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS items (
    internal INTEGER PRIMARY KEY,  -- FAISS id; never reused
    id TEXT NOT NULL,              -- external id
    code BLOB NOT NULL,            -- packed code, n_bits // 8 bytes
    metadata TEXT NOT NULL,        -- compact JSON object
    seq INTEGER NOT NULL,          -- the write that added the row
    deleted_seq INTEGER            -- the write that removed or replaced it; NULL while live
);
CREATE UNIQUE INDEX IF NOT EXISTS live_ids ON items(id) WHERE deleted_seq IS NULL;
CREATE INDEX IF NOT EXISTS marked ON items(deleted_seq) WHERE deleted_seq IS NOT NULL;  -- replay and pruning
"""
_CHUNK = 10_000  # rows per executemany / per fetch while streaming


class Written(NamedTuple):
    """What one committed write changed, for applying it to the index."""

    seq: int
    removed: np.ndarray  # int64 internal ids no longer live
    added: np.ndarray  # int64 internal ids of new rows, aligned with the codes written


class Matching(NamedTuple):
    """Rows selected by a metadata filter."""

    internal: np.ndarray  # int64 (m,)
    ids: list[str]
    codes: np.ndarray  # uint8 (m, n_bytes)
    metadata: list[str]  # JSON texts


class Store:
    """One SQLite database. Writes go through one connection under a lock; each reading thread has its own."""

    def __init__(self, path: Path) -> None:
        self.file = Path(path) / DB_FILE
        self._local = threading.local()
        self._write_lock = threading.Lock()
        self._conns: list[sqlite3.Connection] = []
        self._conns_lock = threading.Lock()
        try:
            self._writer = self._connect()
            self._writer.executescript(_SCHEMA)
        except sqlite3.DatabaseError as exc:
            raise CorruptCollectionError(self.file, f"SQLite cannot open it: {exc}") from exc

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.file, isolation_level=None, check_same_thread=False, timeout=30)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        with self._conns_lock:
            self._conns.append(conn)
        return conn

    @property
    def _reader(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = self._connect()
        return conn

    def close(self) -> None:
        with self._conns_lock:
            for conn in self._conns:
                conn.close()
            self._conns.clear()

    # ---- settings -----------------------------------------------------------------------------------------

    def settings(self) -> dict[str, Any]:
        rows = self._query("SELECT key, value FROM settings")
        return {key: json.loads(value) for key, value in rows}

    def init_settings(self, values: dict[str, Any]) -> None:
        """Store the collection's settings and zeroed counters, once, in one transaction."""
        rows = [(k, json.dumps(v)) for k, v in {**values, "seq": 0, "next_internal": 0}.items()]
        with self._transaction() as conn:
            conn.executemany("INSERT INTO settings VALUES (?, ?)", rows)

    def put_setting(self, key: str, value: Any) -> None:
        """Write one settings key (JSON value), durably; used for bulk-job progress (``job:<hash>`` keys)."""
        with self._transaction() as conn:
            self._put_setting(conn, key, value)

    @staticmethod
    def _put_setting(conn: sqlite3.Connection, key: str, value: Any) -> None:
        if key in ("seq", "next_internal"):
            raise ValueError(f"{key!r} is a reserved settings key")
        conn.execute("INSERT OR REPLACE INTO settings VALUES (?, ?)", (key, json.dumps(value)))

    # ---- writes -------------------------------------------------------------------------------------------

    def upsert(
        self,
        ids: Sequence[str],
        codes: np.ndarray,
        metadata: Sequence[str],
        progress: tuple[str, Any] | None = None,
    ) -> Written:
        """Insert or replace items in one durable transaction; ``progress=(key, value)`` writes that settings key
        in the same transaction, so a bulk job's record of what it has done commits atomically with the items."""
        with self._transaction() as conn:
            if progress is not None:
                self._put_setting(conn, *progress)
            seq, next_internal = self._counters(conn)
            removed = self._mark_removed(conn, ids, seq)
            added = np.arange(next_internal, next_internal + len(ids), dtype=np.int64)
            blobs = [c.tobytes() for c in codes]
            rows = zip(added.tolist(), ids, blobs, metadata, [seq] * len(ids), strict=True)
            conn.executemany("INSERT INTO items VALUES (?, ?, ?, ?, ?, NULL)", rows)
            self._set_counters(conn, seq, next_internal + len(ids))
        return Written(seq, removed, added)

    def delete(self, ids: Sequence[str]) -> Written:
        with self._transaction() as conn:
            seq, next_internal = self._counters(conn)
            removed = self._mark_removed(conn, ids, seq)
            self._set_counters(conn, seq, next_internal)
        return Written(seq, removed, np.zeros(0, np.int64))

    def prune(self, upto_seq: int) -> int:
        """Forget rows removed at or before ``upto_seq`` (a durable snapshot covers their removal)."""
        with self._transaction() as conn:
            return conn.execute("DELETE FROM items WHERE deleted_seq <= ?", (upto_seq,)).rowcount

    def _mark_removed(self, conn: sqlite3.Connection, ids: Sequence[str], seq: int) -> np.ndarray:
        found = conn.execute(
            "UPDATE items SET deleted_seq = ? WHERE deleted_seq IS NULL AND id IN (SELECT value FROM json_each(?))"
            " RETURNING internal",
            (seq, json.dumps(list(ids))),
        ).fetchall()
        return np.asarray([r[0] for r in found], dtype=np.int64)

    @staticmethod
    def _counters(conn: sqlite3.Connection) -> tuple[int, int]:
        values = dict(conn.execute("SELECT key, value FROM settings WHERE key IN ('seq', 'next_internal')"))
        return int(values["seq"]) + 1, int(values["next_internal"])

    @staticmethod
    def _set_counters(conn: sqlite3.Connection, seq: int, next_internal: int) -> None:
        conn.executemany(
            "UPDATE settings SET value = ? WHERE key = ?", [(str(seq), "seq"), (str(next_internal), "next_internal")]
        )

    class _Txn:
        def __init__(self, store: Store) -> None:
            self.store = store

        def __enter__(self) -> sqlite3.Connection:
            self.store._write_lock.acquire()
            try:
                self.store._writer.execute("BEGIN IMMEDIATE")
            except BaseException:
                self.store._write_lock.release()
                raise
            return self.store._writer

        def __exit__(self, exc_type, exc, tb) -> None:
            try:
                self.store._writer.execute("ROLLBACK" if exc_type else "COMMIT")
            finally:
                self.store._write_lock.release()

    def _transaction(self) -> Store._Txn:
        return Store._Txn(self)

    # ---- reads --------------------------------------------------------------------------------------------

    def _query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple]:
        try:
            return self._reader.execute(sql, params).fetchall()
        except sqlite3.DatabaseError as exc:
            raise CorruptCollectionError(self.file, str(exc)) from exc

    def seq(self) -> int:
        return int(self.settings()["seq"])

    def count(self) -> int:
        return self._query("SELECT count(*) FROM items WHERE deleted_seq IS NULL")[0][0]

    def get(self, item_id: str) -> tuple[int, bytes, str] | None:
        """(internal, code, metadata JSON) of the live item ``item_id``."""
        rows = self._query(
            "SELECT internal, code, metadata FROM items WHERE id = ? AND deleted_seq IS NULL", (item_id,)
        )
        return rows[0] if rows else None

    def describe(self, internal_ids: Sequence[int], metadata: bool = True) -> dict[int, tuple[str, str | None]]:
        """internal id -> (external id, metadata JSON or None unless ``metadata``), live or marked (a marked row
        still in the index)."""
        if not len(internal_ids):
            return {}
        columns = "internal, id, metadata" if metadata else "internal, id, NULL"
        rows = self._query(
            f"SELECT {columns} FROM items WHERE internal IN (SELECT value FROM json_each(?))",
            (json.dumps([int(i) for i in internal_ids]),),
        )
        return {internal: (item_id, meta) for internal, item_id, meta in rows}

    def ids(self) -> list[str]:
        return [r[0] for r in self._query("SELECT id FROM items WHERE deleted_seq IS NULL ORDER BY internal")]

    def live_codes(self, n_bytes: int, after_seq: int = -1) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Chunks of (internal ids int64 (m,), codes uint8 (m, n_bytes)) of live rows written after ``after_seq``."""
        cursor = self._reader.cursor()
        try:
            cursor.execute(
                "SELECT internal, code FROM items WHERE deleted_seq IS NULL AND seq > ? ORDER BY internal", (after_seq,)
            )
            while rows := cursor.fetchmany(_CHUNK):
                internal = np.fromiter((r[0] for r in rows), np.int64, len(rows))
                blob = b"".join(r[1] for r in rows)
                if len(blob) != len(rows) * n_bytes:
                    raise CorruptCollectionError(self.file, f"a stored code is not {n_bytes} bytes long")
                yield internal, np.frombuffer(blob, np.uint8).reshape(len(rows), n_bytes)
        except sqlite3.DatabaseError as exc:
            raise CorruptCollectionError(self.file, str(exc)) from exc
        finally:
            cursor.close()

    def matching(self, where: dict[str, Any], max_rows: int) -> Matching | None:
        """Live rows whose metadata has each ``where`` field equal to its value, or None when more than
        ``max_rows`` rows pass SQLite's pre-selection (json_extract; JSON true is 1 there, so
        :func:`index.validation.matches` makes the final, type-strict decision). None as well when a field name
        cannot be written as a JSON path."""
        if any('"' in key or "\\" in key for key in where):
            return None
        clauses, params = ["deleted_seq IS NULL"], []
        for key, value in where.items():
            if isinstance(value, int) and not -(2**63) <= value < 2**63:
                continue  # SQLite cannot bind it; matches() below decides alone
            clauses.append("json_extract(metadata, ?) IS NULL" if value is None else "json_extract(metadata, ?) = ?")
            params += [f'$."{key}"'] if value is None else [f'$."{key}"', value]
        sql = "SELECT internal, id, code, metadata FROM items WHERE "
        rows = self._query(sql + " AND ".join(clauses) + " LIMIT ?", (*params, max_rows + 1))
        if len(rows) > max_rows:
            return None
        rows = [r for r in rows if matches(json.loads(r[3]), where)]
        n_bytes = len(rows[0][2]) if rows else 0
        return Matching(
            np.fromiter((r[0] for r in rows), np.int64, len(rows)),
            [r[1] for r in rows],
            np.frombuffer(b"".join(r[2] for r in rows), np.uint8).reshape(len(rows), n_bytes),
            [r[3] for r in rows],
        )

    def removed_after(self, seq: int) -> np.ndarray:
        """Internal ids written at or before ``seq`` and removed after it: in a snapshot at ``seq``, gone since."""
        rows = self._query("SELECT internal FROM items WHERE seq <= ? AND deleted_seq > ?", (seq, seq))
        return np.asarray([r[0] for r in rows], dtype=np.int64)

    def check(self) -> None:
        """SQLite's own consistency check; raises CorruptCollectionError naming the file."""
        result = self._query("PRAGMA quick_check")
        if result != [("ok",)]:
            raise CorruptCollectionError(self.file, f"integrity check failed: {result[:3]}")
