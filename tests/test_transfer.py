"""Export and import (index.transfer, service.routes.transfer, hamdex export / import, hamdex.Client): an export
imported into a fresh collection gives the same search results, in both formats, with unicode ids and large
metadata; bad files and bodies give typed errors; codes of another model are refused."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from hamdex.index import Collection, transfer
from hamdex.index.errors import FingerprintMismatchError, ImportFormatError
from hamdex.service.cli import app as cli
from typer.testing import CliRunner

import hamdex
from tests.conftest import MakeClient, settings_for, synthetic_texts
from tests.helpers import ADMIN, KEYS, READER, WRITER, assert_error, bearer, random_codes
from tests.test_client import _serve

N_BITS = 64
NDJSON = {"content-type": "application/x-ndjson"}


def filled(path: Path, n: int = 3000, kind: str = "flat") -> Collection:
    """A collection of random codes, unicode ids, large and odd metadata, and some replaced and deleted items."""
    coll = Collection.create(path, N_BITS, "fp-1", kind)
    ids = [f"item-{i}-é-日本-😀" if i % 3 else f"{i}" for i in range(n)]
    nested = {"a": [1, {"b": None}], "ключ": "値"}
    meta = [{"i": i, "big": "x" * (5000 if i % 97 == 0 else 10), "huge": 2**70, "nested": nested} for i in range(n)]
    coll.upsert(ids, random_codes(n, N_BITS, seed=1), meta)
    m = n // 10
    coll.upsert(ids[:m], random_codes(m, N_BITS, seed=2), [{"replaced": True}] * m)
    coll.delete(ids[m : 2 * m])
    return coll


def same_searches(a: Collection, b: Collection) -> None:
    queries = random_codes(300, N_BITS, seed=3)
    assert a.search(queries, 10) == b.search(queries, 10)
    assert a.range_search(queries[:50], 20) == b.range_search(queries[:50], 20)
    assert sorted(a.ids()) == sorted(b.ids())


# exact kinds: an approximate index (hnsw) built from the same rows without the source's history of replaced and
# deleted items is another graph, and may answer otherwise
@pytest.mark.parametrize("kind", ["flat"])
@pytest.mark.parametrize("fmt", ["ndjson", "parquet"])
def test_an_export_imported_into_a_fresh_collection_searches_the_same(tmp_path: Path, fmt: str, kind: str) -> None:
    with filled(tmp_path / "a", kind=kind) as a:
        out = tmp_path / f"export.{fmt}"
        header = transfer.write_file(a, out, fmt)
        assert (header.count, header.n_bits, header.fingerprint, header.index_kind) == (len(a), N_BITS, "fp-1", kind)
        read, blocks = transfer.read_file(out)
        assert read == header
        with Collection.create(tmp_path / "b", N_BITS, "fp-1", kind) as b:
            assert transfer.load(b, read, blocks) == len(a)
            same_searches(a, b)
            for item_id in ["0", "item-1-é-日本-😀", "item-2999-é-日本-😀"]:
                x, y = a.get(item_id), b.get(item_id)
                assert x.metadata == y.metadata and np.array_equal(x.code, y.code)


def test_an_export_is_one_consistent_view_while_writes_go_on(tmp_path: Path) -> None:
    with filled(tmp_path / "a", n=100) as a:
        export = transfer.Export(a, chunk=10)
        a.upsert(["late"], random_codes(1, N_BITS), None)  # after the export's read transaction began
        rows = [i for block in export.blocks() for i in block.ids]
        assert export.header.count == len(rows) == len(a) - 1 and "late" not in rows


def test_the_ndjson_shape(tmp_path: Path) -> None:
    with Collection.create(tmp_path / "a", 16, "fp") as a:
        a.upsert(["x"], np.array([[1, 255]], np.uint8), [{"k": "v"}])
        lines = b"".join(transfer.ndjson_lines(transfer.Export(a))).splitlines()
    assert json.loads(lines[0])["header"]["n_bits"] == 16
    assert json.loads(lines[1]) == {"id": "x", "code": "01ff", "metadata": {"k": "v"}}


HEADER = json.dumps({"header": {"n_bits": 16, "fingerprint": "fp"}})


@pytest.mark.parametrize(
    ("text", "error_type"),
    [
        ("", "data_format"),
        ('{"id": "a", "code": "0000"}', "data_format"),  # no header
        ('{"header": {"n_bits": 12, "fingerprint": "fp"}}', "data_format"),
        ('{"header": {"n_bits": 16, "fingerprint": "fp", "extra": 1}}', "data_format"),
        (HEADER + "\nnot json", "data_format"),
        (HEADER + '\n{"id": "a", "code": "00"}', "code_format"),
        (HEADER + '\n{"id": "a", "code": "zzzz"}', "code_format"),
        (HEADER + '\n{"id": "", "code": "0000"}', "bad_id"),
        (HEADER + '\n{"id": "a\\u0000b", "code": "0000"}', "bad_id"),
        (HEADER + '\n{"id": "a", "code": "0000", "metadata": [1]}', "invalid_metadata"),
        (HEADER + '\n{"id": "a", "code": "0000", "input": "text"}', "data_format"),
    ],
)
def test_bad_files_give_typed_errors(tmp_path: Path, text: str, error_type: str) -> None:
    file = tmp_path / "bad.ndjson"
    file.write_text(text, "utf-8")
    with Collection.create(tmp_path / "c", 16, "fp") as coll, pytest.raises(ImportFormatError) as raised:
        header, blocks = transfer.read_file(file)
        transfer.load(coll, header, blocks)
    assert raised.value.error_type == error_type
    result = CliRunner().invoke(cli, ["import", str(file), "--collection", str(tmp_path / "d")])
    assert result.exit_code == 2 and f"({error_type})" in result.output


def test_a_parquet_file_that_is_no_export_is_refused(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"id": ["a"], "code": ["0000"]}), tmp_path / "plain.parquet")
    (tmp_path / "junk.parquet").write_bytes(b"not parquet")
    for name in ("plain.parquet", "junk.parquet"):
        with pytest.raises(ImportFormatError):
            transfer.read_file(tmp_path / name)


def test_codes_of_another_model_are_refused(tmp_path: Path) -> None:
    with filled(tmp_path / "a", n=10) as a:
        transfer.write_file(a, tmp_path / "e.ndjson")
    header, blocks = transfer.read_file(tmp_path / "e.ndjson")
    for n_bits, fingerprint in [(N_BITS, "fp-2"), (128, "fp-1")]:
        with Collection.create(tmp_path / f"{n_bits}{fingerprint}", n_bits, fingerprint) as other:
            with pytest.raises(FingerprintMismatchError):
                transfer.load(other, header, blocks)
            assert len(other) == 0


def test_the_cli_exports_and_imports_collection_folders(tmp_path: Path) -> None:
    filled(tmp_path / "a", n=500).close()
    runner = CliRunner()
    for fmt in ("ndjson", "parquet"):
        out = tmp_path / f"e.{fmt}"
        result = runner.invoke(cli, ["export", str(tmp_path / "a"), "--out", str(out), "--format", fmt])
        assert result.exit_code == 0, result.output
        result = runner.invoke(cli, ["import", str(out), "--collection", str(tmp_path / f"b-{fmt}")])
        assert result.exit_code == 0, result.output
        assert json.loads(result.output)["items"] == 450
    with Collection.open(tmp_path / "a") as a, Collection.open(tmp_path / "b-parquet") as b:
        same_searches(a, b)
    Collection.create(tmp_path / "other", N_BITS, "fp-other").close()
    result = runner.invoke(cli, ["import", str(tmp_path / "e.ndjson"), "--collection", str(tmp_path / "other")])
    assert result.exit_code == 2 and "fingerprint_mismatch" in result.output


# ---- the HTTP routes and the client -------------------------------------------------------------------------


def _fill_over_http(client: TestClient) -> None:
    assert client.post("/v1/collections", json={"name": "a"}).status_code == 201
    texts = synthetic_texts()
    items = [
        {"id": f"doc-{i}-ü😀", "input": text, "metadata": {"i": i, "text": text * 5}} for i, text in enumerate(texts)
    ]
    for start in range(0, len(items), 100):
        assert client.post("/v1/collections/a/items", json={"items": items[start : start + 100]}).status_code == 200


def _searches(client: TestClient, name: str) -> list:
    codes = [f"{i:04x}" for i in range(0, 2**16, 997)]  # many queries over the whole 16-bit space
    body = {"queries": [{"code": c} for c in codes], "k": 10}
    resp = client.post(f"/v1/collections/{name}/search", json=body)
    assert resp.status_code == 200, resp.text
    return resp.json()["results"]


@pytest.mark.parametrize("fmt", ["ndjson", "parquet"])
def test_export_and_import_over_http(make_client: MakeClient, text_model_dir: Path, tmp_path: Path, fmt: str) -> None:
    client = make_client(text_model_dir)
    _fill_over_http(client)
    resp = client.get("/v1/collections/a/export", params={"format": fmt})
    assert resp.status_code == 200 and resp.headers["content-type"].startswith(
        "application/x-ndjson" if fmt == "ndjson" else "application/vnd.apache.parquet"
    )
    file = tmp_path / f"a.{fmt}"
    file.write_bytes(resp.content)
    assert client.post("/v1/collections", json={"name": "b"}).status_code == 201
    if fmt == "ndjson":
        resp = client.post("/v1/collections/b/import", content=file.read_bytes(), headers=NDJSON)
        assert resp.status_code == 200, resp.text
        assert resp.json()["items"] == resp.json()["collection_count"] == len(synthetic_texts())
    else:  # NDJSON only: Parquet's footer comes last (hamdex.Client converts a Parquet file as it sends it)
        header, blocks = transfer.read_file(file)
        lines = [json.dumps({"header": header.__dict__})]
        lines += [json.dumps({"id": i, "code": c.hex(), "metadata": m}) for b in blocks for i, c, m in b]
        resp = client.post("/v1/collections/b/import", content="\n".join(lines).encode(), headers=NDJSON)
        assert resp.status_code == 200, resp.text
    assert _searches(client, "a") == _searches(client, "b")


def test_import_refusals_over_http(make_client: MakeClient, text_model_dir: Path) -> None:
    client = make_client(text_model_dir)
    _fill_over_http(client)
    export = client.get("/v1/collections/a/export").content
    assert client.post("/v1/collections", json={"name": "b"}).status_code == 201
    other = export.replace(b'"fingerprint":"', b'"fingerprint":"x', 1)
    assert_error(client.post("/v1/collections/b/import", content=other, headers=NDJSON), 409, "fingerprint_mismatch")
    bad = export + b'{"id": "z", "code": "00"}\n'
    assert_error(client.post("/v1/collections/b/import", content=bad, headers=NDJSON), 422, "code_format")
    assert_error(client.post("/v1/collections/b/import", content=b"", headers=NDJSON), 422, "data_format")
    assert_error(client.post("/v1/collections/zz/import", content=export, headers=NDJSON), 404, "collection_not_found")
    assert_error(client.get("/v1/collections/a/export", params={"format": "csv"}), 422, "validation_error")


@pytest.fixture(scope="module")
def server(text_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    yield from _serve(settings_for(text_model_dir, tmp_path_factory.mktemp("transfer-server")))


@pytest.mark.parametrize("fmt", ["ndjson", "parquet"])
def test_the_client_exports_and_imports(server: str, tmp_path: Path, fmt: str) -> None:
    texts = synthetic_texts()
    with hamdex.Client(server) as hc:
        hc.create_collection(f"src-{fmt}")
        hc.upsert(
            [f"d{i}-ü" for i in range(len(texts))],
            texts,
            metadata=[{"i": i} for i in range(len(texts))],
            collection=f"src-{fmt}",
        )
        out = hc.export(f"src-{fmt}", tmp_path / f"a.{fmt}", format=fmt)
        header, blocks = transfer.read_file(out)
        assert header.count == sum(len(b) for b in blocks) == len(texts)
        hc.create_collection(f"dst-{fmt}")
        assert hc.import_file(f"dst-{fmt}", out).collection_count == len(texts)
        codes = [f"{i:04x}" for i in range(0, 2**16, 4099)]
        assert hc.search(codes=codes, k=5, collection=f"src-{fmt}") == hc.search(
            codes=codes, k=5, collection=f"dst-{fmt}"
        )
        with pytest.raises(hamdex.client.NotFound):
            hc.export("nope", tmp_path / "x.ndjson")


def test_scopes_and_the_default_collection(make_client: MakeClient, text_model_dir: Path) -> None:
    client = make_client(text_model_dir, api_keys=KEYS)
    items = {"items": [{"id": "a", "input": "goal team"}]}
    assert client.post("/v1/items", json=items, headers=bearer(WRITER)).status_code == 200
    resp = client.get("/v1/collections/default/export", headers=bearer(READER))  # read scope
    assert resp.status_code == 200 and resp.text.count("\n") == 2
    assert_error(
        client.post("/v1/collections/default/import", content=resp.content, headers=bearer(READER)), 403, "forbidden"
    )
    done = client.post("/v1/collections/default/import", content=resp.content, headers={**NDJSON, **bearer(WRITER)})
    assert done.status_code == 200 and done.json()["collection_count"] == 1
    assert_error(client.post("/v1/collections/default/snapshots", headers=bearer(WRITER)), 403, "forbidden")
    assert_error(client.get("/v1/collections/default/snapshots", headers=bearer(READER)), 403, "forbidden")
    assert client.post("/v1/collections/default/snapshots", headers=bearer(ADMIN)).status_code == 201


def test_the_async_client_exports_imports_and_backs_up(server: str, tmp_path: Path) -> None:
    async def run() -> None:
        async with hamdex.AsyncClient(server) as hc:
            await hc.create_collection("async-src")
            await hc.upsert(["a", "b"], ["goal team", "rocket launch"], collection="async-src")
            out = await hc.export("async-src", tmp_path / "a.parquet", format="parquet")
            await hc.create_collection("async-dst")
            assert (await hc.import_file("async-dst", out)).collection_count == 2
            made = await hc.create_snapshot("async-dst")
            assert made.seq == 1 and await hc.snapshots("async-dst") == [made]

    asyncio.run(run())


@pytest.mark.parametrize("fmt", ["ndjson", "parquet"])
def test_an_export_streams_in_bounded_memory(tmp_path: Path, fmt: str) -> None:
    import tracemalloc

    n = 40_000
    with Collection.create(tmp_path / "a", N_BITS, "fp") as coll:
        for start in range(0, n, 10_000):
            ids = [f"item-{i}" for i in range(start, start + 10_000)]
            pads = np.random.default_rng(start).integers(0, 256, (10_000, 100), dtype=np.uint8)
            coll.upsert(ids, random_codes(10_000, N_BITS, seed=start), [{"pad": p.tobytes().hex()} for p in pads])
        export = transfer.Export(coll, chunk=1000)
        stream = transfer.ndjson_lines(export) if fmt == "ndjson" else transfer.parquet_bytes(export)
        tracemalloc.start()
        try:
            total = sum(len(part) for part in stream)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert total > n * 100  # the whole export went through (200 random hex digits an item; Parquet compresses) ...
    assert peak < n * 200 / 2, peak  # ... a block at a time (all of it at once: over n * 250 bytes)
