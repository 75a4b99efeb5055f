"""Storage and Hamming-distance search of packed binary codes; knows no model.

The names below are imported on first use (PEP 562), so that a light module of this package (``errors``,
``validation``: what the service's request schemas, and so ``hamdex.Client``, need) can be imported without
FAISS.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

_ERRORS = (
    "BackendUnavailableError",
    "CodeLengthError",
    "CollectionError",
    "CollectionExistsError",
    "CollectionLockedError",
    "CollectionNotFoundError",
    "CorruptCollectionError",
    "FingerprintMismatchError",
    "InvalidItemsError",
    "InvalidManifestError",
    "InvalidQueryError",
)
# public name -> module
_EXPORTS = {
    **{name: "backends" for name in ("AnyCollection", "create_collection", "open_collection")},
    "open_or_create_collection": "backends",
    **{name: "base" for name in ("BACKENDS", "CollectionLike", "Hit", "Item", "Manifest", "ScoredHit", "UpsertResult")},
    **{name: "collection" for name in ("SUPPORTED_INDEX_KINDS", "Collection")},
    **{name: "errors" for name in _ERRORS},
    "MilvusCollection": "milvus",
}
__all__ = [
    "AnyCollection",
    "BACKENDS",
    "BackendUnavailableError",
    "CodeLengthError",
    "Collection",
    "CollectionError",
    "CollectionExistsError",
    "CollectionLike",
    "CollectionLockedError",
    "CollectionNotFoundError",
    "CorruptCollectionError",
    "FingerprintMismatchError",
    "Hit",
    "InvalidItemsError",
    "InvalidManifestError",
    "InvalidQueryError",
    "Item",
    "Manifest",
    "MilvusCollection",
    "SUPPORTED_INDEX_KINDS",
    "ScoredHit",
    "UpsertResult",
    "create_collection",
    "open_collection",
    "open_or_create_collection",
]

if TYPE_CHECKING:
    from hamdex.index.backends import AnyCollection, create_collection, open_collection, open_or_create_collection
    from hamdex.index.base import BACKENDS, CollectionLike, Hit, Item, Manifest, ScoredHit, UpsertResult
    from hamdex.index.collection import SUPPORTED_INDEX_KINDS, Collection
    from hamdex.index.errors import (
        BackendUnavailableError,
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
    from hamdex.index.milvus import MilvusCollection


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'hamdex.index' has no attribute {name!r}")
    value = getattr(import_module(f"hamdex.index.{_EXPORTS[name]}"), name)
    globals()[name] = value  # once
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
