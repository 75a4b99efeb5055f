"""Crash points: make the server process SIGKILL itself at one exact step of index/, to check what a crash there
leaves: inside an upsert's SQLite transaction before COMMIT, right after the COMMIT, or in a background snapshot
(temp file written; snapshot renamed but manifest not yet replaced; manifest replaced but store not yet pruned).
Installed inside the server process (tests/crash/launchers.py), before the app starts."""

from __future__ import annotations

import os
import signal
import sys
import threading
from pathlib import Path

UPSERT_POINTS = {"upsert_before_commit": "absent", "upsert_after_commit": "applied"}  # point -> required outcome
SNAPSHOT_POINTS = ("snapshot_temp_written", "snapshot_before_manifest", "snapshot_before_prune")
CRASH_POINTS = (*UPSERT_POINTS, *SNAPSHOT_POINTS)


def _die(point: str) -> None:
    sys.stderr.write(f"crash point {point}: SIGKILL\n")
    sys.stderr.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def install_crash_point(point: str, at: int) -> None:
    """Wrap one step of index/ so that the process SIGKILLs itself there: in the first upsert of at least ``at``
    items (upsert points), or in the ``at``-th snapshot (snapshot points; at >= 2 leaves an older snapshot)."""
    from hamdex.index import snapshot
    from hamdex.index.store import Store

    seen = {"snapshots": 0}

    def nth_snapshot() -> bool:
        seen["snapshots"] += 1
        return seen["snapshots"] >= at

    if point == "upsert_before_commit":  # counters are the last statement of the transaction, before COMMIT
        upsert, set_counters, armed = Store.upsert, Store._set_counters, threading.local()

        def arming_upsert(self, ids, codes, metadata, **kwargs):
            armed.on = len(ids) >= at
            return upsert(self, ids, codes, metadata, **kwargs)

        def dying_set_counters(conn, seq, next_internal):
            set_counters(conn, seq, next_internal)
            if getattr(armed, "on", False):
                _die(point)

        Store.upsert, Store._set_counters = arming_upsert, staticmethod(dying_set_counters)
    elif point == "upsert_after_commit":  # committed, not yet applied to the index, no reply sent
        upsert = Store.upsert

        def dying_upsert(self, ids, codes, metadata, **kwargs):
            written = upsert(self, ids, codes, metadata, **kwargs)
            if len(ids) >= at:
                _die(point)
            return written

        Store.upsert = dying_upsert
    elif point == "snapshot_temp_written":  # the .npz temp file is written and fsynced, not renamed
        fsync_path = snapshot.fsync_path

        def dying_fsync(path, directory=False):
            fsync_path(path, directory)
            name = Path(path).name
            if not directory and name.startswith(".snapshot-") and name.endswith(".tmp") and nth_snapshot():
                _die(point)

        snapshot.fsync_path = dying_fsync
    elif point == "snapshot_before_manifest":  # the new snapshot file is in place, the manifest still the old one
        write_manifest = snapshot.write_manifest

        def dying_write_manifest(directory, manifest):
            if "snapshot" in manifest and nth_snapshot():  # not the manifest written at creation
                _die(point)
            write_manifest(directory, manifest)

        snapshot.write_manifest = dying_write_manifest
    elif point == "snapshot_before_prune":  # manifest points at the new snapshot; removed rows not yet pruned
        prune = Store.prune

        def dying_prune(self, upto_seq):
            if nth_snapshot():
                _die(point)
            return prune(self, upto_seq)

        Store.prune = dying_prune
    else:
        raise ValueError(f"unknown crash point {point!r}; one of {CRASH_POINTS}")
