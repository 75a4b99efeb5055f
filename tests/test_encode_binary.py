"""Binary bodies of POST /v1/encode (issue 24; service.binary_body, docs/encode.md): the same items as JSON, base64,
application/octet-stream and .npy give the same codes, the in-process ones; Accept: application/octet-stream gives
exactly the packed bytes of the JSON codes; float16 and uint8 inputs; every malformed body is its typed 4xx, never
a 500; size limits and API keys apply as to JSON."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from hamdex.models import checkpoint

from tests.conftest import MakeClient, dense_vectors, digit_images
from tests.helpers import KEYS, READER, assert_error, bearer, metric

OCTET = "application/octet-stream"


def octet(arr: np.ndarray, dtype: str | None = None, **extra: str) -> dict:
    """The keyword arguments of a post of ``arr`` as application/octet-stream."""
    headers = {"content-type": OCTET, "x-hamdex-shape": ",".join(map(str, arr.shape)), **extra}
    headers["x-hamdex-dtype"] = dtype or str(arr.dtype)
    return {"content": np.ascontiguousarray(arr).astype(arr.dtype.newbyteorder("<")).tobytes(), "headers": headers}


def npy(arr: np.ndarray, **extra: str) -> dict:
    out = io.BytesIO()
    np.save(out, arr, allow_pickle=arr.dtype.hasobject)
    return {"content": out.getvalue(), "headers": {"content-type": "application/x-npy", **extra}}


def codes(client: TestClient, **kwargs: object) -> list[str]:
    resp = client.post("/v1/encode", **kwargs)
    assert resp.status_code == 200, resp.text
    return resp.json()["codes"]


def items(kind: str) -> np.ndarray:
    """float32 inputs of the fixture model of ``kind``: images (n, 8, 8) of whole pixel values, or 12-d vectors."""
    return digit_images(20).astype(np.float32) if kind == "pixels" else dense_vectors(20, 12, seed=3)


@pytest.fixture
def model_dir(request: pytest.FixtureRequest) -> Path:
    return request.getfixturevalue(f"{request.param}_model_dir")


@pytest.mark.parametrize("model_dir", ["pixel", "dense"], indirect=True)
def test_every_body_gives_the_in_process_codes(make_client: MakeClient, model_dir: Path) -> None:
    client = make_client(model_dir)
    hasher = checkpoint.load(model_dir, "cpu")
    x = items(hasher.featurizer.kind)
    expected = [c.tobytes().hex() for c in hasher.encode(x).codes]
    flat = x.reshape(len(x), -1)
    b64 = {"data": base64.b64encode(x.astype("<f4").tobytes()).decode(), "shape": list(x.shape)}
    assert codes(client, json={"inputs": x.tolist()}) == expected
    assert codes(client, json={"inputs": flat.tolist()}) == expected
    assert codes(client, json={"inputs_b64": b64}) == expected
    assert codes(client, **octet(x)) == expected
    assert codes(client, **octet(flat)) == expected
    assert codes(client, **npy(x)) == expected
    assert codes(client, **npy(np.asfortranarray(flat))) == expected  # Fortran order
    assert codes(client, **npy(flat.astype(">f4"))) == expected  # big-endian


@pytest.mark.parametrize("model_dir", ["pixel", "dense"], indirect=True)
@pytest.mark.parametrize("send", ["json", "octet", "npy"])
def test_packed_answer_is_the_json_codes_packed(make_client: MakeClient, model_dir: Path, send: str) -> None:
    client = make_client(model_dir)
    x = items(checkpoint.load(model_dir, "cpu").featurizer.kind)
    want = b"".join(bytes.fromhex(c) for c in codes(client, json={"inputs": x.tolist()}))
    accept = {"accept": OCTET}
    kwargs = {"json": {"inputs": x.tolist()}, "headers": accept} if send == "json" else None
    kwargs = kwargs or (octet(x, **accept) if send == "octet" else npy(x, **accept))
    resp = client.post("/v1/encode", **kwargs)
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"] == OCTET
    assert resp.content == want
    assert resp.headers["x-hamdex-shape"] == f"{len(x)},{len(want) // len(x)}"
    # JSON named too, or */* alone (a client's default): JSON
    for accept in (f"{OCTET}, application/json", "*/*"):
        assert client.post("/v1/encode", json={"inputs": x.tolist()}, headers={"accept": accept}).json()["codes"]
    assert client.post("/v1/encode", **octet(x, accept="application/json")).json()["codes"]


def test_float16_and_uint8_inputs(make_client: MakeClient, pixel_model_dir: Path, dense_model_dir: Path) -> None:
    pixels = make_client(pixel_model_dir)
    images = digit_images(20)  # uint8 (20, 8, 8)
    expected = codes(pixels, json={"inputs": images.tolist()})
    for dtype in ("uint8", "float16", "float32"):
        assert codes(pixels, **octet(images.astype(dtype))) == expected, dtype
        assert codes(pixels, **npy(images.astype(dtype))) == expected, dtype
    dense = make_client(dense_model_dir)
    half = dense_vectors(20, 12, seed=4).astype(np.float16)
    expected = codes(dense, json={"inputs": half.astype(np.float32).tolist()})
    assert codes(dense, **octet(half)) == expected
    assert codes(dense, **npy(half)) == expected


def _object_npy() -> bytes:
    out = io.BytesIO()
    np.save(out, np.array([[1, "a"]], dtype=object), allow_pickle=True)
    return out.getvalue()


GOOD = np.zeros((2, 12), np.float32)
NPY_GOOD = npy(GOOD)["content"]
NAN = np.full((2, 12), np.nan, np.float32)
BAD_HEADER = "invalid_header"


@pytest.mark.parametrize(
    ("kwargs", "status", "error_type"),
    [
        (octet(GOOD, dtype="float64"), 422, "input_dtype"),
        (octet(GOOD, dtype="int32"), 422, "input_dtype"),
        ({"content": GOOD.tobytes(), "headers": {"content-type": OCTET, "x-hamdex-shape": "2,12"}}, 422, "input_dtype"),
        ({"content": GOOD.tobytes(), "headers": {"content-type": OCTET, "x-hamdex-dtype": "float32"}}, 400, BAD_HEADER),
        (octet(GOOD, **{"x-hamdex-shape": "2;12"}), 400, BAD_HEADER),
        (octet(GOOD, **{"x-hamdex-shape": "2,13"}), 422, "input_shape"),  # length mismatch
        (octet(GOOD, **{"x-hamdex-shape": "24"}), 422, "input_shape"),  # one axis
        (octet(GOOD, **{"x-hamdex-shape": "1,2,3,2,2"}), 422, "input_shape"),  # five axes
        (octet(GOOD, **{"x-hamdex-shape": "-2,-12"}), 422, "input_shape"),
        (octet(GOOD, **{"x-hamdex-shape": "4,6"}), 422, "input_shape"),  # the model takes 12 values
        (octet(np.zeros((0, 12), np.float32)), 422, "empty_batch"),
        (octet(np.zeros((5, 12), np.float32)), 422, "batch_too_large"),  # max_batch 4 below
        (octet(NAN), 422, "non_finite"),
        (npy(NAN), 422, "non_finite"),
        ({"content": NPY_GOOD[:40], "headers": {"content-type": "application/x-npy"}}, 422, "invalid_input"),
        ({"content": NPY_GOOD[:-4], "headers": {"content-type": "application/x-npy"}}, 422, "input_shape"),
        ({"content": b"not a npy file", "headers": {"content-type": "application/x-npy"}}, 422, "invalid_input"),
        ({"content": b"", "headers": {"content-type": "application/x-npy"}}, 422, "invalid_input"),
        ({"content": _object_npy(), "headers": {"content-type": "application/x-npy"}}, 422, "input_dtype"),
        (npy(GOOD.astype(np.float64)), 422, "input_dtype"),
        (npy(np.zeros(2, [("a", "<f4")])), 422, "input_dtype"),  # structured
        (npy(np.zeros(12, np.float32)), 422, "input_shape"),  # one axis
        (octet(GOOD, accept=OCTET) | {"json": None}, 200, None),  # (the sanity case)
        ({"json": {"inputs": GOOD.tolist(), "latent": True}, "headers": {"accept": OCTET}}, 422, "invalid_input"),
        ({"content": b"1,2,3", "headers": {"content-type": "text/csv"}}, 422, "validation_error"),  # as FastAPI
        ({"content": b"{", "headers": {"content-type": "application/json"}}, 422, "validation_error"),  # as FastAPI
        ({"content": b"", "headers": {"content-type": "application/json"}}, 422, "validation_error"),
        ({"content": b'{"inputs": [[NaN]]}', "headers": {"content-type": "application/json"}}, 422, "non_finite"),
        ({"content": b'{"inputs": [[1e999]]}', "headers": {}}, 422, "non_finite"),  # no Content-Type: JSON
        ({"json": {"inputs": [[0.0] * 12], "extra": 1}}, 422, "validation_error"),
    ],
)
def test_malformed_bodies_get_their_4xx(
    make_client: MakeClient, dense_model_dir: Path, kwargs: dict, status: int, error_type: str | None
) -> None:
    client = make_client(dense_model_dir, max_batch=4)
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    resp = client.post("/v1/encode", **kwargs)
    if error_type is None:
        assert resp.status_code == 200 and len(resp.content) == 2 * 2  # 16 bits: 2 bytes per item
    else:
        assert_error(resp, status, error_type)


def test_text_model_refuses_arrays(make_client: MakeClient, text_model_dir: Path) -> None:
    client = make_client(text_model_dir)
    assert_error(client.post("/v1/encode", **octet(GOOD)), 422, "input_type")
    assert_error(client.post("/v1/encode", **npy(GOOD)), 422, "input_type")
    packed = client.post("/v1/encode", json={"inputs": ["goal team"]}, headers={"accept": OCTET})
    assert packed.status_code == 200 and len(packed.content) == 2  # texts may still get packed codes


def test_body_limit_and_api_keys_apply(make_client: MakeClient, dense_model_dir: Path) -> None:
    client = make_client(dense_model_dir, max_body_bytes=1024, api_keys=KEYS)
    big = np.zeros((40, 12), np.float32)  # 1,920 bytes
    small = np.zeros((2, 12), np.float32)
    assert_error(client.post("/v1/encode", **octet(big)), 413, "body_too_large")
    assert_error(client.post("/v1/encode", **npy(big)), 413, "body_too_large")
    assert_error(client.post("/v1/encode", **octet(small)), 401, "unauthorized")
    assert_error(client.post("/v1/encode", **npy(small)), 401, "unauthorized")
    kwargs = octet(small)
    kwargs["headers"].update(bearer(READER))
    assert client.post("/v1/encode", **kwargs).status_code == 200


def test_binary_requests_are_counted_in_metrics(make_client: MakeClient, dense_model_dir: Path) -> None:
    client = make_client(dense_model_dir)
    client.post("/v1/encode", **octet(GOOD))
    client.post("/v1/encode", **octet(GOOD, dtype="float64"))
    text = client.get("/metrics").text
    assert metric(text, "hamdex_http_requests_total", route="/v1/encode", status="200") == 1
    assert metric(text, "hamdex_http_request_errors_total", route="/v1/encode", error_type="input_dtype") == 1
