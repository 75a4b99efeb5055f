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
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from hamdex.index.deadline import Deadline
from hamdex.index.errors import CorruptCollectionError, InvalidQueryError, TooManyIndexesError
from hamdex.index.filters import HOLDS_NUL, escaped_in_json, filter_sql, json_path_literal, matches, nul_sensitive

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
INDEXED_FIELDS_KEY = "indexed_fields"  # settings key: the payload-indexed fields, a JSON list
MAX_INDEXED_FIELDS = 16  # each index costs every write a little
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
        self._stats = 0  # bumped when the planner's statistics change (payload indexes): readers reload them
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
        if conn is not None and self._local.stats != self._stats and not conn.in_transaction:
            # a payload index added since this connection read the planner's statistics, which SQLite loads with
            # the schema, not when ANALYZE rewrites them (reloading them takes the write lock): without them its
            # planner may scan every live row rather than search the new index. A new connection reads them.
            self.release_reader()
            conn = None
        if conn is None:
            stats = self._stats
            conn = self._local.conn = self._connect()
            self._local.stats = stats
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

    # ---- payload indexes ------------------------------------------------------------------------------------

    def indexed_fields(self) -> list[str]:
        """Top-level metadata fields with a payload index, in the order declared."""
        return list(self.settings().get(INDEXED_FIELDS_KEY, []))

    def index_fields(self, names: Sequence[str]) -> list[str]:
        """Add a payload index on each field of ``names`` not indexed yet, in one durable transaction: an SQLite
        expression index on the field's value and JSON type over the live rows, which the planner uses for
        equality, ``$in`` and range tests on that field (:mod:`index.filters` inlines the same expressions).
        Returns every indexed field. Building reads every live row once."""
        for name in names:
            check_index_field(name)
        with self._transaction() as conn:
            row = conn.execute("SELECT value FROM settings WHERE key = ?", (INDEXED_FIELDS_KEY,)).fetchone()
            have = json.loads(row[0]) if row else []
            new = [n for n in dict.fromkeys(names) if n not in have]
            if len(have) + len(new) > MAX_INDEXED_FIELDS:
                raise TooManyIndexesError(f"a collection indexes at most {MAX_INDEXED_FIELDS} fields, has {len(have)}")
            for name in new:
                conn.execute(_payload_index_sql(name))
            if new:
                self._put_setting(conn, INDEXED_FIELDS_KEY, have + new)
                # statistics, without which SQLite's planner may scan the live rows rather than search the index
                conn.execute("ANALYZE items")
        if new:
            self._stats += 1
        return have + new

    def query_plan(self, where: dict[str, Any], selection: bool = False) -> str:
        """SQLite's plan (EXPLAIN QUERY PLAN details, one per line) for selecting the live rows ``where`` matches;
        ``selection``: for selecting their internal ids (:meth:`matching_internal`)."""
        clause, unc, params = _filter_sql(where)
        sql = f"{_LIVE_ROWS.format(unc=unc)} AND {clause}"
        if selection:
            sql, params = _selection_sql(where, 1)
        rows = self._query(f"EXPLAIN QUERY PLAN {sql}", params)
        return "\n".join(str(r[-1]) for r in rows)

    # ---- writes -------------------------------------------------------------------------------------------

    def upsert(
        self,
        ids: Sequence[str],
        codes: np.ndarray,
        metadata: Sequence[str],
        progress: tuple[str, Any] | None = None,
        settings: dict[str, Any] | None = None,
        before_commit: Callable[[np.ndarray], None] | None = None,
    ) -> Written:
        """Insert or replace items in one durable transaction; ``progress=(key, value)`` writes that settings key
        in the same transaction, so a bulk job's record of what it has done commits atomically with the items, as
        do ``settings`` (keys and JSON values). ``before_commit(added)``: called with the new rows' internal ids
        inside the transaction, last (the stored vectors' write and fsync: :mod:`index.vectors`); if it raises,
        nothing is written."""
        with self._transaction() as conn:
            if progress is not None:
                self._put_setting(conn, *progress)
            for key, value in (settings or {}).items():
                self._put_setting(conn, key, value)
            seq, next_internal = self._counters(conn)
            removed = self._mark_removed(conn, ids, seq)
            added = np.arange(next_internal, next_internal + len(ids), dtype=np.int64)
            blobs = [c.tobytes() for c in codes]
            rows = zip(added.tolist(), ids, blobs, metadata, [seq] * len(ids), strict=True)
            conn.executemany("INSERT INTO items VALUES (?, ?, ?, ?, ?, NULL)", rows)
            self._set_counters(conn, seq, next_internal + len(ids))
            if before_commit is not None:
                before_commit(added)
        return Written(seq, removed, added)

    def delete(self, ids: Sequence[str]) -> Written:
        with self._transaction() as conn:
            seq, next_internal = self._counters(conn)
            removed = self._mark_removed(conn, ids, seq)
            self._set_counters(conn, seq, next_internal)
        return Written(seq, removed, np.zeros(0, np.int64))

    def delete_internal(self, internal_ids: Sequence[int]) -> Written:
        """Mark the rows of ``internal_ids`` that are still live: a row replaced meanwhile (an upsert writes a new
        internal id) is left alone, so a delete by filter removes only the versions it saw matching."""
        with self._transaction() as conn:
            seq, next_internal = self._counters(conn)
            found: list[tuple] = []
            ids = [int(i) for i in internal_ids]
            for start in range(0, len(ids), _MAX_PARAMS):
                chunk = ids[start : start + _MAX_PARAMS]
                marks = ",".join("?" * len(chunk))
                sql = f"UPDATE items SET deleted_seq = ? WHERE deleted_seq IS NULL AND internal IN ({marks})"
                found += conn.execute(f"{sql} RETURNING internal", (seq, *chunk)).fetchall()
            self._set_counters(conn, seq, next_internal)
        return Written(seq, np.asarray([r[0] for r in found], dtype=np.int64), np.zeros(0, np.int64))

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
        still in the index); with ``where``, only the rows whose metadata matches it (see :meth:`matching_internal`)."""
        return self._describe(internal_ids, metadata, where)

    def selected(self, internal_ids: Sequence[int], metadata: bool = True) -> dict[int, tuple[str, str | None]]:
        """:meth:`describe` without a filter, for rows a filter already selected (the hits of an exact scan of a
        selection): a call of its own, so that what a search describes through the filter stays countable."""
        return self._describe(internal_ids, metadata, None)

    def _describe(
        self, internal_ids: Sequence[int], metadata: bool, where: dict[str, Any] | None
    ) -> dict[int, tuple[str, str | None]]:
        if not len(internal_ids):
            return {}
        clause, unc, params = _filter_sql(where) if where else ("1", "0", {})
        columns = "internal, id, metadata" if metadata or where else "internal, id, NULL"
        rows = self._query(
            f"SELECT {columns}, {unc} FROM items WHERE internal IN (SELECT value FROM json_each(:ids)) AND {clause}",
            {**params, "ids": json.dumps([int(i) for i in internal_ids])},
        )
        if where:
            rows = _really_matching(rows, where, 2)
        return {r[0]: (r[1], r[2] if metadata else None) for r in rows}

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

    def matching_internal(
        self, where: dict[str, Any], max_rows: int, deadline: Deadline | None = None
    ) -> np.ndarray | None:
        """int64 (m,): the internal ids of the live rows ``where`` matches (as :func:`index.filters.matches`
        decides), or None when SQLite selects more than ``max_rows``. Read from a payload index alone where one
        answers the filter (no row of the table is read, but those whose metadata Python must re-check), as one
        text (``group_concat``: no Python object per row), an unsure row's id negated (-1 - id). Sorted."""
        sql, params = _selection_sql(where, max_rows + 1)
        with self._stopping_at(deadline):
            text = self._query(sql, params)[0][0]
            found = np.fromstring(text, np.int64, sep=",") if text else np.zeros(0, np.int64)
            assert not text or len(found) == text.count(",") + 1, "group_concat of integers"
            if len(found) > max_rows:
                return None
            unsure = -1 - found[found < 0]
            if unsure.size:  # rows are never changed in place: read after the ids, they are the rows selected
                rows = self._query(
                    "SELECT internal, metadata FROM items WHERE internal IN (SELECT value FROM json_each(:ids))",
                    {"ids": json.dumps(unsure.tolist())},
                )
                unsure = np.asarray([i for i, meta in rows if matches(json.loads(meta), where)], np.int64)
        return np.sort(np.concatenate([found[found >= 0], unsure]))

    def matching_chunks(self, where: dict[str, Any], deadline: Deadline | None = None) -> Iterator[Matching]:
        """Every live row ``where`` matches (as :meth:`matching_internal` decides), in chunks of at most ``_CHUNK``
        rows (memory stays bounded)."""
        clause, unc, params = _filter_sql(where)
        cursor = self._reader.cursor()
        try:
            with self._stopping_at(deadline):
                cursor.execute(f"{_LIVE_ROWS.format(unc=unc)} AND {clause}", params)
                while rows := cursor.fetchmany(_CHUNK):
                    yield _matching(rows, where)
        except sqlite3.DatabaseError as exc:
            raise CorruptCollectionError(self.file, str(exc)) from exc
        finally:
            cursor.close()

    def scroll(
        self, after: int, limit: int, where: dict[str, Any] | None = None, deadline: Deadline | None = None
    ) -> tuple[list[tuple], int | None]:
        """(rows (internal, id, code, metadata) of live items matching ``where`` with internal id above ``after``,
        in internal-id order; the internal id to continue after, or None at the end). SQLite selects at most
        ``limit`` rows; those Python refuses on re-checking are dropped, so a page may hold fewer."""
        clause, unc, params = _filter_sql(where) if where else ("1", "0", {})
        sql = f"{_LIVE_ROWS.format(unc=unc)} AND internal > :after AND {clause} ORDER BY internal LIMIT :limit"
        with self._stopping_at(deadline):
            rows = self._query(sql, {**params, "after": after, "limit": limit})
        last = rows[-1][0] if len(rows) == limit else None
        if where:
            rows = _really_matching(rows, where, 3)
        return [r[:4] for r in rows], last

    def count_matching(self, where: dict[str, Any], deadline: Deadline | None = None) -> int:
        """Live items matching ``where``: SQLite counts the rows it decides exactly, Python re-checks the rest."""
        if not where:
            return self.count()
        clause, unc, params = _filter_sql(where)
        sure = f"NOT (COALESCE(({unc}), 0) OR {HOLDS_NUL})"
        live = f"FROM items WHERE deleted_seq IS NULL AND {clause}"
        with self.reading(), self._stopping_at(deadline):
            n = self._query(f"SELECT count(*) {live} AND {sure}", params)[0][0]
            unsure = self._query(f"SELECT metadata {live} AND NOT ({sure})", params)
        return n + sum(matches(json.loads(meta), where) for (meta,) in unsure)

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

    def live_internal(self, ids: Sequence[str]) -> dict[str, tuple[int, bytes]]:
        """external id -> (internal id, code) of the live items among ``ids`` (unknown ids left out)."""
        ids, out = list(dict.fromkeys(ids)), {}
        for start in range(0, len(ids), _MAX_PARAMS):
            chunk = ids[start : start + _MAX_PARAMS]
            marks = ",".join("?" * len(chunk))
            sql = f"SELECT id, internal, code FROM items WHERE deleted_seq IS NULL AND id IN ({marks})"
            out.update({r[0]: (r[1], r[2]) for r in self._query(sql, chunk)})
        return out

    def codes_of(self, internal_ids: Sequence[int], n_bytes: int) -> np.ndarray:
        """uint8 (n, n_bytes): the code of each internal id, in order (live or marked); zeros for a row no longer
        stored (pruned)."""
        rows = dict(
            self._query(
                "SELECT internal, code FROM items WHERE internal IN (SELECT value FROM json_each(:ids))",
                {"ids": json.dumps([int(i) for i in internal_ids])},
            )
        )
        blob = b"".join(rows.get(int(i), bytes(n_bytes)) for i in internal_ids)
        return np.frombuffer(blob, np.uint8).reshape(len(internal_ids), n_bytes)

    def check(self) -> None:
        """SQLite's own consistency check; raises CorruptCollectionError naming the file."""
        result = self._query("PRAGMA quick_check")
        if result != [("ok",)]:
            raise CorruptCollectionError(self.file, f"integrity check failed: {result[:3]}")


_NUL = "\\u0000"  # how JSON writes a NUL inside a string
_LIVE_ROWS = "SELECT internal, id, code, metadata, {unc} FROM items WHERE deleted_seq IS NULL"


def check_index_field(name: object) -> str:
    """A field a payload index may name: a top-level field JSON writes unescaped, not starting with '$'."""
    if (
        not isinstance(name, str)
        or not 0 < len(name) <= 64
        or name.startswith("$")
        or not name.isprintable()
        or escaped_in_json(name)
    ):
        raise InvalidQueryError(
            f"an indexed field is 1-64 printable ASCII characters, without '\"' or '\\', not starting with '$'; "
            f"got {name!r}"
        )
    return name


def _payload_index_sql(name: str) -> str:
    path = json_path_literal(name)
    return (
        f'CREATE INDEX IF NOT EXISTS "pf_{name.encode().hex()}" ON items'
        f"(json_extract(metadata, {path}), json_type(metadata, {path})) WHERE deleted_seq IS NULL"
    )


def _filter_sql(where: dict[str, Any]) -> tuple[str, str, dict[str, Any]]:
    """(SQL condition selecting at least the rows ``where`` matches, SQL flag of the rows among them Python must
    re-check, their named parameters): see :mod:`index.filters`."""
    params: dict[str, Any] = {}
    sup, unc = filter_sql(where, params)
    return sup, unc, params


def _selection_sql(where: dict[str, Any], limit: int) -> tuple[str, dict[str, Any]]:
    """(SQL, parameters) of the internal ids of at most ``limit`` live rows SQLite selects for ``where``, as one
    comma-separated text, those Python must re-check negated (-1 - id)."""
    clause, unc, params = _filter_sql(where)
    flag = f"{unc} OR {HOLDS_NUL}" if nul_sensitive(where) else unc
    # the CASE inside the limited subquery: there SQLite 3.40 reads the indexed expressions from the index alone
    live = f"SELECT CASE WHEN {flag} THEN -1 - internal ELSE internal END AS x FROM items"
    sql = f"SELECT group_concat(x) FROM ({live} WHERE deleted_seq IS NULL AND {clause} LIMIT :limit)"
    return sql, {**params, "limit": limit}


def _really_matching(rows: list[tuple], where: dict[str, Any], at: int) -> list[tuple]:
    """The rows SQLite selected whose metadata (column ``at``) matches ``where``: the flagged ones (column
    ``at + 1``) and those holding a NUL in a string (SQLite's JSON functions cut strings there) are re-checked."""
    return [r for r in rows if not (r[at + 1] or _NUL in r[at]) or matches(json.loads(r[at]), where)]


def _matching(rows: list[tuple], where: dict[str, Any]) -> Matching:
    rows = _really_matching(rows, where, 3)
    n_bytes = len(rows[0][2]) if rows else 0
    return Matching(
        np.fromiter((r[0] for r in rows), np.int64, len(rows)),
        [r[1] for r in rows],
        np.frombuffer(b"".join(r[2] for r in rows), np.uint8).reshape(len(rows), n_bytes),
        [r[3] for r in rows],
    )
