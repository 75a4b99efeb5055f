"""Regressions of issue 17's service-side defects, through the real app: ids holding U+0000 or a lone surrogate,
metadata that would not read back, bad bulk rows beside good ones, milvus_uri containment, and the low ones (strict
numbers, two Authorization headers, keyed docs, long URLs, bulk ``start``, a drop during a slow bulk upload).

Bodies with a lone surrogate are sent as raw JSON text (``"\\ud800"`` escapes): a client library would refuse to
encode the character itself.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from hamdex.service.app import create_app, wait_ready

from tests.conftest import MakeClient, dense_vectors
from tests.helpers import ADMIN, KEYS, READER, assert_error, bearer
from tests.test_production import settings_for

JSON = {"content-type": "application/json"}
NDJSON = {"content-type": "application/x-ndjson"}
CODE = "0f0f"  # a 16-bit code (the dense fixture model)
D = 12  # the dense fixture model's width


def raw_post(client: TestClient, path: str, text: str, **kwargs: Any) -> httpx.Response:
    """POST ``text`` as it is: JSON escapes such as ``\\ud800`` reach the server's JSON parser untouched."""
    return client.post(path, content=text.encode(), headers={**JSON, **kwargs.pop("headers", {})}, **kwargs)


def nested(depth: int) -> Any:
    """Metadata of exactly ``depth`` levels of objects and arrays: {"a": [[...]]}."""
    value: Any = []
    for _ in range(depth - 2):
        value = [value]
    return {"a": value}


def upsert(client: TestClient, items: list[dict], path: str = "/v1/items") -> None:
    resp = client.post(path, json={"items": items})
    assert resp.status_code == 200, resp.text


# ---- ids (defects 2 and 10) ---------------------------------------------------------------------------------


def test_ids_with_nul_or_a_lone_surrogate_are_refused_and_touch_no_other_item(
    make_client: MakeClient, dense_model_dir: Path
) -> None:
    client = make_client(dense_model_dir)
    upsert(client, [{"id": "victim", "code": CODE, "metadata": {"n": 1}}, {"id": "victim2", "code": CODE}])
    for text in (
        r'{"items": [{"id": "victim2\u0000x", "code": "0000"}]}',  # used to replace victim2 (updated: 1)
        r'{"items": [{"id": "\ud800", "code": "0000"}]}',
        r'{"items": [{"id": "a\udc00b", "code": "0000"}]}',
    ):
        assert_error(raw_post(client, "/v1/items", text), 422, "validation_error")
    for method in ("GET", "DELETE"):  # DELETE used to remove victim: SQLite's json_each cut the id at NUL
        assert_error(client.request(method, "/v1/items/victim%00zzz"), 422, "validation_error")
    for query in (r'{"id": "\ud800"}', r'{"id": "victim\u0000"}'):  # the first used to answer 500
        resp = raw_post(client, "/v1/search", f'{{"queries": [{query}], "k": 5}}')
        assert_error(resp, 422, "validation_error")
    assert client.get("/v1/items/victim").json() == {"id": "victim", "code": CODE, "metadata": {"n": 1}}
    assert client.get("/v1/items/victim2").json()["code"] == CODE
    assert client.get("/info").json()["count"] == 2


def test_filters_with_a_lone_surrogate_are_refused(make_client: MakeClient, dense_model_dir: Path) -> None:
    client = make_client(dense_model_dir)
    upsert(client, [{"id": "a", "code": CODE, "metadata": {"a": "ü"}}])
    for where in (r'{"\ud800": 1}', r'{"a": "\ud800"}', r'{"a": "x\udfff"}'):  # used to answer 500
        resp = raw_post(client, "/v1/search", f'{{"queries": [{{"code": "{CODE}"}}], "filter": {where}}}')
        body = assert_error(resp, 422, "validation_error")
        assert "surrogate" in body["error"]
    hits = client.post("/v1/search", json={"queries": [{"code": CODE}], "filter": {"a": "ü"}}).json()["results"]
    assert [h["id"] for h in hits[0]] == ["a"]  # other non-ASCII text is fine


# ---- metadata (defect 6) ------------------------------------------------------------------------------------


def test_metadata_that_would_not_read_back_is_refused_at_write_time(
    make_client: MakeClient, dense_model_dir: Path
) -> None:
    client = make_client(dense_model_dir)
    for metadata in (r'{"\ud800": 1}', r'{"s": "\ud800"}', r'{"l": ["ok", {"k": "\udc00"}]}'):
        resp = raw_post(client, "/v1/items", f'{{"items": [{{"id": "m", "code": "{CODE}", "metadata": {metadata}}}]}}')
        assert_error(resp, 422, "invalid_metadata")  # the key used to be stored, and read back as U+FFFD
    resp = client.post("/v1/items", json={"items": [{"id": "m", "code": CODE, "metadata": nested(65)}]})
    assert "64" in assert_error(resp, 422, "invalid_metadata")["error"]  # 300-900 deep used to break every read
    assert_error(client.get("/v1/items/m"), 404, "item_not_found")
    # at the bound, and with characters beyond the BMP, what is written reads back identically
    deep, wide = nested(64), {"emoji": "😀 ∑ é", "😀": [1, 2.5, None, True]}
    upsert(client, [{"id": "deep", "code": CODE, "metadata": deep}, {"id": "wide", "code": CODE, "metadata": wide}])
    assert client.get("/v1/items/deep").json()["metadata"] == deep
    assert client.get("/v1/items/wide").json()["metadata"] == wide
    for fast in (True, False):  # the fast path writes its own JSON
        path = "/v1/search" if fast else "/v1/collections/default/search"
        hits = client.post(path, json={"queries": [{"code": CODE}], "k": 2}).json()["results"][0]
        assert {h["id"]: h["metadata"] for h in hits} == {"deep": deep, "wide": wide}


# ---- bulk rows (defect 7) -----------------------------------------------------------------------------------


def _row(item_id: str, i: int = 0, metadata: Any = None) -> str:
    vector = dense_vectors(20, D, seed=3)[i].tolist()
    return json.dumps({"id": item_id, "input": vector, "metadata": metadata or {"i": i}})


def _bulk_body(prefix: str) -> tuple[bytes, list[str]]:
    """One block mixing good rows with each kind of bad row the issue found; the good ids."""
    vector = json.dumps(dense_vectors(1, D)[0].tolist())
    lines = [
        _row(f"{prefix}0", 0),
        f'{{"id": "\\ud800", "input": {vector}}}',  # UnicodeEncodeError in sqlite
        _row(f"{prefix}1", 1),
        f'{{"id": "d", "input": {vector}, "metadata": {{"a": {"[" * 2000}{"]" * 2000}}}}}',  # RecursionError
        _row("n\u0000", 2),  # a repeated NUL id: IntegrityError
        _row("n\u0000", 3),
        _row(f"{prefix}2", 4, {"é": [1, {"k": "v"}]}),
        _row("deep", 5, nested(100)),  # parses, but would not read back
        f'{{"id": "s", "input": {vector}, "metadata": {{"\\udc00": 1}}}}',
        _row(f"{prefix}3", 6),
    ]
    return "\n".join(lines).encode() + b"\n", [f"{prefix}{i}" for i in range(4)]


def test_bad_bulk_rows_are_skipped_and_the_good_rows_of_their_block_kept(
    make_client: MakeClient, dense_model_dir: Path
) -> None:
    client = make_client(dense_model_dir)
    content, good = _bulk_body("g")
    resp = client.post("/v1/items:bulk", content=content, headers=NDJSON)
    assert resp.status_code == 422, resp.text  # used to be 500, the whole block lost
    summary = resp.json()
    assert summary["error_type"] == "rows_skipped"  # the good rows written, the body the report
    assert summary["items"] == 4 and summary["skipped"] == 6
    assert summary["reasons"] == {"bad_id": 3, "data_format": 1, "invalid_metadata": 2}
    assert [e["row"] for e in summary["examples"]["bad_id"]] == [1, 4, 5]
    assert summary["examples"]["bad_id"][0]["id"] == "\\ud800"  # escaped: the report itself is valid JSON
    for item_id in good:
        assert client.get(f"/v1/items/{item_id}").status_code == 200
    assert client.get("/v1/items/g2").json()["metadata"] == {"é": [1, {"k": "v"}]}
    assert client.get("/info").json()["count"] == 4
    # strict: 422 at the first bad row, nothing of its block written
    content, good = _bulk_body("s")
    resp = client.post("/v1/items:bulk", content=content, headers=NDJSON, params={"strict": "true"})
    assert "row 1" in assert_error(resp, 422, "bad_id")["error"]
    assert client.get("/info").json()["count"] == 4


def test_bulk_and_items_keep_integers_beyond_64_bits_exact(make_client: MakeClient, dense_model_dir: Path) -> None:
    """orjson reads 10**30 as the float 1e+30: a bulk row used to store what the items route stores exactly."""
    client = make_client(dense_model_dir)
    meta = {"big": 10**30, "neg": -(2**64) - 1, "u64": 2**64 - 1, "f": 1e30, "digits": "1234567890123456789012"}
    row = json.dumps({"id": "bulk", "input": [0.5] * D, "metadata": meta})
    assert client.post("/v1/items:bulk", content=row.encode(), headers=NDJSON).json()["items"] == 1
    upsert(client, [{"id": "items", "code": CODE, "metadata": meta}])
    for item_id in ("bulk", "items"):
        got = json.loads(client.get(f"/v1/items/{item_id}").text)  # the json module: exact integers
        assert got["metadata"] == meta and repr(got["metadata"]) == repr(meta)


def test_ids_with_line_breaks_are_addressed_whole(make_client: MakeClient, dense_model_dir: Path) -> None:
    """Starlette's path pattern stopped at a line break: DELETE /v1/items/victim%0A deleted "victim"."""
    client = make_client(dense_model_dir)
    upsert(client, [{"id": "victim", "code": CODE}, {"id": "a\nb", "code": CODE}, {"id": "c\r\n", "code": CODE}])
    assert_error(client.delete("/v1/items/victim%0A"), 404, "item_not_found")
    assert_error(client.get("/v1/items/victim%0A"), 404, "item_not_found")
    assert client.get("/v1/items/victim").status_code == 200
    for item_id, path in (("a\nb", "a%0Ab"), ("c\r\n", "c%0D%0A")):
        assert client.get(f"/v1/items/{path}").json()["id"] == item_id
        assert client.delete(f"/v1/collections/default/items/{path}").json() == {"deleted": item_id}
    assert client.get("/v1/items/victim").status_code == 200


# ---- milvus_uri (defect 9) ----------------------------------------------------------------------------------


@pytest.mark.milvus
def test_milvus_uri_stays_inside_the_collection_and_servers_need_the_setting(
    make_client: MakeClient, dense_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pymilvus = pytest.importorskip("pymilvus", reason="the milvus extra is not installed: pip install 'hamdex[milvus]'")
    client = make_client(dense_model_dir)
    outside = tmp_path / "outside.db"
    other = client.post("/v1/collections", json={"name": "other", "backend": "milvus"})
    assert other.status_code == 201, other.text
    for uri in ("/etc/passwd", str(outside), "../other/milvus.db", "sub/x.db", "ftp://host/x", ""):
        resp = client.post("/v1/collections", json={"name": "m", "backend": "milvus", "milvus_uri": uri})
        assert_error(resp, 422, "invalid_milvus_uri")  # the first used to answer 500, the second to write there
    for uri in ("http://127.0.0.1:9/", "unix:/tmp/milvus.sock"):  # servers: off unless HAMDEX_MILVUS_REMOTE_URIS
        resp = client.post("/v1/collections", json={"name": "m", "backend": "milvus", "milvus_uri": uri})
        assert "HAMDEX_MILVUS_REMOTE_URIS" in assert_error(resp, 422, "invalid_milvus_uri")["error"]
    assert not outside.exists() and client.get("/v1/collections/m").status_code == 404
    resp = client.post("/v1/collections", json={"name": "m", "backend": "milvus", "milvus_uri": "own.db"})
    assert resp.status_code == 201, resp.text
    assert (client.app.state.service.settings.collections_dir / "m" / "own.db").exists()

    def unreachable(uri: str, **kwargs: Any) -> Any:  # what pymilvus raises after its 10 s connect timeout
        raise pymilvus.MilvusException(code=2, message=f"Fail connecting to server on {uri}")

    monkeypatch.setattr(pymilvus, "MilvusClient", unreachable)
    allowed = make_client(dense_model_dir, milvus_remote_uris=True)
    resp = allowed.post("/v1/collections", json={"name": "r", "backend": "milvus", "milvus_uri": "http://127.0.0.1:9/"})
    assert "127.0.0.1:9" in assert_error(resp, 503, "backend_unreachable")["error"]  # used to be 500


# ---- the low ones (defect 11) -------------------------------------------------------------------------------


def test_multihash_with_more_tables_than_bits_is_422(make_client: MakeClient, dense_model_dir: Path) -> None:
    client = make_client(dense_model_dir)  # 16 bits
    request = {"name": "mh", "index_kind": "multihash", "index_params": {"nhash": 64}}
    assert_error(client.post("/v1/collections", json=request), 422, "invalid_index_params")  # was 500
    assert_error(client.get("/v1/collections/mh"), 404, "collection_not_found")


@pytest.mark.parametrize("fast_search", [True, False])
def test_two_authorization_headers_are_refused_by_the_route_and_the_fast_path(
    make_client: MakeClient, dense_model_dir: Path, fast_search: bool
) -> None:
    client = make_client(dense_model_dir, api_keys=KEYS, fast_search=fast_search)
    good, bad = ("authorization", f"Bearer {READER}"), ("authorization", "Bearer unknown-key-0123456789")
    search = {"queries": [{"code": CODE}], "k": 3}
    for headers in ([bad, good], [good, bad], [good, good]):  # the fast path used to read the last, the route the first
        assert_error(client.post("/v1/search", json=search, headers=headers), 400, "invalid_header")
        assert_error(client.get("/info", headers=headers), 400, "invalid_header")
    assert client.post("/v1/search", json=search, headers=[good]).status_code == 200


def test_docs_need_a_key_when_keys_are_set(make_client: MakeClient, dense_model_dir: Path) -> None:
    paths = ("/openapi.json", "/docs", "/redoc")
    closed = make_client(dense_model_dir, api_keys=KEYS, open_reads=True)  # open reads do not open the docs
    for path in paths:
        assert_error(closed.get(path), 401, "unauthorized")  # used to be 200
        assert closed.get(path, headers=bearer(READER)).status_code == 200, path
    assert "/v1/search" in closed.get("/openapi.json", headers=bearer(ADMIN)).json()["paths"]
    for client in (make_client(dense_model_dir, api_keys=KEYS, open_docs=True), make_client(dense_model_dir)):
        for path in paths:
            assert client.get(path).status_code == 200, path


@pytest.mark.parametrize(
    "path, body",
    [
        ("/v1/items", {"items": [{"id": "a", "code": [True] + [0] * 15}]}),
        ("/v1/items", {"items": [{"id": "a", "code": ["1"] + [0] * 15}]}),
        ("/v1/search", {"queries": [{"code": [1.5] + [0] * 15}]}),  # a bit list through the fast path
        ("/v1/search", {"queries": [{"code": [True] + [0] * 15}]}),
        ("/v1/search", {"queries": [{"code": CODE}], "k": True}),  # used to search with k = 1
        ("/v1/search", {"queries": [{"code": CODE}], "k": "5"}),
        ("/v1/search", {"queries": [{"code": CODE}], "k": 5.5}),
        ("/v1/search", {"queries": [{"code": CODE}], "radius": "3"}),
        ("/v1/search", {"queries": [{"code": CODE}], "include_metadata": "yes"}),
        ("/v1/encode", {"inputs": [[True] * D]}),
        ("/v1/encode", {"inputs": [["0.5"] * D]}),
        ("/v1/encode", {"inputs": [[0.0] * D], "latent": 1}),
    ],
)
def test_numbers_flags_and_bits_are_strict(
    make_client: MakeClient, dense_model_dir: Path, path: str, body: dict
) -> None:
    client = make_client(dense_model_dir)
    assert_error(client.post(path, json=body), 422, "validation_error")
    assert client.get("/info").json()["count"] == 0


def test_bits_out_of_range_and_ints_for_floats_keep_working(make_client: MakeClient, dense_model_dir: Path) -> None:
    client = make_client(dense_model_dir)
    assert_error(client.post("/v1/items", json={"items": [{"id": "a", "code": [2] + [0] * 15}]}), 422, "code_format")
    assert client.post("/v1/encode", json={"inputs": [[0] * D, [1.5] * D]}).status_code == 200
    upsert(client, [{"id": "a", "code": [1, 0] * 8}])
    resp = client.post("/v1/search", json={"queries": [{"code": [1, 0] * 8}], "k": 1, "include_metadata": False})
    assert resp.json()["results"] == [[{"id": "a", "distance": 0, "metadata": None}]]


def test_a_long_url_gets_the_json_error_body(make_client: MakeClient, dense_model_dir: Path) -> None:
    client = make_client(dense_model_dir, max_url_bytes=4096)
    for url in ("/v1/items/" + "x" * 5000, "/info?q=" + "y" * 5000):  # used to reach the routes (404, 200)
        assert "4096" in assert_error(client.get(url), 414, "uri_too_long")["error"]
    assert_error(client.get("/v1/items/" + "x" * 4000), 404, "item_not_found")


def test_bulk_start_has_an_upper_bound(make_client: MakeClient, dense_model_dir: Path) -> None:
    client = make_client(dense_model_dir)
    content = (_row("a") + "\n").encode()
    resp = client.post("/v1/items:bulk", content=content, headers=NDJSON, params={"start": 2**53 + 1})
    assert_error(resp, 422, "validation_error")  # used to be taken (and stored as progress)
    resp = client.post("/v1/items:bulk", content=content, headers=NDJSON, params={"start": 2**53, "job": "j"})
    assert resp.status_code == 200 and resp.json()["resumed_from"] == 2**53


def test_a_drop_during_a_slow_bulk_upload_answers_at_once(dense_model_dir: Path, tmp_path: Path) -> None:
    """The upload held the collection for its whole body, so the drop (and every request to the collection behind
    it) waited for the upload to end. Now the drop waits for one block at most, and the upload stops with 404 at
    its next block, even if a collection of the same name was created meanwhile."""
    app = create_app(settings_for(dense_model_dir, tmp_path, max_batch=4))
    lines = [(_row(f"r{i}", i) + "\n").encode() for i in range(8)]

    async def run() -> tuple[float, httpx.Response, int, int]:
        async with app.router.lifespan_context(app):
            await asyncio.to_thread(wait_ready, app, 60)
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://testserver", timeout=60) as client:
                assert (await client.post("/v1/collections", json={"name": "slow"})).status_code == 201
                release = asyncio.Event()

                async def body() -> Any:
                    yield b"".join(lines[:4])  # one block, written at once
                    await asyncio.wait_for(release.wait(), 20)  # a slow client
                    yield b"".join(lines[4:])

                url = "/v1/collections/slow/items:bulk"
                upload = asyncio.create_task(client.post(url, content=body(), headers=NDJSON))
                for _ in range(1000):  # until the first block is written (at most ~20 s)
                    if (await client.get("/v1/collections/slow/items/r3")).status_code == 200:
                        break
                    assert not upload.done(), (await upload).text
                    await asyncio.sleep(0.02)
                t0 = time.perf_counter()
                dropped = await client.delete("/v1/collections/slow")
                took = time.perf_counter() - t0
                assert dropped.status_code == 200, dropped.text
                assert (await client.post("/v1/collections", json={"name": "slow"})).status_code == 201
                release.set()
                resp = await upload
                count = (await client.get("/v1/collections/slow")).json()["count"]
                return took, resp, count, (await client.get("/info")).json()["count"]

    took, resp, count, default_count = asyncio.run(run())
    assert took < 5, took  # used to wait for the whole upload (here 20 s)
    assert_error(resp, 404, "collection_not_found")
    assert count == 0 and default_count == 0  # nothing went into the new collection of the same name
