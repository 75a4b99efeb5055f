"""The HTTP API end to end through ``TestClient``: codes equal the offline encoder's, every search distance equals a
brute-force popcount of XOR, and every bad request gets its status from the one error table with the
``{"error", "error_type"}`` body.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np
import pytest
from fastapi.testclient import TestClient
from hamdex.index import Collection, FingerprintMismatchError
from hamdex.models import bits, checkpoint
from hamdex.models.hasher import Hasher
from hamdex.service.errors import STATUS

from tests.conftest import MakeClient, dense_vectors, digit_images, synthetic_texts
from tests.helpers import oracle_hits, pairs, random_codes

FORMATS = ("hex", "base64", "bits")
KINDS = ("text", "pixels", "dense")
MODEL_FIXTURES = {"text": "text_model_dir", "pixels": "pixel_model_dir", "dense": "dense_model_dir"}
N_BITS = {"text": 16, "pixels": 32, "dense": 16}


# ---- helpers ------------------------------------------------------------------------------------------------


@pytest.fixture(params=KINDS)
def kind(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def model_dir(kind: str, request: pytest.FixtureRequest) -> Path:
    return request.getfixturevalue(MODEL_FIXTURES[kind])


def offline(model_dir: Path) -> Hasher:
    return checkpoint.load(model_dir, "cpu")


def sample_inputs(kind: str, n: int = 5) -> list[Any]:
    """JSON-ready raw inputs of the model's kind (held-out rows where there are any)."""
    if kind == "text":
        return synthetic_texts(n_per_topic=2, seed=1)[:n]
    if kind == "pixels":
        return digit_images(400)[-n:].tolist()  # (n, 8, 8) ints, not in the training rows
    return dense_vectors(n, seed=1).tolist()  # (n, 12) floats


def wire_codes(codes: np.ndarray, fmt: str) -> list[Any]:
    return [bits.to_wire(c, fmt) for c in codes]


def upsert_codes(client: TestClient, ids: list[str], codes: np.ndarray, fmt: str = "hex") -> dict:
    items = [
        {"id": i, "code": bits.to_wire(c, fmt), "metadata": {"n": n}}
        for n, (i, c) in enumerate(zip(ids, codes, strict=True))
    ]
    resp = client.post("/v1/items", json={"items": items})
    assert resp.status_code == 200, resp.text
    return resp.json()


def count(client: TestClient) -> int:
    return client.get("/info").json()["count"]


# ---- /health and /info --------------------------------------------------------------------------------------


def test_health(make_client: MakeClient, dense_model_dir: Path) -> None:
    resp = make_client(dense_model_dir).get("/health")
    assert resp.status_code == 200
    assert resp.json() == {"status": "ok"}


def test_info_describes_model_and_counts_items(make_client: MakeClient, model_dir: Path, kind: str) -> None:
    client = make_client(model_dir)
    hasher = offline(model_dir)
    info = client.get("/info").json()
    assert info["fingerprint"] == hasher.fingerprint
    assert info["n_bits"] == N_BITS[kind] == hasher.n_bits
    assert info["featurizer"] == kind
    assert info["input_dim"] == hasher.model.config.input_dim
    assert info["bottleneck"] == hasher.model.config.bottleneck
    assert info["members"] == hasher.model.config.members == (2 if kind == "pixels" else 1)
    assert info["index_kind"] == "flat"
    assert info["device"] == "cpu"
    assert info["count"] == 0

    inputs = sample_inputs(kind, 3)
    client.post("/v1/items", json={"items": [{"id": f"x{i}", "input": x} for i, x in enumerate(inputs)]})
    assert count(client) == 3
    client.delete("/v1/items/x0")
    assert count(client) == 2


# ---- /v1/encode ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", FORMATS)
def test_encode_equals_offline_codes(make_client: MakeClient, model_dir: Path, kind: str, fmt: str) -> None:
    inputs = sample_inputs(kind)
    hasher = offline(model_dir)
    resp = make_client(model_dir).post("/v1/encode", json={"inputs": inputs, "format": fmt})
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["codes"] == wire_codes(hasher.encode(inputs).codes, fmt)
    assert (body["n_bits"], body["format"], body["fingerprint"]) == (hasher.n_bits, fmt, hasher.fingerprint)
    assert body["latent"] is None


def test_encode_latent_thresholds_to_the_code(make_client: MakeClient, model_dir: Path, kind: str) -> None:
    inputs = sample_inputs(kind)
    body = make_client(model_dir).post("/v1/encode", json={"inputs": inputs, "latent": True, "format": "bits"}).json()
    latent = np.asarray(body["latent"])  # (n, n_bits)
    assert latent.shape == (len(inputs), N_BITS[kind])
    assert ((latent >= 0) & (latent <= 1)).all()
    np.testing.assert_array_equal(latent > 0.5, np.asarray(body["codes"]) == 1)


def test_encode_batch_of_one_and_wire_round_trip(make_client: MakeClient, dense_model_dir: Path) -> None:
    client = make_client(dense_model_dir)
    vector = sample_inputs("dense", 1)
    codes = {fmt: client.post("/v1/encode", json={"inputs": vector, "format": fmt}).json()["codes"] for fmt in FORMATS}
    assert all(len(c) == 1 for c in codes.values())
    decoded = [bits.from_wire(c[0], 16) for c in codes.values()]
    for code in decoded[1:]:
        np.testing.assert_array_equal(code, decoded[0])


# ---- /v1/items ----------------------------------------------------------------------------------------------


def test_upsert_from_inputs_and_codes_in_every_format(make_client: MakeClient, model_dir: Path, kind: str) -> None:
    client = make_client(model_dir)
    n_bits = N_BITS[kind]
    inputs = sample_inputs(kind, 2)
    given = random_codes(3, n_bits, seed=3)
    items = [{"id": f"in{i}", "input": x, "metadata": {"src": "input", "i": i}} for i, x in enumerate(inputs)]
    items += [
        {"id": f"code-{fmt}", "code": bits.to_wire(c, fmt), "metadata": {"src": fmt}}
        for fmt, c in zip(FORMATS, given, strict=True)
    ]
    resp = client.post("/v1/items", json={"items": items})
    assert resp.json() == {"upserted": 5, "inserted": 5, "updated": 0}

    ids = [it["id"] for it in items]
    expected = dict(zip(ids, [*offline(model_dir).encode(inputs).codes, *given], strict=True))
    metadata = {it["id"]: it["metadata"] for it in items}
    for item_id, code in expected.items():
        for fmt in FORMATS:
            got = client.get(f"/v1/items/{item_id}", params={"format": fmt})
            assert got.status_code == 200, got.text
            assert got.json() == {"id": item_id, "code": bits.to_wire(code, fmt), "metadata": metadata[item_id]}
    assert client.get("/v1/items/in0").json()["code"] == bits.to_wire(expected["in0"], "hex")  # hex by default


def test_upsert_replaces_code_and_metadata(make_client: MakeClient, dense_model_dir: Path) -> None:
    client = make_client(dense_model_dir)
    old, new = random_codes(2, 16, seed=4)
    first = {"id": "a", "code": bits.to_wire(old, "hex"), "metadata": {"v": 1, "gone": True}}
    assert client.post("/v1/items", json={"items": [first]}).json() == {"upserted": 1, "inserted": 1, "updated": 0}

    batch = [{"id": "a", "code": bits.to_wire(new, "hex"), "metadata": {"v": 2}}, {"id": "b", "code": "0000"}]
    assert client.post("/v1/items", json={"items": batch}).json() == {"upserted": 2, "inserted": 1, "updated": 1}
    assert client.get("/v1/items/a").json() == {"id": "a", "code": bits.to_wire(new, "hex"), "metadata": {"v": 2}}
    assert client.get("/v1/items/b").json()["metadata"] == {}  # no metadata is stored as {}
    hits = client.post("/v1/search", json={"queries": [{"code": bits.to_wire(old, "hex")}]}).json()["results"][0]
    assert pairs(hits) == oracle_hits(old, ["a", "b"], np.stack([new, np.zeros(2, np.uint8)]))
    assert count(client) == 2


def test_delete_hides_item_at_once_and_reinsert_works(make_client: MakeClient, dense_model_dir: Path) -> None:
    client = make_client(dense_model_dir)
    codes = random_codes(3, 16, seed=5)
    upsert_codes(client, ["a", "b", "c"], codes)
    query = {"queries": [{"code": bits.to_wire(codes[1], "hex")}], "k": 10}

    assert client.delete("/v1/items/b").json() == {"deleted": "b"}
    assert client.get("/v1/items/b").status_code == 404
    hits = client.post("/v1/search", json=query).json()["results"][0]
    assert pairs(hits) == oracle_hits(codes[1], ["a", "c"], codes[[0, 2]])
    radius_hits = client.post("/v1/search", json={**query, "radius": 16}).json()["results"][0]
    assert "b" not in {h["id"] for h in radius_hits}
    assert client.post("/v1/search", json={"queries": [{"id": "b"}]}).json()["error_type"] == "query_id_not_found"
    assert client.delete("/v1/items/b").status_code == 404
    assert count(client) == 2

    again = client.post("/v1/items", json={"items": [{"id": "b", "code": bits.to_wire(codes[0], "hex")}]})
    assert again.json() == {"upserted": 1, "inserted": 1, "updated": 0}
    assert client.get("/v1/items/b").json()["code"] == bits.to_wire(codes[0], "hex")
    hits = client.post("/v1/search", json=query).json()["results"][0]
    assert pairs(hits) == oracle_hits(codes[1], ["a", "c", "b"], codes[[0, 2, 0]])


@pytest.mark.parametrize("item_id", ["a/b", "with space", "q?x=1#frag", "100%", "ünï", "../up"])
def test_any_id_can_be_read_and_deleted(make_client: MakeClient, dense_model_dir: Path, item_id: str) -> None:
    client = make_client(dense_model_dir)
    upsert_codes(client, [item_id], random_codes(1, 16))
    url = "/v1/items/" + quote(item_id, safe="")
    assert client.get(url).json()["id"] == item_id
    assert client.delete(url).json() == {"deleted": item_id}
    assert client.get(url).status_code == 404


def test_items_persist_across_restart(make_client: MakeClient, text_model_dir: Path, tmp_path: Path) -> None:
    path = tmp_path / "persisted"
    first = make_client(text_model_dir, collection_path=path)
    texts = sample_inputs("text", 4)
    items = [{"id": f"t{i}", "input": t, "metadata": {"text": t}} for i, t in enumerate(texts)]
    first.post("/v1/items", json={"items": items})
    first.delete("/v1/items/t3")
    before = {i: first.get(f"/v1/items/{i}").json() for i in ("t0", "t1", "t2")}
    search = {"queries": [{"input": texts[0]}], "k": 10}
    hits_before = first.post("/v1/search", json=search).json()
    first.__exit__(None, None, None)  # shut the first app down: a collection is open in one app at a time

    second = make_client(text_model_dir, collection_path=path)
    assert count(second) == 3
    assert {i: second.get(f"/v1/items/{i}").json() for i in ("t0", "t1", "t2")} == before
    assert second.get("/v1/items/t3").status_code == 404
    assert second.post("/v1/search", json=search).json() == hits_before
    assert second.post("/v1/items", json={"items": [items[3]]}).json()["inserted"] == 1


def test_rejected_upsert_changes_nothing(make_client: MakeClient, dense_model_dir: Path) -> None:
    client = make_client(dense_model_dir)
    upsert_codes(client, ["keep"], random_codes(1, 16))
    bad = [{"id": "new", "code": "0000"}, {"id": "keep", "code": "0101"}, {"id": "x", "code": "not a code"}]
    assert client.post("/v1/items", json={"items": bad}).status_code == 422
    assert count(client) == 1
    assert client.get("/v1/items/new").status_code == 404
    assert client.get("/v1/items/keep").json()["code"] == bits.to_wire(random_codes(1, 16)[0], "hex")


# ---- /v1/search ---------------------------------------------------------------------------------------------

N_STORED = 40


@pytest.fixture
def stored(make_client: MakeClient, dense_model_dir: Path) -> tuple[TestClient, list[str], np.ndarray]:
    """A dense-model client holding N_STORED items with random codes (some duplicated), metadata {"n": i}."""
    client = make_client(dense_model_dir)
    ids = [f"item-{i:02d}" for i in range(N_STORED)]
    codes = random_codes(N_STORED, 16, seed=7)
    upsert_codes(client, ids, codes)
    return client, ids, codes


@pytest.mark.parametrize("fmt", FORMATS)
def test_search_by_code_matches_oracle(stored: tuple, fmt: str) -> None:
    client, ids, codes = stored
    queries = random_codes(3, 16, seed=8)
    resp = client.post("/v1/search", json={"queries": [{"code": c} for c in wire_codes(queries, fmt)], "k": 100})
    results = resp.json()["results"]
    assert len(results) == len(queries)
    for query, hits in zip(queries, results, strict=True):
        assert pairs(hits) == oracle_hits(query, ids, codes)
        assert all(h["metadata"] == {"n": ids.index(h["id"])} for h in hits)


def test_search_by_input_and_by_id(stored: tuple, dense_model_dir: Path) -> None:
    client, ids, codes = stored
    vectors = sample_inputs("dense", 2)
    queries = [{"input": vectors[0]}, {"id": "item-05"}, {"input": vectors[1]}]
    results = client.post("/v1/search", json={"queries": queries, "k": N_STORED}).json()["results"]
    encoded = offline(dense_model_dir).encode(vectors).codes
    assert pairs(results[0]) == oracle_hits(encoded[0], ids, codes)
    assert pairs(results[1]) == oracle_hits(codes[5], ids, codes)
    assert (0, "item-05") in pairs(results[1])
    assert pairs(results[2]) == oracle_hits(encoded[1], ids, codes)


@pytest.mark.parametrize("k", [1, 3, 10, N_STORED, N_STORED + 5])
def test_k_caps_results(stored: tuple, k: int) -> None:
    client, ids, codes = stored
    query = codes[0]
    hits = client.post("/v1/search", json={"queries": [{"code": bits.to_wire(query, "hex")}], "k": k}).json()
    got = pairs(hits["results"][0])
    oracle = oracle_hits(query, ids, codes)
    assert len(got) == min(k, N_STORED)
    assert got == sorted(got)  # by (distance, id)
    assert [d for d, _ in got] == [d for d, _ in oracle[:k]]  # which ids fill a tie at the k-th place may vary
    distance = {i: d for d, i in oracle}
    assert all(distance[i] == d for d, i in got)
    assert {i for d, i in oracle if d < got[-1][0]} <= {i for _, i in got}


@pytest.mark.parametrize("radius", [0, 1, 5, 8, 16])
@pytest.mark.parametrize("k", [3, 1000])
def test_radius_returns_exactly_the_items_within_it(stored: tuple, radius: int, k: int) -> None:
    client, ids, codes = stored
    query = codes[1]  # a duplicated code: radius 0 finds two items
    body = {"queries": [{"code": bits.to_wire(query, "base64")}], "radius": radius, "k": k}
    got = pairs(client.post("/v1/search", json=body).json()["results"][0])
    within = [(d, i) for d, i in oracle_hits(query, ids, codes) if d <= radius]
    if k >= len(within):
        assert got == within
    else:
        assert len(got) == k and got == sorted(got)
        assert [d for d, _ in got] == [d for d, _ in within[:k]]
        assert set(got) <= set(within)


@pytest.mark.parametrize("radius", [None, 4])
def test_include_metadata_false_returns_null_metadata(stored: tuple, radius: int | None) -> None:
    client, ids, codes = stored
    body = {"queries": [{"id": "item-00"}], "k": 5, "radius": radius, "include_metadata": False}
    hits = client.post("/v1/search", json=body).json()["results"][0]
    assert hits and all(h["metadata"] is None for h in hits)


@pytest.mark.parametrize("radius", [None, 0, 16])
def test_empty_collection_returns_empty_lists(
    make_client: MakeClient, dense_model_dir: Path, radius: int | None
) -> None:
    client = make_client(dense_model_dir)
    queries = [{"code": "0000"}, {"input": sample_inputs("dense", 1)[0]}]
    resp = client.post("/v1/search", json={"queries": queries, "radius": radius})
    assert resp.status_code == 200
    assert resp.json() == {"results": [[], []]}


# ---- errors -------------------------------------------------------------------------------------------------

VEC = [0.5] * 12  # a valid vector for the dense model
IMG = [[128] * 8 for _ in range(8)]  # a valid image for the pixel model
CODE = "0f0f"  # a valid 16-bit code
FOUR_ITEMS = [{"id": f"new-{i}", "code": CODE} for i in range(4)]
B64_24_BITS, B64_16_BITS = base64.b64encode(b"123").decode(), base64.b64encode(b"12").decode()
NAN_VEC = "[" + ", ".join(["NaN"] + ["0.5"] * 11) + "]"  # JSON text: json= would refuse to write NaN
INF_VEC = "[" + ", ".join(["-Infinity"] + ["0.5"] * 11) + "]"
NAN_IMG = "[" + ", ".join(["[NaN" + ", 1" * 7 + "]"] * 8) + "]"
JSON = {"content-type": "application/json"}
OVERFLOW = pytest.mark.filterwarnings("ignore:overflow encountered in cast:RuntimeWarning")


def case(
    id: str,
    route: str,
    expected: str,
    body: Any = None,
    *,
    model: str = "dense",
    raw: str | bytes | None = None,
    content_type: str = "application/json",
    marks: Any = (),
) -> Any:
    """One bad request: ``route`` is "METHOD /path", ``expected`` is "status error_type"; ``body`` is sent as
    JSON, ``raw`` as the body text (for NaN, Infinity and bodies that are not JSON at all)."""
    method, path = route.split()
    status, error_type = expected.split()
    if raw is not None:
        kwargs = {"content": raw.encode() if isinstance(raw, str) else raw, "headers": {"content-type": content_type}}
    else:
        kwargs = {"json": body} if body is not None else {}
    return pytest.param(model, method, path, kwargs, int(status), error_type, id=id, marks=marks)


def items(*entries: dict) -> dict:
    return {"items": list(entries)}


def queries(*entries: dict, **options: Any) -> dict:
    return {"queries": list(entries), **options}


ENC, ITEMS, SEARCH = "POST /v1/encode", "POST /v1/items", "POST /v1/search"
KNOWN = {"id": "known"}

# fmt: off
ERROR_CASES = [
    # batches (the client runs with max_batch=3)
    case("encode-empty-batch", ENC, "422 empty_batch", {"inputs": []}),
    case("encode-batch-too-large", ENC, "422 batch_too_large", {"inputs": [VEC] * 4}),
    case("items-empty-batch", ITEMS, "422 empty_batch", items()),
    case("items-batch-too-large", ITEMS, "422 batch_too_large", items(*FOUR_ITEMS)),
    case("search-empty-batch", SEARCH, "422 empty_batch", queries()),
    case("search-batch-too-large", SEARCH, "422 batch_too_large", queries(*[{"code": CODE}] * 4)),
    # raw inputs
    case("dense-short-vector", ENC, "422 input_shape", {"inputs": [[0.5] * 11]}),
    case("dense-ragged-batch", ENC, "422 input_shape", {"inputs": [VEC, VEC + [1.0]]}),
    case("dense-image", ENC, "422 input_shape", {"inputs": [[VEC, VEC]]}),
    case("dense-nan", ENC, "422 non_finite", raw=f'{{"inputs": [{NAN_VEC}]}}'),
    case("dense-infinity", ENC, "422 non_finite", raw=f'{{"inputs": [{INF_VEC}]}}'),
    case("dense-overflow", ENC, "422 non_finite", {"inputs": [[1e300] * 12]}, marks=OVERFLOW),
    case("items-nan-input", ITEMS, "422 non_finite", raw=f'{{"items": [{{"id": "n", "input": {NAN_VEC}}}]}}'),
    case("search-nan-input", SEARCH, "422 non_finite", raw=f'{{"queries": [{{"input": {NAN_VEC}}}]}}'),
    case("pixels-nan", ENC, "422 non_finite", model="pixels", raw=f'{{"inputs": [{NAN_IMG}]}}'),
    case("pixels-ragged-rows", ENC, "422 input_shape", {"inputs": [IMG[:7] + [[128] * 7]]}, model="pixels"),
    case("pixels-wrong-shape", ENC, "422 input_shape", {"inputs": [IMG[:7]]}, model="pixels"),
    case("pixels-above-255", ENC, "422 input_range", {"inputs": [IMG[:7] + [[256] * 8]]}, model="pixels"),
    case("pixels-negative", ENC, "422 input_range", {"inputs": [IMG[:7] + [[-1] * 8]]}, model="pixels"),
    case("text-to-dense-model", ENC, "422 input_type", {"inputs": ["a goal"]}),
    case("text-to-pixel-model", ENC, "422 input_type", {"inputs": ["a goal"]}, model="pixels"),
    case("vector-to-text-model", ENC, "422 input_type", {"inputs": [[1.0, 2.0]]}, model="text"),
    case("image-to-text-model", ENC, "422 input_type", {"inputs": [IMG]}, model="text"),
    case("mixed-batch-to-text-model", ITEMS, "422 input_type",
         items({"id": "a", "input": "goal"}, {"id": "b", "input": [1.0]}), model="text"),
    case("string-in-vector", ENC, "422 validation_error", {"inputs": [["x"] * 12]}),
    # codes
    case("code-malformed", ITEMS, "422 code_format", items({"id": "a", "code": "not a code"})),
    case("code-hex-too-long", ITEMS, "422 code_format", items({"id": "a", "code": "0f0f0f"})),
    case("code-hex-too-short", SEARCH, "422 code_format", queries({"code": "0f"})),
    case("code-base64-too-long", ITEMS, "422 code_format", items({"id": "a", "code": B64_24_BITS})),
    case("code-base64-too-short", SEARCH, "422 code_format", queries({"code": B64_16_BITS}), model="pixels"),
    case("code-bits-too-short", ITEMS, "422 code_format", items({"id": "a", "code": [0, 1] * 4})),
    case("code-bits-too-long", SEARCH, "422 code_format", queries({"code": [1] * 17})),
    case("code-bits-not-binary", ITEMS, "422 code_format", items({"id": "a", "code": [2] + [0] * 15})),
    case("code-a-number", ITEMS, "422 validation_error", items({"id": "a", "code": 42})),
    # unknown ids
    case("get-unknown-id", "GET /v1/items/missing", "404 item_not_found"),
    case("delete-unknown-id", "DELETE /v1/items/missing", "404 item_not_found"),
    case("search-unknown-id", SEARCH, "409 query_id_not_found", queries(KNOWN, {"id": "missing"})),
    case("get-unknown-format", "GET /v1/items/known?format=octal", "422 validation_error"),
    # k and radius
    case("k-zero", SEARCH, "422 k_out_of_range", queries(KNOWN, k=0)),
    case("k-negative", SEARCH, "422 k_out_of_range", queries(KNOWN, k=-1)),
    case("k-above-max-k", SEARCH, "422 k_out_of_range", queries(KNOWN, k=1001)),
    case("k-fractional", SEARCH, "422 validation_error", queries(KNOWN, k=2.5)),
    case("radius-negative", SEARCH, "422 radius_out_of_range", queries(KNOWN, radius=-1)),
    case("radius-above-n-bits", SEARCH, "422 radius_out_of_range", queries(KNOWN, radius=17)),
    case("radius-above-32-bits", SEARCH, "422 radius_out_of_range", queries(KNOWN, radius=33), model="pixels"),
    # items and queries
    case("item-input-and-code", ITEMS, "422 validation_error", items({"id": "a", "input": VEC, "code": CODE})),
    case("item-neither-input-nor-code", ITEMS, "422 validation_error", items({"id": "a", "metadata": {}})),
    case("item-empty-id", ITEMS, "422 validation_error", items({"id": "", "code": CODE})),
    case("item-unknown-field", ITEMS, "422 validation_error", items({"id": "a", "code": CODE, "vector": VEC})),
    case("item-metadata-a-list", ITEMS, "422 validation_error", items({"id": "a", "code": CODE, "metadata": [1]})),
    case("item-metadata-nan", ITEMS, "422 invalid_items",
         raw='{"items": [{"id": "a", "code": "0f0f", "metadata": {"x": NaN}}]}'),
    case("query-two-sources", SEARCH, "422 validation_error", queries({"id": "known", "code": CODE})),
    case("query-no-source", SEARCH, "422 validation_error", queries({})),
    # request bodies
    case("encode-unknown-field", ENC, "422 validation_error", {"inputs": [VEC], "normalize": True}),
    case("search-unknown-field", SEARCH, "422 validation_error", queries(KNOWN, top_k=3)),
    case("encode-unknown-format", ENC, "422 validation_error", {"inputs": [VEC], "format": "octal"}),
    case("inputs-not-a-list", ENC, "422 validation_error", {"inputs": "goal"}, model="text"),
    case("body-not-an-object", ENC, "422 validation_error", [VEC]),
    case("non-json-body", ITEMS, "422 validation_error", raw="{items: oops"),
    case("non-utf8-body", ENC, "422 validation_error", raw=b"\xff\xfe\x00"),
    case("no-body", SEARCH, "422 validation_error"),
    case("text-plain-body", ENC, "422 validation_error", raw=f'{{"inputs": [{VEC}]}}', content_type="text/plain"),
    case("form-body", ITEMS, "422 validation_error", raw="items=a", content_type="application/x-www-form-urlencoded"),
    # routing
    case("unknown-route", "GET /v1/nothing", "404 not_found"),
    case("unknown-version", "POST /v2/encode", "404 not_found", {"inputs": [VEC]}),
    case("get-encode", "GET /v1/encode", "405 method_not_allowed"),
    case("put-items", "PUT /v1/items", "405 method_not_allowed", items()),
    case("post-one-item", "POST /v1/items/known", "405 method_not_allowed", {}),
    case("delete-health", "DELETE /health", "405 method_not_allowed"),
]
# fmt: on


@pytest.mark.parametrize(("model", "method", "path", "request_kwargs", "status", "error_type"), ERROR_CASES)
def test_bad_requests_get_their_error(
    make_client: MakeClient,
    request: pytest.FixtureRequest,
    model: str,
    method: str,
    path: str,
    request_kwargs: dict[str, Any],
    status: int,
    error_type: str,
) -> None:
    client = make_client(request.getfixturevalue(MODEL_FIXTURES[model]), max_batch=3)
    upsert_codes(client, ["known"], random_codes(1, N_BITS[model]))

    resp = client.request(method, path, **request_kwargs)
    assert resp.status_code != 500, resp.text
    body = resp.json()
    assert set(body) == {"error", "error_type"}, body
    assert (resp.status_code, body["error_type"]) == (status, error_type), body
    assert STATUS[error_type] == status  # the one table agrees with what was sent
    assert isinstance(body["error"], str) and body["error"]
    assert count(client) == 1  # a rejected request changes nothing


def test_method_not_allowed_names_the_allowed_methods(make_client: MakeClient, dense_model_dir: Path) -> None:
    resp = make_client(dense_model_dir).get("/v1/search")
    assert resp.status_code == 405
    assert resp.headers["allow"] == "POST"


# ---- startup ------------------------------------------------------------------------------------------------


def test_collection_of_another_fingerprint_fails_at_startup(
    make_client: MakeClient, dense_model_dir: Path, tmp_path: Path
) -> None:
    path = tmp_path / "foreign"
    Collection.create(path, 16, "another-model").close()
    with pytest.raises(FingerprintMismatchError) as info:
        make_client(dense_model_dir, collection_path=path)
    assert (info.value.expected, info.value.found) == (offline(dense_model_dir).fingerprint, "another-model")


def test_collection_built_by_another_model_fails_at_startup(
    make_client: MakeClient, dense_model_dir: Path, text_model_dir: Path, tmp_path: Path
) -> None:
    path = tmp_path / "text-collection"
    client = make_client(text_model_dir, collection_path=path)
    client.post("/v1/items", json={"items": [{"id": "a", "input": "goal"}]})
    client.__exit__(None, None, None)
    with pytest.raises(FingerprintMismatchError):
        make_client(dense_model_dir, collection_path=path)  # same n_bits, different model
    assert count(make_client(text_model_dir, collection_path=path)) == 1  # the collection is left as it was
