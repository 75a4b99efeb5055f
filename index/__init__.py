"""Storage and Hamming-distance search of packed binary codes; knows no model."""

from index.collection import (
    SUPPORTED_INDEX_KINDS,
    Collection,
    Hit,
    Item,
    Manifest,
    UpsertResult,
)
from index.errors import (
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

__all__ = [
    "SUPPORTED_INDEX_KINDS",
    "CodeLengthError",
    "Collection",
    "CollectionError",
    "CollectionExistsError",
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
    "UpsertResult",
]
