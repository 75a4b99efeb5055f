"""Validation of what callers hand a collection: codes, ids, metadata, filters. All errors are typed."""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Sequence

import numpy as np
from hamdex.index.errors import CodeLengthError, InvalidItemsError
from hamdex.index.filters import check_filter, matches  # noqa: F401  (re-exported)

Scalar = str | int | float | bool | None
# a collection or model name: one plain, visible path component (index.registry.check_name)
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


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
        check_id(item_id, f"ids[{i}]")
    if len(set(ids)) != n:
        duplicate = next(i for i, count in Counter(ids).items() if count > 1)
        raise InvalidItemsError(f"id {duplicate!r} appears more than once in one call")
    return ids


def check_id(item_id: object, what: str = "an id") -> str:
    """A non-empty string without NUL (SQLite's JSON and C string functions stop at it, so one id could match
    another) and without lone surrogates (not UTF-8: SQLite cannot store them)."""
    if not isinstance(item_id, str) or not item_id:
        raise InvalidItemsError(f"{what} must be a non-empty string, got {item_id!r}")
    if "\x00" in item_id or not _is_utf8(item_id):
        raise InvalidItemsError(f"{what} must not hold NUL or a lone surrogate, got {item_id!r}")
    return item_id


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
    problem = metadata_problem(meta)  # what would be stored but not read back the same (or circular: too deep)
    if problem is not None:
        raise InvalidItemsError(f"metadata[{i}] {problem}")
    try:
        return json.dumps(meta, allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError, RecursionError) as exc:  # unserialisable value, NaN
        raise InvalidItemsError(f"metadata[{i}] is not JSON-serialisable: {exc}") from exc


MAX_METADATA_DEPTH = 64  # nested objects / arrays; far deeper fails to serialise back (recursion limits: 500s)


def metadata_problem(meta: object, max_depth: int = MAX_METADATA_DEPTH) -> str | None:
    """Why ``meta`` would not read back as written (a lone surrogate in a key or string, nesting deeper than
    ``max_depth``), or None. Walks with a stack: a deep value cannot raise RecursionError here."""
    stack = [(meta, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, (dict, list, tuple)):
            if depth > max_depth:
                return f"nests deeper than {max_depth} levels"
            if isinstance(value, dict):
                for key in value:
                    if not isinstance(key, str):  # JSON would turn it into a string
                        return f"key {key!r} is not a string"
                    if not _is_utf8(key):
                        return f"key {key!r} holds a lone surrogate (not UTF-8)"
            stack.extend((v, depth + 1) for v in (value.values() if isinstance(value, dict) else value))
        elif isinstance(value, str) and not _is_utf8(value):
            return f"string {value[:40]!r} holds a lone surrogate (not UTF-8)"
    return None


def _is_utf8(text: str) -> bool:
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def check_codes(codes: object, n_bytes: int, what: str) -> np.ndarray:
    if not (
        isinstance(codes, np.ndarray) and codes.dtype == np.uint8 and codes.ndim == 2 and codes.shape[1] == n_bytes
    ):
        raise CodeLengthError(f"{what} must be uint8 (n, {n_bytes}) for {n_bytes * 8}-bit codes, got {describe(codes)}")
    return np.ascontiguousarray(codes)
