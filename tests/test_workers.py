"""Several worker processes (``hamdex serve --workers N``, issue 24): allowed only for an encode-only server.

A collection has one writer (its LOCK file, index.base.lock_folder), so N processes serving collections would each
try to open them and all but one fail. The rules: ``--workers 2`` without ``--encode-only`` is refused before
anything starts; an encode-only server opens no collection (the default one is not even created) and answers 409
``encode_only`` on every route that needs one; a real 2-worker server answers encode from both processes with the
codes of the model in this process.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
from hamdex.models import checkpoint
from typer.testing import CliRunner

from benchmarks.servers import CLI, Server, free_port, serve_args, service_env
from tests.conftest import MakeClient, synthetic_texts


def test_several_workers_need_encode_only(text_model_dir: Path, tmp_path: Path) -> None:
    from hamdex.service.cli import app

    collection = tmp_path / "collection"
    result = CliRunner().invoke(app, ["serve", "-m", str(text_model_dir), "-c", str(collection), "--workers", "2"])
    assert result.exit_code != 0
    assert "--workers 2 needs --encode-only" in result.output and "one writer" in result.output
    assert not collection.exists()  # refused before anything was opened or created


def test_encode_only_opens_no_collection(make_client: MakeClient, text_model_dir: Path, tmp_path: Path) -> None:
    collection = tmp_path / "untouched"
    client = make_client(text_model_dir, encode_only=True, collection_path=collection)
    assert client.get("/readyz").status_code == 200
    answer = client.post("/v1/encode", json={"inputs": ["rocket orbit", "oven flour"]})
    assert answer.status_code == 200 and len(answer.json()["codes"]) == 2
    for method, path in [
        ("GET", "/info"),
        ("POST", "/v1/search"),
        ("POST", "/v1/items"),
        ("GET", "/v1/collections"),
        ("POST", "/v1/collections/default/search"),
        ("GET", "/ui"),
    ]:
        refused = client.request(method, path, json={})
        assert refused.status_code == 409, (path, refused.text)
        assert refused.json()["error_type"] == "encode_only", path
    assert client.get("/metrics").status_code == 200 and client.get("/openapi.json").status_code == 200
    assert not collection.exists()


def test_two_worker_processes_answer_encode(text_model_dir: Path, tmp_path: Path) -> None:
    port = free_port()
    args = [*serve_args(text_model_dir, tmp_path / "collection", port), "--workers", "2", "--encode-only"]
    server = Server.spawn([*CLI, *args], service_env(tmp_path), tmp_path / "server.log", port)
    try:
        server.wait_ready(180)
        texts = synthetic_texts(5)
        expected = checkpoint.load(text_model_dir, "cpu").encode(texts).codes
        with httpx.Client(base_url=server.url, timeout=30) as client:
            for _ in range(40):  # new connections: the kernel spreads them over the workers' shared socket
                answer = httpx.post(server.url + "/v1/encode", json={"inputs": texts}, timeout=30)
                assert answer.status_code == 200, answer.text
                got = np.array([np.frombuffer(bytes.fromhex(c), np.uint8) for c in answer.json()["codes"]])
                assert np.array_equal(got, expected)
            refused = client.get("/v1/collections")
            assert refused.status_code == 409 and refused.json()["error_type"] == "encode_only"
        pids = _worker_pids(server.pid)
        assert len(pids) == 2, pids  # uvicorn's supervisor runs two worker processes
        assert not (tmp_path / "collection").exists()
    finally:
        assert server.stop(60) is not None, server.log_tail()


def _worker_pids(parent: int) -> set[int]:
    """The children of ``parent`` that are Python processes other than multiprocessing's helpers.

    ``-ww``: without it ps cuts each line to the terminal width (80 columns with no terminal, as in CI), and the
    cut line "...resource_track" no longer names the helper it must leave out.
    """
    out = subprocess.run(["ps", "-ww", "-o", "pid=,args=", "--ppid", str(parent)], capture_output=True, text=True)
    return {
        int(line.split()[0])
        for line in out.stdout.splitlines()
        if sys.executable.split("/")[-1].split(".")[0] in line and "resource_tracker" not in line
    }
