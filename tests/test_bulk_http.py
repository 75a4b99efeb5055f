"""The streaming bulk endpoint (POST {prefix}/items:bulk, NDJSON) through TestClient and raw ASGI: keys, rows
inserted and searchable, bad rows skipped by reason with their row numbers, strict mode, job progress and resuming
(also after the client went away mid-body), the body-size and timeout exemptions; and ``hamdex index --server``
against a real ``hamdex serve`` process, including a resume after an interrupted run."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hamdex.index import Collection
from hamdex.models.data import Block
from hamdex.models.hasher import Hasher
from hamdex.service.app import create_app, wait_ready
from hamdex.service.bulk import client as bulk_client
from hamdex.service.bulk import ndjson
from hamdex.service.bulk.ndjson import split_lines
from hamdex.service.settings import Settings

from tests.conftest import MakeClient, dense_vectors
from tests.helpers import ADMIN, KEYS, READER, WRITER, assert_error, bearer, free_port, run_index, wait_healthy
from tests.test_production import settings_for

D = 12  # the dense fixture model's width
NDJSON = {"content-type": "application/x-ndjson"}


def b64(vector: np.ndarray) -> str:
    return base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode()


def rows(n: int, seed: int = 0, prefix: str = "v") -> list[dict[str, Any]]:
    """``n`` good rows for the dense model, every other one as base64."""
    vectors = dense_vectors(n, D, seed)
    out = []
    for i, v in enumerate(vectors):
        given = {"input": v.tolist()} if i % 2 == 0 else {"input_b64": b64(v)}
        out.append({"id": f"{prefix}{i}", **given, "metadata": {"i": i}})
    return out


def body(lines: list[dict | str | bytes]) -> bytes:
    """NDJSON: a dict as JSON, a str or bytes as it is."""

    def raw(line: dict | str | bytes) -> bytes:
        return line if isinstance(line, bytes) else (line if isinstance(line, str) else json.dumps(line)).encode()

    return b"\n".join(raw(line) for line in lines) + b"\n"


def post(client: TestClient, lines: list, path: str = "/v1/items:bulk", **params: Any) -> httpx.Response:
    headers = {**NDJSON, **params.pop("headers", {})}
    return client.post(path, content=body(lines), headers=headers, params=params)


def count(client: TestClient, name: str = "default", headers: dict | None = None) -> int:
    return client.get(f"/v1/collections/{name}", headers=headers).json()["count"]


# ---- the endpoint -----------------------------------------------------------------------------------------------


def test_keys_guard_the_bulk_routes(make_client: MakeClient, dense_model_dir: Path) -> None:
    client = make_client(dense_model_dir, api_keys=KEYS)
    for path in ("/v1/items:bulk", "/v1/collections/default/items:bulk"):
        assert_error(post(client, rows(3), path), 401, "unauthorized")
        assert_error(post(client, rows(3), path, headers=bearer(READER)), 403, "forbidden")
        assert_error(client.get(f"{path}/job1", headers=bearer(READER)), 403, "forbidden")
    assert count(client, headers=bearer(READER)) == 0
    resp = post(client, rows(3), headers=bearer(WRITER), job="job1")
    assert resp.status_code == 200, resp.text
    assert client.get("/v1/items:bulk/job1", headers=bearer(WRITER)).json() == {"job": "job1", "items": 3, "done": True}
    assert count(client, headers=bearer(READER)) == 3


def test_rows_are_inserted_and_searchable(make_client: MakeClient, dense_model_dir: Path) -> None:
    client = make_client(dense_model_dir, max_batch=8)  # blocks of 8 rows
    vectors = dense_vectors(20, D, 0)
    given = [*rows(20), {"id": "v3", "input": vectors[5].tolist(), "metadata": {}}]  # v3 again, in a later block
    resp = post(client, given)
    assert resp.status_code == 200, resp.text
    summary = resp.json()
    assert summary["items"] == 21 and summary["skipped"] == 0 and summary["reasons"] == {}
    assert summary["collection_count"] == 20 and summary["resumed_from"] == 0
    # the codes are those /v1/encode gives; the later row with an id replaced the earlier one
    codes = [
        c
        for i in range(0, 20, 8)
        for c in client.post("/v1/encode", json={"inputs": vectors[i : i + 8].tolist()}).json()["codes"]
    ]
    for i in range(20):
        item = client.get(f"/v1/items/v{i}").json()
        assert item["code"] == codes[5 if i == 3 else i], i
        assert item["metadata"] == ({} if i == 3 else {"i": i})
    hits = client.post("/v1/search", json={"queries": [{"input": vectors[7].tolist()}], "k": 20}).json()["results"][0]
    assert {"id": "v7", "distance": 0, "metadata": {"i": 7}} in hits

    assert client.post("/v1/collections", json={"name": "named"}).status_code == 201
    resp = post(client, rows(5, prefix="n"), "/v1/collections/named/items:bulk")
    assert resp.status_code == 200 and resp.json()["collection_count"] == 5, resp.text
    assert count(client, "named") == 5 and count(client) == 20


def test_text_rows(make_client: MakeClient, text_model_dir: Path) -> None:
    client = make_client(text_model_dir)
    texts = ["rocket orbit launch", "recipe oven flour", "stock market bond"]
    resp = post(client, [{"id": f"t{i}", "input": t} for i, t in enumerate(texts)] + [{"id": "x", "input": 5}])
    assert resp.status_code == 422 and resp.json()["error_type"] == "rows_skipped", resp.text  # a bad row: not 2xx
    assert resp.json()["items"] == 3 and resp.json()["reasons"] == {"input_type": 1}
    hits = client.post("/v1/search", json={"queries": [{"input": texts[1]}], "k": 3}).json()["results"][0]
    assert any(h["id"] == "t1" and h["distance"] == 0 for h in hits)


def test_bad_rows_are_skipped_and_reported_by_reason(make_client: MakeClient, dense_model_dir: Path) -> None:
    client = make_client(dense_model_dir, max_batch=4, max_bulk_line_bytes=400, max_metadata_bytes=64)
    v = dense_vectors(1, D, 5)[0]
    nan = "[NaN" + ", 0" * (D - 1) + "]"
    lines = [
        {"id": "g0", "input": v.tolist()},  # 0
        '{"id": "broken", "input": [1, 2',  # 1 data_format
        {"id": "g2", "input_b64": b64(v)},  # 2
        "[1, 2, 3]",  # 3 data_format: not an object
        {"input": v.tolist()},  # 4 bad_id: missing
        {"id": " ", "input": v.tolist()},  # 5 bad_id: blank
        {"id": "short", "input": [1.0, 2.0]},  # 6 input_shape
        '{"id": "nan", "input": ' + nan + "}",  # 7 non_finite
        {"id": "txt", "input": "a text"},  # 8 input_type: the model takes numbers
        {"id": "num", "input": 5},  # 9 input_type
        {"id": "b64bad", "input_b64": "!!!"},  # 10 invalid_input
        {"id": "b64odd", "input_b64": base64.b64encode(b"12345").decode()},  # 11 input_shape
        {"id": "meta", "input_b64": b64(v), "metadata": {"x": "y" * 100}},  # 12 metadata_too_large
        b'{"id": "bin\xff"}',  # 13 undecodable
        {"id": "long", "input_b64": b64(v), "metadata": {"pad": "z" * 500}},  # 14 line_too_long
        "   ",  # blank: not a row
        {"id": "g15", "input": v.tolist()},  # 15
        {"id": "both", "input": v.tolist(), "input_b64": b64(v)},  # 16 data_format
        {"id": "extra", "input": v.tolist(), "colour": 1},  # 17 data_format
        {"id": "nanb64", "input_b64": b64(np.full(D, np.nan))},  # 18 non_finite
        {"id": "g19", "input": v.tolist(), "metadata": {"ok": True}},  # 19
    ]
    resp = post(client, lines, start=100)
    assert resp.status_code == 422, resp.text  # rows_skipped: the good rows written, the body the report
    summary = resp.json()
    expected = {
        "data_format": [101, 103, 116, 117],
        "bad_id": [104, 105],
        "input_shape": [106, 111],
        "non_finite": [107, 118],
        "input_type": [108, 109],
        "invalid_input": [110],
        "metadata_too_large": [112],
        "undecodable": [113],
        "line_too_long": [114],
    }
    assert summary["reasons"] == {reason: len(rows) for reason, rows in expected.items()}
    assert {reason: [e["row"] for e in examples] for reason, examples in summary["examples"].items()} == expected
    assert summary["items"] == 4 and summary["skipped"] == 16 and summary["resumed_from"] == 100
    assert [e["id"] for e in summary["examples"]["input_shape"]] == ["short", "b64odd"]
    assert [e["id"] for e in summary["examples"]["bad_id"]] == [None, None]
    assert "400 bytes" in summary["examples"]["line_too_long"][0]["message"]
    with_ids = {i: client.get(f"/v1/items/{i}").status_code for i in ("g0", "g2", "g15", "g19", "short", "meta")}
    assert with_ids == {"g0": 200, "g2": 200, "g15": 200, "g19": 200, "short": 404, "meta": 404}
    assert count(client) == 4


@pytest.mark.parametrize(
    ("bad", "error_type"),
    [({"id": "short", "input": [1.0]}, "input_shape"), ('{"id": "x", ', "data_format"), ("x" * 150, "line_too_long")],
)
def test_strict_answers_422_and_keeps_the_committed_blocks(
    make_client: MakeClient, dense_model_dir: Path, bad: Any, error_type: str
) -> None:
    client = make_client(dense_model_dir, max_batch=4, max_bulk_line_bytes=120)
    good = [{"id": f"v{i}", "input_b64": b64(v)} for i, v in enumerate(dense_vectors(12, D, 1))]
    lines = [*good[:9], bad, *good[10:]]
    body_ = assert_error(post(client, lines, strict="true", job="s1"), 422, error_type)
    assert "row 9" in body_["error"] and "rows 0 to 7, 8 items) stay committed" in body_["error"], body_
    assert count(client) == 8  # blocks 0-3 and 4-7; nothing of the bad row's block
    assert client.get("/v1/items:bulk/s1").json() == {"job": "s1", "items": 8, "done": False}
    # the rest, fixed, from where the job got: no duplicates
    resp = post(client, good[8:], strict="true", job="s1", start=8)
    assert resp.status_code == 200, resp.text
    assert resp.json()["items"] == 4 and resp.json()["resumed_from"] == 8 and count(client) == 12
    assert client.get("/v1/items:bulk/s1").json() == {"job": "s1", "items": 12, "done": True}

    first = assert_error(post(client, [bad], strict="true"), 422, error_type)
    assert "row 0" in first["error"] and "no earlier block" in first["error"]


def test_job_routes_validate_and_report(make_client: MakeClient, dense_model_dir: Path) -> None:
    client = make_client(dense_model_dir)
    assert_error(client.get("/v1/items:bulk/nope"), 404, "job_not_found")
    assert_error(client.get("/v1/collections/missing/items:bulk/nope"), 404, "collection_not_found")
    assert_error(client.get("/v1/items:bulk/" + "x" * 65), 422, "validation_error")
    assert_error(post(client, rows(1), job="not ok!"), 422, "validation_error")
    assert_error(post(client, rows(1), start=-1), 422, "validation_error")
    assert count(client) == 0
    assert client.post("/v1/collections", json={"name": "c2"}).status_code == 201
    resp = post(client, [*rows(3), "{"], "/v1/collections/c2/items:bulk", job="J_1", start=7)
    assert resp.json()["skipped"] == 1 and resp.json()["examples"]["data_format"][0]["row"] == 10
    assert client.get("/v1/collections/c2/items:bulk/J_1").json() == {"job": "J_1", "items": 11, "done": True}
    assert_error(client.get("/v1/items:bulk/J_1"), 404, "job_not_found")  # another collection's


def test_the_bulk_route_is_exempt_from_the_body_size_limit(make_client: MakeClient, dense_model_dir: Path) -> None:
    client = make_client(dense_model_dir, max_body_bytes=1024)
    content = body(rows(40))
    assert len(content) > 4 * 1024
    resp = client.post("/v1/items:bulk", content=content, headers=NDJSON)
    assert resp.status_code == 200 and resp.json()["items"] == 40, resp.text
    big = json.dumps({"items": [{"id": r["id"], "input": dense_vectors(1)[0].tolist()} for r in rows(40)]})
    assert_error(
        client.post("/v1/items", content=big, headers={"content-type": "application/json"}), 413, "body_too_large"
    )
    assert count(client) == 40


def test_the_bulk_route_is_exempt_from_the_request_timeout(
    make_client: MakeClient, dense_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = make_client(dense_model_dir, request_timeout_s=0.5, max_batch=4)
    original = Hasher.encode_features

    def slow(self: Hasher, *args: Any, **kwargs: Any) -> Any:
        time.sleep(0.2)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Hasher, "encode_features", slow)
    resp = post(client, rows(16))  # 4 blocks: 0.8 s
    assert resp.status_code == 200 and resp.json()["items"] == 16, resp.text


async def _post_then_disconnect(app: FastAPI, path: str, query: str, chunks: list[bytes]) -> list[dict]:
    """A raw ASGI POST whose client goes away after ``chunks``: what a killed ``hamdex index --server`` does."""
    messages = [{"type": "http.request", "body": c, "more_body": True} for c in chunks] + [{"type": "http.disconnect"}]
    sent: list[dict] = []

    async def receive() -> dict:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": query.encode(),
        "headers": [(b"host", b"testserver"), (b"content-type", b"application/x-ndjson")],
        "client": ("127.0.0.1", 12345),
        "server": ("testserver", 80),
    }
    await app(scope, receive, send)
    return sent


def test_an_upload_cut_off_by_the_client_resumes_exactly(dense_model_dir: Path, tmp_path: Path) -> None:
    app = create_app(settings_for(dense_model_dir, tmp_path, max_batch=4))
    lines = body(rows(20)).splitlines(keepends=True)

    async def run() -> tuple[list[dict], dict, dict, dict, int]:
        async with app.router.lifespan_context(app):
            await asyncio.to_thread(wait_ready, app, 60)
            cut = lines[9][:20]  # the body stops in the middle of row 9
            sent = await _post_then_disconnect(app, "/v1/items:bulk", "job=cut", [b"".join(lines[:9]), cut])
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
                progress = (await client.get("/v1/items:bulk/cut")).json()
                rest = b"".join(lines[progress["items"] :])
                resp = await client.post("/v1/items:bulk?job=cut&start=8", content=rest, headers=NDJSON)
                done = (await client.get("/v1/items:bulk/cut")).json()
                return sent, progress, resp.json(), done, (await client.get("/info")).json()["count"]

    sent, progress, summary, done, n = asyncio.run(run())
    assert sent[0]["status"] == 499
    assert progress == {"job": "cut", "items": 8, "done": False}  # blocks 0-3 and 4-7; row 8 was not committed
    assert summary["items"] == 12 and summary["resumed_from"] == 8
    assert done == {"job": "cut", "items": 20, "done": True}
    assert n == 20


@pytest.mark.parametrize("size", [1, 2, 3, 5, 7, 64])
def test_split_lines_across_chunk_boundaries(size: int) -> None:
    raw = b'{"a": 1}\n\n  \n' + b"x" * 30 + b'\n{"b": 2}\r\n' + b"y" * 11 + b"\n" + b"z" * 12 + b"\n" + b'{"c": 3}'

    async def run() -> list[bytes | None]:
        async def chunks():  # noqa: ANN202
            for i in range(0, len(raw), size):
                yield raw[i : i + size]

        return [line async for lines in split_lines(chunks(), 11) for line in lines]

    assert asyncio.run(run()) == [b'{"a": 1}', None, b'{"b": 2}\r', b"y" * 11, None, b'{"c": 3}']


@pytest.mark.parametrize("kind", ["text", "vector", "image"])
def test_the_writer_s_lines_parse_back_to_the_block(kind: str) -> None:
    """ndjson.block_lines and ndjson.parse_line are the two directions of one format."""
    inputs: Any = {
        "text": ["caf\u00e9 au lait", "a\nb"],
        "vector": np.array([[0.1, -2.5, 3e30], [0.0, 1.0, -0.0]], np.float32),
        "image": np.array([[[0, 255], [7, 8]], [[1, 2], [3, 4]]], np.uint8),
    }[kind]
    metadata = [{"label": "x", "big": 2**70}, {}]
    block = Block(["a", "b\u2028c"], inputs, ["x", None], metadata, kind)
    rows = [ndjson.parse_line(line.rstrip(b"\n"), Settings()) for line in ndjson.block_lines(block)]
    assert [row.id for row in rows] == block.ids
    assert [row.metadata for row in rows] == [metadata[0], None]  # empty metadata is not sent
    if kind == "text":
        assert [row.input for row in rows] == inputs
    else:
        assert np.array_equal(np.stack([row.input for row in rows]), inputs.reshape(2, -1).astype(np.float32))


# ---- hamdex index --server against a real server ------------------------------------------------------------------


@pytest.fixture
def server(dense_model_dir: Path, tmp_path: Path) -> Any:
    port = free_port()
    env = {
        **os.environ,
        "HAMDEX_API_KEYS": KEYS,
        "HAMDEX_MAX_BATCH": "50",  # the server's blocks: 50 rows
        "HAMDEX_COLLECTIONS_DIR": str(tmp_path / "collections"),
        "HAMDEX_MODELS_DIR": str(tmp_path / "models"),
        "HAMDEX_JSON_LOGS": "false",
    }
    cmd = [
        sys.executable,
        "-m",
        "hamdex.service.cli",
        "serve",
        "-m",
        str(dense_model_dir),
        "-c",
        str(tmp_path / "served"),
    ]
    log = open(tmp_path / "server.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        [*cmd, "--port", str(port), "--device", "cpu"], stdout=log, stderr=subprocess.STDOUT, env=env
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, proc)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        log.close()


def test_cli_streams_to_a_server_and_resumes(
    server: str, dense_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    n = 400
    x = np.random.default_rng(3).standard_normal((n, D)).astype(np.float32)
    x[7, 0], x[250, 3] = np.nan, np.inf
    np.save(tmp_path / "x.npy", x)
    data = str(tmp_path / "x.npy")
    args = [data, "--server", server, "--batch-size", "40"]
    admin = httpx.Client(base_url=server, headers=bearer(ADMIN))

    refused = run_index(*args, "--api-key", READER)
    assert refused.exit_code == 2 and "403 forbidden" in refused.output, refused.output
    assert run_index(*args).exit_code == 2  # no key: 401

    # a run that dies after sending 6 blocks (240 rows): the server keeps the blocks of 50 it committed (uvicorn
    # drops what it had received but not handed over yet when the connection goes)
    real = ndjson.block_lines
    sent = []

    def dying(block: Any) -> Any:
        if len(sent) == 6:
            time.sleep(0.3)  # let the server read most of it
            raise RuntimeError("killed")
        sent.append(len(block))
        return real(block)

    monkeypatch.setattr(ndjson, "block_lines", dying)
    monkeypatch.setenv("HAMDEX_API_KEY", WRITER)
    crashed = run_index(*args)
    assert isinstance(crashed.exception, RuntimeError), crashed.output
    monkeypatch.setattr(ndjson, "block_lines", real)
    with bulk_client.BulkClient(server, api_key=WRITER) as client:
        key = bulk_client.job_key(data, 40, None, client.collection()["fingerprint"])
        jobs = [None, client.job(key)]
        while jobs[-1] != jobs[-2]:  # the server may still be writing a block
            time.sleep(0.2)
            jobs.append(client.job(key))
    job = jobs[-1]
    assert job is not None and 0 < job["items"] <= 240 and job["items"] % 50 == 0 and not job["done"], jobs
    committed = admin.get("/info").json()["count"]
    assert committed == job["items"] - 1  # row 7 was skipped

    report = tmp_path / "report.json"
    resumed = run_index(*args, "--report", str(report))
    assert resumed.exit_code == 0, resumed.output
    assert f"resumed after {job['items']} items" in resumed.output
    summary = json.loads(report.read_text())
    assert summary["items"] == n - job["items"] - 1 and summary["collection_count"] == n - 2
    assert summary["reasons"] == {"non_finite": 1} and summary["examples"]["non_finite"][0]["row"] == 250
    assert admin.get("/info").json()["count"] == n - 2
    again = run_index(*args)
    assert again.exit_code == 0 and "already finished" in again.output, again.output

    # the codes equal those of the local job
    local = tmp_path / "local"
    assert run_index(data, "-m", str(dense_model_dir), "-c", str(local), "--device", "cpu").exit_code == 0
    with Collection.open(local) as coll:
        for item_id in ("0", "8", "249", "399"):
            code = admin.get(f"/v1/items/{item_id}", params={"format": "hex"}).json()["code"]
            assert code == coll.get(item_id).code.tobytes().hex(), item_id

    # a named collection, and --strict: the server refuses the first row the model cannot take
    assert admin.post("/v1/collections", json={"name": "named"}).status_code == 201
    named = run_index(data, "--server", server, "--name", "named", "--limit", "100")
    assert named.exit_code == 0 and "indexed 99 items" in named.output, named.output
    wide = np.random.default_rng(4).standard_normal((20_000, D + 1)).astype(np.float32)
    np.save(tmp_path / "wide.npy", wide)
    strict = run_index(str(tmp_path / "wide.npy"), "--server", server, "--name", "named", "--strict")
    assert strict.exit_code == 2 and "422 input_shape" in strict.output, strict.output
    assert admin.get("/v1/collections/named").json()["count"] == 99
