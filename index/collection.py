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

Directory layout: ``items.sqlite`` (+ ``-wal``/``-shm``), ``manifest.json``, ``snapshot-<seq>.npz``, ``LOCK``.
A collection is opened by one process at a time (an advisory lock on ``LOCK``).
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from hamdex.index import legacy, snapshot
from hamdex.index.deadline import Deadline, check
from hamdex.index.errors import (
    CodeLengthError,
    CollectionError,
    CollectionExistsError,
    CollectionLockedError,
    CollectionNotFoundError,
    CorruptCollectionError,
    FingerprintMismatchError,
    InvalidItemsError,
    InvalidManifestError,
    InvalidQueryError,
)
from hamdex.index.kinds import KINDS, HammingIndex, make_hamming_index
from hamdex.index.rwlock import RWLock
from hamdex.index.scan import TopK
from hamdex.index.store import DB_FILE, Matching, Store
from hamdex.index.validation import (
    Scalar,
    check_codes,
    check_filter,
    check_id,
    check_ids,
    describe,
    is_int,
    metadata_texts,
)

LOG = logging.getLogger(__name__)

FORMAT_VERSION = 2
LOCK_FILE = "LOCK"
SUPPORTED_INDEX_KINDS = frozenset(KINDS)
BACKENDS = ("faiss", "milvus")  # where a collection keeps its items: SQLite + FAISS (here) or Milvus (index.milvus)
SNAPSHOT_EVERY = 100_000  # changed items between automatic background snapshots
_FILTER_MIN_FETCH = 64  # first over-fetch of a filtered top-k search: max(this, 4k)
FILTER_SCAN_MAX = 50_000  # a filter matching at most this many items is answered by an exact scan of them
FILTER_FETCH_ROWS = 65_536  # most rows (queries x depth) one over-fetch round of a filtered search examines
QUERY_BLOCK = 64  # queries per FAISS call in a search with a deadline (checked between calls)


def _now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


@dataclass(frozen=True)
class Manifest:
    """A collection's settings (fixed at creation) and its live item count."""

    n_bits: int  # code length; a positive multiple of 8
    fingerprint: str  # fingerprint of the model whose codes the collection holds
    index_kind: str = "flat"  # see index.kinds
    index_params: dict[str, int] = field(default_factory=dict)  # the kind's parameters, defaults filled in
    model: str | None = None  # name of the model the collection is bound to (the service's registry)
    count: int = 0  # live items
    format_version: int = FORMAT_VERSION
    created_at: str = field(default_factory=_now_iso)  # ISO 8601, UTC
    backend: str = "faiss"  # "faiss" (this module) or "milvus" (index.milvus)
    milvus_uri: str | None = None  # backend "milvus": a server URL, or None for a milvus-lite file in the directory

    def __post_init__(self) -> None:
        if not is_int(self.n_bits) or self.n_bits <= 0 or self.n_bits % 8:
            raise InvalidManifestError(f"n_bits must be a positive multiple of 8, got {self.n_bits!r}")
        if not isinstance(self.fingerprint, str) or not self.fingerprint:
            raise InvalidManifestError(f"fingerprint must be a non-empty string, got {self.fingerprint!r}")
        if not isinstance(self.index_kind, str) or self.index_kind not in KINDS:
            raise InvalidManifestError(f"index_kind must be one of {sorted(KINDS)}, got {self.index_kind!r}")
        if not isinstance(self.index_params, dict):
            raise InvalidManifestError(f"index_params must be an object, got {self.index_params!r}")
        object.__setattr__(self, "index_params", KINDS[self.index_kind].check_params(self.index_params))
        KINDS[self.index_kind].check_fits(self.n_bits, self.index_params)
        if self.model is not None and not isinstance(self.model, str):
            raise InvalidManifestError(f"model must be a string or null, got {self.model!r}")
        if not is_int(self.count) or self.count < 0:
            raise InvalidManifestError(f"count must be a non-negative int, got {self.count!r}")
        if self.format_version != FORMAT_VERSION:
            raise InvalidManifestError(f"format_version {self.format_version!r} is not {FORMAT_VERSION}")
        try:
            datetime.fromisoformat(self.created_at)
        except (TypeError, ValueError) as exc:
            raise InvalidManifestError(f"created_at must be ISO 8601, got {self.created_at!r}") from exc
        if self.backend not in BACKENDS:
            raise InvalidManifestError(f"backend must be one of {list(BACKENDS)}, got {self.backend!r}")
        if self.milvus_uri is not None and (self.backend != "milvus" or not isinstance(self.milvus_uri, str)):
            raise InvalidManifestError(f"milvus_uri is null or a string, for backend milvus; got {self.milvus_uri!r}")

    @classmethod
    def from_dict(cls, raw: object) -> Manifest:
        """Rebuild from ``asdict`` output; unknown keys are an error, not silently dropped."""
        if not isinstance(raw, dict):
            raise InvalidManifestError(f"a manifest must be a JSON object, got {type(raw).__name__}")
        unknown = set(raw) - {f.name for f in fields(cls)}
        if unknown:
            raise InvalidManifestError(f"unknown manifest keys {sorted(unknown)}")
        try:
            return cls(**raw)
        except TypeError as exc:  # a required key is missing
            raise InvalidManifestError(str(exc)) from exc

    @property
    def n_bytes(self) -> int:
        return self.n_bits // 8

    def settings(self) -> dict[str, Any]:
        """What the store keeps: everything but the live count."""
        out = asdict(self)
        del out["count"]
        return out


class Hit(NamedTuple):
    id: str
    distance: int  # Hamming distance to the query
    metadata: dict | None  # None when the search was asked not to include metadata


class Item(NamedTuple):
    id: str
    code: np.ndarray  # uint8 (n_bytes,)
    metadata: dict


class UpsertResult(NamedTuple):
    inserted: int
    updated: int


class CollectionBase:
    """What every backend's collection answers from its fixed settings and live count (``index.collection`` and
    ``index.milvus`` set ``_path``, ``_settings`` and ``_count``)."""

    _path: Path
    _settings: Manifest
    _count: int

    @property
    def path(self) -> Path:
        return self._path

    @property
    def n_bits(self) -> int:
        return self._settings.n_bits

    @property
    def n_bytes(self) -> int:
        return self._settings.n_bytes

    @property
    def fingerprint(self) -> str:
        return self._settings.fingerprint

    @property
    def model(self) -> str | None:
        """Name of the model the collection is bound to (its settings), without building a Manifest."""
        return self._settings.model

    @property
    def manifest(self) -> Manifest:
        return replace(self._settings, count=self._count)

    def __len__(self) -> int:
        return self._count


class Collection(CollectionBase):
    """Codes under string ids with JSON metadata; see the module docstring for how it stays durable.

    Metadata is stored as JSON, so what comes back is ``json.loads(json.dumps(m))``; ``None`` is stored as ``{}``.
    Use :meth:`create`, :meth:`open` or :meth:`open_or_create`, and :meth:`close` (or ``with``) when done.
    """

    backend = "faiss"

    def __init__(self, path: Path, settings: Manifest, store: Store, lock_fd: int, snapshot_every: int) -> None:
        self._path = path
        self._settings = settings
        self._store = store
        self._lock_fd = lock_fd
        self._snapshot_every = snapshot_every
        self._index: HammingIndex = make_hamming_index(settings.index_kind, settings.n_bits, settings.index_params)
        self._rw = RWLock()  # searches (read) vs applying a write to the index (write)
        self._write_mutex = threading.Lock()  # one write at a time: store commit + apply, in sequence order
        self._snapshot_mutex = threading.Lock()  # one snapshot or rebuild at a time; none prunes the store meanwhile
        self._snapshot_thread: threading.Thread | None = None  # the background snapshot or rebuild, if any
        self._applied_seq = 0
        self._snapshot_seq = -1
        self._count = 0
        self._changed_since_snapshot = 0
        self._closed = False

    # ---- construction -------------------------------------------------------------------------------------

    @classmethod
    def create(
        cls,
        path: str | os.PathLike[str],
        n_bits: int,
        fingerprint: str,
        index_kind: str = "flat",
        index_params: dict[str, int] | None = None,
        *,
        model: str | None = None,
        snapshot_every: int = SNAPSHOT_EVERY,
    ) -> Collection:
        """Create an empty collection at ``path`` (made if missing)."""
        path = Path(path)
        settings = Manifest(n_bits, fingerprint, index_kind, index_params or {}, model)
        if legacy.is_legacy(path):
            raise CollectionExistsError(f"a collection already exists at {path}")
        return cls._create(path, settings, snapshot_every)

    @classmethod
    def _create(cls, path: Path, settings: Manifest, snapshot_every: int) -> Collection:
        path.mkdir(parents=True, exist_ok=True)
        lock_fd = _lock(path)
        try:
            store = Store(path)
            if store.settings():  # an empty database is a creation that crashed half-way: finish it
                store.close()
                raise CollectionExistsError(f"a collection already exists at {path}")
            store.init_settings(settings.settings())
            snapshot.fsync_path(path, directory=True)  # the new database and WAL files' directory entries
            snapshot.write_manifest(path, settings.settings())
        except BaseException:
            os.close(lock_fd)
            raise
        LOG.info("created collection %s (%d bits, %s)", path, settings.n_bits, settings.index_kind)
        return cls(path, settings, store, lock_fd, snapshot_every)

    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str],
        expected_fingerprint: str | None = None,
        *,
        snapshot_every: int = SNAPSHOT_EVERY,
    ) -> Collection:
        """Open the collection at ``path``: load its newest valid snapshot and replay the writes after it."""
        path, start = Path(path), time.perf_counter()
        if legacy.is_legacy(path):  # format-1 files are retired only once a migration is complete
            return cls._migrate(path, expected_fingerprint, snapshot_every)
        if not (path / DB_FILE).exists():
            raise CollectionNotFoundError(f"no collection at {path} (no {DB_FILE})")
        lock_fd = _lock(path)
        try:
            store = Store(path)
            settings = _settings_from_store(store)
            if settings.backend != "faiss":
                store.close()
                raise CollectionError(f"{path} is a {settings.backend} collection: open it with index.open_collection")
            if expected_fingerprint is not None and expected_fingerprint != settings.fingerprint:
                raise FingerprintMismatchError(path, expected_fingerprint, settings.fingerprint)
            collection = cls(path, settings, store, lock_fd, snapshot_every)
            collection._recover()
        except BaseException:
            os.close(lock_fd)
            raise
        collection._changed(0)  # a replay may have left tombstones past the rebuild threshold
        LOG.info(
            "opened %s: %d items of %d bits in %.3fs",
            path,
            len(collection),
            settings.n_bits,
            time.perf_counter() - start,
        )
        return collection

    @classmethod
    def open_or_create(
        cls,
        path: str | os.PathLike[str],
        n_bits: int,
        fingerprint: str,
        index_kind: str = "flat",
        index_params: dict[str, int] | None = None,
        **kwargs: Any,
    ) -> Collection:
        """Open the collection at ``path`` if there is one (its bits and fingerprint must match), else create it."""
        path = Path(path)
        if not _exists(path):
            return cls.create(path, n_bits, fingerprint, index_kind, index_params, **kwargs)
        collection = cls.open(
            path, expected_fingerprint=fingerprint, **{k: v for k, v in kwargs.items() if k != "model"}
        )
        if collection.n_bits != n_bits:
            collection.close()
            raise CollectionExistsError(f"collection at {path} has n_bits={collection.n_bits}; asked for {n_bits}")
        return collection

    @classmethod
    def _migrate(cls, path: Path, expected_fingerprint: str | None, snapshot_every: int) -> Collection:
        """Copy a format-1 collection into a new store; the old files are renamed only once that is durable, so a
        crash part-way leaves them in place and the next open starts the migration again from scratch."""
        old = legacy.read(path)
        if expected_fingerprint is not None and expected_fingerprint != old.settings["fingerprint"]:
            raise FingerprintMismatchError(path, expected_fingerprint, old.settings["fingerprint"])
        LOG.warning("migrating %s from the format-1 layout (%d items)", path, len(old.ids))
        legacy.backup_manifest(path)
        for leftover in (DB_FILE, f"{DB_FILE}-wal", f"{DB_FILE}-shm"):  # an interrupted earlier attempt
            (path / leftover).unlink(missing_ok=True)
        s = old.settings
        settings = Manifest(s["n_bits"], s["fingerprint"], s["index_kind"], created_at=s["created_at"])
        collection = cls._create(path, settings, snapshot_every)
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

    # ---- properties (path, n_bits, n_bytes, fingerprint, model, manifest, len: see CollectionBase) --------

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

    def __repr__(self) -> str:
        return f"Collection(path={str(self._path)!r}, n_bits={self.n_bits}, count={len(self)})"

    # ---- writes -------------------------------------------------------------------------------------------

    def upsert(
        self,
        ids: Sequence[str],
        codes: np.ndarray,
        metadata: Sequence[dict | None] | None = None,
        *,
        progress: tuple[str, Any] | None = None,
    ) -> UpsertResult:
        """Insert or replace (code and metadata) items; durable on return. Input is validated before any change.

        ``progress=(key, value)``: also store that job-progress record (see :meth:`set_progress`) in the same
        SQLite transaction, so the items and the record of having written them commit together or not at all."""
        codes = check_codes(codes, self.n_bytes, "codes")
        ids = check_ids(ids, len(codes))
        return self._write(ids, codes, metadata_texts(metadata, len(ids)), progress)

    def progress(self, key: str) -> Any:
        """The progress record a bulk job stored under ``key`` (a JSON value), or None."""
        self._check_open()
        return self._store.settings().get(_progress_key(key))

    def set_progress(self, key: str, value: Any) -> None:
        """Durably store a bulk job's progress record (any JSON value) under ``key`` in the collection's database
        (the ``settings`` table, as ``job:<key>``); it does not change the items."""
        self._check_open()
        self._store.put_setting(_progress_key(key), value)

    def _write(
        self, ids: list[str], codes: np.ndarray, texts: list[str], progress: tuple[str, Any] | None = None
    ) -> UpsertResult:
        self._check_open()
        if not ids:
            if progress is not None:
                self.set_progress(*progress)
            return UpsertResult(0, 0)
        stored = None if progress is None else (_progress_key(progress[0]), progress[1])
        self._wait_for_rebuild()
        with self._write_mutex:
            written = self._store.upsert(ids, codes, texts, progress=stored)
            with self._rw.write():
                self._index.remove(written.removed)
                self._index.add(codes, written.added)
                self._applied_seq = written.seq
                self._count += len(ids) - len(written.removed)
            self._changed(len(ids))
        return UpsertResult(inserted=len(ids) - len(written.removed), updated=len(written.removed))

    def delete(self, ids: Sequence[str]) -> int:
        """Remove items; returns how many existed (unknown ids are ignored, an id with NUL or a lone surrogate is
        an error). Durable on return."""
        if isinstance(ids, (str, bytes)):
            raise InvalidItemsError("ids must be a sequence of strings, not a single string")
        wanted = [check_id(i) for i in dict.fromkeys(ids) if isinstance(i, str) and i]
        self._check_open()
        if not wanted:
            return 0
        self._wait_for_rebuild()
        with self._write_mutex:
            written = self._store.delete(wanted)
            with self._rw.write():
                self._index.remove(written.removed)
                self._applied_seq = written.seq
                self._count -= len(written.removed)
            self._changed(len(written.removed))
        return len(written.removed)

    # ---- reads --------------------------------------------------------------------------------------------

    def get(self, id: str) -> Item | None:
        """The item stored under ``id``, or None; an id with NUL or a lone surrogate is an error."""
        self._check_open()
        row = self._store.get(check_id(id)) if isinstance(id, str) and id else None
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
    ) -> list[list[Hit]]:
        """The ``k`` nearest items to each query, sorted by (distance, id); fewer if there are fewer items.

        ``where`` keeps only items whose metadata has each field equal to the value given; the result still holds
        ``k`` hits per query whenever ``k`` matching items exist (exact kinds; approximate kinds search deeper
        until they find them or exhaust what their index reaches). ``params`` are the index kind's query
        parameters. ``deadline`` (index.deadline) is checked between blocks of work: past it, SearchTimeoutError.
        """
        self._check_open()
        codes = check_codes(codes, self.n_bytes, "queries")
        if not is_int(k) or k < 1:
            raise InvalidQueryError(f"k must be a positive int, got {k!r}")
        where, qparams = check_filter(where), self._index.check_query_params(params)
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
    ) -> list[list[Hit]]:
        """Items within Hamming distance ``radius`` (inclusive) of each query, sorted by (distance, id).

        With ``k``, only the ``k`` nearest of them: a top-k search (:meth:`search`, filter included) whose hits
        beyond the radius are dropped, so the work grows with k, not with the items inside the radius. Among
        items tied at the k-th distance, which are kept is the top-k search's choice, as in :meth:`search`.
        """
        self._check_open()
        codes = check_codes(codes, self.n_bytes, "queries")
        if not is_int(radius) or radius < 0:
            raise InvalidQueryError(f"radius must be a non-negative int, got {radius!r}")
        if k is not None and (not is_int(k) or k < 1):
            raise InvalidQueryError(f"k must be a positive int or None, got {k!r}")
        where, qparams = check_filter(where), self._index.check_query_params(params)
        if not self._index.supports_range:
            raise InvalidQueryError(f"index kind {self._settings.index_kind!r} does not support radius search")
        radius = min(int(radius), self.n_bits)  # no distance exceeds n_bits
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

    def bucket(self, code: np.ndarray, *, include_metadata: bool = True) -> list[Hit]:
        """All items whose code equals ``code`` (uint8 (n_bytes,)), sorted by id."""
        if not isinstance(code, np.ndarray) or code.dtype != np.uint8 or code.shape != (self.n_bytes,):
            raise CodeLengthError(f"a code must be uint8 ({self.n_bytes},), got {describe(code)}")
        return self.range_search(code[None, :], 0, include_metadata=include_metadata)[0]

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
        """Exact search over the matching rows when at most FILTER_SCAN_MAX items match; else over-fetch through
        the index (:meth:`_overfetch`), and an exact scan of every matching row, chunk by chunk, for the queries
        that over-fetching within its bound leaves short of k hits."""
        rows = self._store.matching(where, FILTER_SCAN_MAX, deadline)
        if rows is not None:
            return self._scan(codes, k, [rows], include_metadata, radius, deadline)
        out, short = self._overfetch(codes, k, where, include_metadata, qparams, radius, deadline)
        if short.size:
            chunks = self._store.matching_chunks(where, deadline)
            scanned = self._scan(codes[short], k, chunks, include_metadata, radius, deadline)
            for i, hits in zip(short.tolist(), scanned, strict=True):
                out[i] = hits
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

    def save(self) -> None:
        """Every write is already durable; this takes a snapshot so the next open replays less."""
        self.snapshot()

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

    def close(self) -> None:
        """Snapshot if anything changed since the last one, then release the files. Idempotent."""
        if self._closed:
            return
        if self._snapshot_thread is not None:
            self._snapshot_thread.join()
        try:
            if self._applied_seq != self._snapshot_seq:
                self.snapshot()
        finally:
            self._closed = True
            self._store.close()
            os.close(self._lock_fd)

    def _check_open(self) -> None:
        if self._closed:
            raise CollectionNotFoundError(f"collection at {self._path} is closed")

    def __enter__(self) -> Collection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _progress_key(key: str) -> str:
    return f"job:{key}"


def _lock(path: Path) -> int:
    """An exclusive advisory lock on ``path/LOCK``, held while the collection is open (released on exit or crash)."""
    fd = os.open(path / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError as exc:
        os.close(fd)
        raise CollectionLockedError(f"collection at {path} is open in another process or object") from exc
    return fd


def _exists(path: Path) -> bool:
    if legacy.is_legacy(path):
        return True
    if not (path / DB_FILE).exists():
        return False
    lock_fd = _lock(path)
    try:
        store = Store(path)
        try:
            return bool(store.settings())
        finally:
            store.close()
    finally:
        os.close(lock_fd)


def _settings_from_store(store: Store) -> Manifest:
    raw = store.settings()
    if not raw:
        raise CollectionNotFoundError(f"no collection at {store.file.parent} (its creation did not finish)")
    try:
        values = {f.name: raw[f.name] for f in fields(Manifest) if f.name in raw and f.name != "count"}
        return Manifest(**values)
    except (TypeError, InvalidManifestError) as exc:
        raise CorruptCollectionError(store.file, f"settings are invalid: {exc}") from exc


def _same_settings(manifest: dict[str, Any], settings: Manifest) -> bool:
    keys = ("n_bits", "fingerprint", "index_kind", "index_params")
    return all(manifest.get(k) == getattr(settings, k) for k in keys)
