"""Named collections: one subdirectory of a root directory per name, opened on first use, cached, thread-safe.

A name is 1-64 characters of ``[A-Za-z0-9_.-]`` starting with a letter or digit, so it is always one plain,
visible path component. :meth:`Registry.create` builds a collection in a hidden temp directory and renames it into
place, and :meth:`Registry.drop` renames the directory to a hidden trash name before deleting it, so a crash in the
middle of either never leaves a half collection under a visible name; hidden leftovers are removed when a registry
takes the root. A collection that lives elsewhere (the service's default collection) can be :meth:`Registry.attach`-ed
under a name: the registry serves and closes it but never drops it.

Work on a collection goes through :meth:`Registry.use`, which holds the read side of that collection's
readers-writer lock; dropping or closing takes the write side, so it waits for the work in flight and no caller
ever sees a closed collection. One registry owns a root at a time (an advisory lock on ``.registry.lock``):
another one, in another process, can open the collections that are not open elsewhere (each collection has its
own lock) but cannot create or drop any, and leaves the hidden leftovers alone. A drop takes the collection's own
lock first, so a collection open in another process (a second server on the same root, an indexing job) is not
dropped: CollectionLockedError.
"""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from hamdex.index import legacy, snapshot
from hamdex.index.backends import create_collection, drop_data, open_collection
from hamdex.index.base import SNAPSHOT_EVERY, CollectionLike, Manifest, lock_folder
from hamdex.index.errors import (
    CollectionExistsError,
    CollectionLockedError,
    CollectionNotFoundError,
    CollectionProtectedError,
    InvalidCollectionNameError,
)
from hamdex.index.rwlock import RWLock
from hamdex.index.store import DB_FILE
from hamdex.index.validation import NAME_PATTERN

LOG = logging.getLogger(__name__)

_CREATING = ".creating-"  # prefix of a collection being built
_TRASH = ".trash-"  # prefix of a collection being deleted
ROOT_LOCK = ".registry.lock"

OnOpen = Callable[[str, CollectionLike], None]


def check_name(name: object) -> str:
    """``name`` if it is a valid collection name, else :class:`InvalidCollectionNameError`."""
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        raise InvalidCollectionNameError(
            f"a collection name is 1-64 letters, digits, '_', '.' or '-', starting with a letter or digit; got {name!r}"
        )
    return name


def is_collection(path: Path) -> bool:
    """Whether ``path`` holds a collection (current or format-1 layout), without opening it."""
    return (path / DB_FILE).is_file() or legacy.is_legacy(path)


def peek_fingerprint(path: str | os.PathLike[str]) -> str | None:
    """The model fingerprint in the collection's ``manifest.json``, read without opening (no lock, no replay);
    None when there is no readable manifest. The store stays the authority: :meth:`Collection.open` checks again."""
    manifest = snapshot.read_manifest(Path(path))
    found = manifest.get("fingerprint") if manifest else None
    return found if isinstance(found, str) else None


class Listed(NamedTuple):
    name: str
    manifest: Manifest | None  # None when the collection could not be opened
    error: Exception | None  # why it could not


@dataclass
class _Entry:
    collection: CollectionLike
    attached: bool = False
    gone: str | None = None  # "dropped" or "closed" once it must not be used any more
    lock: RWLock = field(default_factory=RWLock)


class Registry:
    """Collections under ``root`` by name (see the module docstring).

    ``on_open(name, collection)`` runs when a collection under the root is first opened (e.g. to check it against
    its model); if it raises, the collection is closed, not cached, and the error goes to the caller.
    """

    def __init__(
        self, root: str | os.PathLike[str], *, on_open: OnOpen | None = None, snapshot_every: int = SNAPSHOT_EVERY
    ) -> None:
        self.root = Path(root)
        self._on_open = on_open
        self._snapshot_every = snapshot_every
        self._lock = threading.Lock()  # guards the fields below; never held while waiting on a name lock
        self._entries: dict[str, _Entry] = {}
        self._name_locks: dict[str, threading.Lock] = {}
        self._closed = False
        self._root_fd: int | None = None  # the root's lock, once this registry owns the root
        if self.root.is_dir():
            with self._lock:
                self._claim_root()

    # ---- names --------------------------------------------------------------------------------------------

    def names(self) -> list[str]:
        """Every collection name, sorted: the directories under the root and the attached collections."""
        with self._lock:
            names = set(self._entries)
        if self.root.is_dir():
            names.update(p.name for p in self.root.iterdir() if NAME_PATTERN.fullmatch(p.name) and is_collection(p))
        return sorted(names)

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
            return False
        with self._lock:
            if name in self._entries:
                return True
        return is_collection(self.root / name)

    def is_attached(self, name: str) -> bool:
        with self._lock:
            entry = self._entries.get(name)
        return entry is not None and entry.attached

    # ---- access -------------------------------------------------------------------------------------------

    def get(self, name: str) -> CollectionLike:
        """The collection called ``name``, opened on first use. Prefer :meth:`use` where a drop may run meanwhile."""
        return self._entry(name).collection

    @contextmanager
    def use(self, name: str) -> Iterator[CollectionLike]:
        """The collection called ``name``, guaranteed open (not dropped or closed) until the block ends."""
        entry = self._entry(name)
        with entry.lock.read():
            if entry.gone is not None:
                raise CollectionNotFoundError(f"collection {name!r} was {entry.gone}")
            yield entry.collection

    def open_counts(self) -> dict[str, int]:
        """Live items of each collection open now (opens nothing; for metrics)."""
        with self._lock:
            entries = list(self._entries.items())
        return {name: len(entry.collection) for name, entry in entries if entry.gone is None}

    @contextmanager
    def try_use(self, name: str) -> Iterator[CollectionLike | None]:
        """Like :meth:`use`, but never waits: yields None unless ``name`` is open already and not being dropped
        (an event loop takes this fast path and falls back to :meth:`use` in a worker thread)."""
        with self._lock:
            entry = None if self._closed else self._entries.get(name)
        if entry is None or not entry.lock.try_acquire_read():
            yield None
            return
        try:
            yield None if entry.gone is not None else entry.collection
        finally:
            entry.lock.release_read()

    def list(self) -> list[Listed]:
        """Every collection with its manifest (opening those not open yet); one that fails to open is listed with
        its error instead, so one broken collection does not hide the others."""
        out = []
        for name in self.names():
            try:
                with self.use(name) as collection:
                    out.append(Listed(name, collection.manifest, None))
            except Exception as exc:  # reported per collection, not raised
                LOG.warning("collection %r cannot be opened: %s", name, exc)
                out.append(Listed(name, None, exc))
        return out

    def _entry(self, name: str) -> _Entry:
        check_name(name)
        with self._lock:
            self._check_open()
            entry = self._entries.get(name)
        if entry is not None:
            return entry
        path = self.root / name
        if not is_collection(path):  # checked before taking a name lock: unknown names leave nothing behind
            raise CollectionNotFoundError(f"no collection named {name!r}")
        with self._name_lock(name):
            with self._lock:
                self._check_open()
                entry = self._entries.get(name)
            if entry is not None:  # opened by another thread while this one waited
                return entry
            if not is_collection(path):  # dropped while this one waited
                raise CollectionNotFoundError(f"no collection named {name!r}")
            collection = open_collection(path, snapshot_every=self._snapshot_every)
            try:
                if self._on_open is not None:
                    self._on_open(name, collection)
            except BaseException:
                collection.close()
                raise
            return self._add(name, _Entry(collection))

    # ---- changes ------------------------------------------------------------------------------------------

    def create(
        self,
        name: str,
        n_bits: int,
        fingerprint: str,
        index_kind: str = "flat",
        index_params: dict[str, Any] | None = None,
        model: str | None = None,
        *,
        backend: str = "faiss",
        milvus_uri: str | None = None,
        vectors: str | None = None,
    ) -> CollectionLike:
        """A new empty collection called ``name``, open and cached. It appears under its name only once complete.
        ``backend``: "faiss" or "milvus" (``milvus_uri``: a server URL, or None for a milvus-lite file inside).
        ``vectors``: keep each item's vector too ("float16" or "int8", index.vectors)."""
        check_name(name)
        with self._name_lock(name):
            with self._lock:
                self._check_open()
                taken = name in self._entries
            path = self.root / name
            if taken or path.exists():
                raise CollectionExistsError(f"a collection named {name!r} already exists")
            self.root.mkdir(parents=True, exist_ok=True)
            self._own_root()
            tmp = self.root / f"{_CREATING}{name}.{uuid.uuid4().hex}"
            try:
                options = {"model": model, "backend": backend, "milvus_uri": milvus_uri}
                if vectors is not None:
                    options["vectors"] = vectors
                create_collection(tmp, n_bits, fingerprint, index_kind, index_params, **options).close()
                os.rename(tmp, path)
                snapshot.fsync_path(self.root, directory=True)
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
            LOG.info("created collection %r (%d bits, %s, %s, model %s)", name, n_bits, backend, index_kind, model)
            return self._add(name, _Entry(open_collection(path, snapshot_every=self._snapshot_every))).collection

    def attach(self, name: str, collection: CollectionLike) -> None:
        """Serve an already open collection that lives outside the root under ``name``. The registry closes it
        with the others but never drops it."""
        check_name(name)
        with self._name_lock(name):
            with self._lock:
                self._check_open()
                if name in self._entries:
                    raise CollectionExistsError(f"a collection named {name!r} is already open")
            if is_collection(self.root / name):
                LOG.warning("%s is hidden by the collection attached as %r", self.root / name, name)
            self._add(name, _Entry(collection, attached=True))

    def drop(self, name: str) -> None:
        """Close the collection (after the work in flight) and delete its directory. Attached ones refuse, and so
        does one open elsewhere (CollectionLockedError: another process, e.g. a second server or an indexing job,
        would go on acknowledging writes into deleted files)."""
        check_name(name)
        with self._name_lock(name):
            with self._lock:
                self._check_open()
                entry = self._entries.get(name)
            if entry is not None and entry.attached:
                raise CollectionProtectedError(
                    f"collection {name!r} lives at {entry.collection.path}, outside {self.root}: it cannot be dropped"
                )
            path = self.root / name
            if entry is None and not is_collection(path):
                raise CollectionNotFoundError(f"no collection named {name!r}")
            self._own_root()
            if entry is not None:
                with entry.lock.write():
                    entry.gone = "dropped"
                    with self._lock:
                        self._entries.pop(name, None)
                    entry.collection.close()
            lock_fd = lock_folder(path)  # held until the directory is out of sight: nobody opens it meanwhile
            try:
                drop_data(path)  # a Milvus server's collection; files in the directory go below
                trash = self.root / f"{_TRASH}{name}.{uuid.uuid4().hex}"
                os.rename(path, trash)
                snapshot.fsync_path(self.root, directory=True)
            finally:
                os.close(lock_fd)
            shutil.rmtree(trash)
            LOG.info("dropped collection %r", name)

    def close(self) -> None:
        """Close every open collection (each snapshots what changed), after the work in flight. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            entries = list(self._entries.items())
            self._entries.clear()
            if self._root_fd is not None:
                os.close(self._root_fd)
                self._root_fd = None
        first_error: BaseException | None = None
        for name, entry in entries:
            with entry.lock.write():
                entry.gone = "closed"
                try:
                    entry.collection.close()
                except Exception as exc:  # close the others anyway
                    LOG.exception("closing collection %r failed", name)
                    first_error = first_error or exc
        if first_error is not None:
            raise first_error

    def __enter__(self) -> Registry:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- internals ----------------------------------------------------------------------------------------

    def _name_lock(self, name: str) -> threading.Lock:
        with self._lock:
            return self._name_locks.setdefault(name, threading.Lock())

    def _add(self, name: str, entry: _Entry) -> _Entry:
        with self._lock:
            if not self._closed:
                self._entries[name] = entry
                return entry
        entry.collection.close()
        raise CollectionNotFoundError("the registry is closed")

    def _own_root(self) -> None:
        with self._lock:
            if not self._claim_root():
                raise CollectionLockedError(f"{self.root} is managed by another registry (another process)")

    def _claim_root(self) -> bool:
        """Take the root's lock (caller holds ``self._lock``) and clear leftovers; False if another registry has it."""
        if self._root_fd is not None:
            return True
        fd = os.open(self.root / ROOT_LOCK, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            LOG.warning(
                "%s is managed by another registry: this one can open collections, not create or drop", self.root
            )
            return False
        self._root_fd = fd
        self._remove_leftovers()
        return True

    def _check_open(self) -> None:
        if self._closed:
            raise CollectionNotFoundError("the registry is closed")

    def _remove_leftovers(self) -> None:
        """Hidden directories of a create or drop that a crash interrupted."""
        if not self.root.is_dir():
            return
        for path in self.root.iterdir():
            if path.name.startswith((_CREATING, _TRASH)) and path.is_dir():
                LOG.warning("removing %s, left by an interrupted create or drop", path)
                shutil.rmtree(path, ignore_errors=True)

    def __repr__(self) -> str:
        return f"Registry(root={str(self.root)!r}, open={sorted(self._entries)})"
