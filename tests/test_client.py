"""hamdex.Client and hamdex.AsyncClient against a real server (uvicorn in a thread, as tests/test_readme.py runs
one) on the tiny fixture models: every method, typed errors, the same answers from both clients; the retry policy
against a local httpx MockTransport that answers 429 (or 503) before 200."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from hamdex.models import checkpoint
from hamdex.models.data import DataFormatError
from hamdex.service.app import create_app

import hamdex
from hamdex import client as hc
from tests.conftest import dense_vectors, settings_for, synthetic_texts
from tests.helpers import free_port, popcount_distances, run_index, server_thread


def _serve(settings) -> Iterator[str]:  # noqa: ANN001
    with server_thread(create_app(settings)) as url:
        yield url


@pytest.fixture(scope="module")
def text_server(text_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    yield from _serve(settings_for(text_model_dir, tmp_path_factory.mktemp("text-server")))


@pytest.fixture(scope="module")
def dense_server(dense_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    yield from _serve(settings_for(dense_model_dir, tmp_path_factory.mktemp("dense-server")))


TEXTS = synthetic_texts()[:12]
IDS = [f"doc/{i}" for i in range(len(TEXTS))]  # a '/' travels quoted in the item's URL


def test_encode_upsert_get_search_delete(text_server: str, text_model_dir: Path) -> None:
    hasher = checkpoint.load(text_model_dir, "cpu")
    with hamdex.Client(text_server) as client:
        encoded = client.encode(TEXTS, latent=True)
        assert encoded.codes.dtype == np.uint8 and encoded.codes.shape == (len(TEXTS), hasher.n_bits // 8)
        np.testing.assert_array_equal(encoded.codes, hasher.encode(TEXTS).codes)
        assert encoded.latent is not None and encoded.latent.dtype == np.float32
        assert encoded.latent.shape == (len(TEXTS), hasher.n_bits) and encoded.fingerprint == hasher.fingerprint
        assert client.encode(TEXTS[0]).codes.shape == (1, hasher.n_bits // 8)

        metadata = [{"topic": i % 2} for i in range(len(TEXTS))]
        done = client.upsert(IDS[:6], TEXTS[:6], metadata=metadata[:6])
        assert (done.upserted, done.inserted, done.updated) == (6, 6, 0)
        done = client.upsert(IDS[6:], codes=encoded.codes[6:], metadata=metadata[6:], fingerprint=hasher.fingerprint)
        assert (done.upserted, done.inserted) == (6, 6)

        item = client.get("doc/7")
        assert item.id == "doc/7" and item.metadata == {"topic": 1}
        np.testing.assert_array_equal(item.code, encoded.codes[7])

        # every hit's distance is the popcount of the XOR: by code, by input, by stored id
        by_code = client.search(codes=encoded.codes[:2], k=len(TEXTS))
        for query, hits in zip(encoded.codes[:2], by_code, strict=True):
            want = popcount_distances(query, encoded.codes[[IDS.index(h.id) for h in hits]])
            assert [h.distance for h in hits] == want.tolist() == sorted(want.tolist())
            assert len(hits) == len(TEXTS)
        assert client.search(TEXTS[:2], k=len(TEXTS)) == by_code
        assert client.search(ids=IDS[:2], k=len(TEXTS)) == by_code
        assert client.search(ids=np.array(IDS[:1]), k=len(TEXTS)) == client.search(ids=IDS[0], k=len(TEXTS))
        filtered = client.search(codes=encoded.codes[0], k=len(TEXTS), filter={"topic": 1})[0]
        assert filtered and all(h.metadata == {"topic": 1} for h in filtered)
        near = client.search(codes=encoded.codes[0], k=len(TEXTS), radius=2, include_metadata=False)[0]
        assert all(h.distance <= 2 and h.metadata is None for h in near)

        assert client.delete("doc/7").deleted == "doc/7"
        with pytest.raises(hc.NotFound) as err:
            client.get("doc/7")
        assert (err.value.status, err.value.error_type) == (404, "item_not_found")

        info = client.info()
        assert info.fingerprint == hasher.fingerprint and info.n_bits == hasher.n_bits and info.count == 11


def test_collections_and_typed_errors(text_server: str) -> None:
    with hamdex.Client(text_server, collection="notes") as client:
        created = client.create_collection("notes", index_kind="hnsw")
        assert (created.name, created.index_kind, created.count) == ("notes", "hnsw", 0)
        with pytest.raises(hc.Conflict) as err:
            client.create_collection("notes")
        assert (err.value.status, err.value.error_type) == (409, "collection_exists")

        client.upsert(["a", "b"], TEXTS[:2])  # the client's collection
        assert client.get_collection("notes").count == 2
        assert [c.name for c in client.collections().collections if c.name == "notes"] == ["notes"]
        hits = client.search(TEXTS[:1], k=2, ef_search=16)[0]
        assert hits[0].id == "a"
        with pytest.raises(hc.Conflict) as err:
            client.search(TEXTS[:1], nprobe=4)  # hnsw takes ef_search, not nprobe
        assert err.value.error_type == "unsupported_search_param"
        assert client.get("a", collection="notes").id == "a"
        with pytest.raises(hc.NotFound):
            client.get("a", collection="default")

        with pytest.raises(hc.InvalidRequest) as err:
            client.search(TEXTS[:1], k=0)
        assert (err.value.status, err.value.error_type) == (422, "k_out_of_range")
        with pytest.raises(hc.InvalidRequest) as err:  # refused by the schema before it is sent
            client.search()
        assert err.value.status is None and err.value.error_type == "validation_error"
        with pytest.raises(hc.InvalidRequest) as err:
            client.search(codes=np.zeros((1, 3), dtype=np.uint8))  # 24 bits for a 16-bit collection
        assert err.value.status == 422

        assert client.drop_collection("notes").dropped == "notes"
        with pytest.raises(hc.NotFound) as err:
            client.get_collection("notes")
        assert err.value.error_type == "collection_not_found"
        assert isinstance(err.value, hamdex.HamdexError)


def test_unreachable_server_is_unavailable_after_bounded_retries() -> None:
    client = hamdex.Client(f"http://127.0.0.1:{free_port()}", max_retries=2, backoff=0.01)
    t0 = time.monotonic()
    with pytest.raises(hc.Unavailable) as err:
        client.info()
    assert err.value.status is None and err.value.error_type == "connection_error"
    assert time.monotonic() - t0 < 5
    assert client.health() is False


def test_vectors_in_and_out(dense_server: str, dense_model_dir: Path) -> None:
    hasher = checkpoint.load(dense_model_dir, "cpu")
    vectors = dense_vectors(8).astype(np.float32)  # (8, dim)
    with hamdex.Client(dense_server) as client:
        codes = client.encode(vectors).codes  # sent packed (inputs_b64)
        np.testing.assert_array_equal(codes, hasher.encode(vectors).codes)
        np.testing.assert_array_equal(client.encode(vectors[0]).codes, codes[:1])  # one vector
        client.upsert([f"v{i}" for i in range(8)], vectors)
        hits = client.search(vectors[:3], k=1)
        assert [h[0].distance for h in hits] == [0, 0, 0]
        # two- and three-stage ranking in a collection that keeps the vectors
        assert client.create_collection("kept", vectors="float16").vectors == "float16"
        client.upsert([f"v{i}" for i in range(8)], vectors, collection="kept")
        for options in ({"rerank": 8}, {"rerank": 4, "pool": 8}):
            hits = client.search(vectors[:2], k=3, collection="kept", **options)
            assert [h[0].id for h in hits] == ["v0", "v1"]  # each its own best cosine
            assert all(h[0].score == pytest.approx(1.0, abs=1e-3) for h in hits)
        assert all(h.score is None for h in client.search(vectors[:1], k=3, collection="kept")[0])
        with pytest.raises(hc.InvalidRequest):
            client.search(vectors[:1], pool=8)  # a pool without rerank's candidates
        with pytest.raises(hc.InvalidRequest) as err:
            client.search(vectors[:1], rerank=4, pool=1001, collection="kept")  # the server's bound (1000)
        assert err.value.error_type == "rerank_out_of_range"


def test_bulk_upload_resumes_and_skips_a_finished_job(dense_server: str, tmp_path: Path) -> None:
    rows = [{"id": f"b{i}", "vector": v.tolist(), "metadata": {"i": i}} for i, v in enumerate(dense_vectors(30))]
    data = tmp_path / "rows.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in rows))
    with hamdex.Client(dense_server) as client:
        client.create_collection("bulk")
        summary = client.bulk_upload(data, collection="bulk", batch_size=8)
        assert (summary.items, summary.skipped, summary.collection_count) == (30, 0, 30)
        again = client.bulk_upload(data, collection="bulk", batch_size=8)
        assert again.already_done and again.collection_count == 30
        restarted = client.bulk_upload(data, collection="bulk", batch_size=8, restart=True)
        assert restarted.items == 30 and restarted.collection_count == 30
        assert client.get("b29", collection="bulk").metadata == {"i": 29}


def test_async_client_gives_the_same_answers(text_server: str) -> None:
    async def run() -> tuple:
        async with hamdex.AsyncClient(text_server, collection="twin") as client:
            await client.create_collection("twin")
            encoded = await client.encode(TEXTS)
            await client.upsert(IDS, codes=encoded.codes, metadata=[{"n": i} for i in range(len(IDS))])
            await client.upsert(IDS[:1], TEXTS[:1])
            results = (
                await client.search(TEXTS[:3], k=5),
                await client.search(ids=IDS[:3], k=5, radius=8, filter={"n": 1}),
            )
            item = await client.get(IDS[1])
            listed = [c.name for c in (await client.collections()).collections]
            info, one = await client.info(), await client.get_collection("twin")
            assert await client.health()
            deleted = await client.delete(IDS[1])
            with pytest.raises(hc.NotFound):
                await client.get(IDS[1])
            await client.drop_collection("twin")
            return encoded, results, item, listed, info, one, deleted

    encoded, results, item, listed, info, one, deleted = asyncio.run(run())
    with hamdex.Client(text_server, collection="twin") as client:
        client.create_collection("twin")
        assert np.array_equal(client.encode(TEXTS).codes, encoded.codes)
        client.upsert(IDS, codes=encoded.codes, metadata=[{"n": i} for i in range(len(IDS))])
        client.upsert(IDS[:1], TEXTS[:1])
        assert (client.search(TEXTS[:3], k=5), client.search(ids=IDS[:3], k=5, radius=8, filter={"n": 1})) == results
        got = client.get(IDS[1])
        assert (got.id, got.metadata) == (item.id, item.metadata) and np.array_equal(got.code, item.code)
        assert "twin" in listed and client.info().fingerprint == info.fingerprint
        assert client.get_collection("twin") == one and client.delete(IDS[1]) == deleted
        client.drop_collection("twin")


# -- the retry policy, on a local transport


def _flaky(*answers: httpx.Response) -> tuple[httpx.MockTransport, list[httpx.Request]]:
    """A transport answering ``answers`` in turn, then 200 with an Info body; and the requests it saw."""
    seen: list[httpx.Request] = []
    info = {"fingerprint": "f", "n_bits": 16, "bottleneck": "sign", "featurizer": "text", "input_dim": 8}
    info |= {"index_kind": "flat", "count": 0, "device": "cpu", "versions": {}}

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return answers[len(seen) - 1] if len(seen) <= len(answers) else httpx.Response(200, json=info)

    return httpx.MockTransport(handle), seen


def _busy(status: int = 429, retry_after: str | None = "3") -> httpx.Response:
    headers = {} if retry_after is None else {"Retry-After": retry_after}
    error_type = "queue_full" if status == 429 else "not_ready"
    return httpx.Response(status, json={"error": "busy", "error_type": error_type}, headers=headers)


@pytest.fixture
def waits(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The client's sleeps, recorded instead of slept."""
    slept: list[float] = []

    async def asleep(seconds: float) -> None:
        slept.append(seconds)

    monkeypatch.setattr(hc.Client, "_sleep", staticmethod(slept.append))
    monkeypatch.setattr(hc.AsyncClient, "_sleep", staticmethod(asleep))
    return slept


def test_429_is_retried_after_retry_after(waits: list[float]) -> None:
    transport, seen = _flaky(_busy(429, "3"), _busy(503, "1"))
    with hamdex.Client("http://hamdex.test", transport=transport) as client:
        assert client.info().fingerprint == "f"
    assert len(seen) == 3 and waits == [3.0, 1.0]


def test_without_retry_after_the_backoff_doubles_and_attempts_are_bounded(waits: list[float]) -> None:
    transport, seen = _flaky(*[_busy(429, None)] * 5)
    with hamdex.Client("http://hamdex.test", transport=transport, max_retries=3, backoff=0.5) as client:
        with pytest.raises(hc.RateLimited) as err:
            client.info()
    assert (err.value.status, err.value.error_type) == (429, "queue_full")
    assert len(seen) == 4 and waits == [0.5, 1.0, 2.0]


def test_other_errors_are_not_retried(waits: list[float]) -> None:
    transport, seen = _flaky(httpx.Response(500, json={"error": "boom", "error_type": "collection_error"}))
    with hamdex.Client("http://hamdex.test", transport=transport) as client:
        with pytest.raises(hc.ServerError) as err:
            client.info()
    assert err.value.error_type == "collection_error" and len(seen) == 1 and waits == []


def test_async_client_retries_alike(waits: list[float]) -> None:
    seen: list[httpx.Request] = []
    sync_transport, _ = _flaky(_busy(429, "2"))

    async def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return sync_transport.handle_request(request)

    async def run() -> str:
        async with hamdex.AsyncClient("http://hamdex.test", transport=httpx.MockTransport(handle)) as client:
            return (await client.info()).fingerprint

    assert asyncio.run(run()) == "f" and len(seen) == 2 and waits == [2.0]


def test_api_key_from_argument_or_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    transport, seen = _flaky()
    monkeypatch.setenv("HAMDEX_API_KEY", "from-env")
    with hamdex.Client("http://hamdex.test", transport=transport) as client:
        client.info()
    with hamdex.Client("http://hamdex.test", transport=transport, api_key="given") as client:
        client.info()
    monkeypatch.delenv("HAMDEX_API_KEY")
    with hamdex.Client("http://hamdex.test", transport=transport) as client:
        client.info()
    assert [r.headers.get("authorization") for r in seen] == ["Bearer from-env", "Bearer given", None]


def test_importing_the_client_pulls_in_neither_torch_nor_faiss() -> None:
    code = "import sys, hamdex; hamdex.Client; print('torch' in sys.modules, 'faiss' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True, cwd="/").stdout
    assert out.split() == ["False", "False"]


# -- the CLI on the client


def test_cli_search_url_and_index_server(text_server: str, tmp_path: Path) -> None:
    data = tmp_path / "docs.jsonl"
    data.write_text("".join(json.dumps({"id": f"t{i}", "text": t}) + "\n" for i, t in enumerate(TEXTS)))
    with hamdex.Client(text_server) as client:
        client.create_collection("cli")
    result = run_index(str(data), "--server", text_server, "--collection", "cli", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["items"] == len(TEXTS)

    from hamdex.service.cli import app
    from typer.testing import CliRunner

    args = ["search", TEXTS[0], "--url", text_server, "--collection", "cli", "--k", "3", "--json"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    (hits,) = json.loads(result.stdout)
    assert hits[0] == {"id": "t0", "distance": 0, "metadata": {}} and len(hits) == 3
    result = CliRunner().invoke(app, [*args, "--rerank", "10", "--pool", "20"])  # asymmetric: no stored vectors
    assert result.exit_code == 0, result.output
    (scored,) = json.loads(result.stdout)
    assert len(scored) == 3 and [h["score"] for h in scored] == sorted((h["score"] for h in scored), reverse=True)
    result = CliRunner().invoke(app, [*args[:-1], "--rerank", "5"])  # the table gains a score column
    assert result.exit_code == 0 and "score" in result.output
    result = CliRunner().invoke(app, [*args, "--pool", "20"])
    assert result.exit_code == 2 and "--pool needs --rerank" in result.output
    result = CliRunner().invoke(app, ["search", "t1", "--by-id", "--url", text_server, "--collection", "nope"])
    assert result.exit_code == 2 and "collection_not_found" in result.output


# -- docs/client.md's examples run

CLIENT_DOC = Path(__file__).resolve().parent.parent / "docs" / "client.md"
DOC_BLOCK = re.compile(r"<!-- client-test: run -->\n+```python\n(.*?)^```", re.S | re.M)


def test_the_client_doc_marks_its_examples() -> None:
    assert len(DOC_BLOCK.findall(CLIENT_DOC.read_text())) == CLIENT_DOC.read_text().count("<!-- client-test: run -->")


@pytest.mark.parametrize("index", range(len(DOC_BLOCK.findall(CLIENT_DOC.read_text()))))
def test_client_doc_example_runs(index: int, text_server: str, tmp_path: Path) -> None:
    code = DOC_BLOCK.findall(CLIENT_DOC.read_text())[index].replace("http://127.0.0.1:8000", text_server)
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"block {index} of docs/client.md failed:\n{done.stderr[-3000:]}"


def test_bulk_upload_of_a_csv_without_a_header_line(text_server: str, text_model_dir: Path, tmp_path: Path) -> None:
    """``columns`` names a header-less CSV's columns; the text is its title and description (models.data.fields)."""
    rows = [("sports", "Cup final", "The team won the match."), ("business", "Shares rise", "The bank's profit grew.")]
    data = tmp_path / "ag.csv"
    data.write_text("".join(f'"{label}","{title}","{body}"\n' for label, title, body in rows))
    hasher = checkpoint.load(text_model_dir, "cpu")
    with hamdex.Client(text_server) as client:
        client.create_collection("headless")
        with pytest.raises(DataFormatError, match="without a header line"):  # read here, before anything is sent
            client.bulk_upload(data, collection="headless", strict=True)
        summary = client.bulk_upload(data, collection="headless", columns=["label", "title", "description"])
        assert (summary.items, summary.skipped, summary.collection_count) == (2, 0, 2)
        expected = hasher.encode([f"{title}\n\n{body}" for _, title, body in rows]).codes
        for i, (label, _, _) in enumerate(rows):
            item = client.get(str(i), collection="headless")
            assert item.metadata == {"label": label}
            np.testing.assert_array_equal(item.code, expected[i])
