"""POST /v1/encode: raw inputs -> binary codes (and optionally the continuous latent), through the encode
micro-batcher. Inputs come as JSON (texts, arrays, or base64 little-endian float32 for large batches) or as a binary
body (service.binary_body: raw bytes with shape and dtype headers, or a .npy file); codes go back as JSON, or as
packed bytes when the request's ``Accept`` asks for application/octet-stream (docs/encode.md).

The route reads its body itself instead of declaring an ``EncodeRequest`` parameter: FastAPI would parse every
body as JSON, and its ``json.loads`` of 256 images as JSON numbers took ~70 ms on one core, 10x orjson's (the
profile in docs/encode.md). JSON bodies are parsed with orjson (the json module where orjson refuses what the json
module takes: NaN, integers past 64 bits) and validated by the same ``EncodeRequest``, with the same errors.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from typing import Any

import numpy as np
import orjson
from fastapi import APIRouter, Request, Response
from fastapi.exceptions import RequestValidationError
from hamdex.models import bits
from hamdex.models.hasher import Hasher
from hamdex.service.binary_body import (
    DTYPE_HEADER,
    JSON,
    NPY,
    OCTET,
    SHAPE_HEADER,
    media_type,
    read_npy,
    read_octet,
    wants_packed,
)
from hamdex.service.deps import OPEN_READ, HasherDep, SettingsDep, check_batch, check_texts
from hamdex.service.errors import ApiError
from hamdex.service.schemas import EncodeRequest, EncodeResponse, PackedVectors
from pydantic import ValidationError
from starlette.exceptions import HTTPException

router = APIRouter(prefix="/v1", tags=["encode"], dependencies=[OPEN_READ])

BINARY_SCHEMA = {"type": "string", "format": "binary"}
ENCODE_BODY = {
    "requestBody": {
        "required": True,
        "description": "JSON, or the inputs as a binary array (docs/encode.md): application/octet-stream with "
        "headers X-Hamdex-Shape (e.g. '256,784', items first) and X-Hamdex-Dtype (float32, float16 or uint8), "
        "values row-major and little-endian; or application/x-npy, a .npy file (np.save). Binary bodies answer "
        "hex codes, or packed codes with Accept: application/octet-stream.",
        "content": {
            JSON: {"schema": {"$ref": "#/components/schemas/EncodeRequest"}},
            OCTET: {"schema": BINARY_SCHEMA},
            NPY: {"schema": BINARY_SCHEMA},
        },
    }
}
PACKED_RESPONSE = {
    "description": "The codes as JSON; with Accept: application/octet-stream, packed, n_bits / 8 bytes per item in the "
    "request's order, in the bit order of the JSON codes (X-Hamdex-Shape: items,bytes).",
    "content": {OCTET: {"schema": BINARY_SCHEMA}},
}


def unpack_vectors(packed: PackedVectors) -> np.ndarray:
    """base64 of little-endian float32 values -> float32 array of ``packed.shape`` (first axis: items)."""
    try:
        raw = base64.b64decode(packed.data, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ApiError("invalid_input", f"'inputs_b64.data' is not valid base64: {exc}") from exc
    expected = math.prod(packed.shape) * 4  # Python ints: np.prod would wrap around for huge shapes
    if len(raw) != expected:
        raise ApiError(
            "input_shape", f"'inputs_b64' holds {len(raw)} bytes; shape {packed.shape} of float32 needs {expected}"
        )
    return np.frombuffer(raw, dtype="<f4").reshape(packed.shape)


def parse_json(body: bytes) -> EncodeRequest:
    """A JSON body -> the validated request; errors as FastAPI answers them (400 not JSON, 422 invalid)."""
    if not body:
        raise RequestValidationError([{"type": "missing", "loc": ("body",), "msg": "Field required"}])
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        try:
            data = json.loads(body)
        except (ValueError, RecursionError):
            raise HTTPException(400, "There was an error parsing the body") from None
    try:
        return EncodeRequest.model_validate(data)
    except ValidationError as exc:
        raise RequestValidationError(exc.errors(include_url=False)) from None


def as_matrix(inputs: list[Any]) -> list[Any] | np.ndarray:
    """JSON vectors or images -> one float64 array (what the featurizers make of them, at half their cost from a
    list); texts, and lists numpy cannot stack (ragged, mixed), as given, for the featurizer's own error."""
    if not inputs or isinstance(inputs[0], str):
        return inputs
    try:
        return np.array(inputs, dtype=np.float64)
    except (ValueError, TypeError):
        return inputs


def read_inputs(body: bytes, request: Request) -> tuple[list[Any] | np.ndarray, bits.CodeFormat, bool]:
    """The request's inputs, code format and latent flag, by its Content-Type."""
    media = media_type(request.headers.get("content-type"))
    if media == OCTET:
        return read_octet(body, request.headers.get(SHAPE_HEADER), request.headers.get(DTYPE_HEADER)), "hex", False
    if media == NPY:
        return read_npy(body), "hex", False
    if media == JSON or media.endswith("+json"):
        req = parse_json(body)
        inputs = unpack_vectors(req.inputs_b64) if req.inputs_b64 is not None else as_matrix(req.inputs or [])
        return inputs, req.format, req.latent
    # 422 as FastAPI answers a body of another type on every other route (not 415: clients rely on one answer)
    raise ApiError("validation_error", f"Content-Type {media!r}: send {JSON}, {OCTET} or {NPY}")


def packed_response(codes: np.ndarray, hasher: Hasher) -> Response:
    headers = {"X-Hamdex-Shape": f"{codes.shape[0]},{codes.shape[1]}", "X-Hamdex-Fingerprint": hasher.fingerprint}
    return Response(np.ascontiguousarray(codes, np.uint8).tobytes(), media_type=OCTET, headers=headers)


@router.post(
    "/encode", response_model=EncodeResponse, openapi_extra=ENCODE_BODY, responses={200: PACKED_RESPONSE}
)  # fmt: skip
async def encode(request: Request, hasher: HasherDep, settings: SettingsDep) -> Response:
    inputs, fmt, latent = read_inputs(await request.body(), request)
    check_batch(len(inputs), settings, "inputs")
    if isinstance(inputs, list):
        check_texts(inputs, settings, "inputs")
    packed = wants_packed(request.headers.get("accept"))
    if packed and latent:
        raise ApiError("invalid_input", "'latent' is only answered as JSON: drop it or Accept: application/json")
    result = await request.app.state.engine.encode(hasher, inputs, latent, request.state.timings)
    if packed:
        return packed_response(result.codes, hasher)
    body = {
        "codes": [bits.to_wire(c, fmt) for c in result.codes],
        "latent": result.latent.tolist() if result.latent is not None else None,
        "n_bits": hasher.n_bits,
        "format": fmt,
        "fingerprint": hasher.fingerprint,
    }
    return Response(orjson.dumps(body), media_type=JSON)
