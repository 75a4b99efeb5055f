"""Crash recovery: damaged snapshots and manifests, leftover temp files, replay after a crash, pruning, a corrupt
database, a torn WAL tail. Each case checks the exact content after the reopen, not only that it opened.

A crash is a child process that kills itself with SIGKILL right after its writes returned (or at a chosen point
inside a snapshot), so nothing of ``close()`` runs and the WAL is left as a crash leaves it.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import numpy as np
import pytest
from hamdex.index import Collection, CollectionNotFoundError, CorruptCollectionError

from tests.test_collection import FP, REPO, check_hits, check_search, content

N_BITS = 64
EXHAUSTIVE = {"hnsw": {"ef_search": 512}}

CHILD_HEADER = """
import os, signal, sys
import faiss
import numpy as np
from hamdex.index import Collection
faiss.omp_set_num_threads(1)
path = sys.argv[1]

def codes(seed, n):
    return np.random.default_rng(seed).integers(0, 256, (n, 8), dtype=np.uint8)

def crash():
    sys.stdout.flush()
    os.kill(os.getpid(), signal.SIGKILL)
"""


def codes(seed: int, n: int) -> np.ndarray:
    """The same codes as the child's ``codes``."""
    return np.random.default_rng(seed).integers(0, 256, (n, 8), dtype=np.uint8)


def crash_after(path: Path, body: str) -> str:
    """Run ``body`` in a child that ends by SIGKILL (its ``crash()``); returns its stdout."""
    script = CHILD_HEADER + textwrap.dedent(body) + "\ncrash()\n"
    proc = subprocess.run([sys.executable, "-c", script, str(path)], cwd=REPO, capture_output=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-3000:]
    return proc.stdout.decode()


def as_state(expected: dict[str, tuple[bytes, dict]]) -> dict[str, np.ndarray]:
    return {i: np.frombuffer(code, np.uint8) for i, (code, _) in expected.items()}


def assert_content(
    coll: Collection, expected: dict[str, tuple[bytes, dict]], exact: bool = True, params: dict | None = None
) -> None:
    """Exactly these items (ids, codes, metadata), and the index agrees: searches find each at its distance."""
    assert content(coll) == expected and len(coll) == len(expected) == coll.manifest.count
    state = as_state(expected)
    queries = np.concatenate([np.stack(list(state.values())[:: max(1, len(state) // 20)]), codes(98, 5)])
    if exact:
        check_search(coll, state, queries, min(len(state), 60), params=params)
    else:
        for query, hits in zip(queries, coll.search(queries, 30, params=params), strict=True):
            check_hits(hits, query, state)
    own = np.stack([state[i] for i in sorted(state)[:: max(1, len(state) // 30)]])
    for hits in coll.search(own, 1, params=params):  # every item sampled is in the index
        assert hits and hits[0].distance == 0


def build(path: Path, kind: str = "flat", **kwargs) -> dict[str, tuple[bytes, dict]]:
    """A closed collection with upserts, replacements and deletes; returns its content."""
    with Collection.create(path, N_BITS, FP, kind, **kwargs) as coll:
        coll.upsert([f"a{i:03d}" for i in range(300)], codes(1, 300), [{"i": i} for i in range(300)])
        coll.upsert([f"a{i:03d}" for i in range(0, 40, 2)], codes(2, 20), [{"moved": i} for i in range(20)])
        coll.delete([f"a{i:03d}" for i in range(100, 140)])
        coll.upsert(["b0", "b1"], codes(3, 2), [None, {"x": [1, 2]}])
        return content(coll)


def snapshot_file(path: Path) -> Path:
    manifest = json.loads((path / "manifest.json").read_text())
    return path / manifest["snapshot"]["file"]


def marked_rows(path: Path, upto_seq: int | None = None) -> int:
    """Rows of the store marked removed (at or before ``upto_seq``), read with a separate read-only connection."""
    with sqlite3.connect(f"file:{path / 'items.sqlite'}?mode=ro", uri=True) as conn:
        if upto_seq is None:
            return conn.execute("SELECT count(*) FROM items WHERE deleted_seq IS NOT NULL").fetchone()[0]
        return conn.execute("SELECT count(*) FROM items WHERE deleted_seq <= ?", (upto_seq,)).fetchone()[0]


# ---- damaged snapshot or manifest: the index is rebuilt from the store ----------------------------------------


@pytest.mark.parametrize(
    ("kind", "damage"),
    [("flat", "truncate"), ("flat", "bitflip"), ("flat", "delete"), ("flat", "empty"), ("hash", "bitflip")],
)
def test_damaged_snapshot_is_rebuilt_from_the_store(
    tmp_path: Path, kind: str, damage: str, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "c"
    expected = build(path, kind)
    file = snapshot_file(path)
    raw = file.read_bytes()
    if damage == "truncate":
        file.write_bytes(raw[: len(raw) // 2])
    elif damage == "bitflip":  # one bit in the middle of the serialized index: only the checksum can tell
        middle = len(raw) // 2
        file.write_bytes(raw[:middle] + bytes([raw[middle] ^ 0x10]) + raw[middle + 1 :])
    elif damage == "delete":
        file.unlink()
    else:
        file.write_bytes(b"")
    with caplog.at_level(logging.INFO, logger="hamdex.index"):
        with Collection.open(path, expected_fingerprint=FP) as coll:
            assert "ignoring snapshot" in caplog.text and "snapshot at seq -1" in caplog.text  # a full rebuild
            assert_content(coll, expected, exact=kind == "flat")
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="hamdex.index"):
        with Collection.open(path) as coll:  # close wrote a good snapshot again
            assert "ignoring" not in caplog.text and "snapshot at seq -1" not in caplog.text
            assert_content(coll, expected, exact=kind == "flat")


@pytest.mark.parametrize("damage", ["delete", "garbage", "not-an-object", "other-settings", "unknown-snapshot"])
def test_missing_or_garbage_manifest_is_rebuilt(tmp_path: Path, damage: str, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "c"
    expected = build(path)
    manifest_file = path / "manifest.json"
    manifest = json.loads(manifest_file.read_text())
    if damage == "delete":
        manifest_file.unlink()
    elif damage == "garbage":
        manifest_file.write_bytes(b"\x00{not json\xff")
    elif damage == "not-an-object":
        manifest_file.write_text("[1, 2, 3]")
    elif damage == "other-settings":  # a snapshot of another model's index must not be loaded
        manifest_file.write_text(json.dumps({**manifest, "fingerprint": "model-b"}))
    else:
        manifest_file.write_text(json.dumps({**manifest, "snapshot": {**manifest["snapshot"], "file": "x.npz"}}))
    with caplog.at_level(logging.INFO, logger="hamdex.index"):
        with Collection.open(path, expected_fingerprint=FP) as coll:  # the store, not the manifest, has settings
            assert "snapshot at seq -1" in caplog.text
            assert_content(coll, expected)
            assert coll.fingerprint == FP
    rewritten = json.loads(manifest_file.read_text())
    assert rewritten["fingerprint"] == FP and (path / rewritten["snapshot"]["file"]).is_file()
    with Collection.open(path) as coll:
        assert_content(coll, expected)


def test_leftover_temp_files_are_ignored_and_removed(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "c"
    expected = build(path)
    seq = json.loads((path / "manifest.json").read_text())["snapshot"]["seq"]
    leftovers = [
        path / f".snapshot-{seq + 5:012d}.npz.{uuid.uuid4().hex}.tmp",
        path / f".manifest.json.{uuid.uuid4().hex}.tmp",
    ]
    leftovers[0].write_bytes(os.urandom(5000))
    leftovers[1].write_text('{"snapshot": {"file": "nothing"}}')
    with caplog.at_level(logging.INFO, logger="hamdex.index"):
        with Collection.open(path) as coll:
            assert not any(p.exists() for p in leftovers)
            assert f"snapshot at seq {seq}, replayed 0 items" in caplog.text  # the real snapshot was used
            assert_content(coll, expected)
    assert sorted(p.name for p in path.glob(".*")) == []


# ---- replay after a crash --------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["flat", "hnsw", "ivf"])
def test_writes_after_the_last_snapshot_are_replayed(
    tmp_path: Path, kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "c"
    # ivf: trained at 132 codes, so by the replay (the snapshot holds 120); all 4 lists probed: exact
    params = {"nlist": 4, "nprobe": 4, "train_size_per_list": 33} if kind == "ivf" else {}
    out = crash_after(
        path,
        f"""
        coll = Collection.create(path, 64, "fp", {kind!r}, {params!r}, snapshot_every=40)
        c = codes(1, 300)
        for b in range(0, 120, 10):  # background snapshots every 40 changed items, while writing
            coll.upsert([f"a{{i:03d}}" for i in range(b, b + 10)], c[b:b + 10], [{{"i": i}} for i in range(b, b + 10)])
        if coll._snapshot_thread is not None:  # no background snapshot may start after the one below
            coll._snapshot_thread.join()
        print("snapshot", coll.snapshot())
        for b in range(120, 150, 5):  # 30 items: under snapshot_every, so no snapshot covers them
            coll.upsert([f"a{{i:03d}}" for i in range(b, b + 5)], c[b:b + 5], [{{"i": i}} for i in range(b, b + 5)])
        coll.upsert([f"a{{i:03d}}" for i in range(5)], codes(2, 5), [{{"moved": True}}] * 5)
        coll.delete(["a010", "a011", "a130"])
        print("seq", coll.seq)
        """,
    )
    values = dict(line.split() for line in out.splitlines())
    snap_seq, last_seq = int(values["snapshot"]), int(values["seq"])
    assert json.loads((path / "manifest.json").read_text())["snapshot"]["seq"] == snap_seq < last_seq
    c = codes(1, 300)
    expected = {f"a{i:03d}": (c[i].tobytes(), {"i": i}) for i in range(150)}
    expected.update({f"a{i:03d}": (codes(2, 5)[i].tobytes(), {"moved": True}) for i in range(5)})
    for gone in ("a010", "a011", "a130"):
        del expected[gone]
    with caplog.at_level(logging.INFO, logger="hamdex.index"):
        with Collection.open(path, expected_fingerprint="fp") as coll:
            # 30 items written after the snapshot, 5 replaced, one of the 30 deleted: 34 live rows to replay
            assert f"snapshot at seq {snap_seq}, replayed 34 items up to seq {last_seq}" in caplog.text
            assert coll.seq == last_seq
            assert_content(coll, expected, exact=kind != "hnsw", params=EXHAUSTIVE.get(kind))
            if kind == "ivf":
                assert coll._index.trained
    with Collection.open(path) as coll:
        assert_content(coll, expected, exact=kind != "hnsw", params=EXHAUSTIVE.get(kind))


@pytest.mark.parametrize("kind", ["flat", "hnsw", "hash"])
def test_deletes_after_the_snapshot_stay_deleted(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "c"
    crash_after(
        path,
        f"""
        coll = Collection.create(path, 64, "fp", {kind!r})
        coll.upsert([f"a{{i:03d}}" for i in range(200)], codes(1, 200), [{{"i": i}} for i in range(200)])
        coll.snapshot()
        coll.delete([f"a{{i:03d}}" for i in range(0, 200, 10)])  # 20 items in the snapshot
        coll.upsert([f"a{{i:03d}}" for i in range(5, 105, 10)], codes(2, 10), [{{"moved": i}} for i in range(10)])
        coll.upsert([f"n{{i}}" for i in range(10)], codes(3, 10))
        coll.delete([f"n{{i}}" for i in range(5)])  # written and deleted after the snapshot
        """,
    )
    c = codes(1, 200)
    expected = {f"a{i:03d}": (c[i].tobytes(), {"i": i}) for i in range(200) if i % 10}
    expected.update({f"a{i:03d}": (codes(2, 10)[j].tobytes(), {"moved": j}) for j, i in enumerate(range(5, 105, 10))})
    expected.update({f"n{i}": (codes(3, 10)[i].tobytes(), {}) for i in range(5, 10)})
    gone = {f"a{i:03d}" for i in range(0, 200, 10)} | {f"n{i}" for i in range(5)}
    old_codes = np.concatenate([c[::10], codes(3, 5), c[5:105:10]])  # where the stale entries would be found
    for _reopen in range(2):  # the replay, then the snapshot that close() took of it
        with Collection.open(path) as coll:
            assert_content(coll, expected, exact=kind == "flat", params=EXHAUSTIVE.get(kind))
            assert not gone & set(coll.ids()) and all(coll.get(i) is None for i in gone)
            for query, hits in zip(old_codes, coll.search(old_codes, 40, params=EXHAUSTIVE.get(kind)), strict=True):
                assert not gone & {h.id for h in hits}
                check_hits(hits, query, as_state(expected))
            if kind != "hnsw":
                for query, hits in zip(old_codes, coll.range_search(old_codes, 24), strict=True):
                    check_hits(hits, query, as_state(expected))


def test_pruning_happens_after_the_snapshot_covers_it(tmp_path: Path) -> None:
    path = tmp_path / "c"
    with Collection.create(path, N_BITS, FP) as coll:
        coll.upsert([f"a{i}" for i in range(100)], codes(1, 100))
        coll.upsert([f"a{i}" for i in range(20)], codes(2, 20))  # 20 rows replaced
        coll.delete([f"a{i}" for i in range(90, 100)])  # 10 rows deleted
        assert marked_rows(path) == 30  # kept, marked, until a snapshot covers their removal
        seq = coll.snapshot()
        assert seq == coll.seq and marked_rows(path) == 0
        coll.delete(["a50", "a51"])
        coll.upsert(["a52"], codes(3, 1))
        assert marked_rows(path) == 3 and marked_rows(path, seq) == 0  # after the snapshot: kept for replay
        expected = content(coll)
    assert marked_rows(path) == 0  # close() took a snapshot, then pruned
    with sqlite3.connect(f"file:{path / 'items.sqlite'}?mode=ro", uri=True) as conn:
        assert conn.execute("SELECT count(*) FROM items").fetchone()[0] == len(expected) == 88
    with Collection.open(path) as coll:
        assert_content(coll, expected)


# ---- a crash inside a snapshot ---------------------------------------------------------------------------------

CRASH_POINTS = {
    # the snapshot's temp file is written, the rename has not happened
    "before-rename": "import hamdex.index.snapshot as s; s.os.replace = lambda *a: crash()",
    # the new snapshot file is in place, the manifest still names the old one
    "before-manifest": "import hamdex.index.snapshot as s; s.write_manifest = lambda *a: crash()",
    # manifest and snapshot are new, the store still holds the rows the snapshot covers
    "before-prune": "from hamdex.index.store import Store; Store.prune = lambda *a: crash()",
}


@pytest.mark.parametrize("point", sorted(CRASH_POINTS))
def test_crash_inside_a_snapshot_loses_nothing(tmp_path: Path, point: str) -> None:
    path = tmp_path / "c"
    crash_after(
        path,
        f"""
        coll = Collection.create(path, 64, "fp")
        coll.upsert([f"a{{i}}" for i in range(100)], codes(1, 100), [{{"i": i}} for i in range(100)])
        coll.snapshot()
        coll.upsert([f"a{{i}}" for i in range(10)], codes(2, 10), [{{"v": 2}}] * 10)
        coll.delete([f"a{{i}}" for i in range(90, 100)])
        coll.upsert(["b"], codes(3, 1))
        {CRASH_POINTS[point]}
        coll.snapshot()
        raise SystemExit("the snapshot did not reach the crash point")
        """,
    )
    expected = {f"a{i}": (codes(1, 100)[i].tobytes(), {"i": i}) for i in range(10, 90)}
    expected.update({f"a{i}": (codes(2, 10)[i].tobytes(), {"v": 2}) for i in range(10)})
    expected["b"] = (codes(3, 1)[0].tobytes(), {})
    if point == "before-rename":
        assert list(path.glob(".snapshot-*.tmp"))
    with Collection.open(path) as coll:
        assert not list(path.glob(".*.tmp"))
        assert_content(coll, expected)
    with Collection.open(path) as coll:
        assert_content(coll, expected)
        assert len(list(path.glob("snapshot-*.npz"))) == 1
        coll.upsert(["c"], codes(4, 1))  # the next snapshot prunes whatever the crash left marked
        coll.snapshot()
        assert marked_rows(path) == 0


def test_crash_while_writes_and_snapshots_race(tmp_path: Path) -> None:
    """A writer thread and snapshots (explicit and background) run together until SIGKILL lands wherever it lands.

    The child logs each write before it starts and after it returns; every returned write must be there after
    the reopen, and the one in flight, if any, either wholly or not at all.
    """
    path = tmp_path / "c"
    out = crash_after(
        path,
        """
        import threading, time
        coll = Collection.create(path, 64, "fp", snapshot_every=30)
        c, moved = codes(1, 5000), codes(2, 5000)
        done = []

        def writer():
            rng = np.random.default_rng(5)
            nxt, live = 0, []
            while True:
                roll = rng.random()
                if roll < 0.5 or len(live) < 10:
                    batch = list(range(nxt, nxt + int(rng.integers(1, 15))))
                    nxt = batch[-1] + 1
                    print("upsert", *batch, flush=True)
                    coll.upsert([f"a{j}" for j in batch], c[batch], [{"j": j} for j in batch])
                    live += batch
                elif roll < 0.75:
                    batch = sorted({int(j) for j in rng.choice(live, int(rng.integers(1, 6)))})
                    print("move", *batch, flush=True)
                    coll.upsert([f"a{j}" for j in batch], moved[batch], [{"moved": j} for j in batch])
                else:
                    batch = sorted({int(j) for j in rng.choice(live, int(rng.integers(1, 6)))})
                    print("delete", *batch, flush=True)
                    coll.delete([f"a{j}" for j in batch])
                    live = [j for j in live if j not in batch]
                print("done", flush=True)
                done.append(1)

        threading.Thread(target=writer, daemon=True).start()
        end = time.monotonic() + 0.5
        while time.monotonic() < end or (len(done) < 15 and time.monotonic() < end + 20):
            coll.snapshot()
            time.sleep(0.01)
        """,
    )
    c, moved = codes(1, 5000), codes(2, 5000)
    model: dict[str, tuple[bytes, dict]] = {}
    in_flight: tuple[str, list[int]] | None = None

    def apply(state: dict, op: str, batch: list[int]) -> None:
        for j in batch:
            if op == "upsert":
                state[f"a{j}"] = (c[j].tobytes(), {"j": j})
            elif op == "move":
                state[f"a{j}"] = (moved[j].tobytes(), {"moved": j})
            else:
                state.pop(f"a{j}", None)

    lines = out.splitlines()
    n_done = 0
    for line in lines:
        if line == "done":
            apply(model, *in_flight)
            in_flight, n_done = None, n_done + 1
        elif line:
            op, *batch = line.split()
            in_flight = (op, [int(j) for j in batch])
    assert n_done >= 15, out  # the race did run for a while
    with_last = dict(model)
    if in_flight is not None:
        apply(with_last, *in_flight)
    assert (path / "manifest.json").is_file() and json.loads((path / "manifest.json").read_text()).get("snapshot")
    with Collection.open(path) as coll:
        found = content(coll)
        assert found in (model, with_last), "a returned write was lost or a write was applied in part"
        assert_content(coll, found)
    with Collection.open(path) as coll:
        assert_content(coll, found)


# ---- the store itself damaged ----------------------------------------------------------------------------------


@pytest.mark.parametrize("where", ["header", "items-root-page"])
def test_corrupt_database_is_reported_naming_the_file(tmp_path: Path, where: str) -> None:
    path = tmp_path / "c"
    build(path)
    db = path / "items.sqlite"
    with sqlite3.connect(db) as conn:
        page_size = conn.execute("PRAGMA page_size").fetchone()[0]
        root = conn.execute("SELECT rootpage FROM sqlite_master WHERE name = 'items'").fetchone()[0]
    conn.close()
    assert not (path / "items.sqlite-wal").exists() or (path / "items.sqlite-wal").stat().st_size == 0
    raw = bytearray(db.read_bytes())
    start = 0 if where == "header" else (root - 1) * page_size
    raw[start : start + 100] = b"\xde\xad\xbe\xef" * 25
    db.write_bytes(bytes(raw))
    for _ in range(2):  # the same typed error every time: no lock left behind, no half-open state
        with pytest.raises(CorruptCollectionError) as info:
            Collection.open(path)
        assert "items.sqlite" in str(info.value) and info.value.path == db
        assert info.value.error_type == "corrupt_collection"
    with pytest.raises(CorruptCollectionError):
        Collection.open_or_create(path, N_BITS, FP)  # never replaced by a fresh, empty collection
    assert db.read_bytes() == bytes(raw)
    fd = os.open(path / "LOCK", os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # the failed opens released the lock
    finally:
        os.close(fd)


@pytest.mark.parametrize("tail", ["random-bytes", "half-a-frame", "frame-with-bad-checksum"])
def test_torn_wal_tail_keeps_every_committed_write(tmp_path: Path, tail: str) -> None:
    path = tmp_path / "c"
    crash_after(
        path,
        """
        coll = Collection.create(path, 64, "fp")
        for b in range(0, 200, 20):
            batch = range(b, b + 20)
            coll.upsert([f"a{i}" for i in batch], codes(1, 200)[b:b + 20], [{"i": i} for i in batch])
        coll.delete(["a3", "a4"])
        coll.upsert(["a5"], codes(2, 1), [{"last": True}])
        """,
    )
    wal = path / "items.sqlite-wal"
    raw = wal.read_bytes()
    assert len(raw) > 32 + 24  # the crash left committed frames in the WAL, not yet checkpointed
    page_size = int.from_bytes(raw[8:12], "big")
    frame = raw[-(24 + page_size) :]  # the last frame: the last commit
    if tail == "random-bytes":
        extra = np.random.default_rng(0).integers(0, 256, 3 * page_size + 7, dtype=np.uint8).tobytes()
    elif tail == "half-a-frame":  # a copy of a valid frame, cut short as a torn write would leave it
        extra = frame[: 24 + page_size // 2]
    else:  # a whole frame with the right salt whose page does not match its checksum
        extra = frame[:-100] + bytes(b ^ 0xFF for b in frame[-100:])
    wal.write_bytes(raw + extra)
    expected = {f"a{i}": (codes(1, 200)[i].tobytes(), {"i": i}) for i in range(200) if i not in (3, 4)}
    expected["a5"] = (codes(2, 1)[0].tobytes(), {"last": True})
    with Collection.open(path) as coll:
        assert_content(coll, expected)
        coll.upsert(["after"], codes(3, 1))  # and it takes writes on top of the repaired log
        expected["after"] = (codes(3, 1)[0].tobytes(), {})
    with Collection.open(path) as coll:
        assert_content(coll, expected)


def test_half_created_collection(tmp_path: Path) -> None:
    """An items.sqlite without settings (a create that crashed) is no collection; open_or_create finishes it."""
    path = tmp_path / "c"
    path.mkdir()
    (path / "items.sqlite").write_bytes(b"")
    with pytest.raises(CollectionNotFoundError):
        Collection.open(path)
    with Collection.open_or_create(path, N_BITS, FP, "hash") as coll:
        assert len(coll) == 0 and coll.manifest.index_kind == "hash"
        coll.upsert(["a"], codes(1, 1))
    with Collection.open(path) as coll:
        assert coll.ids() == ["a"]
