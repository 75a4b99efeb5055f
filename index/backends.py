"""Which backend holds a collection, chosen per collection when it is created: ``faiss``
(:class:`index.collection.Collection`: SQLite + a FAISS index) or ``milvus`` (:class:`index.milvus.MilvusCollection`).
Both have the same interface; the functions here open, create or drop either by what its manifest says."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from hamdex.index import snapshot
from hamdex.index.base import SNAPSHOT_EVERY, CollectionLike, collection_exists
from hamdex.index.collection import Collection
from hamdex.index.errors import InvalidManifestError
from hamdex.index.milvus import MilvusCollection, destroy

AnyCollection = CollectionLike  # the older name, kept for callers that import it


def backend_of(path: str | os.PathLike[str]) -> str:
    """The backend named in the collection's ``manifest.json``; ``faiss`` when it names none (older collections).
    A FAISS collection whose manifest is lost still opens; :meth:`Collection.open` refuses a Milvus one."""
    manifest = snapshot.read_manifest(Path(path))
    backend = manifest.get("backend", "faiss") if manifest else "faiss"
    return backend if isinstance(backend, str) else "faiss"


def _class(backend: str) -> type[Collection] | type[MilvusCollection]:
    if backend == "faiss":
        return Collection
    if backend == "milvus":
        return MilvusCollection
    raise InvalidManifestError(f"backend must be 'faiss' or 'milvus', got {backend!r}")


def open_collection(
    path: str | os.PathLike[str], expected_fingerprint: str | None = None, *, snapshot_every: int = SNAPSHOT_EVERY
) -> CollectionLike:
    """Open the collection at ``path`` with the backend that holds it."""
    return _class(backend_of(path)).open(path, expected_fingerprint, snapshot_every=snapshot_every)


def create_collection(
    path: str | os.PathLike[str],
    n_bits: int,
    fingerprint: str,
    index_kind: str = "flat",
    index_params: dict[str, int] | None = None,
    *,
    backend: str = "faiss",
    milvus_uri: str | None = None,
    **kwargs: Any,
) -> CollectionLike:
    """A new empty collection at ``path``; ``milvus_uri`` (backend milvus): a server URL, or None for a
    milvus-lite file in the directory."""
    if backend == "milvus":
        milvus = MilvusCollection.create
        return milvus(path, n_bits, fingerprint, index_kind, index_params, milvus_uri=milvus_uri, **kwargs)
    if milvus_uri is not None:
        raise InvalidManifestError(f"milvus_uri is for backend 'milvus', not {backend!r}")
    return _class(backend).create(path, n_bits, fingerprint, index_kind, index_params, **kwargs)


def open_or_create_collection(
    path: str | os.PathLike[str],
    n_bits: int,
    fingerprint: str,
    index_kind: str = "flat",
    *,
    backend: str = "faiss",
    milvus_uri: str | None = None,
    **kwargs: Any,
) -> CollectionLike:
    """Open the collection at ``path`` whatever its backend (bits and fingerprint must match), else create it with
    ``backend`` and ``milvus_uri``; ``kwargs`` as for ``Collection.open_or_create``."""
    exists = collection_exists(Path(path))
    if (backend_of(path) if exists else backend) == "milvus":
        milvus = MilvusCollection.open_or_create
        return milvus(path, n_bits, fingerprint, index_kind, milvus_uri=milvus_uri, **kwargs)
    if not exists:
        _class(backend)  # an unknown backend is an error
        if milvus_uri is not None:
            raise InvalidManifestError(f"milvus_uri is for backend 'milvus', not {backend!r}")
    return Collection.open_or_create(path, n_bits, fingerprint, index_kind, **kwargs)


def drop_data(path: str | os.PathLike[str]) -> None:
    """What a collection keeps outside its directory (a Milvus server's collection); call it once it is closed."""
    if backend_of(path) == "milvus":
        destroy(path)
