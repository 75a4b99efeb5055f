"""The bulk job: bad rows skipped and reported (or --strict aborts), and a killed job resumes exactly."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from hamdex.index import Collection

from tests.helpers import run_index

D = 12  # the dense fixture model's width


def _jsonl_with_bad_rows(path: Path) -> Path:
    rng = np.random.default_rng(1)
    lines = [json.dumps({"id": f"v{i}", "vector": rng.standard_normal(D).tolist()}) for i in range(20)]
    lines[3] = json.dumps({"id": "short", "vector": [1.0, 2.0]})  # ragged: wrong dimension
    lines[5] = '{"id": "nan", "vector": [NaN' + ", 0" * (D - 1) + "]}"  # json.loads reads NaN
    lines[7] = '{"id": "broken", "vector": [1, 2'  # malformed line
    lines[9] = json.dumps({"id": "txt", "text": 5})  # non-string text
    path.write_text("\n".join(lines) + "\n")
    return path


def test_bad_rows_are_skipped_and_reported(dense_model_dir, tmp_path):
    data = _jsonl_with_bad_rows(tmp_path / "v.jsonl")
    coll, report = tmp_path / "c", tmp_path / "report.json"
    result = run_index(
        str(data), "-m", str(dense_model_dir), "-c", str(coll), "--batch-size", "6", "--report", str(report)
    )
    assert result.exit_code == 0, result.output
    assert "skipped 4" in result.output and "non_finite" in result.output
    summary = json.loads(report.read_text())
    assert summary["items"] == 16 and summary["skipped"] == 4
    assert summary["reasons"] == {"input_shape": 1, "non_finite": 1, "data_format": 1, "input_type": 1}
    assert ":4:" in summary["examples"]["input_shape"][0]["message"]  # names the line
    assert summary["peak_rss_bytes"] > 2**20 and summary["items_per_s"] > 0
    with Collection.open(coll) as c:
        assert sorted(c.ids()) == sorted(f"v{i}" for i in range(20) if i not in (3, 5, 7, 9))


def test_nan_rows_in_an_npy_block_are_found_and_good_rows_kept(dense_model_dir, tmp_path):
    x = np.random.default_rng(0).standard_normal((10, D)).astype(np.float32)
    x[2, 0], x[8, 3] = np.nan, np.inf
    np.save(tmp_path / "x.npy", x)
    coll, report = tmp_path / "c", tmp_path / "r.json"
    args = [str(tmp_path / "x.npy"), "-m", str(dense_model_dir), "-c", str(coll), "--batch-size", "4"]
    result = run_index(*args, "--report", str(report))
    assert result.exit_code == 0, result.output
    summary = json.loads(report.read_text())
    assert summary["reasons"] == {"non_finite": 2}
    assert [e["row"] for e in summary["examples"]["non_finite"]] == [2, 8]
    with Collection.open(coll) as c:
        assert sorted(c.ids(), key=int) == [str(i) for i in range(10) if i not in (2, 8)]


def test_bad_parquet_rows_are_skipped_and_reported(dense_model_dir, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(2)
    vectors = [rng.standard_normal(D).tolist() for _ in range(12)]
    vectors[1] = None  # null vector
    vectors[4] = [1.0, 2.0]  # another width
    vectors[6] = [None] * D  # nulls inside
    vectors[9] = [float("nan")] * D  # NaN: found per row by the featurizer
    table = pa.table({"vector": pa.array(vectors, pa.list_(pa.float64())), "tag": list(range(12))})
    pq.write_table(table, tmp_path / "x.parquet", row_group_size=5)
    coll, report = tmp_path / "c", tmp_path / "r.json"
    args = [str(tmp_path / "x.parquet"), "-m", str(dense_model_dir), "-c", str(coll), "--batch-size", "5"]
    result = run_index(*args, "--report", str(report))
    assert result.exit_code == 0, result.output
    summary = json.loads(report.read_text())
    assert summary["items"] == 8 and summary["reasons"] == {"input_type": 2, "input_shape": 1, "non_finite": 1}
    assert [e["message"].split(": ")[1] for e in summary["examples"]["input_type"]] == ["row 1", "row 6"]
    with Collection.open(coll) as c:  # default ids are row numbers in the file, not in the filtered batch
        assert sorted(c.ids(), key=int) == [str(i) for i in range(12) if i not in (1, 4, 6, 9)]
        assert c.get("11").metadata == {"tag": 11}

    strict = run_index(*args[:-2], "-c", str(tmp_path / "c2"), "--batch-size", "5", "--strict")
    assert strict.exit_code == 2 and "null" in strict.output


def test_strict_aborts_on_the_first_bad_row(dense_model_dir, tmp_path):
    x = np.random.default_rng(0).standard_normal((10, D)).astype(np.float32)
    x[6, 1] = np.nan
    np.save(tmp_path / "x.npy", x)
    coll = tmp_path / "c"
    result = run_index(
        str(tmp_path / "x.npy"), "-m", str(dense_model_dir), "-c", str(coll), "--batch-size", "4", "--strict"
    )
    assert result.exit_code == 2
    assert "NaN" in result.output
    with Collection.open(coll) as c:
        assert len(c) == 4  # the first block; nothing of the bad row's block

    data = _jsonl_with_bad_rows(tmp_path / "v.jsonl")
    result = run_index(str(data), "-m", str(dense_model_dir), "-c", str(tmp_path / "c2"), "--strict")
    assert result.exit_code == 2 and "ragged" in result.output


def test_a_finished_job_is_not_redone(dense_model_dir, tmp_path):
    np.save(tmp_path / "x.npy", np.random.default_rng(0).standard_normal((30, D)).astype(np.float32))
    args = [str(tmp_path / "x.npy"), "-m", str(dense_model_dir), "-c", str(tmp_path / "c"), "--batch-size", "8"]
    assert "indexed 30 items" in run_index(*args).output
    again = run_index(*args)
    assert again.exit_code == 0 and "already finished" in again.output
    restarted = run_index(*args, "--restart")
    assert "indexed 30 items" in restarted.output and "collection holds 30" in restarted.output


def _count(coll: Path) -> int:
    db = coll / "items.sqlite"
    if not db.exists():
        return 0
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as conn:
            return conn.execute("SELECT count(*) FROM items WHERE deleted_seq IS NULL").fetchone()[0]
    except sqlite3.OperationalError:
        return 0  # tables not created yet


def _codes(coll: Path) -> dict[str, bytes]:
    with Collection.open(coll) as c:
        return {i: c.get(i).code.tobytes() for i in c.ids()}


# The CLI with each upsert slowed by 20 ms (in the child only), so the kill lands mid-run.
SLOW_CLI = """
import time
from hamdex.index import Collection
upsert = Collection.upsert
def slow_upsert(self, *args, **kwargs):
    time.sleep(0.02)
    return upsert(self, *args, **kwargs)
Collection.upsert = slow_upsert
from hamdex.service.cli import app
app()
"""


def test_a_killed_job_resumes_with_exactly_the_right_items(dense_model_dir, tmp_path):
    n, batch = 3000, 50
    x = np.random.default_rng(2).standard_normal((n, D)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    args = ["index", str(tmp_path / "x.npy"), "-m", str(dense_model_dir), "--batch-size", str(batch), "--device", "cpu"]
    clean = tmp_path / "clean"
    assert run_index(*args[1:], "-c", str(clean)).exit_code == 0

    coll = tmp_path / "killed"
    cmd = [sys.executable, "-m", "hamdex.service.cli", *args, "-c", str(coll)]
    slow = [sys.executable, "-c", SLOW_CLI, *args, "-c", str(coll)]  # ~1.2 s of blocks: time to kill it mid-run
    proc = subprocess.Popen(slow, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env={**os.environ})
    deadline = time.monotonic() + 60
    while _count(coll) < 5 * batch and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.02)
    proc.kill()  # SIGKILL
    proc.wait()
    done_before = _count(coll)
    assert 0 < done_before < n, done_before

    rerun = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert rerun.returncode == 0, rerun.stderr + rerun.stdout
    resumed = int(rerun.stdout.split("resumed after ")[1].split()[0])
    assert resumed == done_before and resumed % batch == 0
    assert f"indexed {n - resumed} items" in rerun.stdout
    assert _codes(coll) == _codes(clean)
    with Collection.open(coll) as c:
        assert len(c) == n


@pytest.mark.parametrize("value", [{"items": 7}, {"items": 9, "done": True}])
def test_progress_commits_with_the_upsert(tmp_path, value):
    with Collection.create(tmp_path / "c", 16, "fp") as c:
        c.upsert(["a"], np.zeros((1, 2), np.uint8), progress=("job1", value))
        assert c.progress("job1") == value and c.progress("other") is None
        c.upsert([], np.zeros((0, 2), np.uint8), progress=("job1", {"items": 10}))
        assert c.progress("job1") == {"items": 10}


def test_undecodable_and_empty_id_text_rows_are_skipped(text_model_dir, tmp_path):
    good = [json.dumps({"id": f"t{i}", "text": "rocket orbit launch"}).encode() for i in range(5)]
    bad = b'{"id": "latin", "text": "caf\xe9 rocket"}'  # latin-1 bytes: not UTF-8
    (tmp_path / "t.jsonl").write_bytes(b"\n".join([*good[:2], bad, *good[2:]]) + b"\n")
    coll, report = tmp_path / "c", tmp_path / "r.json"
    result = run_index(str(tmp_path / "t.jsonl"), "-m", str(text_model_dir), "-c", str(coll), "--report", str(report))
    assert result.exit_code == 0, result.output
    assert json.loads(report.read_text())["reasons"] == {"undecodable": 1}
    with Collection.open(coll) as c:
        assert len(c) == 5


@pytest.mark.milvus
def test_index_into_a_milvus_collection_gives_the_faiss_codes(dense_model_dir, tmp_path):
    pytest.importorskip("pymilvus", reason="the milvus extra is not installed: pip install 'hamdex[milvus]'")
    from hamdex.index import open_collection

    x = np.random.default_rng(4).standard_normal((30, D)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    args = [str(tmp_path / "x.npy"), "-m", str(dense_model_dir), "--batch-size", "8"]
    for backend in ("faiss", "milvus"):
        result = run_index(*args, "-c", str(tmp_path / backend), "--backend", backend)
        assert result.exit_code == 0, result.output
    with open_collection(tmp_path / "faiss") as f, open_collection(tmp_path / "milvus") as m:
        assert m.manifest.backend == "milvus" and len(m) == len(f) == 30
        for i in ("0", "17", "29"):
            assert m.get(i).code.tobytes() == f.get(i).code.tobytes()
    rerun = run_index(*args, "-c", str(tmp_path / "milvus"))  # an existing collection keeps its backend; job done
    assert rerun.exit_code == 0 and "already finished" in rerun.output
    bad = run_index(*args, "-c", str(tmp_path / "other"), "--backend", "elastic")
    assert bad.exit_code == 2 and "backend" in bad.output


def test_a_job_whose_every_row_was_skipped_fails(dense_model_dir, tmp_path):
    """rc 0 and an empty collection would let a deployment serve nothing as if indexing had worked (issue 22)."""
    data = tmp_path / "bad.jsonl"
    data.write_text("".join(json.dumps({"id": f"s{i}", "vector": [1.0, 2.0]}) + "\n" for i in range(5)))
    report = tmp_path / "r.json"
    args = [str(data), "-m", str(dense_model_dir), "-c", str(tmp_path / "c"), "--report", str(report)]
    result = run_index(*args)
    assert result.exit_code == 2, result.output
    assert "every row was skipped (5)" in result.output and "input_shape" in result.output
    assert json.loads(report.read_text())["reasons"] == {"input_shape": 5}
    again = run_index(*args)  # the job is done, and the collection empty: still a failure
    assert again.exit_code == 2 and "the collection is empty" in again.output
