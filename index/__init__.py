"""Storage and Hamming-distance search of packed binary codes; knows no model."""

from index.collection import (
    SUPPORTED_INDEX_KINDS,
    Collection,
    Hit,
    Item,
    Manifest,
    UpsertResult,
    make_index,
)
from index.errors import (
    CodeLengthError,
    CollectionError,
    CollectionExistsError,
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
    "make_index",
]
