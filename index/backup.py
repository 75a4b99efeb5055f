"""Online backups of a collection and their restore.

A backup is a folder ``<UTC time>-seq<seq>`` holding a copy of ``items.sqlite`` made with SQLite's online backup
API (one step: one read transaction of the source, so a consistent copy at one sequence number while writes go
on), a snapshot of the FAISS index with its ``manifest.json`` (index.snapshot's own format), and ``backup.json``
(the seq, the settings, each file's size and SHA-256). The index snapshot may be older than the database copy:
opening the restored folder replays the writes after it, as after a crash. What keeps the two consistent is that
no snapshot prunes the store while the copy is made (:meth:`index.collection.Collection.copy_into` holds the
snapshot mutex, not the write lock: writes and searches go on).

Crash safety: the folder is written as a hidden temp folder (``.tmp-*``, never listed), each file fsynced, and
renamed into place once complete, so a crash mid-backup leaves no half backup visible. A restore copies into a
hidden sibling of the target and renames it into place the same way.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import sqlite3
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from hamdex.index import snapshot
from hamdex.index.base import LOCK_FILE, CollectionLike, lock_folder
from hamdex.index.errors import (
    BackupNotFoundError,
    CollectionExistsError,
    CorruptBackupError,
    UnsupportedByBackendError,
)
from hamdex.index.store import DB_FILE

LOG = logging.getLogger(__name__)

RECORD = "backup.json"
TEMP_PREFIX = ".tmp-"


def copy_database(source: Path, dest: Path) -> int:
    """Copy the SQLite database ``source`` into the new file ``dest`` in one backup step (a consistent copy while
    other connections write); returns the copy's sequence number."""
    src = sqlite3.connect(source, timeout=30)
    dst = sqlite3.connect(dest)
    try:
        src.backup(dst)  # pages=-1: all pages in one step, under one read transaction of the source
        dst.execute("PRAGMA journal_mode=DELETE")  # one self-contained file
        (seq,) = dst.execute("SELECT value FROM settings WHERE key = 'seq'").fetchone()
    finally:
        dst.close()
        src.close()
    snapshot.fsync_path(dest)
    return int(seq)


def create(collection: CollectionLike, root: Path) -> dict[str, Any]:
    """Back ``collection`` up into a new folder under ``root``; returns its record (``name``, ``seq``, ...)."""
    copy_into = getattr(collection, "copy_into", None)
    if copy_into is None:
        raise UnsupportedByBackendError(f"a {collection.backend} collection cannot be backed up here")
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f"{TEMP_PREFIX}{uuid.uuid4().hex}"
    tmp.mkdir()
    start = time.perf_counter()
    try:
        seq = copy_into(tmp)
        now = datetime.now(UTC)
        name = f"{now:%Y%m%dT%H%M%S%fZ}-seq{seq:012d}"
        files = {p.name: {"bytes": p.stat().st_size, "sha256": _sha256(p)} for p in sorted(tmp.iterdir())}
        settings = collection.manifest.settings()
        record = {"name": name, "seq": seq, "created_at": now.isoformat(timespec="seconds"), "settings": settings}
        text = json.dumps({**record, "files": files}, indent=2) + "\n"
        snapshot.atomic_write(tmp / RECORD, lambda t: Path(t).write_text(text, "utf-8"))
        snapshot.fsync_path(tmp, directory=True)
        os.rename(tmp, root / name)
        snapshot.fsync_path(root, directory=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    LOG.info("backed up %s at seq %d into %s in %.3fs", collection.path, seq, root / name, time.perf_counter() - start)
    return {**record, "bytes": sum(f["bytes"] for f in files.values())}


def read_record(folder: Path, verify: bool = True) -> dict[str, Any]:
    """A backup's record; with ``verify``, every file it lists checked against its size and SHA-256."""
    file = folder / RECORD
    if not folder.is_dir() or not file.is_file():
        raise BackupNotFoundError(f"no backup at {folder} (no {RECORD})")
    try:
        record = json.loads(file.read_text("utf-8"))
        files = record["files"]
        int(record["seq"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CorruptBackupError(f"backup {folder}: {RECORD} is unreadable ({exc})") from None
    if DB_FILE not in files:
        raise CorruptBackupError(f"backup {folder} lists no {DB_FILE}")
    for name, entry in files.items() if verify else ():
        path = folder / name
        if not path.is_file() or path.stat().st_size != entry["bytes"] or _sha256(path) != entry["sha256"]:
            raise CorruptBackupError(f"backup {folder}: {name} is missing or does not match its SHA-256")
    record["bytes"] = sum(entry["bytes"] for entry in files.values())
    return record


def list_backups(root: Path) -> list[dict[str, Any]]:
    """The records of the complete backups under ``root``, oldest first (unverified: a listing reads no data)."""
    if not root.is_dir():
        return []
    out = []
    for folder in sorted(root.iterdir()):
        if folder.name.startswith(".") or not (folder / RECORD).is_file():
            continue
        try:
            out.append(read_record(folder, verify=False))
        except CorruptBackupError as exc:
            LOG.warning("skipping %s", exc)
    return out


def restore(folder: Path, target: Path, *, replace: bool = False) -> dict[str, Any]:
    """Restore the backup ``folder`` into the collection folder ``target``, which must not be open
    (CollectionLockedError) and must be empty or missing unless ``replace``. The backup is verified first; the
    files are copied into a hidden sibling of ``target`` and renamed into place."""
    record = read_record(folder)
    target = Path(target)
    lock_fd = None
    if target.exists() and any(target.iterdir()):
        if (target / LOCK_FILE).exists():
            lock_fd = lock_folder(target)  # refuses a collection open in a process
        if not replace:
            _unlock(lock_fd)
            raise CollectionExistsError(f"{target} is not empty; restore into a new folder, or pass replace")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".{target.name}.restore-{uuid.uuid4().hex}"
    old = target.parent / f".{target.name}.old-{uuid.uuid4().hex}"
    try:
        tmp.mkdir()
        for name in record["files"]:
            if name != RECORD:
                shutil.copy2(folder / name, tmp / name)
                snapshot.fsync_path(tmp / name)
        snapshot.fsync_path(tmp, directory=True)
        if target.exists():
            os.rename(target, old)
        os.rename(tmp, target)
        snapshot.fsync_path(target.parent, directory=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        _unlock(lock_fd)
    shutil.rmtree(old, ignore_errors=True)
    LOG.info("restored %s (seq %d) into %s", folder, record["seq"], target)
    return record


def _sha256(file: Path) -> str:
    digest = hashlib.sha256()
    with open(file, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _unlock(fd: int | None) -> None:
    if fd is not None:
        os.close(fd)
