"""Online backup and restore (index.backup, POST/GET /v1/collections/{name}/snapshots, hamdex restore): a backup
taken while a thread writes holds exactly the writes up to its sequence number, nothing torn; a crash mid-backup
leaves nothing visible; a missing, corrupt or busy target gives a clear, typed error."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import pytest
from hamdex.index import Collection, backup
from hamdex.index.errors import (
    BackupNotFoundError,
    CollectionExistsError,
    CollectionLockedError,
    CorruptBackupError,
)
from hamdex.service.cli import app as cli
from typer.testing import CliRunner

from tests.conftest import MakeClient, synthetic_texts
from tests.helpers import assert_error, random_codes

N_BITS = 32
CODES = random_codes(20_000, N_BITS, seed=5)


def item(i: int) -> tuple[str, np.ndarray, dict]:
    return f"x{i}", CODES[i % len(CODES)], {"i": i, "pad": "y" * (i % 50)}


def expected(seq: int, first_seq: int) -> dict[str, tuple[bytes, dict]]:
    """What the collection held at ``seq`` when write ``i`` (one item) had seq ``first_seq + i``; every third write
    replaces item i - 1 instead of adding one (so replaced rows cross the backup too)."""
    out = {}
    for i in range(seq - first_seq + 1):
        item_id, code, meta = item(i)
        if i % 3 == 2:
            item_id = f"x{i - 1}"
        out[item_id] = (code.tobytes(), meta)
    return out


@pytest.mark.parametrize("kind", ["flat", "hnsw"])
def test_a_backup_under_concurrent_writes_holds_exactly_the_writes_up_to_its_seq(tmp_path: Path, kind: str) -> None:
    coll = Collection.create(tmp_path / "live", N_BITS, "fp", kind, snapshot_every=40)  # snapshots race the copies
    first_seq = coll.seq + 1
    stop, written = threading.Event(), []

    def writer() -> None:
        i = 0
        while not stop.is_set():
            item_id, code, meta = item(i)
            if i % 3 == 2:
                item_id = f"x{i - 1}"
            coll.upsert([item_id], code[None, :], [meta])
            written.append(i)
            i += 1

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        records = []
        while len(records) < 5:
            if len(written) > 30 * (len(records) + 1):
                records.append(backup.create(coll, tmp_path / "backups"))
    finally:
        stop.set()
        thread.join()
        coll.close()
    assert [r["seq"] for r in records] == sorted(r["seq"] for r in records)
    assert [r["name"] for r in backup.list_backups(tmp_path / "backups")] == [r["name"] for r in records]
    for record in records:
        target = tmp_path / f"restored-{record['seq']}"
        backup.restore(tmp_path / "backups" / record["name"], target)
        with Collection.open(target) as restored:
            assert restored.seq == record["seq"]
            want = expected(record["seq"], first_seq)
            assert sorted(restored.ids()) == sorted(want)
            for item_id, (code, meta) in want.items():
                got = restored.get(item_id)
                assert got.code.tobytes() == code and got.metadata == meta
            hits = restored.search(CODES[:5], 3)  # the index agrees with the store (a torn one would not)
            assert all(len(h) == 3 for h in hits)


def test_a_crash_mid_backup_leaves_no_backup_visible(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with Collection.create(tmp_path / "c", N_BITS, "fp") as coll:
        coll.upsert(["a"], CODES[:1], None)

        def crash(*args: object) -> None:
            raise OSError("disk full")

        monkeypatch.setattr(backup.snapshot, "atomic_write", crash)  # the record's write, the last step
        with pytest.raises(OSError):
            backup.create(coll, tmp_path / "backups")
        assert backup.list_backups(tmp_path / "backups") == []
        assert list((tmp_path / "backups").iterdir()) == []  # the temp folder is gone too
        monkeypatch.undo()
        assert backup.create(coll, tmp_path / "backups")["seq"] == 1  # and the next backup works


def test_restore_refuses_what_it_cannot_restore(tmp_path: Path) -> None:
    with Collection.create(tmp_path / "c", N_BITS, "fp") as coll:
        coll.upsert(["a", "b"], CODES[:2], None)
        record = backup.create(coll, tmp_path / "backups")
        folder = tmp_path / "backups" / record["name"]
        with pytest.raises(CollectionLockedError):  # open: restoring over it would tear it
            backup.restore(folder, tmp_path / "c", replace=True)
    with pytest.raises(CollectionExistsError):
        backup.restore(folder, tmp_path / "c")
    backup.restore(folder, tmp_path / "c", replace=True)
    with pytest.raises(BackupNotFoundError):
        backup.restore(tmp_path / "backups" / "nope", tmp_path / "d")
    db = folder / "items.sqlite"
    data = bytearray(db.read_bytes())
    data[100:200] = bytes(255 - b for b in data[100:200])
    db.write_bytes(bytes(data))
    with pytest.raises(CorruptBackupError):
        backup.restore(folder, tmp_path / "d")
    assert not (tmp_path / "d").exists()
    result = CliRunner().invoke(cli, ["restore", str(folder), "--collection", str(tmp_path / "d")])
    assert result.exit_code == 2 and "(corrupt_snapshot)" in result.output


def test_snapshots_over_http_and_hamdex_restore(make_client: MakeClient, text_model_dir: Path, tmp_path: Path) -> None:
    client = make_client(text_model_dir, backups_dir=tmp_path / "backups")
    assert client.post("/v1/collections", json={"name": "a"}).status_code == 201
    texts = synthetic_texts()[:20]
    items = [{"id": f"d{i}", "input": t, "metadata": {"i": i}} for i, t in enumerate(texts)]
    assert client.post("/v1/collections/a/items", json={"items": items}).status_code == 200
    resp = client.post("/v1/collections/a/snapshots")
    assert resp.status_code == 201, resp.text
    made = resp.json()
    assert made["seq"] == 1 and made["bytes"] > 0
    assert client.get("/v1/collections/a/snapshots").json() == {"snapshots": [made]}
    assert_error(client.post("/v1/collections/nope/snapshots"), 404, "collection_not_found")
    result = CliRunner().invoke(
        cli, ["restore", str(tmp_path / "backups" / "a" / made["name"]), "--collection", str(tmp_path / "r")]
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["seq"] == 1
    with Collection.open(tmp_path / "r") as restored:
        assert sorted(restored.ids()) == sorted(f"d{i}" for i in range(20))
        assert restored.get("d3").metadata == {"i": 3}
