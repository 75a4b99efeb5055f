"""Storage and Hamming-distance search of packed binary codes; knows no model."""

from hamdex.index.backends import AnyCollection, create_collection, open_collection, open_or_create_collection
from hamdex.index.base import BACKENDS, CollectionLike, Hit, Item, Manifest, UpsertResult
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

__all__ = [
    "BACKENDS",
    "SUPPORTED_INDEX_KINDS",
    "AnyCollection",
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
    "UpsertResult",
    "create_collection",
    "open_collection",
    "open_or_create_collection",
]
