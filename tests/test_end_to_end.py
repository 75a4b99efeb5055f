"""Train a tiny model on scikit-learn's digits through the CLI, bulk-index it, serve it in a real server process,
and find same-class neighbours over HTTP well above chance."""

import json
import os
import subprocess
import sys

import httpx
import numpy as np
import pytest
from hamdex.service.cli import app
from sklearn.datasets import load_digits
from typer.testing import CliRunner

from tests.helpers import free_port, wait_healthy


@pytest.fixture(scope="module")
def digits_file(tmp_path_factory):
    d = load_digits()
    path = tmp_path_factory.mktemp("data") / "digits.npz"
    ids = np.array([f"digit-{i}" for i in range(len(d.target))])
    np.savez(path, X=(d.images * 255 / 16).astype(np.uint8), labels=d.target.astype(str), ids=ids)
    return path


@pytest.fixture(scope="module")
def built(tmp_path_factory, digits_file):
    """A model trained and a collection bulk-indexed through the CLI."""
    runner, root = CliRunner(), tmp_path_factory.mktemp("e2e")
    model, coll = root / "model", root / "coll"
    args = ["train", str(digits_file), "--out", str(model), "--bits", "32", "--hidden", "256", "--epochs", "30"]
    result = runner.invoke(app, [*args, "--device", "cpu"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["index", str(digits_file), "-m", str(model), "-c", str(coll), "--batch-size", "500"])
    assert result.exit_code == 0, result.output
    assert "indexed 1797 items" in result.output
    return model, coll


def _same_class_rate(results: list[list[dict]], query_ids: list[str]) -> tuple[int, float]:
    labels = load_digits().target.astype(str)
    same = [
        h["metadata"]["label"] == labels[int(q.split("-")[1])]
        for q, hits in zip(query_ids, results, strict=True)
        for h in hits
        if h["id"] != q
    ]
    return len(same), float(np.mean(same))


def test_serve_and_search_over_http(built):
    model, coll = built
    port = free_port()
    cmd = [sys.executable, "-m", "hamdex.service.cli", "serve", "-m", str(model), "-c", str(coll), "--port", str(port)]
    proc = subprocess.Popen(
        [*cmd, "--device", "cpu"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env={**os.environ}
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, proc)
        assert httpx.get(url + "/info").json()["count"] == 1797
        query_ids = [f"digit-{i}" for i in range(0, 1797, 18)]  # 100 queries over all classes
        body = {"queries": [{"id": q} for q in query_ids], "k": 11}
        results = httpx.post(url + "/v1/search", json=body, timeout=30).json()["results"]
        n, rate = _same_class_rate(results, query_ids)
        assert n >= 900
        assert rate > 0.5  # chance is 0.1
        result = CliRunner().invoke(app, ["search", "digit-0", "--by-id", "--k", "3", "--url", url])
        assert result.exit_code == 0, result.output
        assert "digit-0" in result.output
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_search_collection_on_disk(built):
    model, coll = built
    result = CliRunner().invoke(app, ["search", "digit-5", "--by-id", "--k", "2", "-m", str(model), "-c", str(coll)])
    assert result.exit_code == 0, result.output
    assert "digit-5" in result.output and "distance" in result.output
    # a reranked search on disk: an id query in a collection without vectors keeps the Hamming order, unscored
    args = ["search", "digit-5", "--by-id", "--k", "5", "-m", str(model), "-c", str(coll), "--json"]
    plain = CliRunner().invoke(app, args)
    result = CliRunner().invoke(app, [*args, "--rerank", "50", "--pool", "100"])
    assert result.exit_code == plain.exit_code == 0, result.output
    (hits,), (plain_hits,) = json.loads(result.stdout), json.loads(plain.stdout)
    # the same Hamming distances (items tied at one distance may come in another order)
    assert [h["distance"] for h in hits] == [h["distance"] for h in plain_hits]
    assert hits[0]["distance"] == 0 and all(h.get("score") is None for h in hits)


def test_eval_beats_lsh_and_writes_json(built, digits_file, tmp_path):
    model, _ = built
    out = tmp_path / "eval.json"
    args = ["eval", "-m", str(model), "--database", str(digits_file), "--queries", str(digits_file)]
    result = CliRunner().invoke(app, [*args, "--max-queries", "300", "--k", "50", "--json", str(out)])
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert set(report["methods"]) == {"hamdex", "lsh", "itq"}
    for row in report["methods"].values():
        assert all(0.0 <= row[m] <= 1.0 for m in ("p@50", "p@50_tie_aware", "map", "p_r2", "bit_balance"))
    assert report["methods"]["hamdex"]["p@50"] > report["methods"]["lsh"]["p@50"]
