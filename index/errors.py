"""Typed errors raised by :mod:`index`.

Each class carries a machine-readable ``error_type`` (snake_case); the service maps these to HTTP status codes
in one table, so the classes here say what went wrong and nothing about transport.
"""

from __future__ import annotations

from pathlib import Path


class CollectionError(Exception):
    """Base class of every error raised by a collection."""

    error_type: str = "collection_error"


class CodeLengthError(CollectionError, ValueError):
    """Codes have the wrong dtype, shape or number of bits for this collection."""

    error_type = "code_length"


class InvalidItemsError(CollectionError, ValueError):
    """Ids or metadata of an upsert/delete are malformed (empty or duplicate ids, non-JSON metadata...)."""

    error_type = "invalid_items"


class InvalidQueryError(CollectionError, ValueError):
    """A search parameter (k, radius) is out of range."""

    error_type = "invalid_query"


class TooManyIndexesError(CollectionError):
    """A payload index past the collection's limit: its indexes so far decide, not the request."""

    error_type = "too_many_indexes"


class InvalidManifestError(CollectionError, ValueError):
    """Collection settings are invalid (n_bits not a positive multiple of 8, unknown index kind...)."""

    error_type = "invalid_manifest"


class InvalidIndexParamsError(InvalidManifestError):
    """Index parameters outside what the index kind (FAISS) accepts, or that do not fit the code length."""

    error_type = "invalid_index_params"


class FingerprintMismatchError(CollectionError):
    """The collection was built with codes from a different model than the caller expects."""

    error_type = "fingerprint_mismatch"

    def __init__(self, path: Path, expected: str, found: str) -> None:
        super().__init__(
            f"collection at {path} holds codes of model fingerprint {found!r}, expected {expected!r}; "
            "re-index the data with the expected model or open it with the matching one"
        )
        self.path, self.expected, self.found = path, expected, found


class CollectionNotFoundError(CollectionError, FileNotFoundError):
    """No collection (no manifest) at the given path."""

    error_type = "collection_not_found"


class CollectionExistsError(CollectionError, FileExistsError):
    """A collection already exists where a new one was to be created (or exists with other settings)."""

    error_type = "collection_exists"


class CollectionLockedError(CollectionError):
    """The collection is open elsewhere (another process, or another object in this one)."""

    error_type = "collection_locked"


class CorruptCollectionError(CollectionError):
    """A collection file is unreadable or inconsistent with the others."""

    error_type = "corrupt_collection"

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"corrupt collection file {path}: {reason}")
        self.path, self.reason = path, reason


class InvalidCollectionNameError(CollectionError, ValueError):
    """A collection name that is not 1-64 of ``[A-Za-z0-9_.-]`` starting with a letter or digit."""

    error_type = "invalid_collection_name"


class CollectionProtectedError(CollectionError):
    """A registry cannot drop a collection it does not own (one attached from outside its root)."""

    error_type = "collection_protected"


class BackendUnavailableError(CollectionError):
    """A collection backend whose client library is not installed (e.g. pymilvus for ``backend="milvus"``)."""

    error_type = "backend_unavailable"


class SearchTimeoutError(CollectionError):
    """A search passed its deadline (or was cancelled) and stopped part-way (see index.deadline)."""

    error_type = "timeout"


class BackendUnreachableError(CollectionError):
    """A collection backend's server does not answer (e.g. a Milvus URI nobody listens on)."""

    error_type = "backend_unreachable"


class ImportFormatError(CollectionError, ValueError):
    """An export file (or import body) that is not one: no header, a bad line, a bad id, code or metadata."""

    error_type = "data_format"

    def __init__(self, message: str, error_type: str = "data_format") -> None:
        super().__init__(message)
        self.error_type = error_type  # data_format, bad_id, code_format or invalid_metadata


class UnsupportedByBackendError(CollectionError):
    """An operation the collection's backend does not offer (export or backup of a Milvus collection)."""

    error_type = "unsupported_by_backend"


class BackupNotFoundError(CollectionError, FileNotFoundError):
    """No backup (snapshot folder) at the path or name given."""

    error_type = "snapshot_not_found"


class CorruptBackupError(CollectionError):
    """A backup whose files are missing or do not match the checksums its record holds."""

    error_type = "corrupt_snapshot"
