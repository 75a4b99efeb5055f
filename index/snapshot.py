"""Snapshots of a collection's FAISS index and the manifest that points at the current one.

A snapshot is one ``.npz`` file (the serialized index and its tombstones) named after the sequence number it
reflects. It is written to a temp file, fsynced and renamed; then ``manifest.json`` (settings, snapshot file, its
sequence number, SHA-256 and size) is replaced the same way, and only then are older snapshots deleted. A crash
at any point leaves either the old manifest and snapshot or the new ones. A snapshot whose checksum or content
does not match its manifest is reported and skipped: the collection then rebuilds its index from the store.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import uuid
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

LOG = logging.getLogger(__name__)

MANIFEST_FILE = "manifest.json"
SNAPSHOT_GLOB = "snapshot-*.npz"


class Snapshot(NamedTuple):
    seq: int
    arrays: dict[str, np.ndarray]


def atomic_write(path: Path, write: Callable[[str], object]) -> None:
    """``write(tmp)`` a temp file beside ``path``, fsync it, rename it over ``path``, fsync the directory."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        write(str(tmp))
        fsync_path(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_path(path.parent, directory=True)


def fsync_path(path: Path, directory: bool = False) -> None:
    fd = os.open(path, os.O_RDONLY | (getattr(os, "O_DIRECTORY", 0) if directory else 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _sha256(file: Path) -> str:
    digest = hashlib.sha256()
    with open(file, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def read_manifest(directory: Path) -> dict[str, Any] | None:
    """The manifest as a dict, or None when it is missing or unreadable (logged; the store has the settings)."""
    file = directory / MANIFEST_FILE
    if not file.exists():
        return None
    try:
        manifest = json.loads(file.read_text("utf-8"))
        if not isinstance(manifest, dict):
            raise ValueError("not a JSON object")
        return manifest
    except (OSError, ValueError) as exc:
        LOG.warning("ignoring unreadable %s (%s): the index will be rebuilt from the store", file, exc)
        return None


def write_manifest(directory: Path, manifest: dict[str, Any]) -> None:
    text = json.dumps(manifest, indent=2) + "\n"
    atomic_write(directory / MANIFEST_FILE, lambda tmp: Path(tmp).write_text(text, "utf-8"))


def write(directory: Path, seq: int, arrays: dict[str, np.ndarray], settings: dict[str, Any]) -> dict[str, Any]:
    """Write a snapshot at ``seq`` and point the manifest at it; returns the manifest's snapshot entry."""
    file = directory / f"snapshot-{seq:012d}.npz"
    atomic_write(file, lambda tmp: _save_npz(tmp, arrays))
    entry = {"file": file.name, "seq": seq, "sha256": _sha256(file), "bytes": file.stat().st_size}
    write_manifest(directory, {**settings, "snapshot": entry})
    for old in directory.glob(SNAPSHOT_GLOB):
        if old.name != file.name:
            old.unlink(missing_ok=True)
    return entry


def _save_npz(tmp: str, arrays: dict[str, np.ndarray]) -> None:
    with open(tmp, "wb") as f:  # a file object: np.savez would otherwise append .npz to the temp name
        np.savez(f, **arrays)


def read(directory: Path, manifest: dict[str, Any] | None) -> Snapshot | None:
    """The snapshot the manifest names, verified; None when there is none or it fails verification."""
    entry = (manifest or {}).get("snapshot")
    if not entry:
        return None
    try:
        file = directory / str(entry["file"])
        if file.parent != directory or not file.is_file():
            raise ValueError(f"{file.name} is missing")
        if _sha256(file) != entry["sha256"]:
            raise ValueError(f"{file.name} does not match its SHA-256 in the manifest")
        with np.load(file, allow_pickle=False) as npz:
            return Snapshot(int(entry["seq"]), {name: npz[name] for name in npz.files})
    except (KeyError, TypeError, ValueError, OSError, zipfile.BadZipFile) as exc:
        LOG.warning("ignoring snapshot in %s (%s): replaying the whole store instead", directory, exc)
        return None


def remove_temp_files(directory: Path) -> None:
    """Temp files left by a crash mid-write; never referenced by a manifest."""
    for tmp in directory.glob(".*.tmp"):
        tmp.unlink(missing_ok=True)
