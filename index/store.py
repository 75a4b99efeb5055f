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
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from hamdex.index.deadline import Deadline
from hamdex.index.errors import CorruptCollectionError
from hamdex.index.validation import matches

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
_PROGRESS_STEPS = 100_000  # SQLite steps between deadline checks: ~60 per million rows a filter scans
_MAX_PARAMS = 900  # bound parameters per statement (SQLite's limit is 999 before 3.32)


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

    def release_reader(self) -> None:
        """Close the calling thread's reading connection, if any: for one-off threads (a background rebuild),
        whose connections would otherwise stay open until :meth:`close`."""
        conn = getattr(self._local, "conn", None)
        if conn is None:
            return
        self._local.conn = None
        with self._conns_lock:
            if conn in self._conns:
                self._conns.remove(conn)
                conn.close()

    @contextmanager
    def reading(self) -> Iterator[int]:
        """One read transaction on this thread's connection: the reads inside the block see the store as of the
        seq it yields, whatever is written meanwhile."""
        conn = self._reader
        conn.execute("BEGIN")
        try:
            yield self.seq()
        finally:
            conn.execute("COMMIT")

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
        """Mark the live rows of ``ids``, matched exactly: each id is a bound parameter (json_each would cut an id
        at a NUL, so ``"a\\x00b"`` would match ``"a"``)."""
        ids, found = list(ids), []
        for start in range(0, len(ids), _MAX_PARAMS):
            chunk = ids[start : start + _MAX_PARAMS]
            marks = ",".join("?" * len(chunk))
            sql = f"UPDATE items SET deleted_seq = ? WHERE deleted_seq IS NULL AND id IN ({marks}) RETURNING internal"
            found += conn.execute(sql, (seq, *chunk)).fetchall()
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

    def describe(
        self, internal_ids: Sequence[int], metadata: bool = True, where: dict[str, Any] | None = None
    ) -> dict[int, tuple[str, str | None]]:
        """internal id -> (external id, metadata JSON or None unless ``metadata``), live or marked (a marked row
        still in the index); with ``where``, only the rows whose metadata matches it (see :meth:`matching`)."""
        if not len(internal_ids):
            return {}
        clause, params, exact = _filter_sql(where) if where else ("1", {}, True)
        columns = "internal, id, metadata" if metadata or where else "internal, id, NULL"
        rows = self._query(
            f"SELECT {columns} FROM items WHERE internal IN (SELECT value FROM json_each(:ids)) AND {clause}",
            {**params, "ids": json.dumps([int(i) for i in internal_ids])},
        )
        if where:
            rows = _really_matching(rows, where, exact, 2)
        return {internal: (item_id, meta if metadata else None) for internal, item_id, meta in rows}

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

    def matching(self, where: dict[str, Any], max_rows: int, deadline: Deadline | None = None) -> Matching | None:
        """Live rows whose metadata has each ``where`` field equal to its value (by JSON type and value, as
        :func:`index.validation.matches` decides), or None when more than ``max_rows`` rows match. SQLite reads
        every row to find them: past ``deadline`` it stops (SearchTimeoutError)."""
        clause, params, exact = _filter_sql(where)
        with self._stopping_at(deadline):
            rows = self._query(f"{_LIVE_ROWS} AND {clause} LIMIT :limit", {**params, "limit": max_rows + 1})
        if len(rows) > max_rows:
            return None
        return _matching(rows, where, exact)

    def matching_chunks(self, where: dict[str, Any], deadline: Deadline | None = None) -> Iterator[Matching]:
        """Every live row :meth:`matching` selects, in chunks of at most ``_CHUNK`` rows (memory stays bounded)."""
        clause, params, exact = _filter_sql(where)
        cursor = self._reader.cursor()
        try:
            with self._stopping_at(deadline):
                cursor.execute(f"{_LIVE_ROWS} AND {clause}", params)
                while rows := cursor.fetchmany(_CHUNK):
                    yield _matching(rows, where, exact)
        except sqlite3.DatabaseError as exc:
            raise CorruptCollectionError(self.file, str(exc)) from exc
        finally:
            cursor.close()

    @contextmanager
    def _stopping_at(self, deadline: Deadline | None) -> Iterator[None]:
        """Queries of this thread's connection abort once ``deadline`` expires (SQLite's progress handler, called
        every _PROGRESS_STEPS virtual-machine steps), raising SearchTimeoutError instead of a database error."""
        if deadline is None:
            yield
            return
        conn = self._reader
        conn.set_progress_handler(lambda: deadline.expired, _PROGRESS_STEPS)
        try:
            yield
        except (sqlite3.OperationalError, CorruptCollectionError):
            deadline.check()  # interrupted by the handler: the deadline's error
            raise
        finally:
            conn.set_progress_handler(None, 0)

    def removed_after(self, seq: int) -> np.ndarray:
        """Internal ids written at or before ``seq`` and removed after it: in a snapshot at ``seq``, gone since."""
        rows = self._query("SELECT internal FROM items WHERE seq <= ? AND deleted_seq > ?", (seq, seq))
        return np.asarray([r[0] for r in rows], dtype=np.int64)

    def check(self) -> None:
        """SQLite's own consistency check; raises CorruptCollectionError naming the file."""
        result = self._query("PRAGMA quick_check")
        if result != [("ok",)]:
            raise CorruptCollectionError(self.file, f"integrity check failed: {result[:3]}")


_NUL = "\\u0000"  # how JSON writes a NUL inside a string
_HOLDS_NUL = f"instr(metadata, '{_NUL}') > 0"  # a row that may hold a NUL in a field or string
_JSON_TEXT = sqlite3.sqlite_version_info >= (3, 38)  # the -> operator: a field's JSON text (an integer's digits)
_LIVE_ROWS = "SELECT internal, id, code, metadata FROM items WHERE deleted_seq IS NULL"


def _filter_sql(where: dict[str, Any]) -> tuple[str, dict[str, Any], bool]:
    """(SQL condition, its named parameters, exact): the rows whose metadata has each ``where`` field equal to its
    value, by JSON type as well as value (true is not 1, "1" is not 1, null is not a missing field), so that
    SQLite does the selecting. Not exact for a number at or beyond 2**63 (SQLite reads such JSON integers as
    reals) nor for a NUL in a field or a string: more rows pass, and :func:`index.validation.matches` decides."""
    clauses, params, exact = [], {}, True
    for n, (key, value) in enumerate(where.items()):
        nul, unquotable = "\x00" in key, _escaped_in_json(key)  # see below
        test, given, exact_here = _json_test(value, raw=not (nul or unquotable) and _JSON_TEXT)
        exact &= exact_here
        test = test.replace(":v", f":v{n}")
        if given:
            params[f"v{n}"] = str(value) if _huge(value) else value
        if nul:  # SQLite's JSON functions cut it there: any row whose JSON holds a NUL, and matches() decides
            clauses.append(_HOLDS_NUL)
            exact = False
        elif unquotable:  # a JSON path cannot name these: walk the fields (json_each unescapes keys)
            test = test.format(t="type", v="atom")
            clauses.append(f"EXISTS (SELECT 1 FROM json_each(metadata) WHERE key = :k{n} AND {test})")
            params[f"k{n}"] = key
        else:
            t, v, j = f"json_type(metadata, :k{n})", f"json_extract(metadata, :k{n})", f"(metadata -> :k{n})"
            clauses.append(test.format(t=t, v=v, j=j))
            params[f"k{n}"] = f'$."{key}"'
    return " AND ".join(clauses) or "1", params, exact


def _escaped_in_json(key: str) -> bool:
    """Whether json.dumps writes ``key`` escaped (a quote, a backslash, a control or non-ASCII character): a JSON
    path compares the stored, escaped text, so ``$."é"`` never finds the stored ``"\\u00e9"``."""
    return not key.isascii() or '"' in key or "\\" in key or any(ord(ch) < 0x20 for ch in key)


def _json_test(value: Any, raw: bool) -> tuple[str, bool, bool]:
    """(condition on a JSON value's type ``{t}``, SQL value ``{v}`` and, when ``raw``, JSON text ``{j}`` for
    ``== value``, whether it binds ``value`` as ``:v``, exact)."""
    if value is None:
        return "{t} = 'null'", False, True
    if isinstance(value, bool):
        return ("{t} = 'true'" if value else "{t} = 'false'"), False, True
    if isinstance(value, str) and "\x00" in value:  # SQLite's JSON functions cut strings at NUL
        return f"{{t}} = 'text' AND {_HOLDS_NUL}", False, False
    if isinstance(value, str):
        return "{v} = :v AND {t} = 'text'", True, True
    if _huge(value) and raw:  # SQLite cannot bind it: its digits, or a real close to it (matches() decides)
        return "(({t} = 'integer' AND {j} = :v) OR ({t} = 'real' AND {v} = CAST(:v AS REAL)))", True, False
    if _huge(value):
        return "{t} IN ('integer', 'real')", False, False
    if isinstance(value, float) and not abs(value) < 2**63:
        return "{v} = :v AND {t} IN ('integer', 'real')", True, False
    # within 64 bits, a JSON integer beyond them (an SQL real) equals no number, as in Python. The value first:
    # it rules out most rows, and the type is then read only for the few left
    return "{v} = :v AND ({t} = 'real' OR ({t} = 'integer' AND typeof({v}) = 'integer'))", True, True


def _huge(value: Any) -> bool:
    """An integer SQLite cannot bind (beyond 64 bits)."""
    return isinstance(value, int) and not isinstance(value, bool) and not -(2**63) <= value < 2**63


def _really_matching(rows: list[tuple], where: dict[str, Any], exact: bool, at: int) -> list[tuple]:
    """The rows SQLite selected whose metadata (column ``at``) matches ``where``: all of them when its test is
    exact, but for rows holding a NUL in a string (SQLite's JSON functions cut strings there)."""
    return [r for r in rows if (exact and _NUL not in r[at]) or matches(json.loads(r[at]), where)]


def _matching(rows: list[tuple], where: dict[str, Any], exact: bool) -> Matching:
    rows = _really_matching(rows, where, exact, 3)
    n_bytes = len(rows[0][2]) if rows else 0
    return Matching(
        np.fromiter((r[0] for r in rows), np.int64, len(rows)),
        [r[1] for r in rows],
        np.frombuffer(b"".join(r[2] for r in rows), np.uint8).reshape(len(rows), n_bytes),
        [r[3] for r in rows],
    )
