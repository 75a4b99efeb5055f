"""What every collection backend shares: the types a collection speaks in (:class:`Manifest`, :class:`Hit`,
:class:`Item`, :class:`UpsertResult`), the folder lifecycle (:class:`CollectionBase`: lock the directory, open its
SQLite store, read and check the settings, close), the argument checks every backend makes before a read or a
write, and :class:`CollectionLike`, the interface the service relies on.

The lifecycle is written once here so that the backends (:mod:`index.collection`, SQLite + FAISS;
:mod:`index.milvus`) differ only where they keep their items. A backend provides ``_initialize`` (set up a new
collection before its settings commit), ``_load`` (bring an opened one up to date), ``_persist`` (what ``close``
saves) and ``_release`` (what ``close`` lets go of), and is built as ``cls(path, settings, store, lock_fd,
snapshot_every)``. A collection exists once its settings are in the store: a creation that crashed before that is
no collection, and the next creation at the same path finishes it.
"""

from __future__ import annotations

import fcntl
import logging
import os
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar, NamedTuple, Protocol, Self, runtime_checkable

import numpy as np
from hamdex.index import legacy, snapshot
from hamdex.index.deadline import Deadline
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
from hamdex.index.kinds import KINDS
from hamdex.index.store import DB_FILE, Store
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
from hamdex.index.vectors import VECTOR_DTYPES

LOG = logging.getLogger(__name__)

FORMAT_VERSION = 2
LOCK_FILE = "LOCK"
BACKENDS = ("faiss", "milvus")  # where a collection keeps its items: SQLite + FAISS (index.collection) or Milvus
SNAPSHOT_EVERY = 100_000  # changed items between automatic background snapshots


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
    backend: str = "faiss"  # "faiss" (index.collection) or "milvus" (index.milvus)
    milvus_uri: str | None = None  # backend "milvus": a server URL, or None for a milvus-lite file in the directory
    vectors: str | None = None  # keep each item's vector too (index.vectors): "float16", "int8", or None
    vector_dim: int | None = None  # their dimension: fixed by the first upsert that gives vectors

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
        if self.vectors is not None and self.vectors not in VECTOR_DTYPES:
            raise InvalidManifestError(f"vectors must be one of {list(VECTOR_DTYPES)} or null, got {self.vectors!r}")
        if self.vector_dim is not None and (not is_int(self.vector_dim) or self.vector_dim < 1 or not self.vectors):
            raise InvalidManifestError(f"vector_dim is null or a positive int, with vectors; got {self.vector_dim!r}")

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


class ScoredHit(NamedTuple):
    """A hit of a reranked search (two-stage ranking: see Collection.search's ``rerank``)."""

    id: str
    distance: int  # Hamming distance to the query
    metadata: dict | None
    score: float | None  # cosine with the stored vector, or the asymmetric score; None: ranked by Hamming distance


class Item(NamedTuple):
    id: str
    code: np.ndarray  # uint8 (n_bytes,)
    metadata: dict


class UpsertResult(NamedTuple):
    inserted: int
    updated: int


# ---- the folder: lock, store, settings ----------------------------------------------------------------------


def lock_folder(path: Path) -> int:
    """An exclusive advisory lock on ``path/LOCK``, held while the collection is open (released on exit or crash)."""
    fd = os.open(path / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError as exc:
        os.close(fd)
        raise CollectionLockedError(f"collection at {path} is open in another process or object") from exc
    return fd


@contextmanager
def _held(path: Path) -> Iterator[tuple[int, Store]]:
    """The folder's lock and store, both released if the body raises (else the collection built in it owns them)."""
    lock_fd = lock_folder(path)
    store = None
    try:
        store = Store(path)
        yield lock_fd, store
    except BaseException:
        if store is not None:
            store.close()
        os.close(lock_fd)
        raise


def collection_exists(path: Path) -> bool:
    """Whether ``path`` holds a collection of any backend (a format-1 one included) whose creation finished."""
    if legacy.is_legacy(path):
        return True
    if not (path / DB_FILE).exists():
        return False
    lock_fd = lock_folder(path)  # a collection open elsewhere is one: CollectionLockedError, not a guess
    try:
        store = Store(path)
        try:
            return bool(store.settings())
        finally:
            store.close()
    finally:
        os.close(lock_fd)


def settings_from_store(store: Store) -> Manifest:
    """The settings a collection's creation stored; CollectionNotFoundError if it never finished."""
    raw = store.settings()
    if not raw:
        raise CollectionNotFoundError(f"no collection at {store.file.parent} (its creation did not finish)")
    try:
        values = {f.name: raw[f.name] for f in fields(Manifest) if f.name in raw and f.name != "count"}
        return Manifest(**values)
    except (TypeError, InvalidManifestError) as exc:
        raise CorruptCollectionError(store.file, f"settings are invalid: {exc}") from exc


def check_fingerprint(path: Path, expected: str | None, found: str) -> None:
    if expected is not None and expected != found:
        raise FingerprintMismatchError(path, expected, found)


def progress_key(key: str) -> str:
    """Where a bulk job's progress record lives among the store's settings."""
    return f"job:{key}"


# ---- the base class -------------------------------------------------------------------------------------------


class CollectionBase(ABC):
    """The lifecycle and the argument checks every backend shares; see the module docstring for what a backend
    adds. Use :meth:`create`, :meth:`open` or :meth:`open_or_create`, and :meth:`close` (or ``with``) when done."""

    backend: ClassVar[str]  # the manifest's "backend"
    # each backend's own, with the signatures CollectionLike gives them (bucket and save use them)
    range_search: Callable[..., list[list[Hit]]]
    snapshot: Callable[[], int]

    def __init__(self, path: Path, settings: Manifest, store: Store, lock_fd: int, snapshot_every: int) -> None:
        self._path = path
        self._settings = settings
        self._store = store
        self._lock_fd = lock_fd
        self._snapshot_every = snapshot_every
        self._count = 0
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
        **backend_settings: Any,
    ) -> Self:
        """Create an empty collection at ``path`` (made if missing); ``backend_settings`` are the backend's own
        manifest fields (milvus: ``milvus_uri``)."""
        path = Path(path)
        settings = Manifest(
            n_bits, fingerprint, index_kind, index_params or {}, model, backend=cls.backend, **backend_settings
        )
        cls._check_new(path, settings)
        return cls._create_at(path, settings, snapshot_every)

    @classmethod
    def _create_at(cls, path: Path, settings: Manifest, snapshot_every: int) -> Self:
        path.mkdir(parents=True, exist_ok=True)
        with _held(path) as (lock_fd, store):
            if store.settings():  # an empty database is a creation that crashed half-way: finish it
                raise CollectionExistsError(f"a collection already exists at {path}")
            collection = cls(path, settings, store, lock_fd, snapshot_every)
        try:
            own = collection._initialize()
            store.init_settings({**settings.settings(), **own})  # from here on the collection exists
            snapshot.fsync_path(path, directory=True)  # the new database and WAL files' directory entries
            snapshot.write_manifest(path, settings.settings())
        except BaseException:
            collection._discard()
            raise
        LOG.info("created %s collection %s (%d bits, %s)", cls.backend, path, settings.n_bits, settings.index_kind)
        return collection

    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str],
        expected_fingerprint: str | None = None,
        *,
        snapshot_every: int = SNAPSHOT_EVERY,
    ) -> Self:
        """Open the collection at ``path`` and bring it up to date (see the backend's ``_load``)."""
        path, start = Path(path), time.perf_counter()
        if not (path / DB_FILE).exists():
            raise CollectionNotFoundError(f"no collection at {path} (no {DB_FILE})")
        with _held(path) as (lock_fd, store):
            settings = settings_from_store(store)
            if settings.backend != cls.backend:
                raise CollectionError(f"{path} is a {settings.backend} collection: open it with index.open_collection")
            check_fingerprint(path, expected_fingerprint, settings.fingerprint)
            collection = cls(path, settings, store, lock_fd, snapshot_every)
        try:
            collection._load()
        except BaseException:
            collection._discard()
            raise
        elapsed = time.perf_counter() - start
        LOG.info(
            "opened %s (%s): %d items of %d bits in %.3fs", path, cls.backend, len(collection), settings.n_bits, elapsed
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
        *,
        snapshot_every: int = SNAPSHOT_EVERY,
        **create_options: Any,
    ) -> Self:
        """Open the collection at ``path`` if there is one (its bits and fingerprint must match), else create it;
        ``create_options`` (``model``, the backend's own settings) apply to a new collection only."""
        path = Path(path)
        if not collection_exists(path):
            return cls.create(
                path, n_bits, fingerprint, index_kind, index_params, snapshot_every=snapshot_every, **create_options
            )
        collection = cls.open(path, fingerprint, snapshot_every=snapshot_every)
        if collection.n_bits != n_bits:
            collection.close()
            raise CollectionExistsError(f"collection at {path} has n_bits={collection.n_bits}; asked for {n_bits}")
        return collection

    # ---- what a backend provides --------------------------------------------------------------------------

    @classmethod
    @abstractmethod
    def _check_new(cls, path: Path, settings: Manifest) -> None:
        """Refuse settings or a path this backend cannot create a collection with."""

    def _initialize(self) -> dict[str, Any]:
        """Set up a new collection before its settings commit; returns settings of the backend's own to store."""
        return {}

    @abstractmethod
    def _load(self) -> None:
        """Bring an opened collection up to date (its items, its live count)."""

    @abstractmethod
    def _persist(self) -> None:
        """Save what ``close`` must not lose."""

    def _release(self) -> None:
        """Let go of what an open collection holds: the backend's own resources first, then the folder."""
        self._store.close()
        os.close(self._lock_fd)

    # ---- properties ---------------------------------------------------------------------------------------

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

    # scroll, count_matching and delete_where: both backends have their own (index.collection, index.milvus), with
    # one semantics; these refusals are for a backend that does not
    def scroll(self, after: int = -1, limit: int = 100, where=None, deadline=None) -> tuple[list[Item], int | None]:
        raise InvalidQueryError(f"backend {self.backend!r} cannot list its items yet")

    def count_matching(self, where=None, deadline=None) -> int:
        raise InvalidQueryError(f"backend {self.backend!r} cannot count items by filter yet")

    def delete_where(self, where, deadline=None, chunk: int = 1000) -> tuple[int, bool]:
        raise InvalidQueryError(f"backend {self.backend!r} cannot delete items by filter yet")

    def indexed_fields(self) -> list[str]:
        """Metadata fields with a payload index (see :meth:`index_fields`)."""
        return self._store.indexed_fields()

    def index_fields(self, names: Sequence[str]) -> list[str]:
        """Declare payload indexes on top-level metadata fields, durably (an SQLite expression index each, which
        filters on them use); returns every indexed field. Building one reads every live row once."""
        return self._store.index_fields(names)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(path={str(self._path)!r}, n_bits={self.n_bits}, count={len(self)})"

    # ---- checks every read and write starts with ----------------------------------------------------------

    def _valid_items(
        self, ids: Sequence[str], codes: np.ndarray, metadata: Sequence[dict | None] | None
    ) -> tuple[list[str], np.ndarray, list[str]]:
        """An upsert's (ids, codes uint8 (n, n_bytes), metadata as JSON texts), all checked before any change."""
        codes = check_codes(codes, self.n_bytes, "codes")
        ids = check_ids(ids, len(codes))
        return ids, codes, metadata_texts(metadata, len(ids))

    def _valid_deletes(self, ids: Sequence[str]) -> list[str]:
        """A delete's ids, once each; ids no item can have (not a string, empty) are dropped, not an error."""
        if isinstance(ids, (str, bytes)):
            raise InvalidItemsError("ids must be a sequence of strings, not a single string")
        wanted = [check_id(i) for i in dict.fromkeys(ids) if isinstance(i, str) and i]
        self._check_open()
        return wanted

    def _valid_id(self, item_id: object) -> str | None:
        """A get's id, or None where no item can have it; an id with NUL or a lone surrogate is an error."""
        self._check_open()
        return check_id(item_id) if isinstance(item_id, str) and item_id else None

    def _valid_search(
        self, codes: np.ndarray, k: int, where: dict[str, Scalar] | None, params: dict[str, int] | None
    ) -> tuple[np.ndarray, dict[str, Scalar], dict[str, int]]:
        """A top-k search's (queries, filter, query parameters)."""
        self._check_open()
        codes = check_codes(codes, self.n_bytes, "queries")
        if not is_int(k) or k < 1:
            raise InvalidQueryError(f"k must be a positive int, got {k!r}")
        return codes, check_filter(where), self._check_params(params)

    def _valid_range(
        self,
        codes: np.ndarray,
        radius: int,
        k: int | None,
        where: dict[str, Scalar] | None,
        params: dict[str, int] | None,
    ) -> tuple[np.ndarray, int, dict[str, Scalar], dict[str, int]]:
        """A radius search's (queries, radius, filter, query parameters); the radius capped at n_bits, which no
        distance exceeds."""
        self._check_open()
        codes = check_codes(codes, self.n_bytes, "queries")
        if not is_int(radius) or radius < 0:
            raise InvalidQueryError(f"radius must be a non-negative int, got {radius!r}")
        if k is not None and (not is_int(k) or k < 1):
            raise InvalidQueryError(f"k must be a positive int or None, got {k!r}")
        where, params = check_filter(where), self._check_params(params)
        return codes, min(int(radius), self.n_bits), where, params

    @abstractmethod
    def _check_params(self, params: dict[str, int] | None) -> dict[str, int]:
        """The index kind's query parameters, checked by the backend."""

    # ---- shared reads and writes --------------------------------------------------------------------------

    def bucket(self, code: np.ndarray, *, include_metadata: bool = True) -> list[Hit]:
        """All items whose code equals ``code`` (uint8 (n_bytes,)), sorted by id."""
        if not isinstance(code, np.ndarray) or code.dtype != np.uint8 or code.shape != (self.n_bytes,):
            raise CodeLengthError(f"a code must be uint8 ({self.n_bytes},), got {describe(code)}")
        return self.range_search(code[None, :], 0, include_metadata=include_metadata)[0]

    def progress(self, key: str) -> Any:
        """The progress record a bulk job stored under ``key`` (a JSON value), or None."""
        self._check_open()
        return self._store.settings().get(progress_key(key))

    def set_progress(self, key: str, value: Any) -> None:
        """Durably store a bulk job's progress record (any JSON value) under ``key`` in the collection's database
        (the ``settings`` table of ``items.sqlite``, as ``job:<key>``); it does not change the items."""
        self._check_open()
        self._store.put_setting(progress_key(key), value)

    # ---- closing ------------------------------------------------------------------------------------------

    def save(self) -> None:
        """Every write is already stored; this persists what the backend holds in memory (:meth:`snapshot`)."""
        self.snapshot()

    def close(self) -> None:
        """Persist what the backend holds in memory, then release the directory. Idempotent."""
        if self._closed:
            return
        try:
            self._persist()
        finally:
            self._discard()

    def _discard(self) -> None:
        """Close without persisting anything: a collection whose creation or opening failed."""
        self._closed = True
        self._release()

    def _check_open(self) -> None:
        if self._closed:
            raise CollectionNotFoundError(f"collection at {self._path} is closed")

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@runtime_checkable
class CollectionLike(Protocol):
    """The interface the service and the registry use, whichever backend holds the collection."""

    backend: ClassVar[str]

    @property
    def path(self) -> Path: ...
    @property
    def n_bits(self) -> int: ...
    @property
    def n_bytes(self) -> int: ...
    @property
    def fingerprint(self) -> str: ...
    @property
    def model(self) -> str | None: ...
    @property
    def manifest(self) -> Manifest: ...
    def __len__(self) -> int: ...
    def __contains__(self, item_id: object) -> bool: ...
    def ids(self) -> list[str]: ...
    def get(self, id: str) -> Item | None: ...
    def upsert(
        self,
        ids: Sequence[str],
        codes: np.ndarray,
        metadata: Sequence[dict | None] | None = None,
        *,
        progress: tuple[str, Any] | None = None,
        vectors: np.ndarray | None = None,
    ) -> UpsertResult: ...
    def delete(self, ids: Sequence[str]) -> int: ...
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
    ) -> list[list[Hit]] | list[list[ScoredHit]]: ...
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
    ) -> list[list[Hit]] | list[list[ScoredHit]]: ...
    def bucket(self, code: np.ndarray, *, include_metadata: bool = True) -> list[Hit]: ...
    def scroll(
        self, after: int = -1, limit: int = 100, where: dict[str, Any] | None = None, deadline: Deadline | None = None
    ) -> tuple[list[Item], int | None]: ...
    def count_matching(self, where: dict[str, Any] | None = None, deadline: Deadline | None = None) -> int: ...
    def delete_where(
        self, where: dict[str, Any] | None, deadline: Deadline | None = None, chunk: int = 1000
    ) -> tuple[int, bool]: ...
    def progress(self, key: str) -> Any: ...
    def set_progress(self, key: str, value: Any) -> None: ...
    def snapshot(self) -> int: ...
    def save(self) -> None: ...
    def close(self) -> None: ...
    def __enter__(self) -> Self: ...
    def __exit__(self, *exc: object) -> None: ...
