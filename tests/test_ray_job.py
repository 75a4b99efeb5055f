"""``hamdex index --ray``: encoding on a local Ray instance gives the local job's codes, ids, metadata and bad-row
report, and resumes and skips finished jobs the same way."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from hamdex.index import Collection
from hamdex.models import checkpoint
from hamdex.service import bulk
from hamdex.service.bulk.job import job_key

from tests.conftest import synthetic_texts
from tests.helpers import run_index

pytestmark = pytest.mark.ray

D = 12  # the dense fixture model's width
REPORTED = ("skipped", "reasons", "examples", "collection_count")  # summary fields that must match the local job's


@pytest.fixture(scope="module")
def local_ray():
    """One local Ray instance for the module (the CLI attaches to it instead of starting its own)."""
    ray = pytest.importorskip("ray")
    t0 = time.perf_counter()
    for attempt in range(2):  # Ray gives its raylet 30 s to register; twice in one session here it never did
        try:
            ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="WARNING")
            break
        except Exception:
            ray.shutdown()
            if attempt:
                raise
    print(f"ray.init: {time.perf_counter() - t0:.1f}s")
    yield
    ray.shutdown()


def _items(coll: Path) -> dict[str, tuple[bytes, dict | None]]:
    with Collection.open(coll) as c:
        return {i: (c.get(i).code.tobytes(), c.get(i).metadata) for i in c.ids()}


def test_vectors_give_the_local_codes_and_report(local_ray, dense_model_dir, tmp_path):
    x = np.random.default_rng(3).standard_normal((40, D)).astype(np.float32)
    x[5, 0], x[30, 3] = np.nan, np.inf  # .npy passes these on: the featurizer finds them, on an actor
    np.save(tmp_path / "x.npy", x)
    args = [str(tmp_path / "x.npy"), "-m", str(dense_model_dir), "--batch-size", "8"]
    local = run_index(*args, "-c", str(tmp_path / "local"), "--report", str(tmp_path / "local.json"))
    assert local.exit_code == 0, local.output
    t0 = time.perf_counter()
    on_ray = run_index(*args, "-c", str(tmp_path / "ray"), "--report", str(tmp_path / "ray.json"), "--ray")
    print(f"--ray job: {time.perf_counter() - t0:.1f}s")
    assert on_ray.exit_code == 0, on_ray.output
    assert "indexed 38 items" in on_ray.output and "skipped 2" in on_ray.output

    assert _items(tmp_path / "ray") == _items(tmp_path / "local")  # ids, codes and metadata
    _same_reports(tmp_path / "ray.json", tmp_path / "local.json")
    assert [e["row"] for e in json.loads((tmp_path / "ray.json").read_text())["examples"]["non_finite"]] == [5, 30]

    again = run_index(*args, "-c", str(tmp_path / "ray"), "--ray")  # the same job: nothing to do
    assert again.exit_code == 0 and "already finished (40 items)" in again.output
    assert _items(tmp_path / "ray") == _items(tmp_path / "local")


def _same_reports(a: Path, b: Path, keys: tuple[str, ...] = ("items", *REPORTED)) -> None:
    ra, rb = json.loads(a.read_text()), json.loads(b.read_text())
    for key in keys:
        assert ra[key] == rb[key], key


def test_texts_resume_on_ray_with_the_local_codes_and_report(local_ray, text_model_dir, tmp_path):
    texts = synthetic_texts(n_per_topic=15, seed=4)
    lines = [json.dumps({"id": f"t{i}", "text": t, "metadata": {"n": i}}).encode() for i, t in enumerate(texts)]
    lines[25] = json.dumps({"id": " ", "text": "rocket orbit"}).encode()  # blank id: found in the driver
    lines[33] = b'{"id": "latin", "text": "caf\xe9 rocket"}'  # not UTF-8: the reader reports it
    lines[41] = b'{"id": "broken", "text": "rocket'  # malformed line
    for i in range(52, 60):  # rows 50-57 (after the two lines above): a whole block of blank ids
        lines[i] = json.dumps({"id": " ", "text": texts[i]}).encode()
    (tmp_path / "t.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    args = [str(tmp_path / "t.jsonl"), "-m", str(text_model_dir), "--batch-size", "10"]
    assert run_index(*args, "-c", str(tmp_path / "clean"), "--report", str(tmp_path / "clean.json")).exit_code == 0

    # the same job cut off after 20 items (its progress record says so), finished on Ray
    coll = tmp_path / "cut"
    assert run_index(*args, "-c", str(coll)).exit_code == 0
    with Collection.open(coll) as c:
        key = job_key(tmp_path / "t.jsonl", 10, None, checkpoint.read_meta(text_model_dir)["fingerprint"])
        assert c.progress(key) == {"items": len(texts) - 2, "done": True}  # lines the reader skipped not counted
        c.delete([i for i in c.ids() if int(i[1:]) >= 20])
        c.set_progress(key, {"items": 20})
    resumed = run_index(*args, "-c", str(coll), "--ray", "--report", str(tmp_path / "ray.json"))
    assert resumed.exit_code == 0, resumed.output
    assert "resumed after 20 items" in resumed.output, resumed.output
    assert f"indexed {len(texts) - 2 - 20 - 9} items" in resumed.output, resumed.output
    assert _items(coll) == _items(tmp_path / "clean")
    # every bad row comes after the first 20: the same report (bar the items done before)
    _same_reports(tmp_path / "ray.json", tmp_path / "clean.json", REPORTED)


def test_cuda_without_a_gpu_is_refused(local_ray, dense_model_dir, tmp_path):
    np.save(tmp_path / "x.npy", np.zeros((4, D), np.float32))
    args = [str(tmp_path / "x.npy"), "-m", str(dense_model_dir), "-c", str(tmp_path / "c")]
    result = run_index(*args, "--ray", "--device", "cuda")
    assert result.exit_code == 2 and "no GPU" in result.output


def test_without_ray_the_error_says_what_to_install(dense_model_dir, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    monkeypatch.delitem(sys.modules, "hamdex.service.bulk.ray", raising=False)  # imported again, without Ray
    monkeypatch.delattr(bulk, "ray", raising=False)
    np.save(tmp_path / "x.npy", np.zeros((4, D), np.float32))
    result = run_index(str(tmp_path / "x.npy"), "-m", str(dense_model_dir), "-c", str(tmp_path / "c"), "--ray")
    assert result.exit_code == 2
    assert "pip install 'hamdex[ray]'" in " ".join(result.output.split())


def test_strict_stops_at_the_first_bad_row_after_writing_the_blocks_before(local_ray, dense_model_dir, tmp_path):
    x = np.random.default_rng(5).standard_normal((30, D)).astype(np.float32)
    x[17, 2] = np.nan  # strict: the reader raises (in the driver's feeder thread) at the block of rows 16-23
    np.save(tmp_path / "x.npy", x)
    coll = tmp_path / "c"
    args = [str(tmp_path / "x.npy"), "-m", str(dense_model_dir), "-c", str(coll), "--batch-size", "8", "--strict"]
    result = run_index(*args, "--ray")
    # the console wraps long lines at spaces (where depends on the temporary path's length): compare words
    assert result.exit_code == 2 and "(rows 16-23): vector at row 1 has NaN" in " ".join(result.output.split())
    with Collection.open(coll) as c:
        assert len(c) == 16  # the blocks before the bad row's, nothing of its own
