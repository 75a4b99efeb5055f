"""Train a tiny model on scikit-learn's digits through the CLI, bulk-index it, serve it in a real server process,
and find same-class neighbours over HTTP well above chance."""

import os
import socket
import subprocess
import sys
import time

import httpx
import numpy as np
import pytest
from sklearn.datasets import load_digits
from typer.testing import CliRunner

from service.cli import app


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def digits_file(tmp_path_factory):
    d = load_digits()
    path = tmp_path_factory.mktemp("data") / "digits.npz"
    ids = np.array([f"digit-{i}" for i in range(len(d.target))])
    np.savez(path, X=(d.images * 255 / 16).astype(np.uint8), labels=d.target.astype(str), ids=ids)
    return path


def _wait_healthy(url: str, proc: subprocess.Popen, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"server exited with {proc.returncode}: {proc.stderr.read().decode()[-2000:]}")
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.2)
    raise AssertionError("server did not become healthy in time")


def test_train_index_serve_search(tmp_path, digits_file):
    runner = CliRunner()
    model, coll = tmp_path / "model", tmp_path / "coll"
    result = runner.invoke(
        app,
        [
            "train",
            str(digits_file),
            "--out",
            str(model),
            "--bits",
            "32",
            "--hidden",
            "256",
            "--epochs",
            "30",
            "--device",
            "cpu",
        ],
    )
    assert result.exit_code == 0, result.output
    result = runner.invoke(
        app, ["index", str(digits_file), "--model", str(model), "--collection", str(coll), "--batch-size", "500"]
    )
    assert result.exit_code == 0, result.output
    assert "indexed 1797 items" in result.output

    port = _free_port()
    cmd = [
        sys.executable,
        "-m",
        "service.cli",
        "serve",
        "--model",
        str(model),
        "--collection",
        str(coll),
        "--port",
        str(port),
        "--device",
        "cpu",
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env={**os.environ})
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(url, proc)
        assert httpx.get(url + "/info").json()["count"] == 1797
        labels = load_digits().target.astype(str)
        query_ids = [f"digit-{i}" for i in range(0, 1797, 18)]  # 100 queries over all classes
        body = {"queries": [{"id": q} for q in query_ids], "k": 11}
        results = httpx.post(url + "/v1/search", json=body, timeout=30).json()["results"]
        same = [
            h["metadata"]["label"] == labels[int(q.split("-")[1])]
            for q, hits in zip(query_ids, results, strict=True)
            for h in hits
            if h["id"] != q
        ]
        assert len(same) >= 900
        assert np.mean(same) > 0.5  # chance is 0.1
    finally:
        proc.terminate()
        proc.wait(timeout=10)
