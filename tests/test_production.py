"""The production features of the service, through the HTTP API: API keys and scopes, every size limit and the
timeout with its error type, micro-batching (concurrent requests get exactly their single-request answers, and
they are coalesced), backpressure (429 queue_full, then recovery), /metrics, request ids, timing headers, JSON
logs, base64 float32 input, and the ``serve`` command's refusal to run an open API on the network.

Most tests use ``make_client`` (a started TestClient). The concurrency tests run the app's lifespan and an
``httpx.AsyncClient`` over ``ASGITransport`` in one event loop, so the requests really are in flight together.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import logging
import re
import sys
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from hamdex.models import checkpoint
from hamdex.models.hasher import Hasher
from hamdex.service import cli
from hamdex.service.app import create_app
from hamdex.service.auth import KeyConfigError
from hamdex.service.logs import JsonFormatter
from typer.testing import CliRunner

import hamdex
from tests.conftest import MakeClient, dense_vectors, settings_for
from tests.helpers import ADMIN, KEYS, READER, WRITER, assert_error, bearer, metric, serving

HEX = re.compile(r"^[0-9a-f]{32}$")


def count(client: TestClient, headers: dict[str, str] | None = None) -> int:
    return client.get("/info", headers=headers).json()["count"]


def codes_items(n: int, seed: int = 0, prefix: str = "item") -> list[dict[str, Any]]:
    """``n`` items with random 16-bit codes (the dense model's length) as hex."""
    codes = np.random.default_rng(seed).integers(0, 256, (n, 2), dtype=np.uint8)
    return [{"id": f"{prefix}-{i}", "code": c.tobytes().hex(), "metadata": {"i": i}} for i, c in enumerate(codes)]


# ---- API keys ---------------------------------------------------------------------------------------------------

SEARCH = ("POST", "/v1/search", {"json": {"queries": [{"code": "0000"}], "k": 1}})
ENCODE = ("POST", "/v1/encode", {"json": {"inputs": dense_vectors(1).tolist()}})
UPSERT = ("POST", "/v1/items", {"json": {"items": codes_items(1)}})
CREATE = ("POST", "/v1/collections", {"json": {"name": "named"}})
DROP = ("DELETE", "/v1/collections/named", {})


def test_keys_guard_read_write_and_admin_routes(make_client: MakeClient, dense_model_dir: Path) -> None:
    client = make_client(dense_model_dir, api_keys=KEYS)
    # (route, keys that lack its scope, a key that has it, its success status)
    routes = [
        (SEARCH, [], READER, 200),  # every scope implies read: no key lacks it
        (ENCODE, [], READER, 200),
        (UPSERT, [READER], WRITER, 200),
        (CREATE, [READER, WRITER], ADMIN, 201),
        (DROP, [READER, WRITER], ADMIN, 200),
    ]
    for (method, path, kwargs), lacking, allowed, ok in routes:
        for headers in ({}, bearer("unknown-key-0123456789"), bearer(""), {"Authorization": f"Basic {ADMIN}"}):
            resp = client.request(method, path, headers=headers, **kwargs)
            assert_error(resp, 401, "unauthorized")
            assert resp.headers["www-authenticate"] == "Bearer"
        for key in lacking:
            body = assert_error(client.request(method, path, headers=bearer(key), **kwargs), 403, "forbidden")
            assert key not in body["error"]  # the secret is never echoed
        assert client.request(method, path, headers=bearer(allowed), **kwargs).status_code == ok, (method, path)
    # the refused writes changed nothing; the allowed one did
    assert count(client, bearer(READER)) == 1
    names = [c["name"] for c in client.get("/v1/collections", headers=bearer(READER)).json()["collections"]]
    assert names == ["default"]


def test_bearer_scheme_is_case_insensitive_and_the_key_exact(make_client: MakeClient, dense_model_dir: Path) -> None:
    client = make_client(dense_model_dir, api_keys=KEYS)
    method, path, kwargs = SEARCH
    assert client.request(method, path, headers={"Authorization": f"bearer {READER}"}, **kwargs).status_code == 200
    assert_error(client.request(method, path, headers=bearer(READER[:-1]), **kwargs), 401, "unauthorized")
    assert_error(client.request(method, path, headers=bearer(READER + "0"), **kwargs), 401, "unauthorized")


def test_open_reads_lets_reads_through_but_not_writes(make_client: MakeClient, dense_model_dir: Path) -> None:
    client = make_client(dense_model_dir, api_keys=KEYS, open_reads=True)
    for method, path, kwargs in (SEARCH, ENCODE):
        assert client.request(method, path, **kwargs).status_code == 200, path
    for path in ("/info", "/metrics", "/v1/collections", "/v1/items/x"):  # reads it does not open (its docs)
        assert_error(client.get(path), 401, "unauthorized")
    for method, path, kwargs in (UPSERT, CREATE):
        assert_error(client.request(method, path, **kwargs), 401, "unauthorized")
    assert_error(client.request(*UPSERT[:2], headers=bearer(READER), **UPSERT[2]), 403, "forbidden")
    assert count(client, bearer(READER)) == 0


def test_without_keys_every_route_is_open(make_client: MakeClient, dense_model_dir: Path) -> None:
    client = make_client(dense_model_dir)
    for (method, path, kwargs), ok in ((SEARCH, 200), (ENCODE, 200), (UPSERT, 200), (CREATE, 201), (DROP, 200)):
        assert client.request(method, path, **kwargs).status_code == ok, (method, path)
    assert client.get("/metrics").status_code == 200
    assert count(client) == 1


def test_probes_need_no_key_and_metrics_needs_one(make_client: MakeClient, dense_model_dir: Path) -> None:
    client = make_client(dense_model_dir, api_keys=KEYS)
    for path in ("/livez", "/readyz", "/health"):
        assert client.get(path).status_code == 200, path
    assert_error(client.get("/metrics"), 401, "unauthorized")
    assert client.get("/metrics", headers=bearer(READER)).status_code == 200


def test_keys_from_a_file_with_digests(make_client: MakeClient, dense_model_dir: Path, tmp_path: Path) -> None:
    file = tmp_path / "keys"
    file.write_text(f"# ops\nsha256:{hashlib.sha256(ADMIN.encode()).hexdigest()} admin\n\n{READER} read\n")
    client = make_client(dense_model_dir, api_keys_file=file, api_keys=f"{WRITER} write")  # both sources count
    assert client.request(*CREATE[:2], headers=bearer(ADMIN), **CREATE[2]).status_code == 201
    assert client.request(*UPSERT[:2], headers=bearer(WRITER), **UPSERT[2]).status_code == 200
    assert_error(client.request(*UPSERT[:2], headers=bearer(READER), **UPSERT[2]), 403, "forbidden")
    digest = hashlib.sha256(ADMIN.encode()).hexdigest()
    assert_error(client.request(*SEARCH[:2], headers=bearer(f"sha256:{digest}"), **SEARCH[2]), 401, "unauthorized")


@pytest.mark.parametrize(
    "overrides",
    [
        {"api_keys": "short-key read"},
        {"api_keys": f"{READER} root"},
        {"api_keys": f"{READER}"},
        {"api_keys": f"{READER} read;sha256:abcd admin"},
        {"api_keys_file": Path("/nonexistent/hamdex-keys")},
    ],
)
def test_malformed_key_config_refuses_to_start(dense_model_dir: Path, tmp_path: Path, overrides: dict) -> None:
    with pytest.raises(KeyConfigError):
        create_app(settings_for(dense_model_dir, tmp_path, **overrides))


# ---- limits -----------------------------------------------------------------------------------------------------


def test_body_size_limit_by_content_length(make_client: MakeClient, dense_model_dir: Path) -> None:
    client = make_client(dense_model_dir, max_body_bytes=1024)
    body = json.dumps({"items": codes_items(40)}).encode()
    assert len(body) > 1024
    resp = client.post("/v1/items", content=body, headers={"content-type": "application/json"})
    assert_error(resp, 413, "body_too_large")
    assert resp.headers["x-request-id"]
    small = json.dumps({"items": codes_items(3)}).encode()
    assert len(small) < 1024
    assert client.post("/v1/items", content=small, headers={"content-type": "application/json"}).status_code == 200
    assert count(client) == 3


def test_body_size_limit_on_a_chunked_body(dense_model_dir: Path, tmp_path: Path) -> None:
    """No Content-Length: the middleware counts the body as it is read (httpx's ASGITransport sends the chunks as
    separate ASGI messages)."""
    app = create_app(settings_for(dense_model_dir, tmp_path, max_body_bytes=1024))
    body = json.dumps({"items": codes_items(40)}).encode()

    async def chunks(data: bytes) -> AsyncIterator[bytes]:
        for i in range(0, len(data), 256):
            yield data[i : i + 256]

    async def run() -> tuple[httpx.Response, httpx.Response, int]:
        async with serving(app) as client:
            headers = {"content-type": "application/json"}
            big = await client.post("/v1/items", content=chunks(body), headers=headers)
            assert "content-length" not in big.request.headers
            small = json.dumps({"items": codes_items(3)}).encode()
            ok = await client.post("/v1/items", content=chunks(small), headers=headers)
            return big, ok, (await client.get("/info")).json()["count"]

    big, ok, n = asyncio.run(run())
    assert_error(big, 413, "body_too_large")
    assert ok.status_code == 200, ok.text
    assert n == 3


def test_batch_size_limits(make_client: MakeClient, dense_model_dir: Path) -> None:
    client = make_client(dense_model_dir, max_batch=4)
    five = dense_vectors(5).tolist()
    assert_error(client.post("/v1/encode", json={"inputs": five}), 422, "batch_too_large")
    packed = {"data": base64.b64encode(dense_vectors(5).astype("<f4").tobytes()).decode(), "shape": [5, 12]}
    assert_error(client.post("/v1/encode", json={"inputs_b64": packed}), 422, "batch_too_large")
    assert_error(client.post("/v1/items", json={"items": codes_items(5)}), 422, "batch_too_large")
    queries = [{"code": "0000"}] * 5
    assert_error(client.post("/v1/search", json={"queries": queries}), 422, "batch_too_large")
    assert_error(client.post("/v1/encode", json={"inputs": []}), 422, "empty_batch")
    assert client.post("/v1/encode", json={"inputs": five[:4]}).status_code == 200
    assert client.post("/v1/items", json={"items": codes_items(4)}).status_code == 200
    assert client.post("/v1/search", json={"queries": queries[:4]}).status_code == 200
    assert count(client) == 4


def test_k_and_radius_limits(make_client: MakeClient, dense_model_dir: Path) -> None:
    client = make_client(dense_model_dir, max_k=5)
    client.post("/v1/items", json={"items": codes_items(8)})
    query = {"queries": [{"code": "0000"}], "k": 5}
    for k in (0, -1, 6, 2**70):
        assert_error(client.post("/v1/search", json={**query, "k": k}), 422, "k_out_of_range")
    for radius in (-1, 17, 2**70):  # 16-bit codes
        assert_error(client.post("/v1/search", json={**query, "radius": radius}), 422, "radius_out_of_range")
    assert len(client.post("/v1/search", json={**query, "k": 5}).json()["results"][0]) == 5
    hits = client.post("/v1/search", json={**query, "k": 5, "radius": 16}).json()["results"][0]
    assert len(hits) == 5


def test_text_length_limit(make_client: MakeClient, text_model_dir: Path) -> None:
    client = make_client(text_model_dir, max_text_chars=20)
    long, ok = "goal " * 5, "goal team match"  # 25 and 15 characters
    assert_error(client.post("/v1/encode", json={"inputs": [ok, long]}), 422, "text_too_long")
    items = {"items": [{"id": "a", "input": ok}, {"id": "b", "input": long}]}
    assert_error(client.post("/v1/items", json=items), 422, "text_too_long")
    assert_error(client.post("/v1/search", json={"queries": [{"input": long}]}), 422, "text_too_long")
    assert client.post("/v1/encode", json={"inputs": [ok, "x" * 20]}).status_code == 200  # at the limit: fine
    assert count(client) == 0


def test_metadata_size_limit(make_client: MakeClient, dense_model_dir: Path) -> None:
    client = make_client(dense_model_dir, max_metadata_bytes=32)
    fits = {"id": "a", "code": "0000", "metadata": {"k": "x" * 20}}  # 28 bytes as compact JSON
    big = {"id": "b", "code": "0000", "metadata": {"k": "x" * 30}}  # 38 bytes
    body = assert_error(client.post("/v1/items", json={"items": [fits, big]}), 422, "metadata_too_large")
    assert "items[1]" in body["error"]
    assert count(client) == 0
    assert client.post("/v1/items", json={"items": [fits]}).status_code == 200
    assert count(client) == 1


def test_metadata_with_integers_beyond_64_bits(make_client: MakeClient, dense_model_dir: Path) -> None:
    """Valid JSON the collection stores: measuring it (orjson) and filtering on it (SQLite) used to fail with 500."""
    client = make_client(dense_model_dir, max_metadata_bytes=64)
    huge = 2**70
    items = [{"id": "a", "code": "0000", "metadata": {"n": huge}}, {"id": "b", "code": "0000", "metadata": {"n": 1}}]
    assert client.post("/v1/items", json={"items": items}).status_code == 200
    assert client.get("/v1/items/a").json()["metadata"] == {"n": huge}
    resp = client.post("/v1/search", json={"queries": [{"code": "0000"}], "filter": {"n": huge}})
    assert resp.status_code == 200, resp.text
    assert [h["id"] for h in resp.json()["results"][0]] == ["a"]
    too_big = {"id": "c", "code": "0000", "metadata": {"n": [huge] * 4}}  # 94 bytes
    assert_error(client.post("/v1/items", json={"items": [too_big]}), 422, "metadata_too_large")


def test_request_timeout(make_client: MakeClient, dense_model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    client = make_client(dense_model_dir, request_timeout_s=0.5)
    release = threading.Event()
    original = Hasher.encode_features

    def slow(self: Hasher, *args: Any, **kwargs: Any) -> Any:
        release.wait(10)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Hasher, "encode_features", slow)
    resp = client.post("/v1/encode", json={"inputs": dense_vectors(2).tolist()}, headers={"X-Request-ID": "slow-1"})
    assert_error(resp, 504, "timeout")
    assert resp.headers["x-request-id"] == "slow-1"
    release.set()
    monkeypatch.setattr(Hasher, "encode_features", original)
    assert client.post("/v1/encode", json={"inputs": dense_vectors(2).tolist()}).status_code == 200
    text = client.get("/metrics").text
    assert metric(text, "hamdex_http_requests_total", route="/v1/encode", status="504") == 1


def test_index_parameters_beyond_what_faiss_takes(make_client: MakeClient, dense_model_dir: Path) -> None:
    """Used to reach FAISS and fail there with 500 (OverflowError / TypeError)."""
    client = make_client(dense_model_dir)
    for kind, params in (("hnsw", {"m": 2**40}), ("multihash", {"nhash": 2**70}), ("ivf", {"nlist": 2**31})):
        resp = client.post("/v1/collections", json={"name": kind, "index_kind": kind, "index_params": params})
        assert_error(resp, 422, "invalid_index_params")
    assert client.post("/v1/collections", json={"name": "ivf", "index_kind": "ivf"}).status_code == 201
    for name, param in (("ivf", "nprobe"), ("default", "ef_search")):
        query = {"queries": [{"code": "0000"}], param: 2**40}
        assert_error(client.post(f"/v1/collections/{name}/search", json=query), 422, "validation_error")


# ---- micro-batching ---------------------------------------------------------------------------------------------


def test_concurrent_requests_get_their_own_answers_and_are_coalesced(dense_model_dir: Path, tmp_path: Path) -> None:
    app = create_app(settings_for(dense_model_dir, tmp_path, batch_max_wait_ms=20))
    rng = np.random.default_rng(3)
    encodes = [{"inputs": dense_vectors(int(rng.integers(1, 4)), seed=100 + i).tolist()} for i in range(24)]
    searches = []
    for i in range(24):
        codes = rng.integers(0, 256, (int(rng.integers(1, 4)), 2), dtype=np.uint8)
        queries = [{"code": c.tobytes().hex()} for c in codes]
        if i % 3 == 0:  # raw inputs: through the encode batcher, then the search batcher
            queries.append({"input": dense_vectors(1, seed=200 + i)[0].tolist()})
        searches.append({"queries": queries, "k": 4, "include_metadata": bool(i % 2)})
    requests = [("/v1/encode", body) for body in encodes] + [("/v1/search", body) for body in searches]

    async def run() -> tuple[list[dict], list[dict], str, str]:
        async with serving(app) as client:
            resp = await client.post("/v1/items", json={"items": codes_items(200, seed=1)})
            assert resp.status_code == 200, resp.text
            single = []
            for path, body in requests:  # one at a time: every batch holds one request
                resp = await client.post(path, json=body)
                assert resp.status_code == 200, resp.text
                single.append(resp.json())
            before = (await client.get("/metrics")).text
            responses = await asyncio.gather(*(client.post(path, json=body) for path, body in requests))
            assert all(r.status_code == 200 for r in responses), [r.text for r in responses if r.status_code != 200]
            after = (await client.get("/metrics")).text
            return single, [r.json() for r in responses], before, after

    single, together, before, after = asyncio.run(run())
    assert together == single
    # every input went through the batchers; fewer batches than requests means some batch held several
    n_encode_items = sum(len(b["inputs"]) for b in encodes) + sum(
        1 for b in searches for q in b["queries"] if "input" in q
    )
    n_encode_requests = len(encodes) + sum(1 for b in searches if any("input" in q for q in b["queries"]))
    n_search_items = sum(len(b["queries"]) for b in searches)

    def delta(name: str, batcher: str) -> float:
        return metric(after, name, batcher=batcher) - metric(before, name, batcher=batcher)

    assert delta("hamdex_batch_items_sum", "encode") == n_encode_items
    assert delta("hamdex_batch_items_sum", "search") == n_search_items
    assert 1 <= delta("hamdex_batch_items_count", "encode") < n_encode_requests
    assert 1 <= delta("hamdex_batch_items_count", "search") < len(searches)
    # and the one-at-a-time phase had one batch per request (so the check above can fail)
    assert metric(before, "hamdex_batch_items_count", batcher="search") == len(searches)


def test_full_queue_answers_429_then_recovers(
    dense_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = create_app(settings_for(dense_model_dir, tmp_path, queue_max_items=2, batch_max_wait_ms=0))
    entered, release = threading.Event(), threading.Event()
    original = Hasher.encode_features

    def blocking(self: Hasher, *args: Any, **kwargs: Any) -> Any:
        entered.set()
        release.wait(10)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Hasher, "encode_features", blocking)
    one, two = {"inputs": dense_vectors(1).tolist()}, {"inputs": dense_vectors(2, seed=5).tolist()}

    async def until(condition: Callable[[], bool]) -> None:
        for _ in range(500):
            if condition():
                return
            await asyncio.sleep(0.01)
        raise AssertionError("timed out")

    async def run() -> dict[str, Any]:
        async with serving(app) as client:
            running = asyncio.create_task(client.post("/v1/encode", json=one))  # runs, blocked in the model
            await until(entered.is_set)
            queued = asyncio.create_task(client.post("/v1/encode", json=one))  # waits in the queue: 1 of 2 items
            await until(lambda: app.state.engine.encoder.queued_items == 1)
            refused = await client.post("/v1/encode", json=two)  # 1 + 2 > 2
            search = await client.post("/v1/search", json={"queries": [{"input": v} for v in two["inputs"]]})
            release.set()
            waited = await asyncio.gather(running, queued)
            after = await client.post("/v1/encode", json=two)
            metrics = (await client.get("/metrics")).text
            return {"refused": [refused, search], "waited": waited, "after": after, "metrics": metrics}

    got = asyncio.run(run())
    for resp in got["refused"]:  # a search with raw inputs needs the encode queue too
        assert_error(resp, 429, "queue_full")
        assert int(resp.headers["retry-after"]) >= 1
    assert [r.status_code for r in got["waited"]] == [200, 200]  # the requests already admitted complete
    assert got["after"].status_code == 200 and len(got["after"].json()["codes"]) == 2  # and the service recovers
    metrics = got["metrics"]
    assert metric(metrics, "hamdex_rejected_requests_total", batcher="encode") == 2
    assert metric(metrics, "hamdex_http_requests_total", route="/v1/encode", status="429") == 1


# ---- observability ----------------------------------------------------------------------------------------------


def test_metrics_exposition(make_client: MakeClient, dense_model_dir: Path) -> None:
    client = make_client(dense_model_dir)
    client.post("/v1/items", json={"items": codes_items(3)})
    client.post("/v1/search", json={"queries": [{"code": "0000"}]})
    client.post("/v1/collections", json={"name": "named"})
    client.post("/v1/collections/named/search", json={"queries": [{"code": "0000"}]})
    client.post("/v1/encode", json={"inputs": dense_vectors(2).tolist()})
    client.get("/v1/items/item-1")
    client.get("/v1/items/no-such-item")
    client.get("/no/such/route")
    resp = client.get("/metrics")
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/plain")
    text = resp.text

    requests = "hamdex_http_requests_total"
    assert metric(text, requests, route="/v1/search", method="POST", status="200") == 1
    assert metric(text, requests, route="/v1/collections/{name}/search", method="POST", status="200") == 1
    assert metric(text, requests, route="/v1/items/{item_id}", method="GET", status="200") == 1
    assert metric(text, requests, route="/v1/items/{item_id}", method="GET", status="404") == 1
    assert metric(text, requests, route="unmatched", method="GET", status="404") == 1
    assert "item-1" not in text and "no-such-item" not in text  # templates, not raw paths
    latency = "hamdex_http_request_duration_seconds"
    assert metric(text, f"{latency}_count", route="/v1/encode", method="POST") == 1
    assert metric(text, f"{latency}_bucket", route="/v1/encode", method="POST", le="+Inf") == 1
    assert metric(text, "hamdex_queue_wait_seconds_count", batcher="encode") == 1
    assert metric(text, "hamdex_queue_wait_seconds_count", batcher="search") == 2
    assert metric(text, "hamdex_batch_items_sum", batcher="encode") == 2
    assert metric(text, "hamdex_batch_duration_seconds_count", batcher="search") == 2
    assert metric(text, "hamdex_collection_items", collection="default") == 3 == count(client)
    assert metric(text, "hamdex_collection_items", collection="named") == 0
    assert metric(text, "process_resident_memory_bytes") > 1e6
    errors = "hamdex_http_request_errors_total"
    assert metric(text, errors, route="/v1/items/{item_id}", method="GET", error_type="item_not_found") == 1
    assert metric(text, errors, route="unmatched", method="GET", error_type="not_found") == 1
    assert metric(text, "hamdex_build_info", version=hamdex.__version__) == 1
    assert "_created" not in text  # no creation-time series beside each counter and histogram


def test_request_id_is_echoed_or_generated(make_client: MakeClient, dense_model_dir: Path) -> None:
    client = make_client(dense_model_dir, api_keys=KEYS)
    assert client.get("/livez", headers={"X-Request-ID": "abc-123.x:y_z"}).headers["x-request-id"] == "abc-123.x:y_z"
    generated = {client.get("/livez").headers["x-request-id"] for _ in range(2)}
    assert len(generated) == 2 and all(HEX.match(g) for g in generated)
    for insane in ("has space", "x" * 129, "semi;colon", "é"):
        got = client.get("/livez", headers={"X-Request-ID": insane.encode("utf-8")}).headers["x-request-id"]
        assert HEX.match(got), insane
    resp = client.post("/v1/search", json={"queries": []}, headers={"X-Request-ID": "on-error"})
    assert_error(resp, 401, "unauthorized")  # errors, even from the auth check, carry it too
    assert resp.headers["x-request-id"] == "on-error"


def test_timing_headers(make_client: MakeClient, dense_model_dir: Path) -> None:
    client = make_client(dense_model_dir)
    client.post("/v1/items", json={"items": codes_items(3)})
    names = ("x-queue-ms", "x-encode-ms", "x-search-ms")
    encode = client.post("/v1/encode", json={"inputs": dense_vectors(2).tolist()}).headers
    search = client.post("/v1/search", json={"queries": [{"input": dense_vectors(1)[0].tolist()}]}).headers
    by_code = client.post("/v1/search", json={"queries": [{"code": "0000"}]}).headers
    livez = client.get("/livez").headers
    for headers in (encode, search, by_code, livez):
        for name in names:
            assert float(headers[name]) >= 0, (name, headers[name])
    assert float(encode["x-encode-ms"]) > 0 and float(encode["x-search-ms"]) == 0
    assert float(search["x-encode-ms"]) > 0 and float(search["x-search-ms"]) > 0
    assert float(by_code["x-encode-ms"]) == 0 and float(by_code["x-search-ms"]) > 0
    assert all(float(livez[name]) == 0 for name in names)


def test_access_log_is_json_with_the_request_id(
    make_client: MakeClient, dense_model_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    client = make_client(dense_model_dir)
    with caplog.at_level(logging.INFO, logger="hamdex.access"):
        client.post("/v1/search", json={"queries": [{"code": "0000"}]}, headers={"X-Request-ID": "log-me"})
    records = [r for r in caplog.records if r.name == "hamdex.access" and getattr(r, "request_id", None) == "log-me"]
    assert len(records) == 1
    entry = json.loads(JsonFormatter().format(records[0]))
    assert entry["request_id"] == "log-me" and entry["route"] == "/v1/search" and entry["status"] == 200
    assert entry["level"] == "info" and entry["logger"] == "hamdex.access" and entry["ms"] >= 0
    assert "POST /v1/search 200" in entry["message"]
    # an exception is kept, as text, in the same single line
    try:
        raise ValueError("boom")
    except ValueError:
        record = logging.getLogger("x").makeRecord("x", logging.ERROR, __file__, 1, "failed", (), sys.exc_info())
    line = JsonFormatter().format(record)
    assert "\n" not in line and "ValueError: boom" in json.loads(line)["exception"]


# ---- base64 float32 input ---------------------------------------------------------------------------------------


def packed(array: np.ndarray) -> dict[str, Any]:
    return {"data": base64.b64encode(array.astype("<f4").tobytes()).decode(), "shape": list(array.shape)}


@pytest.mark.parametrize("fmt", ["hex", "bits"])
def test_base64_vectors_equal_json_arrays(make_client: MakeClient, dense_model_dir: Path, fmt: str) -> None:
    client = make_client(dense_model_dir)
    vectors = dense_vectors(7, seed=9)  # float32: the JSON floats below are the same numbers
    as_json = client.post("/v1/encode", json={"inputs": vectors.tolist(), "format": fmt, "latent": True})
    as_b64 = client.post("/v1/encode", json={"inputs_b64": packed(vectors), "format": fmt, "latent": True})
    assert as_json.status_code == as_b64.status_code == 200, as_b64.text
    assert as_b64.json() == as_json.json()
    offline = checkpoint.load(dense_model_dir, "cpu").encode(vectors).codes
    assert as_b64.json()["codes"][0] == (offline[0].tobytes().hex() if fmt == "hex" else as_json.json()["codes"][0])


def test_bad_base64_vectors(make_client: MakeClient, dense_model_dir: Path) -> None:
    client = make_client(dense_model_dir)
    good = packed(dense_vectors(3))
    short = {**good, "data": base64.b64encode(dense_vectors(3).astype("<f4").tobytes()[:-4]).decode()}
    assert_error(client.post("/v1/encode", json={"inputs_b64": short}), 422, "input_shape")
    assert_error(client.post("/v1/encode", json={"inputs_b64": {**good, "shape": [3, 11]}}), 422, "input_shape")
    huge = {"data": "", "shape": [1 << 16] * 4}  # 2**64 values: np.prod used to wrap around to 0, then 500
    assert_error(client.post("/v1/encode", json={"inputs_b64": huge}), 422, "input_shape")
    assert_error(client.post("/v1/encode", json={"inputs_b64": {**good, "data": "!!not base64"}}), 422, "invalid_input")
    nan = packed(np.full((1, 12), np.nan, np.float32))
    assert_error(client.post("/v1/encode", json={"inputs_b64": nan}), 422, "non_finite")
    both = {"inputs": dense_vectors(3).tolist(), "inputs_b64": good}
    assert_error(client.post("/v1/encode", json=both), 422, "validation_error")
    assert_error(client.post("/v1/encode", json={"format": "hex"}), 422, "validation_error")
    assert_error(client.post("/v1/encode", json={"inputs_b64": {**good, "shape": [36]}}), 422, "validation_error")


# ---- the serve command ------------------------------------------------------------------------------------------


@pytest.fixture
def served(monkeypatch: pytest.MonkeyPatch) -> list[dict]:
    """Calls of uvicorn.run (nothing is served), with the HAMDEX_* key variables cleared and logging untouched."""
    calls: list[dict] = []
    monkeypatch.setattr("uvicorn.run", lambda app, **kwargs: calls.append(kwargs))
    monkeypatch.setattr("hamdex.service.logs.configure", lambda *args, **kwargs: None)
    for name in ("HAMDEX_API_KEYS", "HAMDEX_API_KEYS_FILE", "HAMDEX_ALLOW_UNAUTHENTICATED", "HAMDEX_HOST"):
        monkeypatch.delenv(name, raising=False)
    return calls


def test_serve_refuses_an_open_api_on_the_network(served: list[dict]) -> None:
    result = CliRunner().invoke(cli.app, ["serve", "--host", "0.0.0.0"])
    assert result.exit_code == 2, result.output
    assert "refusing to serve on 0.0.0.0 without API keys" in " ".join(result.output.split())
    assert served == []


@pytest.mark.parametrize(
    ("host", "env"),
    [
        ("127.0.0.1", {}),
        ("localhost", {}),
        ("::1", {}),
        ("0.0.0.0", {"HAMDEX_API_KEYS": f"{ADMIN} admin"}),
        ("0.0.0.0", {"HAMDEX_ALLOW_UNAUTHENTICATED": "true"}),
    ],
)
def test_serve_starts_on_loopback_with_keys_or_when_allowed(
    served: list[dict], monkeypatch: pytest.MonkeyPatch, host: str, env: dict[str, str]
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    result = CliRunner().invoke(cli.app, ["serve", "--host", host, "--port", "8123"])
    assert result.exit_code == 0, result.output
    assert [(c["host"], c["port"]) for c in served] == [(host, 8123)]


def test_serve_refuses_malformed_keys(served: list[dict], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HAMDEX_API_KEYS", "short read")
    result = CliRunner().invoke(cli.app, ["serve"])
    assert result.exit_code == 2 and "at least 16 characters" in result.output
    assert served == []
