"""A collection: binary codes under external string ids, with JSON metadata, durable and searchable by Hamming
distance (Salakhutdinov & Hinton, "Semantic hashing", 2009; FAISS binary indexes, Johnson, Douze & Jegou 2019).

In one paragraph: every write is one SQLite transaction (:mod:`index.store`, WAL, ``synchronous=FULL``) and is
on disk before the call returns; only then is it applied to the in-memory FAISS index (:mod:`index.kinds`), which
is derived data. Snapshots of that index (:mod:`index.snapshot`) are taken in the background every
``snapshot_every`` changed items and on close; opening a collection loads the newest valid snapshot and replays
the writes made after it from the store, or rebuilds the index from the store when there is no valid snapshot.
Kinds that delete by tombstone (hnsw, hash, multihash) are rebuilt from the live codes in the background once the
tombstones pass ``index.kinds.REBUILD_FRACTION`` of the index; writes wait only while the writes made during the
build are applied to the new index and it is swapped in, or, when they outpace rebuilds so far that the index is
mostly tombstones (``index.kinds.WAIT_FRACTION``), for the rebuild in flight.
Searches share a readers-writer lock with the short step that applies a write, so they never see half a write
and are never blocked behind a long bulk insert (its SQLite commits happen outside that lock).

Directory layout: ``items.sqlite`` (+ ``-wal``/``-shm``), ``manifest.json``, ``snapshot-<seq>.npz``, ``LOCK``,
and with the ``vectors`` setting ``vectors.bin`` (:mod:`index.vectors`: written and fsynced inside each upsert's
transaction, before its commit, so stored vectors are exactly as durable as the codes).
A collection is opened by one process at a time (an advisory lock on ``LOCK``); that folder lifecycle, shared with
the Milvus backend, is :class:`index.base.CollectionBase`'s.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from hamdex.index import legacy, snapshot
from hamdex.index.backup import copy_database
from hamdex.index.base import (
    SNAPSHOT_EVERY,
    CollectionBase,
    Hit,
    Item,
    Manifest,
    ScoredHit,
    UpsertResult,
    check_fingerprint,
    progress_key,
)
from hamdex.index.deadline import Deadline, check
from hamdex.index.errors import (
    CollectionExistsError,
    CorruptCollectionError,
    InvalidItemsError,
    InvalidQueryError,
    SearchTimeoutError,
)
from hamdex.index.kinds import KINDS, HammingIndex, make_hamming_index
from hamdex.index.rwlock import RWLock
from hamdex.index.scan import TopK, gather, index_codes
from hamdex.index.store import DB_FILE, Matching, Store
from hamdex.index.validation import Scalar, check_filter, check_id, is_int
from hamdex.index.vectors import VectorFile, asymmetric, check_query_vectors, cosine

LOG = logging.getLogger(__name__)

SUPPORTED_INDEX_KINDS = frozenset(KINDS)
_FILTER_MIN_FETCH = 64  # first over-fetch of a filtered top-k search: max(this, 4k)
FILTER_SCAN_MAX = 50_000  # a filter matching at most this many items is answered by an exact scan of them
FILTER_CACHE_SIZE = 16  # filters whose matching rows (internal ids and codes) are kept, until the next write
FILTER_CACHE_BYTES = 64 << 20  # and at most this much of them (50,000 rows of 256-bit codes: 2 MiB)
FILTER_FETCH_ROWS = 65_536  # most rows (queries x depth) one over-fetch round of a filtered search examines
QUERY_BLOCK = 64  # queries per FAISS call in a search with a deadline (checked between calls)


class Collection(CollectionBase):
    """Codes under string ids with JSON metadata; see the module docstring for how it stays durable.

    Metadata is stored as JSON, so what comes back is ``json.loads(json.dumps(m))``; ``None`` is stored as ``{}``.
    Use :meth:`create`, :meth:`open` or :meth:`open_or_create`, and :meth:`close` (or ``with``) when done.
    """

    backend = "faiss"

    def __init__(self, path: Path, settings: Manifest, store: Store, lock_fd: int, snapshot_every: int) -> None:
        super().__init__(path, settings, store, lock_fd, snapshot_every)
        self._index: HammingIndex = make_hamming_index(settings.index_kind, settings.n_bits, settings.index_params)
        self._rw = RWLock()  # searches (read) vs applying a write to the index (write)
        self._write_mutex = threading.Lock()  # one write at a time: store commit + apply, in sequence order
        self._snapshot_mutex = threading.Lock()  # one snapshot or rebuild at a time; none prunes the store meanwhile
        self._snapshot_thread: threading.Thread | None = None  # the background snapshot or rebuild, if any
        self._applied_seq = 0
        self._snapshot_seq = -1
        self._changed_since_snapshot = 0
        self._vectors = VectorFile(path, settings.vectors, settings.vector_dim) if settings.vectors else None
        # filter text -> (internal ids int64 (m,), codes uint8 (m, n_bytes)) of its matching rows, or None when
        # more than FILTER_SCAN_MAX match; valid at one applied seq (any write empties it), most recent last
        self._selected: dict[str, tuple[np.ndarray, np.ndarray] | None] = {}
        self._selected_seq = -1
        self._selected_lock = threading.Lock()

    # ---- construction -------------------------------------------------------------------------------------

    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str],
        expected_fingerprint: str | None = None,
        *,
        snapshot_every: int = SNAPSHOT_EVERY,
    ) -> Collection:
        """Open the collection at ``path``: load its newest valid snapshot and replay the writes after it."""
        if legacy.is_legacy(Path(path)):  # format-1 files are retired only once a migration is complete
            return cls._migrate(Path(path), expected_fingerprint, snapshot_every)
        return super().open(path, expected_fingerprint, snapshot_every=snapshot_every)

    @classmethod
    def _check_new(cls, path: Path, settings: Manifest) -> None:
        if legacy.is_legacy(path):
            raise CollectionExistsError(f"a collection already exists at {path}")

    def _load(self) -> None:
        if self._vectors is not None and self._vectors.dim is None:
            os.truncate(self._vectors.file, 0)  # rows of upserts that never committed: no item points to them
        self._recover()
        self._changed(0)  # a replay may have left tombstones past the rebuild threshold

    @classmethod
    def _migrate(cls, path: Path, expected_fingerprint: str | None, snapshot_every: int) -> Collection:
        """Copy a format-1 collection into a new store; the old files are renamed only once that is durable, so a
        crash part-way leaves them in place and the next open starts the migration again from scratch."""
        old = legacy.read(path)
        check_fingerprint(path, expected_fingerprint, old.settings["fingerprint"])
        LOG.warning("migrating %s from the format-1 layout (%d items)", path, len(old.ids))
        legacy.backup_manifest(path)
        for leftover in (DB_FILE, f"{DB_FILE}-wal", f"{DB_FILE}-shm"):  # an interrupted earlier attempt
            (path / leftover).unlink(missing_ok=True)
        s = old.settings
        settings = Manifest(s["n_bits"], s["fingerprint"], s["index_kind"], created_at=s["created_at"])
        collection = cls._create_at(path, settings, snapshot_every)
        try:
            if old.ids:
                collection._write(old.ids, old.codes, old.metadata)
            collection.snapshot()
            legacy.retire(path)
        except BaseException:
            collection.close()
            raise
        return collection

    def _recover(self) -> None:
        """Index = newest valid snapshot + replay of the store after it; or a rebuild from the whole store."""
        manifest = snapshot.read_manifest(self._path)
        snap = None
        if manifest is not None and _same_settings(manifest, self._settings):
            snap = snapshot.read(self._path, manifest)
        snapshot.remove_temp_files(self._path)
        after = -1
        if snap is not None:
            try:
                self._index.load_arrays(snap.arrays)
                after = snap.seq
                self._index.remove(self._store.removed_after(after))
            except (KeyError, ValueError, RuntimeError) as exc:
                LOG.warning("snapshot of %s unusable (%s): rebuilding the index from the store", self._path, exc)
                self._index = make_hamming_index(self._settings.index_kind, self.n_bits, self._settings.index_params)
                after = -1
        replayed = 0
        for internal, codes in self._store.live_codes(self.n_bytes, after_seq=after):
            self._index.add(codes, internal)
            replayed += len(internal)
        if after >= 0:
            self._store.prune(after)  # rows a crash kept between the snapshot and its pruning
        self._applied_seq = self._store.seq()
        self._snapshot_seq = after
        self._count = self._store.count()
        if self._index.live != self._count:
            raise CorruptCollectionError(
                self._path / DB_FILE, f"index holds {self._index.live} live codes, the store {self._count}"
            )
        LOG.info(
            "%s: snapshot at seq %d, replayed %d items up to seq %d", self._path, after, replayed, self._applied_seq
        )

    # ---- properties (path, n_bits, n_bytes, fingerprint, model, manifest, len, repr: see CollectionBase) --

    @property
    def seq(self) -> int:
        """Sequence number of the last write applied to the index."""
        return self._applied_seq

    def __contains__(self, item_id: object) -> bool:
        self._check_open()
        try:
            return isinstance(item_id, str) and self._store.get(check_id(item_id)) is not None
        except InvalidItemsError:  # no such id can be stored
            return False

    def ids(self) -> list[str]:
        """Live ids in insertion order (an upsert moves an id to the end)."""
        self._check_open()
        return self._store.ids()

    def index_bytes(self) -> int:
        """Size of the serialized FAISS index: about what it holds in memory."""
        with self._rw.read():
            return self._index.memory_bytes()

    # ---- writes -------------------------------------------------------------------------------------------

    def upsert(
        self,
        ids: Sequence[str],
        codes: np.ndarray,
        metadata: Sequence[dict | None] | None = None,
        *,
        progress: tuple[str, Any] | None = None,
        vectors: np.ndarray | None = None,
    ) -> UpsertResult:
        """Insert or replace (code and metadata) items; durable on return. Input is validated before any change.

        ``progress=(key, value)``: also store that job-progress record (see :meth:`set_progress`) in the same
        SQLite transaction, so the items and the record of having written them commit together or not at all.
        ``vectors``: float (n, d), each item's vector, for a collection created with ``vectors`` (the first
        upsert with vectors fixes d); an item upserted without one (``vectors=None``, or an all-zero row) has
        none, and a rerank scores it 0."""
        ids, codes, texts = self._valid_items(ids, codes, metadata)
        if vectors is not None and self._vectors is None:
            raise InvalidItemsError(f"collection at {self._path} keeps no vectors (create it with vectors=...)")
        if vectors is not None:
            vectors = self._vectors.check(vectors, len(ids))
        return self._write(ids, codes, texts, progress, vectors)

    def _write(
        self,
        ids: list[str],
        codes: np.ndarray,
        texts: list[str],
        progress: tuple[str, Any] | None = None,
        vectors: np.ndarray | None = None,
    ) -> UpsertResult:
        self._check_open()
        if not ids:
            if progress is not None:
                self.set_progress(*progress)
            return UpsertResult(0, 0)
        stored = None if progress is None else (progress_key(progress[0]), progress[1])
        self._wait_for_rebuild()
        with self._write_mutex:
            settings, before_commit = self._vector_write(vectors, len(ids))
            written = self._store.upsert(
                ids, codes, texts, progress=stored, settings=settings, before_commit=before_commit
            )
            if settings:  # the first vectors fixed the dimension, durably with them
                self._vectors.dim = settings["vector_dim"]
                self._settings = replace(self._settings, vector_dim=self._vectors.dim)
            if self._vectors is not None:
                self._vectors.clear(written.removed)
            with self._rw.write():
                self._index.remove(written.removed)
                self._index.add(codes, written.added)
                self._applied_seq = written.seq
                self._count += len(ids) - len(written.removed)
            self._changed(len(ids))
        return UpsertResult(inserted=len(ids) - len(written.removed), updated=len(written.removed))

    def _vector_write(self, vectors: np.ndarray | None, n: int) -> tuple[dict[str, Any], Any]:
        """(settings to store with the upsert, its before_commit): the rows of its vectors, zeros for "none" (so a
        row an uncommitted upsert wrote is never read as this one's), written and fsynced before the commit."""
        vf = self._vectors
        if vf is None or (vectors is None and vf.dim is None):
            return {}, None
        dim = vf.dim if vf.dim is not None else vectors.shape[1]
        rows = vectors if vectors is not None else np.zeros((n, dim), np.float32)
        settings = {"vector_dim": dim} if vf.dim is None else {}

        def before_commit(added: np.ndarray) -> None:
            vf.write(added, rows, dim)

        return settings, before_commit

    def vectors(self, ids: Sequence[str]) -> np.ndarray:
        """float32 (n, d): the stored vector of each id (as stored: float16 or int8 precision); a row of zeros for
        an unknown id or an item stored without one. InvalidQueryError if the collection keeps no vectors."""
        if self._vectors is None:
            raise InvalidQueryError(f"collection at {self._path} keeps no vectors")
        self._check_open()
        if self._vectors.dim is None:
            return np.zeros((len(ids), 0), np.float32)
        found = self._store.live_internal([i for i in ids if isinstance(i, str)])
        internal = np.asarray([found.get(i, (-1, b""))[0] for i in ids], np.int64)
        out = np.zeros((len(ids), self._vectors.dim), np.float32)
        known = internal >= 0
        if known.any():
            out[known] = self._vectors.read(internal[known])
        return out

    @property
    def vector_dtype(self) -> str | None:
        """The ``vectors`` setting: "float16", "int8", or None (no vectors kept)."""
        return self._settings.vectors

    @property
    def vector_dim(self) -> int | None:
        return None if self._vectors is None else self._vectors.dim

    def delete(self, ids: Sequence[str]) -> int:
        """Remove items; returns how many existed (unknown ids are ignored, an id with NUL or a lone surrogate is
        an error). Durable on return."""
        wanted = self._valid_deletes(ids)
        if not wanted:
            return 0
        self._wait_for_rebuild()
        with self._write_mutex:
            written = self._store.delete(wanted)
            if self._vectors is not None:
                self._vectors.clear(written.removed)
            with self._rw.write():
                self._index.remove(written.removed)
                self._applied_seq = written.seq
                self._count -= len(written.removed)
            self._changed(len(written.removed))
        return len(written.removed)

    # ---- reads --------------------------------------------------------------------------------------------

    def get(self, id: str) -> Item | None:
        """The item stored under ``id``, or None; an id with NUL or a lone surrogate is an error."""
        item_id = self._valid_id(id)
        row = self._store.get(item_id) if item_id is not None else None
        if row is None:
            return None
        _, code, meta = row
        return Item(id, np.frombuffer(code, np.uint8).copy(), json.loads(meta))

    def search(
        self,
        codes: np.ndarray,
        k: int,
        *,
        include_metadata: bool = True,
        where: dict[str, Scalar] | None = None,
        params: dict[str, int] | None = None,
        deadline: Deadline | None = None,
        rerank: int | None = None,
        query_vectors: np.ndarray | None = None,
        query_scores: np.ndarray | None = None,
        bits: int | None = None,
        pool: int | None = None,
    ) -> list[list[Hit]] | list[list[ScoredHit]]:
        """The ``k`` nearest items to each query, sorted by (distance, id); fewer if there are fewer items.

        ``where`` keeps only items whose metadata has each field equal to the value given; the result still holds
        ``k`` hits per query whenever ``k`` matching items exist (exact kinds; approximate kinds search deeper
        until they find them or exhaust what their index reaches). ``params`` are the index kind's query
        parameters. ``deadline`` (index.deadline) is checked between blocks of work: past it, SearchTimeoutError.

        ``rerank=N``: two-stage ranking (:meth:`_rescore`): the max(N, k) nearest by Hamming distance, rescored,
        the best ``k`` returned as ScoredHit sorted by (-score, distance, id). ``query_vectors`` float (q, d):
        scored by cosine with the stored vectors (a collection created with ``vectors``); ``query_scores`` float
        (q, n_bits) (models.rerank.query_scores): the asymmetric score of each candidate's bits. A query whose row
        is NaN (or without either array) keeps the Hamming order, with score None.

        ``pool=P`` (with ``rerank=N``; three-stage ranking): the max(P, N, k) nearest by Hamming distance, ordered
        by the asymmetric score of ``query_scores`` (by distance for a NaN row), and the first N of them rescored by
        cosine with ``query_vectors`` (both arrays may be given then). Only N stored vectors are read per query.

        ``bits``: rank by the distance between the first ``bits`` bits of the codes only (a multiple of 8, 8 to
        n_bits; nested codes, docs/nested.md): an exact scan (:meth:`_prefix_search`), which takes no ``params``
        and no ``rerank``; ties by id.
        """
        nb = self._prefix_bytes(bits, rerank, params)
        if nb is not None:
            codes, where, _ = self._valid_search(codes, k, where, None)
            with self._rw.read():
                if len(codes) == 0 or self._index.live == 0:
                    return [[] for _ in range(len(codes))]
                return self._prefix_search(codes, int(k), nb, where, include_metadata, None, deadline)
        if rerank is not None or pool is not None:
            self._check_rerank(rerank, pool, len(codes), query_vectors, query_scores)
            n = max(int(rerank), int(k), int(pool or 0))
            if where:
                found = self.search(codes, n, include_metadata=False, where=where, params=params, deadline=deadline)
                candidates = self._internal_of(found)
            else:
                candidates = self._candidates(codes, n, params, None, deadline)
            narrow = None if pool is None else max(int(rerank), int(k))
            return self._rescore(candidates, int(k), include_metadata, query_vectors, query_scores, deadline, narrow)
        codes, where, qparams = self._valid_search(codes, k, where, params)
        with self._rw.read():
            if len(codes) == 0 or self._index.live == 0:
                return [[] for _ in range(len(codes))]
            if where:
                return self._filtered_search(codes, int(k), where, include_metadata, qparams, None, deadline)
            return self._blocks(codes, deadline, lambda c: self._nearest(c, int(k), include_metadata, qparams, None))

    def range_search(
        self,
        codes: np.ndarray,
        radius: int,
        *,
        k: int | None = None,
        include_metadata: bool = True,
        where: dict[str, Scalar] | None = None,
        params: dict[str, int] | None = None,
        deadline: Deadline | None = None,
        rerank: int | None = None,
        query_vectors: np.ndarray | None = None,
        query_scores: np.ndarray | None = None,
        bits: int | None = None,
        pool: int | None = None,
    ) -> list[list[Hit]] | list[list[ScoredHit]]:
        """Items within Hamming distance ``radius`` (inclusive) of each query, sorted by (distance, id).

        With ``k``, only the ``k`` nearest of them: a top-k search (:meth:`search`, filter included) whose hits
        beyond the radius are dropped, so the work grows with k, not with the items inside the radius. Among
        items tied at the k-th distance, which are kept is the top-k search's choice, as in :meth:`search`.
        ``rerank``, ``pool``, ``query_vectors``, ``query_scores``: as in :meth:`search` (``k`` is then required):
        the candidates are the max(P, N, k) nearest within the radius.
        ``bits``: as in :meth:`search`; the radius counts on the prefix (any index kind, radius search or not).
        """
        nb = self._prefix_bytes(bits, rerank, params)
        if nb is not None:
            codes, radius, where, _ = self._valid_range(codes, radius, k, where, None)
            with self._rw.read():
                if len(codes) == 0 or self._index.live == 0:
                    return [[] for _ in range(len(codes))]
                wanted = int(k) if k is not None else self._index.live  # no k: every item within the radius
                return self._prefix_search(codes, wanted, nb, where, include_metadata, radius, deadline)
        if rerank is not None or pool is not None:
            if k is None:
                raise InvalidQueryError("a reranked radius search needs k")
            self._check_rerank(rerank, pool, len(codes), query_vectors, query_scores)
            n = max(int(rerank), int(k), int(pool or 0))
            if where:
                options = {"include_metadata": False, "where": where, "params": params, "deadline": deadline}
                candidates = self._internal_of(self.range_search(codes, radius, k=n, **options))
            else:
                candidates = self._candidates(codes, n, params, radius, deadline)
            narrow = None if pool is None else max(int(rerank), int(k))
            return self._rescore(candidates, int(k), include_metadata, query_vectors, query_scores, deadline, narrow)
        codes, radius, where, qparams = self._valid_range(codes, radius, k, where, params)
        if not self._index.supports_range:
            raise InvalidQueryError(f"index kind {self._settings.index_kind!r} does not support radius search")
        with self._rw.read():
            if len(codes) == 0 or self._index.live == 0:
                return [[] for _ in range(len(codes))]
            if k is None:
                return self._blocks(
                    codes, deadline, lambda c: self._within(c, radius, include_metadata, where, qparams)
                )
            if where:
                return self._filtered_search(codes, int(k), where, include_metadata, qparams, radius, deadline)
            return self._blocks(codes, deadline, lambda c: self._nearest(c, int(k), include_metadata, qparams, radius))

    def _check_params(self, params: dict[str, int] | None) -> dict[str, int]:
        return self._index.check_query_params(params)

    # ---- prefix search (nested codes) -----------------------------------------------------------------------

    def _prefix_bytes(self, bits: object, rerank: object, params: dict[str, int] | None) -> int | None:
        """The bytes of a prefix search's ``bits``, or None for a search of the whole code (no ``bits``, or all
        of them); InvalidQueryError for a width that is no whole-byte prefix, or with what it cannot combine."""
        if bits is None:
            return None
        if not is_int(bits) or bits % 8 or not 8 <= bits <= self.n_bits:
            raise InvalidQueryError(f"bits must be a multiple of 8 between 8 and {self.n_bits}, got {bits!r}")
        if bits == self.n_bits:
            return None
        if rerank is not None:
            raise InvalidQueryError("bits (a prefix search) does not combine with rerank")
        if any(v is not None for v in (params or {}).values()):
            raise InvalidQueryError("bits (a prefix search) is an exact scan: it takes no index query parameters")
        return int(bits) // 8

    def _prefix_search(self, codes, k, nb: int, where, include_metadata, radius, deadline) -> list[list[Hit]]:
        """Exact top-k by (prefix distance, id) on the first ``nb`` bytes, under the read lock: a numpy popcount
        scan (index.scan.TopK) of the prefixes of the live rows (of the filter's, with ``where``). A scan rather
        than a FAISS index over the prefixes: exact with ties by id like the filtered scans it shares code with,
        nothing derived to build, hold in memory or invalidate on writes, and about flat's own time per query
        (docs/nested.md; the rows come from the index's memory for flat, hnsw and nested, from the store else)."""
        queries = np.ascontiguousarray(codes[:, :nb])  # (q, nb)
        if where:
            selected = self._selection(where, deadline)
            if selected is None:
                matching = self._store.matching_chunks(where, deadline)
                chunks = (rows._replace(codes=rows.codes[:, :nb]) for rows in matching)
                return self._scan(queries, k, chunks, include_metadata, radius, deadline)
            internal, stored = selected
            return self._scan_selected(queries, k, internal, stored[:, :nb], include_metadata, radius, deadline)
        top = TopK(queries, k, radius, deadline, ties=True)
        for internal, stored in self._live_rows():
            top.add(stored[:, :nb], internal, internal)  # internal ids stand for ids: ties are ordered after
        return self._described(top.result(), k, include_metadata)

    def _live_rows(self) -> Iterable[tuple[np.ndarray, np.ndarray]]:
        """Chunks of (internal ids int64 (m,), codes uint8 (m, n_bytes)) of every live item: views of the index's
        memory where it keeps the codes as an array (under the read lock), else read from the store."""
        held = index_codes(self._index.index)
        if held is None:  # ivf lists, hash tables: no array of codes to view
            yield from self._store.live_codes(self.n_bytes)
            return
        ids, stored = held
        if self._index.tombstones:
            live = ~np.isin(ids, np.fromiter(self._index.tombstones, np.int64, len(self._index.tombstones)))
            ids, stored = ids[live], stored[live]
        yield ids, stored

    # ---- two-stage ranking ----------------------------------------------------------------------------------

    def _check_rerank(self, rerank: object, pool: object, n: int, query_vectors: object, query_scores: object) -> None:
        if not is_int(rerank) or rerank < 1:
            raise InvalidQueryError(f"rerank must be a positive int (candidates), got {rerank!r}")
        if pool is not None and (not is_int(pool) or pool < 1):
            raise InvalidQueryError(f"pool must be a positive int (Hamming candidates), got {pool!r}")
        if pool is None and query_vectors is not None and query_scores is not None:
            raise InvalidQueryError("rerank by query_vectors or by query_scores, not both (or both with a pool)")
        if query_vectors is not None:
            if self._vectors is None:
                raise InvalidQueryError(f"collection at {self._path} keeps no vectors to rerank by cosine")
            check_query_vectors(query_vectors, n, self._vectors.dim)
        if query_scores is not None:
            check_query_vectors(query_scores, n, self.n_bits)

    def _candidates(self, codes, n: int, params, radius: int | None, deadline) -> list[tuple[np.ndarray, np.ndarray]]:
        """Each query's Hamming top ``n`` (within ``radius``) straight from the index, unfiltered: (internal ids
        int64 (m,), distances int64 (m,)), in no particular order."""
        if radius is None:
            codes, _, qparams = self._valid_search(codes, n, None, params)
        else:
            codes, radius, _, qparams = self._valid_range(codes, radius, n, None, params)
            if not self._index.supports_range:
                raise InvalidQueryError(f"index kind {self._settings.index_kind!r} does not support radius search")
        out = []
        with self._rw.read():
            if self._index.live == 0:
                return [(np.zeros(0, np.int64), np.zeros(0, np.int64)) for _ in range(len(codes))]
            for start in range(0, len(codes), QUERY_BLOCK):
                check(deadline)
                distances, labels = self._index.search(codes[start : start + QUERY_BLOCK], n, qparams)
                for row_d, row_l in zip(distances, labels, strict=True):
                    keep = (row_l >= 0) if radius is None else (row_l >= 0) & (row_d <= radius)
                    out.append((row_l[keep].astype(np.int64), row_d[keep].astype(np.int64)))
        return out

    def _internal_of(self, found: list[list[Hit]]) -> list[tuple[np.ndarray, np.ndarray]]:
        """Hits -> (internal ids, distances) of those still live, as :meth:`_candidates` gives them."""
        out = []
        for hits in found:
            live = self._store.live_internal([h.id for h in hits])
            kept = [(live[h.id][0], h.distance) for h in hits if h.id in live]
            out.append((np.asarray([i for i, _ in kept], np.int64), np.asarray([d for _, d in kept], np.int64)))
        return out

    def _rescore(
        self,
        candidates,
        k: int,
        include_metadata: bool,
        query_vectors,
        query_scores,
        deadline: Deadline | None,
        narrow: int | None = None,
    ) -> list[list[ScoredHit]]:
        """Each query's candidates (internal ids, Hamming distances) rescored: cosine of its vector with their
        stored vectors, or else the asymmetric score of its per-bit scores against their codes; the best k by
        (-score, distance), returned sorted by (-score, distance, id) with metadata (which of the items tied in score
        and distance at the k-th place are kept is unspecified, as in a top-k search). A query without a vector or
        scores (NaN rows), and every query when neither is given, keeps the Hamming order (score None).
        ``narrow=N`` (a pool): the candidates are first cut to the N best by (-asymmetric score, distance), or by
        distance without scores, so that at most N stored vectors are read. One query at a time: memory stays at
        one query's candidates."""
        out = []
        for i, (internal, distances) in enumerate(candidates):
            check(deadline)
            vector, bit_scores = _row(query_vectors, i), _row(query_scores, i)
            asym = None
            if bit_scores is not None and len(internal):
                with self._rw.read():  # the codes from the index's memory where it keeps them (flat, hnsw)
                    asym = asymmetric(bit_scores, self._codes_of(internal))
            if narrow is not None and len(internal) > narrow:
                first = np.lexsort((internal, distances, -asym if asym is not None else distances))[:narrow]
                internal, distances = internal[first], distances[first]
                asym = None if asym is None else asym[first]
            if vector is not None and len(internal):
                stored = self._vectors.read(internal) if self._vectors.dim else np.zeros((len(internal), len(vector)))
                scores = cosine(vector, stored)
            else:
                scores = asym
            if scores is None:
                top = self._hamming_order(internal, distances, k)
            else:
                order = np.lexsort((internal, distances, -scores))[:k]  # last key first: -score, distance
                top = [(int(internal[j]), int(distances[j]), float(scores[j])) for j in order]
            described = self._store.describe([j for j, _, _ in top], include_metadata) if top else {}
            hits = [
                ScoredHit(described[j][0], d, json.loads(described[j][1]) if include_metadata else None, score)
                for j, d, score in top
                if j in described  # not pruned meanwhile (a marked row is still described, as in a search)
            ]
            out.append(sorted(hits, key=lambda h: (-(h.score or 0.0), h.distance, h.id)))
        return out

    def _hamming_order(self, internal: np.ndarray, distances: np.ndarray, k: int) -> list[tuple[int, int, None]]:
        """The first k candidates by (distance, id), unscored."""
        ids = self._store.describe(internal.tolist(), False) if len(internal) else {}
        pairs = zip(internal.tolist(), distances.tolist(), strict=True)
        rows = sorted((int(d), ids[j][0], j) for j, d in pairs if j in ids)
        return [(j, d, None) for d, _, j in rows[:k]]

    @staticmethod
    def _blocks(codes: np.ndarray, deadline: Deadline | None, search) -> list[list[Hit]]:
        """``search(block)`` over blocks of QUERY_BLOCK queries, checking ``deadline`` before each; one block
        without a deadline."""
        if deadline is None:
            return search(codes)
        out: list[list[Hit]] = []
        for start in range(0, len(codes), QUERY_BLOCK):
            deadline.check()
            out.extend(search(codes[start : start + QUERY_BLOCK]))
        return out

    def _nearest(self, codes, k, include_metadata, qparams, radius: int | None) -> list[list[Hit]]:
        """Top-k through the index, less the hits beyond ``radius`` (when given)."""
        distances, labels = self._index.search(codes, k, qparams)
        if radius is not None:
            labels = np.where(distances <= radius, labels, -1)
        return self._hits(labels, distances, include_metadata)

    def _within(self, codes, radius, include_metadata, where, qparams) -> list[list[Hit]]:
        """Every item within ``radius``, through the index's range search (no k: as many as there are)."""
        out = []
        for d, ids in self._index.range_search(codes, radius, qparams):
            out.extend(self._hits(ids[None, :], d[None, :], include_metadata, where))
        return out

    def _filtered_search(self, codes, k, where, include_metadata, qparams, radius, deadline) -> list[list[Hit]]:
        """Exact search over the matching rows when at most FILTER_SCAN_MAX items match (:meth:`_selection`,
        :meth:`_scan_selected`); else over-fetch through the index (:meth:`_overfetch`), and an exact scan of every
        matching row, chunk by chunk, for the queries that over-fetching within its bound leaves short of k hits."""
        selected = self._selection(where, deadline)
        if selected is not None:
            return self._scan_selected(codes, k, *selected, include_metadata, radius, deadline)
        out, short = self._overfetch(codes, k, where, include_metadata, qparams, radius, deadline)
        if short.size:
            chunks = self._store.matching_chunks(where, deadline)
            scanned = self._scan(codes[short], k, chunks, include_metadata, radius, deadline)
            for i, hits in zip(short.tolist(), scanned, strict=True):
                out[i] = hits
        return out

    def _selection(self, where, deadline) -> tuple[np.ndarray, np.ndarray] | None:
        """(internal ids, codes) of the live items ``where`` matches, or None when more than FILTER_SCAN_MAX do;
        cached per filter until the next write (under the read lock, so the index's seq is the cache's).

        The ids come from the payload index alone where one answers the filter (:meth:`Store.matching_internal`),
        the codes from the index's memory (:func:`index.scan.index_codes`): no row of the table is read. A row the
        store has committed and the index not yet applied (a write in flight) has its code read from the store."""
        key = json.dumps(where, sort_keys=True)
        with self._selected_lock:
            if self._selected_seq != self._applied_seq:
                self._selected, self._selected_seq = {}, self._applied_seq
            if key in self._selected:
                self._selected[key] = hit = self._selected.pop(key)  # most recently used last
                return hit
            seq = self._selected_seq
        internal = self._store.matching_internal(where, FILTER_SCAN_MAX, deadline)
        selected = None if internal is None else (internal, self._codes_of(internal))
        with self._selected_lock:
            if self._selected_seq == seq:
                self._selected[key] = selected
                while len(self._selected) > FILTER_CACHE_SIZE or _nbytes(self._selected) > FILTER_CACHE_BYTES:
                    del self._selected[next(iter(self._selected))]  # the least recently used
        return selected

    def _codes_of(self, internal: np.ndarray) -> np.ndarray:
        """uint8 (m, n_bytes): the codes of these live internal ids, from the index's memory where it keeps them as
        an array (flat, hnsw), else (and for a row not in the index yet) from the store."""
        held = index_codes(self._index.index)
        if held is None:
            return self._store.codes_of(internal.tolist(), self.n_bytes).copy()
        codes, found = gather(*held, internal)
        if not found.all():
            codes[~found] = self._store.codes_of(internal[~found].tolist(), self.n_bytes)
        return codes

    def _scan_selected(self, codes, k, internal, stored, include_metadata, radius, deadline) -> list[list[Hit]]:
        """Exact top-k by (distance, id) among the selected rows: distances to every one (index.scan), keeping the
        rows at most each query's k-th distance away, which alone are then described from the store and ordered
        by (distance, external id)."""
        top = TopK(codes, k, radius, deadline, ties=True)
        top.add(stored, internal, internal)  # internal ids stand for ids here: ties are ordered below
        return self._described(top.result(), k, include_metadata)

    def _described(self, candidates, k: int, include_metadata: bool) -> list[list[Hit]]:
        """TopK rows of internal ids (ties at the k-th distance included) -> the first k hits by (distance,
        external id), described from the store."""
        wanted = sorted({i for rows in candidates for _, i, _ in rows})
        described = self._store.selected(wanted, include_metadata) if wanted else {}
        out = []
        for rows in candidates:
            row = sorted((d, *described[i]) for d, i, _ in rows if i in described)
            out.append([Hit(i, d, json.loads(m) if include_metadata else None) for d, i, m in row[:k]])
        return out

    def _overfetch(self, codes, k, where, include_metadata, qparams, radius, deadline) -> tuple[list, np.ndarray]:
        """Filtered top-k through the index: fetch the max(64, 4k) nearest, keep the matching ones, and fetch 4x
        deeper for the queries still short of k, while a round examines at most FILTER_FETCH_ROWS rows (exact on
        flat). Returns the hits, and the queries still short (neither k hits nor the end of what the index
        reaches within the radius)."""
        out: list[list[Hit]] = [[] for _ in range(len(codes))]
        short = np.arange(len(codes))
        fetch = max(_FILTER_MIN_FETCH, 4 * k)
        while short.size:
            fetch = min(fetch, self._index.live)
            if fetch * short.size > FILTER_FETCH_ROWS:
                break
            check(deadline)
            distances, labels = self._index.search(codes[short], fetch, qparams)
            if radius is not None:
                labels = np.where(distances <= radius, labels, -1)
            hits = self._hits(labels, distances, include_metadata, where, k)
            # a row ending in -1: nothing more within the radius, or the index reaches no further (ivf, hash...)
            done = np.asarray([len(h) == k for h in hits]) | (labels[:, -1] < 0) | (fetch >= self._index.live)
            for i, found, finished in zip(short.tolist(), hits, done.tolist(), strict=True):
                if finished:
                    out[i] = found
            short = short[~done]
            fetch *= 4
        return out, short

    def _scan(self, codes, k, chunks: Iterable[Matching], include_metadata, radius, deadline) -> list[list[Hit]]:
        """Exact top-k by (distance, id) over the rows a filter selected (index.scan); metadata parsed for hits only."""
        top = TopK(codes, k, radius, deadline)
        for rows in chunks:
            check(deadline)
            top.add(rows.codes, rows.ids, rows.metadata)
        return [[Hit(i, d, json.loads(m) if include_metadata else None) for d, i, m in hits] for hits in top.result()]

    def _hits(self, labels, distances, include_metadata: bool, where=None, k: int | None = None) -> list[list[Hit]]:
        """FAISS rows -> hits sorted by (distance, id), at most ``k`` per row, described from the store (under the
        read lock); with ``where``, only the items SQLite finds matching. Metadata is parsed for the hits only."""
        found = labels[labels >= 0]
        described = self._store.describe(np.unique(found).tolist(), include_metadata, where) if found.size else {}
        out = []
        for row_ids, row_d in zip(labels.tolist(), distances.tolist(), strict=True):
            row = sorted((d, *described[i]) for i, d in zip(row_ids, row_d, strict=True) if i in described)
            out.append([Hit(i, d, json.loads(m) if include_metadata else None) for d, i, m in row[:k]])
        return out

    # ---- scrolling, counting and deleting by filter ---------------------------------------------------------

    def scroll(
        self, after: int = -1, limit: int = 100, where: dict[str, Any] | None = None, deadline: Deadline | None = None
    ) -> tuple[list[Item], int | None]:
        """(live items matching ``where`` after position ``after``, in write order; the position to continue
        after, or None at the end). Positions are internal ids, never reused, and an upsert gives an item a new
        one: an item rewritten during a scroll comes in its new version (again, if the scroll had passed the old)."""
        where = check_filter(where)
        rows, last = self._store.scroll(int(after), int(limit), where, deadline)
        items = [Item(i, np.frombuffer(code, np.uint8).copy(), json.loads(meta)) for _, i, code, meta in rows]
        return items, last

    def count_matching(self, where: dict[str, Any] | None = None, deadline: Deadline | None = None) -> int:
        """Live items whose metadata matches ``where`` (all of them without one)."""
        return self._store.count_matching(check_filter(where), deadline)

    def delete_where(
        self, where: dict[str, Any] | None, deadline: Deadline | None = None, chunk: int = 1000
    ) -> tuple[int, bool]:
        """Delete the items matching ``where``, ``chunk`` at a time (each chunk one durable write), until none is
        left or ``deadline`` expires; returns (deleted, complete). Only the versions seen matching are deleted:
        an item rewritten meanwhile stays."""
        where, deleted, after = check_filter(where), 0, -1
        while deadline is None or not deadline.expired:
            try:
                rows, last = self._store.scroll(after, chunk, where, deadline)
            except SearchTimeoutError:
                if deleted:  # what is deleted is durable: say so, and that there is more
                    return deleted, False
                raise
            if rows:
                self._wait_for_rebuild()
                with self._write_mutex:
                    written = self._store.delete_internal([r[0] for r in rows])
                    if self._vectors is not None:
                        self._vectors.clear(written.removed)
                    with self._rw.write():
                        self._index.remove(written.removed)
                        self._applied_seq = written.seq
                        self._count -= len(written.removed)
                    self._changed(len(written.removed))
                deleted += len(written.removed)
            if last is None:
                return deleted, True
            after = last
        return deleted, False

    # ---- snapshots and lifecycle --------------------------------------------------------------------------

    def _changed(self, n: int) -> None:
        """After a write (under the write mutex): start a background snapshot every ``snapshot_every`` changed
        items, or a background rebuild once tombstones pass REBUILD_FRACTION of the index; one job at a time (the
        next write after it starts the next one)."""
        self._changed_since_snapshot += n
        if self._snapshot_running():
            return
        if self._changed_since_snapshot >= self._snapshot_every:
            job = self.snapshot
        elif self._index.wants_rebuild():
            job = self.rebuild
        else:
            return
        self._snapshot_thread = threading.Thread(target=self._background, args=(job,), daemon=True)
        self._snapshot_thread.start()

    def _snapshot_running(self) -> bool:
        return self._snapshot_thread is not None and self._snapshot_thread.is_alive()

    def _wait_for_rebuild(self) -> None:
        """Backpressure, before a write takes the write mutex: while the index is mostly tombstones (writes faster
        than rebuilds), wait for the background job in flight (a rebuild, or a snapshot, which rebuilds too)."""
        thread = self._snapshot_thread
        if thread is not None and thread.is_alive() and self._index.mostly_dead():
            thread.join()

    def _background(self, job) -> None:
        try:
            job()
        except Exception:  # a failed snapshot or rebuild loses nothing: the store has every write
            LOG.exception("background %s of %s failed", job.__name__, self._path)
        finally:
            self._store.release_reader()  # this thread's connection, if the job opened one

    def snapshot(self) -> int:
        """Write a snapshot of the index now; returns its sequence number. Writes and searches go on meanwhile."""
        with self._snapshot_mutex:
            if self._index.wants_rebuild():
                self._rebuild()
            with self._rw.read():
                arrays, seq = self._index.to_arrays(), self._applied_seq
                changed, self._changed_since_snapshot = self._changed_since_snapshot, 0
            if seq == self._snapshot_seq and changed == 0:
                return seq
            start = time.perf_counter()
            snapshot.write(self._path, seq, arrays, self.manifest.settings())
            self._snapshot_seq = seq
            pruned = self._store.prune(seq)
            LOG.info(
                "snapshot of %s at seq %d (%d items, %d rows pruned) in %.3fs",
                self._path,
                seq,
                self._count,
                pruned,
                time.perf_counter() - start,
            )
            return seq

    def copy_into(self, directory: Path) -> int:
        """A consistent copy for a backup (index.backup): the database at some seq S, and a snapshot of the index
        at a seq <= S. The snapshot mutex keeps any snapshot from pruning the store meanwhile, so opening the copy
        replays the writes between the two; writes and searches go on. Returns S.

        With stored vectors, writes wait while the database and ``vectors.bin`` are copied: a delete zeroes its
        rows, which must not happen between the two copies (the database copy would point to zeroed rows)."""
        self._check_open()
        with self._snapshot_mutex:
            with self._rw.read():
                arrays, index_seq = self._index.to_arrays(), self._applied_seq
            if self._vectors is None:
                seq = copy_database(self._store.file, directory / DB_FILE)  # after: it holds every write applied
            else:
                with self._write_mutex:
                    seq = copy_database(self._store.file, directory / DB_FILE)
                    self._vectors.copy_to(directory)
            snapshot.write(directory, index_seq, arrays, self.manifest.settings())
        return seq

    def rebuild(self) -> bool:
        """Rebuild a tombstoned index from the live codes if its tombstones pass REBUILD_FRACTION of it (writes
        start this in the background); returns whether it did. Writes and searches go on meanwhile."""
        with self._snapshot_mutex:
            return self._index.wants_rebuild() and self._rebuild()

    def _rebuild(self) -> bool:
        """Build a fresh index from the live codes as of some seq S, writes going on meanwhile; then, holding the
        write mutex (writes wait, searches go on), apply the writes after S to it and swap it in. The rows those
        writes removed are still in the store: only a snapshot prunes, and the caller holds the snapshot mutex."""
        start = time.perf_counter()
        with self._store.reading() as seq:  # one read transaction: the codes as of seq
            chunks = list(self._store.live_codes(self.n_bytes))
        fresh = make_hamming_index(self._settings.index_kind, self.n_bits, self._settings.index_params)
        for internal, codes in chunks:
            fresh.add(codes, internal)
        with self._write_mutex:
            fresh.remove(self._store.removed_after(seq))
            for internal, codes in self._store.live_codes(self.n_bytes, after_seq=seq):
                fresh.add(codes, internal)
            if fresh.live != self._count:  # an invariant: keep the old index rather than swap in a wrong one
                LOG.error("rebuild of %s holds %d live codes, not %d: not used", self._path, fresh.live, self._count)
                return False
            with self._rw.write():
                self._index = fresh
        LOG.info("rebuilt the index of %s (%d items) in %.3fs", self._path, self._count, time.perf_counter() - start)
        return True

    def _persist(self) -> None:
        """On close: a snapshot if anything changed since the last one, so the next open replays less."""
        if self._snapshot_thread is not None:
            self._snapshot_thread.join()
        if self._applied_seq != self._snapshot_seq:
            self.snapshot()

    def _release(self) -> None:
        if self._vectors is not None:
            self._vectors.close()
        super()._release()


def _nbytes(selected: dict[str, tuple[np.ndarray, np.ndarray] | None]) -> int:
    return sum(ids.nbytes + codes.nbytes for ids, codes in filter(None, selected.values()))


def _same_settings(manifest: dict[str, Any], settings: Manifest) -> bool:
    keys = ("n_bits", "fingerprint", "index_kind", "index_params")
    return all(manifest.get(k) == getattr(settings, k) for k in keys)


def _row(array: np.ndarray | None, i: int) -> np.ndarray | None:
    """Row ``i`` of a rerank's query array as float32, or None: no array, or a row with a NaN (that query has none)."""
    if array is None:
        return None
    row = np.asarray(array[i], np.float32)
    return row if np.isfinite(row).all() else None
