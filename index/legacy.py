"""Reading collections in the first on-disk layout (format 1), so that :class:`Collection` can migrate them.

Format 1 kept ``index.faiss`` (an ``IndexBinaryIDMap2``), ``items.jsonl`` (id, internal id, metadata per line)
and ``manifest.json`` (``format_version`` 1), rewritten whole on every save.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, NamedTuple

import faiss
import numpy as np
from hamdex.index.errors import CorruptCollectionError

INDEX_FILE = "index.faiss"
ITEMS_FILE = "items.jsonl"
MANIFEST_FILE = "manifest.json"


class LegacyCollection(NamedTuple):
    settings: dict[str, Any]  # n_bits, fingerprint, index_kind, created_at
    ids: list[str]
    codes: np.ndarray  # uint8 (n, n_bits // 8)
    metadata: list[str]  # compact JSON


def is_legacy(directory: Path) -> bool:
    return (directory / ITEMS_FILE).is_file() and (directory / INDEX_FILE).is_file()


def read(directory: Path) -> LegacyCollection:
    """Every item of a format-1 collection; any inconsistency is a CorruptCollectionError naming the file."""
    manifest_file = directory / MANIFEST_FILE
    try:
        manifest = json.loads(manifest_file.read_text("utf-8"))
        settings = {k: manifest[k] for k in ("n_bits", "fingerprint", "index_kind", "created_at")}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CorruptCollectionError(manifest_file, f"not a format-1 manifest: {exc}") from exc
    index_file = directory / INDEX_FILE
    try:
        index = faiss.read_index_binary(str(index_file))
    except RuntimeError as exc:
        raise CorruptCollectionError(index_file, f"FAISS cannot read it: {exc}") from exc
    items_file = directory / ITEMS_FILE
    ids, internals, metadata = [], [], []
    try:
        lines = items_file.read_text("utf-8").splitlines()
    except (OSError, ValueError) as exc:
        raise CorruptCollectionError(items_file, str(exc)) from exc
    for line_no, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            ids.append(str(row["id"]))
            internals.append(int(row["internal_id"]))
            metadata.append(json.dumps(row["metadata"], separators=(",", ":")))
        except (ValueError, KeyError, TypeError) as exc:
            raise CorruptCollectionError(items_file, f"line {line_no}: {exc}") from exc
    try:
        codes = np.stack([index.reconstruct(i) for i in internals]) if internals else np.zeros((0, 0), np.uint8)
    except RuntimeError as exc:
        raise CorruptCollectionError(index_file, f"does not hold every id of {ITEMS_FILE}: {exc}") from exc
    return LegacyCollection(settings, ids, codes, metadata)


def backup_manifest(directory: Path) -> None:
    """Keep the format-1 manifest beside the new one (copied, so a crash before retire() keeps the original)."""
    backup = directory / f"{MANIFEST_FILE}.format1"
    if not backup.exists() and (directory / MANIFEST_FILE).exists():
        backup.write_bytes((directory / MANIFEST_FILE).read_bytes())


def retire(directory: Path) -> None:
    """Rename the format-1 files once their items are in the new store (kept, not deleted)."""
    for name in (INDEX_FILE, ITEMS_FILE):
        (directory / name).rename(directory / f"{name}.format1")
