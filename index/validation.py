"""Validation of what callers hand a collection: codes, ids, metadata, filters. All errors are typed."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np

from index.errors import CodeLengthError, InvalidItemsError, InvalidQueryError

Scalar = str | int | float | bool | None


def is_int(value: object) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def describe(value: object) -> str:
    if isinstance(value, np.ndarray):
        return f"{value.dtype} {value.shape}"
    return type(value).__name__


def check_ids(ids: Sequence[str], n: int) -> list[str]:
    if isinstance(ids, (str, bytes)):
        raise InvalidItemsError("ids must be a sequence of strings, not a single string")
    ids = list(ids)
    if len(ids) != n:
        raise InvalidItemsError(f"got {len(ids)} ids for {n} codes")
    for i, item_id in enumerate(ids):
        if not isinstance(item_id, str) or not item_id:
            raise InvalidItemsError(f"ids[{i}] must be a non-empty string, got {item_id!r}")
    if len(set(ids)) != n:
        duplicate = next(i for i, count in Counter(ids).items() if count > 1)
        raise InvalidItemsError(f"id {duplicate!r} appears more than once in one call")
    return ids


def metadata_texts(metadata: Sequence[dict | None] | None, n: int) -> list[str]:
    """Validate metadata and encode each dict as compact JSON text; None becomes {}."""
    if metadata is None:
        return ["{}"] * n
    if isinstance(metadata, (str, bytes, dict)) or len(metadata) != n:
        raise InvalidItemsError(f"metadata must be a sequence of {n} dicts or None")
    return [metadata_text(m, i) for i, m in enumerate(metadata)]


def metadata_text(meta: dict | None, i: int) -> str:
    if meta is None:
        return "{}"
    if not isinstance(meta, dict):
        raise InvalidItemsError(f"metadata[{i}] must be a dict or None, got {type(meta).__name__}")
    try:
        return json.dumps(meta, allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError) as exc:  # unserialisable value, NaN, circular reference
        raise InvalidItemsError(f"metadata[{i}] is not JSON-serialisable: {exc}") from exc


def check_codes(codes: object, n_bytes: int, what: str) -> np.ndarray:
    if not (
        isinstance(codes, np.ndarray) and codes.dtype == np.uint8 and codes.ndim == 2 and codes.shape[1] == n_bytes
    ):
        raise CodeLengthError(f"{what} must be uint8 (n, {n_bytes}) for {n_bytes * 8}-bit codes, got {describe(codes)}")
    return np.ascontiguousarray(codes)


def check_filter(where: object) -> dict[str, Scalar]:
    """Equality filter on top-level metadata fields: ``{field: value}``, values JSON scalars."""
    if where is None:
        return {}
    if not isinstance(where, dict):
        raise InvalidQueryError(f"a filter must be an object of field: value, got {type(where).__name__}")
    for key, value in where.items():
        if not isinstance(key, str) or not key:
            raise InvalidQueryError(f"filter fields must be non-empty strings, got {key!r}")
        if not isinstance(value, (str, int, float, bool, type(None))):
            raise InvalidQueryError(f"filter value of {key!r} must be a string, number, boolean or null")
    return dict(where)


def matches(metadata: dict[str, Any], where: dict[str, Scalar]) -> bool:
    """Every filter field present with an equal value; true is not 1 and "1" is not 1."""
    for key, want in where.items():
        if key not in metadata:
            return False
        have = metadata[key]
        if isinstance(have, bool) != isinstance(want, bool) or have != want:
            return False
    return True
